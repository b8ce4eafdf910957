"""The asyncio clerk: many requests in flight from one process, coalesced into batches.

Every ``await clerk.put(...)`` (``get``, ``append``) is numbered and queued. One sender task sends the
queue: it takes every operation waiting (up to ``max_batch``) and sends them as one call, so while a
call is in flight the next batch fills up by itself (as a Kafka producer lingers to fill a batch,
with no artificial delay: the first operation goes at once). When the leader answers, the results
are fanned back out to the callers. Then the next batch goes.

Order and exactly-once. There is at most one batch in flight, and it is resent (to the next server,
or to the leader a server names) until some leader answers ``ok``; only then does the next batch
go. So the clerk's operations reach the log in the order of their numbers, which is what the
servers' dedup table relies on (:mod:`kvraft.statemachine`). A caller whose ``timeout`` passes gets
:class:`~kvraft.errors.KVTimeoutError` at once; its operation is dropped from later resends of its
batch (it may still take effect, once and atomically, from an earlier send, but not after any later
operation of this clerk has completed).

The clerk belongs to the event loop it is first used on; it is not thread-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from kvraft.clerk import ClerkCore, describe
from kvraft.endpoints import Endpoints
from kvraft.errors import KVRejectedError, KVTimeoutError
from kvraft.ops import APPEND, GET, INVALID, OK, PUT, Op

#: default upper bound on the operations in one call
DEFAULT_MAX_BATCH = 1024


@dataclass(eq=False, slots=True)
class _Pending:
    op: Op
    future: asyncio.Future[Any]
    #: servers tried for the batch this operation is in, shared by the batch (for the error message)
    tried: list[str] = field(default_factory=list)
    last: list[str] = field(default_factory=lambda: ["not sent yet"])


class AsyncClerk(ClerkCore):
    """The asyncio clerk; see the module docstring. ``max_batch`` bounds the operations per call."""

    def __init__(self, endpoints: Endpoints, *, max_batch: int = DEFAULT_MAX_BATCH, **options: Any) -> None:
        super().__init__(endpoints, **options)
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.max_batch = max_batch
        self._queue: list[_Pending] = []
        self._sender: asyncio.Task[None] | None = None
        self.calls = 0  # calls sent (for benchmarks and tests: ops / calls is the batching factor)

    async def get(self, key: str, *, timeout: float | None = None) -> str:
        """The value of ``key`` (``""`` if it was never written)."""
        return await self._submit(GET, key, None, timeout)  # type: ignore[no-any-return]

    async def put(self, key: str, value: str, *, timeout: float | None = None) -> None:
        """Set ``key`` to ``value``."""
        await self._submit(PUT, key, value, timeout)

    async def append(self, key: str, value: str, *, timeout: float | None = None) -> None:
        """Append ``value`` to the value of ``key``; returns nothing."""
        await self._submit(APPEND, key, value, timeout)

    async def close(self) -> None:
        """Stop the sender; queued operations fail with ``asyncio.CancelledError``."""
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
            self._sender = None
        for p in self._queue:
            p.future.cancel()
        self._queue.clear()

    async def _submit(self, kind: int, key: Any, value: Any, timeout: float | None) -> Any:
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be > 0 (or None to retry forever), got {timeout}")
        op = self.make_op(kind, key, value)
        loop = asyncio.get_running_loop()
        pending = _Pending(op, loop.create_future())
        self._queue.append(pending)
        if self._sender is None or self._sender.done():
            self._sender = loop.create_task(self._send_loop())
        if timeout is None:
            return await pending.future
        try:
            return await asyncio.wait_for(pending.future, timeout)
        except asyncio.TimeoutError:
            raise KVTimeoutError(describe(kind, key), timeout, pending.tried, pending.last[0]) from None

    async def _send_loop(self) -> None:
        batch: list[_Pending] = []
        try:
            while self._queue:
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
                await self._send_batch(batch)
        except Exception as e:  # a bug or a broken endpoint: fail the callers instead of hanging them
            for p in batch + self._queue:
                if not p.future.done():
                    p.future.set_exception(e)
            self._queue.clear()

    async def _send_batch(self, batch: list[_Pending]) -> None:
        tried: list[str] = []
        last = ["not sent yet"]
        for p in batch:
            p.tried, p.last = tried, last
        server = self.leader
        failed_in_a_row = 0
        while True:
            live = [p for p in batch if not p.future.done()]
            if not live:
                return  # every caller gave up
            name = self.endpoints.names[server]
            if name not in tried:
                tried.append(name)
            reply = await self._call(server, tuple(p.op for p in live))
            if isinstance(reply, tuple) and reply[0] == OK:
                self.leader = server
                for p, result in zip(live, reply[1], strict=True):
                    if not p.future.done():
                        p.future.set_result(result)
                return
            if isinstance(reply, tuple) and reply[0] == INVALID:  # nothing was proposed: fail them
                for p in live:
                    if not p.future.done():
                        p.future.set_exception(KVRejectedError(name, str(reply[1])))
                return
            last[0] = f"{name}: " + (f"no answer within {self.attempt_timeout:.2g} s"
                                     if reply == "no answer" else self.outcome(reply))
            server = self.route(server, reply)
            failed_in_a_row += 1
            if failed_in_a_row % self.n == 0:
                await asyncio.sleep(self.retry_pause)

    async def _call(self, server: int, ops: tuple[Op, ...]) -> Any:
        self.calls += 1
        try:
            ref = self.endpoints.submit(server, ops)
            value = await asyncio.wait_for(asyncio.wrap_future(ref.future()), self.attempt_timeout)
        except asyncio.TimeoutError:
            return "no answer"
        except Exception:  # a Ray error: the actor died or the call failed
            return None
        return self.endpoints.unpack(value)
