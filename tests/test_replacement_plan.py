"""The decision logic of replacing lost replicas (actors/replacement_plan.py), without Ray.

Each rule on its own, then whole replacements walked step by step against a small model of the
group (the configuration changes as the core would make them; the directory keeps the replacement in
progress): one dead replica, a leader change in the middle, a replacement that dies, two nodes lost,
no free node; every state on the way keeps the plan's invariants.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

import pytest

from actors.replacement_plan import (
    Abandon,
    Finish,
    GroupView,
    Idle,
    InProgress,
    NeedNodes,
    Promote,
    Remove,
    Spawn,
    Wait,
    Wire,
    choose_node,
    plan,
)


def view(**kw: object) -> GroupView:
    base: dict[str, object] = dict(target=3, voters=frozenset({0, 1, 2}), commit=10,
                                   nodes={0: "a", 1: "b", 2: "c"}, slots={0: 0, 1: 1, 2: 2})
    return GroupView(**(base | kw))  # type: ignore[arg-type]


def test_nothing_dead_is_idle() -> None:
    assert plan(view()) == Idle()


def test_a_dead_voter_needs_the_live_nodes_then_spawns_on_a_free_node() -> None:
    v = view(dead=frozenset({0}))
    assert plan(v) == NeedNodes()
    v = replace(v, live_nodes=("b", "c", "d", "e"), load={"d": 2, "e": 1})
    assert plan(v) == Spawn(old=0, slot=0, node="e")  # not b or c (members), e less loaded than d


def test_no_free_node_waits_and_says_why() -> None:
    got = plan(view(dead=frozenset({0}), live_nodes=("b", "c")))
    assert isinstance(got, Wait) and "no live node is free" in got.reason


def test_a_pending_change_waits() -> None:
    got = plan(view(dead=frozenset({0}), change_pending=True))
    assert isinstance(got, Wait) and "not committed" in got.reason


def test_unknown_members_keep_their_nodes() -> None:
    # P1 did not answer (neither alive nor dead): its node is still taken
    v = view(dead=frozenset({0}), nodes={0: "a", 1: "b", 2: "c"}, live_nodes=("b", "c"))
    assert isinstance(plan(v), Wait)


def test_a_dead_voter_beyond_the_target_is_just_removed() -> None:
    v = view(voters=frozenset({0, 1, 2, 3}), dead=frozenset({2}))
    assert plan(v) == Remove(2, "dead, and the group has its 3 voters without it")


def test_a_dead_learner_without_a_record_is_removed() -> None:
    got = plan(view(learners=frozenset({5}), dead=frozenset({5})))
    assert isinstance(got, Remove) and got.peer == 5


def test_a_dead_peer_without_a_slot_waits() -> None:
    got = plan(view(voters=frozenset({0, 1, 7}), dead=frozenset({7}), live_nodes=("d",)))
    assert isinstance(got, Wait) and "no slot" in got.reason


def test_the_steps_of_a_replacement_in_progress() -> None:
    rec = InProgress(slot=0, old=0, new=3, node="d")
    v = view(dead=frozenset({0}), in_progress=rec)
    assert plan(v) == Wire(3)
    v = replace(v, learners=frozenset({3}), match={3: 4})
    got = plan(v)
    assert isinstance(got, Wait) and "catching up (4 of 10)" in got.reason
    v = replace(v, match={3: 10})
    assert plan(v) == Promote(3)
    v = replace(v, voters=frozenset({0, 1, 2, 3}), learners=frozenset())
    assert plan(v) == Remove(0, "replaced by P3")
    v = replace(v, voters=frozenset({1, 2, 3}))
    assert plan(v) == Finish(0, 3)


def test_a_replacement_that_dies() -> None:
    rec = InProgress(slot=0, old=0, new=3, node="d")
    assert plan(view(dead=frozenset({0, 3}), in_progress=rec)) == Abandon(3)
    got = plan(view(dead=frozenset({0, 3}), learners=frozenset({3}), in_progress=rec))
    assert isinstance(got, Remove) and got.peer == 3


def test_choose_node() -> None:
    assert choose_node(["x", "y"], ["x", None], {}) == "y"
    assert choose_node(["x", "y", "z"], [], {"x": 1, "y": 1, "z": 0}) == "z"
    assert choose_node(["y", "x"], [], {}) == "x"
    assert choose_node(["x"], ["x"], {}) is None


def test_bad_target_is_refused() -> None:
    with pytest.raises(ValueError, match="target size"):
        plan(view(target=0))


# ------------------------------------------------------------------------------------------------
# Whole replacements against a model of the group
# ------------------------------------------------------------------------------------------------


@dataclass
class Model:
    """A group as the core and the directory would keep it; applies the plan's actions."""

    n: int
    nodes_alive: set[str]
    voters: set[int] = field(default_factory=set)
    learners: set[int] = field(default_factory=set)
    where: dict[int, str] = field(default_factory=dict)   # peer -> node
    slot_of: dict[int, int] = field(default_factory=dict)
    dead: set[int] = field(default_factory=set)
    rec: InProgress | None = None
    caught_up: set[int] = field(default_factory=set)
    next_peer: int = 0
    done: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        nodes = sorted(self.nodes_alive)
        for p in range(self.n):
            self.voters.add(p)
            self.where[p], self.slot_of[p] = nodes[p], p
        self.next_peer = self.n

    def kill_node(self, node: str) -> None:
        self.nodes_alive.discard(node)
        self.dead |= {p for p, w in self.where.items() if w == node}

    def view(self) -> GroupView:
        return GroupView(target=self.n, voters=frozenset(self.voters), learners=frozenset(self.learners),
                         commit=10, match={p: 10 if p in self.caught_up else 3 for p in self.learners},
                         dead=frozenset(self.dead), nodes=dict(self.where), slots=dict(self.slot_of),
                         live_nodes=tuple(sorted(self.nodes_alive)), in_progress=self.rec)

    def step(self) -> object:
        action = plan(self.view())
        live_voters = self.voters - self.dead
        assert len(live_voters) >= len(self.voters) // 2 + 1 or isinstance(action, Wait | Idle), \
            "the plan acted without a majority of live voters"  # (a group without one has no leader)
        match action:
            case Spawn(old=old, slot=slot, node=node):
                assert self.rec is None and node in self.nodes_alive
                assert node not in {self.where[p] for p in self.voters | self.learners if p not in self.dead}
                new, self.next_peer = self.next_peer, self.next_peer + 1
                self.where[new], self.slot_of[new] = node, slot
                self.rec = InProgress(slot, old, new, node)
            case Wire(peer=p):
                self.learners.add(p)
            case Promote(peer=p):
                assert p in self.caught_up
                self.learners.discard(p)
                self.voters.add(p)
            case Remove(peer=p):
                assert p in self.dead, "removed a live peer"
                self.voters.discard(p)
                self.learners.discard(p)
            case Finish(old=old, new=new):
                self.done.append((old, new))
                self.rec = None
            case Abandon(peer=p):
                assert self.rec is not None and self.rec.new == p
                self.rec = None
            case Wait() | Idle() | NeedNodes():
                pass
        # the learner catches up one step after it is added
        self.caught_up |= self.learners
        return action

    def run(self, steps: int = 40) -> None:
        for _ in range(steps):
            if isinstance(self.step(), Idle):
                return

    def full_strength(self) -> bool:
        live = self.voters - self.dead
        return (len(live) == self.n and not self.learners and self.rec is None
                and len({self.where[p] for p in live}) == self.n and all(self.where[p] in self.nodes_alive
                                                                          for p in live))


def test_one_lost_node_is_replaced_on_the_free_node() -> None:
    m = Model(3, {"a", "b", "c", "d"})
    m.kill_node("a")
    m.run()
    assert m.full_strength() and m.done == [(0, 3)] and m.where[3] == "d"


def test_two_nodes_lost_one_after_the_other() -> None:
    m = Model(3, {"a", "b", "c", "d", "e"})
    m.kill_node("a")
    m.run()
    m.kill_node("b")
    m.run()
    assert m.full_strength() and m.done == [(0, 3), (1, 4)]
    assert {m.where[p] for p in m.voters} == {"c", "d", "e"}


def test_a_replacement_whose_node_dies_is_replaced_again() -> None:
    m = Model(3, {"a", "b", "c", "d", "e"})
    m.kill_node("a")
    for _ in range(2):  # spawned on d, then wired (a learner)
        m.step()
    assert m.rec is not None and m.rec.node == "d" and 3 in m.learners
    m.kill_node("d")
    m.run()
    assert m.full_strength() and m.done == [(0, 4)] and m.where[4] == "e"


def test_without_a_free_node_the_group_waits_then_recovers_when_one_joins() -> None:
    m = Model(3, {"a", "b", "c"})
    m.kill_node("a")
    m.run(10)
    assert not m.full_strength() and m.rec is None and m.voters == {0, 1, 2}
    m.nodes_alive.add("z")
    m.run()
    assert m.full_strength() and m.where[3] == "z"


def test_a_new_leader_continues_from_the_directory() -> None:
    # the plan keeps no state of its own: stopping after any step and planning again from the same
    # model (a new leader reading the directory) reaches full strength just the same
    rng = random.Random(5)
    for _ in range(50):
        m = Model(5, {f"n{i}" for i in range(8)})
        for node in rng.sample(sorted(m.nodes_alive - {"n7"}), 2):
            m.kill_node(node)
        for _ in range(60):
            if rng.random() < 0.3:
                continue  # a leader change: this round does nothing
            m.step()
        assert m.full_strength(), m
