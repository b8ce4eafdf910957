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
meeting it again means failure (Lowe's cache).  The linearized set is a Python ``int`` used as a
bitset; states must be hashable.

One reduction on top of that: an operation that is *pure* (it never changes a state that
accepts it, e.g. a read) is linearized as soon as it is accepted and never tried later.  Moving
such an operation earlier in any valid linearization keeps it valid: everything that had to come
before it is already linearized, and nothing after it sees a different state.  So if that choice
fails, the configuration fails, and the search backtracks at once.

Invariants of the loop: ``lin`` has exactly the bits of the operations lifted out of the list;
``stack`` holds (entry, state, lin) for every lifted call, in order; ``state`` is the model state
after applying the lifted operations in stack order.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from enum import Enum

from .models import REJECT, CompiledHistory

__all__ = ["SearchOutcome", "Verdict", "search"]

#: How many backtracks happen between two looks at the clock.
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
        verdict: LINEARIZABLE, NOT_LINEARIZABLE, or UNKNOWN when the deadline passed.
        order: for LINEARIZABLE a complete linearization (operation indices in order);
            otherwise the longest linearizable prefix the search found.
        state: the compiled model state after ``order``.
        blocked: the operation whose return was reached without it being linearizable after
            ``order`` (every attempt to fit it in failed); None for LINEARIZABLE.
        explored: how many distinct (linearized set, state) configurations were visited.
    """

    verdict: Verdict
    order: tuple[int, ...]
    state: Hashable
    blocked: int | None
    explored: int


def search(
    compiled: CompiledHistory,
    calls: Sequence[float],
    ends: Sequence[float],
    deadline: float | None = None,
) -> SearchOutcome:
    """Decide whether operations ``i`` (called at ``calls[i]``, returning at ``ends[i]``, with
    transition ``compiled.steps[i]``) have a linearization.

    ``ends[i]`` may be ``math.inf`` for operations that stay open until the end.  ``deadline``
    is a :func:`time.monotonic` instant after which the search gives up with UNKNOWN.
    """
    n = len(calls)
    if n == 0:
        return SearchOutcome(Verdict.LINEARIZABLE, (), compiled.init, None, 0)
    events = sorted([(calls[i], 0, i) for i in range(n)] + [(ends[i], 1, i) for i in range(n)])
    size = 2 * n + 2
    tail = size - 1
    nxt = list(range(1, size + 1))
    prv = list(range(-1, size - 1))
    code = [0] * size  # op index for a call entry, ~op index for a return entry
    ret_entry = [0] * n
    for position, (_, kind, i) in enumerate(events, 1):
        if kind:
            code[position] = ~i
            ret_entry[i] = position
        else:
            code[position] = i

    steps = compiled.steps
    pure = compiled.pure
    bits = [1 << i for i in range(n)]
    seen: set[tuple[int, Hashable]] = set()
    seen_add = seen.add
    stack: list[tuple[int, Hashable, int]] = []
    push = stack.append
    pop = stack.pop
    reject = REJECT
    monotonic = time.monotonic
    clock = CLOCK_EVERY

    state = compiled.init
    lin = 0
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
            nl = lin | bits[c]
            key = (nl, new)
            if key not in seen:
                seen_add(key)
                push((entry, state, lin))
                state = new
                lin = nl
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
                    order = tuple(code[e] for e, _, _ in stack)
                    return SearchOutcome(Verdict.LINEARIZABLE, order, state, None, len(seen))
                continue
            if not pure[c]:
                entry = nxt[entry]
                continue
            # A pure operation leads to a configuration that already failed: so does this one.
        elif len(stack) > best_depth:
            best_depth = len(stack)
            best = (tuple(code[e] for e, _, _ in stack), state, ~c)

        # Backtrack: undo choices until one that is not a committed pure operation.
        while True:
            if not stack:
                order, best_state, blocked = best
                return SearchOutcome(Verdict.NOT_LINEARIZABLE, order, best_state, blocked, len(seen))
            entry, state, lin = pop()
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
            if deadline is not None and monotonic() > deadline:
                order, best_state, blocked = best
                return SearchOutcome(Verdict.UNKNOWN, order, best_state, blocked, len(seen))
