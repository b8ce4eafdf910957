"""The asyncio clerk every single-group service shares: many callers in flight, one call per batch.

Every submitted operation (already checked and numbered by the service's clerk) is queued. One
sender task sends the queue: it takes every operation waiting (up to ``max_batch``) and sends them as
one call, so while a call is in flight the next batch fills up by itself (as a Kafka producer
lingers to fill a batch, with no artificial delay: the first operation goes at once). When the
leader answers, the results are fanned back out to the callers. Then the next batch goes.

Order and exactly-once. There is at most one batch in flight, and it is resent (to the next server,
or to the leader a server names) until some leader answers ``ok``; only then does the next batch
go. So the clerk's operations reach the log in the order of their numbers, which is what the
services' dedup tables rely on. A caller whose ``timeout`` passes gets the service's
:attr:`~actors.service_clerk.GroupClerkCore.timeout_error` at once; its operation is dropped from
later resends of its batch (it may still take effect, once and atomically, from an earlier send,
but not after any later operation of this clerk has completed). A batch refused as malformed
fails its callers with the service's :meth:`~actors.service_clerk.GroupClerkCore.rejected` error.

Sessions (see :mod:`actors.service_clerk`): when the leader refuses a batch because the clerk's session
expired, the clerk starts a new session, renumbers the operations still queued (never sent, so safe to
renumber) and puts the batch's reads back in front of them, renumbered; the batch's writes fail with
:class:`~actors.sessions.SessionExpiredError`. A batch resent for longer than half the session TTL
fails the same way (and the clerk moves to a new session).

The clerk belongs to the event loop it is first used on; it is not thread-safe. It never blocks the
loop (no ``ray.get``), so an async actor may use it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from actors.service_clerk import GroupClerkCore
from actors.service_endpoints import Endpoints
from actors.service_protocol import INVALID, OK
from actors.sessions import SessionExpired

#: what a queued operation's ``tried`` and ``last`` are before its batch is first sent (shared, never
#: changed: a batch gives its operations lists of their own when it is sent)
_NOT_TRIED: tuple[str, ...] = ()
_NOT_SENT: tuple[str, ...] = ("not sent yet",)


class _Pending:
    """One submitted operation and its caller's future (a plain slotted class: one is made per
    operation, on the path of every write)."""

    __slots__ = ("future", "last", "op", "tried")

    def __init__(self, op: Any, future: asyncio.Future[Any]) -> None:
        self.op = op
        self.future = future
        #: servers tried for the batch this operation is in, shared by the batch (for the error message)
        self.tried: Sequence[str] = _NOT_TRIED
        #: the last outcome of the batch, in a one-element list shared by the batch
        self.last: Sequence[str] = _NOT_SENT


class AsyncGroupClerk(GroupClerkCore):
    """The batching sender; see the module docstring. ``max_batch`` bounds the operations per call.

    A service's clerk numbers an operation and awaits :meth:`_submit_op`; :meth:`describe_op` names
    an operation in a timeout error.
    """

    def __init__(self, endpoints: Endpoints, *, max_batch: int, **options: Any) -> None:
        super().__init__(endpoints, **options)
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.max_batch = max_batch
        self._queue: list[_Pending] = []
        self._sender: asyncio.Task[None] | None = None
        self.calls = 0  # calls sent (for benchmarks and tests: ops / calls is the batching factor)

    async def close(self) -> None:
        """Stop the sender; queued operations fail with ``asyncio.CancelledError``; the endpoint set's
        connections on this event loop are closed (stream endpoints: a later call reconnects)."""
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
            self._sender = None
        for p in self._queue:
            p.future.cancel()
        self._queue.clear()
        aclose = getattr(self._calls, "aclose", None)
        if aclose is not None:
            await aclose()

    async def _submit_op(self, op: Any, timeout: float | None) -> Any:
        """Queue the numbered ``op`` and return its result once a leader applied it."""
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
            raise self.timeout_error(self.describe_op(op), timeout, pending.tried,  # type: ignore[call-arg]
                                     pending.last[0]) from None

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
        attempts = 0
        loop = asyncio.get_running_loop()
        start = loop.time()
        while True:
            live = [p for p in batch if not p.future.done()]
            if not live:
                return  # every caller gave up
            if self.give_up_s is not None and loop.time() - start > self.give_up_s:
                self._renew_session([])
                for p in live:
                    p.future.set_exception(self.gave_up(p.op, loop.time() - start))
                return
            name = self.endpoints.names[server]
            if name not in tried:
                tried.append(name)
            reply = await self._call(server, tuple(p.op for p in live))
            attempts += 1
            if isinstance(reply, tuple) and reply[0] == OK:
                self.leader = server
                again: list[_Pending] = []
                for p, result in zip(live, reply[1], strict=True):
                    if p.future.done():
                        continue
                    if not isinstance(result, SessionExpired):
                        p.future.set_result(result)
                    elif self.is_read(p.op):
                        again.append(p)
                    else:
                        p.future.set_exception(self.expired(p.op, result, attempts > 1))
                if again or any(isinstance(r, SessionExpired) for r in reply[1]):
                    self._renew_session(again)
                return
            if isinstance(reply, tuple) and reply[0] == INVALID:  # nothing was proposed: fail them
                for p in live:
                    if not p.future.done():
                        p.future.set_exception(self.rejected(name, str(reply[1])))
                return
            last[0] = self.failed_attempt(name, reply, self.attempt_timeout)
            server = self.route(server, reply)
            failed_in_a_row += 1
            if failed_in_a_row % self.n == 0:
                await asyncio.sleep(self.retry_pause)

    def _renew_session(self, reads: list[_Pending]) -> None:
        """Start a new session: ``reads`` (refused in the old one) go back to the front of the queue,
        and everything queued is renumbered in order (none of it was ever sent)."""
        self.new_session()
        queue = reads + self._queue
        for p in queue:
            p.op = self.renumber(p.op)
        self._queue = queue

    async def _call(self, server: int, ops: tuple[Any, ...]) -> Any:
        """One attempt: the reply, ``NO_ANSWER`` after ``attempt_timeout``, ``None`` for a failed call."""
        self.calls += 1
        return await self._calls.acall(server, ops, self.attempt_timeout)
