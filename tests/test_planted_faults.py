"""The short, deterministic form of ``benchmarks/planted_faults.py``: reference tests run with a
deliberately broken rule in every peer must fail, and fail for the right reason.

Each case is one whose catch does not depend on timing: a peer that forgot its vote is caught by
the first restart of Persist1 (3C); a leader that commits an earlier term's entry by counting is
caught by the first election after Persist1's restart of all peers; a deposed leader answering reads
from its own state is caught by OnePartition (4A), whose minority Get must not complete; a controller
that deals shards out afresh is caught by MinimalAgain's first Join after two (a shard moves between
two groups that stay); a controller whose replicas break rebalancing ties each its own way is caught
by the ledger in Multi (replicas answer the same Query with different configurations: the chance
that they never diverge in that test is below one in a million); a shard group that serves none of
its shards while one cannot arrive is caught by Challenge2Unaffected (the group that gains the shards
of a dead group stops serving its own).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import test_kvraft_4a as kv4a
import test_raft_3c as raft3c
import test_shardctrler_5a as ctrl5a
import test_shardkv_5 as skv5

pytestmark = [pytest.mark.ray, pytest.mark.timeout(180)]


def _run_planted(make_harness: Callable[..., Any], test: Callable[[Any], None], match: str,
                 error: type[BaseException] | tuple[type[BaseException], ...] = AssertionError) -> None:
    """Run ``test`` on harnesses from ``make_harness``; it (or the teardown check) must fail with an
    ``error`` (default AssertionError) matching ``match``."""
    made: list[Any] = []

    def make(*args: Any, **kwargs: Any) -> Any:
        h = make_harness(*args, **kwargs)
        made.append(h)
        return h

    try:
        with pytest.raises(error, match=match):
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


def _ctrler(fault: str) -> Callable[..., Any]:
    from raykv.testing.ctrler_harness import CtrlerHarness

    def make(n: int = 3, unreliable: bool = False) -> CtrlerHarness:
        return CtrlerHarness(n, unreliable, faults=[fault])

    return make


def _shardkv(fault: str) -> Callable[..., Any]:
    from raykv.testing.shardkv_harness import ShardKVHarness

    def make(n: int = 3, unreliable: bool = False, maxraftstate: int = -1) -> ShardKVHarness:
        return ShardKVHarness(n, unreliable, maxraftstate, faults=[fault])

    return make


def test_persist1_catches_a_forgotten_vote(ray_session: None) -> None:
    _run_planted(_raft("forget_vote"), raft3c.test_persist1_3c,
                 r"persistence: peer\d \(incarnation \d+\) restarted in term \d+ having voted for nobody")


def test_persist1_catches_a_commit_by_counting_an_earlier_term(ray_session: None) -> None:
    _run_planted(_raft("commit_old_term"), raft3c.test_persist1_3c,
                 r"commit rule: peer\d .* an entry of term \d+")


def test_one_partition_catches_reads_answered_outside_the_log(ray_session: None) -> None:
    _run_planted(_kv("kv_local_read"), kv4a.test_one_partition_4a, "Get in minority completed")


def test_minimal_again_catches_a_controller_that_deals_shards_out_afresh(ray_session: None) -> None:
    _run_planted(_ctrler("ctrl_not_minimal"), ctrl5a.test_minimal_again,
                 r"shard \d+ changed from \d+ to \d+")


def test_multi_catches_replicas_that_rebalance_each_their_own_way(ray_session: None) -> None:
    _run_planted(_ctrler("ctrl_nondeterministic"), ctrl5a.test_multi,
                 r"diverged state: ctrler-\d \(incarnation \d+\) applied index \d+")


def test_challenge2_unaffected_catches_a_group_that_waits_for_every_shard(ray_session: None) -> None:
    from shardkv.errors import ShardKVTimeoutError

    _run_planted(_shardkv("skv_wait_all"), skv5.test_challenge2_unaffected,
                 r"\('\d'\) \(shard \d\) did not complete", ShardKVTimeoutError)


def test_unknown_fault_names_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from raykv.testing.ctrler_harness import ctrler_faults
    from raykv.testing.kv_harness import kv_faults
    from raykv.testing.raft_harness import core_faults
    from raykv.testing.shardkv_harness import shardkv_faults

    with pytest.raises(ValueError, match=r"unknown planted fault.*known: .*commit_old_term"):
        core_faults(["commit_old_trem"])
    with pytest.raises(ValueError, match=r"unknown planted fault.*kv_local_read"):
        kv_faults(["kv_local_reads"])
    with pytest.raises(ValueError, match=r"unknown planted fault.*\['skv_no_gc'\]"):
        ctrler_faults(["skv_no_gc"])  # a sharded-KV fault, given to the controller's harness
    assert kv_faults(["forget_vote", "kv_no_dedup"]) == {"forget_vote", "kv_no_dedup"}
    assert shardkv_faults(["forget_vote", "ctrl_unbalanced", "skv_wait_all"]) == {
        "forget_vote", "ctrl_unbalanced", "skv_wait_all"}
    # from the environment: each harness takes what concerns it; a name no harness knows is refused
    monkeypatch.setenv("RAYKV_PLANT", "forget_vote,kv_no_dedup,ctrl_unbalanced,skv_no_gc")
    assert core_faults(None) == {"forget_vote"}
    assert kv_faults(None) == {"forget_vote", "kv_no_dedup"}
    assert ctrler_faults(None) == {"forget_vote", "ctrl_unbalanced"}
    assert shardkv_faults(None) == {"forget_vote", "ctrl_unbalanced", "skv_no_gc"}
    monkeypatch.setenv("RAYKV_PLANT", "skv_no_gcc")
    for harness_faults in (core_faults, kv_faults, ctrler_faults, shardkv_faults):
        with pytest.raises(ValueError, match=r"RAYKV_PLANT: unknown planted fault.*skv_no_gcc"):
            harness_faults(None)


def test_planted_state_machines_break_their_rule_and_only_it() -> None:
    """The broken rebalancers, without Ray: each breaks the rule it is named for."""
    from raykv.testing.ctrler_harness import ctrler_state_machine
    from raykv.testing.faults import CTRL_FAULTS
    from raykv.testing.shardkv_harness import shardkv_state_machine
    from shardctrler.ops import JOIN
    from shardctrler.statemachine import CtrlerStateMachine

    def joins(sm: CtrlerStateMachine) -> list[tuple[int, ...]]:
        for seq, gids in enumerate(([1, 2], [3]), start=1):
            sm.apply(seq, ((JOIN, {g: (f"s{g}",) for g in gids}, 7, seq),))
        return [c.shards for c in sm.configs]

    correct = joins(CtrlerStateMachine())
    assert set(CTRL_FAULTS) == {"ctrl_not_minimal", "ctrl_unbalanced", "ctrl_nondeterministic"}
    not_minimal = joins(ctrler_state_machine(["ctrl_not_minimal"])())
    assert not_minimal[2] != correct[2] and sorted(set(not_minimal[2])) == [1, 2, 3]
    assert any(new not in (3, old) for old, new in zip(not_minimal[1], not_minimal[2], strict=True))
    unbalanced = joins(ctrler_state_machine(["ctrl_unbalanced"])())
    assert unbalanced[2] == (1,) * 10
    outcomes = {tuple(joins(ctrler_state_machine(["ctrl_nondeterministic"])())) for _ in range(40)}
    assert len(outcomes) > 1  # replicas disagree
    for configs in outcomes:  # ... though each is balanced
        counts = [configs[2].count(g) for g in (1, 2, 3)]
        assert max(counts) - min(counts) <= 1
    with pytest.raises(ValueError, match="one rebalancing fault at a time"):
        ctrler_state_machine(["ctrl_unbalanced", "ctrl_not_minimal"])
    combined = shardkv_state_machine(["skv_serve_arriving", "skv_no_dedup_move"])
    assert {c.__name__ for c in combined.__mro__} >= {"ServeArrivingStateMachine", "NoDedupMoveStateMachine"}
