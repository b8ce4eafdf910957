"""Start a controller group on the current Ray cluster, hand out clerks, stop it.

    import shardctrler
    ctrler = shardctrler.start_group(3)     # starts an embedded Ray runtime if none is running
    ck = ctrler.clerk()
    ck.join({1: ["a", "b", "c"]})
    ctrler.stop()

The same shape as :func:`kvraft.start_group` (and the same mechanics, written again here so that
services do not import each other): replicas talk to each other directly (``transport="direct"``,
the default) or through a reliable :class:`~actors.network.FaultyNetwork` actor
(``transport="network"``), persist to durable :class:`~actors.storage.FileStorage` in ``data_dir``
(a fresh temporary directory by default) unless ``storage="memory"``. Each replica is on its own
node when the cluster has enough nodes, and the replicas are packed with a warning when it has not
(:mod:`actors.placement`); a replica's storage directory is created on its node by the replica
itself, and a temporary one is removed there by :meth:`CtrlerGroup.stop`.
"""

from __future__ import annotations

import functools
import itertools
import os
import time
import uuid
from pathlib import Path
from typing import Any

import ray

from actors.network import FaultyNetwork
from actors.placement import GroupPlacement, node_local_dir, nodes_of, place_group, remove_dirs
from actors.replica import ReplicaSpec
from actors.storage import FileStorage, MemoryStorage
from shardctrler.async_clerk import AsyncClerk
from shardctrler.clerk import Clerk
from shardctrler.config import NSHARDS, _check_nshards
from shardctrler.endpoints import DirectEndpoints, NetworkEndpoints
from shardctrler.server import ctrler_replica_actor
from shardctrler.statemachine import CtrlerStateMachine


class CtrlerGroup:
    """A running controller group. Use :func:`start_group` to make one.

    Attributes: ``n``, ``name``, ``nshards``, ``replicas`` (actor handles, index = peer id),
    ``data_dir`` (durable storage, or ``None`` for memory storage: on each replica's own node),
    ``network`` (the network actor with ``transport="network"``, else ``None``), ``placement`` (where
    the replicas went: :class:`~actors.placement.GroupPlacement`), ``nodes`` (the node id each replica
    ran on when the group started).
    """

    def __init__(self, name: str, nshards: int, replicas: list[Any], data_dir: Path | None,
                 owns_dir: bool, clerk_options: dict[str, Any], network: Any = None,
                 placement: GroupPlacement | None = None, nodes: list[str | None] | None = None) -> None:
        self.name = name
        self.nshards = nshards
        self.network = network
        self._clerks = itertools.count()
        self.n = len(replicas)
        self.replicas = replicas
        self.data_dir = data_dir
        self._owns_dir = owns_dir
        self._clerk_options = clerk_options
        self.placement = placement
        self.nodes = list(nodes) if nodes is not None else [None] * self.n
        self._stopped = False

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f"{self.name}-{i}" for i in range(self.n))

    @property
    def endpoints(self) -> DirectEndpoints | NetworkEndpoints:
        """Endpoints for a new clerk: the replicas' handles, or fresh enabled ends on the network.
        Picklable: pass them to another actor (a shard group's replica) to build a clerk there."""
        if self.network is None:
            return DirectEndpoints(tuple(self.replicas), self.names)
        k = next(self._clerks)
        ends = tuple(f"clerk{k}->{name}" for name in self.names)
        ray.get([self.network.make_end.remote(e, name) for e, name in zip(ends, self.names, strict=True)],
                timeout=30)
        ray.get(self.network.enable_many.remote(list(ends), True), timeout=30)
        return NetworkEndpoints(self.network, ends, self.names)

    def clerk(self, **options: Any) -> Clerk:
        """A synchronous clerk; ``options`` as for :class:`~shardctrler.Clerk`."""
        return Clerk(self.endpoints, **(self._clerk_options | options))

    def async_clerk(self, **options: Any) -> AsyncClerk:
        """An asyncio clerk (use it from one event loop); options as for :class:`~shardctrler.AsyncClerk`."""
        return AsyncClerk(self.endpoints, **(self._clerk_options | options))

    def leader(self, timeout: float = 10.0) -> int:
        """The peer id of the current leader, waiting up to ``timeout`` seconds for one."""
        deadline = time.monotonic() + timeout
        while True:
            states = ray.get([r.get_state.remote() for r in self.replicas], timeout=timeout)
            leaders = [i for i, (_, is_leader) in enumerate(states) if is_leader]
            if leaders:
                return max(leaders, key=lambda i: states[i][0])
            if time.monotonic() > deadline:
                raise TimeoutError(f"no leader in controller group {self.name!r} after {timeout:g} s")
            time.sleep(0.05)

    def status(self) -> list[dict[str, Any]]:
        """Each replica's Raft status and storage sizes, plus its controller counters (``ctrl``)."""
        raft = ray.get([r.status.remote() for r in self.replicas], timeout=30)
        ctrl = ray.get([r.ctrl_stats.remote() for r in self.replicas], timeout=30)
        return [st | {"ctrl": c} for st, c in zip(raft, ctrl, strict=True)]

    def stop(self) -> None:
        """Kill the replicas and release their placement; a temporary data directory made by
        :func:`start_group` is removed on every node that holds part of it."""
        if self._stopped:
            return
        self._stopped = True
        for r in self.replicas:
            ray.kill(r, no_restart=True)
        if self.network is not None:
            ray.kill(self.network, no_restart=True)
        if self.placement is not None:
            self.placement.release()
        if self._owns_dir and self.data_dir is not None:
            remove_dirs({(node, str(self.data_dir)) for node in self.nodes})

    def __enter__(self) -> CtrlerGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_group(
    n: int = 3,
    *,
    nshards: int = NSHARDS,
    storage: str = "durable",
    transport: str = "direct",
    data_dir: str | os.PathLike[str] | None = None,
    maxraftstate: int = -1,
    name: str | None = None,
    tick_s: float = 0.02,
    wait_for_leader: bool = True,
    placement: GroupPlacement | None = None,
    **clerk_options: Any,
) -> CtrlerGroup:
    """Start ``n`` controller replicas on the current Ray cluster (``ray.init()`` first if none is
    running) for ``nshards`` shards.

    ``storage``: ``"durable"`` (FileStorage under ``data_dir``, one subdirectory per replica; a new
    temporary directory if ``data_dir`` is None, removed by :meth:`CtrlerGroup.stop`; a ``data_dir``
    that already holds a group's replicas is reopened, so the group restarts with its state) or
    ``"memory"``.
    ``transport``: ``"direct"`` or ``"network"`` (every call through one reliable FaultyNetwork
    actor). ``maxraftstate``: snapshot when a replica's persisted Raft state exceeds this many bytes
    (-1, the default: never). ``clerk_options`` become the defaults of the group's clerks. With
    ``wait_for_leader`` the call returns once a leader is elected. ``placement``: where the replicas
    go (default: :func:`actors.placement.place_group` with distinct nodes when there are enough);
    one with ``detached=True`` makes replicas that outlive this driver.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"a group needs at least one replica, got n={n!r}")
    _check_nshards(nshards)
    if storage not in ("durable", "memory"):
        raise ValueError(f"storage must be 'durable' or 'memory', got {storage!r}")
    if transport not in ("direct", "network"):
        raise ValueError(f"transport must be 'direct' or 'network', got {transport!r}")
    if not ray.is_initialized():
        ray.init(include_dashboard=False, logging_level="WARNING")
    name = name or f"ctrler-{uuid.uuid4().hex[:8]}"
    owns_dir = False
    base: Path | None = None
    fresh = True  # a new group creates its replicas' storage; an existing data_dir is reopened
    if storage == "durable":
        if data_dir is None:  # created on each replica's node by the replica (FileStorage new=True)
            base, owns_dir = Path(node_local_dir(name)), True
        else:
            base = Path(data_dir)
            fresh = not base.exists() or not any(base.iterdir())
    if placement is None:
        placement = place_group(n, name=name)
    elif placement.n != n:
        raise ValueError(f"the placement is for {placement.n} replicas, not {n}")
    actor_cls = ctrler_replica_actor()
    replicas = []
    for i in range(n):
        store: Any = MemoryStorage
        if base is not None:
            store = functools.partial(FileStorage, str(base / f"replica{i}"), new=fresh, lock_timeout=5.0)
        replicas.append(actor_cls.options(**placement.options(i)).remote(ReplicaSpec(
            name=f"{name}-{i}",
            peer_id=i,
            peers=tuple(range(n)),
            state_machine=functools.partial(CtrlerStateMachine, nshards, maxraftstate),
            storage=store,
            tick_s=tick_s,
            seed=uuid.uuid4().int % 2**31,
        )))
    network = None
    if transport == "direct":
        handles = dict(enumerate(replicas))
        ray.get([r.start.remote(1, ("direct", {j: h for j, h in handles.items() if j != i}))
                 for i, r in enumerate(replicas)], timeout=60)
    else:
        network = FaultyNetwork.remote(seed=0)
        ends = {i: {j: f"{name}-{i}->{name}-{j}" for j in range(n) if j != i} for i in range(n)}
        all_ends = [e for i in range(n) for e in ends[i].values()]
        ray.get([network.make_end.remote(e, f"{name}-{j}") for i in range(n) for j, e in ends[i].items()],
                timeout=60)
        ray.get(network.enable_many.remote(all_ends, True), timeout=60)
        ray.get([r.start.remote(1, ("network", network, ends[i])) for i, r in enumerate(replicas)],
                timeout=60)
        ray.get([network.add_server.remote(f"{name}-{i}", r, 1) for i, r in enumerate(replicas)],
                timeout=60)
    group = CtrlerGroup(name, nshards, replicas, base, owns_dir, clerk_options, network, placement,
                        nodes_of(replicas))
    if wait_for_leader:
        group.leader()
    return group
