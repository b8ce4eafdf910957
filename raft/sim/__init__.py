"""Deterministic simulation of the Raft core: seeded fault campaigns with invariant checks.

Run N :class:`raft.RaftNode` cores in one process on a virtual network and clock driven by one
``random.Random(seed)``: message loss, duplication, delay and reordering, partitions that form and
heal, crashes that lose whatever was not persisted (including crashes in the middle of carrying out a
Ready), restarts from storage, snapshots taken by a small replicated service, and client proposals
throughout. The Raft invariants are checked incrementally after every step
(:mod:`raft.sim.invariants`), liveness in periodic calm windows (:mod:`raft.sim.cluster`).

From code::

    from raft.sim import SimConfig, run_seed, run_campaign
    result = run_campaign(range(200), SimConfig(ticks=5000))
    assert result.ok, result.failures[0].violation.report()

From the command line: ``python -m raft.sim --help``.

Modules: :mod:`~raft.sim.config` (settings and fault profiles), :mod:`~raft.sim.network` (virtual
network), :mod:`~raft.sim.storage` (stable storage), :mod:`~raft.sim.service` (the replicated counter),
:mod:`~raft.sim.invariants`, :mod:`~raft.sim.reads` (ReadIndex checks),
:mod:`~raft.sim.cluster` (one seeded run), :mod:`~raft.sim.trace`
(events), :mod:`~raft.sim.campaign` (many seeds), :mod:`~raft.sim.hunting` (profiles that expose each
broken rule fast), :mod:`~raft.sim.cli`.
"""

from raft.sim.campaign import CampaignResult, SeedResult, hunt, run_campaign, run_seed
from raft.sim.cluster import SimCluster
from raft.sim.config import FAULTS, Profile, SimConfig
from raft.sim.hunting import HUNTING_PROFILES, HUNTING_SETTINGS
from raft.sim.invariants import INVARIANTS, Invariants, Violation

__all__ = [
    "FAULTS",
    "HUNTING_PROFILES",
    "HUNTING_SETTINGS",
    "INVARIANTS",
    "CampaignResult",
    "Invariants",
    "Profile",
    "SeedResult",
    "SimCluster",
    "SimConfig",
    "Violation",
    "hunt",
    "run_campaign",
    "run_seed",
]
