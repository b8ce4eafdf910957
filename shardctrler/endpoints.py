"""How a clerk reaches the servers of a controller group: over authenticated streams (the default),
straight to the replica actors, or through the faulty network actor (tests). The endpoint sets are the
shared ones (:mod:`actors.service_endpoints`, :mod:`actors.stream_endpoints`), as for
:mod:`kvraft.endpoints`; only the RPC name differs (``ctrl``). All are picklable: a clerk can be built
in one process and used in another (a Ray task, or a shard group's replica actor, which uses an
:class:`~shardctrler.AsyncClerk` to follow the controller).
"""

from __future__ import annotations

from actors import service_endpoints, stream_endpoints
from actors.service_endpoints import Endpoints

__all__ = ["DirectEndpoints", "Endpoints", "NetworkEndpoints", "StreamEndpoints"]


class DirectEndpoints(service_endpoints.DirectEndpoints):
    """Calls go to the replica actors themselves, as ``CtrlerReplica.ctrl(pickled batch)``."""

    method = "ctrl"


class NetworkEndpoints(service_endpoints.NetworkEndpoints):
    """Calls go through :class:`~actors.network.FaultyNetwork` via this clerk's own ends, to
    ``CtrlerReplica.rpc_ctrl``."""

    method = "ctrl"


class StreamEndpoints(stream_endpoints.StreamEndpoints):
    """Calls go over authenticated streams to the replicas' listeners, to ``CtrlerReplica.ctrl``
    (pickled batch in, pickled reply out; see :mod:`actors.stream_endpoints`)."""

    method = "ctrl"
