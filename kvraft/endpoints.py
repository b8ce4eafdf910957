"""How a clerk reaches the servers of a KV group: straight to the replica actors, or through the
faulty network actor (tests). A clerk does not know which one it has.

The endpoint sets are the shared ones (:mod:`actors.service_endpoints`), naming the KV RPC (``kv``):
they number the servers ``0 .. n-1`` in peer-id order, turn one call into a Ray ``ObjectRef`` and
its result into the server's reply (``None`` for a failed call). Both are picklable: a clerk can be
built in one process and used in another (a Ray task, say).
"""

from __future__ import annotations

from actors import service_endpoints
from actors.service_endpoints import Endpoints

__all__ = ["DirectEndpoints", "Endpoints", "NetworkEndpoints"]


class DirectEndpoints(service_endpoints.DirectEndpoints):
    """Calls go to the replica actors themselves, as ``KVReplica.kv(pickled batch)``."""

    method = "kv"


class NetworkEndpoints(service_endpoints.NetworkEndpoints):
    """Calls go through :class:`~actors.network.FaultyNetwork` via this clerk's own ends, to
    ``KVReplica.rpc_kv``."""

    method = "kv"
