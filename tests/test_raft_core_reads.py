"""Unit tests of ReadIndex reads (thesis §6.4) and the leader's no-op in the pure core (no Ray)."""

from __future__ import annotations

import random

from core_cluster import CoreCluster

from raft import (
    LEADER,
    AppendEntries,
    AppendEntriesReply,
    RaftConfig,
    RaftNode,
    ReadState,
    RequestVoteReply,
)


def lead(n: int = 3, **kw) -> CoreCluster:
    """A cluster whose peer 0 leads and has committed its no-op."""
    kw.setdefault("leader_noop", True)
    c = CoreCluster(n, **kw)
    c.elect(0)
    c.deliver_all()
    c.tick(2)
    return c


def read_states(c: CoreCluster, i: int) -> list[ReadState]:
    """Drain peer i's Ready by hand (queueing its messages) and return its answered reads."""
    out: list[ReadState] = []
    node = c.nodes[i]
    while node.has_ready():
        rd = node.ready()
        c.persist(i, rd)
        c.queue.extend(rd.messages)
        out.extend(rd.read_states)
    return out


def test_leader_noop_is_appended_only_when_asked():
    """leader_noop: a new leader appends an empty entry of its term; off by default (the reference
    tests expect their first command at index 1)."""
    on = lead(leader_noop=True)
    assert on.nodes[0].log.entry(1).command is None and on.nodes[0].log.entry(1).term == on.nodes[0].term
    assert on.nodes[0].commit_index == 1
    off = CoreCluster(3)
    off.elect(0)
    off.deliver_all()
    assert off.nodes[0].last_index == 0
    assert off.nodes[0].propose("x")[0] == 1


def test_follower_refuses_reads():
    """Followers refuse (the service redirects the clerk to the leader, as for writes)."""
    c = lead()
    assert c.nodes[1].read_index("r") is False
    assert not c.nodes[1].has_ready()


def test_read_is_answered_after_one_heartbeat_round_with_the_commit_index():
    """ReadIndex: the leader records its commit index, confirms its leadership with one round of
    AppendEntries to a majority, then answers with that index."""
    c = lead()
    leader = c.nodes[0]
    for k in range(3):
        leader.propose(k)
    c.deliver_all()
    c.tick(2)
    commit = leader.commit_index
    assert leader.read_index("r1") is True
    rd = leader.ready()
    assert rd.read_states == ()
    beats = [m for m in rd.messages if isinstance(m, AppendEntries)]
    assert sorted(m.dst for m in beats) == [1, 2] and all(m.read_ctx == 1 for m in beats)
    c.nodes[1].step(beats[0] if beats[0].dst == 1 else beats[1])
    (reply,) = c.nodes[1].ready().messages
    assert reply.read_ctx == 1
    leader.step(reply)  # with the leader itself, a majority of 3
    assert read_states(c, 0) == [ReadState(commit, "r1")]


def test_reads_between_two_ready_calls_share_one_round():
    c = lead(5)
    leader = c.nodes[0]
    for r in ("a", "b", "c"):
        leader.read_index(r)
    rd = leader.ready()
    assert len([m for m in rd.messages if isinstance(m, AppendEntries)]) == 4
    c.queue.extend(rd.messages)
    c.deliver_all()
    got = c.reads[0]
    assert [s.ctx for s in got] == ["a", "b", "c"] and len({s.index for s in got}) == 1


def test_read_waits_until_an_entry_of_the_leaders_term_is_committed():
    """A new leader's commit index may lag behind what earlier leaders committed: no read is
    answered before an entry of its own term commits (here: without the no-op, a client's)."""
    c = CoreCluster(3)  # no no-op
    c.elect(0)
    c.nodes[0].propose("old")
    c.deliver_all()
    c.cut.add(0)
    c.elect(1)  # peer 1 leads a later term; "old" is not committed in its view yet
    c.tick(3)
    leader = c.nodes[1]
    assert leader.is_leader and leader.commit_index == 0 and leader.last_index == 1
    assert leader.read_index("r") is True
    c.tick(5)
    assert c.reads[1] == []
    leader.propose("new")
    c.deliver_all()
    c.tick(3)
    assert c.reads[1] == [ReadState(2, "r")] and leader.commit_index == 2


def test_any_reply_of_the_leaders_term_confirms_leadership_even_a_rejection():
    c = lead()
    leader = c.nodes[0]
    leader.read_index("r")
    leader.ready()
    leader.step(AppendEntriesReply(leader.term, 2, 0, False, prev_index=50, conflict_index=3,
                                   read_ctx=1))
    assert [s.ctx for s in read_states(c, 0)] == ["r"]


def test_acks_of_an_earlier_round_do_not_confirm_a_later_one():
    c = lead(5)
    leader = c.nodes[0]
    leader.read_index("r1")
    leader.ready()
    for p in (1, 2):
        leader.step(AppendEntriesReply(leader.term, p, 0, True, match_index=1, read_ctx=1))
    assert [s.ctx for s in read_states(c, 0)] == ["r1"]
    c.queue.clear()
    leader.read_index("r2")
    leader.ready()
    leader.step(AppendEntriesReply(leader.term, 3, 0, True, match_index=1, read_ctx=1))
    leader.step(AppendEntriesReply(leader.term, 1, 0, True, match_index=1, read_ctx=1))
    assert read_states(c, 0) == []
    leader.step(AppendEntriesReply(leader.term, 2, 0, True, match_index=1, read_ctx=2))
    leader.step(AppendEntriesReply(leader.term, 4, 0, True, match_index=1, read_ctx=2))
    assert [s.ctx for s in read_states(c, 0)] == ["r2"]


def test_deposed_leader_never_answers_and_reports_the_reads_dropped():
    """A leader cut off from the majority cannot confirm its leadership; when CheckQuorum makes it
    step down its pending reads are dropped, never answered, and the new leader answers them."""
    c = lead(check_quorum=True)
    old = c.nodes[0]
    c.cut.add(0)
    assert old.read_index("stale") is True
    for _ in range(4 * old.config.election_ticks):
        c.tick()
    assert not old.is_leader and c.reads[0] == [] and c.reads_dropped[0] == ["stale"]
    assert old.read_index("again") is False
    new = c.leader()
    assert new is not None and new != 0
    assert c.nodes[new].read_index("retry") is True
    c.tick(3)
    assert [s.ctx for s in c.reads[new]] == ["retry"]


def test_step_down_hands_out_every_pending_read_as_dropped():
    n = RaftNode(RaftConfig(peer_id=0, peers=(0, 1, 2), leader_noop=True), random.Random(0))
    while n.role != LEADER:
        n.tick()
        if n.role == "candidate":
            n.step(RequestVoteReply(n.term, 1, 0, True))
    n.ready()
    n.step(AppendEntriesReply(n.term, 1, 0, True, match_index=1))
    assert n.commit_index == 1
    n.read_index("sent")
    n.ready()
    n.read_index("open")
    n.step(RequestVoteReply(n.term + 1, 2, 0, False))
    rd = n.ready()
    assert rd.read_states == () and list(rd.reads_dropped) == ["sent", "open"]


def test_single_peer_answers_at_once():
    n = RaftNode(RaftConfig(peer_id=0, peers=(0,), leader_noop=True), random.Random(0))
    while not n.is_leader:
        n.tick()
    n.ready()
    assert n.read_index("r") is True
    assert n.ready().read_states == (ReadState(1, "r"),)


def test_a_read_round_does_not_resend_snapshots_or_unpause_probes():
    """A read round sends an empty AppendEntries where nothing else goes, unlike a heartbeat it leaves
    a follower that is being sent a snapshot alone (a busy reader must not multiply snapshot traffic)."""
    c = lead()
    leader = c.nodes[0]
    leader.progress[2].become_snapshot()
    leader.read_index("r")
    msgs = leader.ready().messages
    assert [(type(m).__name__, m.dst, m.read_ctx) for m in msgs] == [("AppendEntries", 1, 1)]
