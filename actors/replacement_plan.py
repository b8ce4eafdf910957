"""Replacing lost replicas: what a group's leader does next. Pure: no Ray, no asyncio, no clock.

When a Ray node dies, every replica on it dies with its disk. The group's leader notices (Ray reports
the actor dead), and replaces each lost replica through the membership machinery of the core
(:mod:`raft.membership`), one step at a time:

1. **spawn** a new replica, with a fresh peer id, on a live node that holds no replica of the group,
   under the name of the dead one's *slot* (the group's ``n`` replicas are slots ``0 .. n-1``; slot
   ``s`` is always the replica actor named ``{group}-{s}``, so configurations, clerks and other groups,
   which address servers by name, find the new replica without being told);
2. **wire** it: start it knowing every member, tell every member how to reach it, add it as a
   *learner* (it receives the log, by snapshot where needed, but does not vote);
3. **promote** it once it is caught up (it holds everything committed);
4. **remove** the dead replica;
5. **finish**: record the replacement as done.

:func:`plan` looks at one :class:`GroupView` (what the leader knows now) and returns the one
:class:`Action` to take; the actor shell (:mod:`actors.replacer`) gathers the view, carries the action
out and asks again. Every step is idempotent or refused by the core when it no longer applies, so a
leader that dies in the middle leaves a state the next leader's :func:`plan` continues from (the
replacement in progress is kept by the service's directory, not by the leader).

Invariants :func:`plan` keeps:

- *only the dead are replaced*: a peer is replaced or removed only when Ray has reported its actor
  dead (a definite fact: replicas are never restarted by Ray), never because it is slow or unreachable;
- *one step at a time*: nothing is proposed while a configuration change is uncommitted, and at most
  one replacement is in progress per group;
- *distinct nodes*: a replacement goes to a live node that runs no live (or unknown) member of the
  group; when there is none, the group waits (it still has its majority) rather than doubling up;
- *never below the target by our hand*: a dead voter is removed only once its replacement votes, or
  when the live voters already number the group's target.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class InProgress:
    """The replacement under way: slot ``slot``'s dead peer ``old`` by the new peer ``new`` on ``node``."""

    slot: int
    old: int
    new: int
    node: str


@dataclass(frozen=True)
class GroupView:
    """What the leader knows when it plans.

    ``target``: voters the group should have (its replica count). ``voters`` / ``learners``: the
    leader's current configuration; ``change_pending``: it holds an uncommitted configuration entry.
    ``commit``: the leader's commit index; ``match``: its match index per peer. ``dead``: peers whose
    actors Ray reports dead. ``nodes``: where each known replica runs (``None``: unknown).
    ``slots``: the slot of each of the group's replicas (peer -> slot). ``live_nodes``: alive nodes
    that can host a replica (``None`` when not looked up: only needed to spawn). ``load``: replicas of
    the whole service per node (a replacement goes to the least loaded candidate). ``in_progress``: the
    replacement under way, if any.
    """

    target: int
    voters: frozenset[int]
    learners: frozenset[int] = frozenset()
    change_pending: bool = False
    commit: int = 0
    match: Mapping[int, int] = field(default_factory=dict)
    dead: frozenset[int] = frozenset()
    nodes: Mapping[int, str | None] = field(default_factory=dict)
    slots: Mapping[int, int] = field(default_factory=dict)
    live_nodes: tuple[str, ...] | None = None
    load: Mapping[str, int] = field(default_factory=dict)
    in_progress: InProgress | None = None

    @property
    def members(self) -> frozenset[int]:
        return self.voters | self.learners


# -- actions ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Idle:
    """Nothing to do: every member is alive (as far as Ray says)."""


@dataclass(frozen=True)
class Wait:
    """Something is to be done but cannot be yet; ``reason`` says why (logged when it changes)."""

    reason: str


@dataclass(frozen=True)
class NeedNodes:
    """A dead voter must be replaced: look up the live nodes (``GroupView.live_nodes``) and plan again."""


@dataclass(frozen=True)
class Spawn:
    """Start a new replica in slot ``slot`` (whose peer ``old`` is dead) on ``node``."""

    old: int
    slot: int
    node: str


@dataclass(frozen=True)
class Wire:
    """Start the spawned replica ``peer`` (if not yet), tell every member how to reach it, and add it
    as a learner."""

    peer: int


@dataclass(frozen=True)
class Promote:
    """The learner ``peer`` is caught up: make it a voter."""

    peer: int


@dataclass(frozen=True)
class Remove:
    """Take ``peer`` out of the configuration; ``reason`` says why."""

    peer: int
    reason: str


@dataclass(frozen=True)
class Finish:
    """The replacement of ``old`` by ``new`` is complete: record it."""

    old: int
    new: int


@dataclass(frozen=True)
class Abandon:
    """The spawned replica ``peer`` died before it became a member: forget it (and spawn again)."""

    peer: int


Action = Idle | Wait | NeedNodes | Spawn | Wire | Promote | Remove | Finish | Abandon


def choose_node(live_nodes: Iterable[str], taken: Iterable[str | None],
                load: Mapping[str, int]) -> str | None:
    """The live node for a new replica: not in ``taken`` (nodes of the group's other replicas), the
    least loaded (``load``: replicas per node), ties broken by node id; ``None`` if no node is free."""
    busy = {n for n in taken if n is not None}
    free = sorted({n for n in live_nodes if n not in busy}, key=lambda n: (load.get(n, 0), n))
    return free[0] if free else None


def plan(view: GroupView) -> Action:
    """The next step of replacing the group's dead replicas (see the module docstring)."""
    if view.target < 1:
        raise ValueError(f"a group's target size is at least 1, got {view.target}")
    if view.change_pending:
        return Wait("a configuration change is not committed yet")
    members = view.members
    rec = view.in_progress
    if rec is not None:
        new = rec.new
        if new in view.dead:
            if new in members:
                return Remove(new, f"P{new}, the replacement of P{rec.old}, died")
            return Abandon(new)
        if new not in members:
            return Wire(new)
        if new in view.learners:
            have = view.match.get(new, 0)
            if have >= view.commit:
                return Promote(new)
            return Wait(f"learner P{new} is catching up ({have} of {view.commit})")
        if rec.old in members:
            return Remove(rec.old, f"replaced by P{new}")
        return Finish(rec.old, new)
    dead_learners = sorted(view.learners & view.dead)
    if dead_learners:
        return Remove(dead_learners[0], "a learner whose actor died")
    dead_voters = sorted(view.voters & view.dead)
    if not dead_voters:
        return Idle()
    old = dead_voters[0]
    if len(view.voters - view.dead) >= view.target:
        return Remove(old, f"dead, and the group has its {view.target} voters without it")
    slot = view.slots.get(old)
    if slot is None:
        return Wait(f"P{old} is dead but is in no slot of the group; nothing names its replacement")
    if view.live_nodes is None:
        return NeedNodes()
    taken = [view.nodes.get(p) for p in members if p not in view.dead]
    node = choose_node(view.live_nodes, taken, view.load)
    if node is None:
        return Wait(f"P{old} is dead and no live node is free of this group's replicas "
                    f"({len(view.live_nodes)} live); the group waits for a node to join")
    return Spawn(old, slot, node)
