"""The shard controller's test harness on Ray, equivalent to the reference's ``shardctrler/config.go``,
and the configuration checks its tests use.

``CtrlerHarness(n, unreliable)`` builds ``n`` :class:`~shardctrler.server.CtrlerReplica` actors behind
one :class:`~actors.network.FaultyNetwork` (no long delays, no long reordering: a call to a disabled
end fails within 100 ms) and offers the reference's operations:

- clerks: ``make_client(to)`` (fresh ends to every server, only those in ``to`` enabled),
  ``make_async_client(to)``, ``endpoints(to)`` (fresh ends for a clerk built elsewhere, such as in a
  shard group's replica actor), ``connect_client``, ``disconnect_client``, ``delete_client``;
- servers: ``shutdown_server(i)`` (cut its server links, delete it from the network, crash it with a
  copy of its storage), ``start_server(i)`` (new outgoing ends, disabled, so it stays cut off from the
  other servers until ``connect_all``), ``partition(p1, p2)``, ``connect_all()``;
- queries: ``leader()``, ``wait_leader()``, ``ctrl_stats()``, RPC totals.

It can also live on a network someone else owns (``network=``, server names ``f"{name}-{i}"``), as the
sharded KV's harness needs: a controller service of 3 servers beside the shard groups, or a second
controller service on the same network. Every blocking call has a deadline (:data:`CALL_DEADLINE_S`);
failures raise ``AssertionError``. Synchronous, and usable from several threads at once.

The checks (:func:`check_config`, :func:`check_same_config`, :func:`fewest_moves`,
:func:`moved_shards`) are the reference's ``check`` and ``check_same_config`` plus an exact count of
the shards a balanced configuration must move.
"""

from __future__ import annotations

import functools
import itertools
import random
import threading
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

import ray

from actors.network import FaultyNetwork
from actors.replica import ReplicaSpec
from raykv.testing.raft_harness import CALL_DEADLINE_S as CALL_DEADLINE_S
from raykv.testing.raft_harness import ELECTION_TIMEOUT_S as ELECTION_TIMEOUT_S
from raykv.testing.raft_harness import TEST_TIME_LIMIT_S, get_with_deadline
from shardctrler.async_clerk import AsyncClerk
from shardctrler.clerk import Clerk, ClerkCore
from shardctrler.config import NSHARDS, Config
from shardctrler.endpoints import NetworkEndpoints
from shardctrler.server import ctrler_replica_actor
from shardctrler.statemachine import CtrlerStateMachine

#: how long a test clerk waits for one server before trying the next
CLERK_ATTEMPT_TIMEOUT_S = 1.0

_get = get_with_deadline


class CtrlerHarness:
    """``n`` controller servers behind a faulty network (the reference ``make_config(n, unreliable)``).

    ``network``: put the servers on this network actor instead of a new one (the harness then neither
    sets its reliability nor kills it). ``name``: prefix of the server names (``{name}-{i}``).
    """

    def __init__(
        self,
        n: int = 3,
        unreliable: bool = False,
        *,
        nshards: int = NSHARDS,
        network: Any = None,
        name: str = "ctrler",
        maxraftstate: int = -1,
        seed: int | None = None,
        tick_s: float = 0.02,
    ) -> None:
        self.n = n
        self.name = name
        self.nshards = nshards
        self.seed = seed if seed is not None else random.SystemRandom().randrange(2**31)
        self.rng = random.Random(self.seed)
        self.t0 = time.monotonic()
        self.lock = threading.Lock()
        self._owns_net = network is None
        self.net = FaultyNetwork.remote(seed=self.rng.randrange(2**31)) if network is None else network
        actor_cls = ctrler_replica_actor()
        self.replicas = [
            actor_cls.remote(ReplicaSpec(
                name=self.server_name(i),
                peer_id=i,
                peers=tuple(range(n)),
                state_machine=functools.partial(CtrlerStateMachine, nshards, maxraftstate),
                tick_s=tick_s,
                seed=self.rng.randrange(2**31),
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
        return f"{self.name}-{i}"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.server_name(i) for i in range(self.n))

    # ------------------------------------------------------------------------------------------
    # Clerks
    # ------------------------------------------------------------------------------------------

    def endpoints(self, to: list[int] | None = None, caller: str | None = None) -> NetworkEndpoints:
        """Fresh ends from a new caller to every server, only those in ``to`` (default all) enabled.
        Picklable: a shard group's replica may build its :class:`~shardctrler.AsyncClerk` on them."""
        to = list(range(self.n)) if to is None else to
        caller = caller or f"c{next(self._client_ids)}"
        ends = [f"{caller}->{self.server_name(i)}" for i in range(self.n)]
        _get([self.net.make_end.remote(e, self.server_name(i)) for i, e in enumerate(ends)])
        _get(self.net.enable_many.remote([ends[i] for i in to], True))
        return NetworkEndpoints(self.net, tuple(ends), self.names)

    def make_client(self, to: list[int] | None = None, **options: Any) -> Clerk:
        """A synchronous clerk with fresh ends to every server; only those in ``to`` are enabled."""
        options.setdefault("attempt_timeout", CLERK_ATTEMPT_TIMEOUT_S)
        ck = Clerk(self.endpoints(to), **options)
        with self.lock:
            self.clients[id(ck)] = list(ck.endpoints.ends)  # type: ignore[attr-defined]
        return ck

    def make_async_client(self, to: list[int] | None = None, **options: Any) -> AsyncClerk:
        options.setdefault("attempt_timeout", CLERK_ATTEMPT_TIMEOUT_S)
        ck = AsyncClerk(self.endpoints(to), **options)
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
        _get(self.net.delete_server.remote(self.server_name(i)))
        _get(self.replicas[i].crash.remote())
        self.alive[i] = False

    def start_server(self, i: int) -> None:
        """Restart server i from (a copy of) its storage with new, disabled ends to its peers; the
        peers' ends to it stay as they are (disabled after a shutdown) until :meth:`connect_all`."""
        self.incarnation[i] += 1
        inc = self.incarnation[i]
        ends = {j: f"{self.server_name(i)}.{inc}->{self.server_name(j)}" for j in range(self.n) if j != i}
        _get([self.net.make_end.remote(e, self.server_name(j)) for j, e in ends.items()])
        self.ends[i] = ends
        _get(self.replicas[i].start.remote(inc, ("network", self.net, ends)))
        _get(self.net.add_server.remote(self.server_name(i), self.replicas[i], inc))
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
        _get(self.net.enable_many.remote(on, True))

    def set_unreliable(self, unreliable: bool) -> None:
        _get(self.net.set_reliable.remote(not unreliable))

    # ------------------------------------------------------------------------------------------
    # Queries
    # ------------------------------------------------------------------------------------------

    def leader(self) -> tuple[bool, int]:
        """The first live server whose Raft claims to lead, as ``(True, i)``; ``(False, 0)`` if none."""
        states = _get([r.get_state.remote() for r in self.replicas])
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

    def ctrl_stats(self) -> list[dict[str, Any]]:
        return _get([r.ctrl_stats.remote() for r in self.replicas])

    def rpc_total(self) -> int:
        return _get(self.net.get_total_count.remote())

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def summary(self) -> str:
        st = _get(self.net.stats.remote())
        return (f"{self.elapsed():5.1f}s  servers {self.n}  rpcs {st.get('total_count')}  "
                f"bytes {st.get('total_bytes')}  handler errors {st.get('handler_errors')}")

    def cleanup(self) -> None:
        """Check for handler errors and the time limit, then kill every actor."""
        try:
            st = _get(self.net.stats.remote())
            assert st["handler_errors"] == 0, (
                f"{st['handler_errors']} server handlers raised (see the ERROR log of raykv.network)")
            assert self.elapsed() <= TEST_TIME_LIMIT_S, (
                f"test took longer than {TEST_TIME_LIMIT_S:.0f} seconds ({self.elapsed():.1f} s)")
        finally:
            self.kill()

    def kill(self) -> None:
        if self._owns_net:
            ray.kill(self.net, no_restart=True)
        for r in self.replicas:
            ray.kill(r, no_restart=True)


# ------------------------------------------------------------------------------------------------
# Checks
# ------------------------------------------------------------------------------------------------


def check_config(cfg: Config, gids: Iterable[int]) -> None:
    """The reference's ``check(groups)`` on ``cfg`` (the latest configuration): exactly the groups
    ``gids``; if there are any, every shard on one of them; balance: max - min <= 1 shards among the
    groups (a group with none counts as 0)."""
    gids = sorted(gids)
    assert sorted(cfg.groups) == gids, f"expected groups {gids}, got {sorted(cfg.groups)} in {cfg}"
    if not gids:
        assert set(cfg.shards) == {0}, f"no groups, yet shards are assigned: {cfg}"
        return
    for s, g in enumerate(cfg.shards):
        assert g in cfg.groups, f"shard {s} is on gid {g}, which is not a group: {cfg}"
    counts = cfg.counts()
    assert max(counts.values()) - min(counts.values()) <= 1, f"unbalanced: {counts} in {cfg}"


def check_same_config(c1: Config, c2: Config) -> None:
    """The reference's ``check_same_config``: same number, shards, groups and server lists (in order)."""
    assert c1.num == c2.num, f"config numbers differ: {c1.num} != {c2.num}"
    assert c1.shards == c2.shards, f"shards of config {c1.num} differ: {c1.shards} != {c2.shards}"
    assert dict(c1.groups) == dict(c2.groups), f"groups of config {c1.num} differ: {c1} != {c2}"


def moved_shards(c1: Config, c2: Config) -> list[int]:
    """The shards whose gid differs between ``c1`` and ``c2``."""
    return [s for s, (a, b) in enumerate(zip(c1.shards, c2.shards, strict=True)) if a != b]


def fewest_moves(shards: tuple[int, ...], gids: Iterable[int]) -> int:
    """The fewest shards any balanced assignment over ``gids`` must move away from ``shards``.

    Derived from the balance rule alone, independently of the controller's algorithm: with ``n``
    shards and ``k`` groups each group keeps at most its quota (``n // k``, or one more for ``n % k``
    of them), so at most ``sum(min(count, n // k))`` shards stay, plus one for each of the ``n % k``
    larger quotas given to a group that holds more than ``n // k``.
    """
    gids = set(gids)
    n = len(shards)
    if not gids:
        return sum(1 for g in shards if g != 0)
    base, extra = divmod(n, len(gids))
    counts = Counter(g for g in shards if g in gids)
    kept = sum(min(counts[g], base) for g in gids) + min(extra, sum(counts[g] > base for g in gids))
    return n - kept
