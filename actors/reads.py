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
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Iterable
from typing import Any

from raft import RaftNode, ReadState

#: What a service's read function returns for an operation that only the log can answer (malformed,
#: or a client the dedup table must first open or refuse): the whole batch then goes through the log.
NEEDS_LOG: Any = type("NeedsLog", (), {"__repr__": lambda self: "NEEDS_LOG"})()


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
