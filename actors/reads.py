"""Reads served with ReadIndex on a replica actor: waiting for the core's answer, then for the apply.

A replica that serves a read without a log entry (Raft thesis §6.4, :mod:`raft.reads`) goes through
two waits, both here:

1. :meth:`ReadWaiters.start` asks the core (``RaftNode.read_index(ctx)``); a follower refuses at once
   (``None``: answer "wrong leader"). The leader answers in a later ``Ready``: ``read_states`` holds
   ``ReadState(index, ctx)`` once one heartbeat round has confirmed its leadership, or
   ``reads_dropped`` holds ``ctx`` if it stopped leading first;
2. :meth:`ReadWaiters.answered` takes those answers; a read whose index the state machine has
   already applied is released at once, the others when :meth:`applied` reaches their index.

A released read's future holds ``True``: the caller then reads the state machine (whose applied
index can only have grown since, which is still linearizable: every state at or after the read index
lies inside the read's call). ``False`` means: not served here (dropped, crashed, deposed); the caller
answers "wrong leader" and the clerk tries elsewhere.

Invariants: every future is completed at most once; a future is set to ``True`` only after the core
answered its ctx *and* the applied index reached the answer's index; :meth:`fail_all` (crash, restart)
completes every outstanding future with ``False``, so no read outlives the incarnation it began in.

:class:`ReadIndexServing` is the server side of it, mixed into a service's replica (kvraft and
shardkv serve their Gets with it).
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Iterable
from typing import Any

from actors.replica import SERVICE_RULES
from actors.statemachine import NEEDS_LOG as _NEEDS_LOG
from raft import RaftNode, ReadState

#: how a service may serve reads: ``index`` (ReadIndex, no log entry; the default) or ``log``
READ_PATHS = ("index", "log")

#: What a service's read function returns for an operation that only the log can answer (malformed,
#: or a client the dedup table must first open, refuse or renew): the whole batch then goes through the
#: log. (Defined in the Ray-free :mod:`actors.statemachine`, for the state machines.)
NEEDS_LOG = _NEEDS_LOG


class ReadWaiters:
    __slots__ = ("_futures", "_next_ctx", "_waiting")

    def __init__(self) -> None:
        self._next_ctx = 0
        #: ctx -> the future of the read it names (both waits)
        self._futures: dict[int, asyncio.Future[bool]] = {}
        #: (read index, ctx) answered by the core, waiting for the apply to reach the index
        self._waiting: list[tuple[int, int]] = []

    def __len__(self) -> int:
        return len(self._futures)

    def start(self, core: RaftNode) -> tuple[int, asyncio.Future[bool]] | None:
        """Ask ``core`` for a read; ``None`` if it refuses (not the leader)."""
        self._next_ctx += 1
        ctx = self._next_ctx
        if not core.read_index(ctx):
            return None
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._futures[ctx] = fut
        return ctx, fut

    def forget(self, ctx: int) -> None:
        """The caller gave up on ``ctx`` (timeout): its answer, if it comes, is ignored."""
        self._futures.pop(ctx, None)

    def answered(self, states: Iterable[ReadState], dropped: Iterable[Any], applied: int) -> None:
        """Take a Ready's ``read_states`` and ``reads_dropped``; ``applied`` is the applied index."""
        for ctx in dropped:
            self._complete(ctx, False)
        for st in states:
            if st.index <= applied:
                self._complete(st.ctx, True)
            elif st.ctx in self._futures:
                heapq.heappush(self._waiting, (st.index, st.ctx))

    def applied(self, index: int) -> None:
        """The state machine has applied everything up to ``index``: release the reads it covers."""
        waiting = self._waiting
        while waiting and waiting[0][0] <= index:
            _, ctx = heapq.heappop(waiting)
            self._complete(ctx, True)

    def fail_all(self) -> None:
        futures, self._futures = self._futures, {}
        self._waiting = []
        for fut in futures.values():
            if not fut.done():
                fut.set_result(False)

    def _complete(self, ctx: Any, ok: bool) -> None:
        fut = self._futures.pop(ctx, None)
        if fut is not None and not fut.done():
            fut.set_result(ok)


class ReadIndexServing:
    """Mixin for a service replica (:class:`actors.service_server.ServiceReplica` subclass; list it
    first among the bases) that serves read-only batches with ReadIndex instead of the log.

    The service's state machine answers one read with ``read(op, now_ms, ttl)`` (the result, or
    :data:`NEEDS_LOG`; a service may override :meth:`_read_op` instead), where ``now_ms`` and ``ttl``
    are what this leader would stamp an entry with now (its clock and the session TTL): a session
    idle for longer than half the TTL by the newer of that clock and the log's is read through the
    log, which renews it (see :mod:`actors.sessions`, "Readers renew through the log"). The service
    calls :meth:`_serve_reads` for a batch of reads: ``(ok, results)``, the
    answers a proposal would get (``wrong_leader``, ``timeout``, ``None`` when down), or
    :data:`NEEDS_LOG` when the batch must be proposed instead. ``spec.extra["read_path"]`` is
    ``"index"`` (the default) or ``"log"`` (every read through the log).

    Invariants: a read is served only after :meth:`_read_index` answered ``True`` in the incarnation
    it began in, that is after a heartbeat round that started after the read arrived confirmed this
    peer's leadership and its state machine applied everything committed before the read arrived;
    any state from then on lies inside the read's call, so the read is linearizable.
    """

    #: ReadIndex needs an entry of the leader's term committed: run with the services' core rules
    #: (the leader's no-op, PreVote, CheckQuorum), as every service does
    default_rules = SERVICE_RULES

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)  # type: ignore[call-arg]
        self._reads = ReadWaiters()
        self._read_noop_term = -1  # the term in which a read proposed a no-op (leader_noop off)
        self._read_path = spec.extra.get("read_path", "index")
        if self._read_path not in READ_PATHS:
            raise ValueError(f"read_path must be one of {READ_PATHS}, got {self._read_path!r}")

    def _read_op(self, sm: Any, op: Any, now_ms: int, ttl: int) -> Any:
        """The result of the read-only ``op`` on ``sm`` as it is now, or :data:`NEEDS_LOG` (``now_ms``
        and ``ttl``: this leader's clock and session TTL, see the class docstring)."""
        return sm.read(op, now_ms, ttl)

    async def _serve_reads(self, ops: Any) -> Any:
        """Serve a batch of read-only operations with ReadIndex (see the class docstring)."""
        from actors.service_protocol import OK

        me: Any = self
        sm = me.sm
        if sm is None or me.core is None:
            return None
        if self._read_path != "index":
            return NEEDS_LOG
        now_ms, ttl = me._log_time()
        if any(self._read_op(sm, op, now_ms, ttl) is NEEDS_LOG for op in ops):
            return NEEDS_LOG
        inc = me.incarnation
        ready = await self._read_index()
        if ready is not True:
            return ready
        sm = me.sm
        if sm is None or inc != me.incarnation:
            return None
        now_ms, ttl = me._log_time()
        results = [self._read_op(sm, op, now_ms, ttl) for op in ops]
        if any(r is NEEDS_LOG for r in results):  # e.g. a session expired or became due meanwhile
            return NEEDS_LOG
        return OK, results

    async def _read_index(self) -> Any:
        """Wait until this peer may serve a linearizable read from its state machine: ``True``, or the
        answer to give instead (``(wrong_leader, hint)``, ``(timeout, None)``, ``None`` when down)."""
        from actors.service_protocol import TIMEOUT, WRONG_LEADER

        me: Any = self
        core = me.core
        if core is None:
            return None
        started = self._reads.start(core)
        if started is None:
            return WRONG_LEADER, core.leader_id
        if (core.log.term_at(core.log.commit) != core.term and core.log.last_term != core.term
                and self._read_noop_term != core.term):
            # No entry of this term yet (the core's leader_noop is off): reads wait for one to commit.
            self._read_noop_term = core.term
            core.propose(None)
        ctx, fut = started
        me._schedule_flush()
        try:
            ok = await asyncio.wait_for(fut, me._wait_s)
        except asyncio.TimeoutError:
            self._reads.forget(ctx)
            return TIMEOUT, None
        core = me.core
        if not ok:  # dropped, deposed, or failed by a crash: answered like a failed proposal
            return WRONG_LEADER, (core.leader_id if core is not None else None)
        if core is None:
            return None
        return True

    def _after_apply(self, rd: Any, applied: int) -> None:
        reads = self._reads
        if rd.read_states or rd.reads_dropped:
            reads.answered(rd.read_states, rd.reads_dropped, applied)
        if len(reads):
            reads.applied(applied)

    async def crash(self) -> None:
        self._reads.fail_all()
        await super().crash()  # type: ignore[misc]
