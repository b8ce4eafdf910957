"""Campaigns: many seeded runs, timed, with a progress bar, stopping at (or collecting) failures.

:func:`run_seed` runs one seed; :func:`run_campaign` runs a range of seeds and reports how many ran,
how much simulated time they covered and how fast; :func:`hunt` looks for the first seed that breaks
an invariant (used to prove that the checks catch the broken rules of :mod:`raft.node`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from raft.node import RaftNode
from raft.sim.cluster import NodeFactory, SimCluster
from raft.sim.config import SimConfig
from raft.sim.invariants import Violation


@dataclass(slots=True)
class SeedResult:
    """The outcome of one seed: ``violation`` is ``None`` when every invariant held."""

    seed: int
    ticks: int
    wall: float
    violation: Violation | None
    stats: dict[str, int]
    fingerprint: str
    profile: str

    @property
    def ok(self) -> bool:
        return self.violation is None


def run_seed(seed: int, config: SimConfig | None = None,
             node_factory: NodeFactory = RaftNode) -> SeedResult:
    """Run one seed to the end (or to its first violation)."""
    config = config or SimConfig()
    start = time.perf_counter()
    cluster = SimCluster(seed, config, node_factory)
    violation = None
    try:
        cluster.run()
    except Violation as v:
        violation = v
    return SeedResult(seed, cluster.now, time.perf_counter() - start, violation, dict(cluster.stats),
                      cluster.fingerprint(), cluster.profile.describe())


@dataclass(slots=True)
class CampaignResult:
    """Totals of a campaign. ``ticks`` is simulated time (ticks summed over seeds)."""

    seeds: int = 0
    ticks: int = 0
    wall: float = 0.0
    failures: list[SeedResult] = field(default_factory=list)
    max_commit_latency: int = 0
    max_catchup_latency: int = 0
    calm_windows: int = 0
    crashes: int = 0
    partitions: int = 0
    proposals: int = 0
    conf_changes: int = 0
    conf_ops: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def seeds_per_s(self) -> float:
        return self.seeds / self.wall if self.wall else 0.0

    @property
    def ticks_per_s(self) -> float:
        return self.ticks / self.wall if self.wall else 0.0

    def add(self, r: SeedResult) -> None:
        self.seeds += 1
        self.ticks += r.ticks
        s = r.stats
        self.max_commit_latency = max(self.max_commit_latency, s["max_commit_latency"])
        self.max_catchup_latency = max(self.max_catchup_latency, s["max_catchup_latency"])
        self.calm_windows += s["calm_windows"]
        self.crashes += s["crashes"]
        self.partitions += s["partitions"]
        self.proposals += s["proposals"]
        self.conf_changes += s["conf_changes"]
        for op in ("add_learner", "promote", "remove"):
            self.conf_ops[op] = self.conf_ops.get(op, 0) + s["conf_" + op]
        if r.violation is not None:
            self.failures.append(r)

    def summary(self) -> str:
        lines = [
            f"seeds run:        {self.seeds}",
            f"simulated time:   {self.ticks:,} ticks",
            f"wall time:        {self.wall:.2f} s",
            f"seeds/s:          {self.seeds_per_s:.2f}",
            f"ticks/s:          {self.ticks_per_s:,.0f}",
            f"faults injected:  {self.crashes} crashes, {self.partitions} partitions, "
            f"{self.proposals} commands proposed",
            f"membership:       {self.conf_changes} changes ("
            + ", ".join(f"{n} {op}" for op, n in self.conf_ops.items()) + ")",
            f"liveness windows: {self.calm_windows} (slowest commit {self.max_commit_latency} ticks, "
            f"slowest catch-up {self.max_catchup_latency} ticks)",
            f"failures:         {len(self.failures)}"
            + (f" (seeds {', '.join(str(f.seed) for f in self.failures[:20])})" if self.failures else ""),
        ]
        return "\n".join(lines)


def run_campaign(
    seeds: Iterable[int],
    config: SimConfig | None = None,
    *,
    progress: bool = False,
    stop_on_failure: bool = True,
    node_factory: NodeFactory = RaftNode,
    on_result: Callable[[SeedResult], None] | None = None,
) -> CampaignResult:
    """Run every seed in ``seeds``; with ``progress`` show a tqdm bar (on stderr)."""
    config = config or SimConfig()
    seeds = list(seeds)
    result = CampaignResult()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(seeds), unit="seed", dynamic_ncols=True)
    start = time.perf_counter()
    try:
        for seed in seeds:
            r = run_seed(seed, config, node_factory)
            result.add(r)
            result.wall = time.perf_counter() - start
            if on_result is not None:
                on_result(r)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(ticks_s=f"{result.ticks_per_s:,.0f}", failures=len(result.failures))
            if r.violation is not None and stop_on_failure:
                break
    finally:
        if bar is not None:
            bar.close()
    result.wall = time.perf_counter() - start
    return result


def hunt(config: SimConfig, start_seed: int = 0, max_seeds: int = 10_000,
         time_budget: float = 10.0,
         node_factory: NodeFactory = RaftNode) -> tuple[SeedResult | None, int, float]:
    """Run seeds from ``start_seed`` until one breaks an invariant or the budget is spent.

    Returns ``(first failing result or None, seeds tried, wall seconds)``.
    """
    start = time.perf_counter()
    tried = 0
    for seed in range(start_seed, start_seed + max_seeds):
        r = run_seed(seed, config, node_factory)
        tried += 1
        if r.violation is not None:
            return r, tried, time.perf_counter() - start
        if time.perf_counter() - start > time_budget:
            break
    return None, tried, time.perf_counter() - start
