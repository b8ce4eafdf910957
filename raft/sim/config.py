"""What one simulated run looks like: the cluster's fixed settings and the per-seed fault profile.

A :class:`SimConfig` is chosen by the caller (tests, the command line, a notebook). A
:class:`Profile` holds the fault rates of one run; unless the config pins one, it is drawn from the
run's seeded generator, so that a campaign over many seeds covers calm networks, lossy ones, crash
storms and partition storms alike, and a seed alone is enough to replay a run.

Invariants (checked by :meth:`SimConfig.validate`, called on construction):

- ``nodes >= 1``, ``ticks >= 1``, ``1 <= voters <= nodes`` (when set);
- the calm network delivers a heartbeat well inside an election timeout:
  ``heartbeat_ticks + calm_delay_max < election_ticks``, otherwise no leader is ever stable and the
  liveness bound means nothing;
- every fault name is one of :data:`FAULTS`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

#: The deliberately broken rules of :class:`raft.node.RaftNode` that tests can switch on.
FAULTS: frozenset[str] = frozenset(
    {"commit_old_term", "vote_without_log_check", "forget_vote", "apply_past_commit",
     "read_without_quorum", "read_before_term_commit", "two_changes_in_flight"}
)


@dataclass(frozen=True, slots=True)
class Profile:
    """Fault rates of one run. Probabilities are per tick unless stated otherwise.

    - ``drop`` / ``dup``: probability that a sent message is lost / delivered twice;
    - ``delay_max``: a message normally arrives 1..``delay_max`` ticks after it is sent;
    - ``long_delay_p`` / ``long_delay_max``: probability that a message is instead held back for
      1..``long_delay_max`` ticks (long reordering);
    - ``partition_p``: probability that a partition forms (when none is in force); it heals after
      1..``partition_ticks_max`` ticks;
    - ``crash_p``: probability, per live peer, that it crashes; it restarts after
      1..``restart_ticks_max`` ticks. Half the crashes strike in the middle of carrying out a Ready
      (before persisting, between persisting and sending, halfway through sending, or before applying);
    - ``crash_on_propose_p``: probability that a leader that just accepted commands from a client
      crashes halfway through sending them (so that they reach only some followers, if any);
    - ``propose_p``: probability that clients propose (1..``burst_max`` commands) to a peer that
      believes it leads (to every such peer if ``propose_all``: stale leaders get as many commands as
      the real one, which makes conflicting uncommitted entries common);
    - ``member_p``: probability that an operator asks a peer that believes it leads for a membership
      change (add a non-member as a learner, promote a learner, remove a learner or a voter, the
      leader itself included), refused by the core when it must be (:mod:`raft.membership`);
    - ``snapshot_every``: the service snapshots after that many applied entries;
    - ``calm_every``: ticks of chaos between two liveness windows (see :mod:`raft.sim.cluster`).
    """

    drop: float = 0.05
    dup: float = 0.02
    delay_max: int = 2
    long_delay_p: float = 0.01
    long_delay_max: int = 30
    partition_p: float = 0.004
    partition_ticks_max: int = 100
    crash_p: float = 0.0005
    restart_ticks_max: int = 40
    crash_on_propose_p: float = 0.0
    propose_p: float = 0.2
    burst_max: int = 3
    propose_all: bool = False
    snapshot_every: int = 20
    calm_every: int = 1000
    member_p: float = 0.0

    @staticmethod
    def draw(rng: random.Random, election_ticks: int) -> Profile:
        """A random profile: each knob is picked from a small menu, from harmless to brutal."""
        c = rng.choice
        return Profile(
            drop=c((0.0, 0.01, 0.05, 0.1, 0.25)),
            dup=c((0.0, 0.0, 0.02, 0.1)),
            delay_max=c((1, 2, 3, 5)),
            long_delay_p=c((0.0, 0.005, 0.02, 0.05)),
            long_delay_max=c((2, 3)) * election_ticks,
            partition_p=c((0.0, 0.002, 0.005, 0.02)),
            partition_ticks_max=c((2, 5, 15)) * election_ticks,
            crash_p=c((0.0, 0.0002, 0.001, 0.003, 0.02)),
            restart_ticks_max=c((2, 10, 60)),
            crash_on_propose_p=c((0.0, 0.0, 0.1, 0.5)),
            propose_p=c((0.02, 0.05, 0.2, 0.5, 1.0)),
            burst_max=c((1, 3, 10)),
            propose_all=c((False, False, True)),
            snapshot_every=c((3, 10, 50, 200)),
            calm_every=c((300, 700, 1500)),
            member_p=c((0.0, 0.005, 0.02, 0.1)),
        )

    def describe(self) -> str:
        return (f"drop={self.drop} dup={self.dup} delay=1..{self.delay_max} "
                f"long={self.long_delay_p}x{self.long_delay_max} "
                f"partition={self.partition_p}x{self.partition_ticks_max} "
                f"crash={self.crash_p}/restart<={self.restart_ticks_max} "
                f"crash_on_propose={self.crash_on_propose_p} "
                f"propose={self.propose_p}x{self.burst_max}{' to all leaders' if self.propose_all else ''} "
                f"snapshot_every={self.snapshot_every} "
                f"calm_every={self.calm_every}"
                + (f" member={self.member_p}" if self.member_p else ""))


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Settings shared by every seed of a campaign.

    ``nodes`` peers exist; the first ``voters`` of them (all when ``None``) make up the bootstrap
    configuration and the others start as joining peers with empty logs (``RaftConfig.join``), to be
    added by membership changes (``Profile.member_p``).
    ``profile`` pins the fault rates; ``None`` draws them per seed (:meth:`Profile.draw`).
    ``tail`` is how many trailing events a failure report shows; ``record`` keeps the whole trace
    (for determinism checks and replays; costs memory). ``paranoid`` re-verifies every invariant from
    scratch (whole logs, O(nodes x log) per step) after every step, to cross-check the incremental
    checks; use it only for short runs.

    ``pre_vote``, ``check_quorum`` and ``leader_noop`` switch those rules on in every core (see
    :class:`raft.RaftConfig`). ``reads`` makes the clients also ask peers that believe they lead for
    ReadIndex reads (with the same probability as proposals), checked by :mod:`raft.sim.reads`.
    """

    nodes: int = 5
    voters: int | None = None
    ticks: int = 5000
    election_ticks: int = 10
    heartbeat_ticks: int = 2
    max_entries_per_append: int = 16
    max_inflight_appends: int = 4
    calm_delay_max: int = 2
    liveness_rounds: int = 40
    faults: frozenset[str] = field(default_factory=frozenset)
    profile: Profile | None = None
    tail: int = 40
    record: bool = False
    paranoid: bool = False
    pre_vote: bool = False
    check_quorum: bool = False
    leader_noop: bool = False
    reads: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "faults", frozenset(self.faults))
        self.validate()

    def validate(self) -> None:
        if self.nodes < 1:
            raise ValueError(f"SimConfig.nodes must be >= 1, got {self.nodes}")
        if self.voters is not None and not 1 <= self.voters <= self.nodes:
            raise ValueError(f"SimConfig.voters must be between 1 and nodes ({self.nodes}), "
                             f"got {self.voters}")
        if self.ticks < 1:
            raise ValueError(f"SimConfig.ticks must be >= 1, got {self.ticks}")
        if self.calm_delay_max < 1:
            raise ValueError(f"SimConfig.calm_delay_max must be >= 1, got {self.calm_delay_max}")
        if self.heartbeat_ticks + self.calm_delay_max >= self.election_ticks:
            raise ValueError(
                f"heartbeat_ticks ({self.heartbeat_ticks}) + calm_delay_max ({self.calm_delay_max}) "
                f"must be < election_ticks ({self.election_ticks}): followers would time out on a "
                "healthy leader"
            )
        unknown = self.faults - FAULTS
        if unknown:
            raise ValueError(f"unknown fault(s) {sorted(unknown)}; known: {sorted(FAULTS)}")

    @property
    def initial_voters(self) -> int:
        return self.nodes if self.voters is None else self.voters

    def with_(self, **changes: object) -> SimConfig:
        return replace(self, **changes)  # type: ignore[arg-type]

    def max_delay(self, profile: Profile) -> int:
        """The longest a message sent under ``profile`` can stay in flight."""
        return max(profile.delay_max, profile.long_delay_max if profile.long_delay_p else 0)

    def liveness_bound(self, profile: Profile) -> int:
        """Ticks within which a command must commit once the network is healed and calm.

        ``D + R * (2E + 2d) + 2d + h`` where ``D`` is the longest delay a message sent before the
        calm could still have (those messages may still disturb the cluster), ``E`` is
        ``election_ticks`` (timeouts are drawn from ``[E, 2E)``), ``d`` the calm network's longest
        delay and ``h`` ``heartbeat_ticks``. One election round lasts at most ``2E + 2d``: the longest
        timeout, a RequestVote and its reply. ``R`` (``liveness_rounds``, 40) rounds are allowed
        because Raft's liveness is probabilistic: a round fails on a split vote, when a peer with a
        stale log times out first, or when a peer that comes back with a higher term forces another
        election; each round is a fresh random draw, so the chance that ``R`` rounds in a row fail
        shrinks geometrically. Measured over 100 seeds with 5 peers (255 liveness windows that needed
        an election): a round fails with probability 0.46, so 40 failed rounds in a row happen with
        probability about 3e-14 per window. Then the leader needs one round trip plus at most one
        heartbeat interval to replicate and commit the command. With the defaults (``E = 10``,
        ``d = 2``, ``h = 2``, ``D <= 30``) the bound is at most 996 ticks; the slowest window
        observed in the 200-seed campaign took under 200.
        """
        e, d, h = self.election_ticks, self.calm_delay_max, self.heartbeat_ticks
        return self.max_delay(profile) + self.liveness_rounds * (2 * e + 2 * d) + 2 * d + h
