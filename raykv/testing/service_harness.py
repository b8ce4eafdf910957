"""What the harnesses of the single-group services share (kvraft's and the shard controller's,
equivalent to the reference's ``kvraft/config.go`` and ``shardctrler/config.go``, which are near
copies of each other): ``n`` servers of one Raft-replicated service behind a
:class:`~actors.network.FaultyNetwork` (no long delays, no long reordering: a call to a disabled end
fails within 100 ms), every one a :class:`~actors.ledger.LedgerReplica` reporting to the harness's
:class:`~actors.ledger.LedgerBook`. A service's harness subclasses :class:`ServiceHarness` and adds
its replica class, its clerks and its planted faults.

Operations (the reference's):

- clerks: ``make_client(to)`` (fresh ends to every server, only those in ``to`` enabled),
  ``make_async_client(to)``, ``endpoints(to)`` (fresh ends for a clerk built elsewhere),
  ``connect_client``, ``disconnect_client``, ``delete_client``;
- servers: ``shutdown_server(i)`` (cut its server links, delete it from the network so calls in
  flight fail and replies are lost, crash it onto a copy of its storage), ``start_server(i)`` (new
  outgoing ends, disabled, so it stays cut off from the other servers until ``connect_all``),
  ``partition(p1, p2)`` (server-to-server links only: clerks still reach every server),
  ``connect_all()``;
- queries: ``leader()``, ``wait_leader()``, ``log_size()``, ``snapshot_size()``, RPC totals;
- checks: ``check_applied_logs()`` and ``cleanup()`` (the ledger, handler errors, the time limit).

The ledger's first violation fails the next ``leader()`` / ``wait_leader()`` / ``partition()`` and the
teardown. A harness can live on a network and a ledger someone else owns (``network=``, ``ledger=``:
the sharded KV's harness runs its controller so); it then neither sets the network's reliability
nor kills them. Every blocking call has a deadline (:data:`CALL_DEADLINE_S`); failures raise
``AssertionError``. Synchronous, and usable from several threads at once.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import ray

from actors.ledger import LedgerBookActor
from actors.network import FaultyNetwork
from actors.replica import ReplicaSpec
from raft.sim.config import FAULTS as CORE_FAULTS
from raykv.testing.raft_harness import (
    CALL_DEADLINE_S,
    ELECTION_TIMEOUT_S,
    TEST_TIME_LIMIT_S,
    check_at_teardown,
    get_with_deadline,
    ledger_replica_actor,
    raise_if_violated,
    verdict_or_raise,
)

#: how long a test clerk waits for one server before trying the next
CLERK_ATTEMPT_TIMEOUT_S = 1.0

#: how often a service's server reports to the ledger at most (nothing waits on the ledger's freshness)
SERVICE_REPORT_WINDOW_S = 0.05

_get = get_with_deadline

__all__ = ["CALL_DEADLINE_S", "CLERK_ATTEMPT_TIMEOUT_S", "ELECTION_TIMEOUT_S", "SERVICE_REPORT_WINDOW_S",
           "TEST_TIME_LIMIT_S", "ServiceHarness", "raise_if_violated", "verdict_or_raise"]


class ServiceHarness:
    """``n`` servers of one service behind a faulty network (see the module docstring).

    Subclasses set :attr:`replica_cls` (a :class:`~actors.ledger.LedgerReplica` subclass),
    :attr:`endpoints_cls`, :attr:`clerk_cls`, :attr:`async_clerk_cls` and :attr:`kind`, and pass the
    state machine factory and the resolved planted faults to ``__init__``.
    """

    replica_cls: type
    endpoints_cls: type
    clerk_cls: type
    async_clerk_cls: type
    #: what a server is called in messages and summaries ("server", "controller server")
    kind = "server"

    def __init__(
        self,
        n: int,
        unreliable: bool,
        *,
        state_machine: Callable[[], Any],
        faults: frozenset[str],
        prefix: str,
        network: Any = None,
        ledger: Any = None,
        seed: int | None = None,
        tick_s: float = 0.02,
        extra: dict[str, Any] | None = None,
        rules: dict[str, bool] | None = None,
    ) -> None:
        """``prefix``: server i is ``{prefix}{i}`` (also its name in the ledger); ``faults``: the
        planted faults (core ones go to every core, the rest to the service via
        ``spec.extra["service_faults"]``); ``extra``: more of ``spec.extra`` for every server;
        ``rules``: core switches (``pre_vote``, ``check_quorum``, ``leader_noop``) that override the
        service's defaults in every server."""
        self.n = n
        self.prefix = prefix
        self.faults = frozenset(faults)
        self.seed = seed if seed is not None else random.SystemRandom().randrange(2**31)
        self.rng = random.Random(self.seed)
        self.t0 = time.monotonic()
        self.lock = threading.Lock()
        self._owns_net = network is None
        self.net = FaultyNetwork.remote(seed=self.rng.randrange(2**31)) if network is None else network
        self._owns_ledger = ledger is None
        self.ledger = LedgerBookActor.remote() if ledger is None else ledger
        actor_cls = ledger_replica_actor(self.replica_cls)
        spec_extra = {"ledger": self.ledger, "ledger_group": prefix,
                      "faults": tuple(sorted(self.faults & CORE_FAULTS)),
                      "service_faults": tuple(sorted(self.faults - CORE_FAULTS)),
                      "report_window_s": SERVICE_REPORT_WINDOW_S, **(extra or {})}
        self.replicas = [
            actor_cls.remote(ReplicaSpec(
                name=self.server_name(i),
                peer_id=i,
                peers=tuple(range(n)),
                state_machine=state_machine,
                tick_s=tick_s,
                seed=self.rng.randrange(2**31),
                extra=spec_extra,
                **(rules or {}),
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
        for i in range(n):
            self.start_server(i)
        self.connect_all()
        if self._owns_net:
            _get(self.net.set_reliable.remote(not unreliable))

    def server_name(self, i: int) -> str:
        return f"{self.prefix}{i}"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.server_name(i) for i in range(self.n))

    # ------------------------------------------------------------------------------------------
    # Clerks
    # ------------------------------------------------------------------------------------------

    def endpoints(self, to: list[int] | None = None, caller: str | None = None) -> Any:
        """Fresh ends from a new caller to every server, only those in ``to`` (default all) enabled.
        Picklable: a replica actor may build its clerk on them."""
        to = list(range(self.n)) if to is None else to
        caller = caller or f"c{next(self._client_ids)}"
        ends = [f"{caller}->{self.server_name(i)}" for i in range(self.n)]
        _get([self.net.make_end.remote(e, self.server_name(i)) for i, e in enumerate(ends)])
        _get(self.net.enable_many.remote([ends[i] for i in to], True))
        return self.endpoints_cls(self.net, tuple(ends), self.names)

    def _register(self, ck: Any) -> Any:
        with self.lock:
            self.clients[id(ck)] = list(ck.endpoints.ends)
        return ck

    def make_client(self, to: list[int] | None = None, **options: Any) -> Any:
        """A synchronous clerk with fresh ends to every server; only those in ``to`` are enabled."""
        options.setdefault("attempt_timeout", CLERK_ATTEMPT_TIMEOUT_S)
        return self._register(self.clerk_cls(self.endpoints(to), **options))

    def make_async_client(self, to: list[int] | None = None, **options: Any) -> Any:
        """An asyncio clerk with fresh ends to every server; only those in ``to`` are enabled."""
        options.setdefault("attempt_timeout", CLERK_ATTEMPT_TIMEOUT_S)
        return self._register(self.async_clerk_cls(self.endpoints(to), **options))

    def connect_client(self, ck: Any, to: list[int]) -> None:
        ends = self.clients[id(ck)]
        _get(self.net.enable_many.remote([ends[i] for i in to], True))

    def disconnect_client(self, ck: Any, frm: list[int]) -> None:
        ends = self.clients[id(ck)]
        _get(self.net.enable_many.remote([ends[i] for i in frm], False))

    def delete_client(self, ck: Any) -> None:
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
        _get(self.net.delete_server.remote(self.server_name(i)))
        _get(self.replicas[i].crash.remote())
        self.alive[i] = False

    def start_server(self, i: int) -> None:
        """Restart server i from (a copy of) its storage with new, disabled ends to its peers; the
        peers' ends to it stay as they are (disabled after a shutdown) until :meth:`connect_all`."""
        self.incarnation[i] += 1
        inc = self.incarnation[i]
        name = self.server_name(i)
        ends = {j: f"{name}.{inc}->{self.server_name(j)}" for j in range(self.n) if j != i}
        _get([self.net.make_end.remote(e, self.server_name(j)) for j, e in ends.items()])
        self.ends[i] = ends
        _get(self.replicas[i].start.remote(inc, ("network", self.net, ends)))
        _get(self.net.add_server.remote(name, self.replicas[i], inc))
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
        raise_if_violated(failure)

    def set_unreliable(self, unreliable: bool) -> None:
        _get(self.net.set_reliable.remote(not unreliable))

    # ------------------------------------------------------------------------------------------
    # Queries
    # ------------------------------------------------------------------------------------------

    def leader(self) -> tuple[bool, int]:
        """The first live server whose Raft claims to lead, as ``(True, i)``; ``(False, 0)`` if none
        (and a check of the ledger, in the same round)."""
        *states, failure = _get([r.get_state.remote() for r in self.replicas]
                                + [self.ledger.failure.remote()])
        raise_if_violated(failure)
        for i, (_, is_leader) in enumerate(states):
            if is_leader and self.alive[i]:
                return True, i
        return False, 0

    def wait_leader(self, timeout: float = 5 * ELECTION_TIMEOUT_S) -> int:
        """The leader, polling every 50 ms for up to ``timeout`` seconds; AssertionError if none."""
        deadline = time.monotonic() + timeout
        while True:
            ok, i = self.leader()
            if ok:
                return i
            assert time.monotonic() < deadline, f"no leader among {self.names} within {timeout:g} s"
            time.sleep(0.05)

    def log_size(self) -> int:
        """The largest persisted Raft state (bytes) among the servers."""
        return max(s for s, _ in _get([r.storage_sizes.remote() for r in self.replicas]))

    def snapshot_size(self) -> int:
        """The largest snapshot (bytes) among the servers."""
        return max(s for _, s in _get([r.storage_sizes.remote() for r in self.replicas]))

    def rpc_total(self) -> int:
        return _get(self.net.get_total_count.remote())

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def summary(self) -> str:
        st, (_, counts) = _get([self.net.stats.remote(), self.ledger.verdict.remote()])
        planted = f"  planted {','.join(sorted(self.faults))}" if self.faults else ""
        return (f"{self.elapsed():5.1f}s  {self.kind}s {self.n}  rpcs {st.get('total_count')}  "
                f"bytes {st.get('total_bytes')}  handler errors {st.get('handler_errors')}  "
                f"ledger {counts}{planted}")

    # ------------------------------------------------------------------------------------------
    # Checks and teardown
    # ------------------------------------------------------------------------------------------

    def check_applied_logs(self) -> None:
        """The ledger's verdict on everything every server ever applied (see :mod:`actors.ledger`)."""
        verdict_or_raise(self.ledger)

    def cleanup(self) -> None:
        """Check the ledger, handler errors and the time limit, then kill every actor."""
        try:
            check_at_teardown(self.ledger, self.net, self.elapsed(), self.kind)
        finally:
            self.kill()

    def kill(self) -> None:
        if self._owns_net:
            ray.kill(self.net, no_restart=True)  # first, so that it does not report the servers' deaths
        for r in self.replicas:
            ray.kill(r, no_restart=True)
        if self._owns_ledger:
            ray.kill(self.ledger, no_restart=True)

