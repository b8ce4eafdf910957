"""The Raft consensus algorithm for one peer, as a pure state machine.

A :class:`RaftNode` never touches a clock, a socket, a thread or global randomness. Its driver feeds
it events and collects work:

- :meth:`RaftNode.tick` — one unit of logical time has passed;
- :meth:`RaftNode.step` — a message from another peer arrived;
- :meth:`RaftNode.propose` — the service wants a command replicated;
- :meth:`RaftNode.snapshot` — the service has a snapshot covering the log up to an index;
- :meth:`RaftNode.ready` — hand out everything to persist, send and apply (a :class:`Ready`).

The driver must carry out each :class:`Ready` in order: persist, then send, then apply. Batching
comes for free: every proposal and reply stepped in since the previous :meth:`ready` is folded into
one AppendEntries per follower.

It implements Figure 2 of the extended Raft paper (Ongaro & Ousterhout) plus: fast log
backtracking with conflict term / index (§5.3, last paragraphs), log compaction with InstallSnapshot
(§7), and pipelined replication with a window of in-flight AppendEntries per follower.

The core is split by concept; :class:`RaftNode` holds the state and the inputs and outputs, and
mixes in one class per concept, each in its own module with the invariants it keeps:

- :mod:`raft.election` — roles, timers, RequestVote (who may lead), PreVote and CheckQuorum;
- :mod:`raft.replication` — AppendEntries / InstallSnapshot, both sides, and the commit rule;
- :mod:`raft.reads` — ReadIndex: linearizable reads confirmed by one heartbeat round;
- :mod:`raft.membership` — configurations (voters and learners) and changing them one server at a
  time through the log (:meth:`RaftNode.propose_conf_change`).

Safety invariants this module maintains (checked externally by the simulator and the tests):

- election safety: at most one leader per term (one vote per term, persisted before it is sent);
- a leader never overwrites or deletes entries in its own log;
- log matching: a follower accepts entries only after the entry before them matches the leader's;
- leader completeness: votes go only to candidates whose log is at least as up to date (§5.4.1);
- a leader only commits entries of its own term by counting replicas (§5.4.2, Figure 8).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from typing import Any

from raft import trace
from raft.config import RaftConfig
from raft.election import CANDIDATE, FOLLOWER, LEADER, PRE_CANDIDATE, Election
from raft.log import RaftLog
from raft.membership import Reconfiguration, bootstrap
from raft.progress import Progress
from raft.reads import Reads
from raft.replication import Replication
from raft.types import (
    NO_VOTE,
    AppendEntries,
    AppendEntriesReply,
    Entry,
    HardState,
    InstallSnapshot,
    InstallSnapshotReply,
    Message,
    PersistentState,
    ReadState,
    Ready,
    RequestVote,
    RequestVoteReply,
    Snapshot,
)

__all__ = ["CANDIDATE", "FOLLOWER", "LEADER", "PRE_CANDIDATE", "RaftNode"]



def describe_message(direction: str, msg: Message, last: int) -> str:
    """The ``msg`` topic's text (:mod:`raft.trace`) for ``msg`` sent (``direction`` ``"send"``) or
    received (``"recv"``) by a peer whose log ends at ``last``, e.g.
    ``send AE P1->P2 T5 prev=17/4 n=2 commit=17 ; last=19``. The text before ``;`` is the same at
    both ends, so a reader (``raykv viz``) can pair a receipt with its send."""
    head = f"P{msg.src}->P{msg.dst} T{msg.term}"
    if isinstance(msg, AppendEntries):
        body = (f"AE {head} prev={msg.prev_index}/{msg.prev_term} n={len(msg.entries)} "
                f"commit={msg.leader_commit}")
    elif isinstance(msg, AppendEntriesReply):
        body = f"AER {head} ok={int(msg.success)} match={msg.match_index} prev={msg.prev_index}"
    elif isinstance(msg, RequestVote):
        body = f"{'PV' if msg.pre_vote else 'RV'} {head} last={msg.last_log_index}/{msg.last_log_term}"
    elif isinstance(msg, RequestVoteReply):
        body = f"{'PVR' if msg.pre_vote else 'RVR'} {head} granted={int(msg.granted)}"
    elif isinstance(msg, InstallSnapshot):
        body = f"IS {head} snap={msg.snapshot.index}/{msg.snapshot.term}"
    elif isinstance(msg, InstallSnapshotReply):
        body = f"ISR {head} match={msg.match_index}"
    else:
        body = f"{type(msg).__name__} {head}"
    return f"{direction} {body} ; last={last}"

class RaftNode(Election, Replication, Reads, Reconfiguration):
    """One Raft peer. Not thread-safe: the driver serialises every call."""

    def __init__(
        self,
        config: RaftConfig,
        rng: random.Random,
        state: PersistentState | None = None,
    ) -> None:
        """Create a peer, restarting from ``state`` (what storage held) if given.

        ``rng`` is the only source of randomness (election timeouts); pass a seeded generator for
        reproducible runs. After a restart the service must restore itself from ``state.snapshot``
        (the core considers everything up to ``state.snapshot.index`` applied).
        """
        config.validate()
        self.config = config
        self.id = config.peer_id
        self.rng = rng
        state = state or PersistentState()
        self.term = state.hard_state.term
        self.voted_for = state.hard_state.voted_for
        self.log = RaftLog(state.snapshot, state.entries, bootstrap(config))
        self.snapshot_data: Snapshot = state.snapshot
        self.role = FOLLOWER
        self.leader_id: int | None = None
        self.votes: set[int] = set()
        self.progress: dict[int, Progress] = {}
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = self._draw_timeout()
        self._outbox: list[Message] = []
        self._hard_state_dirty = False
        self._snapshot_to_persist: Snapshot | None = None
        self._snapshot_to_apply: Snapshot | None = None
        self._heartbeat_due = False
        self._commit_changed = False
        self._commit_notify_due = False
        self._commit_check_due = False
        self._read_seq = 0
        self._read_open: list[Any] | None = None
        self._read_rounds: deque[tuple[int, int, list[Any]]] = deque()
        self._reads_waiting: list[Any] = []
        self._read_states: list[ReadState] = []
        self._reads_dropped: list[Any] = []
        # Hooks that tests switch on to break the algorithm on purpose (see raft.faults).
        self.faults: frozenset[str] = frozenset()
        if trace.enabled("persist") and (state.entries or state.snapshot.index or self.term):
            self._log("persist", f"restarted: snapshot {state.snapshot.index}, "
                      f"last index {self.log.last_index}, vote {self.voted_for}")

    # ------------------------------------------------------------------------------------------
    # Queries
    # ------------------------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self.role == LEADER

    @property
    def commit_index(self) -> int:
        return self.log.commit

    @property
    def last_index(self) -> int:
        return self.log.last_index

    def hard_state(self) -> HardState:
        return HardState(self.term, self.voted_for)

    def status(self) -> dict[str, Any]:
        """A snapshot of the peer's state for people and tests (cheap, plain data)."""
        return {
            "id": self.id,
            "term": self.term,
            "role": self.role,
            "leader": self.leader_id,
            "voted_for": self.voted_for,
            "commit": self.log.commit,
            "applied": self.log.applied,
            "last_index": self.log.last_index,
            "snapshot_index": self.log.snapshot_index,
            "voters": sorted(self.membership.voters),
            "learners": sorted(self.membership.learners),
        }

    # ------------------------------------------------------------------------------------------
    # Inputs
    # ------------------------------------------------------------------------------------------

    def tick(self) -> None:
        """Advance logical time by one tick."""
        if self.role == LEADER:
            self.heartbeat_elapsed += 1
            if self.heartbeat_elapsed >= self.config.heartbeat_ticks:
                self.heartbeat_elapsed = 0
                self._heartbeat_due = True
            if self._commit_changed:
                # Tell idle followers about a new commit index at most once per tick: commits that
                # happen close together share one notification (busy followers learn it from the
                # next AppendEntries anyway).
                self._commit_changed = False
                self._commit_notify_due = True
            if self.config.check_quorum:
                self._tick_check_quorum()
        else:
            self._tick_election()

    def propose(self, command: Any) -> tuple[int, int, bool]:
        """Append ``command`` to the log if this peer leads. Returns ``(index, term, is_leader)``.

        The command is replicated at the next :meth:`ready`; there is no guarantee that it will be
        committed (a new leader may overwrite it). ``index`` is -1 when not leader.
        """
        if self.role != LEADER:
            return -1, self.term, False
        entry = Entry(self.term, self.log.last_index + 1, command)
        self.log.append(entry)
        # The leader counts itself for this entry only once it has been handed out for persisting
        # (see ready): in a one-voter configuration it would otherwise commit what no disk holds.
        return entry.index, self.term, True

    def snapshot(self, index: int, data: bytes) -> None:
        """The service has a snapshot of everything applied up to ``index``; compact the log.

        ``index`` must not exceed what :meth:`ready` has handed out for application. A snapshot at or
        below the current one is ignored (it may arrive late).
        """
        if index <= self.log.snapshot_index:
            return
        if index > self.log.applied:
            raise ValueError(
                f"snapshot index {index} is beyond the last applied index {self.log.applied}: "
                "the service can only snapshot what it has applied"
            )
        term = self.log.term_at(index)
        assert term is not None
        snap = Snapshot(index, term, data, self.log.configs.for_snapshot(index))
        self.log.compact(index, term)
        self.snapshot_data = snap
        self._snapshot_to_persist = snap
        if trace.enabled("snap"):
            self._log("snap", f"compacted log through {index} (term {term})")

    def step(self, msg: Message) -> None:
        """Process one message from another peer."""
        if trace.enabled("msg"):
            self._log("msg", describe_message("recv", msg, self.log.last_index))
        if self._ignores(msg):
            return  # a removed peer must not disrupt a live leader (raft.membership)
        if msg.term > self.term:
            if type(msg) is RequestVote:
                if self.in_lease():
                    # CheckQuorum's lease: we heard from a leader within an election timeout, so
                    # neither adopt the candidate's term nor answer it.
                    if trace.enabled("elect"):
                        self._log("elect", f"ignored {'pre-' if msg.pre_vote else ''}vote request "
                                  f"of P{msg.src} for term {msg.term} (leader lease)")
                    return
                if msg.pre_vote:  # a pre-vote changes nobody's term
                    self._on_request_vote(msg)
                    return
            elif type(msg) is RequestVoteReply and msg.pre_vote and msg.granted:
                self._on_request_vote_reply(msg)  # it carries the term we asked for, not a newer one
                return
            leader = msg.src if isinstance(msg, (AppendEntries, InstallSnapshot)) else None
            if trace.enabled("term"):
                self._log("term", f"saw term {msg.term} from P{msg.src} ({type(msg).__name__})")
            self._become_follower(msg.term, leader)
        elif msg.term < self.term:
            # A stale peer. Answer requests so that it learns the new term; drop stale replies.
            if isinstance(msg, AppendEntries):
                self._send(AppendEntriesReply(self.term, self.id, msg.src, False,
                                              prev_index=msg.prev_index))
            elif isinstance(msg, RequestVote):
                self._send(RequestVoteReply(self.term, self.id, msg.src, False, pre_vote=msg.pre_vote))
            elif isinstance(msg, InstallSnapshot):
                self._send(InstallSnapshotReply(self.term, self.id, msg.src, 0))
            return

        handler = self._handlers[type(msg)]
        handler(self, msg)

    # ------------------------------------------------------------------------------------------
    # Output
    # ------------------------------------------------------------------------------------------

    def has_ready(self) -> bool:
        return bool(
            self._outbox
            or self._hard_state_dirty
            or self._snapshot_to_persist
            or self._snapshot_to_apply
            or self._heartbeat_due
            or self._commit_notify_due
            or self._read_states
            or self._reads_dropped
            or self._read_open is not None
            or self.log.unstable_from <= self.log.last_index
            or self.log.applied < self.log.commit
            or self._commit_check_due
            or (self.role == LEADER and self._replication_pending())
        )

    def ready(self) -> Ready:
        """Hand out (and forget) the work accumulated since the last call."""
        if self._commit_check_due:
            self._commit_check_due = False
            if self.role == LEADER:
                self._maybe_commit()
        if self.role == LEADER:  # (a leader that committed its own removal has stepped down)
            self._flush_replication(read_round=self._send_read_round())
        hard_state = None
        if self._hard_state_dirty:
            vote = self.voted_for
            if "forget_vote" in self.faults and vote != self.id:
                vote = NO_VOTE  # broken on purpose: the vote is never made durable
            hard_state = HardState(self.term, vote)
            self._hard_state_dirty = False
        entries = tuple(self.log.take_unstable())
        if self.role == LEADER and entries:
            # The leader counts its own copy of an entry only from here on: the driver persists this
            # Ready before it steps anything else in (or asks for the next Ready, which commits what
            # this acknowledgement alone makes a majority: a one-voter configuration).
            me = self.progress[self.id]
            me.acknowledge(entries[-1].index)
            self._commit_check_due = self.membership.quorum_index(self.progress) > self.log.commit
        rd = Ready(
            hard_state=hard_state,
            entries=entries,
            snapshot=self._snapshot_to_persist,
            messages=tuple(self._outbox),
            apply_snapshot=self._snapshot_to_apply,
            committed_entries=tuple(self._take_committed()),
            read_states=tuple(self._read_states),
            reads_dropped=tuple(self._reads_dropped),
        )
        self._read_states = []
        self._reads_dropped = []
        self._outbox = []
        self._snapshot_to_persist = None
        self._snapshot_to_apply = None
        return rd

    def _take_committed(self) -> list[Entry]:
        if "apply_past_commit" in self.faults and self.log.last_index > self.log.commit:
            # Broken on purpose: hand out one uncommitted entry as if it were committed.
            self.log.commit += 1
        return self.log.take_committed()

    # ------------------------------------------------------------------------------------------

    def _send(self, msg: Message) -> None:
        if trace.enabled("msg"):
            self._log("msg", describe_message("send", msg, self.log.last_index))
        self._outbox.append(msg)

    def _log(self, topic: str, text: str) -> None:
        trace.log(self.id, self.term, self.role, topic, text)

    #: message type -> handler (a subclass may override entries to break a rule on purpose)
    _handlers: dict[type, Callable[[RaftNode, Any], None]] = {
        RequestVote: Election._on_request_vote,
        RequestVoteReply: Election._on_request_vote_reply,
        AppendEntries: Replication._on_append_entries,
        AppendEntriesReply: Replication._on_append_entries_reply,
        InstallSnapshot: Replication._on_install_snapshot,
        InstallSnapshotReply: Replication._on_install_snapshot_reply,
    }
