"""Regression tests for bugs in the Raft core found by the deterministic simulator (raft.sim)."""

from __future__ import annotations

from core_cluster import CoreCluster


def test_probe_success_advances_commit() -> None:
    """A follower's successful reply to a probe must let the leader commit.

    Found by the simulator (liveness and ``commit_old_term`` campaigns): when a follower in PROBE
    state acknowledged entries, the leader recorded the new match index *before* calling
    ``Progress.acknowledge``, which then reported "no progress", so ``_maybe_commit`` never ran.
    Later heartbeats acknowledge the same index and do not help either: the entry stayed uncommitted
    until the client proposed another command.
    """
    c = CoreCluster(3, seed=1)
    c.elect(0)
    c.tick(3)
    leader = c.nodes[0]
    c.cut = {1, 2}  # the new entry's AppendEntries are lost ...
    index, _, ok = leader.propose("x")
    assert ok
    c.tick(3)
    c.cut = set()  # ... so after the heal the followers reject, get probed, and accept it
    c.tick(10)
    assert all(c.nodes[i].last_index == index for i in range(3))
    assert leader.commit_index == index, leader.progress
    assert [e.command for e in c.applied[0]] == ["x"]
