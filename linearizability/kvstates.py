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

One more rule, also exact (:func:`dead_rejects`): when an append or put would make the value
``DEAD``, some get of the key with a known output is called after that operation returns (so it
must be linearized later and needs a live value), and no put to a live value can be linearized
after that operation (nothing can revive it), the transition rejects at once instead of
entering ``DEAD``.  Without it, blind appends with a read only at the end would still let the
search try every subset of them in ``DEAD`` before reaching that read.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Hashable, Iterable, Sequence
from functools import partial
from typing import Any, Final

from .history import UNKNOWN

__all__ = ["DEAD", "EMPTY", "PrefixTable", "dead_rejects"]

EMPTY: Final = 0
DEAD: Final = 1


class PrefixTable:
    """Ids for the values of one key (see the module docstring).

    Invariants: ``id(text(i)) == i`` for every live id ``i``; ``where[i] == (j, n)`` means
    ``text(i) == reads[j][:n]`` and ``reads[j]`` is the smallest read value with that prefix.
    """

    __slots__ = ("exact", "ids", "reads", "where")

    def __init__(self, reads: Iterable[str]) -> None:
        values = reads if isinstance(reads, list) else list(reads)
        self.reads: list[str] = sorted(set(values)) if len(values) > 1 else values[:]
        if self.reads and not self.reads[0]:
            del self.reads[0]  # "" is EMPTY, not a prefix to look up
        self.where: list[tuple[int, int]] = [(0, 0), (-1, -1)]
        self.ids: dict[tuple[int, int], int] = {}
        #: ids of the values read themselves (the targets of gets), looked up first
        self.exact: dict[str, int] = {"": EMPTY}

    def id(self, value: str) -> int:
        """The id of ``value``: EMPTY, DEAD, or the id of a prefix of a value read."""
        found = self.exact.get(value)
        if found is not None:
            return found
        reads = self.reads
        j = bisect_left(reads, value)
        if j == len(reads) or not reads[j].startswith(value):
            return DEAD
        n = len(value)
        where = (j, n)
        found = self.ids.get(where)
        if found is None:
            found = self.ids[where] = len(self.where)
            self.where.append(where)
        if n == len(reads[j]):
            self.exact[value] = found
        return found

    def text(self, sid: int) -> str | None:
        """The value of a live id; None for DEAD (it stands for many values)."""
        if sid == DEAD:
            return None
        j, n = self.where[sid]
        return self.reads[j][:n] if n else ""

    def appender(self, value: str, on_dead: Any = DEAD) -> Callable[[int], Any]:
        """A memoised transition ``id -> id of (text + value)``, giving ``on_dead`` (DEAD, or
        REJECT under :func:`dead_rejects`) where that is DEAD.

        Fast path: when ``reads[j]``, the smallest read starting with the old value, goes on
        with ``value``, it is also the smallest read starting with the new value, so the new
        value is ``(j, n + len(value))`` without building or searching for any string."""
        return partial(_append, {DEAD: on_dead}, self, value, on_dead)


def _append(memo: dict[int, Any], table: PrefixTable, value: str, on_dead: Any, sid: int) -> Any:
    """:meth:`PrefixTable.appender`'s transition (a module function under ``partial``: cheaper
    to make, one per append operation, than a closure)."""
    new = memo.get(sid)
    if new is None:
        where = table.where
        j, n = where[sid]
        if n and table.reads[j].startswith(value, n):
            at = (j, n + len(value))
            ids = table.ids
            new = ids.get(at)
            if new is None:
                new = ids[at] = len(where)
                where.append(at)
        else:
            new = table.id((table.reads[j][:n] if n else "") + value)
            if new == DEAD:
                new = on_dead
        memo[sid] = new
    return new


def dead_rejects(
    parsed: Sequence[tuple[tuple[str, Hashable, str], Any]],
    calls: Sequence[float],
    ends: Sequence[float],
    tables: dict[Hashable, PrefixTable],
) -> list[bool] | None:
    """For each operation (``parsed[i]`` is its ``((kind, key, value), output)``, called at
    ``calls[i]``, returning at ``ends[i]``): may its transition reject instead of making the
    value DEAD?  True for a put or append when a get of the same key with a known output is
    called after it returns, and no put of that key to a live value ends at or after its call
    (so none can be linearized after it).  None when that holds for no operation."""
    never = -math.inf
    last_get_call: dict[Hashable, float] = {}
    last_live_put_end: dict[Hashable, float] = {}
    for ((kind, key, value), out), call, end in zip(parsed, calls, ends, strict=True):
        if kind == "get":
            if out is not UNKNOWN and call > last_get_call.get(key, never):
                last_get_call[key] = call
        elif kind == "put" and end > last_live_put_end.get(key, never) and tables[key].id(value) != DEAD:
            last_live_put_end[key] = end
    if not last_get_call:
        return None
    return [
        kind != "get" and end < last_get_call.get(key, never) and last_live_put_end.get(key, never) < call
        for ((kind, key, _), _), call, end in zip(parsed, calls, ends, strict=True)
    ]
