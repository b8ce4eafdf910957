"""The short, deterministic form of ``benchmarks/planted_faults.py``: reference tests run with a
deliberately broken rule in every peer must fail, and fail for the right reason.

Each case is one whose catch does not depend on timing: a peer that forgot its vote is caught by
the first restart of Persist1 (3C); a leader that commits an earlier term's entry by counting is
caught by the first election after Persist1's restart of all peers; a deposed leader answering reads
from its own state is caught by OnePartition (4A), whose minority Get must not complete.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import test_kvraft_4a as kv4a
import test_raft_3c as raft3c

pytestmark = [pytest.mark.ray, pytest.mark.timeout(180)]


def _run_planted(make_harness: Callable[..., Any], test: Callable[[Any], None], match: str) -> None:
    """Run ``test`` on harnesses from ``make_harness``; it (or the teardown check) must fail with an
    AssertionError matching ``match``."""
    made: list[Any] = []

    def make(*args: Any, **kwargs: Any) -> Any:
        h = make_harness(*args, **kwargs)
        made.append(h)
        return h

    try:
        with pytest.raises(AssertionError, match=match):
            test(make)
            for h in made:  # what the fixtures' teardown would check
                h.check_applied_logs()
    finally:
        for h in made:
            h.kill()


def _raft(fault: str) -> Callable[..., Any]:
    from raykv.testing.raft_harness import RaftHarness

    def make(n: int, unreliable: bool = False, snapshot: bool = False) -> RaftHarness:
        return RaftHarness(n, unreliable=unreliable, snapshot=snapshot, faults=[fault])

    return make


def _kv(fault: str) -> Callable[..., Any]:
    from raykv.testing.kv_harness import KVHarness

    def make(n: int, unreliable: bool = False, maxraftstate: int = -1) -> KVHarness:
        return KVHarness(n, unreliable=unreliable, maxraftstate=maxraftstate, faults=[fault])

    return make


def test_persist1_catches_a_forgotten_vote(ray_session: None) -> None:
    _run_planted(_raft("forget_vote"), raft3c.test_persist1_3c,
                 r"persistence: peer\d \(incarnation \d+\) restarted in term \d+ having voted for nobody")


def test_persist1_catches_a_commit_by_counting_an_earlier_term(ray_session: None) -> None:
    _run_planted(_raft("commit_old_term"), raft3c.test_persist1_3c,
                 r"commit rule: peer\d .* an entry of term \d+")


def test_one_partition_catches_reads_answered_outside_the_log(ray_session: None) -> None:
    _run_planted(_kv("kv_local_read"), kv4a.test_one_partition_4a, "Get in minority completed")


def test_unknown_fault_names_are_refused() -> None:
    from raykv.testing.kv_harness import kv_faults
    from raykv.testing.raft_harness import core_faults

    with pytest.raises(ValueError, match=r"unknown core fault.*known: .*commit_old_term"):
        core_faults(["commit_old_trem"])
    with pytest.raises(ValueError, match=r"unknown fault.*kv_local_read"):
        kv_faults(["kv_local_reads"])
    assert kv_faults(["forget_vote", "kv_no_dedup"]) == {"forget_vote", "kv_no_dedup"}
