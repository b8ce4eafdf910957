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

The same shape as :func:`kvraft.start_group`, and the same mechanics: the shared group shell,
:mod:`actors.service_group`. The transport is the controller's. On the stream transport (a controller
started with ``transport="stream"``) replicas talk to each other, to the controller and to other groups
over authenticated TCP streams with the controller's secret (one secret per service), and find a
server's address by asking its actor (every group server is a named Ray actor, found by the name the
configurations carry; :class:`~shardkv.stream_router.StreamRouter`). Directly (``transport="direct"``)
they call those actors; or they go through the controller's :class:`~actors.network.FaultyNetwork`
actor (``transport="network"``). They persist to durable
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
import uuid
from typing import Any

import ray

from actors.placement import GroupPlacement
from actors.service_group import ServiceGroup, StartedReplicas, check_group_options, start_replicas
from actors.sessions import DEFAULT_SESSION_TTL_S, ttl_ms
from shardkv.async_clerk import AsyncClerk
from shardkv.clerk import Clerk
from shardkv.endpoints import Router
from shardkv.server import make_router, shardkv_replica_actor
from shardkv.statemachine import ShardKVStateMachine, mapping_function


def routing_for(ctrler: Any) -> tuple:
    """How servers and clerks reach everything, given the controller group ``ctrler`` (a
    :class:`shardctrler.CtrlerGroup`, or anything with its ``names``, ``replicas`` and ``network`` /
    ``secret``): its network if it has one; the streams with its secret if it has one; else direct
    calls. The controller's replicas are known by name (their actors are not named actors)."""
    if getattr(ctrler, "network", None) is not None:
        return ("network", ctrler.network)
    known = dict(zip(ctrler.names, ctrler.replicas, strict=True))
    secret = getattr(ctrler, "secret", None)
    if secret is not None:
        return ("stream", secret, known, None)
    return ("direct", known, None)


def router_for(ctrler: Any) -> Router:
    """A new router for a clerk of the service controlled by ``ctrler``."""
    return make_router(routing_for(ctrler), None)


def make_clerk(ctrler: Any, *, mapping: str = "reference", **options: Any) -> Clerk:
    """A synchronous clerk of the service controlled by ``ctrler``; ``options`` as for
    :class:`~shardkv.clerk.Clerk` (``attempt_timeout``, ``retry_pause``, ...)."""
    return Clerk(router_for(ctrler), ctrler.names, mapping=mapping, **options)


def make_async_clerk(ctrler: Any, *, mapping: str = "reference", **options: Any) -> AsyncClerk:
    """An asyncio clerk of the service controlled by ``ctrler`` (use it from one event loop)."""
    return AsyncClerk(router_for(ctrler), ctrler.names, mapping=mapping, **options)


class ShardGroup(ServiceGroup):
    """A running shard group. Use :func:`start_group` to make one.

    Attributes: ``gid``, ``n``, ``name``, ``names`` (the servers' names, as given to the controller),
    ``replicas`` (actor handles, index = peer id), ``data_dir`` (``None`` for memory storage; on each
    replica's own node), ``placement`` (:class:`~actors.placement.GroupPlacement`), ``nodes`` (the
    node id each replica ran on when the group started).
    """

    def __init__(self, gid: int, started: StartedReplicas) -> None:
        super().__init__(started)
        self.gid = gid

    @property
    def names(self) -> list[str]:  # type: ignore[override]
        return [f"{self.name}-{i}" for i in range(self.n)]

    def describe(self) -> str:
        return f"shard group {self.gid} ({self.name})"

    def status(self) -> list[dict[str, Any]]:
        """Each replica's shard status: configuration, shards by status (serving, arriving,
        gc_pending, leaving, held), resident bytes, role, term, storage sizes."""
        return ray.get([r.shard_stats.remote() for r in self.replicas], timeout=30)  # type: ignore[no-any-return]

    def stop(self) -> None:
        """Kill the replicas and release their placement; a temporary data directory made by
        :func:`start_group` is removed on every node that holds part of it. Leave the group first (and
        wait until it holds no shard) if the service should keep its data."""
        super().stop()

    def __enter__(self) -> ShardGroup:
        return self


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
    session_ttl: float | None = DEFAULT_SESSION_TTL_S,
) -> ShardGroup:
    """Start shard group ``gid`` of ``n`` replicas for the controller group ``ctrler`` (from
    :func:`shardctrler.start_group`) on the current Ray cluster.

    The transport is the controller's: streams with its secret, direct, or its network. ``storage``:
    ``"durable"`` (FileStorage under ``data_dir``, one subdirectory per replica; a new temporary
    directory if ``data_dir`` is None, removed by :meth:`ShardGroup.stop`) or ``"memory"``.
    ``maxraftstate``: snapshot when a replica's persisted Raft state exceeds this many bytes (-1:
    never). ``mapping``: the service's key mapping. With ``join`` the group is joined to the controller
    once its replicas run (a :class:`shardctrler.RefusedError` if the gid or a server name is taken).
    ``placement``: where the replicas go (default: :func:`actors.placement.place_group`, distinct nodes
    when there are enough). ``session_ttl``: seconds a client may stay idle before the group forgets its
    sessions (see :mod:`actors.sessions`; ``None``: never); give the service's clerks the same value.
    """
    ttl_ms(session_ttl)
    if not isinstance(gid, int) or isinstance(gid, bool) or gid <= 0:
        raise ValueError(f"gid must be an int > 0, got {gid!r}")
    check_group_options(n, storage)
    mapping_function(mapping)
    name = name or f"shardkv-{gid}-{uuid.uuid4().hex[:6]}"
    routing = routing_for(ctrler)
    started = start_replicas(
        n,
        name=name,
        actor_cls=lambda i: shardkv_replica_actor(name=f"{name}-{i}"),
        state_machine=functools.partial(ShardKVStateMachine, gid, ctrler.nshards, mapping, maxraftstate),
        storage=storage,
        data_dir=data_dir,
        transport=routing[0],
        network=routing[1] if routing[0] == "network" else None,
        **({"secret": routing[1]} if routing[0] == "stream" else {}),
        placement=placement,
        tick_s=tick_s,
        extra={"gid": gid, "ctrlers": tuple(ctrler.names), "routing": routing, "session_ttl": session_ttl},
    )
    group = ShardGroup(gid, started)
    if wait_for_leader:
        group.leader()
    if join:  # through the transport the group uses (a controller clerk over this service's router)
        from shardctrler.clerk import Clerk as CtrlerClerk
        from shardkv.endpoints import CtrlerEndpoints

        endpoints = CtrlerEndpoints(router_for(ctrler), tuple(ctrler.names)).ensure()
        CtrlerClerk(endpoints, session_ttl=session_ttl).join({gid: group.names}, timeout=30)
    return group
