"""Raft 3A: leader election (ported from the reference suite; same scenarios and bounds)."""

from __future__ import annotations

import random
import time

import pytest

from raykv.testing.raft_harness import ELECTION_TIMEOUT_S

pytestmark = [pytest.mark.ray, pytest.mark.timeout(180)]


def test_initial_election_3a(raft_harness):
    cfg = raft_harness(3)
    # is a leader elected?
    cfg.check_one_leader()
    # sleep a bit to avoid racing with followers learning of the election, then check all peers
    # agree on the term.
    time.sleep(0.05)
    term1 = cfg.check_terms()
    assert term1 >= 1, f"term is {term1}, but should be at least 1"
    # does the leader+term stay the same if there is no network failure?
    time.sleep(2 * ELECTION_TIMEOUT_S)
    term2 = cfg.check_terms()
    if term1 != term2:
        print("warning: term changed even though there were no failures")
    # there should still be a leader.
    cfg.check_one_leader()


def test_re_election_3a(raft_harness):
    servers = 3
    cfg = raft_harness(servers)
    leader1 = cfg.check_one_leader()
    # if the leader disconnects, a new one should be elected.
    cfg.disconnect(leader1)
    cfg.check_one_leader()
    # if the old leader rejoins, that shouldn't disturb the new leader.
    cfg.connect(leader1)
    leader2 = cfg.check_one_leader()
    # if there's no quorum, no new leader should be elected.
    cfg.disconnect(leader2)
    cfg.disconnect((leader2 + 1) % servers)
    time.sleep(2 * ELECTION_TIMEOUT_S)
    # check that the one connected server does not think it is the leader.
    cfg.check_no_leader()
    # if a quorum arises, it should elect a leader.
    cfg.connect((leader2 + 1) % servers)
    cfg.check_one_leader()
    # re-join of last node shouldn't prevent leader from existing.
    cfg.connect(leader2)
    cfg.check_one_leader()


def test_many_elections_3a(raft_harness):
    servers = 7
    cfg = raft_harness(servers)
    rng = random.Random(cfg.seed)
    cfg.check_one_leader()
    for _ in range(10):
        # disconnect three nodes (possibly the same one more than once)
        i1, i2, i3 = (rng.randrange(servers) for _ in range(3))
        cfg.disconnect(i1)
        cfg.disconnect(i2)
        cfg.disconnect(i3)
        # either the current leader should still be alive, or the remaining four should elect one.
        cfg.check_one_leader()
        cfg.connect(i1)
        cfg.connect(i2)
        cfg.connect(i3)
    cfg.check_one_leader()
