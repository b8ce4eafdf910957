"""The asyncio controller clerk: many requests in flight from one event loop, coalesced into batches.

The same design as :mod:`kvraft.async_clerk`, and the same code: the shared asyncio clerk
(:class:`actors.service_async_clerk.AsyncGroupClerk`). Every ``await clerk.join(...)`` (``leave``,
``move``, ``query``) is checked, numbered and queued; one sender task sends everything queued (up to
``max_batch``) as one call, resends it until a leader answers ``ok``, fans the results back out, and
only then sends the next batch. So the clerk's operations reach the log in the order of their
numbers, which the dedup table relies on. A caller whose ``timeout`` passes gets
:class:`~shardctrler.errors.CtrlerTimeoutError` at once and its operation is dropped from later
resends of its batch.

It never blocks the event loop (no ``ray.get``), so a replica actor of a shard group may use it to
poll the controller. It belongs to the event loop it is first used on; it is not thread-safe.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from actors.service_async_clerk import AsyncGroupClerk
from actors.service_protocol import check_timeout
from shardctrler.clerk import ClerkCore, result_of
from shardctrler.config import Config
from shardctrler.endpoints import Endpoints
from shardctrler.ops import JOIN, LEAVE, MOVE, QUERY, Op, describe

#: default upper bound on the operations in one call
DEFAULT_MAX_BATCH = 256


class AsyncClerk(AsyncGroupClerk, ClerkCore):
    """The asyncio clerk; see the module docstring. ``max_batch`` bounds the operations per call."""

    def __init__(self, endpoints: Endpoints, *, max_batch: int = DEFAULT_MAX_BATCH, **options: Any) -> None:
        super().__init__(endpoints, max_batch=max_batch, **options)

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

    def describe_op(self, op: Op) -> str:
        return describe(op[0], op[1])

    async def _submit(self, kind: int, args: Any, timeout: float | None) -> Any:
        check_timeout(timeout)
        op = self.make_op(kind, args)
        return result_of(op, await self._submit_op(op, timeout))
