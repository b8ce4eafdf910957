"""Unit tests of PreVote (thesis §9.6) and CheckQuorum (thesis §6.2) in the pure core (no Ray).

Each test names the rule it checks; both switches are off by default (the reference configuration),
and the last tests show what they change against that default.
"""

from __future__ import annotations

import random

import pytest
from core_cluster import CoreCluster

from raft import (
    CANDIDATE,
    FOLLOWER,
    LEADER,
    NO_VOTE,
    PRE_CANDIDATE,
    AppendEntries,
    AppendEntriesReply,
    Entry,
    HardState,
    PersistentState,
    RaftConfig,
    RaftNode,
    RequestVote,
    RequestVoteReply,
    Snapshot,
)

E = 10  # election_ticks in these tests


def node(peer: int = 0, n: int = 3, state: PersistentState | None = None, **kw) -> RaftNode:
    kw.setdefault("election_ticks", E)
    return RaftNode(RaftConfig(peer_id=peer, peers=tuple(range(n)), **kw), random.Random(peer), state)


def log_of(*terms: int, term: int | None = None) -> PersistentState:
    entries = tuple(Entry(t, i + 1, f"c{i + 1}") for i, t in enumerate(terms))
    return PersistentState(HardState(term if term is not None else max(terms, default=0), NO_VOTE),
                           Snapshot(), entries)


def time_out(n: RaftNode) -> None:
    for _ in range(2 * n.config.election_ticks):
        n.tick()
        if n.role != FOLLOWER:
            return


def terms(c: CoreCluster) -> list[int]:
    return [c.nodes[i].term for i in c.ids]


# -- configuration --------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["pre_vote", "check_quorum", "leader_noop"])
def test_switches_are_bools_and_off_by_default(field):
    cfg = RaftConfig(peer_id=0, peers=(0, 1, 2))
    assert getattr(cfg, field) is False
    with pytest.raises(ValueError, match=field):
        RaftConfig(peer_id=0, peers=(0, 1, 2), **{field: 1})


# -- PreVote ----------------------------------------------------------------------------------------


def test_pre_candidate_asks_for_next_term_without_changing_its_own():
    """PreVote: on timeout a peer asks for votes for term+1 but keeps its term and vote (nothing to
    persist)."""
    n = node(0, state=log_of(1, 1, term=3), pre_vote=True)
    time_out(n)
    assert n.role == PRE_CANDIDATE and n.term == 3 and n.voted_for == NO_VOTE
    rd = n.ready()
    assert rd.hard_state is None
    assert sorted(m.dst for m in rd.messages) == [1, 2]
    assert all(m == RequestVote(4, 0, m.dst, 2, 1, pre_vote=True) for m in rd.messages)


def test_majority_of_pre_votes_starts_the_real_election():
    """PreVote: only a majority of granted pre-votes makes the peer a candidate of term+1."""
    n = node(0, n=5, state=log_of(1, term=2), pre_vote=True)
    time_out(n)
    n.ready()
    n.step(RequestVoteReply(3, 1, 0, True, pre_vote=True))
    n.step(RequestVoteReply(2, 2, 0, False, pre_vote=True))  # a refusal in our own term changes nothing
    assert n.role == PRE_CANDIDATE and n.term == 2
    n.step(RequestVoteReply(3, 3, 0, True, pre_vote=True))
    assert n.role == CANDIDATE and n.term == 3 and n.voted_for == 0
    rd = n.ready()
    assert rd.hard_state == HardState(3, 0)
    assert all(isinstance(m, RequestVote) and not m.pre_vote and m.term == 3 for m in rd.messages)


def test_stale_granted_pre_votes_do_not_count():
    """PreVote: a granted pre-vote counts only for the term the pre-candidate is asking for now."""
    n = node(0, n=3, state=log_of(1, term=2), pre_vote=True)
    time_out(n)
    n.step(RequestVoteReply(5, 1, 0, True, pre_vote=True))  # for some other (future) term
    assert n.role == PRE_CANDIDATE and n.term == 2


def test_pre_vote_refusal_with_a_higher_term_makes_the_pre_candidate_follow():
    """A refusal carries the voter's term; a newer one is adopted like any higher term."""
    n = node(0, state=log_of(1, term=2), pre_vote=True)
    time_out(n)
    n.step(RequestVoteReply(7, 1, 0, False, pre_vote=True))
    assert n.role == FOLLOWER and n.term == 7


def test_pre_vote_is_granted_only_without_a_live_leader_and_changes_nothing():
    """PreVote: grant only if no leader was heard from within an election timeout and the candidate's
    log is up to date; answering changes neither the term nor the vote, and resets no timer."""
    n = node(1, state=log_of(1, 1), pre_vote=True)
    n.step(AppendEntries(1, 0, 1, 2, 1, (), 2))  # a live leader of term 1
    n.ready()
    n.step(RequestVote(2, 2, 1, 2, 1, pre_vote=True))
    r = n.ready()
    assert r.messages == (RequestVoteReply(1, 1, 2, False, pre_vote=True),) and r.hard_state is None
    for _ in range(E):
        n.tick()
    elapsed = n.election_elapsed
    n.step(RequestVote(2, 2, 1, 1, 1, pre_vote=True))  # log behind ours
    n.step(RequestVote(2, 2, 1, 2, 1, pre_vote=True))  # up to date
    r = n.ready()
    assert [m.granted for m in r.messages] == [False, True]
    assert r.messages[1].term == 2, "a granted pre-vote carries the term asked for"
    assert r.hard_state is None and n.term == 1 and n.voted_for == NO_VOTE
    assert n.election_elapsed == elapsed


def test_leader_refuses_pre_votes():
    c = CoreCluster(3, pre_vote=True)
    c.elect(0)
    leader = c.nodes[0]
    leader.step(RequestVote(leader.term + 1, 2, 0, 100, leader.term, pre_vote=True))
    (reply,) = leader.ready().messages
    assert not reply.granted and leader.role == LEADER


def test_isolated_peer_does_not_raise_the_term_and_rejoins_quietly():
    """PreVote's purpose: a peer cut off for many election timeouts keeps its term, and when it
    comes back the leader and the term stay the same."""
    c = CoreCluster(3, pre_vote=True, election_ticks=E)
    c.elect(0)
    c.nodes[0].propose("x")
    c.deliver_all()
    before = terms(c)
    c.cut.add(2)
    c.tick(10 * E)
    assert c.nodes[2].term == before[2] and c.nodes[2].role == PRE_CANDIDATE
    c.cut.clear()
    c.tick(3 * E)
    assert terms(c) == before and c.leader() == 0 and c.nodes[2].leader_id == 0


def test_without_pre_vote_the_rejoining_peer_raises_the_term():
    """The reference configuration, for contrast: the isolated peer campaigns in ever higher terms
    and its return forces the leader out."""
    c = CoreCluster(3, election_ticks=E)
    c.elect(0)
    before = c.nodes[0].term
    c.cut.add(2)
    c.tick(10 * E)
    assert c.nodes[2].term >= before + 5
    c.cut.clear()
    c.tick(3 * E)
    assert min(terms(c)) > before


def test_pre_candidate_may_vote_in_a_real_election_of_its_term():
    n = node(1, state=log_of(1, term=2), pre_vote=True)
    time_out(n)
    assert n.role == PRE_CANDIDATE
    n.step(RequestVote(2, 2, 1, 1, 1))
    assert n.role == FOLLOWER and n.voted_for == 2 and n.ready().messages[-1].granted


def test_single_peer_with_pre_vote_elects_itself():
    n = node(0, n=1, pre_vote=True)
    time_out(n)
    assert n.role == LEADER and n.term == 1


# -- CheckQuorum --------------------------------------------------------------------------------------


def test_leader_cut_off_from_the_majority_steps_down_within_two_election_timeouts():
    """CheckQuorum: a leader that has not heard from a majority for an election timeout steps down
    (in its own term: nothing tells it of a newer one)."""
    c = CoreCluster(5, check_quorum=True, election_ticks=E)
    c.elect(0)
    c.tick(3)
    leader = c.nodes[0]
    term = leader.term
    c.cut.update({0, 3, 4})  # the leader hears nobody (and 3, 4 are cut off too)
    ticks = 0
    while leader.role == LEADER:
        c.nodes[0].tick()
        c.deliver_all()
        ticks += 1
        assert ticks <= 2 * E, "still leading after two election timeouts"
    assert leader.role == FOLLOWER and leader.term == term and leader.leader_id is None


def test_leader_with_a_majority_keeps_leading():
    c = CoreCluster(5, check_quorum=True, election_ticks=E)
    c.elect(0)
    term = c.nodes[0].term
    c.cut.update({3, 4})
    c.tick(10 * E)
    assert c.nodes[0].role == LEADER and c.nodes[0].term == term


def test_check_quorum_needs_replies_not_just_sent_messages():
    """The leader counts followers that replied; sending to them is not enough."""
    n = node(0, n=3, check_quorum=True)
    time_out(n)
    n.step(RequestVoteReply(1, 1, 0, True))
    assert n.role == LEADER
    for _ in range(E):
        n.tick()
        n.ready()
    assert n.role == FOLLOWER


def test_lease_follower_ignores_higher_term_vote_requests():
    """CheckQuorum's lease: a follower that heard from its leader within an election timeout ignores
    (neither answers nor adopts the term of) RequestVotes and pre-votes of higher terms."""
    n = node(1, state=log_of(1), check_quorum=True)
    n.step(AppendEntries(1, 0, 1, 1, 1, (), 1))
    n.ready()
    n.step(RequestVote(5, 2, 1, 10, 4))
    n.step(RequestVote(5, 2, 1, 10, 4, pre_vote=True))
    rd = n.ready()
    assert rd.messages == () and rd.hard_state is None and n.term == 1 and n.leader_id == 0
    for _ in range(E):
        n.tick()
    n.step(RequestVote(5, 2, 1, 10, 4))  # the lease is over
    rd = n.ready()
    assert n.term == 5 and rd.messages[0].granted


def test_lease_leader_ignores_higher_term_vote_requests():
    c = CoreCluster(3, check_quorum=True, election_ticks=E)
    c.elect(0)
    leader = c.nodes[0]
    term = leader.term
    leader.step(RequestVote(term + 1, 2, 0, 100, term))
    assert leader.role == LEADER and leader.term == term and leader.ready().messages == ()


def test_stale_leader_learns_the_new_term_from_its_own_followers():
    """With CheckQuorum a follower still answers a stale leader's append with its newer term."""
    n = node(1, state=log_of(1, term=3), check_quorum=True)
    n.step(AppendEntries(2, 0, 1, 1, 1, (), 1))
    assert n.ready().messages == (AppendEntriesReply(3, 1, 0, False, prev_index=1),)


def test_both_switches_together_keep_the_leader_through_a_partitioned_follower():
    c = CoreCluster(5, pre_vote=True, check_quorum=True, election_ticks=E)
    c.elect(1)
    before = terms(c)
    c.cut.add(4)
    c.tick(8 * E)
    c.cut.clear()
    c.tick(4 * E)
    assert terms(c) == before and c.leader() == 1


def test_leader_stepping_down_in_the_tick_that_announces_a_commit_leaves_nothing_to_flush():
    """Regression (found by the simulator with CheckQuorum on: a follower whose has_ready() stayed
    true forever): the commit notification a leader schedules is dropped when it steps down."""
    n = node(0, n=5, check_quorum=True)
    time_out(n)
    n.step(RequestVoteReply(1, 1, 0, True))
    n.step(RequestVoteReply(1, 2, 0, True))
    assert n.role == LEADER
    n.ready()
    for _ in range(E - 1):
        n.tick()
        n.ready()
    n.propose("x")
    n.ready()
    n.step(AppendEntriesReply(1, 1, 0, True, match_index=1))
    n.step(AppendEntriesReply(1, 3, 0, True, match_index=0))
    n.tick()  # the first check: 0, 1 and 3 were heard from
    n.ready()
    assert n.role == LEADER
    for _ in range(E - 1):
        n.tick()
        n.ready()
    n.step(AppendEntriesReply(1, 2, 0, True, match_index=1))  # commits index 1 (with 0 and 1)
    assert n.commit_index == 1
    n.tick()  # the second check: only 2 was heard from, so the leader steps down in this tick
    assert n.role == FOLLOWER
    n.ready()
    assert not n.has_ready()
