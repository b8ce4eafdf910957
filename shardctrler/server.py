"""The controller on a Raft replica: a :class:`~actors.replica.ReplicaActor` hosting a
:class:`~shardctrler.statemachine.CtrlerStateMachine` and answering clerks. The same shape and
contract as :mod:`kvraft.server` (the waiter logic is the same, written again here; see the README).

One RPC, ``ctrl(ops)``: a clerk sends a *batch* of operations (one or many), the leader proposes the
batch as one log entry and answers once that entry is applied, with one result per operation:

- ``("ok", [result, ...])``: the entry committed and was applied here, in this leader's term; a
  result is a new config number (Join / Leave / Move), a :class:`~shardctrler.config.Config`
  (Query), or a :class:`~shardctrler.ops.Refusal` (the request was refused; nothing changed);
- ``("wrong_leader", hint)``: this peer is not the leader, lost leadership while waiting, or the
  entry at its index turned out to be another leader's; ``hint`` is the peer id it believes leads
  (or ``None``);
- ``("timeout", None)``: not applied within ``server_wait_s`` (a minority leader, say);
- ``("invalid", reason)``: the call is not a well-formed batch (see
  :func:`~shardctrler.ops.batch_problem`); it was checked before anything was proposed;
- ``None``: this peer is down (crashed, or the call was addressed to a dead incarnation).

Only ``ok`` means the operations were applied. After ``wrong_leader``, ``timeout`` or ``None`` they
may still be applied later, which is why clerks number their operations: resending is always safe.
Queries go through the log like writes, so a Query(-1) answered ``ok`` is linearizable.

Invariants: a waiter is completed at most once; it gets ``ok`` only with the result of the entry it
proposed (same index and same term); a crash fails every waiter of the dead incarnation.
"""

from __future__ import annotations

import asyncio
import pickle
from typing import Any

import ray

from actors.replica import ReplicaActor, ReplicaSpec
from shardctrler.ops import INVALID, OK, TIMEOUT, WRONG_LEADER, Batch, batch_problem

#: what a waiter's future holds when its entry was lost (another leader's entry took the index)
_LOST = object()

#: default for how long the server waits for a proposal to be applied before answering "timeout"
DEFAULT_SERVER_WAIT_S = 2.0


class CtrlerReplica(ReplicaActor):
    """A Raft peer that serves the controller RPC. Create it with :func:`ctrler_replica_actor`.

    ``spec.extra["server_wait_s"]`` overrides :data:`DEFAULT_SERVER_WAIT_S`.
    """

    def __init__(self, spec: ReplicaSpec) -> None:
        super().__init__(spec)
        self._waiters: dict[int, asyncio.Future[Any]] = {}
        self._waiter_term = -1
        self._wait_s = float(spec.extra.get("server_wait_s", DEFAULT_SERVER_WAIT_S))

    # -- the RPC ---------------------------------------------------------------------------------

    async def rpc_ctrl(self, ops: Batch) -> tuple[str, Any] | None:
        """Propose ``ops`` as one entry and answer once it is applied (see the module docstring)."""
        core = self.core
        if core is None:
            return None
        problem = batch_problem(ops)
        if problem is not None:
            return INVALID, problem
        index, term, is_leader = core.propose(tuple(ops))
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

    async def ctrl(self, data: bytes) -> bytes | None:
        """``rpc_ctrl`` for clerks that call the actor directly, with the batch and the answer pickled
        by the caller (one bytes argument costs Ray far less to move than nested tuples)."""
        if self.core is None:
            return None
        reply = await self.rpc_ctrl(pickle.loads(data))
        return None if reply is None else pickle.dumps(reply, protocol=5)

    # -- hooks of the replica ---------------------------------------------------------------------

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

    async def ctrl_stats(self) -> dict[str, Any]:
        """The state machine's counters (configs, latest number, groups, clients, applied ops,
        duplicates, refused) and the role. What this replica has applied: it may lag the leader."""
        sm = self.sm
        stats: dict[str, Any] = sm.stats() if sm is not None else {}  # type: ignore[attr-defined]
        stats["role"] = self.core.role if self.core is not None else "down"
        stats["pending"] = len(self._waiters)
        return stats


def ctrler_replica_actor(max_concurrency: int = 1000, **options: Any) -> Any:
    """The Ray actor class for :class:`CtrlerReplica`: async, no CPU reserved, no retries.

    ``options`` are passed to ``ray.remote`` (e.g. ``scheduling_strategy``).
    """
    return ray.remote(num_cpus=0, max_concurrency=max_concurrency, max_restarts=0,
                      max_task_retries=0, **options)(CtrlerReplica)
