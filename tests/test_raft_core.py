"""Unit tests of the pure Raft core, one or more per rule of Figure 2 (in-process: no Ray, no sleeping).

Each test drives :class:`raft.RaftNode` objects directly with messages and ticks, or through the
instant-delivery :class:`CoreCluster`, and names the rule it checks.
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
    AppendEntries,
    AppendEntriesReply,
    Entry,
    HardState,
    InstallSnapshot,
    InstallSnapshotReply,
    PersistentState,
    RaftConfig,
    RaftNode,
    RequestVote,
    RequestVoteReply,
    Snapshot,
)


def node(peer: int = 0, n: int = 3, state: PersistentState | None = None, **kw) -> RaftNode:
    return RaftNode(RaftConfig(peer_id=peer, peers=tuple(range(n)), **kw), random.Random(peer), state)


def log_of(*terms: int) -> PersistentState:
    """A persisted log whose entry i (1-based) has term terms[i-1]."""
    entries = tuple(Entry(t, i + 1, f"c{i + 1}") for i, t in enumerate(terms))
    return PersistentState(HardState(max(terms, default=0), NO_VOTE), Snapshot(), entries)


def timeout(n: RaftNode) -> None:
    for _ in range(2 * n.config.election_ticks):
        n.tick()
        if n.role != FOLLOWER:
            return


# -- configuration --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"peer_id": 0, "peers": (0, 1, 1)}, "distinct"),
        ({"peer_id": 5, "peers": (0, 1, 2)}, "peer_id"),
        ({"peer_id": 0, "peers": (0, 1), "election_ticks": 3, "heartbeat_ticks": 3}, "election_ticks"),
        ({"peer_id": 0, "peers": (0, 1), "heartbeat_ticks": 0}, "heartbeat_ticks"),
        ({"peer_id": 0, "peers": ()}, "peers"),
        ({"peer_id": 0, "peers": (0, -1)}, "peers"),
        ({"peer_id": 0, "peers": (0, 1), "max_inflight_appends": 0}, "max_inflight_appends"),
        ({"peer_id": 0, "peers": (0, 1), "election_ticks": "10"}, "election_ticks"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        RaftConfig(**kwargs)


# -- all servers ----------------------------------------------------------------------------------


def test_higher_term_in_any_message_makes_a_leader_step_down():
    """All servers: if an RPC carries term T > currentTerm, set currentTerm = T, become follower."""
    c = CoreCluster(3)
    c.elect(0)
    leader = c.nodes[0]
    leader.step(RequestVoteReply(term=leader.term + 3, src=1, dst=0, granted=False))
    assert leader.role == FOLLOWER and leader.term == c.nodes[1].term + 3
    rd = leader.ready()
    assert rd.hard_state == HardState(leader.term, NO_VOTE), "a new term is persisted"


def test_stale_term_requests_are_rejected_with_the_current_term():
    """AppendEntries / RequestVote step 1: reply false if term < currentTerm."""
    n = node(1, state=log_of(1, 2))
    n.step(AppendEntries(5, 0, 1, 2, 2, (), 2))  # learn term 5
    n.ready()
    n.step(AppendEntries(3, 2, 1, 2, 2, (Entry(3, 3, "x"),), 3))
    n.step(RequestVote(4, 2, 1, 10, 4))
    replies = n.ready().messages
    assert replies[0] == AppendEntriesReply(5, 1, 2, False, prev_index=2)
    assert replies[1] == RequestVoteReply(5, 1, 2, False)
    assert n.last_index == 2


def test_committed_entries_are_applied_in_order_once():
    """All servers: if commitIndex > lastApplied, apply log[lastApplied+1..commitIndex]."""
    c = CoreCluster(3)
    c.elect(0)
    for k in range(5):
        c.nodes[0].propose(k)
    c.deliver_all()
    c.tick(c.nodes[0].config.heartbeat_ticks + 1)
    for i in c.ids:
        assert [e.index for e in c.applied[i]] == [1, 2, 3, 4, 5]
        assert [e.command for e in c.applied[i]] == [0, 1, 2, 3, 4]


# -- followers and candidates ---------------------------------------------------------------------


def test_follower_times_out_and_campaigns_with_a_persisted_self_vote():
    """Followers: election timeout without hearing from a leader -> candidate; candidates: increment
    currentTerm, vote for self, send RequestVote to all other servers."""
    n = node(0, election_ticks=10)
    timeout(n)
    assert n.role == CANDIDATE and n.term == 1
    rd = n.ready()
    assert rd.hard_state == HardState(1, 0)
    assert {m.dst for m in rd.messages} == {1, 2}
    assert all(isinstance(m, RequestVote) and m.term == 1 for m in rd.messages)


def test_election_timeout_is_randomized_within_bounds():
    timeouts = set()
    for seed in range(40):
        n = RaftNode(RaftConfig(peer_id=0, peers=(0, 1, 2), election_ticks=10), random.Random(seed))
        ticks = 0
        while n.role == FOLLOWER:
            n.tick()
            ticks += 1
        timeouts.add(ticks)
    assert min(timeouts) >= 10 and max(timeouts) < 20 and len(timeouts) > 3


def test_candidate_with_majority_becomes_leader_and_sends_heartbeats():
    """Candidates: votes from a majority -> leader; leaders: send initial empty AppendEntries."""
    n = node(0, n=5)
    timeout(n)
    n.ready()
    n.step(RequestVoteReply(1, 1, 0, True))
    assert n.role == CANDIDATE
    n.step(RequestVoteReply(1, 2, 0, False))
    n.step(RequestVoteReply(1, 3, 0, True))
    assert n.role == LEADER
    msgs = n.ready().messages
    assert {m.dst for m in msgs} == {1, 2, 3, 4}
    assert all(isinstance(m, AppendEntries) and m.entries == () for m in msgs)


def test_candidate_steps_down_on_append_from_leader_of_same_term():
    """Candidates: AppendEntries from a new leader (same term) -> follower."""
    n = node(0)
    timeout(n)
    n.step(AppendEntries(1, 2, 0, 0, 0, (), 0))
    assert n.role == FOLLOWER and n.leader_id == 2 and n.voted_for == 0


def test_one_vote_per_term():
    """RequestVote step 2: grant only if votedFor is null or candidateId."""
    n = node(0)
    n.step(RequestVote(1, 1, 0, 0, 0))
    n.step(RequestVote(1, 2, 0, 0, 0))
    n.step(RequestVote(1, 1, 0, 0, 0))  # a retransmission is granted again
    granted = [m.granted for m in n.ready().messages]
    assert granted == [True, False, True]
    assert n.voted_for == 1


def test_vote_requires_an_up_to_date_log():
    """§5.4.1: grant only if the candidate's log is at least as up to date as the voter's."""
    n = node(0, state=log_of(1, 1, 2))
    n.step(RequestVote(3, 1, 0, 5, 1))  # longer, but older last term
    n.step(RequestVote(4, 2, 0, 2, 2))  # same last term, shorter
    n.step(RequestVote(5, 1, 0, 3, 2))  # same last term, same length
    assert [m.granted for m in n.ready().messages] == [False, False, True]


def test_vote_is_persisted_before_the_reply_is_sent():
    n = node(0)
    n.step(RequestVote(2, 1, 0, 0, 0))
    rd = n.ready()
    assert rd.hard_state == HardState(2, 1) and rd.messages[0].granted


# -- AppendEntries, follower side -----------------------------------------------------------------


def test_append_rejected_when_prev_entry_missing_with_fast_backtracking_hint():
    """AppendEntries step 2: reply false if the log has no entry at prevLogIndex with prevLogTerm;
    the reply carries the conflicting term and its first index (fast backtracking)."""
    n = node(1, state=log_of(1, 2, 2, 2))
    n.step(AppendEntries(3, 0, 1, 4, 3, (Entry(3, 5, "x"),), 0))
    r = n.ready().messages[0]
    assert not r.success and r.conflict_term == 2 and r.conflict_index == 2
    n.step(AppendEntries(3, 0, 1, 9, 3, (), 0))
    r = n.ready().messages[0]
    assert not r.success and r.conflict_term == 0 and r.conflict_index == 5


def test_conflicting_entries_are_deleted_and_new_ones_appended():
    """AppendEntries steps 3-4: delete a conflicting entry and all that follow; append new ones."""
    n = node(1, state=log_of(1, 1, 2, 2))
    n.step(AppendEntries(3, 0, 1, 2, 1, (Entry(3, 3, "a"), Entry(3, 4, "b"), Entry(3, 5, "c")), 0))
    rd = n.ready()
    assert [e.index for e in rd.entries] == [3, 4, 5], "storage gets the replaced suffix"
    assert rd.messages[0].success and rd.messages[0].match_index == 5
    assert [n.log.term_at(i) for i in range(1, 6)] == [1, 1, 3, 3, 3]


def test_stale_shorter_append_does_not_truncate_matching_entries():
    """A delayed AppendEntries that is a prefix of what we hold must not delete later entries."""
    n = node(1, state=log_of(1, 1, 1))
    n.step(AppendEntries(1, 0, 1, 0, 0, (Entry(1, 1, "c1"),), 0))
    rd = n.ready()
    assert n.last_index == 3 and rd.entries == ()
    assert rd.messages[0].match_index == 1, "only what this message proves matches"


def test_follower_commit_is_bounded_by_last_new_entry():
    """AppendEntries step 5: commitIndex = min(leaderCommit, index of last new entry)."""
    n = node(1, state=log_of(1, 1, 1, 1))
    n.step(AppendEntries(1, 0, 1, 1, 1, (Entry(1, 2, "c2"),), 4))
    assert n.commit_index == 2
    assert [e.index for e in n.ready().committed_entries] == [1, 2]


# -- leaders --------------------------------------------------------------------------------------


def test_leader_batches_proposals_into_one_append_per_follower():
    c = CoreCluster(3)
    c.elect(0)
    leader = c.nodes[0]
    for k in range(50):
        leader.propose(k)
    msgs = leader.ready().messages
    appends = [m for m in msgs if isinstance(m, AppendEntries)]
    assert len(appends) == 2 and all(len(m.entries) == 50 for m in appends)


def test_leader_pipelines_up_to_the_inflight_window():
    c = CoreCluster(3, max_inflight_appends=3, max_entries_per_append=2)
    c.elect(0)
    leader = c.nodes[0]
    leader.propose("a")
    c.deliver_all()  # follower moves to REPLICATE
    for k in range(20):
        leader.propose(k)
    msgs = [m for m in leader.ready().messages if isinstance(m, AppendEntries) and m.dst == 1]
    assert len(msgs) == 3, "at most max_inflight_appends unacknowledged appends per follower"
    assert [m.prev_index for m in msgs] == [1, 3, 5]


def test_leader_backs_up_next_index_using_conflict_term():
    """Leaders: on rejection, decrement nextIndex (fast: skip the follower's whole conflicting term)."""
    leader = node(0, state=log_of(1, 1, 4, 4, 5))
    timeout(leader)
    leader.step(RequestVoteReply(leader.term, 1, 0, True))
    assert leader.is_leader
    leader.ready()
    # follower 1's log: terms 1 1 2 2 2 2 -> rejects prev (5, t5) with conflict term 2 from index 3
    leader.step(AppendEntriesReply(leader.term, 1, 0, False, prev_index=5, conflict_term=2,
                                   conflict_index=3))
    msgs = [m for m in leader.ready().messages if m.dst == 1]
    assert msgs[0].prev_index == 2, "leader has no term 2: jump to the follower's first index of it"
    leader.step(AppendEntriesReply(leader.term, 2, 0, False, prev_index=5, conflict_term=4,
                                   conflict_index=3))
    msgs = [m for m in leader.ready().messages if m.dst == 2]
    assert msgs[0].prev_index == 4, "leader holds term 4: resume after its last entry of term 4"


def test_leader_never_commits_an_old_term_entry_by_counting_replicas():
    """Leaders: commit N only if log[N].term == currentTerm (Figure 8)."""
    leader = node(0, state=log_of(1, 2))
    timeout(leader)
    leader.step(RequestVoteReply(leader.term, 1, 0, True))
    leader.ready()
    leader.step(AppendEntriesReply(leader.term, 1, 0, True, match_index=2, prev_index=2))
    assert leader.commit_index == 0
    idx, _, _ = leader.propose("new")
    leader.ready()
    leader.step(AppendEntriesReply(leader.term, 1, 0, True, match_index=idx, prev_index=2))
    assert leader.commit_index == idx == 3, "a current-term entry commits everything before it"


def test_leader_appends_but_never_deletes_its_own_entries():
    c = CoreCluster(3)
    c.elect(0)
    leader = c.nodes[0]
    leader.propose("x")
    c.deliver_all()
    before = list(leader.log.entries)
    leader.step(AppendEntriesReply(leader.term, 1, 0, False, prev_index=1, conflict_index=1))
    leader.ready()
    assert list(leader.log.entries)[: len(before)] == before


def test_propose_on_follower_is_refused():
    n = node(1)
    assert n.propose("x") == (-1, 0, False)


def test_single_peer_cluster_commits_alone():
    n = RaftNode(RaftConfig(peer_id=0, peers=(0,), election_ticks=2), random.Random(0))
    while not n.is_leader:
        n.tick()
    idx, _, ok = n.propose("x")
    assert ok and not n.ready().committed_entries  # handed out for persisting: not committed yet
    assert n.ready().committed_entries[-1].index == idx  # the next Ready commits it (it is on disk)


# -- snapshots ------------------------------------------------------------------------------------


def test_snapshot_compacts_the_log_and_is_handed_to_storage():
    c = CoreCluster(3)
    c.elect(0)
    for k in range(10):
        c.nodes[0].propose(k)
    c.tick(3)
    n = c.nodes[1]
    n.snapshot(6, b"six")
    rd = n.ready()
    assert rd.snapshot == Snapshot(6, n.log.snapshot_term, b"six")
    assert n.log.first_index == 7 and n.last_index == 10
    with pytest.raises(ValueError, match="applied"):
        n.snapshot(11, b"too far")


def test_install_snapshot_discards_conflicting_log_and_keeps_matching_suffix():
    """InstallSnapshot: retain entries after the snapshot if the entry at its index matches;
    otherwise discard the entire log; reset the state machine from the snapshot."""
    f = node(1, state=log_of(1, 1, 1, 1, 1))
    f.step(InstallSnapshot(2, 0, 1, Snapshot(3, 1, b"s3")))
    rd = f.ready()
    assert rd.apply_snapshot == Snapshot(3, 1, b"s3") and f.last_index == 5
    assert rd.messages[0] == InstallSnapshotReply(2, 1, 0, 3)
    g = node(1, state=log_of(1, 1, 1, 1, 1))
    g.step(InstallSnapshot(2, 0, 1, Snapshot(3, 2, b"s3")))
    g.ready()
    assert g.last_index == 3 and g.commit_index == 3


def test_leader_sends_snapshot_to_follower_behind_its_log():
    c = CoreCluster(3)
    c.elect(0)
    c.cut = {2}
    for k in range(10):
        c.nodes[0].propose(k)
    c.tick(3)
    c.nodes[0].snapshot(c.nodes[0].log.applied, b"state")
    c.cut = set()
    c.tick(c.nodes[0].config.heartbeat_ticks * 3)
    assert c.nodes[2].log.snapshot_index == 10 and c.nodes[2].commit_index == 10


def test_restart_from_persisted_state_keeps_term_vote_log_and_snapshot():
    c = CoreCluster(3)
    c.elect(0)
    for k in range(5):
        c.nodes[0].propose(k)
    c.tick(3)
    c.nodes[1].snapshot(3, b"three")
    c.process(1)
    term, vote = c.nodes[1].term, c.nodes[1].voted_for
    c.restart(1)
    n = c.nodes[1]
    assert (n.term, n.voted_for, n.log.snapshot_index, n.last_index) == (term, vote, 3, 5)
    assert n.commit_index == 3, "only the snapshot is known committed after a restart"


def test_ready_is_empty_when_nothing_happened():
    n = node(0)
    n.ready()
    assert not n.has_ready() and n.ready().is_empty()
