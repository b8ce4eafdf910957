"""The asyncio clerk of the sharded KV: many requests in flight from one event loop, batched per group.

Every ``await clerk.put(...)`` (``get``, ``append``) is numbered and queued under its shard. A sender
task per group takes everything queued on the shards that group owns in the cached configuration
(up to ``max_batch`` operations) and sends it as one call, so while a call is in flight the next
batch fills up by itself (as kvraft's asyncio clerk does, per group here). The results are fanned
back out to the callers.

Order and exactly-once. A shard has at most one call in flight (a *busy* shard is not taken into
another batch until the call returns), and operations that come back wrong-group, or whose call got
no answer from any server of the group, go back to the *front* of their shard's queue, in order. So
one clerk's operations on one shard reach the servers in the order of their numbers, which is what
each shard's dedup table relies on (:mod:`shardkv.statemachine`).

Moving shards wait alone. A shard whose operations came back wrong-group (or unanswered) is *parked*:
it is taken into no batch until the clerk has a newer configuration than the one it was refused
under, or until its own ``retry_pause`` has passed (its shard still moving: the servers have not
installed it yet). The new configuration is asked for at once, in the background (one query at a
time, shared by every parked shard), and the group's sender carries on with its other shards. So a
moving shard holds up only its own operations, and the controller is asked at most about once per
``retry_pause`` per moving shard.

A caller whose ``timeout`` passes gets :class:`~shardkv.errors.ShardKVTimeoutError` at once; its
operation is dropped from later batches (it may still take effect, once and atomically, from an
earlier send, but not after a later operation of this clerk on the same shard has completed). The
clerk belongs to the event loop it is first used on; it is not thread-safe. It never blocks the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from actors.sessions import SessionExpired
from shardctrler.async_clerk import AsyncClerk as CtrlerAsyncClerk
from shardkv.clerk import ClerkCore, check_timeout, is_wrong_group, outcome
from shardkv.errors import ShardKVRequestError, ShardKVTimeoutError
from shardkv.ops import APPEND, GET, INVALID, OK, PUT, Op, OpError, check_key, describe

#: default upper bound on the operations in one call
DEFAULT_MAX_BATCH = 1024


@dataclass(eq=False, slots=True)
class _Pending:
    op: Op
    future: asyncio.Future[Any]
    tried: list[str] = field(default_factory=list)
    last: str = "not sent yet"
    #: loop time of its first send (None: never sent, so it may be renumbered in a new session)
    first_sent: float | None = None
    #: calls that carried it (more than one: an earlier copy may have been applied)
    attempts: int = 0


class AsyncClerk(ClerkCore):
    """The asyncio clerk; see the module docstring. ``max_batch`` bounds the operations per call."""

    def __init__(self, router: Any, ctrlers: tuple[str, ...] | list[str], *,
                 max_batch: int = DEFAULT_MAX_BATCH, **options: Any) -> None:
        super().__init__(router, ctrlers, **options)
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.max_batch = max_batch
        self._queues: dict[int, deque[_Pending]] = {}
        self._busy: set[int] = set()
        #: per parked shard: (the configuration number it was refused under, loop time it may retry)
        self._parked: dict[int, tuple[int, float]] = {}
        self._wakeups: set[asyncio.TimerHandle] = set()
        self._senders: dict[int, asyncio.Task[None]] = {}
        self._refreshing: asyncio.Task[None] | None = None
        self._ctrl: CtrlerAsyncClerk | None = None
        self.calls = 0  # calls sent to groups (ops / calls is the batching factor)

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
        """Stop the senders; queued operations fail with ``asyncio.CancelledError``."""
        tasks = [*self._senders.values(), *([self._refreshing] if self._refreshing else [])]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._senders.clear()
        self._refreshing = None
        for h in self._wakeups:
            h.cancel()
        self._wakeups.clear()
        self._parked.clear()
        for q in self._queues.values():
            for p in q:
                p.future.cancel()
        self._queues.clear()
        self._busy.clear()
        if self._ctrl is not None:
            await self._ctrl.close()

    # -- submitting ------------------------------------------------------------------------------

    async def _submit(self, kind: int, key: Any, value: Any, timeout: float | None) -> Any:
        check_timeout(timeout)
        check_key(key, self.max_key_bytes)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while self.config is None:
            try:
                await asyncio.wait_for(asyncio.shield(self._refresh(pause=False)),
                                       None if deadline is None else max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                raise ShardKVTimeoutError(describe(kind, key), timeout or 0.0, -1, -1, [],
                                          "the controller did not answer") from None
        op = self.make_op(kind, key, value, self.config.nshards)
        pending = _Pending(op, loop.create_future())
        self._queues.setdefault(op[5], deque()).append(pending)
        self._kick()
        if deadline is None:
            return await pending.future
        try:
            return await asyncio.wait_for(pending.future, max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError:
            raise ShardKVTimeoutError(describe(kind, key), timeout or 0.0, op[5], self._num(),
                                      pending.tried, pending.last) from None

    def _num(self) -> int:
        return self.config.num if self.config is not None else -1

    def _kick(self) -> None:
        """Start a sender for every group that owns a shard with operations waiting (and not parked);
        ask for a new configuration if a shard with operations waiting has no group."""
        config = self.config
        if config is None:
            return
        orphaned = False
        for shard, q in self._queues.items():
            if not q or shard in self._busy or not self._unparked(shard):
                continue
            gid, servers = self.servers_for(shard)
            if not servers:
                orphaned = True
                continue
            sender = self._senders.get(gid)
            if sender is None or sender.done():
                self._senders[gid] = asyncio.get_running_loop().create_task(self._send_loop(gid))
        if orphaned:
            self._request_refresh()

    # -- parking moving shards ---------------------------------------------------------------------

    def _park(self, shards: set[int]) -> None:
        """Hold ``shards`` (refused as wrong-group, or unanswered, under the cached configuration) out
        of every batch until a newer configuration arrives or ``retry_pause`` passes, and ask the
        controller for the latest configuration now, without pausing any sender."""
        loop = asyncio.get_running_loop()
        until = loop.time() + self.retry_pause
        for shard in shards:
            self._parked[shard] = (self._num(), until)
        handle = loop.call_at(until, self._wake)
        self._wakeups.add(handle)
        self._refresh(pause=False)

    def _wake(self) -> None:
        """A parked shard's pause is over: drop spent timers and send what may go now."""
        now = asyncio.get_running_loop().time()
        self._wakeups = {h for h in self._wakeups if h.when() > now}
        self._kick()

    def _unparked(self, shard: int) -> bool:
        """Whether ``shard`` may be sent now (unparking it if its wait is over). Invariant: a parked
        shard's queue is not sent from until the configuration is newer than the one it was refused
        under or its own pause has passed; other shards are never held up by it."""
        hold = self._parked.get(shard)
        if hold is None:
            return True
        num, until = hold
        if self._num() > num or asyncio.get_running_loop().time() >= until:
            del self._parked[shard]
            return True
        return False

    # -- sending ---------------------------------------------------------------------------------

    def _take(self, gid: int) -> list[_Pending]:
        """The operations waiting on shards ``gid`` owns that have no call in flight (up to
        ``max_batch``), in queue order per shard, skipping parked shards; their shards become busy."""
        batch: list[_Pending] = []
        for shard, q in self._queues.items():
            if shard in self._busy or not q or self.servers_for(shard)[0] != gid or not self._unparked(shard):
                continue
            while q and q[0].future.done():  # its caller gave up
                q.popleft()
            taken = 0
            while q and len(batch) < self.max_batch:
                p = q.popleft()
                if not p.future.done():
                    batch.append(p)
                    taken += 1
            if taken:
                self._busy.add(shard)
            if len(batch) >= self.max_batch:
                break
        return batch

    def _renew(self, shards: set[int], reads: list[_Pending]) -> None:
        """New sessions for ``shards``: ``reads`` (refused in the old ones) go back to the front of their
        shards' queues, and every operation there that was never sent is renumbered, in order."""
        for shard in sorted(shards):
            self.renew_shard(shard)
            q = self._queues.setdefault(shard, deque())
            again = [p for p in reads if p.op[5] == shard]
            for p in again:
                p.first_sent, p.attempts = None, 0
            items = again + list(q)
            for p in items:
                if p.first_sent is None:
                    p.op = self.renumber(p.op)
            self._queues[shard] = deque(items)

    def _give_back(self, ops: list[_Pending]) -> None:
        """Put unanswered operations back at the front of their shards' queues, in order."""
        by_shard: dict[int, list[_Pending]] = {}
        for p in ops:
            by_shard.setdefault(p.op[5], []).append(p)
        for shard, ps in by_shard.items():
            q = self._queues.setdefault(shard, deque())
            q.extendleft(reversed(ps))

    async def _send_loop(self, gid: int) -> None:
        batch: list[_Pending] = []
        try:
            while True:
                batch = self._take(gid)
                if not batch:
                    return
                shards = {p.op[5] for p in batch}
                try:
                    retry = await self._send_batch(gid, batch)
                finally:
                    self._busy.difference_update(shards)
                if retry:
                    self._give_back(retry)
                    self._park({p.op[5] for p in retry})
                self._kick()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug or a broken router: fail the callers instead of hanging them
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(e)

    async def _send_batch(self, gid: int, batch: list[_Pending]) -> list[_Pending]:
        """Send ``batch`` to group ``gid`` (one round of its servers); returns the operations to
        retry under a fresh configuration (wrong group, or no server answered)."""
        servers = self.config.groups.get(gid, ()) if self.config is not None else ()
        n = len(servers)
        i = self.leaders.get(gid, 0) % max(n, 1)
        live = batch
        loop = asyncio.get_running_loop()
        for _ in range(n):
            live = [p for p in live if not p.future.done()]
            if self.give_up_s is not None:
                now = loop.time()
                late = [p for p in live if p.first_sent is not None and now - p.first_sent > self.give_up_s]
                if late:
                    for p in late:
                        p.future.set_exception(self.expired(p.op, p.op[3], p.op[4], True,
                                                            " (resent for half the session TTL)"))
                    self._renew({p.op[5] for p in late}, [])
                    live = [p for p in live if not p.future.done()]
            if not live:
                return []
            name = servers[i]
            now = loop.time()
            for p in live:
                p.attempts += 1
                if p.first_sent is None:
                    p.first_sent = now
            for p in live:
                if name not in p.tried:
                    p.tried.append(name)
            self.calls += 1
            reply = await self.router.acall(name, "kv", (tuple(p.op for p in live),), self.attempt_timeout)
            if isinstance(reply, tuple) and reply[0] == OK and len(reply[1]) == len(live):
                self.leaders[gid] = i
                retry = []
                reads: list[_Pending] = []
                expired: set[int] = set()
                for p, result in zip(live, reply[1], strict=True):
                    if is_wrong_group(result):
                        p.last = f"{name}: wrong group (configuration {self._num()})"
                        retry.append(p)
                    elif p.future.done():
                        continue
                    elif isinstance(result, SessionExpired):
                        expired.add(p.op[5])
                        if p.op[0] == GET:
                            reads.append(p)  # a read: again, in the shard's new session
                        else:
                            p.future.set_exception(self.expired(p.op, result.client_id, result.seq,
                                                                p.attempts > 1))
                    elif isinstance(result, OpError):
                        p.future.set_exception(self.refused(p.op, result))
                    else:
                        p.future.set_result(result)
                if expired:
                    self._renew(expired, reads)
                return retry
            if isinstance(reply, tuple) and reply[0] == INVALID:
                for p in live:
                    if not p.future.done():
                        p.future.set_exception(ShardKVRequestError(
                            describe(p.op[0], p.op[1]), INVALID, f"{name} refused the call: {reply[1]}"))
                return []
            for p in live:
                p.last = f"{name}: {outcome(reply)}"
            i = self.next_server(gid, i, n, reply)
        return [p for p in live if not p.future.done()]

    # -- configuration ---------------------------------------------------------------------------

    def _request_refresh(self) -> None:
        """Ask for a new configuration after ``retry_pause`` (a shard has no group: nothing to send)."""
        self._refresh(pause=True)

    def _refresh(self, pause: bool) -> asyncio.Task[None]:
        """The running refresh, or a new one (pausing ``retry_pause`` first if ``pause``). At most one
        query is in flight; every caller that wants a newer configuration shares it."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.get_running_loop().create_task(self._do_refresh(pause))
            self._refreshing.add_done_callback(self._refreshed)
        return self._refreshing

    def _refreshed(self, task: asyncio.Task[None]) -> None:
        """A refresh that failed (a bug or a broken controller router) fails the operations of the
        parked shards instead of hanging them; they would only be refused again."""
        if task.cancelled() or task.exception() is None:
            return
        e = task.exception()
        for shard in list(self._parked):
            for p in self._queues.get(shard, ()):
                if not p.future.done():
                    p.future.set_exception(e)  # type: ignore[arg-type]

    async def _do_refresh(self, pause: bool) -> None:
        if pause:
            await asyncio.sleep(self.retry_pause)
        if self._ctrl is None:
            endpoints = await self.ctrler_endpoints.aensure()
            self._ctrl = CtrlerAsyncClerk(endpoints, attempt_timeout=self.attempt_timeout,  # type: ignore[arg-type]
                                          retry_pause=self.retry_pause, session_ttl=self.session_ttl)
        try:
            config = await self._ctrl.query(-1, timeout=3 * self.attempt_timeout)
        except TimeoutError:
            return
        self.update_config(config)
        # after this task is done, so that a kick that finds an orphaned shard can ask again
        asyncio.get_running_loop().call_soon(self._kick)
