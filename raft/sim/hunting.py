"""Fault profiles tuned to expose each deliberately broken rule of the core quickly.

The random profiles of :meth:`raft.sim.config.Profile.draw` catch every broken rule eventually; these
pinned profiles make the rare interleavings frequent, so that the tests can prove within seconds that
the invariant checks catch each broken rule:

- ``commit_old_term`` needs the Figure 8 interleaving of the Raft paper: an entry that reached only a
  minority, a leader of a later term that wrote a conflicting entry nobody else got, then a leader
  that commits the old entry by counting replicas before it has an entry of its own term, then the
  conflicting peer winning an election. Leaders that crash halfway through sending each new command,
  restart late, and rare single-command proposals make that common.
- ``forget_vote`` needs a voter to crash and restart between two RequestVotes of the same term: a
  crash storm with very short downtimes.
- ``vote_without_log_check`` and ``apply_past_commit`` are caught by any lively profile.
- ``read_without_quorum`` (a leader answers reads without a heartbeat round) needs a leader cut off
  from the majority while clients still reach it; ``read_before_term_commit`` (a new leader answers
  at its commit index before an entry of its term commits) needs leader changes while an earlier
  leader's entries are committed but not yet known to be. Both need ``SimConfig.reads``, which
  :data:`HUNTING_SETTINGS` switches on (with the services' rules: PreVote, CheckQuorum, no-op).
- ``two_changes_in_flight`` needs membership changes proposed faster than they commit (an operator
  asking every fifth tick), with the usual partitions and crashes: two configurations that differ by
  two voters are then in use at once, and their majorities need not overlap.
"""

from __future__ import annotations

from raft.sim.config import Profile

HUNTING_PROFILES: dict[str, Profile] = {
    "commit_old_term": Profile(drop=0.0, dup=0.0, delay_max=2, long_delay_p=0.0, partition_p=0.0,
                               crash_p=0.0, restart_ticks_max=60, crash_on_propose_p=1.0,
                               propose_p=0.05, burst_max=1),
    "forget_vote": Profile(drop=0.05, delay_max=3, partition_p=0.01, crash_p=0.05,
                           restart_ticks_max=2, propose_p=0.05),
    "vote_without_log_check": Profile(),
    "apply_past_commit": Profile(),
    "read_without_quorum": Profile(drop=0.02, delay_max=2, partition_p=0.02, partition_ticks_max=60,
                                   crash_p=0.0, propose_p=0.5, propose_all=True),
    "read_before_term_commit": Profile(drop=0.05, delay_max=3, partition_p=0.02, partition_ticks_max=40,
                                       crash_p=0.003, restart_ticks_max=10, propose_p=0.5,
                                       propose_all=True),
    "two_changes_in_flight": Profile(member_p=0.2),
}

_SERVICE_RULES = {"pre_vote": True, "check_quorum": True, "leader_noop": True, "reads": True}

#: SimConfig fields a broken rule needs switched on to be observable at all (``SimConfig.with_``).
HUNTING_SETTINGS: dict[str, dict[str, bool]] = {
    "read_without_quorum": _SERVICE_RULES,
    "read_before_term_commit": _SERVICE_RULES,
}
