"""PreVote and CheckQuorum on Ray (issue 13): Raft peers in replica actors behind the faulty network.

- a follower cut off for many election timeouts rejoins without changing the leader or the term
  (PreVote); with the reference configuration (PreVote off) the same scenario is measured too, and
  its term churn printed, for comparison;
- a leader cut off into a minority steps down within two election timeouts (CheckQuorum).

Run with ``-s`` to see the figures: ``pytest tests/test_raft_prevote_ray.py -s``.
"""

from __future__ import annotations

import functools
import time

import pytest

import raykv.testing.raft_harness as raft_harness_module
from actors.replica import SERVICE_RULES, ReplicaSpec

pytestmark = [pytest.mark.ray, pytest.mark.timeout(120)]

#: the harness's core timing (ReplicaSpec defaults): a tick of 20 ms, elections from 15 ticks
ELECTION_S = 15 * 0.02


@pytest.fixture
def harness_with(raft_harness, monkeypatch):
    """``harness_with(n, **rules)``: a RaftHarness whose peers run with the core's ``rules``."""

    def make(n: int, **rules: bool):
        monkeypatch.setattr(raft_harness_module, "ReplicaSpec", functools.partial(ReplicaSpec, **rules))
        try:
            return raft_harness(n)
        finally:
            monkeypatch.setattr(raft_harness_module, "ReplicaSpec", ReplicaSpec)

    return make


def _rejoin(cfg, isolate_s: float) -> tuple[int, int, int, int, int]:
    """Cut a follower off for ``isolate_s``, heal, commit; (leader, term, follower's term while cut
    off, leader after, term after)."""
    leader = cfg.check_one_leader()
    cfg.one(101, cfg.n, True)
    term = cfg.check_terms()
    follower = (leader + 1) % cfg.n
    cfg.disconnect(follower)
    time.sleep(isolate_s)
    (cut_term, _), = cfg.states([follower])
    cfg.connect(follower)
    cfg.one(102, cfg.n, True)
    time.sleep(2 * ELECTION_S)
    after_leader = cfg.check_one_leader()
    return leader, term, cut_term, after_leader, cfg.check_terms()


def test_partitioned_follower_rejoins_without_changing_leader_or_term(harness_with):
    """PreVote (with the services' rules): a follower cut off for ~10 election timeouts does not raise
    its term, and when it comes back the leader and the term stay the same."""
    cfg = harness_with(3, **SERVICE_RULES)
    leader, term, cut_term, after_leader, after_term = _rejoin(cfg, 10 * ELECTION_S)
    print(f"\nPreVote on: term {term} -> {after_term} (cut-off follower stayed at {cut_term}), "
          f"leader P{leader} -> P{after_leader}; term churn {after_term - term}")
    assert cut_term == term, f"the cut-off follower raised its term from {term} to {cut_term}"
    assert after_leader == leader and after_term == term


def test_without_pre_vote_the_rejoin_churns_the_term(harness_with):
    """The reference configuration, for comparison: the cut-off follower campaigns in ever higher terms
    and its return forces an election."""
    cfg = harness_with(3)
    leader, term, cut_term, after_leader, after_term = _rejoin(cfg, 10 * ELECTION_S)
    print(f"\nPreVote off: term {term} -> {after_term} (cut-off follower reached {cut_term}), "
          f"leader P{leader} -> P{after_leader}; term churn {after_term - term}")
    assert cut_term > term and after_term > term


def test_leader_in_a_minority_steps_down_within_two_election_timeouts(harness_with):
    """CheckQuorum: a leader cut off from the others (with one follower, a minority of 5) notices within
    two election timeouts and steps down; the majority elects a new leader and goes on."""
    cfg = harness_with(5, **SERVICE_RULES)
    leader = cfg.check_one_leader()
    cfg.one(201, 5, True)
    buddy = (leader + 1) % 5
    others = [i for i in range(5) if i not in (leader, buddy)]
    # the minority {leader, buddy} keeps its link; the majority cannot reach it
    for i in (leader, buddy):
        cfg.disconnect(i)
    t0 = time.monotonic()
    _get = raft_harness_module.get_with_deadline
    _get(cfg.net.enable_many.remote([cfg.ends[leader][buddy], cfg.ends[buddy][leader]], True))
    stepped_down = None
    while time.monotonic() - t0 < 5 * ELECTION_S:
        (_, is_leader), = cfg.states([leader])
        if not is_leader:
            stepped_down = time.monotonic() - t0
            break
        time.sleep(0.01)
    print(f"\nCheckQuorum: the minority leader stepped down {stepped_down} s after the partition "
          f"(election timeout {ELECTION_S} s)")
    assert stepped_down is not None, "the minority leader never stepped down"
    # two election timeouts, plus room for the harness's polling on a busy machine
    assert stepped_down <= 2 * ELECTION_S + 0.2
    new = cfg.check_one_leader()
    assert new in others
    cfg.one(202, 3, True)
    for i in (leader, buddy):
        cfg.connect(i)
    cfg.one(203, 5, True)
