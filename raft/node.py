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

Safety invariants this module maintains (checked externally by the simulator and the tests):

- election safety: at most one leader per term (one vote per term, persisted before it is sent);
- a leader never overwrites or deletes entries in its own log;
- log matching: a follower accepts entries only after the entry before them matches the leader's;
- leader completeness: votes go only to candidates whose log is at least as up to date (§5.4.1);
- a leader only commits entries of its own term by counting replicas (§5.4.2, Figure 8).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from raft import trace
from raft.config import RaftConfig
from raft.log import RaftLog
from raft.progress import PROBE, REPLICATE, SNAPSHOT, Progress
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
    Ready,
    RequestVote,
    RequestVoteReply,
    Snapshot,
)

FOLLOWER = "follower"
CANDIDATE = "candidate"
LEADER = "leader"


class RaftNode:
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
        self.log = RaftLog(state.snapshot, state.entries)
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
        else:
            self.election_elapsed += 1
            if self.election_elapsed >= self.randomized_timeout:
                self._campaign()

    def propose(self, command: Any) -> tuple[int, int, bool]:
        """Append ``command`` to the log if this peer leads. Returns ``(index, term, is_leader)``.

        The command is replicated at the next :meth:`ready`; there is no guarantee that it will be
        committed (a new leader may overwrite it). ``index`` is -1 when not leader.
        """
        if self.role != LEADER:
            return -1, self.term, False
        entry = Entry(self.term, self.log.last_index + 1, command)
        self.log.append(entry)
        self.progress[self.id].acknowledge(entry.index)
        if len(self.config.peers) == 1:
            self._maybe_commit()
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
        self.log.compact(index, term)
        snap = Snapshot(index, term, data)
        self.snapshot_data = snap
        self._snapshot_to_persist = snap
        if trace.enabled("snap"):
            self._log("snap", f"compacted log through {index} (term {term})")

    def step(self, msg: Message) -> None:
        """Process one message from another peer."""
        if msg.term > self.term:
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
                self._send(RequestVoteReply(self.term, self.id, msg.src, False))
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
            or self.log.unstable_from <= self.log.last_index
            or self.log.applied < self.log.commit
            or (self.role == LEADER and self._replication_pending())
        )

    def ready(self) -> Ready:
        """Hand out (and forget) the work accumulated since the last call."""
        if self.role == LEADER:
            self._flush_replication()
        hard_state = None
        if self._hard_state_dirty:
            vote = self.voted_for
            if "forget_vote" in self.faults and vote != self.id:
                vote = NO_VOTE  # broken on purpose: the vote is never made durable
            hard_state = HardState(self.term, vote)
            self._hard_state_dirty = False
        entries = tuple(self.log.take_unstable())
        rd = Ready(
            hard_state=hard_state,
            entries=entries,
            snapshot=self._snapshot_to_persist,
            messages=tuple(self._outbox),
            apply_snapshot=self._snapshot_to_apply,
            committed_entries=tuple(self._take_committed()),
        )
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
    # Roles
    # ------------------------------------------------------------------------------------------

    def _draw_timeout(self) -> int:
        et = self.config.election_ticks
        return self.rng.randrange(et, 2 * et)

    def _reset_election_timer(self) -> None:
        self.election_elapsed = 0
        self.randomized_timeout = self._draw_timeout()

    def _set_term(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.voted_for = NO_VOTE
            self._hard_state_dirty = True

    def _become_follower(self, term: int, leader: int | None) -> None:
        was = self.role
        self._set_term(term)
        self.role = FOLLOWER
        self.leader_id = leader
        self.votes = set()
        self.progress = {}
        self._heartbeat_due = False
        self._reset_election_timer()
        if was != FOLLOWER and trace.enabled("elect"):
            self._log("elect", f"{was} -> follower")

    def _campaign(self) -> None:
        self._set_term(self.term + 1)
        self.role = CANDIDATE
        self.leader_id = None
        self.voted_for = self.id
        self._hard_state_dirty = True
        self.votes = {self.id}
        self._reset_election_timer()
        if trace.enabled("elect"):
            self._log("elect", f"election timeout: campaigning at last index "
                      f"{self.log.last_index} term {self.log.last_term}")
        if len(self.votes) >= self.config.quorum:
            self._become_leader()
            return
        for peer in self.config.peers:
            if peer != self.id:
                self._send(RequestVote(self.term, self.id, peer,
                                       self.log.last_index, self.log.last_term))

    def _become_leader(self) -> None:
        self.role = LEADER
        self.leader_id = self.id
        self.heartbeat_elapsed = 0
        nxt = self.log.last_index + 1
        self.progress = {p: Progress(nxt) for p in self.config.peers}
        me = self.progress[self.id]
        me.match_index = self.log.last_index
        me.state = REPLICATE
        self._heartbeat_due = True  # announce leadership at once
        if trace.enabled("elect"):
            self._log("elect", f"won the election with votes {sorted(self.votes)}")

    # ------------------------------------------------------------------------------------------
    # Elections
    # ------------------------------------------------------------------------------------------

    def _on_request_vote(self, m: RequestVote) -> None:
        can_vote = self.voted_for in (NO_VOTE, m.src)
        up_to_date = ("vote_without_log_check" in self.faults
                      or self.log.is_up_to_date(m.last_log_index, m.last_log_term))
        granted = can_vote and up_to_date and self.role == FOLLOWER
        if granted:
            self.voted_for = m.src
            self._hard_state_dirty = True
            self._reset_election_timer()
        if trace.enabled("elect"):
            why = "" if granted else (f" (already voted for P{self.voted_for})" if not can_vote
                                      else " (its log is behind ours)")
            self._log("elect", f"{'granted' if granted else 'refused'} vote to P{m.src}{why}")
        self._send(RequestVoteReply(self.term, self.id, m.src, granted))

    def _on_request_vote_reply(self, m: RequestVoteReply) -> None:
        if self.role != CANDIDATE or not m.granted:
            return
        self.votes.add(m.src)
        if len(self.votes) >= self.config.quorum:
            self._become_leader()

    # ------------------------------------------------------------------------------------------
    # Replication: follower side
    # ------------------------------------------------------------------------------------------

    def _on_append_entries(self, m: AppendEntries) -> None:
        if self.role != FOLLOWER:
            self._become_follower(self.term, m.src)
        self.leader_id = m.src
        self._reset_election_timer()
        log = self.log

        if m.prev_index < log.snapshot_index:
            # The prefix up to our snapshot is committed, hence identical: skip what we already have.
            skip = log.snapshot_index - m.prev_index
            if skip > len(m.entries):
                self._send(AppendEntriesReply(self.term, self.id, m.src, True,
                                              match_index=log.snapshot_index,
                                              prev_index=m.prev_index))
                return
            entries = m.entries[skip:]
            prev_index, prev_term = log.snapshot_index, log.snapshot_term
        else:
            entries, prev_index, prev_term = m.entries, m.prev_index, m.prev_term

        my_term = log.term_at(prev_index)
        if my_term != prev_term:
            if my_term is None:  # our log is too short
                conflict_term, conflict_index = 0, log.last_index + 1
            else:
                conflict_term = my_term
                conflict_index = log.first_index_of_term(prev_index)
            if trace.enabled("append"):
                self._log("append", f"rejected append after {prev_index}: conflict term "
                          f"{conflict_term} from index {conflict_index}")
            self._send(AppendEntriesReply(self.term, self.id, m.src, False,
                                          prev_index=m.prev_index, conflict_term=conflict_term,
                                          conflict_index=conflict_index))
            return

        # Find the first entry we don't already hold with the same term; truncate there.
        last = log.last_index
        for k, e in enumerate(entries):
            if e.index > last or log.term_at(e.index) != e.term:
                log.truncate_and_append(entries[k:])
                break
        match = prev_index + len(entries)
        new_commit = min(m.leader_commit, match)
        if new_commit > log.commit:
            if trace.enabled("commit"):
                self._log("commit", f"commit index {log.commit} -> {new_commit} (from leader)")
            log.commit = new_commit
        self._send(AppendEntriesReply(self.term, self.id, m.src, True, match_index=match,
                                      prev_index=m.prev_index))

    def _on_install_snapshot(self, m: InstallSnapshot) -> None:
        if self.role != FOLLOWER:
            self._become_follower(self.term, m.src)
        self.leader_id = m.src
        self._reset_election_timer()
        snap = m.snapshot
        if snap.index > self.log.commit:
            self.log.restore(snap)
            self.snapshot_data = snap
            self._snapshot_to_persist = snap
            self._snapshot_to_apply = snap
            if trace.enabled("snap"):
                self._log("snap", f"installed snapshot through {snap.index} from P{m.src}")
        self._send(InstallSnapshotReply(self.term, self.id, m.src,
                                        max(snap.index, self.log.snapshot_index)))

    # ------------------------------------------------------------------------------------------
    # Replication: leader side
    # ------------------------------------------------------------------------------------------

    def _on_append_entries_reply(self, m: AppendEntriesReply) -> None:
        if self.role != LEADER:
            return
        pr = self.progress.get(m.src)
        if pr is None:
            return
        if m.success:
            # Acknowledge before leaving PROBE: acknowledge() says whether match_index advanced, and
            # only then can the commit index move (raising match_index first hid a probe's progress).
            advanced = pr.acknowledge(m.match_index)
            if pr.state == PROBE:
                pr.become_replicate()
            if advanced:
                self._maybe_commit()
            pr.paused = False
            return
        # Rejected. A rejection of an append at or below what is known to match is stale.
        if m.prev_index <= pr.match_index:
            return
        if pr.state == PROBE and m.prev_index != pr.next_index - 1:
            return  # a reply to an older probe
        nxt = m.conflict_index
        if m.conflict_term:
            last_of_term = self.log.last_index_of_term(m.conflict_term)
            if last_of_term is not None:
                nxt = last_of_term + 1
        nxt = max(pr.match_index + 1, min(nxt, self.log.last_index + 1))
        if trace.enabled("append"):
            self._log("append", f"P{m.src} rejected after {m.prev_index}: next {pr.next_index} "
                      f"-> {nxt}")
        pr.become_probe()
        pr.next_index = nxt

    def _on_install_snapshot_reply(self, m: InstallSnapshotReply) -> None:
        if self.role != LEADER:
            return
        pr = self.progress.get(m.src)
        if pr is None or pr.state != SNAPSHOT:
            return
        pr.acknowledge(m.match_index)
        pr.become_probe()
        pr.next_index = max(pr.match_index + 1, pr.next_index)

    def _maybe_commit(self) -> None:
        matches = sorted((p.match_index for p in self.progress.values()), reverse=True)
        n = matches[self.config.quorum - 1]
        if n <= self.log.commit:
            return
        if self.log.term_at(n) != self.term and "commit_old_term" not in self.faults:
            return  # §5.4.2: never commit an earlier term's entry by counting replicas
        if trace.enabled("commit"):
            self._log("commit", f"commit index {self.log.commit} -> {n}")
        self.log.commit = n
        self._commit_changed = True

    def _replication_pending(self) -> bool:
        last = self.log.last_index
        for peer, pr in self.progress.items():
            if peer == self.id:
                continue
            if pr.state == REPLICATE and pr.next_index <= last and not pr.window_full(
                    self.config.max_inflight_appends):
                return True
            if pr.state == PROBE and not pr.paused and pr.next_index <= last:
                return True
        return False

    def _flush_replication(self) -> None:
        """Send each follower what it needs: new entries, a heartbeat, or a snapshot."""
        heartbeat = self._heartbeat_due
        notify_commit = self._commit_notify_due
        self._heartbeat_due = False
        self._commit_notify_due = False
        commit = self.log.commit
        last = self.log.last_index
        max_n = self.config.max_entries_per_append
        for peer, pr in self.progress.items():
            if peer == self.id:
                continue
            if heartbeat:
                pr.paused = False
            sent = False
            if pr.state == SNAPSHOT:
                if heartbeat:
                    self._send_snapshot(peer, pr)
                continue
            if pr.next_index <= self.log.snapshot_index:
                pr.become_snapshot()
                self._send_snapshot(peer, pr)
                continue
            if pr.state == REPLICATE:
                while pr.next_index <= last and not pr.window_full(
                        self.config.max_inflight_appends):
                    hi = min(last, pr.next_index + max_n - 1)
                    self._send_append(peer, pr.next_index, hi)
                    pr.inflight.append(hi)
                    pr.next_index = hi + 1
                    sent = True
            elif not pr.paused and (pr.next_index <= last or heartbeat):
                hi = min(last, pr.next_index + max_n - 1)
                self._send_append(peer, pr.next_index, hi)
                pr.paused = True
                sent = True
            if not sent and (heartbeat or (notify_commit and pr.commit_sent < commit)):
                self._send_append(peer, pr.next_index, pr.next_index - 1)

    def _send_append(self, peer: int, lo: int, hi: int) -> None:
        """AppendEntries carrying entries ``lo..hi`` (none when ``hi < lo``)."""
        prev = lo - 1
        prev_term = self.log.term_at(prev)
        assert prev_term is not None, (prev, self.log.snapshot_index)
        entries = tuple(self.log.slice(lo, hi + 1)) if hi >= lo else ()
        self.progress[peer].commit_sent = self.log.commit
        self._send(AppendEntries(self.term, self.id, peer, prev, prev_term, entries,
                                 self.log.commit))

    def _send_snapshot(self, peer: int, pr: Progress) -> None:
        if trace.enabled("snap"):
            self._log("snap", f"sending snapshot through {self.snapshot_data.index} to P{peer}")
        self._send(InstallSnapshot(self.term, self.id, peer, self.snapshot_data))

    # ------------------------------------------------------------------------------------------

    def _send(self, msg: Message) -> None:
        self._outbox.append(msg)

    def _log(self, topic: str, text: str) -> None:
        trace.log(self.id, self.term, self.role, topic, text)

    _handlers: dict[type, Callable[[RaftNode, Any], None]] = {
        RequestVote: _on_request_vote,
        RequestVoteReply: _on_request_vote_reply,
        AppendEntries: _on_append_entries,
        AppendEntriesReply: _on_append_entries_reply,
        InstallSnapshot: _on_install_snapshot,
        InstallSnapshotReply: _on_install_snapshot_reply,
    }
