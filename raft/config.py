"""Configuration of one Raft peer, validated up front."""

from __future__ import annotations

from dataclasses import dataclass

from raft.types import PeerId


@dataclass(frozen=True, slots=True)
class RaftConfig:
    """How one peer behaves. Time is counted in ticks; the driver decides how long a tick is.

    Invariants (checked by :meth:`validate`, called on construction):

    - ``peers`` are distinct, non-negative integers: the group's *bootstrap* configuration (every one
      of them votes), in force until a membership change (:mod:`raft.membership`) replaces it;
    - ``peer_id`` is one of ``peers``, unless ``join`` is set: then this peer joins an existing group,
      ``peers`` is still that group's bootstrap configuration (so that the log prefix before the first
      configuration entry means the same to it as to everyone) and ``peer_id`` is not in it; the peer
      takes part only once a leader adds it (as a learner) and never campaigns before it is a voter;
    - ``heartbeat_ticks >= 1`` and ``election_ticks > heartbeat_ticks`` (a follower must hear several
      heartbeats before it gives up on its leader). The actual election timeout of each election is
      drawn uniformly from ``[election_ticks, 2 * election_ticks)``;
    - ``max_entries_per_append >= 1`` and ``max_inflight_appends >= 1``: at most that many entries in
      one AppendEntries, and at most that many AppendEntries with entries unacknowledged per follower;
    - ``pre_vote``, ``check_quorum`` and ``leader_noop`` are bools.

    Switches, all off by default (the reference 6.5840 configuration; the services turn them on):

    - ``pre_vote`` (thesis §9.6): a peer whose election timer fires first asks for pre-votes for its
      term + 1 without changing its term, and starts a real election only with a majority of them;
      a peer grants a pre-vote only if it has not heard from a leader for an election timeout and
      the candidate's log is up to date. A peer cut off from the others therefore never raises its
      term, and does not depose a healthy leader when it comes back (see :mod:`raft.election`);
    - ``check_quorum`` (thesis §6.2): a leader that has not heard from a majority for
      ``election_ticks`` steps down, and a peer that has heard from a leader within
      ``election_ticks`` ignores vote requests of higher terms (the leader's lease);
    - ``leader_noop``: a new leader appends an empty entry (command ``None``) of its term at once, so
      it can commit earlier terms' entries and serve ReadIndex reads without waiting for a client's
      command. Off in the reference tests, which expect the first command at index 1.
    """

    peer_id: PeerId
    peers: tuple[PeerId, ...]
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    max_entries_per_append: int = 512
    max_inflight_appends: int = 16
    pre_vote: bool = False
    check_quorum: bool = False
    leader_noop: bool = False
    join: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "peers", tuple(self.peers))
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first field that is wrong and why."""
        for name in ("election_ticks", "heartbeat_ticks", "max_entries_per_append",
                     "max_inflight_appends", "peer_id"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"RaftConfig.{name} must be an int, got {value!r}")
        for name in ("pre_vote", "check_quorum", "leader_noop"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ValueError(f"RaftConfig.{name} must be True or False, got {value!r}")
        if not self.peers:
            raise ValueError("RaftConfig.peers must list at least one peer id (including this one)")
        for p in self.peers:
            if not isinstance(p, int) or isinstance(p, bool) or p < 0:
                raise ValueError(f"RaftConfig.peers must hold non-negative ints, got {p!r}")
        if len(set(self.peers)) != len(self.peers):
            raise ValueError(f"RaftConfig.peers must be distinct, got {list(self.peers)}")
        if self.join and self.peer_id in self.peers:
            raise ValueError(
                f"RaftConfig.peer_id {self.peer_id} is in peers {list(self.peers)} but join is set: a "
                "joining peer is new to the group (peers is the group's bootstrap configuration)"
            )
        if not self.join and self.peer_id not in self.peers:
            raise ValueError(
                f"RaftConfig.peer_id {self.peer_id} is not in peers {list(self.peers)}: "
                "a peer must be a member of its own cluster (or set join=True to join an existing one)"
            )
        if self.heartbeat_ticks < 1:
            raise ValueError(f"RaftConfig.heartbeat_ticks must be >= 1, got {self.heartbeat_ticks}")
        if self.election_ticks <= self.heartbeat_ticks:
            raise ValueError(
                f"RaftConfig.election_ticks ({self.election_ticks}) must be greater than "
                f"heartbeat_ticks ({self.heartbeat_ticks}), or followers time out between heartbeats"
            )
        if self.max_entries_per_append < 1:
            raise ValueError(
                f"RaftConfig.max_entries_per_append must be >= 1, got {self.max_entries_per_append}"
            )
        if self.max_inflight_appends < 1:
            raise ValueError(
                f"RaftConfig.max_inflight_appends must be >= 1, got {self.max_inflight_appends}"
            )

    @property
    def quorum(self) -> int:
        """The number of peers that make a majority of the bootstrap configuration."""
        return len(self.peers) // 2 + 1
