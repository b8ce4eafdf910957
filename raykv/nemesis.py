"""The nemesis schedule of ``raykv torture``: a pure, seeded, deterministic list of faults and changes.

A *schedule* says what the nemesis does to a sharded service during one campaign, and when: isolate
a replica, crash one and restart it, make the network unreliable, add a group, remove one, move a
shard, lose a node. :func:`generate` makes one from a seed; the same seed, faults and setup always give
the same schedule (it uses only its own ``random.Random(seed)``: no clock, no Ray, no global state).
A schedule is plain data and round-trips through JSON (:meth:`Schedule.to_json` /
:meth:`Schedule.from_json`), which is how a failing campaign is kept and replayed
(``raykv torture --replay schedule.json``). :mod:`raykv.torture` carries a schedule out.

The faults (:data:`FAULTS`; pass a subset to :func:`generate`, the *fault list*):

- ``isolate``: cut replica ``replica`` of group ``gid`` (gid 0 is the controller) off from its Raft
  peers and from every caller, until its ``heal``;
- ``isolate-leader``: the same for whichever replica leads group ``gid`` when the event runs;
- ``crash``: crash a replica (it loses everything but its storage) and restart it from its storage
  at its ``heal``;
- ``unreliable``: the network drops 10 % of requests and replies and delays the rest, until ``heal``;
- ``join``: start group ``gid`` and join it (shards move to it);
- ``leave``: make group ``gid`` leave, wait until its shards have moved away, stop it;
- ``move``: give ``shard`` to group ``gid``;
- ``node-loss``: kill worker node ``node`` for good (its replicas die with it and are not replaced).
  Not in :data:`DEFAULT_FAULTS`: a group survives the loss of a minority of its replicas but nothing
  replaces them yet, so at most ``replicas - majority`` nodes are lost per campaign.

How a schedule is built (Jepsen's nemesis cycle, two streams merged in time order): the *fault
stream* runs one timed fault at a time (``isolate``, ``isolate-leader``, ``crash``, ``unreliable``:
start, hold for 1-4 s, heal, rest 0.5-2 s; ``node-loss`` is instantaneous and permanent); the
*membership stream* makes one ``join``, ``leave`` or ``move`` every 1.5-4 s. Invariants of every
generated schedule (checked by :func:`validate`): every timed fault is healed, at or before
``seconds - QUIET_TAIL_S``; timed faults never overlap; a group that has left is never targeted
again and a gid is never reused; a group is never made to leave while a fault holds one of its
replicas; the number of groups stays within ``[min_groups, max_groups]``; events are sorted by time;
once a node is lost, node losses and replica faults together never take more than
``replicas - majority`` replicas of a group out (a lost node may have held one of every group's, and is
never healed).
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_FAULTS",
    "FAULTS",
    "INSTANT_FAULTS",
    "QUIET_TAIL_S",
    "REPLICA_FAULTS",
    "SCHEDULE_VERSION",
    "TIMED_FAULTS",
    "Event",
    "Schedule",
    "ScheduleError",
    "Setup",
    "generate",
    "parse_faults",
    "validate",
]

SCHEDULE_VERSION = 1
#: faults that start, hold and are healed
TIMED_FAULTS = ("isolate", "isolate-leader", "crash", "unreliable")
#: timed faults that take one replica out (while in force)
REPLICA_FAULTS = ("isolate", "isolate-leader", "crash")
#: changes that happen at one moment
INSTANT_FAULTS = ("join", "leave", "move")
FAULTS = (*TIMED_FAULTS, *INSTANT_FAULTS, "node-loss")
#: everything but node loss (which nothing repairs yet: see the module docstring)
DEFAULT_FAULTS = (*TIMED_FAULTS, *INSTANT_FAULTS)
#: the last seconds of a campaign have no fault in force, so the service can recover before the end
QUIET_TAIL_S = 1.0
#: how long a timed fault holds, and the rest after it (seconds, uniform)
HOLD_S = (1.0, 4.0)
REST_S = (0.5, 2.0)
#: the time between two membership changes
MEMBERSHIP_EVERY_S = (1.5, 4.0)


class ScheduleError(ValueError):
    """A schedule (or a fault list) is malformed; the message says what and where."""


@dataclass(frozen=True)
class Setup:
    """The service and workload a schedule is meant for (stored with it, so a replay rebuilds them).

    ``groups`` shard groups of ``replicas`` replicas at the start (gids 1..groups), ``nshards``
    shards, ``clients`` client threads, ``keys_per_shard`` keys per shard, ``nodes`` worker nodes of
    the cluster the tool starts (0: an existing cluster), ``min_groups`` / ``max_groups`` bounds for
    joins and leaves."""

    groups: int = 2
    replicas: int = 3
    nshards: int = 10
    clients: int = 4
    keys_per_shard: int = 2
    nodes: int = 3
    min_groups: int = 1
    max_groups: int = 4

    def __post_init__(self) -> None:
        for name, lo in (("groups", 1), ("replicas", 1), ("nshards", 1), ("clients", 1),
                         ("keys_per_shard", 1), ("nodes", 0), ("min_groups", 1), ("max_groups", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < lo:
                raise ScheduleError(f"setup: {name} must be an int of at least {lo}, got {value!r}")
        if not self.min_groups <= self.groups <= self.max_groups:
            raise ScheduleError(f"setup: groups ({self.groups}) must be within min_groups "
                                f"({self.min_groups}) and max_groups ({self.max_groups})")

    @property
    def majority(self) -> int:
        return self.replicas // 2 + 1


@dataclass(frozen=True)
class Event:
    """One step of the nemesis at ``at`` seconds after the clients start.

    ``kind`` is a fault name, or ``heal`` (ending the timed fault whose ``id`` is ``of``). Targets:
    ``gid`` (0: the controller), ``replica`` (peer index), ``shard``, ``node`` (worker index); unused
    ones are ``None``. ``id`` numbers events in order of generation."""

    id: int
    at: float
    kind: str
    gid: int | None = None
    replica: int | None = None
    shard: int | None = None
    node: int | None = None
    of: int | None = None

    def describe(self) -> str:
        if self.kind == "move":
            return f"#{self.id} t={self.at:.2f}s move shard {self.shard} to group {self.gid}"
        parts = [self.kind]
        if self.kind == "heal":
            parts.append(f"#{self.of}")
        if self.gid is not None:
            parts.append("controller" if self.gid == 0 else f"group {self.gid}")
        if self.replica is not None:
            parts.append(f"replica {self.replica}")
        if self.shard is not None:
            parts.append(f"shard {self.shard}")
        if self.node is not None:
            parts.append(f"node {self.node}")
        return f"#{self.id} t={self.at:.2f}s " + " ".join(parts)


@dataclass(frozen=True)
class Schedule:
    """A whole campaign: its seed, length, fault list, setup, and the events in time order."""

    seed: int
    seconds: float
    faults: tuple[str, ...]
    setup: Setup
    events: tuple[Event, ...] = field(default_factory=tuple)
    version: int = SCHEDULE_VERSION

    def counts(self) -> dict[str, int]:
        """How many times each fault is injected (heals not counted)."""
        out: dict[str, int] = {}
        for e in self.events:
            if e.kind != "heal":
                out[e.kind] = out.get(e.kind, 0) + 1
        return out

    @property
    def injected(self) -> int:
        return sum(self.counts().values())

    def to_json(self) -> str:
        data = asdict(self)
        data["faults"] = list(self.faults)
        data["events"] = [{k: v for k, v in asdict(e).items() if v is not None} for e in self.events]
        return json.dumps(data, indent=1)

    @classmethod
    def from_json(cls, text: str, source: str = "<schedule>") -> Schedule:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ScheduleError(f"{source}: not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ScheduleError(f"{source}: expected a JSON object, got {type(data).__name__}")
        if data.get("version") != SCHEDULE_VERSION:
            raise ScheduleError(f"{source}: schedule version {data.get('version')!r}; this raykv reads "
                                f"version {SCHEDULE_VERSION}")
        try:
            setup = Setup(**data["setup"])
            events = tuple(Event(**e) for e in data["events"])
            sched = cls(int(data["seed"]), float(data["seconds"]), parse_faults(data["faults"]), setup,
                        events)
        except ScheduleError as exc:
            raise ScheduleError(f"{source}: {exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise ScheduleError(f"{source}: missing, unexpected or malformed field ({exc}); write "
                                "schedules with raykv torture, which keeps one for every failed "
                                "campaign") from None
        validate(sched)
        return sched

    @classmethod
    def load(cls, path: str | Path) -> Schedule:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ScheduleError(f"cannot read schedule {str(path)!r}: {exc.strerror or exc}") from None
        return cls.from_json(text, str(path))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")


def parse_faults(faults: Any) -> tuple[str, ...]:
    """A fault list from names (a list, or a comma-separated string); ``default`` stands for
    :data:`DEFAULT_FAULTS`, ``all`` for :data:`FAULTS`. Order and duplicates do not matter."""
    if isinstance(faults, str):
        faults = [f.strip() for f in faults.split(",") if f.strip()]
    if not isinstance(faults, list | tuple) or not all(isinstance(f, str) for f in faults):
        raise ScheduleError(f"faults must be a list of names, got {faults!r:.80}")
    chosen: set[str] = set()
    for f in faults:
        if f == "default":
            chosen.update(DEFAULT_FAULTS)
        elif f == "all":
            chosen.update(FAULTS)
        elif f in FAULTS:
            chosen.add(f)
        else:
            raise ScheduleError(f"unknown fault {f!r}; known: {', '.join(FAULTS)} (or 'default', 'all')")
    if not chosen:
        raise ScheduleError("the fault list is empty; name at least one fault (or 'default')")
    return tuple(f for f in FAULTS if f in chosen)


def _uniform(rng: random.Random, bounds: tuple[float, float]) -> float:
    return round(rng.uniform(*bounds), 2)


def generate(seed: int, seconds: float, faults: Any = DEFAULT_FAULTS, setup: Setup | None = None) -> Schedule:
    """The schedule of one campaign of ``seconds`` seconds (see the module docstring)."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ScheduleError(f"seed must be an int, got {seed!r}")
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not 2 <= seconds <= 86_400:
        raise ScheduleError(f"seconds must be a number between 2 and 86400, got {seconds!r}")
    fault_list = parse_faults(faults)
    setup = setup or Setup()
    rng = random.Random(seed)
    end = float(seconds) - QUIET_TAIL_S
    timed = [f for f in fault_list if f in TIMED_FAULTS or f == "node-loss"]
    members = [f for f in fault_list if f in INSTANT_FAULTS]
    live = list(range(1, setup.groups + 1))
    next_gid = setup.groups + 1
    nodes_left = list(range(setup.nodes))
    losses_allowed = setup.replicas - setup.majority
    events: list[Event] = []
    held: dict[int, float] = {}  # gid -> time its current timed fault is healed

    def add(at: float, kind: str, **targets: Any) -> Event:
        ev = Event(len(events), round(at, 2), kind, **targets)
        events.append(ev)
        return ev

    t_fault = _uniform(rng, REST_S) if timed else end
    t_member = _uniform(rng, MEMBERSHIP_EVERY_S) if members else end
    while min(t_fault, t_member) < end:
        if t_fault <= t_member:
            t = t_fault
            # a replica fault counts against the same tolerance as a lost node: once the node losses
            # have used it up, one more replica out would leave a group without a majority
            kinds = [k for k in timed
                     if (k != "node-loss" or (losses_allowed > 0 and nodes_left))
                     and (k not in REPLICA_FAULTS or losses_allowed > 0 or len(nodes_left) == setup.nodes)]
            kind = rng.choice(kinds) if kinds else None
            hold = _uniform(rng, HOLD_S)
            if kind == "node-loss":
                node = rng.choice(nodes_left)
                nodes_left.remove(node)
                losses_allowed -= 1
                add(t, kind, node=node)
                t_fault = t + _uniform(rng, REST_S)
            elif kind is not None and t + hold <= end:
                gid = rng.choice([0, *live])
                if kind == "unreliable":
                    start = add(t, kind)
                elif kind == "isolate-leader":
                    start = add(t, kind, gid=gid)
                else:
                    start = add(t, kind, gid=gid, replica=rng.randrange(setup.replicas))
                add(t + hold, "heal", of=start.id)
                if start.gid:
                    held[start.gid] = t + hold
                t_fault = t + hold + _uniform(rng, REST_S)
            else:
                t_fault = end
        else:
            t = t_member
            options = []
            if "join" in members and len(live) < setup.max_groups:
                options.append("join")
            leavable = [g for g in live if held.get(g, -1.0) < t]
            if "leave" in members and len(live) > setup.min_groups and leavable:
                options.append("leave")
            if "move" in members:
                options.append("move")
            if options:
                kind = rng.choice(options)
                if kind == "join":
                    add(t, kind, gid=next_gid)
                    live.append(next_gid)
                    next_gid += 1
                elif kind == "leave":
                    gid = rng.choice(leavable)
                    add(t, kind, gid=gid)
                    live.remove(gid)
                else:
                    add(t, kind, shard=rng.randrange(setup.nshards), gid=rng.choice(live))
            t_member = t + _uniform(rng, MEMBERSHIP_EVERY_S)
    events.sort(key=lambda e: (e.at, e.id))
    renumber = {e.id: n for n, e in enumerate(events)}  # ids in time order; heals follow
    events = [replace(e, id=renumber[e.id], of=None if e.of is None else renumber[e.of]) for e in events]
    sched = Schedule(seed, float(seconds), fault_list, setup, tuple(events))
    validate(sched)
    return sched


def validate(sched: Schedule) -> None:
    """Raise :class:`ScheduleError` unless ``sched`` keeps the invariants in the module docstring."""
    setup = sched.setup
    live = set(range(1, setup.groups + 1))
    ever = set(live)
    open_faults: dict[int, Event] = {}
    lost = 0
    last = 0.0
    for e in sched.events:
        where = f"event {e.describe()}"
        if e.kind != "heal" and e.kind not in sched.faults:
            raise ScheduleError(f"{where}: {e.kind!r} is not in the schedule's fault list {sched.faults}")
        if e.at < last:
            raise ScheduleError(f"{where}: events must be in time order")
        last = e.at
        if e.gid is not None and e.gid != 0 and e.kind != "join" and e.gid not in live:
            raise ScheduleError(f"{where}: group {e.gid} is not in the service then")
        if e.replica is not None and not 0 <= e.replica < setup.replicas:
            raise ScheduleError(f"{where}: replica index out of range (replicas: {setup.replicas})")
        if e.shard is not None and not 0 <= e.shard < setup.nshards:
            raise ScheduleError(f"{where}: shard out of range (nshards: {setup.nshards})")
        if e.kind in TIMED_FAULTS:
            if e.kind in REPLICA_FAULTS and lost and lost >= setup.replicas - setup.majority:
                raise ScheduleError(f"{where}: takes a replica out after {lost} node(s) were lost, more "
                                    f"than a group of {setup.replicas} survives")
            if open_faults:
                raise ScheduleError(f"{where}: starts while #{next(iter(open_faults))} is still in force")
            open_faults[e.id] = e
        elif e.kind == "heal":
            if e.of not in open_faults:
                raise ScheduleError(f"{where}: heals #{e.of}, which is not in force")
            del open_faults[e.of]
            if e.at > sched.seconds - QUIET_TAIL_S + 1e-9:
                raise ScheduleError(f"{where}: healed after the quiet tail begins")
        elif e.kind == "join":
            if e.gid is None or e.gid in ever:
                raise ScheduleError(f"{where}: a join needs a gid never used before")
            live.add(e.gid)
            ever.add(e.gid)
        elif e.kind == "leave":
            if any(f.gid == e.gid for f in open_faults.values()):
                raise ScheduleError(f"{where}: the group leaves while a fault holds one of its replicas")
            live.discard(e.gid)  # type: ignore[arg-type]
        elif e.kind == "node-loss":
            lost += 1
            if e.node is None or not 0 <= e.node < setup.nodes:
                raise ScheduleError(f"{where}: node index out of range (nodes: {setup.nodes})")
            if lost > setup.replicas - setup.majority:
                raise ScheduleError(f"{where}: more nodes lost than a group of {setup.replicas} survives")
        if not setup.min_groups <= len(live) <= setup.max_groups:
            raise ScheduleError(f"{where}: {len(live)} groups, outside [{setup.min_groups}, "
                                f"{setup.max_groups}]")
    if open_faults:
        raise ScheduleError(f"fault #{next(iter(open_faults))} is never healed")
