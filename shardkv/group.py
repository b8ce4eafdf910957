"""Start shard groups beside a running controller, hand out clerks, stop them.

    import shardctrler, shardkv
    ctrler = shardctrler.start_group(3)                 # the controller (10 shards by default)
    g1 = shardkv.start_group(1, ctrler, join=True)      # 3 replicas; joined to the controller
    g2 = shardkv.start_group(2, ctrler, join=True)      # shards move from group 1 to group 2
    ck = shardkv.make_clerk(ctrler)
    ck.put("k", "v")
    ...
    for g in (g1, g2): g.stop()
    ctrler.stop()

The same shape as :func:`kvraft.start_group` (written again here so that services do not import each
other). Replicas talk to each other, to the controller and to other groups directly
(``transport="direct"``, the default: every group server is a named Ray actor, found by the name
the configurations carry), or through the controller's :class:`~actors.network.FaultyNetwork` actor
(``transport="network"``; the controller must have been started with it). They persist to durable
:class:`~actors.storage.FileStorage` in ``data_dir`` unless ``storage="memory"``. Each replica is on
its own node when the cluster has enough nodes, and the replicas are packed with a warning when it
has not (:mod:`actors.placement`); a replica's storage directory is created on its node by the
replica itself, and a temporary one is removed there by :meth:`ShardGroup.stop`.

Every server and clerk of a service must use the same key mapping: ``"reference"`` (first byte mod
nshards, the ported tests; the default) or ``"hash"`` (a stable hash of the whole key, for real use).
"""

from __future__ import annotations

import functools
import os
import time
import uuid
from pathlib import Path
from typing import Any

import ray

from actors.placement import GroupPlacement, node_local_dir, nodes_of, place_group, remove_dirs
from actors.replica import ReplicaSpec
from actors.storage import FileStorage, MemoryStorage
from shardkv.async_clerk import AsyncClerk
from shardkv.clerk import Clerk
from shardkv.endpoints import DirectRouter, NetworkRouter
from shardkv.server import shardkv_replica_actor
from shardkv.statemachine import ShardKVStateMachine, mapping_function


def routing_for(ctrler: Any) -> tuple:
    """How servers and clerks reach everything, given the controller group ``ctrler`` (a
    :class:`shardctrler.CtrlerGroup`): its network if it has one, else direct calls, with the
    controller's replicas known by name."""
    if getattr(ctrler, "network", None) is not None:
        return ("network", ctrler.network)
    return ("direct", dict(zip(ctrler.names, ctrler.replicas, strict=True)), None)


def router_for(ctrler: Any) -> NetworkRouter | DirectRouter:
    """A new router for a clerk of the service controlled by ``ctrler``."""
    routing = routing_for(ctrler)
    if routing[0] == "network":
        return NetworkRouter(routing[1])
    return DirectRouter(routing[1], routing[2])


def make_clerk(ctrler: Any, *, mapping: str = "reference", **options: Any) -> Clerk:
    """A synchronous clerk of the service controlled by ``ctrler``; ``options`` as for
    :class:`~shardkv.clerk.Clerk` (``attempt_timeout``, ``retry_pause``, ...)."""
    return Clerk(router_for(ctrler), ctrler.names, mapping=mapping, **options)


def make_async_clerk(ctrler: Any, *, mapping: str = "reference", **options: Any) -> AsyncClerk:
    """An asyncio clerk of the service controlled by ``ctrler`` (use it from one event loop)."""
    return AsyncClerk(router_for(ctrler), ctrler.names, mapping=mapping, **options)


class ShardGroup:
    """A running shard group. Use :func:`start_group` to make one.

    Attributes: ``gid``, ``n``, ``name``, ``names`` (the servers' names, as given to the controller),
    ``replicas`` (actor handles, index = peer id), ``data_dir`` (``None`` for memory storage; on each
    replica's own node), ``placement`` (:class:`~actors.placement.GroupPlacement`), ``nodes`` (the
    node id each replica ran on when the group started).
    """

    def __init__(self, gid: int, name: str, replicas: list[Any], data_dir: Path | None,
                 owns_dir: bool, placement: GroupPlacement | None = None,
                 nodes: list[str | None] | None = None) -> None:
        self.gid = gid
        self.placement = placement
        self.nodes = list(nodes) if nodes is not None else [None] * len(replicas)
        self.name = name
        self.n = len(replicas)
        self.replicas = replicas
        self.data_dir = data_dir
        self._owns_dir = owns_dir
        self._stopped = False

    @property
    def names(self) -> list[str]:
        return [f"{self.name}-{i}" for i in range(self.n)]

    def leader(self, timeout: float = 10.0) -> int:
        """The peer id of the current leader, waiting up to ``timeout`` seconds for one."""
        deadline = time.monotonic() + timeout
        while True:
            states = ray.get([r.get_state.remote() for r in self.replicas], timeout=timeout)
            leaders = [i for i, (_, is_leader) in enumerate(states) if is_leader]
            if leaders:
                return max(leaders, key=lambda i: states[i][0])
            if time.monotonic() > deadline:
                raise TimeoutError(f"no leader in shard group {self.gid} ({self.name}) after {timeout:g} s")
            time.sleep(0.05)

    def status(self) -> list[dict[str, Any]]:
        """Each replica's shard status: configuration, shards by status (serving, arriving,
        gc_pending, leaving, held), resident bytes, role, term, storage sizes."""
        return ray.get([r.shard_stats.remote() for r in self.replicas], timeout=30)

    def stop(self) -> None:
        """Kill the replicas and release their placement; a temporary data directory made by
        :func:`start_group` is removed on every node that holds part of it. Leave the group first (and
        wait until it holds no shard) if the service should keep its data."""
        if self._stopped:
            return
        self._stopped = True
        for r in self.replicas:
            ray.kill(r, no_restart=True)
        if self.placement is not None:
            self.placement.release()
        if self._owns_dir and self.data_dir is not None:
            remove_dirs({(node, str(self.data_dir)) for node in self.nodes})

    def __enter__(self) -> ShardGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_group(
    gid: int,
    ctrler: Any,
    n: int = 3,
    *,
    storage: str = "durable",
    data_dir: str | os.PathLike[str] | None = None,
    maxraftstate: int = -1,
    mapping: str = "reference",
    name: str | None = None,
    tick_s: float = 0.02,
    join: bool = False,
    wait_for_leader: bool = True,
    placement: GroupPlacement | None = None,
) -> ShardGroup:
    """Start shard group ``gid`` of ``n`` replicas for the controller group ``ctrler`` (from
    :func:`shardctrler.start_group`) on the current Ray cluster.

    The transport is the controller's: direct, or its network. ``storage``: ``"durable"``
    (FileStorage under ``data_dir``, one subdirectory per replica; a new temporary directory if
    ``data_dir`` is None, removed by :meth:`ShardGroup.stop`) or ``"memory"``. ``maxraftstate``:
    snapshot when a replica's persisted Raft state exceeds this many bytes (-1: never). ``mapping``:
    the service's key mapping. With ``join`` the group is joined to the controller once its replicas
    run (a :class:`shardctrler.RefusedError` if the gid or a server name is taken).
    """
    if not isinstance(gid, int) or isinstance(gid, bool) or gid <= 0:
        raise ValueError(f"gid must be an int > 0, got {gid!r}")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"a group needs at least one replica, got n={n!r}")
    if storage not in ("durable", "memory"):
        raise ValueError(f"storage must be 'durable' or 'memory', got {storage!r}")
    mapping_function(mapping)
    name = name or f"shardkv-{gid}-{uuid.uuid4().hex[:6]}"
    routing = routing_for(ctrler)
    owns_dir = False
    base: Path | None = None
    fresh = True  # a new group creates its replicas' storage; an existing data_dir is reopened
    if storage == "durable":
        if data_dir is None:  # created on each replica's node by the replica (FileStorage new=True)
            base, owns_dir = Path(node_local_dir(name)), True
        else:
            base = Path(data_dir)
            fresh = not base.exists() or not any(base.iterdir())
    if placement is None:  # each replica on its own node when the cluster has enough (actors.placement)
        placement = place_group(n, name=name)
    elif placement.n != n:
        raise ValueError(f"the placement is for {placement.n} replicas, not {n}")
    replicas = []
    extra = {"gid": gid, "ctrlers": tuple(ctrler.names), "routing": routing}
    for i in range(n):
        store: Any = MemoryStorage
        if base is not None:
            store = functools.partial(FileStorage, str(base / f"replica{i}"), new=fresh, lock_timeout=5.0)
        actor_cls = shardkv_replica_actor(name=f"{name}-{i}")
        replicas.append(actor_cls.options(**placement.options(i)).remote(ReplicaSpec(
            name=f"{name}-{i}",
            peer_id=i,
            peers=tuple(range(n)),
            state_machine=functools.partial(ShardKVStateMachine, gid, ctrler.nshards, mapping, maxraftstate),
            storage=store,
            tick_s=tick_s,
            seed=uuid.uuid4().int % 2**31,
            extra=extra,
        )))
    if routing[0] == "direct":
        handles = dict(enumerate(replicas))
        ray.get([r.start.remote(1, ("direct", {j: h for j, h in handles.items() if j != i}))
                 for i, r in enumerate(replicas)], timeout=60)
    else:
        network = routing[1]
        ends = {i: {j: f"{name}-{i}->{name}-{j}" for j in range(n) if j != i} for i in range(n)}
        ray.get([network.make_end.remote(e, f"{name}-{j}") for i in range(n) for j, e in ends[i].items()],
                timeout=60)
        ray.get(network.enable_many.remote([e for i in range(n) for e in ends[i].values()], True),
                timeout=60)
        ray.get([r.start.remote(1, ("network", network, ends[i])) for i, r in enumerate(replicas)],
                timeout=60)
        ray.get([network.add_server.remote(f"{name}-{i}", r, 1) for i, r in enumerate(replicas)],
                timeout=60)
    group = ShardGroup(gid, name, replicas, base, owns_dir, placement, nodes_of(replicas))
    if wait_for_leader:
        group.leader()
    if join:
        ctrler.clerk().join({gid: group.names}, timeout=30)
    return group
