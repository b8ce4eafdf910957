"""What :meth:`raykv.sharded.ShardedKV.status` reports: per group, who leads, in which term, which
shards it serves and which are moving, and where its replicas run; printed by ``raykv status``.

Everything here is plain data (picklable, comparable); :func:`group_status` is the one function that
asks the replicas (with a deadline: a replica that does not answer in time is reported as
``"unreachable"``, never waited for).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayError

from actors.metrics import aggregate
from shardctrler.config import Config

UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class ReplicaReplacement:
    """One replacement of a lost replica (see actors/replacer.py): slot ``slot``'s peer ``old_peer``
    (on ``old_node``, found dead at ``detected``) by the new peer ``new_peer`` on ``new_node``,
    spawned at ``started`` and a voter in its place (the dead one removed) at ``finished``; times are
    wall-clock seconds (``time.time()``). ``outcome``: ``"in progress"``, ``"done"``, or
    ``"abandoned"`` (the new replica died before it joined; another follows)."""

    slot: int
    old_peer: int
    new_peer: int
    old_node: str | None
    new_node: str
    detected: float
    started: float
    finished: float | None = None
    outcome: str = "in progress"

    def describe(self) -> str:
        when = time.strftime("%H:%M:%S", time.gmtime(self.finished or self.started))
        text = (f"slot {self.slot}: P{self.old_peer} (node {_node(self.old_node)}) -> P{self.new_peer} "
                f"(node {_node(self.new_node)}) {self.outcome}")
        if self.finished is not None:
            return f"{text} at {when} UTC, {self.finished - self.detected:.1f} s after it was found dead"
        return f"{text} since {when} UTC"


def _node(node: str | None) -> str:
    return "?" if node is None else node[:8]


@dataclass(frozen=True)
class GroupStatus:
    """One group, as its replicas answered.

    ``gid`` (0 for the controller), ``name``, ``roles`` (per replica: ``leader``, ``follower``,
    ``candidate``, ``down``, or ``unreachable``), ``leader`` (peer id, ``None`` if none is known),
    ``term`` (the highest term seen), ``config`` (the configuration the group is in, per its leader or
    else its most advanced replica; -1 if unknown; the controller: its latest configuration),
    ``owned`` (shards it serves), ``arriving`` (owned, data still being pulled), ``leaving`` (no
    longer owned, kept until the new owner has pulled them), ``held`` (kept because no group owns
    them), ``settled`` (nothing moving, no deletion unconfirmed), ``nodes`` (where each replica runs,
    by slot: where it ran when the group started, or where its replacement was started),
    ``voters`` and ``learners`` (the Raft configuration, per the leader; empty if none answered),
    ``peers`` (the peer id in each slot), ``replacements`` (the replacements of lost replicas, oldest
    first, the one in progress last: :class:`ReplicaReplacement`), ``replacing`` (what the leader's
    replacement task did last, or why it waits), ``addresses`` (stream transport: the ``(host, port)``
    each slot's replica listens on, ``None`` where it did not answer; empty on other transports),
    ``metrics`` (the group's figures from its replicas' metrics, :func:`actors.metrics.aggregate`:
    operations applied, commit latency at the leader, elections, leader changes, shard moves in and
    out, snapshots; empty when none answered).
    """

    gid: int
    name: str
    roles: tuple[str, ...]
    leader: int | None
    term: int
    config: int
    owned: tuple[int, ...] = ()
    arriving: tuple[int, ...] = ()
    leaving: tuple[int, ...] = ()
    held: tuple[int, ...] = ()
    settled: bool = True
    nodes: tuple[str | None, ...] = ()
    voters: tuple[int, ...] = ()
    learners: tuple[int, ...] = ()
    peers: tuple[int, ...] = ()
    replacements: tuple[ReplicaReplacement, ...] = ()
    replacing: str | None = None
    addresses: tuple[tuple[str, int] | None, ...] = ()
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def up(self) -> int:
        """Replicas whose Raft runs."""
        return sum(r not in ("down", UNREACHABLE) for r in self.roles)

    @property
    def replicas(self) -> int:
        return len(self.roles)

    @property
    def full_strength(self) -> bool:
        """Every slot's peer is a voter whose Raft runs, no one else votes or learns, and the
        replicas run on distinct nodes."""
        return (len(self.voters) == len(self.roles) == self.up and set(self.voters) == set(self.peers)
                and not self.learners and None not in self.nodes and len(set(self.nodes)) == len(self.nodes))


@dataclass(frozen=True)
class ServiceStatus:
    """The whole service: its description (``transport``: ``"stream"``, ``"direct"`` or
    ``"network"``), the latest configuration (``None`` if the controller did not answer in time), the
    controller group and every shard group."""

    name: str
    namespace: str
    nshards: int
    mapping: str
    detached: bool
    config: Config | None
    ctrler: GroupStatus
    groups: tuple[GroupStatus, ...]
    transport: str = "direct"

    @property
    def settled(self) -> bool:
        """Every group of the latest configuration is in it, and no group has a shard moving."""
        if self.config is None:
            return False
        for g in self.groups:
            if not g.settled or g.arriving or g.leaving:
                return False
            if g.gid in self.config.groups and g.config != self.config.num:
                return False
            if g.gid not in self.config.groups and (g.owned or g.held):
                return False
        return True

    def group(self, gid: int) -> GroupStatus | None:
        return next((g for g in self.groups if g.gid == gid), None)

    def format(self) -> str:
        """A table for people (``raykv status``)."""
        cfg = "unknown (the controller did not answer)" if self.config is None else str(self.config.num)
        lines = [
            f"service {self.name!r} (namespace {self.namespace!r}{', detached' if self.detached else ''}): "
            f"{self.nshards} shards, mapping {self.mapping!r}, transport {self.transport!r}, "
            f"configuration {cfg}"
            f"{'' if self.settled else ', shards moving'}",
            f"controller: {_leader(self.ctrler)}, term {self.ctrler.term}, "
            f"{self.ctrler.up}/{self.ctrler.replicas} replicas up, voters {_members(self.ctrler) or '?'}",
            "",
            f"{'gid':>4}  {'leader':<9} {'term':>5}  {'up':<5} {'config':>6}  {'serving':<22} "
            f"{'arriving':<14} {'leaving':<14} {'voters':<12} nodes",
        ]
        for g in self.groups:
            nodes = len({n for n in g.nodes if n is not None})
            voters = _members(g)
            lines.append(
                f"{g.gid:>4}  {_leader(g):<9} {g.term:>5}  {f'{g.up}/{g.replicas}':<5} {g.config:>6}  "
                f"{_shards(g.owned + g.held):<22} {_shards(g.arriving):<14} {_shards(g.leaving):<14} "
                f"{voters or '?':<12} {nodes} distinct")
        if self.transport == "stream":
            lines += ["", "stream addresses (by slot):"]
            lines += [f"  {'controller' if g.gid == 0 else f'group {g.gid}'}: {_addresses(g)}"
                      for g in (self.ctrler, *self.groups)]
        measured = [g for g in (self.ctrler, *self.groups) if g.metrics]
        if measured:
            lines += ["", "metrics (ops: operations applied; commit: at the leader, p50 / p99; "
                      "moves: shards in / out; last: the latest snapshot's size):",
                      f"{'gid':>4}  {'ops':>9} {'commit p50':>10} {'p99':>9}  {'elections':>9} "
                      f"{'leaders':>7}  {'moves':>9}  {'snapshots':>9} {'last':>9}"]
            lines += [_metrics_row(g) for g in measured]
        replaced = [(g, r) for g in (self.ctrler, *self.groups) for r in g.replacements]
        if replaced:
            lines += ["", "replaced replicas:"]
            lines += [f"  {'controller' if g.gid == 0 else f'group {g.gid}'}: {r.describe()}"
                      for g, r in replaced]
        return "\n".join(lines)


def _metrics_row(g: GroupStatus) -> str:
    m = g.metrics
    lat = m.get("commit_latency") or {}
    moves = f"{m.get('shards_in', 0)} / {m.get('shards_out', 0)}"
    return (f"{g.gid:>4}  {m.get('ops_applied', 0):>9} {_ms(lat.get('p50')):>10} {_ms(lat.get('p99')):>9}  "
            f"{m.get('elections_started', 0):>9} {m.get('leader_changes', 0):>7}  {moves:>9}  "
            f"{m.get('snapshots_taken', 0) + m.get('snapshots_installed', 0):>9} "
            f"{_bytes(m.get('last_snapshot_bytes', 0)):>9}")


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def _bytes(n: int) -> str:
    if not n:
        return "-"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _members(g: GroupStatus) -> str:
    """``0,1,2`` (voters), ``1,2,3+4`` (a learner after the +); ``""`` when unknown."""
    voters = ",".join(map(str, g.voters))
    return voters + (f"+{','.join(map(str, g.learners))}" if g.learners else "")


def _addresses(g: GroupStatus) -> str:
    """``10.0.0.5:40123, ?, ...`` (``?``: that replica did not say)."""
    return ", ".join("?" if a is None else f"{a[0]}:{a[1]}" for a in g.addresses) or "?"


def _leader(g: GroupStatus) -> str:
    return "none" if g.leader is None else f"replica {g.leader}"


def _shards(shards: tuple[int, ...]) -> str:
    if not shards:
        return "-"
    text = ",".join(map(str, shards))
    return text if len(text) <= 22 else f"{len(shards)} shards"


def _address(answer: dict[str, Any] | None) -> tuple[str, int] | None:
    """The stream listener's ``(host, port)`` in a replica's ``status()`` answer, if it has one."""
    listener = (answer or {}).get("stream") or {}
    address = listener.get("address")
    return None if not address else (str(address[0]), int(address[1]))


def _group_metrics(answers: list[dict[str, Any] | None], leader: int | None) -> dict[str, Any]:
    """The group's figures from its replicas' ``status()`` answers (empty when none has metrics)."""
    figures = [(a or {}).get("metrics") for a in answers]
    return aggregate(figures, leader) if any(figures) else {}


def _answers(refs: list[Any], timeout: float) -> list[Any]:
    deadline = time.monotonic() + timeout
    out: list[dict[str, Any] | None] = []
    for ref in refs:
        try:
            out.append(ray.get(ref, timeout=max(0.05, deadline - time.monotonic())))
        except (GetTimeoutError, RayError):
            out.append(None)
    return out


def group_status(g: Any, timeout: float = 10.0, *, ctrler: bool = False, stream: bool = False) -> GroupStatus:
    """Ask every replica of ``g`` (a :class:`raykv.sharded.GroupInfo`) for its state (with ``stream``,
    its stream address too, from the same answer), with one deadline of ``timeout`` seconds for all of
    them."""
    t0 = time.monotonic()
    raft = _answers([r.status.remote() for r in g.replicas], timeout)
    addresses = tuple(_address(a) for a in raft) if stream else ()
    roles = tuple(UNREACHABLE if a is None else str(a.get("role", "down")) for a in raft)
    terms = [int(a.get("term", 0)) for a in raft if a is not None]
    leaders = [i for i, a in enumerate(raft) if a is not None and a.get("role") == "leader"]
    leader = max(leaders, key=lambda i: raft[i]["term"]) if leaders else None  # type: ignore[index]
    lead = raft[leader] if leader is not None else None
    base: dict[str, Any] = dict(
        gid=g.gid, name=g.name, roles=roles, leader=leader, term=max(terms, default=0), nodes=tuple(g.nodes),
        voters=tuple(lead["voters"]) if lead else (), learners=tuple(lead["learners"]) if lead else (),
        peers=tuple(g.peers) if g.peers else tuple(range(len(g.replicas))),
        replacements=tuple(g.replacements), replacing=lead.get("replacing") if lead else None,
        addresses=addresses, metrics=_group_metrics(raft, leader))
    if ctrler:
        return GroupStatus(config=-1, **base)
    left = max(0.05, timeout - (time.monotonic() - t0))
    answers = _answers([r.shard_stats.remote() for r in g.replicas], left)
    live = [a for a in answers if a is not None and "config" in a]
    if not live:
        return GroupStatus(config=-1, settled=False, **base)
    best = answers[leader] if leader is not None and answers[leader] is not None else \
        max(live, key=lambda a: a["config"])
    assert best is not None
    shards: dict[str, list[int]] = best.get("shards", {})

    def of(*statuses: str) -> tuple[int, ...]:
        return tuple(sorted(s for st in statuses for s in shards.get(st, ())))

    return GroupStatus(config=int(best["config"]), owned=of("serving", "gc_pending"),
                       arriving=of("arriving"), leaving=of("leaving"), held=of("held"),
                       settled=bool(best.get("settled", True)), **base)
