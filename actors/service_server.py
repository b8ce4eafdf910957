"""The server core every replicated service shares: a :class:`~actors.replica.ReplicaActor` that
proposes a command, waits until the entry is applied, and answers with the result.

A service's replica (``kvraft.server.KVReplica``, ``shardctrler.server.CtrlerReplica``,
``shardkv.server.ShardKVReplica``) subclasses :class:`ServiceReplica` and adds its RPCs; the
machinery of waiting is here, once:

- :meth:`ServiceReplica._propose_wait` proposes one command and answers ``("ok", result)`` once the
  entry is applied in this leader's term, ``("wrong_leader", hint)`` if this peer is not the leader,
  is deposed while waiting, or the entry at its index turns out to be another leader's,
  ``("timeout", None)`` after ``server_wait_s`` (a minority leader, say), or ``None`` when this peer
  is down;
- :meth:`ServiceReplica._serve_batch` first checks a clerk's batch with the service's
  :meth:`~ServiceReplica._batch_problem` and answers ``("invalid", reason)`` for a malformed one,
  before anything is proposed;
- :meth:`ServiceReplica._serve_pickled` is the same for clerks that call the actor directly with
  the batch and the answer pickled by the caller (one bytes argument costs Ray far less to move than
  nested tuples); a payload that is not a pickle is answered ``invalid`` too.

Every command is proposed *stamped* (:func:`actors.sessions.stamp`) with this leader's wall-clock
time in milliseconds and the session TTL (``spec.extra["session_ttl"]``, seconds, ``None`` for never;
default :data:`~actors.sessions.DEFAULT_SESSION_TTL_S`): the clock is read here, in the shell, and the
state machines take time only from their log (see :mod:`actors.sessions`).

Batching happens on its own: every proposal made by the calls that arrive in one turn of the event
loop is folded by the core into one AppendEntries per follower and persisted with one fsync.

Invariants: a waiter is completed at most once; it gets ``ok`` only with the result of the entry it
proposed (same index and same term); a crash, a lost leadership or a restored snapshot that covers its
index fails it (``wrong_leader``), so no waiter outlives the incarnation or term it was made in.
"""

from __future__ import annotations

import asyncio
import pickle
import time
from collections.abc import Awaitable, Callable
from typing import Any

import ray

from actors.replica import ReplicaActor, ReplicaSpec
from actors.service_protocol import INVALID, OK, TIMEOUT, WRONG_LEADER
from actors.sessions import DEFAULT_SESSION_TTL_S, stamp, ttl_ms

#: what a waiter's future holds when its entry was lost (another leader's entry took the index)
_LOST = object()

#: default for how long the server waits for a proposal to be applied before answering "timeout"
DEFAULT_SERVER_WAIT_S = 2.0

Reply = tuple[str, Any] | None


class ServiceReplica(ReplicaActor):
    """A Raft peer that answers clerks once their proposals are applied; see the module docstring.

    ``spec.extra["server_wait_s"]`` overrides :data:`DEFAULT_SERVER_WAIT_S`. Subclasses override
    :meth:`_batch_problem` (the service's envelope check) and add their RPCs.
    """

    def __init__(self, spec: ReplicaSpec) -> None:
        super().__init__(spec)
        self._waiters: dict[int, asyncio.Future[Any]] = {}
        self._waiter_term = -1
        self._wait_s = float(spec.extra.get("server_wait_s", DEFAULT_SERVER_WAIT_S))
        self._session_ttl_ms = ttl_ms(spec.extra.get("session_ttl", DEFAULT_SESSION_TTL_S))

    def _log_time(self) -> tuple[int, int]:
        """``(time_ms, ttl_ms)`` this leader would stamp an entry with now: its wall-clock time and the
        session TTL, both in ms (the reads use it to decide whether a session needs renewing)."""
        return time.time_ns() // 1_000_000, self._session_ttl_ms

    def _stamped(self, command: Any) -> tuple:
        """``command`` stamped with this leader's wall-clock time (ms) and the session TTL (ms)."""
        return stamp(command, *self._log_time())

    # -- serving a clerk's batch ------------------------------------------------------------------

    def _batch_problem(self, ops: Any) -> str | None:
        """Why ``ops`` is not a well-formed batch of this service, or ``None`` (the default: any)."""
        return None

    async def _serve_batch(self, ops: Any) -> Reply:
        """Check ``ops``, propose it as one entry (a tuple) and answer once it is applied."""
        if self.core is None:
            return None
        problem = self._batch_problem(ops)
        if problem is not None:
            return INVALID, problem
        return await self._propose_wait(tuple(ops))

    async def _serve_pickled(self, data: bytes, handler: Callable[[Any], Awaitable[Reply]]) -> bytes | None:
        """``handler(unpickled batch)``, with the answer pickled; ``None`` while this peer is down."""
        if self.core is None:
            return None
        try:
            ops = pickle.loads(data)
        except Exception as exc:
            return pickle.dumps((INVALID, f"the request is not a pickled batch ({exc!r:.120})"), protocol=5)
        reply = await handler(ops)
        return None if reply is None else pickle.dumps(reply, protocol=5)

    # -- proposals and waiters --------------------------------------------------------------------

    async def _propose_wait(self, command: Any) -> Reply:
        """Propose ``command`` and wait for it to be applied: ``(ok, result)``, ``(wrong_leader,
        hint)``, ``(timeout, None)``, or ``None`` if this peer is down."""
        core = self.core
        if core is None:
            return None
        index, term, is_leader = core.propose(self._stamped(command))
        if not is_leader:
            return WRONG_LEADER, core.leader_id
        if term != self._waiter_term:
            self._fail_waiters()
            self._waiter_term = term
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters[index] = fut
        self._schedule_flush()
        try:
            result = await asyncio.wait_for(fut, self._wait_s)
        except asyncio.TimeoutError:
            if self._waiters.get(index) is fut:
                del self._waiters[index]
            return TIMEOUT, None
        if result is _LOST:
            core = self.core
            return WRONG_LEADER, (core.leader_id if core is not None else None)
        return OK, result

    def _on_applied(self, index: int, term: int, command: Any, result: Any) -> None:
        fut = self._waiters.pop(index, None)
        if fut is not None and not fut.done():
            fut.set_result(result if term == self._waiter_term else _LOST)

    def _on_snapshot_restored(self, index: int) -> None:
        # The entries up to ``index`` were applied elsewhere; their results are unknown here.
        for i in [i for i in self._waiters if i <= index]:
            fut = self._waiters.pop(i)
            if not fut.done():
                fut.set_result(_LOST)

    def _drain(self, reply_to: int | None = None) -> list:
        replies = super()._drain(reply_to)
        if self._waiters:
            core = self.core
            if core is None or not core.is_leader or core.term != self._waiter_term:
                self._fail_waiters()  # deposed: let the clerks try the new leader now
        return replies

    async def crash(self) -> None:
        self._fail_waiters()
        await super().crash()

    def _fail_waiters(self) -> None:
        waiters, self._waiters = self._waiters, {}
        for fut in waiters.values():
            if not fut.done():
                fut.set_result(_LOST)

    # -- queries for tests and tools --------------------------------------------------------------

    def _service_stats(self) -> dict[str, Any]:
        """The state machine's ``stats()`` (empty while down), its role and the waiting proposals."""
        sm = self.sm
        stats: dict[str, Any] = sm.stats() if sm is not None else {}  # type: ignore[attr-defined]
        stats["role"] = self.core.role if self.core is not None else "down"
        stats["pending"] = len(self._waiters)
        return stats


def service_replica_actor(cls: type, max_concurrency: int = 1000, **options: Any) -> Any:
    """The Ray actor class for the service replica ``cls``: async, no CPU reserved, no retries.

    ``options`` are passed to ``ray.remote`` (e.g. ``scheduling_strategy``, ``name``).
    """
    return ray.remote(num_cpus=0, max_concurrency=max_concurrency, max_restarts=0,
                      max_task_retries=0, **options)(cls)
