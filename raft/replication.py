"""Log replication of one Raft peer: AppendEntries and InstallSnapshot, both sides (§5.3, §7).

This is a mixin of :class:`raft.node.RaftNode`. The follower side accepts entries only where they fit
the log; the leader side paces each follower through :class:`raft.progress.Progress` (probe,
replicate with a window of in-flight appends, snapshot), backs off with the follower's conflict hints,
and advances the commit index.

Invariants kept here:

- log matching: a follower appends entries only after checking that its entry at ``prev_index`` has
  ``prev_term``, and it truncates only from the first entry that conflicts (never a committed one:
  :meth:`raft.log.RaftLog.truncate_and_append` asserts it);
- a leader never overwrites or deletes entries in its own log (it only appends, in ``propose``);
- a leader advances its commit index only to an entry of its own term that a majority holds
  (§5.4.2, Figure 8); a follower's commit index never exceeds what it knows matches the leader;
- ``Progress.match_index`` never decreases within a term; a follower replies only after the driver
  has persisted what it accepted (Ready order), so an acknowledged index is durable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from raft import trace
from raft.progress import PROBE, REPLICATE, SNAPSHOT, Progress
from raft.types import (
    AppendEntries,
    AppendEntriesReply,
    InstallSnapshot,
    InstallSnapshotReply,
    Snapshot,
)

if TYPE_CHECKING:
    from raft.config import RaftConfig
    from raft.log import RaftLog
    from raft.types import Message

from raft.election import FOLLOWER, LEADER


class Replication:
    """Mixin: the replication half of :class:`raft.node.RaftNode`."""

    # State owned by RaftNode.__init__ (declared here for readers and type checkers).
    config: RaftConfig
    id: int
    term: int
    log: RaftLog
    role: str
    leader_id: int | None
    progress: dict[int, Progress]
    snapshot_data: Snapshot
    faults: frozenset[str]
    _snapshot_to_persist: Snapshot | None
    _snapshot_to_apply: Snapshot | None
    _heartbeat_due: bool
    _commit_changed: bool
    _commit_notify_due: bool
    _read_seq: int

    if TYPE_CHECKING:  # provided by RaftNode and Election
        def _send(self, msg: Message) -> None: ...
        def _log(self, topic: str, text: str) -> None: ...
        def _become_follower(self, term: int, leader: int | None) -> None: ...
        def _reset_election_timer(self) -> None: ...
        def _on_read_ack(self, pr: Progress, read_ctx: int) -> None: ...
        def _on_commit(self) -> None: ...
        def _after_commit(self, old_commit: int) -> None: ...

    # ------------------------------------------------------------------------------------------
    # Follower side
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
                                              prev_index=m.prev_index, read_ctx=m.read_ctx))
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
                                          conflict_index=conflict_index, read_ctx=m.read_ctx))
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
                                      prev_index=m.prev_index, read_ctx=m.read_ctx))

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
    # Leader side
    # ------------------------------------------------------------------------------------------

    def _on_append_entries_reply(self, m: AppendEntriesReply) -> None:
        if self.role != LEADER:
            return
        pr = self.progress.get(m.src)
        if pr is None:
            return
        pr.recent_active = True
        if m.read_ctx:
            self._on_read_ack(pr, m.read_ctx)
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
        if pr is None:
            return
        pr.recent_active = True
        if pr.state != SNAPSHOT:
            return
        pr.acknowledge(m.match_index)
        pr.become_probe()
        pr.next_index = max(pr.match_index + 1, pr.next_index)

    def _maybe_commit(self) -> None:
        # Only the voters of the current configuration count (raft.membership), the leader itself only
        # if it is one.
        n = self.log.configs.current.quorum_index(self.progress)
        if n <= self.log.commit:
            return
        if self.log.term_at(n) != self.term and "commit_old_term" not in self.faults:
            return  # §5.4.2: never commit an earlier term's entry by counting replicas
        if trace.enabled("commit"):
            self._log("commit", f"commit index {self.log.commit} -> {n}")
        old = self.log.commit
        self.log.commit = n
        self._commit_changed = True
        self._on_commit()
        self._after_commit(old)

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

    def _flush_replication(self, read_round: bool = False) -> None:
        """Send each follower what it needs: new entries, a heartbeat, or a snapshot.

        With ``read_round`` (a ReadIndex round goes out, see :mod:`raft.reads`) every follower that
        gets no entries gets an empty AppendEntries, as for a heartbeat, but without unpausing probes
        or resending snapshots: a busy reader must not multiply the snapshot traffic."""
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
            if not sent and (heartbeat or read_round or (notify_commit and pr.commit_sent < commit)):
                self._send_append(peer, pr.next_index, pr.next_index - 1)

    def _send_append(self, peer: int, lo: int, hi: int) -> None:
        """AppendEntries carrying entries ``lo..hi`` (none when ``hi < lo``)."""
        prev = lo - 1
        prev_term = self.log.term_at(prev)
        assert prev_term is not None, (prev, self.log.snapshot_index)
        entries = tuple(self.log.slice(lo, hi + 1)) if hi >= lo else ()
        self.progress[peer].commit_sent = self.log.commit
        self._send(AppendEntries(self.term, self.id, peer, prev, prev_term, entries,
                                 self.log.commit, self._read_seq))

    def _send_snapshot(self, peer: int, pr: Progress) -> None:
        if trace.enabled("snap"):
            self._log("snap", f"sending snapshot through {self.snapshot_data.index} to P{peer}")
        self._send(InstallSnapshot(self.term, self.id, peer, self.snapshot_data))
