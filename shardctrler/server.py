"""The controller on a Raft replica: a :class:`~actors.replica.ReplicaActor` hosting a
:class:`~shardctrler.statemachine.CtrlerStateMachine` and answering clerks. The same shape and
contract as :mod:`kvraft.server`: both are the shared server core,
:class:`actors.service_server.ServiceReplica`, with the service's RPC and its checks.

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

Queries: a batch of Queries only is served with ReadIndex (``spec.extra["read_path"] = "index"``,
the default; :class:`actors.reads.ReadIndexServing`, as kvraft serves its Gets): once one heartbeat
round after the call arrived has confirmed this peer's leadership and it has applied everything
committed before, it answers from its state machine
(:meth:`~shardctrler.statemachine.CtrlerStateMachine.read`), with no log entry. A batch with a write,
a malformed Query, or a Query of a client the table does not know or whose session has been idle for
longer than half the TTL (the entry renews it) goes through the log, and so does every Query with
``read_path="log"``. Either way a Query(-1) answered ``ok`` is linearizable: it reads a state at a
point inside the call.

Invariants (of the shared core): a waiter is completed at most once; it gets ``ok`` only with the
result of the entry it proposed (same index and same term); a crash fails every waiter of the dead
incarnation.
"""

from __future__ import annotations

from typing import Any

from actors.reads import NEEDS_LOG, ReadIndexServing
from actors.replica import SERVICE_RULES
from actors.service_server import DEFAULT_SERVER_WAIT_S, ServiceReplica, service_replica_actor
from shardctrler.ops import QUERY, Batch, batch_problem

__all__ = ["DEFAULT_SERVER_WAIT_S", "CtrlerReplica", "ctrler_replica_actor"]


class CtrlerReplica(ReadIndexServing, ServiceReplica):
    """A Raft peer that serves the controller RPC. Create it with :func:`ctrler_replica_actor`.

    ``spec.extra["server_wait_s"]`` overrides :data:`DEFAULT_SERVER_WAIT_S`; ``spec.extra["read_path"]``
    is ``"index"`` (Queries by ReadIndex, the default) or ``"log"``. The core runs with the services'
    rules (:data:`actors.replica.SERVICE_RULES`: PreVote, CheckQuorum, the leader's no-op), which
    ReadIndex needs.
    """

    #: served over the stream listener too (pickled batch in, pickled reply out; docs/transports.md)
    stream_rpcs = frozenset({"ctrl"})
    #: the ``service`` tag of this replica's metrics (docs/ray-layer.md, "Metrics")
    metrics_service = "shardctrler"

    default_rules = SERVICE_RULES

    # -- the RPC ---------------------------------------------------------------------------------

    def _batch_problem(self, ops: Any) -> str | None:
        return batch_problem(ops)

    async def rpc_ctrl(self, ops: Batch) -> tuple[str, Any] | None:
        """Serve a batch of Queries with ReadIndex, or propose ``ops`` as one entry and answer once it
        is applied (see the module docstring)."""
        if (isinstance(ops, (tuple, list)) and ops
                and all(isinstance(op, (tuple, list)) and len(op) == 4 and op[0] == QUERY for op in ops)):
            reply = await self._serve_reads(ops)
            if reply is not NEEDS_LOG:
                return reply
        return await self._serve_batch(ops)

    async def ctrl(self, data: bytes) -> bytes | None:
        """``rpc_ctrl`` for clerks that call the actor directly, with the batch and the answer pickled
        by the caller (one bytes argument costs Ray far less to move than nested tuples)."""
        return await self._serve_pickled(data, self.rpc_ctrl)

    # -- queries for tests and tools --------------------------------------------------------------

    async def ctrl_stats(self) -> dict[str, Any]:
        """The state machine's counters (configs, latest number, groups, clients, applied ops,
        duplicates, refused) and the role. What this replica has applied: it may lag the leader."""
        return self._service_stats()


def ctrler_replica_actor(max_concurrency: int = 1000, **options: Any) -> Any:
    """The Ray actor class for :class:`CtrlerReplica`: async, no CPU reserved, no retries.

    ``options`` are passed to ``ray.remote`` (e.g. ``scheduling_strategy``).
    """
    return service_replica_actor(CtrlerReplica, max_concurrency, **options)
