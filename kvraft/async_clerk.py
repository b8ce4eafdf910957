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

The queue, the sender and the fan-out are the shared asyncio clerk
(:class:`actors.service_async_clerk.AsyncGroupClerk`); this module adds the KV operations. The clerk
belongs to the event loop it is first used on; it is not thread-safe.
"""

from __future__ import annotations

from typing import Any

from actors.service_async_clerk import AsyncGroupClerk
from actors.service_protocol import check_timeout
from kvraft.clerk import ClerkCore
from kvraft.endpoints import Endpoints
from kvraft.ops import APPEND, GET, PUT

#: default upper bound on the operations in one call
DEFAULT_MAX_BATCH = 1024


class AsyncClerk(AsyncGroupClerk, ClerkCore):
    """The asyncio clerk; see the module docstring. ``max_batch`` bounds the operations per call."""

    def __init__(self, endpoints: Endpoints, *, max_batch: int = DEFAULT_MAX_BATCH, **options: Any) -> None:
        super().__init__(endpoints, max_batch=max_batch, **options)

    async def get(self, key: str, *, timeout: float | None = None) -> str:
        """The value of ``key`` (``""`` if it was never written)."""
        return await self._submit(GET, key, None, timeout)  # type: ignore[no-any-return]

    async def put(self, key: str, value: str, *, timeout: float | None = None) -> None:
        """Set ``key`` to ``value``."""
        if timeout is not None:  # the hot path of every write: one coroutine frame fewer than _submit
            check_timeout(timeout)
        await self._submit_op(self.make_op(PUT, key, value), timeout)

    async def append(self, key: str, value: str, *, timeout: float | None = None) -> None:
        """Append ``value`` to the value of ``key``; returns nothing."""
        await self._submit(APPEND, key, value, timeout)

    async def _submit(self, kind: int, key: Any, value: Any, timeout: float | None) -> Any:
        check_timeout(timeout)
        return await self._submit_op(self.make_op(kind, key, value), timeout)
