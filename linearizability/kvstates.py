"""Compiled states of the key-value model: a key's value as a node of the trie of values read.

A key's value only matters to the check through the gets that read it.  A get with a known
output ``v`` accepts exactly the state ``v``; appends only extend a value.  So a value that is a
prefix of no value ever read (on that key) can never again be read as it is, nor grow into a
value that is read: all such values behave the same for every future sequence of operations
(appends keep them so, a put replaces them, known gets reject them, unknown gets accept them).
The compiled state of a key is therefore:

* ``EMPTY`` (0) for ``""``;
* ``DEAD`` (1) for every value that is a prefix of no value read;
* a small int for every other value reached, a prefix of some value read, named without
  building or keeping the string: ``(j, length)`` where ``reads[j]`` is the first value read,
  in sorted order, that starts with it.

This is an exact quotient of the model (a bisimulation), so the search gives the same verdict
as on the strings themselves, but every order of concurrent appends that no get observed
collapses into ``DEAD``, and no value longer than a read is ever built.  The cache then holds a
few distinct states per key instead of one per order of appends.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Final

__all__ = ["DEAD", "EMPTY", "PrefixTable"]

EMPTY: Final = 0
DEAD: Final = 1


class PrefixTable:
    """Ids for the values of one key (see the module docstring).

    Invariants: ``id(text(i)) == i`` for every live id ``i``; ``where[i] == (j, n)`` means
    ``text(i) == reads[j][:n]`` and ``reads[j]`` is the smallest read value with that prefix.
    """

    __slots__ = ("ids", "reads", "where")

    def __init__(self, reads: Iterable[str]) -> None:
        self.reads: list[str] = sorted({r for r in reads if r})
        self.where: list[tuple[int, int]] = [(0, 0), (-1, -1)]
        self.ids: dict[tuple[int, int], int] = {}

    def id(self, value: str) -> int:
        """The id of ``value``: EMPTY, DEAD, or the id of a prefix of a value read."""
        if not value:
            return EMPTY
        reads = self.reads
        j = bisect_left(reads, value)
        if j == len(reads) or not reads[j].startswith(value):
            return DEAD
        where = (j, len(value))
        found = self.ids.get(where)
        if found is None:
            found = self.ids[where] = len(self.where)
            self.where.append(where)
        return found

    def text(self, sid: int) -> str | None:
        """The value of a live id; None for DEAD (it stands for many values)."""
        if sid == DEAD:
            return None
        j, n = self.where[sid]
        return self.reads[j][:n] if n else ""

    def appender(self, value: str) -> Callable[[int], int]:
        """A memoised transition ``id -> id of (text + value)`` (DEAD stays DEAD)."""
        memo: dict[int, int] = {DEAD: DEAD}
        text = self.text
        intern = self.id

        def append(sid: int) -> int:
            new = memo.get(sid)
            if new is None:
                new = memo[sid] = intern(text(sid) + value)  # type: ignore[operator]
            return new

        return append
