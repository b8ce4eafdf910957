"""The deterministic simulator of the Raft core (raft.sim): campaigns, determinism, broken rules caught.

The big campaign (200 seeds x 5,000 ticks x 5 peers) is the CI safety net for the core; the
broken-rule tests prove that the invariant checks catch each deliberately broken rule of
:class:`raft.node.RaftNode` within a few seconds (each prints the seed, the tick and the wall time).
"""

from __future__ import annotations

import hashlib
import os
import random
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from raft.config import RaftConfig
from raft.node import LEADER, RaftNode
from raft.progress import PROBE
from raft.sim import (
    FAULTS,
    HUNTING_PROFILES,
    HUNTING_SETTINGS,
    INVARIANTS,
    Invariants,
    Profile,
    SimCluster,
    SimConfig,
    Violation,
    hunt,
    run_campaign,
    run_seed,
)
from raft.sim.cli import main
from raft.sim.network import VirtualNetwork
from raft.sim.service import CounterService
from raft.sim.storage import MemoryStorage
from raft.types import AppendEntries, AppendEntriesReply, Entry, HardState, Ready, Snapshot

# --------------------------------------------------------------------------------------------------
# The campaign
# --------------------------------------------------------------------------------------------------


def test_campaign_200_seeds_5000_ticks_5_peers() -> None:
    config = SimConfig(nodes=5, ticks=5000)
    res = run_campaign(range(200), config, stop_on_failure=True)
    print("\n" + res.summary())
    assert res.ok, res.failures[0].violation.report()  # type: ignore[union-attr]
    assert res.seeds == 200
    assert res.ticks == 200 * 5000
    assert res.calm_windows >= 200  # every seed went through at least one liveness window
    assert res.crashes > 0 and res.partitions > 0 and res.proposals > 0


# --------------------------------------------------------------------------------------------------
# Determinism and replay
# --------------------------------------------------------------------------------------------------


def test_same_seed_same_trace_byte_for_byte() -> None:
    config = SimConfig(ticks=1500, record=True)
    texts = []
    prints = []
    for _ in range(2):
        c = SimCluster(11, config)
        c.run()
        texts.append(c.trace.text().encode())
        prints.append(c.fingerprint())
    assert len(texts[0]) > 10_000
    assert texts[0] == texts[1]
    assert prints[0] == prints[1]
    other = SimCluster(12, config)
    other.run()
    assert other.trace.text().encode() != texts[0]
    # Recording the trace must not change the run itself.
    quiet = SimCluster(11, config.with_(record=False))
    quiet.run()
    assert quiet.fingerprint() == prints[0]


def test_same_trace_across_processes_and_hash_seeds() -> None:
    """No dependence on set/dict hash order, ids or anything else that differs between processes."""
    code = ("import hashlib; from raft.sim import SimCluster, SimConfig; "
            "c = SimCluster(11, SimConfig(ticks=800, record=True)); c.run(); "
            "print(hashlib.sha256(c.trace.text().encode()).hexdigest())")
    here = SimCluster(11, SimConfig(ticks=800, record=True))
    here.run()
    want = hashlib.sha256(here.trace.text().encode()).hexdigest()
    root = Path(__file__).resolve().parents[1]
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True,
                             text=True, check=True, timeout=60).stdout.strip()
        assert out == want


def test_failing_seed_replays_identically() -> None:
    config = SimConfig(ticks=3000, faults=frozenset({"apply_past_commit"}))
    first = run_seed(0, config)
    again = run_seed(0, config)
    assert first.violation is not None and again.violation is not None
    assert (first.violation.invariant, first.violation.tick, first.violation.tail) == (
        again.violation.invariant, again.violation.tick, again.violation.tail)
    report = first.violation.report()
    assert "seed 0" in report and "replay: python -m raft.sim --replay 0" in report
    assert "--fault apply_past_commit" in report
    assert report.count("\n  t=") >= 40  # the last 40 events


# --------------------------------------------------------------------------------------------------
# Every broken rule is caught
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_broken_rule_is_caught(fault: str) -> None:
    config = SimConfig(nodes=5, ticks=5000, faults=frozenset({fault}),
                       profile=HUNTING_PROFILES[fault]).with_(**HUNTING_SETTINGS.get(fault, {}))
    found, tried, wall = hunt(config, start_seed=0, time_budget=10.0)
    assert found is not None, f"{fault}: no violation in {tried} seeds ({wall:.1f} s)"
    v = found.violation
    assert v is not None
    print(f"\n{fault}: caught as {v.invariant} at seed {found.seed}, tick {v.tick}, after {tried} "
          f"seed(s), {(tried - 1) * config.ticks + v.tick} simulated ticks, {wall:.2f} s")
    assert v.invariant in INVARIANTS
    # The failure replays from its seed alone.
    again = run_seed(found.seed, config)
    assert again.violation is not None and again.violation.tick == v.tick


class _ProbeCommitBug(RaftNode):
    """The core as it was before the fix in tests/test_raft_core_regressions.py."""

    def _on_append_entries_reply(self, m: AppendEntriesReply) -> None:
        pr = self.progress.get(m.src) if self.role == LEADER else None
        if pr is not None and m.success and pr.state == PROBE:
            pr.match_index = max(pr.match_index, m.match_index)  # hides the progress from below
        RaftNode._on_append_entries_reply(self, m)

    _handlers = {**RaftNode._handlers, AppendEntriesReply: _on_append_entries_reply}


def test_commit_progress_catches_the_probe_commit_bug() -> None:
    found, tried, wall = hunt(SimConfig(ticks=5000), time_budget=10.0, node_factory=_ProbeCommitBug)
    assert found is not None and found.violation is not None, f"not caught in {tried} seeds"
    assert found.violation.invariant == "commit-progress", found.violation.report()
    print(f"\nprobe-commit bug: caught as commit-progress at seed {found.seed}, tick "
          f"{found.violation.tick}, after {tried} seed(s), {wall:.2f} s")


def test_liveness_window_catches_the_probe_commit_bug(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the commit-progress check, the calm windows still notice the stuck commit."""
    monkeypatch.setattr(Invariants, "on_ack", lambda *args: None)
    found, tried, wall = hunt(SimConfig(ticks=5000), time_budget=10.0, node_factory=_ProbeCommitBug)
    assert found is not None and found.violation is not None, f"not caught in {tried} seeds"
    assert found.violation.invariant == "liveness", found.violation.report()
    print(f"\nprobe-commit bug: caught as liveness at seed {found.seed}, tick {found.violation.tick}, "
          f"after {tried} seed(s), {wall:.2f} s")


class _NoElections(RaftNode):
    """A core that stops campaigning after term 3: a cluster that loses its leader then stalls."""

    def _campaign(self) -> None:
        if self.term < 3:
            super()._campaign()
        else:
            self._reset_election_timer()


def test_liveness_window_catches_a_cluster_that_cannot_elect() -> None:
    res = run_seed(1, SimConfig(ticks=5000, profile=Profile(calm_every=300)), node_factory=_NoElections)
    assert res.violation is not None and res.violation.invariant == "liveness", res.violation
    assert "no command committed within" in res.violation.detail


class _Exploding(RaftNode):
    def propose(self, command: object) -> tuple[int, int, bool]:
        if self.log.last_index >= 5:
            raise AssertionError("boom")
        return super().propose(command)


def test_an_exception_in_the_core_is_a_reported_failure() -> None:
    res = run_seed(0, SimConfig(ticks=2000, profile=Profile()), node_factory=_Exploding)
    assert res.violation is not None and res.violation.invariant == "no-exception"
    assert "AssertionError: boom" in res.violation.detail and res.violation.tail
    assert isinstance(res.violation.__cause__, AssertionError)


# --------------------------------------------------------------------------------------------------
# The invariant checker, fed by hand
# --------------------------------------------------------------------------------------------------


def _node(i: int, n: int = 3) -> RaftNode:
    return RaftNode(RaftConfig(peer_id=i, peers=tuple(range(n))), random.Random(i))


def _checker(n: int = 3) -> tuple[Invariants, list[RaftNode | None]]:
    nodes: list[RaftNode | None] = [_node(i, n) for i in range(n)]
    return Invariants(nodes, lambda ev: None), nodes


def _lead(inv: Invariants, i: int, node: RaftNode, term: int) -> None:
    node.term, node.role = term, LEADER
    inv.on_ready(i, node, Ready())


def test_checker_election_safety() -> None:
    inv, nodes = _checker()
    _lead(inv, 0, nodes[0], 2)  # type: ignore[arg-type]
    with pytest.raises(Violation, match="election-safety"):
        _lead(inv, 1, nodes[1], 2)  # type: ignore[arg-type]


def test_checker_leader_append_only() -> None:
    inv, nodes = _checker()
    a = nodes[0]
    assert a is not None
    _lead(inv, 0, a, 1)
    a.log.append(Entry(1, 1, 10))
    a.log.append(Entry(1, 2, 11))
    inv.on_ready(0, a, Ready(entries=(a.log.entry(1), a.log.entry(2))))
    a.log.commit = 0
    a.log.truncate_and_append([Entry(1, 2, 99)])
    with pytest.raises(Violation, match="leader-append-only"):
        inv.on_ready(0, a, Ready(entries=(a.log.entry(2),)))


def test_checker_log_matching() -> None:
    inv, nodes = _checker()
    a, b = nodes[0], nodes[1]
    assert a is not None and b is not None
    a.log.append(Entry(1, 1, "x"))
    inv.on_ready(0, a, Ready(entries=(a.log.entry(1),)))
    b.log.append(Entry(1, 1, "y"))
    with pytest.raises(Violation, match="log-matching"):
        inv.on_ready(1, b, Ready(entries=(b.log.entry(1),)))


def test_checker_log_matching_predecessor() -> None:
    inv, nodes = _checker()
    a, b = nodes[0], nodes[1]
    assert a is not None and b is not None
    for node, i, first_term in ((a, 0, 1), (b, 1, 2)):
        node.log.append(Entry(first_term, 1, f"p{i}"))
        node.log.append(Entry(3, 2, "same"))
    inv.on_ready(0, a, Ready(entries=tuple(a.log.entries)))
    with pytest.raises(Violation, match="log-matching"):
        inv.on_ready(1, b, Ready(entries=tuple(b.log.entries)))


def test_checker_leader_completeness() -> None:
    inv, nodes = _checker()
    a, b = nodes[0], nodes[1]
    assert a is not None and b is not None
    a.term = 1
    a.log.append(Entry(1, 1, "x"))
    a.log.commit = 1
    inv.on_ready(0, a, Ready(entries=(a.log.entry(1),)))
    with pytest.raises(Violation, match="leader-completeness"):
        _lead(inv, 1, b, 2)


def test_checker_state_machine_safety() -> None:
    inv, nodes = _checker()
    a = nodes[0]
    assert a is not None
    a.term = 1
    a.log.append(Entry(1, 1, 5))
    a.log.commit = 1
    inv.on_ready(0, a, Ready(entries=(a.log.entry(1),)))
    with pytest.raises(Violation, match="state-machine-safety"):
        inv.apply(1, CounterService(), [Entry(1, 1, 6)])
    with pytest.raises(Violation, match="state-machine-safety"):
        inv.apply(1, CounterService(), [Entry(1, 1, 5), Entry(1, 2, 6)])  # not committed


def test_checker_applied_state() -> None:
    inv, nodes = _checker()
    a = nodes[0]
    assert a is not None
    a.term = 1
    a.log.append(Entry(1, 1, 5))
    a.log.commit = 1
    inv.on_ready(0, a, Ready(entries=(a.log.entry(1),)))
    inv.apply(0, CounterService(), [Entry(1, 1, 5)])
    with pytest.raises(Violation, match="applied-state"):
        inv.check_service(1, CounterService(applied=1, total=5, digest=12345), "restore")
    with pytest.raises(Violation, match="applied-state"):
        inv.apply(1, CounterService(), [a.log.entry(1), a.log.entry(1)])  # out of order


def test_full_check_agrees_and_catches_tampering() -> None:
    c = SimCluster(5, SimConfig(ticks=600, paranoid=True))
    c.run()  # every step re-checked from scratch: the incremental checks found nothing either
    victim = next(n for n in c.nodes if n is not None and n.log.commit > n.log.snapshot_index)
    i = victim.log.commit
    old = victim.log.entry(i)
    victim.log.entries[i - victim.log.snapshot_index - 1] = Entry(old.term, i, "forged")
    with pytest.raises(Violation):
        c.inv.full_check(c.services)


# --------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------


def test_storage_follows_the_ready_contract() -> None:
    st = MemoryStorage()
    st.persist(Ready(hard_state=HardState(2, 1), entries=tuple(Entry(1, i, i) for i in range(1, 6))))
    st.persist(Ready(entries=(Entry(2, 4, "b"),)))  # overwrite from 4 on
    assert [(e.index, e.term) for e in st.entries] == [(1, 1), (2, 1), (3, 1), (4, 2)]
    st.persist(Ready(snapshot=Snapshot(2, 1, b"s")))  # matching term at 2: keep the suffix
    assert st.snapshot.index == 2 and [e.index for e in st.entries] == [3, 4]
    st.persist(Ready(snapshot=Snapshot(4, 3, b"t")))  # term differs at 4: drop everything
    assert st.snapshot.index == 4 and st.entries == []
    state = st.state()
    assert state.hard_state == HardState(2, 1) and state.snapshot.data == b"t"
    with pytest.raises(AssertionError):
        st.persist(Ready(hard_state=HardState(1, 0)))  # terms never go back


def test_network_is_seeded_and_partitions() -> None:
    def run(seed: int) -> list[tuple[int, int]]:
        net = VirtualNetwork(3, random.Random(seed), lambda ev: None)
        net.configure(drop=0.3, dup=0.3, delay_max=4)
        for k in range(50):
            net.send(AppendEntries(1, 0, 1 + k % 2, 0, 0, (), k))
        return [(t, m.leader_commit) for t in range(1, 10) for m in net.take(t)]

    assert run(1) == run(1) != run(2)
    net = VirtualNetwork(5, random.Random(0), lambda ev: None)
    net.split([0, 0, 1, 1, 2])
    assert net.describe() == "{0,1} | {2,3} | {4}" and net.partitioned
    net.heal()
    net.cut_link(0, 1)
    assert net.describe() == "cut 0->1"


def test_crash_points_and_snapshots_are_exercised() -> None:
    profile = Profile(crash_p=0.01, restart_ticks_max=5, snapshot_every=5, propose_p=0.5)
    c = SimCluster(3, SimConfig(ticks=3000, profile=profile))
    c.run()
    s = c.stats
    assert s["crash_before_persist"] and s["crash_before_send"] and s["crash_mid_send"]
    assert s["crash_before_apply"] and s["restarts"] and s["snapshots"] and s["installs"]


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        SimConfig(faults=frozenset({"nope"}))
    with pytest.raises(ValueError, match="election_ticks"):
        SimConfig(election_ticks=4, heartbeat_ticks=2, calm_delay_max=2)
    bound = SimConfig().liveness_bound(Profile(long_delay_p=0.01, long_delay_max=30))
    assert bound == 30 + 40 * (2 * 10 + 2 * 2) + 2 * 2 + 2 == 996


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def test_cli_campaign(capsys: pytest.CaptureFixture[str]) -> None:
    start = time.perf_counter()
    assert main(["--seeds", "3", "--ticks", "400", "--no-progress"]) == 0
    out = capsys.readouterr().out
    for word in ("seeds run:        3", "simulated time:   1,200 ticks", "wall time", "seeds/s",
                 "ticks/s", "failures:         0"):
        assert word in out, out
    assert time.perf_counter() - start < 10


def test_cli_failure_and_replay(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seeds", "5", "--ticks", "2000", "--fault", "apply_past_commit",
                 "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "violated at tick" in out and "replay: python -m raft.sim --replay 0" in out
    assert main(["--replay", "0", "--ticks", "2000", "--fault", "apply_past_commit",
                 "--tail", "10"]) == 1
    out = capsys.readouterr().out
    assert "last 10 events" in out
    assert main(["--replay", "3", "--ticks", "200", "--trace"]) == 0
    out = capsys.readouterr().out
    assert "t=200" in out and "every invariant held" in out


def test_printed_replay_command_reproduces_the_failure(capsys: pytest.CaptureFixture[str]) -> None:
    r = run_seed(3, SimConfig(ticks=3000, faults=frozenset({"apply_past_commit"}),
                              profile=Profile(drop=0.2)))
    assert r.violation is not None
    argv = shlex.split(r.violation.replay)
    assert argv[:3] == ["python", "-m", "raft.sim"] and "--profile" in argv
    assert main(argv[3:]) == 1
    out = capsys.readouterr().out
    assert f"{r.violation.invariant} violated at tick {r.violation.tick}" in out


def test_cli_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seeds", "0"]) == 2
    assert main(["--hunt"]) == 2
    assert main(["--profile", "{\"no_such_knob\": 1}"]) == 2
    assert main(["--profile", "not json"]) == 2
    with pytest.raises(SystemExit):
        main(["--fault", "no_such_fault"])
    capsys.readouterr()


# --------------------------------------------------------------------------------------------------
# The services' rules: PreVote, CheckQuorum, the leader's no-op and ReadIndex reads
# --------------------------------------------------------------------------------------------------

SERVICE_RULES = {"pre_vote": True, "check_quorum": True, "leader_noop": True, "reads": True}


def test_campaign_with_pre_vote_check_quorum_and_reads() -> None:
    """Every invariant after every step (including the two ReadIndex checks) with the rules the
    services run with, over seeds that each draw their own fault profile."""
    config = SimConfig(nodes=5, ticks=3000, **SERVICE_RULES)
    answered = dropped = 0

    def count(r: object) -> None:
        nonlocal answered, dropped
        answered += r.stats["reads_answered"]  # type: ignore[attr-defined]
        dropped += r.stats["reads_dropped"]  # type: ignore[attr-defined]

    res = run_campaign(range(60), config, stop_on_failure=True, on_result=count)
    assert res.ok, res.failures[0].violation.report()  # type: ignore[union-attr]
    assert res.calm_windows > 60 and res.crashes > 100 and res.partitions > 50
    assert answered > 5000 and dropped > 0
    print(f"\nservice rules: {res.seeds} seeds, {res.ticks:,} ticks, {answered} reads answered, "
          f"{dropped} dropped, {res.wall:.1f} s")


def test_campaign_with_each_rule_alone() -> None:
    for rule in ("pre_vote", "check_quorum", "reads"):
        res = run_campaign(range(15), SimConfig(ticks=2000, **{rule: True}), stop_on_failure=True)
        assert res.ok, (rule, res.failures[0].violation.report())  # type: ignore[union-attr]


def test_reads_are_deterministic() -> None:
    config = SimConfig(ticks=2000, **SERVICE_RULES)
    a, b = run_seed(7, config), run_seed(7, config)
    assert a.ok and a.fingerprint == b.fingerprint and a.stats == b.stats


def test_rejoin_with_pre_vote_keeps_the_term_and_the_leader() -> None:
    """Liveness of PreVote: a follower isolated for 10 election timeouts and healed raises no term,
    with or without CheckQuorum; without PreVote (the reference configuration) it always does."""
    from raft.sim.scenarios import rejoin

    for rules in ({"pre_vote": True}, {"pre_vote": True, "check_quorum": True}):
        for seed in range(25):
            r = rejoin(seed, SimConfig(**rules))
            assert r.quiet and r.victim_term_isolated == r.term_before, (rules, r)
    churn = [rejoin(seed, SimConfig()).churn for seed in range(25)]
    assert min(churn) > 0, churn


class _NeverDone(RaftNode):
    def has_ready(self) -> bool:
        return True


def test_a_core_whose_work_never_ends_is_reported_not_hung() -> None:
    res = run_seed(0, SimConfig(ticks=100, profile=Profile()), node_factory=_NeverDone)
    assert res.violation is not None and res.violation.invariant == "no-exception"
    assert "has_ready() never clears" in res.violation.detail
