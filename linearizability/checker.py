"""The public entry point: :func:`check` a history against a model.

``check`` validates the history, partitions it by the model's partition key (unless told to
check it whole), compiles each partition and runs the search on it, all under one time budget.

Overall verdict: NOT_LINEARIZABLE if any partition is not linearizable (by locality the whole
history then is not either); otherwise UNKNOWN if any partition ran out of time; otherwise
LINEARIZABLE.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

from .history import Event, Operation, operations_from_events, validate_history
from .models import Model
from .partition import Partition, partition, whole
from .search import Verdict, search

__all__ = ["CheckResult", "PartitionResult", "check", "check_events"]


@dataclass(frozen=True, slots=True)
class PartitionResult:
    """The verdict on one partition, with what the search found.

    Attributes:
        key: the partition key (None for a whole history).
        operations: the partition's operations; ``order`` and ``failed`` index into them.
        indices: positions of those operations in the checked history.
        verdict: the partition's verdict.
        order: a full linearization (LINEARIZABLE) or the longest linearizable prefix found.
        state: the public model state after ``order``.
        failed: the operation that could not be linearized after ``order`` (None if
            linearizable, or if the search was never started because time ran out).
        explored: configurations visited by the search.
        elapsed: seconds spent on this partition.
    """

    key: Hashable | None
    operations: tuple[Operation, ...]
    indices: tuple[int, ...]
    verdict: Verdict
    order: tuple[int, ...]
    state: Hashable
    failed: int | None
    explored: int
    elapsed: float


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The verdict on a history, and per-partition details (for reports)."""

    verdict: Verdict
    partitions: tuple[PartitionResult, ...]
    model: Model
    elapsed: float

    @property
    def linearizable(self) -> bool:
        """True only for a LINEARIZABLE verdict (UNKNOWN is not True)."""
        return self.verdict is Verdict.LINEARIZABLE

    @property
    def failures(self) -> tuple[PartitionResult, ...]:
        """The partitions that are not linearizable."""
        return tuple(p for p in self.partitions if p.verdict is Verdict.NOT_LINEARIZABLE)


def _check_partition(part: Partition, model: Model, deadline: float | None) -> PartitionResult:
    start = time.monotonic()
    ops = part.operations
    if deadline is not None and start > deadline:
        return PartitionResult(part.key, ops, part.indices, Verdict.UNKNOWN, (), model.init(), None, 0, 0.0)
    compiled = model.compile(ops)
    outcome = search(compiled, [op.call for op in ops], [op.end for op in ops], deadline)
    return PartitionResult(
        key=part.key,
        operations=ops,
        indices=part.indices,
        verdict=outcome.verdict,
        order=outcome.order,
        state=compiled.public_state(outcome.state),
        failed=outcome.blocked,
        explored=outcome.explored,
        elapsed=time.monotonic() - start,
    )


def check(
    history: Iterable[Operation],
    model: Model,
    *,
    partitioned: bool = True,
    timeout: float | None = None,
) -> CheckResult:
    """Decide whether ``history`` is linearizable with respect to ``model``.

    Args:
        history: the operations, in any order.
        model: the sequential specification, e.g. ``RegisterModel()`` or ``KVModel()``.
        partitioned: split the history by ``model.partition_key`` first (much faster, same
            answer); False checks it as one history.
        timeout: seconds after which the answer is UNKNOWN instead of waiting longer.

    Raises:
        HistoryError: if an operation breaks the history invariants.
        ModelInputError: if the model does not understand an operation.
    """
    start = time.monotonic()
    deadline = None if timeout is None else start + timeout
    ops = validate_history(history)
    parts = partition(ops, model) if partitioned else [whole(ops)]
    results = tuple(_check_partition(part, model, deadline) for part in parts)
    verdicts = {r.verdict for r in results}
    if Verdict.NOT_LINEARIZABLE in verdicts:
        verdict = Verdict.NOT_LINEARIZABLE
    elif Verdict.UNKNOWN in verdicts:
        verdict = Verdict.UNKNOWN
    else:
        verdict = Verdict.LINEARIZABLE
    return CheckResult(verdict, results, model, time.monotonic() - start)


def check_events(
    events: Iterable[Event],
    model: Model,
    *,
    partitioned: bool = True,
    timeout: float | None = None,
) -> CheckResult:
    """Like :func:`check`, for a history written as raw call/return events."""
    return check(operations_from_events(list(events)), model, partitioned=partitioned, timeout=timeout)
