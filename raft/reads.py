"""ReadIndex: linearizable reads without log entries (Raft thesis §6.4).

This is a mixin of :class:`raft.node.RaftNode`. The service calls
:meth:`Reads.read_index` with an opaque ``ctx`` for each read (or batch of reads) it wants to serve.
Only the leader takes them; a follower refuses (returns ``False``), and the service answers "wrong
leader" so that the clerk retries at the leader, exactly as for a write. (Forwarding to the leader
would save the clerk one hop but not the leader any work, and our clerks already find the leader.)

The leader answers a read with a :class:`~raft.types.ReadState` ``(index, ctx)`` in a later
:class:`~raft.types.Ready`; the service serves it once its applied index reaches ``index``. Steps:

1. If no entry of the leader's current term is committed yet, the read waits: until then the
   leader's commit index may lag behind entries an earlier leader committed (set ``leader_noop``
   so that a new leader commits such an entry at once).
2. Reads that arrive between two :meth:`~raft.node.RaftNode.ready` calls form one *round*. When the
   round goes out, its read index is the leader's commit index at that moment, the round gets the
   next number ``seq``, and every follower gets an AppendEntries (a heartbeat if nothing else)
   carrying ``read_ctx = seq``.
3. A follower echoes ``read_ctx`` in its reply. Once a majority of the voters of the leader's
   configuration (the leader included if it votes) has replied in
   the leader's term with ``read_ctx >= seq``, the round's reads are answered.

Invariant: a read is answered only by a peer that was still the leader of its term after the read
index was fixed, because a majority accepted it as leader after that moment; no other leader can have
been elected in a later term before then (that would need a majority in that later term, and the two
majorities share a peer that would have refused the heartbeat). With step 1, the read index is at
least the index of every entry committed (by any leader) before the read was requested; so the state
at the read index reflects every write that completed before the read began. A leader that stops
leading abandons its waiting reads (``Ready.reads_dropped``) and never answers them.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from raft.election import LEADER
from raft.types import ReadState

if TYPE_CHECKING:
    from raft.config import RaftConfig
    from raft.log import RaftLog
    from raft.progress import Progress


class Reads:
    """Mixin: the ReadIndex half of :class:`raft.node.RaftNode`."""

    # State owned by RaftNode.__init__ (declared here for readers and type checkers).
    config: RaftConfig
    id: int
    term: int
    log: RaftLog
    role: str
    progress: dict[int, Progress]
    faults: frozenset[str]
    #: the number of the newest read round (never reused by this core object)
    _read_seq: int
    #: reads taken since the last flush (they go out together as the next round), or None
    _read_open: list[Any] | None
    #: rounds sent and not yet confirmed, oldest first: [seq, read index, ctxs]
    _read_rounds: deque[tuple[int, int, list[Any]]]
    #: reads held until an entry of the current term commits
    _reads_waiting: list[Any]
    _read_states: list[ReadState]
    _reads_dropped: list[Any]

    def read_index(self, ctx: Any) -> bool:
        """Ask to serve a linearizable read identified by ``ctx`` (opaque to the core).

        Returns ``False`` at once if this peer is not the leader (the caller should redirect the
        read); otherwise ``True``, and a later :class:`~raft.types.Ready` carries either a
        ``ReadState(index, ctx)`` in ``read_states`` or ``ctx`` in ``reads_dropped`` (leadership lost).
        """
        if self.role != LEADER:
            return False
        if (self.log.term_at(self.log.commit) != self.term
                and "read_before_term_commit" not in self.faults):  # broken on purpose if set
            self._reads_waiting.append(ctx)
        else:
            self._take_read(ctx)
        return True

    def _take_read(self, ctx: Any) -> None:
        # a one-voter configuration confirms at once (the fault: always, broken on purpose)
        if self.log.configs.current.voters == {self.id} or "read_without_quorum" in self.faults:
            self._read_states.append(ReadState(self.log.commit, ctx))
            return
        if self._read_open is None:
            self._read_open = []  # goes out as one round at the next ready()
        self._read_open.append(ctx)

    def _send_read_round(self) -> bool:
        """Called just before the leader flushes its AppendEntries: the open round goes out with
        them, its read index fixed now (at least the commit index when each of its reads came).
        Returns whether a round goes out (then every follower must get an AppendEntries)."""
        if self._read_open is None:
            return False
        self._read_seq += 1
        self._read_rounds.append((self._read_seq, self.log.commit, self._read_open))
        self._read_open = None
        return True

    def _on_read_ack(self, pr: Progress, read_ctx: int) -> None:
        """A follower replied in our term echoing ``read_ctx``; answer every round a majority saw."""
        if read_ctx <= pr.read_ack:
            return
        pr.read_ack = read_ctx
        rounds = self._read_rounds
        if not rounds:
            return
        cfg = self.log.configs.current  # only voters confirm (raft.membership)
        progress = self.progress
        acks = sorted((self._read_seq if p == self.id else progress[p].read_ack if p in progress else 0
                       for p in cfg.voters), reverse=True)
        confirmed = acks[cfg.quorum - 1]
        while rounds and rounds[0][0] <= confirmed:
            _, index, ctxs = rounds.popleft()
            self._read_states.extend(ReadState(index, c) for c in ctxs)

    def _on_commit(self) -> None:
        """The commit index advanced: release the reads waiting for an entry of this term."""
        if self._reads_waiting and self.log.term_at(self.log.commit) == self.term:
            waiting, self._reads_waiting = self._reads_waiting, []
            for ctx in waiting:
                self._take_read(ctx)

    def _abandon_reads(self) -> None:
        """This peer stops leading: every read it has not answered is dropped, never answered."""
        dropped = self._reads_dropped
        dropped.extend(self._reads_waiting)  # in the order they came
        for _, _, ctxs in self._read_rounds:
            dropped.extend(ctxs)
        if self._read_open:
            dropped.extend(self._read_open)
        self._reads_waiting = []
        self._read_open = None
        self._read_rounds.clear()
