"""What :meth:`raykv.sharded.ShardedKV.status` reports: per group, who leads, in which term, which
shards it serves and which are moving, and where its replicas run; printed by ``raykv status``.

Everything here is plain data (picklable, comparable); :func:`group_status` is the one function that
asks the replicas (with a deadline: a replica that does not answer in time is reported as
``"unreachable"``, never waited for).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayError

from shardctrler.config import Config

UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class GroupStatus:
    """One group, as its replicas answered.

    ``gid`` (0 for the controller), ``name``, ``roles`` (per replica: ``leader``, ``follower``,
    ``candidate``, ``down``, or ``unreachable``), ``leader`` (peer id, ``None`` if none is known),
    ``term`` (the highest term seen), ``config`` (the configuration the group is in, per its leader or
    else its most advanced replica; -1 if unknown; the controller: its latest configuration),
    ``owned`` (shards it serves), ``arriving`` (owned, data still being pulled), ``leaving`` (no
    longer owned, kept until the new owner has pulled them), ``held`` (kept because no group owns
    them), ``settled`` (nothing moving, no deletion unconfirmed), ``nodes`` (where each replica ran
    when the group started).
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

    @property
    def up(self) -> int:
        """Replicas whose Raft runs."""
        return sum(r not in ("down", UNREACHABLE) for r in self.roles)

    @property
    def replicas(self) -> int:
        return len(self.roles)


@dataclass(frozen=True)
class ServiceStatus:
    """The whole service: its description, the latest configuration (``None`` if the controller did
    not answer in time), the controller group and every shard group."""

    name: str
    namespace: str
    nshards: int
    mapping: str
    detached: bool
    config: Config | None
    ctrler: GroupStatus
    groups: tuple[GroupStatus, ...]

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
            f"{self.nshards} shards, mapping {self.mapping!r}, configuration {cfg}"
            f"{'' if self.settled else ', shards moving'}",
            f"controller: {_leader(self.ctrler)}, term {self.ctrler.term}, "
            f"{self.ctrler.up}/{self.ctrler.replicas} replicas up",
            "",
            f"{'gid':>4}  {'leader':<9} {'term':>5}  {'up':<5} {'config':>6}  {'serving':<22} "
            f"{'arriving':<14} {'leaving':<14} nodes",
        ]
        for g in self.groups:
            nodes = len({n for n in g.nodes if n is not None})
            lines.append(
                f"{g.gid:>4}  {_leader(g):<9} {g.term:>5}  {f'{g.up}/{g.replicas}':<5} {g.config:>6}  "
                f"{_shards(g.owned + g.held):<22} {_shards(g.arriving):<14} {_shards(g.leaving):<14} "
                f"{nodes} distinct")
        return "\n".join(lines)


def _leader(g: GroupStatus) -> str:
    return "none" if g.leader is None else f"replica {g.leader}"


def _shards(shards: tuple[int, ...]) -> str:
    if not shards:
        return "-"
    text = ",".join(map(str, shards))
    return text if len(text) <= 22 else f"{len(shards)} shards"


def _answers(refs: list[Any], timeout: float) -> list[dict[str, Any] | None]:
    deadline = time.monotonic() + timeout
    out: list[dict[str, Any] | None] = []
    for ref in refs:
        try:
            out.append(ray.get(ref, timeout=max(0.05, deadline - time.monotonic())))
        except (GetTimeoutError, RayError):
            out.append(None)
    return out


def group_status(g: Any, timeout: float = 10.0, *, ctrler: bool = False) -> GroupStatus:
    """Ask every replica of ``g`` (a :class:`raykv.sharded.GroupInfo`) for its state, with one deadline
    of ``timeout`` seconds for all of them."""
    method = "status" if ctrler else "shard_stats"
    answers = _answers([getattr(r, method).remote() for r in g.replicas], timeout)
    roles = tuple(UNREACHABLE if a is None else str(a.get("role", "down")) for a in answers)
    terms = [int(a.get("term", 0)) for a in answers if a is not None]
    leaders = [i for i, a in enumerate(answers) if a is not None and a.get("role") == "leader"]
    leader = max(leaders, key=lambda i: answers[i]["term"]) if leaders else None  # type: ignore[index]
    base = dict(gid=g.gid, name=g.name, roles=roles, leader=leader, term=max(terms, default=0),
                nodes=tuple(g.nodes))
    if ctrler:
        return GroupStatus(config=-1, **base)
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
