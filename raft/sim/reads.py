"""Checks of ReadIndex reads in the simulator (``SimConfig.reads``).

Clients ask peers that believe they lead for reads (:meth:`raft.RaftNode.read_index`), stale leaders
included. For each read the checker notes, when it is requested: the peer and its term, the highest
index the checker has seen committed anywhere (every write acknowledged before the read began lies at
or below it), and the newest term that has had a leader so far. When the peer answers
(``Ready.read_states``) the checker requires:

``read-index``
    the read index covers every entry committed before the read was requested, and does not exceed
    the answering peer's commit index. The read is then served once the peer's service has applied up
    to the read index; the service's state there equals the replay of the committed log
    (``applied-state``), so the read sees every write that completed before it began;
``read-leadership``
    the read is answered by the peer it was sent to, in the term in which it was requested, and no
    later term had elected a leader before it was requested (a deposed leader never answers: a
    majority had moved on, and one of them would have refused the heartbeat round).

A read that the peer drops (``Ready.reads_dropped``: it stopped leading) is only counted; a crash
loses the peer's outstanding reads, as a real crash would.
"""

from __future__ import annotations

from collections.abc import Callable

from raft.node import RaftNode
from raft.sim.invariants import Invariants
from raft.sim.service import CounterService
from raft.sim.trace import Event
from raft.types import Ready


class ReadChecker:
    __slots__ = ("emit", "inv", "next_ctx", "pending", "serving", "stats")

    def __init__(self, n: int, inv: Invariants, emit: Callable[[Event], None],
                 stats: dict[str, int]) -> None:
        self.inv = inv
        self.emit = emit
        self.stats = stats
        for k in ("reads_requested", "reads_answered", "reads_dropped", "reads_refused"):
            stats[k] = 0
        self.next_ctx = 1
        #: ctx -> (peer, term, committed before, newest leader term before, tick requested)
        self.pending: dict[int, tuple[int, int, int, int, int]] = {}
        #: per peer: (read index, ctx) answered and waiting for the service to apply that far
        self.serving: list[list[tuple[int, int]]] = [[] for _ in range(n)]

    def request(self, i: int, node: RaftNode) -> None:
        ctx = self.next_ctx
        self.next_ctx += 1
        inv = self.inv
        if not node.read_index(ctx):
            self.stats["reads_refused"] += 1
            return
        self.stats["reads_requested"] += 1
        self.pending[ctx] = (i, node.term, len(inv.committed) - 1, inv.newest_leader_term, inv.now)
        self.emit((inv.now, "read", i, f"read {ctx} requested in term {node.term}"))

    def on_ready(self, i: int, node: RaftNode, rd: Ready) -> None:
        inv = self.inv
        for st in rd.read_states:
            rec = self.pending.pop(st.ctx, None)
            if rec is None:
                inv.fail("read-leadership", f"P{i} answered read {st.ctx!r}, which is not outstanding")
            peer, term, before, newest, at = rec  # type: ignore[misc]
            if peer != i or node.term != term:
                inv.fail("read-leadership", f"P{i} (term {node.term}) answered read {st.ctx}, requested "
                                            f"from P{peer} in term {term}")
            if newest > term:
                inv.fail("read-leadership", f"P{i} answered read {st.ctx} of term {term}, but term {newest} "
                                            f"already had a leader when the read was requested (t={at})")
            if st.index < before:
                inv.fail("read-index", f"P{i} answered read {st.ctx} at index {st.index}, but index "
                                       f"{before} was committed before it was requested (t={at})")
            if st.index > node.log.commit:
                inv.fail("read-index", f"P{i} answered read {st.ctx} at index {st.index}, beyond its "
                                       f"commit index {node.log.commit}")
            self.serving[i].append((st.index, st.ctx))
            self.stats["reads_answered"] += 1
            self.emit((inv.now, "read", i, f"read {st.ctx} answered at index {st.index} "
                                           f"(requested t={at}, {before} committed then)"))
        for ctx in rd.reads_dropped:
            rec = self.pending.pop(ctx, None)
            if rec is None or rec[0] != i:
                inv.fail("read-leadership", f"P{i} dropped read {ctx!r}, which it does not hold")
            self.stats["reads_dropped"] += 1
            self.emit((inv.now, "read", i, f"read {ctx} dropped (no longer leader)"))

    def serve(self, i: int, svc: CounterService) -> None:
        """Serve the answered reads whose index the service has reached."""
        waiting = self.serving[i]
        if waiting and waiting[0][0] <= svc.applied:
            self.serving[i] = [w for w in waiting if w[0] > svc.applied]

    def on_crash(self, i: int) -> None:
        self.serving[i] = []
        for ctx in [c for c, rec in self.pending.items() if rec[0] == i]:
            del self.pending[ctx]
