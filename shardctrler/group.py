"""Start a controller group on the current Ray cluster, hand out clerks, stop it.

    import shardctrler
    ctrler = shardctrler.start_group(3)     # starts an embedded Ray runtime if none is running
    ck = ctrler.clerk()
    ck.join({1: ["a", "b", "c"]})
    ctrler.stop()

The same shape as :func:`kvraft.start_group`, and the same mechanics: the shared group shell,
:mod:`actors.service_group`. Replicas talk to each other, and clerks to replicas, over authenticated
streams (``transport="stream"``, the default; docs/transports.md), through Ray actor calls
(``transport="direct"``) or through a reliable :class:`~actors.network.FaultyNetwork` actor
(``transport="network"``), persist to durable :class:`~actors.storage.FileStorage` in ``data_dir``
(a fresh temporary directory by default) unless ``storage="memory"``. Each replica is on its own
node when the cluster has enough nodes, and the replicas are packed with a warning when it has not
(:mod:`actors.placement`); a replica's storage directory is created on its node by the replica
itself, and a temporary one is removed there by :meth:`CtrlerGroup.stop`.
"""

from __future__ import annotations

import functools
import os
import uuid
from typing import Any

import ray

from actors.placement import GroupPlacement
from actors.reads import READ_PATHS
from actors.service_group import ClerkGroup, StartedReplicas, check_group_options, start_replicas
from actors.sessions import DEFAULT_SESSION_TTL_S, ttl_ms
from shardctrler.async_clerk import AsyncClerk
from shardctrler.clerk import Clerk
from shardctrler.config import NSHARDS, _check_nshards
from shardctrler.endpoints import DirectEndpoints, NetworkEndpoints, StreamEndpoints
from shardctrler.server import ctrler_replica_actor
from shardctrler.statemachine import CtrlerStateMachine


class CtrlerGroup(ClerkGroup[Clerk, AsyncClerk]):
    """A running controller group. Use :func:`start_group` to make one.

    Attributes: ``n``, ``name``, ``nshards``, ``replicas`` (actor handles, index = peer id),
    ``data_dir`` (durable storage, or ``None`` for memory storage: on each replica's own node),
    ``network`` (the network actor with ``transport="network"``, else ``None``), ``placement`` (where
    the replicas went: :class:`~actors.placement.GroupPlacement`), ``nodes`` (the node id each replica
    ran on when the group started).
    """

    label = "controller group {name!r}"
    direct_endpoints = DirectEndpoints
    network_endpoints = NetworkEndpoints
    stream_endpoints = StreamEndpoints
    clerk_class = Clerk
    async_clerk_class = AsyncClerk

    def __init__(self, started: StartedReplicas, nshards: int, clerk_options: dict[str, Any]) -> None:
        super().__init__(started, clerk_options)
        self.nshards = nshards

    def status(self) -> list[dict[str, Any]]:
        """Each replica's Raft status and storage sizes, plus its controller counters (``ctrl``)."""
        raft = ray.get([r.status.remote() for r in self.replicas], timeout=30)
        ctrl = ray.get([r.ctrl_stats.remote() for r in self.replicas], timeout=30)
        return [st | {"ctrl": c} for st, c in zip(raft, ctrl, strict=True)]

    def __enter__(self) -> CtrlerGroup:
        return self


def start_group(
    n: int = 3,
    *,
    nshards: int = NSHARDS,
    storage: str = "durable",
    transport: str = "stream",
    data_dir: str | os.PathLike[str] | None = None,
    maxraftstate: int = -1,
    name: str | None = None,
    tick_s: float = 0.02,
    wait_for_leader: bool = True,
    placement: GroupPlacement | None = None,
    session_ttl: float | None = DEFAULT_SESSION_TTL_S,
    read_path: str = "index",
    **clerk_options: Any,
) -> CtrlerGroup:
    """Start ``n`` controller replicas on the current Ray cluster (``ray.init()`` first if none is
    running) for ``nshards`` shards.

    ``storage``: ``"durable"`` (FileStorage under ``data_dir``, one subdirectory per replica; a new
    temporary directory if ``data_dir`` is None, removed by :meth:`CtrlerGroup.stop`; a ``data_dir``
    that already holds a group's replicas is reopened, so the group restarts with its state) or
    ``"memory"``.
    ``transport``: ``"stream"`` (the default: authenticated TCP streams, found and keyed through Ray;
    see docs/transports.md), ``"direct"`` (Ray actor calls) or ``"network"`` (every call through one
    reliable FaultyNetwork actor). ``maxraftstate``: snapshot when a replica's persisted Raft state
    exceeds this many bytes
    (-1, the default: never). ``clerk_options`` become the defaults of the group's clerks. With
    ``wait_for_leader`` the call returns once a leader is elected. ``placement``: where the replicas
    go (default: :func:`actors.placement.place_group` with distinct nodes when there are enough);
    one with ``detached=True`` makes replicas that outlive this driver.
    ``session_ttl``: seconds a client may stay idle before the servers forget its session (see
    :mod:`actors.sessions`; ``None``: never); the group's clerks get it too.
    ``read_path``: how batches of Queries are served, ``"index"`` (ReadIndex: one heartbeat round,
    no log entry; the default) or ``"log"`` (proposed and applied like writes); see
    docs/shardctrler.md.
    """
    check_group_options(n, storage, transport)
    ttl_ms(session_ttl)
    if read_path not in READ_PATHS:
        raise ValueError(f"read_path must be one of {READ_PATHS}, got {read_path!r}")
    _check_nshards(nshards)
    actor_cls = ctrler_replica_actor()
    started = start_replicas(
        n,
        name=name,
        default_name=lambda: f"ctrler-{uuid.uuid4().hex[:8]}",
        actor_cls=lambda i: actor_cls,
        state_machine=functools.partial(CtrlerStateMachine, nshards, maxraftstate),
        storage=storage,
        data_dir=data_dir,
        transport=transport,
        placement=placement,
        tick_s=tick_s,
        extra={"session_ttl": session_ttl, "read_path": read_path},
    )
    group = CtrlerGroup(started, nshards, {"session_ttl": session_ttl} | clerk_options)
    if wait_for_leader:
        group.leader()
    return group
