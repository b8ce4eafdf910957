"""History types: operations, raw call/return events, and the unknown-outcome marker.

A *history* is a list of :class:`Operation` objects.  Each operation was issued by one client,
was called at ``call`` and returned at ``ret`` with ``output``.  Times are any totally ordered
numbers (seconds, nanoseconds, line numbers); only their order matters.

Invariants of an :class:`Operation`:

* ``ret is None or ret >= call``;
* ``ret is None`` (the call never returned) implies ``output is UNKNOWN``;
* an operation whose ``output is UNKNOWN`` (timed out, crashed, never returned) is treated by the
  checker as *still open at the end of the history*: it may take effect at any moment after its
  call, or never.  Its recorded ``ret`` is kept only for display.

Raw events (:class:`Event`) are the other way to write a history: a list of calls and returns in
real-time order, matched by ``id``.  :func:`operations_from_events` turns them into operations.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

__all__ = [
    "UNKNOWN",
    "Event",
    "HistoryError",
    "Operation",
    "Unknown",
    "operations_from_events",
    "validate_history",
]


class Unknown:
    """Type of :data:`UNKNOWN`, the output of an operation whose outcome is not known.

    There is exactly one instance per process; pickling preserves identity, so records sent
    back from Ray actors still compare ``is UNKNOWN``.
    """

    __slots__ = ()
    _instance: Unknown | None = None

    def __new__(cls) -> Unknown:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __reduce__(self) -> str:
        return "UNKNOWN"

    def __repr__(self) -> str:
        return "UNKNOWN"

    def __bool__(self) -> bool:
        return False


UNKNOWN: Final[Unknown] = Unknown()


class HistoryError(ValueError):
    """A history that breaks an invariant (for example a return before its call)."""


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation of a history.

    Attributes:
        client: who issued it (any hashable value); used to draw one lane per client.
        input: the model-specific input, for example ``("write", 3)`` or ``("get", "k")``.
        output: the model-specific output, or :data:`UNKNOWN` if the outcome is not known.
        call: the time the operation was called.
        ret: the time it returned, or ``None`` if it never did.
    """

    client: Hashable
    input: Any
    output: Any = UNKNOWN
    call: float = 0.0
    ret: float | None = None

    @property
    def unknown(self) -> bool:
        """True when the outcome is unknown: the operation stays open until the end."""
        return self.output is UNKNOWN

    @property
    def end(self) -> float:
        """The return time the checker uses: ``ret``, or infinity for unknown outcomes."""
        if self.output is UNKNOWN or self.ret is None:
            return math.inf
        return self.ret


@dataclass(frozen=True, slots=True)
class Event:
    """A raw call or return event.  A list of events is in real-time order.

    ``id`` matches a return to its call; it must be unique among the calls that are open at
    the same time.  ``time`` is optional: without it the position in the list is the time.
    A return whose ``value`` is :data:`UNKNOWN` records a call that timed out.
    """

    kind: Literal["call", "return"]
    client: Hashable
    id: Hashable
    value: Any = None
    time: float | None = field(default=None)


def validate_history(operations: Iterable[Operation]) -> list[Operation]:
    """Check the :class:`Operation` invariants and return the operations as a list.

    Raises:
        HistoryError: naming the first operation that breaks an invariant.
    """
    ops = list(operations)
    for index, op in enumerate(ops):
        if not isinstance(op, Operation):
            raise HistoryError(
                f"history item {index} is a {type(op).__name__}, not an Operation; "
                "build histories from linearizability.Operation (or use operations_from_events)"
            )
        for name, t in (("call", op.call), ("return", op.ret)):
            if (t is not None or name == "call") and (not isinstance(t, numbers.Real) or t != t):
                raise HistoryError(
                    f"operation {index} ({op.input!r} by client {op.client!r}) has {name} time "
                    f"{t!r}; times must be real numbers (not NaN)"
                )
        if op.ret is not None and op.ret < op.call:
            raise HistoryError(
                f"operation {index} ({op.input!r} by client {op.client!r}) returns at {op.ret} "
                f"before its call at {op.call}; times must not go backwards"
            )
        if op.ret is None and op.output is not UNKNOWN:
            raise HistoryError(
                f"operation {index} ({op.input!r} by client {op.client!r}) has an output but no "
                "return time; give it a return time, or use output=UNKNOWN"
            )
    return ops


def operations_from_events(events: Sequence[Event]) -> list[Operation]:
    """Pair calls with returns and build operations, in the order of their calls.

    Calls without a return become operations with ``ret=None`` and ``output=UNKNOWN``.

    Raises:
        HistoryError: for a return with no open call of that id, a second call with an id that
            is still open, a return from another client than the call, or times that go back.
    """
    open_calls: dict[Hashable, tuple[int, Event, float]] = {}
    done: dict[int, Operation] = {}
    last_time = -math.inf
    for position, event in enumerate(events):
        time = float(position) if event.time is None else event.time
        if time < last_time:
            raise HistoryError(
                f"event {position} at time {time} comes after an event at {last_time}; "
                "events must be listed in real-time order"
            )
        last_time = time
        if event.kind == "call":
            if event.id in open_calls:
                raise HistoryError(
                    f"event {position} calls id {event.id!r}, which is still open since event "
                    f"{open_calls[event.id][0]}; ids must be unique among open calls"
                )
            open_calls[event.id] = (position, event, time)
        elif event.kind == "return":
            if event.id not in open_calls:
                raise HistoryError(
                    f"event {position} returns id {event.id!r}, but no call with that id is "
                    "open; every return needs an earlier call with the same id"
                )
            start, call, call_time = open_calls.pop(event.id)
            if call.client != event.client:
                raise HistoryError(
                    f"event {position} returns id {event.id!r} for client {event.client!r}, "
                    f"but it was called by client {call.client!r}"
                )
            done[start] = Operation(call.client, call.value, event.value, call_time, time)
        else:
            raise HistoryError(f"event {position} has kind {event.kind!r}; expected 'call' or 'return'")
    for start, call, call_time in open_calls.values():
        done[start] = Operation(call.client, call.value, UNKNOWN, call_time, None)
    return [done[start] for start in sorted(done)]
