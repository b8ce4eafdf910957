"""The linearizability search (Wing & Gong, with Lowe's memoisation), tuned for CPython.

The history is laid out as a doubly linked list of call and return entries in time order
(calls before returns at equal times, so touching intervals count as concurrent).  The search
walks the list from the head:

* at a *call* entry it tries to linearize that operation next: if the model accepts it and the
  configuration (set of linearized operations, new state) has not been seen, it pushes the old
  configuration, *lifts* the call and its return out of the list and restarts from the head;
* at a *return* entry the operation returned without being linearized, so the current
  configuration is a dead end: it pops the last choice, *unlifts* it and tries the next call.

Every configuration is put in ``seen`` when entered, and is only ever left by failing, so
meeting it again means failure (Lowe's cache).

The linearized set is a bitset over operations numbered in call order, stored as ``(low,
window)``: every operation before ``low`` is linearized, ``low`` itself is not, and bit ``d`` of
the Python ``int`` ``window`` says whether operation ``low + d`` is.  Only operations called
before ``low`` returns can be linearized, so ``window`` stays as small as the concurrency, not
the history.

Cache entries are ``(low, window, state)`` tuples; models keep their compiled states small
(the key-value model's are ids in a trie of the values read), so an entry is the tuple, the
window ``int`` and a slot in the set: about 130 bytes, whatever the values.

One reduction on top of that: an operation that is *pure* (it never changes a state that
accepts it, e.g. a read) is linearized as soon as it is accepted and never tried later.  Moving
such an operation earlier in any valid linearization keeps it valid: everything that had to come
before it is already linearized, and nothing after it sees a different state.  So if that choice
fails, the configuration fails, and the search backtracks at once.

Invariants of the loop: ``(low, window)`` encodes exactly the operations lifted out of the list,
with bit 0 of ``window`` clear; ``stack`` holds (entry, state, low, window) for every lifted call,
in order; ``state`` is the model state after applying the lifted operations in stack order.

:func:`search_steps` is the search as a generator that yields every few thousand backtracks, so
that a caller can run several searches in turn and stop them early; :func:`search` runs one to
the end.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Generator, Hashable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .budget import Limits
from .models import REJECT, CompiledHistory

__all__ = ["SearchOutcome", "Verdict", "search", "search_steps"]

#: How many backtracks happen between two looks at the clock and the memory (and two yields).
CLOCK_EVERY = 2048


class Verdict(str, Enum):
    """The answer of a check.  The value is the text the command line prints."""

    LINEARIZABLE = "linearizable"
    NOT_LINEARIZABLE = "not linearizable"
    UNKNOWN = "unknown"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class SearchOutcome:
    """What one search found.

    Attributes:
        verdict: LINEARIZABLE, NOT_LINEARIZABLE, or UNKNOWN when a budget ran out.
        order: for LINEARIZABLE a complete linearization (operation indices in order);
            otherwise the longest linearizable prefix the search found.
        state: the compiled model state after ``order``.
        blocked: the operation whose return was reached without it being linearizable after
            ``order`` (every attempt to fit it in failed); None for LINEARIZABLE.
        explored: how many distinct (linearized set, state) configurations were visited.
        reason: for UNKNOWN, why the search stopped (which budget ran out).
    """

    verdict: Verdict
    order: tuple[int, ...]
    state: Hashable
    blocked: int | None
    explored: int
    reason: str | None = None


def _estimate(seen: set[tuple[int, int, Hashable]], key: tuple[int, int, Hashable], stack: list[Any]) -> int:
    """Bytes held by the cache: the set's table, and per entry a tuple, its window and its state
    (sized like the last key; ints up to 256 are shared and cost nothing).  A function of its
    own, not a closure: a closure would turn the loop's variables into slower cell variables."""
    per_entry = sys.getsizeof(key) + sys.getsizeof(key[1])
    if not (isinstance(key[2], int) and -5 <= key[2] <= 256):
        per_entry += sys.getsizeof(key[2])
    return sys.getsizeof(seen) + len(seen) * per_entry + sys.getsizeof(stack) * 2


def search(
    compiled: CompiledHistory,
    calls: Sequence[float],
    ends: Sequence[float],
    deadline: float | None = None,
    limits: Limits | None = None,
) -> SearchOutcome:
    """Decide whether operations ``i`` (called at ``calls[i]``, returning at ``ends[i]``, with
    transition ``compiled.steps[i]``) have a linearization.

    ``ends[i]`` may be ``math.inf`` for operations that stay open until the end.  ``deadline``
    is a :func:`time.monotonic` instant after which the search gives up with UNKNOWN;
    ``limits`` a time and memory budget (see :class:`~linearizability.budget.Limits`), which
    replaces ``deadline`` when both are given.
    """
    if limits is None and deadline is not None:
        now = time.monotonic()
        limits = Limits(timeout=max(deadline - now, 0.0), started=now)
    steps = search_steps(compiled, calls, ends, limits)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


def search_steps(
    compiled: CompiledHistory,
    calls: Sequence[float],
    ends: Sequence[float],
    limits: Limits | None = None,
) -> Generator[None, None, SearchOutcome]:
    """:func:`search` as a generator: yields (None) every :data:`CLOCK_EVERY` backtracks, after
    looking at ``limits``; its return value (``StopIteration.value``) is the outcome."""
    n = len(calls)
    if n == 0:
        return SearchOutcome(Verdict.LINEARIZABLE, (), compiled.init, None, 0)
    # Internally, operation k is the k-th to be called (see the module docstring).
    perm = sorted(range(n), key=lambda i: (calls[i], i))
    events = sorted(
        [(calls[i], 0, k) for k, i in enumerate(perm)] + [(ends[i], 1, k) for k, i in enumerate(perm)]
    )
    size = 2 * n + 2
    tail = size - 1
    nxt = list(range(1, size + 1))
    prv = list(range(-1, size - 1))
    code = [0] * size  # k for the call entry of operation k, ~k for its return entry
    ret_entry = [0] * n
    for position, (_, kind, k) in enumerate(events, 1):
        if kind:
            code[position] = ~k
            ret_entry[k] = position
        else:
            code[position] = k

    steps = [compiled.steps[i] for i in perm]
    pure = [compiled.pure[i] for i in perm]
    seen: set[tuple[int, int, Hashable]] = set()
    seen_add = seen.add
    stack: list[tuple[int, Hashable, int, int]] = []
    push = stack.append
    pop = stack.pop
    reject = REJECT
    clock = CLOCK_EVERY

    state = compiled.init
    low = 0  # every operation k < low is linearized; operation low is not
    window = 0  # bit d set: operation low + d is linearized (bit 0 is always clear)
    key: tuple[int, int, Hashable] = (0, 0, state)
    entry = nxt[0]
    best_depth = -1
    best: tuple[tuple[int, ...], Hashable, int | None] = ((), state, None)

    while True:
        c = code[entry]
        if c >= 0:
            new = steps[c](state)
            if new is reject:
                entry = nxt[entry]
                continue
            if c == low:
                w = window | 1
                t = (~w & (w + 1)).bit_length() - 1  # trailing ones
                key = (low + t, w >> t, new)
            else:
                key = (low, window | (1 << (c - low)), new)
            if key not in seen:
                seen_add(key)
                push((entry, state, low, window))
                low, window, state = key
                p = prv[entry]
                q = nxt[entry]
                nxt[p] = q
                prv[q] = p
                r = ret_entry[c]
                p = prv[r]
                q = nxt[r]
                nxt[p] = q
                prv[q] = p
                entry = nxt[0]
                if entry == tail:
                    order = tuple(perm[code[e]] for e, _, _, _ in stack)
                    return SearchOutcome(Verdict.LINEARIZABLE, order, state, None, len(seen))
                continue
            if not pure[c]:
                entry = nxt[entry]
                continue
            # A pure operation leads to a configuration that already failed: so does this one.
        elif len(stack) > best_depth:
            best_depth = len(stack)
            best = (tuple(perm[code[e]] for e, _, _, _ in stack), state, perm[~c])

        # Backtrack: undo choices until one that is not a committed pure operation.
        while True:
            if not stack:
                order, best_state, blocked = best
                return SearchOutcome(Verdict.NOT_LINEARIZABLE, order, best_state, blocked, len(seen))
            entry, state, low, window = pop()
            c = code[entry]
            r = ret_entry[c]
            nxt[prv[r]] = r
            prv[nxt[r]] = r
            nxt[prv[entry]] = entry
            prv[nxt[entry]] = entry
            if not pure[c]:
                break
        entry = nxt[entry]
        clock -= 1
        if not clock:
            clock = CLOCK_EVERY
            if limits is not None:
                reason = limits.exceeded(_estimate(seen, key, stack))
                if reason is not None:
                    order, best_state, blocked = best
                    return SearchOutcome(Verdict.UNKNOWN, order, best_state, blocked, len(seen), reason)
            yield
