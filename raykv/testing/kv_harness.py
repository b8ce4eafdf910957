"""The kvraft test harness on Ray, equivalent to the reference's ``kvraft/config.go``.

``KVHarness(n, unreliable, maxraftstate)`` builds ``n`` :class:`~kvraft.server.KVReplica` servers,
``server0`` .. ``server{n-1}``, behind one :class:`~actors.network.FaultyNetwork`: a
:class:`~raykv.testing.service_harness.ServiceHarness` (clerks, shutdown and restart, partitions,
``leader()``, sizes, the ledger and the teardown checks; see there), plus ``make_partition()`` and
``kv_stats()``.

Every server reports what it applies to the harness's ledger (:mod:`actors.ledger`: every server
applies the same batch with the same result at each index, in order, one leader per term, leader
completeness, the commit rule, persistence across restarts); a violation fails the next
``leader()`` / ``partition()`` call and the teardown.

Planted faults (``faults``, default: those named in ``RAYKV_PLANT``; see :mod:`raykv.testing.faults`):
the core's, and two broken rules of the service (:data:`~raykv.testing.faults.KV_FAULTS`), switched
on in every server at every start:

- ``kv_no_dedup``: the dedup table is forgotten before every entry, so a retried Put or Append that
  had already been applied is applied again;
- ``kv_local_read``: a server that believes it leads answers a batch of Gets from its own state at
  once, without going through the log or ReadIndex (a deposed leader that has not heard of its
  successor answers stale values). The plant also switches CheckQuorum off: that rule makes a
  cut-off leader step down one election timeout after it last heard from a majority, which narrows
  the window of stale answers (a successor can be elected and commit before then) but also hides it
  from OnePartition 4A, whose minority Get arrives about a second after the partition.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

from actors.ledger import LedgerReplica
from actors.replica import ReplicaSpec
from kvraft.async_clerk import AsyncClerk
from kvraft.clerk import Clerk
from kvraft.endpoints import NetworkEndpoints
from kvraft.ops import GET, OK, Batch
from kvraft.server import KVReplica
from kvraft.statemachine import KVStateMachine
from raft.sim.config import FAULTS as CORE_FAULTS
from raykv.testing.faults import KV_FAULTS, planted
from raykv.testing.raft_harness import get_with_deadline

# The limits every harness shares (the reference's), re-exported for the kvraft tests.
from raykv.testing.service_harness import CALL_DEADLINE_S as CALL_DEADLINE_S
from raykv.testing.service_harness import CLERK_ATTEMPT_TIMEOUT_S as CLERK_ATTEMPT_TIMEOUT_S
from raykv.testing.service_harness import ELECTION_TIMEOUT_S as ELECTION_TIMEOUT_S
from raykv.testing.service_harness import TEST_TIME_LIMIT_S as TEST_TIME_LIMIT_S
from raykv.testing.service_harness import ServiceHarness

_get = get_with_deadline


def kv_faults(faults: Iterable[str] | None) -> frozenset[str]:
    """The faults to plant: ``faults`` (core or KV faults), or by default those in ``RAYKV_PLANT``
    that concern the KV service."""
    return planted(faults, CORE_FAULTS | KV_FAULTS.keys())


class NoDedupKVStateMachine(KVStateMachine):
    """Planted fault ``kv_no_dedup``: forgets the dedup table before every entry."""

    def apply_batch(self, batch: Batch) -> list[str | None]:
        self.sessions.clear()
        return super().apply_batch(batch)


class HarnessKVReplica(LedgerReplica, KVReplica):
    """The harness's KV server: reports to the ledger; ``kv_local_read`` when planted."""

    def __init__(self, spec: ReplicaSpec) -> None:
        super().__init__(spec)
        self._local_read = "kv_local_read" in spec.extra.get("service_faults", ())

    async def rpc_kv(self, ops: Batch) -> tuple[str, Any] | None:
        core, sm = self.core, self.sm
        if (self._local_read and core is not None and core.is_leader and sm is not None
                and all(op[0] == GET for op in ops)):
            return OK, [sm.get(op[1]) for op in ops]  # type: ignore[attr-defined]
        return await super().rpc_kv(ops)


class KVHarness(ServiceHarness):
    """``n`` KV servers behind a faulty network (the reference ``make_config(n, unreliable,
    maxraftstate)``)."""

    replica_cls = HarnessKVReplica
    endpoints_cls = NetworkEndpoints
    clerk_cls = Clerk
    async_clerk_cls = AsyncClerk

    def __init__(
        self,
        n: int,
        unreliable: bool = False,
        maxraftstate: int = -1,
        seed: int | None = None,
        tick_s: float = 0.02,
        faults: Iterable[str] | None = None,
    ) -> None:
        """``faults``: broken rules to switch on in every server (see :func:`kv_faults`)."""
        self.maxraftstate = maxraftstate
        chosen = kv_faults(faults)
        sm_cls = NoDedupKVStateMachine if "kv_no_dedup" in chosen else KVStateMachine
        rules = {"check_quorum": False} if "kv_local_read" in chosen else None
        super().__init__(n, unreliable, state_machine=functools.partial(sm_cls, maxraftstate),
                         faults=chosen, prefix="server", seed=seed, tick_s=tick_s, rules=rules)

    def make_partition(self) -> tuple[list[int], list[int]]:
        """The first n/2+1 non-leaders, and the remaining non-leaders with the leader last."""
        _, lead = self.leader()
        others = [i for i in range(self.n) if i != lead]
        p1 = others[: self.n // 2 + 1]
        p2 = [*others[self.n // 2 + 1:], lead]
        return p1, p2

    def kv_stats(self) -> list[dict[str, Any]]:
        return _get([r.kv_stats.remote() for r in self.replicas])
