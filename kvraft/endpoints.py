"""How a clerk reaches the servers of a KV group: over authenticated streams (the default), straight
to the replica actors, or through the faulty network actor (tests). A clerk does not know which one it
has.

The endpoint sets are the shared ones (:mod:`actors.service_endpoints`, :mod:`actors.stream_endpoints`),
naming the KV RPC (``kv``): they number the servers ``0 .. n-1`` in peer-id order and offer ``call``
(blocking) and ``acall`` (asyncio), which return the server's reply, ``NO_ANSWER`` after the timeout,
or ``None`` for a failed call. All are picklable: a clerk can be built in one process and used in
another (a Ray task, say).
"""

from __future__ import annotations

from actors import service_endpoints, stream_endpoints
from actors.service_endpoints import Endpoints

__all__ = ["DirectEndpoints", "Endpoints", "NetworkEndpoints", "StreamEndpoints"]


class DirectEndpoints(service_endpoints.DirectEndpoints):
    """Calls go to the replica actors themselves, as ``KVReplica.kv(pickled batch)``."""

    method = "kv"


class NetworkEndpoints(service_endpoints.NetworkEndpoints):
    """Calls go through :class:`~actors.network.FaultyNetwork` via this clerk's own ends, to
    ``KVReplica.rpc_kv``."""

    method = "kv"


class StreamEndpoints(stream_endpoints.StreamEndpoints):
    """Calls go over authenticated streams to the replicas' listeners, to ``KVReplica.kv`` (pickled
    batch in, pickled reply out; see :mod:`actors.stream_endpoints`)."""

    method = "kv"
