"""Start a kvraft group on the current Ray cluster, hand out clerks, stop it.

    import kvraft
    group = kvraft.start_group(3)          # starts an embedded Ray runtime if none is running
    ck = group.clerk()
    ck.put("k", "v")
    group.stop()

Replicas talk to each other, and clerks to replicas, over authenticated asyncio streams
(``transport="stream"``, the default: each replica listens on its node's address, published through
its actor; the service's secret travels only through Ray; see docs/transports.md), through Ray actor
calls (``transport="direct"``) or through a reliable :class:`~actors.network.FaultyNetwork` actor
(``transport="network"``, to measure what the tests' network costs), and persist to durable
:class:`~actors.storage.FileStorage` in ``data_dir`` (a fresh temporary directory by default) unless
``storage="memory"``. Each replica is on its own node when the cluster has enough nodes, and the
replicas are packed with a warning when it has not (:mod:`actors.placement`); a replica's storage
directory is created on its node by the replica itself, and a temporary one is removed there by
:meth:`KVGroup.stop`. All of this is the shared group shell, :mod:`actors.service_group`, as for the
controller and the shard groups.

Creating versus restarting. A ``data_dir`` that does not exist or is empty makes a new group: each
replica's directory is created with an identity (group name, replica number, group size). Any other
``data_dir`` restarts the group stored there: each replica must find its own directory with the
matching identity, and a replica whose directory is missing, damaged or foreign does not start (it is
never silently started empty). The group starts if a majority of its replicas start; the others are
reported by :meth:`KVGroup.status` with the reason, and in a warning on the ``raykv.kvraft`` logger.
"""

from __future__ import annotations

import functools
import logging
import os
import uuid
from typing import Any

from actors.placement import GroupPlacement
from actors.reads import READ_PATHS
from actors.service_group import ClerkGroup, start_replicas, warn_failed
from actors.sessions import DEFAULT_SESSION_TTL_S, ttl_ms
from kvraft.async_clerk import AsyncClerk
from kvraft.clerk import Clerk
from kvraft.endpoints import DirectEndpoints, NetworkEndpoints, StreamEndpoints
from kvraft.errors import GroupStartError
from kvraft.server import kv_replica_actor
from kvraft.statemachine import KVStateMachine

log = logging.getLogger("raykv.kvraft")


class KVGroup(ClerkGroup[Clerk, AsyncClerk]):
    """A running group of KV replicas. Use :func:`start_group` to make one.

    Attributes: ``n``, ``name``, ``replicas`` (actor handles, index = peer id), ``data_dir`` (durable
    storage, on each replica's own node, or ``None`` for memory storage), ``network`` (the network
    actor with ``transport="network"``, else ``None``), ``transport``, ``secret`` and ``addresses``
    (the stream transport's; see :class:`~actors.service_group.ServiceGroup`), ``placement`` (where
    the replicas went: :class:`~actors.placement.GroupPlacement`), ``nodes`` (the node id each
    replica ran on when the group started), ``failed_at_start`` (peer id -> why that replica did not
    start; empty when all did). ``status()`` reports each replica: alive, damaged, the reason,
    leader, term, and the Raft core's status (see :meth:`actors.service_group.ServiceGroup.status`).
    """

    direct_endpoints = DirectEndpoints
    network_endpoints = NetworkEndpoints
    stream_endpoints = StreamEndpoints
    clerk_class = Clerk
    async_clerk_class = AsyncClerk

    def __enter__(self) -> KVGroup:
        return self


def start_group(
    n: int = 3,
    *,
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
) -> KVGroup:
    """Start ``n`` KV replicas on the current Ray cluster (``ray.init()`` first if none is running).

    ``storage``: ``"durable"`` (FileStorage under ``data_dir``, one subdirectory per replica; a new
    temporary directory if ``data_dir`` is None, removed by :meth:`KVGroup.stop`) or ``"memory"``.
    A missing or empty ``data_dir`` creates a new group there; any other restarts the group stored in
    it (``name`` defaults to the stored one; ``n`` must match). Replicas that cannot start (missing,
    damaged or foreign storage) are left down and reported by :meth:`KVGroup.status`; if they are
    too many for a majority, the group is torn down and :class:`~kvraft.errors.GroupStartError`
    names each one with the reason.
    ``transport``: ``"stream"`` (the default: authenticated TCP streams, replica to replica and clerk
    to replica, found and keyed through Ray; see docs/transports.md), ``"direct"`` (Ray actor calls)
    or ``"network"`` (every call through one reliable FaultyNetwork actor, as in the tests).
    ``maxraftstate``: snapshot when a replica's persisted Raft state exceeds this many bytes (-1:
    never). ``clerk_options`` become the defaults of the group's clerks. With ``wait_for_leader`` the
    call returns once a leader is elected.
    ``placement``: where the replicas go (default: :func:`actors.placement.place_group`, distinct
    nodes when there are enough, packed with a warning when not); one with ``detached=True`` makes
    replicas that outlive this driver.
    ``session_ttl``: seconds a client may stay idle before the servers forget its session (see
    :mod:`actors.sessions`; ``None``: never); the group's clerks get it too.
    ``read_path``: how batches of Gets are served, ``"index"`` (ReadIndex: one heartbeat round, no
    log entry; the default) or ``"log"`` (proposed and applied like writes); see docs/kvraft.md.
    """
    ttl_ms(session_ttl)  # a bad value fails here, with what to pass
    if read_path not in READ_PATHS:
        raise ValueError(f"read_path must be one of {READ_PATHS}, got {read_path!r}")
    actor_cls = kv_replica_actor()
    started = start_replicas(
        n,
        name=name,
        default_name=lambda: f"kv-{uuid.uuid4().hex[:8]}",
        actor_cls=lambda i: actor_cls,
        state_machine=functools.partial(KVStateMachine, maxraftstate),
        storage=storage,
        data_dir=data_dir,
        transport=transport,
        placement=placement,
        tick_s=tick_s,
        identity=True,
        tolerate=True,
        start_error=GroupStartError,
        extra={"session_ttl": session_ttl, "read_path": read_path},
    )
    group = KVGroup(started, {"session_ttl": session_ttl} | clerk_options)
    warn_failed(log, group, "KVGroup.status()")
    if wait_for_leader:
        group.leader()
    return group
