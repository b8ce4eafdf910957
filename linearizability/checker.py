"""The public entry point: :func:`check` a history against a model.

``check`` validates the history, partitions it by the model's partition key (unless told to
check it whole), compiles each partition and runs the search on it.

Overall verdict: NOT_LINEARIZABLE if any partition is not linearizable (by locality the whole
history then is not either); otherwise UNKNOWN if any partition ran out of its budget;
otherwise LINEARIZABLE.

Scheduling.  By default the check stops as soon as the verdict is known: the searches of all
partitions run in turns, a slice of a few thousand backtracks each, smallest partition first,
so that an easy refutation anywhere is found however hard another partition is; the first
partition found not linearizable ends the check, and the partitions not finished then are
marked ``skipped``.  The time and memory budgets cover the whole check.  With
``all_partitions=True`` every partition is checked to the end, one after the other (smallest
first), each under its own time and memory budget, for a report of every failing key.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Generator, Hashable, Iterable
from dataclasses import dataclass

from .budget import Limits, default_memory_limit
from .history import Event, Operation, operations_from_events, validate_history
from .models import CompiledHistory, Model
from .partition import Partition, partition, whole
from .search import SearchOutcome, Verdict, search_steps

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
            linearizable, or if the search stopped before it found one).
        explored: configurations visited by the search.
        elapsed: seconds spent on this partition.
        reason: for UNKNOWN, why: which budget ran out, or that the partition was skipped.
        skipped: True if the check stopped before this partition was decided because another
            partition was already found not linearizable (its verdict is then UNKNOWN).
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
    reason: str | None = None
    skipped: bool = False


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The verdict on a history, and per-partition details (for reports).

    ``reason`` says why the verdict is UNKNOWN (None otherwise).
    """

    verdict: Verdict
    partitions: tuple[PartitionResult, ...]
    model: Model
    elapsed: float
    reason: str | None = None

    @property
    def linearizable(self) -> bool:
        """True only for a LINEARIZABLE verdict (UNKNOWN is not True)."""
        return self.verdict is Verdict.LINEARIZABLE

    @property
    def failures(self) -> tuple[PartitionResult, ...]:
        """The partitions that are not linearizable."""
        return tuple(p for p in self.partitions if p.verdict is Verdict.NOT_LINEARIZABLE)

    @property
    def skipped(self) -> tuple[PartitionResult, ...]:
        """The partitions left undecided because the verdict was already known."""
        return tuple(p for p in self.partitions if p.skipped)


def _replay(model: Model, ops: tuple[Operation, ...], order: tuple[int, ...]) -> Hashable:
    """The public state after ``order``, by ``model.step``: for compiled states that stand for
    many public states (public_state None)."""
    state = model.init()
    for i in order:
        _, state = model.step(state, ops[i].input, ops[i].output)
    return state


Searched = tuple[SearchOutcome, CompiledHistory | None]


def _run(part: Partition, model: Model, limits: Limits) -> Generator[None, None, Searched]:
    """Compile and search one partition, yielding between slices; out of memory is UNKNOWN.
    Returns the outcome and the compiled history (None if the search never started)."""
    ops = part.operations
    reason = limits.out_of_time()
    if reason is not None:
        return SearchOutcome(Verdict.UNKNOWN, (), None, None, 0, reason), None
    try:
        compiled = model.compile(ops)
        calls, ends = [op.call for op in ops], [op.end for op in ops]
        steps = search_steps(compiled, calls, ends, limits)
        try:
            next(steps)
        except StopIteration as done:  # decided (or out of budget) within the first slice
            return done.value, compiled
        # A partition that needs more than one slice is worth the model's costlier pruning, if
        # it has any: restart the search on that form (a slice is all that is lost).
        pruned = model.compile_pruned(ops)
        if pruned is not None:
            steps.close()
            compiled = pruned
            steps = search_steps(compiled, calls, ends, limits)
        yield
        return (yield from steps), compiled
    except MemoryError:
        return SearchOutcome(
            Verdict.UNKNOWN, (), None, None, 0, "the process ran out of memory (MemoryError)"
        ), None


def _result(part: Partition, model: Model, searched: Searched, elapsed: float) -> PartitionResult:
    outcome, compiled = searched
    state = None if compiled is None else compiled.public_state(outcome.state)
    if state is None:  # a compiled state that stands for many public ones: replay the order
        if compiled is not None and compiled.replay is not None:
            state = compiled.replay(outcome.order)
        else:
            state = _replay(model, part.operations, outcome.order)
    return PartitionResult(
        key=part.key,
        operations=part.operations,
        indices=part.indices,
        verdict=outcome.verdict,
        order=outcome.order,
        state=state,
        failed=outcome.blocked,
        explored=outcome.explored,
        elapsed=elapsed,
        reason=outcome.reason,
    )


def _skipped(
    part: Partition, model: Model, explored: int, elapsed: float, failed_key: Hashable
) -> PartitionResult:
    where = "" if failed_key is None else f" (key {failed_key!r})"
    return PartitionResult(
        part.key, part.operations, part.indices, Verdict.UNKNOWN, (), model.init(), None, explored, elapsed,
        reason=f"not checked to the end: another partition{where} is not linearizable", skipped=True,
    )


def _describe_unknown(results: Iterable[PartitionResult]) -> str | None:
    unknown = [r for r in results if r.verdict is Verdict.UNKNOWN and not r.skipped]
    if not unknown:
        return None
    parts = [(r.reason or "unknown") if r.key is None else f"key {r.key!r}: {r.reason}" for r in unknown[:3]]
    more = f"; and {len(unknown) - 3} more partitions" if len(unknown) > 3 else ""
    return "; ".join(parts) + more


def check(
    history: Iterable[Operation],
    model: Model,
    *,
    partitioned: bool = True,
    timeout: float | None = None,
    memory_limit: int | None = None,
    all_partitions: bool = False,
) -> CheckResult:
    """Decide whether ``history`` is linearizable with respect to ``model``.

    Args:
        history: the operations, in any order.
        model: the sequential specification, e.g. ``RegisterModel()`` or ``KVModel()``.
        partitioned: split the history by ``model.partition_key`` first (much faster, same
            answer); False checks it as one history.
        timeout: seconds after which the answer is UNKNOWN instead of waiting longer: for the
            whole check, or for each partition with ``all_partitions``.
        memory_limit: bytes the check may add to the process before it answers UNKNOWN
            (default: :func:`~linearizability.budget.default_memory_limit`, half of the
            machine); per partition with ``all_partitions``.
        all_partitions: check every partition to the end, each under its own budget, instead
            of stopping at the first one that is not linearizable.

    Raises:
        HistoryError: if an operation breaks the history invariants.
        ModelInputError: if the model does not understand an operation.
        ValueError: for a timeout or memory limit that is not positive.
    """
    start = time.monotonic()
    if timeout is not None and not timeout >= 0:
        raise ValueError(f"timeout must be a number of seconds >= 0; got {timeout!r}")
    if memory_limit is not None and not memory_limit > 0:
        raise ValueError(f"memory_limit must be a positive number of bytes; got {memory_limit!r}")
    limit = default_memory_limit() if memory_limit is None else memory_limit
    ops = validate_history(history)
    parts = partition(ops, model) if partitioned else [whole(ops)]
    if len(parts) == 1:  # nothing to schedule
        searched = _drive(_run(parts[0], model, Limits(timeout, limit, start)))
        final = (_result(parts[0], model, searched, time.monotonic() - start),)
        return CheckResult(final[0].verdict, final, model, time.monotonic() - start, _describe_unknown(final))
    schedule = sorted(range(len(parts)), key=lambda i: (len(parts[i].operations), i))
    results: list[PartitionResult | None] = [None] * len(parts)

    if all_partitions:
        for i in schedule:
            began = time.monotonic()
            searched = _drive(_run(parts[i], model, Limits(timeout, limit, began)))
            results[i] = _result(parts[i], model, searched, time.monotonic() - began)
    else:
        limits = Limits(timeout, limit, start)
        running = deque((i, _run(parts[i], model, limits)) for i in schedule)
        spent = [0.0] * len(parts)
        while running:
            i, steps = running.popleft()
            began = time.monotonic()
            try:
                next(steps)
            except StopIteration as done:
                spent[i] += time.monotonic() - began
                results[i] = _result(parts[i], model, done.value, spent[i])
                if done.value[0].verdict is Verdict.NOT_LINEARIZABLE:
                    for j, other in running:
                        other.close()
                        results[j] = _skipped(parts[j], model, 0, spent[j], parts[i].key)
                    running.clear()
                continue
            spent[i] += time.monotonic() - began
            running.append((i, steps))

    final = tuple(r for r in results if r is not None)
    verdicts = {r.verdict for r in final}
    if Verdict.NOT_LINEARIZABLE in verdicts:
        verdict = Verdict.NOT_LINEARIZABLE
    elif Verdict.UNKNOWN in verdicts:
        verdict = Verdict.UNKNOWN
    else:
        verdict = Verdict.LINEARIZABLE
    reason = _describe_unknown(final) if verdict is Verdict.UNKNOWN else None
    return CheckResult(verdict, final, model, time.monotonic() - start, reason)


def _drive(steps: Generator[None, None, Searched]) -> Searched:
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


def check_events(
    events: Iterable[Event],
    model: Model,
    *,
    partitioned: bool = True,
    timeout: float | None = None,
    memory_limit: int | None = None,
    all_partitions: bool = False,
) -> CheckResult:
    """Like :func:`check`, for a history written as raw call/return events."""
    return check(
        operations_from_events(list(events)),
        model,
        partitioned=partitioned,
        timeout=timeout,
        memory_limit=memory_limit,
        all_partitions=all_partitions,
    )
