"""The asyncio controller clerk: many requests in flight from one event loop, coalesced into batches.

The same design as :mod:`kvraft.async_clerk` (written again here so that services do not import each
other): every ``await clerk.join(...)`` (``leave``, ``move``, ``query``) is checked, numbered and
queued; one sender task sends everything queued (up to ``max_batch``) as one call, resends it until a
leader answers ``ok``, fans the results back out, and only then sends the next batch. So the clerk's
operations reach the log in the order of their numbers, which the dedup table relies on. A caller
whose ``timeout`` passes gets :class:`~shardctrler.errors.CtrlerTimeoutError` at once and its
operation is dropped from later resends of its batch.

It never blocks the event loop (no ``ray.get``), so a replica actor of a shard group may use it to
poll the controller. It belongs to the event loop it is first used on; it is not thread-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shardctrler.clerk import ClerkCore, check_timeout, result_of
from shardctrler.config import Config
from shardctrler.endpoints import Endpoints
from shardctrler.errors import CtrlerTimeoutError
from shardctrler.ops import JOIN, LEAVE, MOVE, OK, QUERY, Op, describe

#: default upper bound on the operations in one call
DEFAULT_MAX_BATCH = 256


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
        self.calls = 0  # calls sent (ops / calls is the batching factor)

    async def join(self, groups: Mapping[int, Sequence[str]], *, timeout: float | None = None) -> int:
        """Add the groups ``{gid: [server, ...]}``; returns the new configuration's number."""
        return await self._submit(JOIN, groups, timeout)  # type: ignore[no-any-return]

    async def leave(self, gids: Iterable[int], *, timeout: float | None = None) -> int:
        """Remove the groups ``gids``; returns the new configuration's number."""
        return await self._submit(LEAVE, gids, timeout)  # type: ignore[no-any-return]

    async def move(self, shard: int, gid: int, *, timeout: float | None = None) -> int:
        """Put ``shard`` on group ``gid``; returns the new configuration's number."""
        return await self._submit(MOVE, (shard, gid), timeout)  # type: ignore[no-any-return]

    async def query(self, num: int = -1, *, timeout: float | None = None) -> Config:
        """Configuration ``num``; the latest for ``-1`` (or for a number above the latest)."""
        return await self._submit(QUERY, num, timeout)  # type: ignore[no-any-return]

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

    async def _submit(self, kind: int, args: Any, timeout: float | None) -> Any:
        check_timeout(timeout)
        op = self.make_op(kind, args)
        loop = asyncio.get_running_loop()
        pending = _Pending(op, loop.create_future())
        self._queue.append(pending)
        if self._sender is None or self._sender.done():
            self._sender = loop.create_task(self._send_loop())
        if timeout is None:
            result = await pending.future
        else:
            try:
                result = await asyncio.wait_for(pending.future, timeout)
            except asyncio.TimeoutError:
                raise CtrlerTimeoutError(describe(kind, op[1]), timeout, pending.tried,
                                         pending.last[0]) from None
        return result_of(op, result)

    async def _send_loop(self) -> None:
        batch: list[_Pending] = []
        try:
            while self._queue:
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
                await self._send_batch(batch)
        except Exception as e:  # a bug, a malformed call or a broken endpoint: fail the callers
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
            self.check_reply(server, reply)
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
