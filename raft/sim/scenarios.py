"""Scripted scenarios on the simulator: one fault on an otherwise healthy cluster, measured.

:func:`rejoin` is the liveness check behind PreVote: on a calm network (no loss, no crashes, no
random partitions) a cluster elects a leader and serves clients; one follower is cut off for many
election timeouts and then healed. With ``SimConfig.pre_vote`` the cut-off peer never raises its
term (its pre-votes get no majority) and, once back, neither the leader nor any peer's term changes.
Without it the peer campaigns in ever higher terms and its return forces an election: the *term
churn* :func:`rejoin` reports. Every invariant is checked after every step throughout, as in any run.
"""

from __future__ import annotations

from dataclasses import dataclass

from raft.sim.cluster import SimCluster
from raft.sim.config import Profile, SimConfig

#: A healthy network: no loss, duplication, partitions or crashes; clients keep proposing.
CALM = Profile(drop=0.0, dup=0.0, delay_max=2, long_delay_p=0.0, partition_p=0.0, crash_p=0.0,
               crash_on_propose_p=0.0, propose_p=0.2, burst_max=3, calm_every=10**9)


@dataclass(frozen=True, slots=True)
class RejoinResult:
    """Terms and leaders around one follower's isolation (``victim``) and return."""

    seed: int
    victim: int
    leader_before: int
    term_before: int
    victim_term_isolated: int
    leader_after: int | None
    term_after: int
    elections: int

    @property
    def churn(self) -> int:
        """How many terms the isolation cost the cluster (0 with PreVote)."""
        return self.term_after - self.term_before

    @property
    def quiet(self) -> bool:
        """Neither the term nor the leader changed."""
        return self.churn == 0 and self.leader_after == self.leader_before


def _leader(c: SimCluster) -> int | None:
    best = None
    for i, nd in enumerate(c.nodes):
        if nd is not None and nd.is_leader and (best is None or nd.term > c.nodes[best].term):  # type: ignore[union-attr]
            best = i
    return best


def rejoin(seed: int, config: SimConfig | None = None, isolate_ticks: int | None = None,
           settle_ticks: int | None = None) -> RejoinResult:
    """Isolate one follower of a stable cluster for ``isolate_ticks`` (10 election timeouts), heal,
    and run ``settle_ticks`` (5 election timeouts) more. Raises :class:`~raft.sim.Violation` if an
    invariant breaks."""
    config = (config or SimConfig()).with_(profile=CALM)
    e = config.election_ticks
    isolate_ticks = 10 * e if isolate_ticks is None else isolate_ticks
    settle_ticks = 5 * e if settle_ticks is None else settle_ticks
    c = SimCluster(seed, config)
    c.run(10 * e)
    leader = _leader(c)
    if leader is None:
        raise RuntimeError(f"seed {seed}: no leader after {10 * e} calm ticks")
    before = max(nd.term for nd in c.nodes if nd is not None)
    elections = c.inv.elections
    followers = [i for i in c.ids if i != leader]
    victim = followers[c.rng.randrange(len(followers))]
    c.net.split([1 if i == victim else 0 for i in c.ids])
    c.run(isolate_ticks)
    isolated = c.nodes[victim].term  # type: ignore[union-attr]
    c.net.heal()
    c.run(settle_ticks)
    after = max(nd.term for nd in c.nodes if nd is not None)
    return RejoinResult(seed, victim, leader, before, isolated, _leader(c), after,
                        c.inv.elections - elections)
