"""Splitting a history into independent sub-histories.

Linearizability is *local* (Herlihy & Wing): a history over independent objects is linearizable
if and only if the sub-history of every object is.  A model says which object an operation
touches through :meth:`~linearizability.models.Model.partition_key`; the key-value model uses
the key.  Checking per key turns one search over a large product state into many small ones.

Invariant of the result: every operation appears in exactly one :class:`Partition`, and within
a partition operations keep their relative order from the input history.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from .history import Operation
from .models import Model

__all__ = ["Partition", "partition", "whole"]


@dataclass(frozen=True, slots=True)
class Partition:
    """One independent sub-history.

    Attributes:
        key: the partition key (None for a history that is not partitioned).
        indices: positions of the operations in the original history.
        operations: the operations themselves, ``operations[i] is history[indices[i]]``.
    """

    key: Hashable | None
    indices: tuple[int, ...]
    operations: tuple[Operation, ...]


def partition(history: Sequence[Operation], model: Model) -> list[Partition]:
    """Split ``history`` by ``model.partition_key``, keys in order of first appearance.

    A model whose ``partition_key`` returns None for every operation gives one partition with
    key None.  Mixing None and other keys is an error: an operation that touches "everything"
    would make the partitions dependent.
    """
    groups: dict[Hashable, list[int]] = {}
    for index, op in enumerate(history):
        groups.setdefault(model.partition_key(op.input), []).append(index)
    if None in groups and len(groups) > 1:
        raise ValueError(
            f"model {model.name!r} gives some operations no partition key and others one; "
            "either every operation has a key or none has (check the whole history instead)"
        )
    if not groups:
        return [Partition(None, (), ())]
    return [
        Partition(key, tuple(indices), tuple(history[i] for i in indices)) for key, indices in groups.items()
    ]


def whole(history: Sequence[Operation]) -> Partition:
    """The whole history as a single partition (key None)."""
    return Partition(None, tuple(range(len(history))), tuple(history))
