"""The event trace of a simulated run: a cheap ring buffer while running, readable text on demand.

An event is a plain tuple ``(tick, kind, peer, detail)``; ``peer`` is -1 for cluster-wide events and
``detail`` is a message, a string, a number or ``None``. Recording a tuple costs one ``deque.append``;
formatting happens only when a person (or a determinism test) asks for text. The text of an event is
a pure function of the tuple, so the same seed yields the same text byte for byte.

Kinds: ``tick``, ``deliver``, ``drop`` (lost by the network), ``cut`` (blocked by a partition),
``down`` (the receiver is crashed), ``dup`` (duplicated), ``propose``, ``commit``, ``role``,
``snapshot`` (the service compacted), ``install`` (a snapshot was applied), ``crash``, ``restart``,
``partition``, ``heal``, ``calm`` (a liveness window opens), ``live`` (it closed successfully),
``violation``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from raft.types import (
    AppendEntries,
    AppendEntriesReply,
    InstallSnapshot,
    InstallSnapshotReply,
    RequestVote,
    RequestVoteReply,
)

Event = tuple[int, str, int, Any]


def format_message(m: Any) -> str:
    """One line per message, e.g. ``AE T5 P1->P2 prev=(10,t4) [11..13] commit=9``."""
    head = f"T{m.term} P{m.src}->P{m.dst}"
    if isinstance(m, AppendEntries):
        body = f"[{m.entries[0].index}..{m.entries[-1].index}]" if m.entries else "heartbeat"
        return f"AE  {head} prev=({m.prev_index},t{m.prev_term}) {body} commit={m.leader_commit}"
    if isinstance(m, AppendEntriesReply):
        if m.success:
            return f"AER {head} ok match={m.match_index}"
        return (f"AER {head} reject prev={m.prev_index} conflict=(t{m.conflict_term},"
                f"{m.conflict_index})")
    if isinstance(m, RequestVote):
        return f"RV  {head} last=({m.last_log_index},t{m.last_log_term})"
    if isinstance(m, RequestVoteReply):
        return f"RVR {head} {'granted' if m.granted else 'refused'}"
    if isinstance(m, InstallSnapshot):
        return f"IS  {head} snapshot=({m.snapshot.index},t{m.snapshot.term})"
    if isinstance(m, InstallSnapshotReply):
        return f"ISR {head} match={m.match_index}"
    return repr(m)


def format_event(ev: Event) -> str:
    tick, kind, peer, detail = ev
    who = f"P{peer}" if peer >= 0 else "--"
    if detail is None:
        text = ""
    elif isinstance(detail, str):
        text = detail
    elif isinstance(detail, (int, float, tuple)):
        text = str(detail)
    else:
        text = format_message(detail)
    return f"t={tick:<6} {kind:<9} {who:<3} {text}".rstrip()


def format_events(events: Iterable[Event]) -> str:
    return "\n".join(format_event(ev) for ev in events)


class EventLog:
    """The last ``tail`` events, and every event when ``record`` is set."""

    __slots__ = ("full", "tail")

    def __init__(self, tail: int, record: bool) -> None:
        self.tail: deque[Event] = deque(maxlen=max(tail, 1))
        self.full: list[Event] | None = [] if record else None

    def add(self, ev: Event) -> None:
        self.tail.append(ev)
        if self.full is not None:
            self.full.append(ev)

    def emitter(self) -> Callable[[Event], None]:
        """The fastest callable that records one event (``deque.append`` itself when not recording)."""
        return self.tail.append if self.full is None else self.add

    def text(self) -> str:
        """The whole recorded trace (requires ``record``)."""
        if self.full is None:
            raise ValueError("this run did not record its full trace (SimConfig.record=False)")
        return format_events(self.full)

    def tail_text(self) -> str:
        return format_events(self.tail)
