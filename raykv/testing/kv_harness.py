"""The kvraft test harness on Ray, equivalent to the reference's ``kvraft/config.go``.

``KVHarness(n, unreliable, maxraftstate)`` builds ``n`` :class:`~kvraft.server.KVReplica` actors
behind one :class:`~actors.network.FaultyNetwork` (no long delays, no long reordering: a call to a
disabled end fails within 100 ms), and offers the reference's operations:

- clerks: ``make_client(to)`` (fresh ends to every server, only those in ``to`` enabled),
  ``make_async_client(to)``, ``connect_client``, ``disconnect_client``, ``delete_client``;
- servers: ``shutdown_server(i)`` (cut its server links, delete it from the network, crash it with a
  copy of its storage), ``start_server(i)`` (new outgoing ends, disabled, so it stays cut off from
  the other servers until ``connect_all``), ``partition(p1, p2)`` (server-to-server links only:
  clerks still reach every server), ``connect_all()``;
- queries: ``leader()``, ``make_partition()``, ``log_size()``, ``snapshot_size()``, RPC totals.

Every blocking call has a deadline (:data:`CALL_DEADLINE_S`); failures raise ``AssertionError``.
The harness is synchronous and may be used from several threads at once.

Every server reports what it applies to an :class:`~actors.ledger.ApplyLedger` (the same checks as
the Raft harness: every server applies the same batch with the same result at each index, in order,
one leader per term, leader completeness, persistence across restarts); a violation fails the next
``leader()`` / ``partition()`` call and the teardown.

Planted faults (``faults``, default ``RAYKV_PLANT``): the core's, and two broken rules of the service
(:data:`KV_FAULTS`), switched on in every server at every start:

- ``kv_no_dedup``: the dedup table is forgotten before every entry, so a retried Put or Append that
  had already been applied is applied again;
- ``kv_local_read``: a server that believes it leads answers a batch of Gets from its own state at
  once, without going through the log (a deposed leader that has not heard of its successor
  answers stale values).
"""

from __future__ import annotations

import functools
import itertools
import random
import threading
import time
from collections.abc import Iterable
from typing import Any

import ray

from actors.ledger import ApplyLedgerActor, LedgerReplica, planted_from_env
from actors.network import FaultyNetwork
from actors.replica import ReplicaSpec
from kvraft.async_clerk import AsyncClerk
from kvraft.clerk import Clerk, ClerkCore
from kvraft.endpoints import NetworkEndpoints
from kvraft.ops import GET, OK, Batch
from kvraft.server import KVReplica
from kvraft.statemachine import KVStateMachine
from raft.sim.config import FAULTS

# The same limits as the Raft harness (the reference's), re-exported for the kvraft tests.
from raykv.testing.raft_harness import CALL_DEADLINE_S as CALL_DEADLINE_S
from raykv.testing.raft_harness import ELECTION_TIMEOUT_S as ELECTION_TIMEOUT_S
from raykv.testing.raft_harness import TEST_TIME_LIMIT_S, get_with_deadline, ledger_replica_actor

#: how long a test clerk waits for one server before trying the next
CLERK_ATTEMPT_TIMEOUT_S = 1.0

#: how often a KV server reports to the ledger at most (nothing here waits on the ledger's freshness)
KV_REPORT_WINDOW_S = 0.05

#: the KV service's planted faults (see the module docstring)
KV_FAULTS: frozenset[str] = frozenset({"kv_no_dedup", "kv_local_read"})

_get = get_with_deadline


def kv_faults(faults: Iterable[str] | None) -> frozenset[str]:
    """The faults to plant: ``faults`` (core or service faults), or by default ``RAYKV_PLANT``."""
    chosen = planted_from_env() if faults is None else frozenset(faults)
    unknown = chosen - FAULTS - KV_FAULTS
    if unknown:
        raise ValueError(f"unknown fault(s) {sorted(unknown)}; known: {sorted(FAULTS | KV_FAULTS)}")
    return chosen


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


class KVHarness:
    """``n`` KV servers behind a faulty network (the reference ``make_config(n, unreliable,
    maxraftstate)``)."""

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
        self.n = n
        self.maxraftstate = maxraftstate
        self.faults = kv_faults(faults)
        self.seed = seed if seed is not None else random.SystemRandom().randrange(2**31)
        self.rng = random.Random(self.seed)
        self.t0 = time.monotonic()
        self.lock = threading.Lock()
        self.net = FaultyNetwork.remote(seed=self.rng.randrange(2**31))
        self.ledger = ApplyLedgerActor.remote("server")
        actor_cls = ledger_replica_actor(HarnessKVReplica)
        sm_cls = NoDedupKVStateMachine if "kv_no_dedup" in self.faults else KVStateMachine
        extra = {"ledger": self.ledger, "faults": tuple(sorted(self.faults & FAULTS)),
                 "service_faults": tuple(sorted(self.faults & KV_FAULTS)),
                 "report_window_s": KV_REPORT_WINDOW_S}
        self.replicas = [
            actor_cls.remote(ReplicaSpec(
                name=f"server{i}",
                peer_id=i,
                peers=tuple(range(n)),
                state_machine=functools.partial(sm_cls, maxraftstate),
                tick_s=tick_s,
                seed=self.rng.randrange(2**31),
                extra=extra,
            ))
            for i in range(n)
        ]
        _get([r.ping.remote() for r in self.replicas])
        self.incarnation = [0] * n
        self.alive = [False] * n
        # ends[i][j]: the name of server i's current end to server j
        self.ends: list[dict[int, str]] = [{} for _ in range(n)]
        self._client_ids = itertools.count()
        self.clients: dict[int, list[str]] = {}  # id(clerk) -> its ends, by server
        self.ops = 0
        for i in range(n):
            self.start_server(i)
        self.connect_all()
        _get(self.net.set_reliable.remote(not unreliable))

    # ------------------------------------------------------------------------------------------
    # Clerks
    # ------------------------------------------------------------------------------------------

    def _client_ends(self, to: list[int]) -> NetworkEndpoints:
        k = next(self._client_ids)
        ends = [f"c{k}->s{i}" for i in range(self.n)]
        _get([self.net.make_end.remote(e, f"server{i}") for i, e in enumerate(ends)])
        _get(self.net.enable_many.remote([ends[i] for i in to], True))
        return NetworkEndpoints(self.net, tuple(ends), tuple(f"server{i}" for i in range(self.n)))

    def make_client(self, to: list[int] | None = None, **options: Any) -> Clerk:
        """A synchronous clerk with fresh ends to every server; only those in ``to`` are enabled."""
        to = list(range(self.n)) if to is None else to
        options.setdefault("attempt_timeout", CLERK_ATTEMPT_TIMEOUT_S)
        ck = Clerk(self._client_ends(to), **options)
        with self.lock:
            self.clients[id(ck)] = list(ck.endpoints.ends)  # type: ignore[attr-defined]
        return ck

    def make_async_client(self, to: list[int] | None = None, **options: Any) -> AsyncClerk:
        to = list(range(self.n)) if to is None else to
        options.setdefault("attempt_timeout", CLERK_ATTEMPT_TIMEOUT_S)
        ck = AsyncClerk(self._client_ends(to), **options)
        with self.lock:
            self.clients[id(ck)] = list(ck.endpoints.ends)  # type: ignore[attr-defined]
        return ck

    def connect_client(self, ck: ClerkCore, to: list[int]) -> None:
        ends = self.clients[id(ck)]
        _get(self.net.enable_many.remote([ends[i] for i in to], True))

    def disconnect_client(self, ck: ClerkCore, frm: list[int]) -> None:
        ends = self.clients[id(ck)]
        _get(self.net.enable_many.remote([ends[i] for i in frm], False))

    def delete_client(self, ck: ClerkCore) -> None:
        with self.lock:
            ends = self.clients.pop(id(ck), [])
        _get([self.net.delete_end.remote(e) for e in ends])

    # ------------------------------------------------------------------------------------------
    # Servers and links
    # ------------------------------------------------------------------------------------------

    def _server_links(self, i: int) -> list[str]:
        """Every server-to-server end into and out of server i."""
        out = list(self.ends[i].values())
        out += [self.ends[j][i] for j in range(self.n) if j != i and i in self.ends[j]]
        return out

    def shutdown_server(self, i: int) -> None:
        """Cut server i off, delete it from the network (calls in flight fail, replies are lost),
        and crash it: its successor gets a copy of its storage."""
        _get(self.net.enable_many.remote(self._server_links(i), False))
        _get(self.net.delete_server.remote(f"server{i}"))
        _get(self.replicas[i].crash.remote())
        self.alive[i] = False

    def start_server(self, i: int) -> None:
        """Restart server i from (a copy of) its storage with new, disabled ends to its peers; the
        peers' ends to it stay as they are (disabled after a shutdown) until :meth:`connect_all`."""
        self.incarnation[i] += 1
        inc = self.incarnation[i]
        ends = {j: f"s{i}.{inc}->s{j}" for j in range(self.n) if j != i}
        _get([self.net.make_end.remote(e, f"server{j}") for j, e in ends.items()])
        self.ends[i] = ends
        _get(self.replicas[i].start.remote(inc, ("network", self.net, ends)))
        _get(self.net.add_server.remote(f"server{i}", self.replicas[i], inc))
        self.alive[i] = True

    def connect_all(self) -> None:
        """Enable every server-to-server link."""
        links = [e for i in range(self.n) for e in self.ends[i].values()]
        _get(self.net.enable_many.remote(links, True))

    def partition(self, p1: list[int], p2: list[int]) -> None:
        """Links between servers on the same side on, across sides off (clerks are not touched)."""
        side = {i: 0 for i in p1} | {i: 1 for i in p2}
        on, off = [], []
        for i in range(self.n):
            for j, e in self.ends[i].items():
                (on if i in side and j in side and side[i] == side[j] else off).append(e)
        _get(self.net.enable_many.remote(off, False))
        _, failure = _get([self.net.enable_many.remote(on, True), self.ledger.failure.remote()])
        self._raise_if_violated(failure)

    def _raise_if_violated(self, failure: str | None) -> None:
        if failure is not None:
            raise AssertionError(f"the ledger saw a violation: {failure}")

    def set_unreliable(self, unreliable: bool) -> None:
        _get(self.net.set_reliable.remote(not unreliable))

    # ------------------------------------------------------------------------------------------
    # Queries
    # ------------------------------------------------------------------------------------------

    def leader(self) -> tuple[bool, int]:
        """The first server whose Raft claims to lead, as ``(True, i)``; ``(False, 0)`` if none."""
        *states, failure = _get([r.get_state.remote() for r in self.replicas]
                                + [self.ledger.failure.remote()])
        self._raise_if_violated(failure)
        for i, (_, is_leader) in enumerate(states):
            if is_leader and self.alive[i]:
                return True, i
        return False, 0

    def make_partition(self) -> tuple[list[int], list[int]]:
        """The first n/2+1 non-leaders, and the remaining non-leaders with the leader last."""
        _, lead = self.leader()
        others = [i for i in range(self.n) if i != lead]
        p1 = others[: self.n // 2 + 1]
        p2 = [*others[self.n // 2 + 1:], lead]
        return p1, p2

    def log_size(self) -> int:
        """The largest persisted Raft state (bytes) among the servers."""
        return max(s for s, _ in _get([r.storage_sizes.remote() for r in self.replicas]))

    def snapshot_size(self) -> int:
        """The largest snapshot (bytes) among the servers."""
        return max(s for _, s in _get([r.storage_sizes.remote() for r in self.replicas]))

    def kv_stats(self) -> list[dict[str, Any]]:
        return _get([r.kv_stats.remote() for r in self.replicas])

    def rpc_total(self) -> int:
        return _get(self.net.get_total_count.remote())

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def summary(self) -> str:
        st, (_, counts) = _get([self.net.stats.remote(), self.ledger.verdict.remote()])
        planted = f"  planted {','.join(sorted(self.faults))}" if self.faults else ""
        return (f"{self.elapsed():5.1f}s  servers {self.n}  rpcs {st.get('total_count')}  "
                f"bytes {st.get('total_bytes')}  handler errors {st.get('handler_errors')}  "
                f"ledger {counts}{planted}")

    def check_applied_logs(self) -> None:
        """The ledger's verdict on everything every server ever applied (see :mod:`actors.ledger`)."""
        failures, _ = _get(self.ledger.verdict.remote())
        if failures:
            more = f" (and {len(failures) - 1} more: {'; '.join(failures[1:4])})" if len(failures) > 1 else ""
            raise AssertionError(f"the ledger saw a violation: {failures[0]}{more}")

    def cleanup(self) -> None:
        """Check the ledger, handler errors and the time limit, then kill every actor."""
        try:
            self.check_applied_logs()
            st = _get(self.net.stats.remote())
            assert st["handler_errors"] == 0, (
                f"{st['handler_errors']} server handlers raised (see the ERROR log of raykv.network)")
            assert self.elapsed() <= TEST_TIME_LIMIT_S, (
                f"test took longer than {TEST_TIME_LIMIT_S:.0f} seconds ({self.elapsed():.1f} s)")
        finally:
            self.kill()

    def kill(self) -> None:
        ray.kill(self.net, no_restart=True)
        for r in self.replicas:
            ray.kill(r, no_restart=True)
        ray.kill(self.ledger, no_restart=True)
