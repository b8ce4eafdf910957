"""Unit tests of membership change in the pure Raft core (raft/membership.py), one or more per rule.

In-process, no Ray: :class:`Members` is the instant-delivery :class:`CoreCluster` with extra peers that
join the group (``RaftConfig.join``: they start with an empty log and the group's bootstrap
configuration, and take part once a leader adds them).
"""

from __future__ import annotations

import random

import pytest
from core_cluster import CoreCluster

from raft import (
    CANDIDATE,
    FOLLOWER,
    LEADER,
    AppendEntries,
    PersistentState,
    RaftConfig,
    RaftNode,
    RequestVote,
    RequestVoteReply,
    Snapshot,
)
from raft.membership import (
    ADD_LEARNER,
    PROMOTE,
    REMOVE,
    ConfChange,
    ConfChangeRefused,
    Membership,
    scan,
)


class Members(CoreCluster):
    """``voters`` bootstrap voters (ids 0..voters-1) and ``joiners`` peers that join later."""

    def __init__(self, voters: int = 3, joiners: int = 1, seed: int = 0, **config: object) -> None:
        self.voters = voters
        super().__init__(voters + joiners, seed, **config)

    def _make(self, i: int) -> RaftNode:
        cfg = RaftConfig(peer_id=i, peers=tuple(range(self.voters)), join=i >= self.voters,
                         **self.config)  # type: ignore[arg-type]
        return RaftNode(cfg, random.Random(self.rng.random()), self.saved[i])

    def commit_own_term(self, leader: int) -> int:
        """Propose a command and let it commit (a new leader must, before changing membership)."""
        idx, _, ok = self.nodes[leader].propose(f"noop@{self.nodes[leader].term}")
        assert ok
        self.deliver_all()
        return idx

    def change(self, leader: int, op: str, peer: int, commit: bool = True) -> int:
        idx, _, ok = self.nodes[leader].propose_conf_change(op, peer)
        assert ok
        if commit:
            self.deliver_all()
            self.tick(2)
            assert self.nodes[leader].commit_index >= idx or not self.nodes[leader].is_leader
        return idx

    def add_voter(self, leader: int, peer: int) -> None:
        self.change(leader, ADD_LEARNER, peer)
        self.tick(3)
        self.change(leader, PROMOTE, peer)


def started(voters: int = 3, joiners: int = 1, **kw: object) -> Members:
    c = Members(voters, joiners, **kw)
    c.elect(0)
    c.commit_own_term(0)
    return c


# -- configurations ---------------------------------------------------------------------------------


def test_membership_apply_rules() -> None:
    m = Membership(frozenset({0, 1, 2}))
    assert m.quorum == 2 and m.members == {0, 1, 2}
    m2 = m.apply(ADD_LEARNER, 3)
    assert m2.voters == {0, 1, 2} and m2.learners == {3} and m2.quorum == 2
    m3 = m2.apply(PROMOTE, 3)
    assert m3.voters == {0, 1, 2, 3} and not m3.learners and m3.quorum == 3
    assert m3.apply(REMOVE, 0).voters == {1, 2, 3}
    assert m2.apply(REMOVE, 3) == m
    with pytest.raises(ConfChangeRefused, match="already a voter"):
        m.apply(ADD_LEARNER, 1)
    with pytest.raises(ConfChangeRefused, match="already a learner"):
        m2.apply(ADD_LEARNER, 3)
    with pytest.raises(ConfChangeRefused, match=r"only a learner can be promoted.*add it as a learner"):
        m.apply(PROMOTE, 7)
    with pytest.raises(ConfChangeRefused, match="not a member"):
        m.apply(REMOVE, 7)
    with pytest.raises(ConfChangeRefused, match="last voter"):
        Membership(frozenset({4})).apply(REMOVE, 4)
    with pytest.raises(ConfChangeRefused, match="unknown membership change 'add'"):
        m.apply("add", 3)
    with pytest.raises(ConfChangeRefused, match="non-negative ints"):
        m.apply(ADD_LEARNER, -1)
    with pytest.raises(ValueError, match="both voters and learners"):
        Membership(frozenset({1}), frozenset({1}))
    assert str(m2) == "voters {0,1,2} learners {3}"


def test_quorum_counts_only_voters() -> None:
    m = Membership(frozenset({0, 1, 2}), frozenset({3, 4}))
    assert not m.has_quorum({0, 3, 4})
    assert m.has_quorum({0, 2})


def test_join_config_validation() -> None:
    RaftConfig(peer_id=5, peers=(0, 1, 2), join=True)
    with pytest.raises(ValueError, match="join is set"):
        RaftConfig(peer_id=1, peers=(0, 1, 2), join=True)
    with pytest.raises(ValueError, match="set join=True to join an existing one"):
        RaftConfig(peer_id=5, peers=(0, 1, 2))


# -- learners -------------------------------------------------------------------------------------


def test_a_joining_peer_never_campaigns_before_it_votes() -> None:
    c = Members(3, 1)
    j = c.nodes[3]
    for _ in range(200):
        j.tick()
    rd = j.ready()
    assert j.role == FOLLOWER and j.term == 0 and not rd.messages
    assert j.membership == Membership(frozenset({0, 1, 2}))


def test_learner_receives_the_log_but_does_not_count() -> None:
    c = started()
    for k in range(5):
        c.nodes[0].propose(k)
    c.deliver_all()
    idx = c.change(0, ADD_LEARNER, 3)
    c.tick(3)
    learner = c.nodes[3]
    assert learner.last_index == c.nodes[0].last_index and learner.commit_index >= idx
    assert learner.membership.learners == {3}
    assert [e.command for e in c.applied[3]] == [e.command for e in c.applied[0]][: len(c.applied[3])]
    # Cut two voters off: the learner's acknowledgement does not make a majority.
    c.cut |= {1, 2}
    before = c.nodes[0].commit_index
    i, _, _ = c.nodes[0].propose("only the learner has it")
    c.tick(3)
    assert c.nodes[3].last_index == i and c.nodes[0].commit_index == before
    c.cut.clear()
    c.tick(3)
    assert c.nodes[0].commit_index == i


def test_learner_catches_up_by_snapshot() -> None:
    c = started()
    for k in range(10):
        c.nodes[0].propose(k)
    c.tick(2)
    for i in range(3):
        c.nodes[i].snapshot(8, b"eight")
    c.deliver_all()
    c.change(0, ADD_LEARNER, 3)
    c.tick(4)
    j = c.nodes[3]
    assert j.log.snapshot_index == 8 and j.last_index == c.nodes[0].last_index
    assert j.membership.learners == {3}
    assert c.saved[3].snapshot.index == 8


def test_promotion_waits_until_the_learner_caught_up() -> None:
    c = started()
    for k in range(5):
        c.nodes[0].propose(k)
    c.deliver_all()
    c.cut.add(3)
    c.change(0, ADD_LEARNER, 3)
    with pytest.raises(ConfChangeRefused, match="learner P3 is not caught up: it holds the log up to 0"):
        c.nodes[0].propose_conf_change(PROMOTE, 3)
    c.cut.clear()
    c.tick(3)
    c.change(0, PROMOTE, 3)
    lead = c.nodes[0]
    assert lead.membership.voters == {0, 1, 2, 3} and lead.membership.quorum == 3
    # Now 2 of 4 is not a majority.
    c.cut |= {2, 3}
    before = lead.commit_index
    lead.propose("needs three")
    c.tick(3)
    assert lead.commit_index == before


# -- one change at a time ---------------------------------------------------------------------------


def test_one_change_in_flight() -> None:
    c = started(3, 2)
    c.cut |= {1, 2}  # nothing commits
    idx = c.change(0, ADD_LEARNER, 3, commit=False)
    with pytest.raises(ConfChangeRefused, match=f"the change at index {idx} .* is not committed yet"):
        c.nodes[0].propose_conf_change(ADD_LEARNER, 4)
    assert c.nodes[0].last_index == idx  # nothing appended
    c.cut.clear()
    c.tick(3)
    c.change(0, ADD_LEARNER, 4)
    assert c.nodes[0].membership.learners == {3, 4}


def test_planted_fault_allows_two_changes_in_flight() -> None:
    c = started(3, 2)
    c.nodes[0].faults = frozenset({"two_changes_in_flight"})
    c.cut |= {1, 2}
    c.change(0, ADD_LEARNER, 3, commit=False)
    c.change(0, ADD_LEARNER, 4, commit=False)
    assert c.nodes[0].membership.learners == {3, 4}


def test_a_new_leader_changes_membership_only_after_committing_in_its_term() -> None:
    c = Members(3, 1)
    c.elect(0)
    with pytest.raises(ConfChangeRefused, match="has not committed an entry of its term 1 yet"):
        c.nodes[0].propose_conf_change(ADD_LEARNER, 3)
    c.commit_own_term(0)
    c.change(0, ADD_LEARNER, 3)


def test_followers_cannot_propose_changes() -> None:
    c = started()
    assert c.nodes[1].propose_conf_change(ADD_LEARNER, 3) == (-1, c.nodes[1].term, False)


# -- takes effect when appended ---------------------------------------------------------------------


def test_configuration_takes_effect_when_appended_and_reverts_on_truncation() -> None:
    c = started(3, 1)
    c.change(0, ADD_LEARNER, 3)
    c.tick(3)
    # The leader promotes 3, and only the learner 3 receives the entry before the leader is cut off.
    c.cut |= {1, 2}
    idx = c.change(0, PROMOTE, 3, commit=False)
    c.deliver_all()
    f = c.nodes[3]
    assert f.last_index == idx and f.commit_index < idx
    assert f.membership.voters == {0, 1, 2, 3}  # in force before it commits
    assert c.nodes[2].membership.voters == {0, 1, 2}
    # Peer 1 leads term 2 without the entry and overwrites it on peer 3: its configuration reverts.
    c.cut = {0}
    c.elect(1)
    c.commit_own_term(1)
    assert c.nodes[3].log.term_at(idx) == c.nodes[1].term
    assert c.nodes[3].membership.voters == {0, 1, 2} and c.nodes[3].membership.learners == {3}
    assert c.nodes[3].membership == scan(c.nodes[3].log, None, Membership(frozenset({0, 1, 2})))


# -- elections and quorums --------------------------------------------------------------------------


def test_votes_of_non_voters_are_not_counted() -> None:
    c = started(3, 1)
    c.change(0, ADD_LEARNER, 3)
    c.tick(3)
    n = c.nodes[1]
    c.cut = set(c.ids)  # deliver nothing; we feed peer 1 by hand
    while n.role != CANDIDATE:
        n.tick()
    n.ready()
    n.step(RequestVoteReply(n.term, 3, 1, True))  # the learner's vote
    assert n.role == CANDIDATE
    n.step(RequestVoteReply(n.term, 2, 1, True))
    assert n.role == LEADER


def test_a_candidate_asks_only_voters() -> None:
    c = started(3, 1)
    c.change(0, ADD_LEARNER, 3)
    c.tick(3)
    n = c.nodes[2]
    while n.role != CANDIDATE:
        n.tick()
    dsts = {m.dst for m in n.ready().messages if isinstance(m, RequestVote)}
    assert dsts == {0, 1}


def test_a_one_voter_group_grows_and_shrinks() -> None:
    c = Members(1, 2)
    c.elect(0)
    c.commit_own_term(0)
    c.add_voter(0, 1)
    c.add_voter(0, 2)
    assert c.nodes[0].membership.voters == {0, 1, 2}
    i, _, _ = c.nodes[0].propose("x")
    c.tick(2)
    assert all(c.nodes[p].commit_index >= i for p in range(3))
    c.change(0, REMOVE, 2)
    c.change(0, REMOVE, 1)
    i, _, _ = c.nodes[0].propose("alone")
    assert c.nodes[0].commit_index < i  # not before it is on disk
    c.process(0)
    assert c.nodes[0].commit_index == i  # commits on its own again


# -- removal --------------------------------------------------------------------------------------


def test_a_removed_leader_steps_down_once_the_removal_commits_and_never_campaigns() -> None:
    c = started(3, 0)
    c.cut.add(2)
    idx = c.change(0, REMOVE, 0, commit=False)
    lead = c.nodes[0]
    assert lead.is_leader and not lead.membership.is_voter(0)
    c.deliver_all()  # peer 1 acknowledges: {1, 2} needs both, so the removal is not committed yet
    assert lead.is_leader and lead.commit_index < idx
    c.cut.clear()
    c.tick(2)
    assert lead.role == FOLLOWER and lead.commit_index >= idx
    for _ in range(100):
        c.tick()
        assert lead.role == FOLLOWER  # it never campaigns again
    new = c.leader()
    assert new in (1, 2)
    # The rest of the group goes on without it.
    c.commit_own_term(new)
    i, _, _ = c.nodes[new].propose("after")
    c.tick(2)
    assert c.nodes[1].commit_index >= i and c.nodes[2].commit_index >= i


def test_a_removed_peer_learns_that_its_removal_committed() -> None:
    c = started(3, 1)
    idx = c.change(0, REMOVE, 2, commit=False)
    assert 2 in c.nodes[0].progress
    c.deliver_all()
    c.tick(2)
    assert c.nodes[2].commit_index >= idx and not c.nodes[2].membership.is_voter(2)
    c.change(0, ADD_LEARNER, 3)  # the next change: the leader forgets the removed peer
    assert 2 not in c.nodes[0].progress and 3 in c.nodes[0].progress
    # It knows it is out: it never campaigns.
    term = c.nodes[2].term
    for _ in range(100):
        c.nodes[2].tick()
    assert c.nodes[2].term == term and not c.nodes[2].ready().messages


def test_a_removed_peer_that_missed_its_removal_cannot_depose_the_leader() -> None:
    c = started(3, 0)
    c.cut.add(2)
    c.change(0, REMOVE, 2)  # {0, 1} commit it; peer 2 never hears of it
    lead, term = c.nodes[0], c.nodes[0].term
    rogue = c.nodes[2]
    assert rogue.membership.is_voter(2)
    rogue_msgs = []
    for _ in range(60):
        rogue.tick()
        rogue_msgs += [m for m in rogue.ready().messages if isinstance(m, RequestVote)]
    assert rogue_msgs and rogue.term > term
    c.cut.clear()
    for m in rogue_msgs:  # its RequestVotes (at ever higher terms) reach the group
        c.nodes[m.dst].step(m)
        c.deliver_all()
        c.tick()
    assert lead.is_leader and lead.term == term and c.nodes[1].term == term


# -- persistence ----------------------------------------------------------------------------------


def test_configuration_is_recovered_from_the_log_after_a_crash() -> None:
    c = started(3, 1)
    c.add_voter(0, 3)
    for i in c.ids:
        c.restart(i)
    for i in c.ids:
        assert c.nodes[i].membership.voters == {0, 1, 2, 3}
    c.elect(3)  # the promoted joiner can lead
    c.commit_own_term(3)


def test_configuration_is_recorded_in_the_snapshot_and_recovered_from_it() -> None:
    c = started(3, 1)
    c.add_voter(0, 3)
    c.change(0, REMOVE, 1)
    c.tick(2)
    for i in c.ids:
        n = c.nodes[i]
        n.snapshot(n.log.applied, b"s")
    c.deliver_all()
    snap: Snapshot = c.saved[0].snapshot
    assert snap.config == Membership(frozenset({0, 2, 3}))
    assert not any(type(e.command) is ConfChange for e in c.saved[0].entries)
    c.restart(0)
    assert c.nodes[0].membership.voters == {0, 2, 3}
    # A snapshot of a group that never changed membership records nothing (the bootstrap one).
    d = started(3, 0)
    d.tick(2)
    d.nodes[0].snapshot(d.nodes[0].log.applied, b"s")
    assert d.nodes[0].ready().snapshot.config is None  # type: ignore[union-attr]


def test_a_restarted_peer_with_a_bare_state_keeps_the_bootstrap_configuration() -> None:
    n = RaftNode(RaftConfig(peer_id=1, peers=(0, 1, 2)), random.Random(0), PersistentState())
    assert n.membership.voters == {0, 1, 2} and n.status()["voters"] == [0, 1, 2]


def test_committed_configuration_entries_reach_the_service() -> None:
    c = started(3, 1)
    idx = c.change(0, ADD_LEARNER, 3)
    c.tick(2)
    got = [e for e in c.applied[1] if e.index == idx]
    assert got and isinstance(got[0].command, ConfChange) and got[0].command.op == ADD_LEARNER


def test_append_entries_from_a_leader_outside_our_configuration_are_accepted() -> None:
    """A peer added in an entry we lack may lead: its AppendEntries must be accepted (liveness)."""
    n = RaftNode(RaftConfig(peer_id=1, peers=(0, 1, 2)), random.Random(0), PersistentState())
    n.step(AppendEntries(5, 7, 1, 0, 0, (), 0))
    assert n.term == 5 and n.leader_id == 7
