"""The simulator with membership changes: campaigns where peers join, get promoted and are removed
while the network partitions and peers crash, and proof that the membership checks catch broken rules.

The planted fault ``two_changes_in_flight`` (a leader accepting a change while the previous one is
uncommitted) is in :data:`raft.sim.FAULTS`, so ``tests/test_sim.py::test_broken_rule_is_caught`` proves
that the invariants catch it; here the same for rules that only tests break (subclasses of the core).
"""

from __future__ import annotations

import shlex

import pytest

from raft.membership import ConfChange, Membership
from raft.node import RaftNode
from raft.sim import FAULTS, HUNTING_PROFILES, Profile, SimCluster, SimConfig, Violation, hunt, run_campaign
from raft.sim.cli import main


def test_membership_campaign_100_seeds_with_joining_peers() -> None:
    """3 bootstrap voters, 2 peers that join later; each seed draws its profile (3 in 4 change
    membership, from every 200 ticks to every 10)."""
    config = SimConfig(nodes=5, voters=3, ticks=4000)
    res = run_campaign(range(100), config)
    print("\n" + res.summary())
    assert res.ok, res.failures[0].violation.report()  # type: ignore[union-attr]
    assert res.conf_changes > 1000
    assert all(res.conf_ops[op] > 50 for op in ("add_learner", "promote", "remove")), res.conf_ops
    assert res.crashes > 0 and res.partitions > 0 and res.calm_windows >= 100


def test_membership_campaign_with_the_services_rules() -> None:
    """The same with PreVote, CheckQuorum, the leader's no-op and ReadIndex reads switched on: quorums
    of pre-votes, of CheckQuorum and of read rounds come from the voters of the configuration too."""
    config = SimConfig(nodes=5, voters=3, ticks=3000, pre_vote=True, check_quorum=True,
                       leader_noop=True, reads=True)
    reads = 0

    def count(r: object) -> None:
        nonlocal reads
        reads += r.stats["reads_answered"]  # type: ignore[attr-defined]

    res = run_campaign(range(60), config, on_result=count)
    print("\n" + res.summary() + f"\nreads answered:   {reads}")
    assert res.ok, res.failures[0].violation.report()  # type: ignore[union-attr]
    assert res.conf_ops["promote"] > 50 and res.conf_ops["remove"] > 50 and reads > 1000


def test_a_joined_peer_leads_and_a_bootstrap_peer_is_gone() -> None:
    """Over one busy seed, peers that started empty become voters and lead, and some bootstrap voters
    end up removed, with every invariant checked after every step (paranoid: from scratch too)."""
    c = SimCluster(4, SimConfig(nodes=5, voters=3, ticks=3000, paranoid=True,
                                profile=Profile(member_p=0.05, crash_p=0.001, partition_p=0.004)))
    c.run()
    assert c.stats["conf_promote"] > 0 and c.stats["conf_remove"] > 0
    assert any(leader >= 3 for leader in c.inv.leader_of.values()), "no joined peer ever led"
    assert c.inv.committed_config != Membership(frozenset({0, 1, 2}))


def test_two_changes_in_flight_is_a_planted_fault_with_a_hunting_profile() -> None:
    assert "two_changes_in_flight" in FAULTS
    config = SimConfig(nodes=5, voters=3, ticks=5000, faults=frozenset({"two_changes_in_flight"}),
                       profile=HUNTING_PROFILES["two_changes_in_flight"])
    found, tried, wall = hunt(config, time_budget=10.0)
    assert found is not None and found.violation is not None, f"not caught in {tried} seeds"
    v = found.violation
    # Caught by its consequences (two leaders of one term, a committed entry lost), not by a rule check.
    assert v.invariant in {"election-safety", "leader-completeness", "state-machine-safety",
                           "log-matching", "applied-state"}, v.report()
    print(f"\ntwo_changes_in_flight (2 joining peers): caught as {v.invariant} at seed {found.seed}, "
          f"tick {v.tick}, after {tried} seed(s), {wall:.2f} s")


class _NonVoterCampaigns(RaftNode):
    """Broken: learners, joining and removed peers campaign like voters."""

    def _may_campaign(self) -> bool:
        return True


class _RemovedPeerDisrupts(RaftNode):
    """Broken: RequestVote and replies from peers outside the configuration are never ignored."""

    def _ignores(self, msg: object) -> bool:
        return False


class _LearnersCount(RaftNode):
    """Broken: learners' (and just-removed peers') acknowledgements fill the voters' majority."""

    def _maybe_commit(self) -> None:
        cfg = self.log.configs.current
        got = sorted((pr.match_index for p, pr in self.progress.items() if p != self.id or
                      cfg.is_voter(p)), reverse=True)
        n = got[cfg.quorum - 1] if len(got) >= cfg.quorum else 0
        if n > self.log.commit and self.log.term_at(n) == self.term:
            old = self.log.commit
            self.log.commit = n
            self._commit_changed = True
            self._after_commit(old)


@pytest.mark.parametrize(("factory", "caught_as"), [
    (_NonVoterCampaigns, {"membership"}),
    (_RemovedPeerDisrupts, {"removed-cannot-disrupt"}),
    (_LearnersCount, {"leader-completeness", "state-machine-safety", "applied-state"}),
])
def test_broken_membership_rule_is_caught(factory: type[RaftNode], caught_as: set[str]) -> None:
    config = SimConfig(nodes=5, voters=3, ticks=5000, profile=Profile(member_p=0.05))
    found, tried, wall = hunt(config, time_budget=10.0, node_factory=factory)
    assert found is not None and found.violation is not None, f"not caught in {tried} seeds"
    assert found.violation.invariant in caught_as, found.violation.report()
    print(f"\n{factory.__name__}: caught as {found.violation.invariant} at seed {found.seed}, tick "
          f"{found.violation.tick}, after {tried} seed(s), {wall:.2f} s")


def test_full_check_catches_a_configuration_that_disagrees_with_the_log() -> None:
    c = SimCluster(2, SimConfig(nodes=5, voters=3, ticks=800, profile=Profile(member_p=0.1)))
    c.run()
    node = next(n for n in c.nodes if n is not None and n.log.configs.changes)
    node.log.configs.changes.pop()  # forget the last configuration entry
    with pytest.raises(Violation, match="membership"):
        c.inv.full_check(c.services)


def test_configuration_entries_are_traced_and_replay_carries_voters() -> None:
    c = SimCluster(1, SimConfig(nodes=5, voters=3, ticks=1500, record=True,
                                faults=frozenset({"apply_past_commit"}), profile=Profile(member_p=0.1)))
    with pytest.raises(Violation) as e:
        c.run()
    assert "--voters 3" in e.value.replay
    argv = shlex.split(e.value.replay)
    assert main(argv[3:]) == 1
    text = c.trace.text()
    assert " member " in text and ("add_learner P3" in text or "add_learner P4" in text)
    assert any(isinstance(en.command, ConfChange) for en in c.inv.committed)


def test_cli_voters(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seeds", "2", "--ticks", "500", "--voters", "3", "--no-progress",
                 "--profile", '{"member_p": 0.1}']) == 0
    out = capsys.readouterr().out
    assert "membership:" in out and "failures:         0" in out
    assert main(["--voters", "6"]) == 2
    assert "voters must be between 1 and nodes" in capsys.readouterr().err
