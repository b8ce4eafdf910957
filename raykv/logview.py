"""Reading the Raft decision log (:mod:`raft.trace`): parse its lines, filter them, lay them out with
one column per peer. Pure functions on strings; :mod:`raykv.logs_cli` is the ``raykv logs`` command.

A decision line is ``[(PREFIX) ][HH:MM:SS.ffffff ]raft  P<peer> T<term> <role> <topic> <text>``, a
note (about the run, not one peer: a fault injected) ``[(PREFIX) ][TIME ]note  <topic> <text>``. The
prefix is either the process's label (:func:`raft.trace.set_label`: a replica's name, such as
``shop-g101-2``, which tells the groups of a sharded run apart) or what Ray puts before a worker's
output forwarded to the driver (``(ServiceReplica pid=123)``: ignored); the time is what
:class:`raft.trace.TimeFormatter` writes (a log from before it has none). Each (label, peer) gets
its own column. Any other line (a test's output, a traceback, a torn or edited line) is an
:class:`Event` with ``peer`` None and no topic, kept in place and shown as it is: reading a log never
fails on its content.

Invariants: :func:`parse` returns one event per input line, in input order, each holding its line
unchanged in ``raw``; times are seconds since the first timed line of the input (a time of day that
goes back by more than 12 hours is taken to have crossed midnight); a line without a time takes the
time of the timed line before it (None before the first), so sorting by time (stable) keeps it after
the line it followed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from raft.trace import TOPICS

__all__ = ["ROLE_ABBREV", "TOPIC_STYLES", "Event", "Layout", "filter_events", "header", "layout", "name",
           "parse", "parse_topics", "plain", "plan", "wrap"]

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_LINE = re.compile(
    r"^(?:\((?P<proc>[^)]*)\)\s+)?"
    r"(?:(?P<clock>\d{1,2}:\d{2}:\d{2}(?:\.\d+)?)\s+)?"
    r"(?:raft\s+P(?P<peer>\d+)\s+T(?P<term>\d+)\s+(?P<role>\S+)\s+(?P<topic>[a-z]+)|note\s+(?P<note>[a-z]+))"
    r"(?:\s(?P<text>.*))?$")
_DAY = 86400.0

#: the rich style of each topic (a topic missing here is shown unstyled)
TOPIC_STYLES: dict[str, str] = {
    "elect": "bold magenta",
    "term": "yellow",
    "append": "blue",
    "commit": "green",
    "snap": "cyan",
    "persist": "bright_black",
    "member": "bold yellow",
    "replace": "red",
    "msg": "dim",
    "fault": "bold red",
}

#: one letter per role in a cell: ``T5 L commit: ...``
ROLE_ABBREV = {"leader": "L", "candidate": "C", "pre-candidate": "P", "follower": "F"}


@dataclass(frozen=True)
class Event:
    """One line of the log: a decision (``peer`` set), a note (``peer`` None, ``topic`` set) or any
    other line (neither: shown as it is). ``source`` is the process label in front of it, if any."""

    raw: str
    time: float | None
    peer: int | None = None
    term: int = 0
    role: str = ""
    topic: str = ""
    text: str = ""
    source: str = ""

    @property
    def key(self) -> tuple[str, int]:
        """The column a decision goes to: one per (label, peer)."""
        return (self.source, -1 if self.peer is None else self.peer)

    @property
    def is_trace(self) -> bool:
        """A decision or a note (not some other line)."""
        return self.peer is not None or bool(self.topic)

    def cell(self) -> str:
        """What the peer's column shows: term, role, topic, the decision."""
        role = ROLE_ABBREV.get(self.role, self.role)
        return f"T{self.term} {role} {self.topic}: {self.text}"


def _clock_seconds(clock: str) -> float:
    hours, minutes, seconds = clock.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def parse(lines: Iterable[str]) -> list[Event]:
    """One event per line (trailing newline and terminal colour codes removed from the text parsed)."""
    events: list[Event] = []
    base: float | None = None
    last: float | None = None
    for line in lines:
        raw = line.rstrip("\r\n")
        m = _LINE.match(_ANSI.sub("", raw).strip())
        if m is None:
            events.append(Event(raw=raw, time=last))
            continue
        t = last
        if m["clock"] is not None:
            secs = _clock_seconds(m["clock"])
            if base is None:
                base = secs
            while secs < base - _DAY / 2:
                secs += _DAY
            t = last = secs - base
        proc = m["proc"] or ""
        source = "" if "pid=" in proc else proc.strip()
        text = (m["text"] or "").strip()
        if m["note"] is not None:
            events.append(Event(raw=raw, time=t, topic=m["note"], text=text, source=source))
        else:
            events.append(Event(raw=raw, time=t, peer=int(m["peer"]), term=int(m["term"]), role=m["role"],
                                topic=m["topic"], text=text, source=source))
    return events


def parse_topics(spec: str) -> frozenset[str]:
    """``'elect,commit'`` -> the set; ValueError naming the unknown ones and the known ones."""
    names = {t.strip().lower() for t in spec.split(",") if t.strip()}
    unknown = sorted(names - TOPICS)
    if unknown:
        raise ValueError(f"unknown topic(s) {', '.join(unknown)}; the topics are "
                         f"{', '.join(sorted(TOPICS))}")
    return frozenset(names)


def filter_events(events: Sequence[Event], *, topics: frozenset[str] | None = None,
                  ignore: frozenset[str] = frozenset(), peers: frozenset[int] | None = None,
                  start: float | None = None, end: float | None = None,
                  other: bool = True, sort: bool = True) -> list[Event]:
    """The events to show. Topic filters apply to decisions and notes, the peer filter to decisions;
    other lines are kept when ``other`` (and their time, inherited from the line before, is in
    range). The time
    range [start, end] is in seconds since the first timed line; an event without a time passes it
    only when no range is given. ``sort`` orders by time, stably (lines of several processes
    appended to one file can be slightly out of order)."""
    kept: list[Event] = []
    for ev in events:
        if not ev.is_trace:
            if not other:
                continue
        else:
            if topics is not None and ev.topic not in topics:
                continue
            if ev.topic in ignore:
                continue
            if peers is not None and ev.peer is not None and ev.peer not in peers:
                continue
        if start is not None or end is not None:
            if ev.time is None:
                continue
            if start is not None and ev.time < start:
                continue
            if end is not None and ev.time > end:
                continue
        kept.append(ev)
    if sort:
        kept.sort(key=lambda e: -1.0 if e.time is None else e.time)
    return kept


#: one physical output line: (text, rich style or "") segments
Segments = list[tuple[str, str]]


@dataclass(frozen=True)
class Layout:
    """How to lay events out: the (label, peer) keys that get a column (in order), each column's
    width and the time column's width. With fewer columns than keys, key number k of the order goes
    in column k mod ncols and its cells start with its name."""

    peers: tuple[tuple[str, int], ...]
    width: int = 30
    ncols: int | None = None
    time_width: int = 10

    @property
    def columns(self) -> int:
        return max(1, min(self.ncols, len(self.peers)) if self.ncols else len(self.peers))

    def column_of(self, key: tuple[str, int]) -> int:
        try:
            rank = self.peers.index(key)
        except ValueError:
            rank = len(self.peers)
        return rank % self.columns

    def folded(self) -> bool:
        return self.columns < len(self.peers)


def plan(events: Sequence[Event], *, width: int | None = None, ncols: int | None = None,
         total_width: int = 120) -> Layout:
    """A layout for ``events``: one column per (label, peer) seen (sorted, at most ``ncols``), each
    ``width`` wide or an equal share of ``total_width`` (at least 12)."""
    peers = tuple(sorted({e.key for e in events if e.peer is not None})) or (("", 0),)
    probe = Layout(peers=peers, ncols=ncols)
    if width is None:
        width = max(12, (total_width - probe.time_width) // probe.columns)
    return replace(probe, width=width)


def name(key: tuple[str, int]) -> str:
    """A column's name: the process label if the lines had one, else ``P<peer>``."""
    return key[0] or f"P{key[1]}"


def header(lay: Layout) -> Segments:
    """The line naming each column's peer(s)."""
    segs: Segments = [(" " * lay.time_width, "")]
    for col in range(lay.columns):
        names = [name(k) for k in lay.peers if lay.column_of(k) == col]
        label = " ".join(names)[: lay.width - 1]
        segs += [(label, "bold"), (" " * (lay.width - len(label)), "")]
    return segs


def layout(events: Sequence[Event], lay: Layout) -> list[Segments]:
    """The output lines: for a decision, its time, then its cell in its peer's column wrapped to the
    column's width (the other columns blank); for any other line, the line as it is."""
    out: list[Segments] = []
    for ev in events:
        stamp = "" if ev.time is None else f"{ev.time:.4f}"
        if ev.peer is None:
            if ev.topic:  # a note: across the columns, in its topic's colour
                out.append([(stamp.rjust(lay.time_width - 1) + " ", "dim"),
                            (f"note {ev.topic}: {ev.text}", TOPIC_STYLES.get(ev.topic, "bold"))])
            else:
                out.append([(ev.raw, "dim")])
            continue
        col = lay.column_of(ev.key)
        text = ev.cell()
        if lay.folded():
            text = f"{name(ev.key)} {text}"
        wrapped = wrap(text, max(4, lay.width - 1))
        style = TOPIC_STYLES.get(ev.topic, "")
        for i, piece in enumerate(wrapped):
            lead = (stamp if i == 0 else "").rjust(lay.time_width - 1) + " "
            segs: Segments = [(lead, "dim"), (" " * (col * lay.width), "")]
            segs.append((piece, style))
            out.append(segs)
    return out


def wrap(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` characters, cut at the last space that fits (a word
    longer than a line is cut where the line ends); what textwrap does, several times faster."""
    lines: list[str] = []
    while len(text) > width:
        cut = text.rfind(" ", 0, width + 1)
        if cut <= 0:
            lines.append(text[:width])
            text = text[width:]
        else:
            lines.append(text[:cut].rstrip(" "))
            text = text[cut + 1:].lstrip(" ")
    if text or not lines:
        lines.append(text)
    return lines


def plain(lines: Iterable[Segments]) -> list[str]:
    """The lines as plain text (styles dropped, trailing blanks removed)."""
    return ["".join(text for text, _ in segs).rstrip() for segs in lines]
