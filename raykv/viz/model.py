"""Raft decision logs -> a timeline a page can draw (pure: text in, plain data out).

The input is what ``RAYKV_LOG`` writes (see :mod:`raft.trace`): one line per decision,
``[HH:MM:SS.ffffff ]raft  P2 T5   leader    commit  commit index 17 -> 19``, possibly behind a prefix
(Ray's ``(ServiceReplica pid=123)`` when actors log to the driver) and mixed with other output, which
is skipped. ``note  fault   isolate shop-g101-2`` lines (the torture nemesis's) are run-wide events.

A *source* is one file (its name without ``.log``). The lanes: one per (group, peer). When a source
holds the lines of a single peer ``P<i>`` and its name ends with ``i`` (a replica's own file,
``shop-g101-2``), its group is the name without that suffix (``shop-g101``), so the replicas of one
group share a group whichever files they came from; otherwise the source's name is the group.

Time: the lines' time of day (seconds since the first line; times more than 12 hours apart are taken
as midnight passing). A source without timestamps counts lines instead (``unit == "line"``).
Lines are merged in time order, a source's own order kept for equal times.

What the timeline holds (:meth:`Timeline.to_json`, the page's data), per lane: the (term, role) after
each change, the (last index, commit index, snapshot index) after each change; and messages (a send
paired with its receipt: the text before ``;`` of a ``msg`` line is the same on both ends, paired
first in, first out; a send never received has no receipt time), and events (elections, votes,
crashes, restarts, snapshots, membership, faults).

Invariants: every lane index in ``msgs``/``events`` is in ``lanes`` (or -1: the whole run); times
are ``>= 0`` and every per-lane series is in time order.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Line", "Timeline", "build", "parse_lines"]

_CLOCK = r"(?:\((?P<proc>[^)]*)\)\s+)?(?:(?P<clock>\d{1,2}:\d{2}:\d{2}(?:\.\d+)?)\s+)?"
RAFT_RE = re.compile(_CLOCK + r"raft\s+P(?P<peer>\d+)\s+T(?P<term>\d+)\s+(?P<role>\S+)\s+(?P<topic>[a-z]+)"
                              r"(?:\s+(?P<text>.*))?$")
NOTE_RE = re.compile(_CLOCK + r"note\s+(?P<topic>[a-z]+)(?:\s+(?P<text>.*))?$")

_LAST = re.compile(r"last(?: index)?[= ](\d+)")
_COMMIT = re.compile(r"commit index (\d+) -> (\d+)")
_SNAP = re.compile(r"(?:compacted log|installed snapshot) through (\d+)")
_RESTART = re.compile(r"restarted: snapshot (\d+), last index (\d+)")
_MSG = re.compile(r"(?P<dir>send|recv) (?P<body>(?P<kind>[A-Z]+) P(?P<src>\d+)->P(?P<dst>\d+) T(?P<term>\d+)"
                  r"(?P<rest>[^;]*?))\s*(?:;\s*last=(?P<last>\d+))?\s*$")
_OK = re.compile(r"\b(?:ok|granted)=(\d)")
_N = re.compile(r"\bn=(\d+)")

#: event kinds drawn on the page, from the decision texts that announce them
_EVENT_TEXTS: tuple[tuple[str, str], ...] = (
    ("election timeout: campaigning", "campaign"),
    ("asking for pre-votes", "prevote"),
    ("won the election", "elected"),
    ("granted vote", "vote"),
    ("-> follower", "stepdown"),
    ("check quorum", "stepdown"),
    ("restarted:", "restart"),
    ("crashed", "crash"),
    ("compacted log", "snapshot"),
    ("installed snapshot", "install"),
    ("rejected append", "reject"),
)


@dataclass(frozen=True)
class Line:
    """One decision (``peer >= 0``) or run-wide note (``peer == -1``) of one source."""

    source: str
    seq: int
    clock: float | None
    peer: int
    term: int
    role: str
    topic: str
    text: str


def _seconds(clock: str) -> float:
    h, m, s = clock.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def _source(file: str, proc: str | None) -> str:
    """A line's source: the process label in front of it (``(shop-g101-2) ...``, see
    :func:`raft.trace.set_label`), else its file. Ray's own prefix (``(ServiceReplica pid=123)``) names
    a process, not a replica, so lines behind it count as their file's."""
    if proc and "pid=" not in proc:
        return proc.strip()
    return file


def parse_lines(source: str, lines: Iterable[str]) -> list[Line]:
    """The decision and note lines of the file ``source``, in its order; anything else is skipped."""
    out: list[Line] = []
    for raw in lines:
        text = raw.rstrip("\r\n")
        m = RAFT_RE.search(text)
        if m is not None:
            clock = _seconds(m["clock"]) if m["clock"] else None
            out.append(Line(_source(source, m["proc"]), len(out), clock, int(m["peer"]), int(m["term"]),
                            m["role"], m["topic"], (m["text"] or "").strip()))
            continue
        m = NOTE_RE.search(text)
        if m is not None:
            clock = _seconds(m["clock"]) if m["clock"] else None
            out.append(Line(_source(source, m["proc"]), len(out), clock, -1, 0, "", m["topic"],
                            (m["text"] or "").strip()))
    return out


@dataclass
class Timeline:
    """The page's data; see the module docstring."""

    unit: str = "s"
    start_clock: float | None = None
    lanes: list[dict[str, Any]] = field(default_factory=list)
    #: per lane: [t, term, role] at each change
    states: list[list[list[Any]]] = field(default_factory=list)
    #: per lane: [t, last, commit, snap] at each change
    logs: list[list[list[Any]]] = field(default_factory=list)
    #: [t_send, src lane, t_recv (None: never received), dst lane (-1: unknown), kind, ok (-1: n/a)]
    msgs: list[list[Any]] = field(default_factory=list)
    #: [t, lane (-1: the run), kind, text]
    events: list[list[Any]] = field(default_factory=list)
    #: [t, lane, term] of each election won
    leaders: list[list[Any]] = field(default_factory=list)
    end: float = 0.0
    lines: int = 0
    unmatched_receipts: int = 0

    @property
    def terms(self) -> list[int]:
        return sorted({s[1] for states in self.states for s in states})

    def to_json(self) -> dict[str, Any]:
        return {"unit": self.unit, "start_clock": self.start_clock, "lanes": self.lanes,
                "states": self.states, "logs": self.logs, "msgs": self.msgs, "events": self.events,
                "leaders": self.leaders, "end": self.end, "lines": self.lines, "terms": self.terms,
                "unmatched_receipts": self.unmatched_receipts}


def _groups(parsed: dict[str, list[Line]]) -> dict[str, str]:
    groups: dict[str, str] = {}
    for source, lines in parsed.items():
        peers = {ln.peer for ln in lines if ln.peer >= 0}
        group = source
        if len(peers) == 1:
            (p,) = peers
            if source.endswith(str(p)) and len(source) > len(str(p)):
                group = source[: -len(str(p))].rstrip("-_.")
        elif (slot := re.fullmatch(r"(.+)[-_.](\d+)", source)) and int(slot[2]) in peers:
            # a replica named after its slot ("shop-g101-2") that was replaced under the same name:
            # the old peer and the new one, both of the group "shop-g101"
            group = slot[1]
        groups[source] = group
    return groups


def _natural(text: str) -> list[Any]:
    """A sort key putting ``g2`` before ``g10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _common_prefix(names: list[str]) -> int:
    """The length of the prefix all ``names`` share, up to and including its last ``-``, ``_`` or
    ``.`` (``torture-17-1-g101``, ``torture-17-1-ctrler`` -> ``g101``, ``ctrler``)."""
    first, last = min(names), max(names)
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    while n > 0 and first[n - 1] not in "-_.":
        n -= 1
    return n


def _timed(parsed: dict[str, list[Line]]) -> tuple[list[tuple[float, int, Line]], str, float | None]:
    """Every line with its time, merged in time order. Times of day more than 12 hours apart mean the
    run crossed midnight: the early ones are the next day's (a run is taken to last under 12 hours)."""
    clocks = [ln.clock for lines in parsed.values() for ln in lines if ln.clock is not None]
    out: list[tuple[float, int, Line]] = []
    first: float | None = None
    if clocks:
        wraps = max(clocks) - min(clocks) > 43_200

        def day(c: float) -> float:
            return c + 86_400 if wraps and c < 43_200 else c

        first = min(day(c) for c in clocks)
    order = 0
    for lines in parsed.values():
        t = 0.0
        for ln in lines:
            if clocks:
                if ln.clock is not None:  # a line without a time keeps its predecessor's
                    t = day(ln.clock) - (first or 0.0)
            else:
                t = float(ln.seq)
            out.append((max(t, 0.0), order, ln))
            order += 1
    out.sort(key=lambda x: (x[0], x[1]))
    return out, "s" if clocks else "line", (first % 86_400 if first is not None else None)


def build(sources: Sequence[tuple[str, Iterable[str]]]) -> Timeline:
    """The timeline of the runs logged in ``sources`` (name, lines); see the module docstring.

    Raises ValueError when no source holds a decision line (what to do is in the message)."""
    parsed: dict[str, list[Line]] = {}
    for name, lines in sources:
        for ln in parse_lines(name, lines):
            parsed.setdefault(ln.source, []).append(ln)
    if not parsed:
        names = ", ".join(name for name, _ in sources) or "(none)"
        raise ValueError(f"no Raft decision lines in {names}: record a run with RAYKV_LOG=all "
                         "(and RAYKV_LOG_FILE=PATH to collect every process's lines in one place)")
    groups = _groups(parsed)
    timed, unit, first = _timed(parsed)
    tl = Timeline(unit=unit, start_clock=first)
    lane_of: dict[tuple[str, int], int] = {}
    keys = sorted({(groups[ln.source], ln.peer) for _, _, ln in timed if ln.peer >= 0},
                  key=lambda k: (_natural(k[0]), k[1]))
    ngroups = len({g for g, _ in keys})
    cut = _common_prefix([g for g, _ in keys]) if ngroups > 1 else 0
    for g, p in keys:
        lane_of[(g, p)] = len(tl.lanes)
        tl.lanes.append({"name": f"P{p}" if ngroups == 1 else f"{g[cut:]} P{p}", "group": g, "peer": p,
                         "end": 0.0})
        tl.states.append([])
        tl.logs.append([])
    state: list[list[Any]] = [[0, "", 0, 0, 0] for _ in keys]  # term, role, last, commit, snap
    pending: dict[tuple[str, str], deque[int]] = {}
    for t, _, ln in timed:
        t = round(t, 6)
        tl.end = max(tl.end, t)
        tl.lines += 1
        if ln.peer < 0:
            tl.events.append([t, -1, ln.topic, ln.text])
            continue
        g = groups[ln.source]
        lane = lane_of[(g, ln.peer)]
        tl.lanes[lane]["end"] = t
        st = state[lane]
        role = ln.role
        crashed = ln.topic == "persist" and ln.text.startswith("crashed")
        if crashed:
            role = "crashed"
        if (st[0], st[1]) != (ln.term, role):
            st[0], st[1] = ln.term, role
            tl.states[lane].append([t, ln.term, role])
        last, commit, snap = st[2], st[3], st[4]
        text = ln.text
        if ln.topic == "msg":
            m = _MSG.match(text)
            if m is not None:
                if m["last"] is not None:
                    last = int(m["last"])
                key = (g, m["body"])
                if m["dir"] == "send":
                    ok = _OK.search(m["rest"])
                    kind = m["kind"]
                    if kind == "AE" and (n := _N.search(m["rest"])) is not None and n[1] == "0":
                        kind = "HB"
                    dst = lane_of.get((g, int(m["dst"])), -1)
                    pending.setdefault(key, deque()).append(len(tl.msgs))
                    tl.msgs.append([t, lane, None, dst, kind, int(ok[1]) if ok else -1])
                else:
                    q = pending.get(key)
                    if q:
                        msg = tl.msgs[q.popleft()]
                        msg[2], msg[3] = t, lane
                    else:
                        tl.unmatched_receipts += 1
        else:
            if ln.topic == "commit" and (m := _COMMIT.search(text)) is not None:
                commit = int(m[2])
            elif (m := _RESTART.search(text)) is not None:
                snap, last = int(m[1]), int(m[2])
                commit = snap
            elif (m := _SNAP.search(text)) is not None:
                snap = max(snap, int(m[1]))
                if text.startswith("installed"):
                    last, commit = max(last, snap), max(commit, snap)
            elif ln.topic == "elect" and (m := _LAST.search(text)) is not None:
                last = int(m[1])
            kind = next((k for needle, k in _EVENT_TEXTS if needle in text), None)
            if crashed:
                kind = "crash"
            if kind is None and ln.topic in ("member", "replace", "snap"):
                kind = ln.topic
            if kind is not None:
                tl.events.append([t, lane, kind, text])
            if kind == "elected":
                tl.leaders.append([t, lane, ln.term])
        if (last, commit, snap) != (st[2], st[3], st[4]):
            st[2], st[3], st[4] = last, max(commit, 0), snap
            tl.logs[lane].append([t, last, commit, snap])
    return tl
