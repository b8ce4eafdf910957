"""The live table of ``raykv demo`` as plain data, and its plain-text rendering. No Ray, no ``rich``, no
clock: :func:`build_snapshot` turns what :meth:`raykv.ShardedKV.status` answered (a
:class:`~raykv.sharded_status.ServiceStatus`, read through its attributes only) and the clients'
operation counts into a :class:`Snapshot`; :func:`format_snapshot` and :func:`format_line` print it.
The ``rich`` view (:mod:`raykv.demo_view`) draws the same :class:`Snapshot`.

One row per group, the controller first: who leads (the node its leader runs on), the highest term
its replicas report, replicas up, the shards it serves, client operations per second on those shards,
and moves in flight (shards arriving at it or leaving it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "GroupRow",
    "Snapshot",
    "build_snapshot",
    "format_line",
    "format_snapshot",
    "node_label",
    "shard_rates",
]


@dataclass(frozen=True)
class GroupRow:
    """One group in the table. ``gid`` 0 is the controller (it serves no shards: ``ops_per_s`` is
    ``None``). ``leader``: the label of the node its leader runs on (``None``: no leader known).
    ``replicas``: ``(up, total)``. ``moving``: shards arriving plus shards leaving. ``note``: what is
    special now (a replacement in progress, a group that has left the configuration), else ``""``."""

    gid: int
    leader: str | None
    term: int
    replicas: tuple[int, int]
    shards: tuple[int, ...] = ()
    ops_per_s: float | None = None
    moving: int = 0
    note: str = ""

    @property
    def name(self) -> str:
        return "controller" if self.gid == 0 else f"group {self.gid}"


@dataclass(frozen=True)
class Snapshot:
    """The whole table at ``elapsed`` seconds into the demo, during ``phase``; ``config``: the latest
    configuration's number (``None`` if the controller did not answer); ``ops_total``: client operations
    completed so far; ``ops_per_s``: over the last interval, all groups."""

    elapsed: float
    phase: str
    config: int | None
    rows: tuple[GroupRow, ...]
    ops_total: int = 0
    ops_per_s: float = 0.0

    @property
    def moving(self) -> int:
        return sum(r.moving for r in self.rows)


def node_label(node: str | None, labels: Mapping[str, str]) -> str:
    """A node's short name: its label when it has one (``n1``, ``head``), else its id's first 8 hex
    digits; ``?`` when unknown."""
    if node is None:
        return "?"
    return labels.get(node, node[:8])


def shard_rates(before: Sequence[int], after: Sequence[int], seconds: float) -> list[float]:
    """Operations per second on each shard between two readings of the per-shard completion counts."""
    if len(before) != len(after):
        raise ValueError(f"the two readings cover different shard counts ({len(before)} and {len(after)})")
    if seconds <= 0:
        return [0.0] * len(after)
    return [max(0, a - b) / seconds for a, b in zip(after, before, strict=True)]


def _row(g: Any, labels: Mapping[str, str], rates: Sequence[float] | None,
         assignment: Sequence[int] | None, in_config: bool) -> GroupRow:
    leader = None
    if g.leader is not None:
        node = g.nodes[g.leader] if g.leader < len(g.nodes) else None
        leader = node_label(node, labels)
    up = sum(role not in ("down", "unreachable") for role in g.roles)
    notes = [f"replacing P{r.old_peer} -> P{r.new_peer} on {node_label(r.new_node, labels)}"
             for r in g.replacements if r.outcome == "in progress"]
    if g.gid == 0:
        return GroupRow(0, leader, g.term, (up, len(g.roles)), note="; ".join(notes))
    if not in_config:
        notes.append("left the configuration")
    ops = None
    if rates is not None and assignment is not None:
        ops = sum(r for s, r in enumerate(rates) if s < len(assignment) and assignment[s] == g.gid)
    return GroupRow(g.gid, leader, g.term, (up, len(g.roles)), tuple(g.owned) + tuple(g.held), ops,
                    len(g.arriving) + len(g.leaving), "; ".join(notes))


def build_snapshot(elapsed: float, phase: str, status: Any, labels: Mapping[str, str],
                   rates: Sequence[float] | None = None, ops_total: int = 0) -> Snapshot:
    """The table from a :class:`~raykv.sharded_status.ServiceStatus` (``status``), the node labels
    (node id -> short name) and the operations per second of each shard (``rates``, indexed by shard:
    :func:`shard_rates`); a group's rate is the sum over the shards the latest configuration gives it."""
    config = status.config
    assignment = tuple(config.shards) if config is not None else None
    members = set(config.groups) if config is not None else set()
    rows = [_row(status.ctrler, labels, None, None, True)]
    rows += [_row(g, labels, rates, assignment, config is None or g.gid in members) for g in status.groups]
    total = sum(rates) if rates is not None else 0.0
    return Snapshot(elapsed, phase, None if config is None else int(config.num), tuple(rows), ops_total,
                    total)


HEAD = ("group", "leader", "term", "up", "shards", "ops/s", "moving")


def shards_text(shards: Sequence[int], width: int = 20) -> str:
    """``0,3,7`` (``-`` for none); ``N shards`` when the list is wider than ``width``."""
    if not shards:
        return "-"
    text = ",".join(map(str, sorted(shards)))
    return text if len(text) <= width else f"{len(shards)} shards"


def cells(row: GroupRow) -> tuple[str, ...]:
    """The row's cells as text, in the order of :data:`HEAD` (the note is not a cell)."""
    ops = "-" if row.ops_per_s is None else f"{row.ops_per_s:.0f}"
    return (row.name, row.leader or "none", str(row.term), f"{row.replicas[0]}/{row.replicas[1]}",
            shards_text(row.shards) if row.gid else "-", ops, str(row.moving) if row.gid else "-")


def title(s: Snapshot) -> str:
    """The line above the table: time, phase, configuration, throughput, moves in flight."""
    cfg = "?" if s.config is None else str(s.config)
    return (f"{s.elapsed:7.2f}s  {s.phase}  |  configuration {cfg}, {s.ops_per_s:.0f} ops/s, "
            f"{s.ops_total:,} operations, {s.moving} shard moves in flight")


def format_snapshot(s: Snapshot) -> list[str]:
    """The table as plain lines: a title line, a header, one line per group (its note after it)."""
    rows = [HEAD] + [cells(r) for r in s.rows]
    widths = [max(len(c[i]) for c in rows) for i in range(len(HEAD))]
    out = [title(s)]
    for i, c in enumerate(rows):
        line = "  " + "  ".join(c[j].ljust(widths[j]) if j in (0, 1, 4) else c[j].rjust(widths[j])
                                for j in range(len(HEAD)))
        note = s.rows[i - 1].note if i else ""
        out.append(f"{line}  {note}".rstrip())
    return out


def format_line(s: Snapshot) -> str:
    """The table in one line, for logs: ``  12.00s  phase | 230 ops/s | g1 n2 t1 4sh 60/s 0mv | ...``."""
    parts = []
    for r in s.rows:
        lead = r.leader or "none"
        if r.gid == 0:
            parts.append(f"ctrl {lead} t{r.term}")
        else:
            ops = 0.0 if r.ops_per_s is None else r.ops_per_s
            parts.append(f"g{r.gid} {lead} t{r.term} {len(r.shards)}sh {ops:.0f}/s {r.moving}mv")
    return f"{s.elapsed:7.2f}s  {s.phase} | {s.ops_per_s:.0f} ops/s | " + " | ".join(parts)
