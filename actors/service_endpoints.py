"""How a clerk reaches the servers of one group: straight to the replica actors, or through the
faulty network actor (tests). A clerk does not know which one it has.

An endpoint set numbers the servers ``0 .. n-1`` in peer-id order (so a server's leader hint, a peer
id, names a server directly) and turns one call into a Ray ``ObjectRef``; :meth:`unpack` turns what
the ref resolves to into the server's reply, or ``None`` for a failed call (dropped, cut, peer down).

A service names its RPC in a subclass (:attr:`DirectEndpoints.method`: ``"kv"`` for kvraft,
``"ctrl"`` for the controller). Direct calls go to the replica's method of that name with the batch
pickled by the caller (one bytes argument costs Ray far less to move than nested tuples; see
:meth:`actors.service_server.ServiceReplica._serve_pickled`); network calls go to the replica's
``rpc_<method>`` through the network actor. Both are picklable: a clerk can be built in one process
and used in another (a Ray task, or another service's replica actor).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol


class Endpoints(Protocol):
    """What a clerk of one group needs of its endpoint set."""

    names: tuple[str, ...]

    def submit(self, server: int, ops: Any) -> Any:
        """Start the service's call with ``ops`` on ``server``; returns a Ray ObjectRef."""

    def unpack(self, value: Any) -> Any:
        """The server's reply from what the ObjectRef resolved to; ``None`` for a failed call."""


@dataclass(frozen=True)
class DirectEndpoints:
    """Calls go to the replica actors themselves (production: no fault injection, one hop), as
    ``replica.<method>(pickled batch)``."""

    #: the service's RPC (set by the service's subclass)
    method: ClassVar[str] = ""

    handles: tuple[Any, ...]
    names: tuple[str, ...]

    def submit(self, server: int, ops: Any) -> Any:
        return getattr(self.handles[server], self.method).remote(pickle.dumps(ops, protocol=5))

    def unpack(self, value: Any) -> Any:
        return None if value is None else pickle.loads(value)


@dataclass(frozen=True)
class NetworkEndpoints:
    """Calls go through :class:`~actors.network.FaultyNetwork` via this clerk's own ends."""

    #: the service's RPC (set by the service's subclass)
    method: ClassVar[str] = ""

    network: Any
    ends: tuple[str, ...]
    names: tuple[str, ...]

    def submit(self, server: int, ops: Any) -> Any:
        return self.network.call.remote(self.ends[server], self.method, (ops,), 1)

    def unpack(self, value: Any) -> Any:
        ok, reply = value
        return reply if ok else None
