"""The values that cross the boundary of the Raft core.

Everything here is a plain, immutable (frozen) dataclass so that it can be pickled by Ray, compared in
tests and printed in traces. The core never mutates a value after handing it out; the caller may keep
references to anything it receives.

Index conventions follow the Raft paper: the first log index is 1, index 0 means "nothing" (the empty
log, or no snapshot), and term 0 is the term of that empty prefix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raft.membership import Membership

#: Peer identifiers are small non-negative integers (the peer's position in the cluster).
PeerId = int

#: Sentinel for "voted for nobody" in :class:`HardState`.
NO_VOTE: int = -1


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry. ``command`` is opaque to Raft; ``None`` marks the no-op a new leader appends."""

    term: int
    index: int
    command: Any = None


@dataclass(frozen=True, slots=True)
class HardState:
    """The part of a peer's state that must be on stable storage before it sends a message.

    Invariant: ``term`` never decreases; ``voted_for`` is a vote cast in ``term`` (or ``NO_VOTE``).
    """

    term: int = 0
    voted_for: int = NO_VOTE


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A snapshot of the service state covering every entry up to and including ``index``.

    ``term`` is the term of the entry at ``index``; ``data`` is produced and read only by the service.
    ``config`` is the group's configuration once the log up to ``index`` is applied (``None``: the
    bootstrap configuration, ``RaftConfig.peers``); storage must keep it with the snapshot.
    """

    index: int = 0
    term: int = 0
    data: bytes = b""
    config: Membership | None = None


@dataclass(frozen=True, slots=True)
class PersistentState:
    """Everything a peer needs to restart: what storage hands back to a new core.

    ``entries`` are the log entries after ``snapshot.index``, contiguous and in order.
    """

    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot = field(default_factory=Snapshot)
    entries: tuple[Entry, ...] = ()


# --------------------------------------------------------------------------------------------------
# Messages (the RPCs of the extended Raft paper, one class per request and per reply)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestVote:
    """A vote request; with ``pre_vote`` a PreVote (thesis §9.6): ``term`` is the term the candidate
    would campaign in (its own plus one), and neither side changes its term or vote because of it."""

    term: int
    src: PeerId
    dst: PeerId
    last_log_index: int
    last_log_term: int
    pre_vote: bool = False


@dataclass(frozen=True, slots=True)
class RequestVoteReply:
    """A vote. A granted pre-vote carries the term asked for; a refusal carries the voter's term."""

    term: int
    src: PeerId
    dst: PeerId
    granted: bool
    pre_vote: bool = False


@dataclass(frozen=True, slots=True)
class AppendEntries:
    """Replicates ``entries`` after (``prev_index``, ``prev_term``); empty ``entries`` is a heartbeat.

    ``read_ctx`` is the leader's newest ReadIndex round when it sent this (0: none yet); the follower
    echoes it, so a reply proves the follower still took the sender for leader after that round began.
    """

    term: int
    src: PeerId
    dst: PeerId
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    leader_commit: int
    read_ctx: int = 0


@dataclass(frozen=True, slots=True)
class AppendEntriesReply:
    """The follower's answer.

    On success ``match_index`` is the index up to which the follower's log now equals the leader's.
    On rejection ``conflict_term`` / ``conflict_index`` drive fast backtracking: ``conflict_term`` is
    the term of the follower's entry at ``prev_index`` (0 when its log is too short) and
    ``conflict_index`` is the first index the follower holds for that term (or its log length + 1).
    ``prev_index`` echoes the request so that the leader can recognise stale rejections, and
    ``read_ctx`` echoes the request's (success or not: either way the follower accepted the term).
    """

    term: int
    src: PeerId
    dst: PeerId
    success: bool
    match_index: int = 0
    prev_index: int = 0
    conflict_term: int = 0
    conflict_index: int = 0
    read_ctx: int = 0


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    term: int
    src: PeerId
    dst: PeerId
    snapshot: Snapshot


@dataclass(frozen=True, slots=True)
class InstallSnapshotReply:
    """``match_index`` is the snapshot index the follower now holds (or already held beyond)."""

    term: int
    src: PeerId
    dst: PeerId
    match_index: int


Message = (
    RequestVote
    | RequestVoteReply
    | AppendEntries
    | AppendEntriesReply
    | InstallSnapshot
    | InstallSnapshotReply
)


@dataclass(frozen=True, slots=True)
class ReadState:
    """The answer to :meth:`raft.node.RaftNode.read_index`: serve the read ``ctx`` once the applied
    index reaches ``index``. The state at that index reflects every write committed before the read
    was requested (thesis §6.4)."""

    index: int
    ctx: Any


@dataclass(frozen=True, slots=True)
class Ready:
    """One batch of work the core hands to its driver, to be carried out in this order:

    1. persist: if ``snapshot`` is set, store it and drop every entry up to ``snapshot.index``; the
       stored entries after it are kept only if the stored entry at ``snapshot.index`` has
       ``snapshot.term`` (the log-matching rule, exactly what the core did to its own log), otherwise
       the whole log is dropped; then, if
       ``entries`` is non-empty, delete every stored entry with index >= ``entries[0].index`` and append
       ``entries``; then store ``hard_state`` if it is set. One fsync covers the whole batch.
    2. send ``messages`` (only after step 1 is durable);
    3. apply: if ``apply_snapshot`` is set, restore the service from it; then apply
       ``committed_entries`` in order (they directly follow the snapshot or the last applied entry);
    4. reads: serve each of ``read_states`` once the service has applied up to its ``index`` (at once
       if it already has); answer each ctx of ``reads_dropped`` "not leader" (this peer stopped
       leading before it could confirm its leadership for them; retry at the new leader).
    """

    hard_state: HardState | None = None
    entries: tuple[Entry, ...] = ()
    snapshot: Snapshot | None = None
    messages: tuple[Message, ...] = ()
    committed_entries: tuple[Entry, ...] = ()
    apply_snapshot: Snapshot | None = None
    read_states: tuple[ReadState, ...] = ()
    reads_dropped: tuple[Any, ...] = ()

    def is_empty(self) -> bool:
        return not (
            self.hard_state
            or self.entries
            or self.snapshot
            or self.messages
            or self.committed_entries
            or self.apply_snapshot
            or self.read_states
            or self.reads_dropped
        )
