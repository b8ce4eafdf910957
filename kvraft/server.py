"""The KV service on a Raft replica: a :class:`~actors.replica.ReplicaActor` hosting a
:class:`~kvraft.statemachine.KVStateMachine` and answering clerks.

One RPC, ``kv(ops)``: a clerk sends a *batch* of operations (one or many), the leader proposes the
batch as one log entry and answers once that entry is applied, with one result per operation:

- ``("ok", [result, ...])``: the entry committed and was applied here, in this leader's term;
- ``("wrong_leader", hint)``: this peer is not the leader, lost leadership while waiting, or the
  entry at its index turned out to be another leader's; ``hint`` is the peer id it believes leads
  (or ``None``);
- ``("timeout", None)``: not applied within ``server_wait_s`` (a minority leader, say);
- ``("invalid", reason)``: the batch is malformed (see :func:`kvraft.ops.batch_problem`); it was
  checked before anything was proposed, so nothing of it will ever take effect;
- ``None``: this peer is down (crashed, or the call was addressed to a dead incarnation).

A server does not trust its callers: every batch is checked before it is proposed, and the state
machine's ``apply`` is total besides (a malformed entry that reaches the log anyway yields an error
result on every replica, never an exception that would stop one replica applying).

Only ``ok`` means the operations took effect. After any other answer they may still take effect
later (the proposal may yet commit), which is why clerks number their operations (see
:mod:`kvraft.statemachine`): resending is always safe.

Batching happens on its own: every proposal made by the calls that arrive in one turn of the event
loop is folded by the core into one AppendEntries per follower (with a window of them in flight),
persisted with one ``Storage.save`` (one fsync), and committed together.

Reads: a batch of Gets is served with ReadIndex (``spec.extra["read_path"] = "index"``, the
default; see docs/kvraft.md, "Read strategy" and :class:`actors.reads.ReadIndexServing`): once one
heartbeat round after the call arrived has confirmed this peer's leadership and it has applied
everything committed before, it reads its state machine, with no log entry. A batch that holds a
write, or a Get of a client the dedup table does not know (its session is opened, or refused as
expired, through the log) or of a session idle for longer than half the TTL (the entry renews it, so
a clerk that only reads keeps its session), goes through the log like a write, and so do all reads with
``read_path="log"``: a Get is then answered by the leader that applied it in its own term. Either way
the read happens at a point inside the call, so it is linearizable without clocks.

The waiting (propose, wait for the entry to be applied, answer wrong-leader or timeout, fail every
waiter of a dead incarnation or a lost term) is the shared server core,
:class:`actors.service_server.ServiceReplica`; this module adds the KV RPC and its checks.
"""

from __future__ import annotations

from typing import Any

from actors.reads import NEEDS_LOG, ReadIndexServing
from actors.service_server import DEFAULT_SERVER_WAIT_S, ServiceReplica, service_replica_actor
from kvraft.ops import GET, INVALID, OK, Batch, Rejected, batch_problem

__all__ = ["DEFAULT_SERVER_WAIT_S", "KVReplica", "kv_replica_actor"]


class KVReplica(ReadIndexServing, ServiceReplica):
    """A Raft peer that serves the KV RPC. Create it with :func:`kv_replica_actor`.

    ``spec.extra["server_wait_s"]`` overrides :data:`DEFAULT_SERVER_WAIT_S`.
    """

    #: served over the stream listener too (pickled batch in, pickled reply out; docs/transports.md)
    stream_rpcs = frozenset({"kv"})
    #: the ``service`` tag of this replica's metrics (docs/ray-layer.md, "Metrics")
    metrics_service = "kvraft"

    # -- the RPC ---------------------------------------------------------------------------------

    def _batch_problem(self, ops: Any) -> str | None:
        return batch_problem(ops)

    async def rpc_kv(self, ops: Batch) -> tuple[str, Any] | None:
        """Serve a batch of Gets with ReadIndex, or propose ``ops`` as one entry and answer once it is
        applied (see the module docstring)."""
        if isinstance(ops, tuple) and ops and all(isinstance(op, tuple) and op[:1] == (GET,) for op in ops):
            reply = await self._serve_reads(ops)
            if reply is not NEEDS_LOG:
                return reply
        reply = await self._serve_batch(ops)
        if reply is not None and reply[0] == OK and isinstance(reply[1], Rejected):
            return INVALID, reply[1].reason  # unreachable after the check; kept for safety
        return reply

    async def kv(self, data: bytes) -> bytes | None:
        """``rpc_kv`` for clerks that call the actor directly, with the batch and the answer pickled
        by the caller: one bytes argument costs Ray far less to move than nested tuples."""
        return await self._serve_pickled(data, self.rpc_kv)

    # -- queries for tests and tools --------------------------------------------------------------

    async def kv_stats(self) -> dict[str, Any]:
        """The state machine's counters (keys, clients, applied ops, duplicates) and the role."""
        return self._service_stats()


def kv_replica_actor(max_concurrency: int = 1000, **options: Any) -> Any:
    """The Ray actor class for :class:`KVReplica`: async, no CPU reserved, no retries.

    ``options`` are passed to ``ray.remote`` (e.g. ``scheduling_strategy``).
    """
    return service_replica_actor(KVReplica, max_concurrency, **options)
