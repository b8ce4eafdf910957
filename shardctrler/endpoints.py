"""How a clerk reaches the servers of a controller group: straight to the replica actors, or through
the faulty network actor (tests). The same shape as :mod:`kvraft.endpoints` (written again here, not
imported, so that services do not depend on each other); only the RPC name differs (``ctrl``).

An endpoint set numbers the servers ``0 .. n-1`` in peer-id order (so a server's leader hint, a peer
id, names a server directly) and turns one call into a Ray ``ObjectRef``; :meth:`unpack` turns what
the ref resolves to into the server's reply, or ``None`` for a failed call (dropped, cut, peer down).

Both are picklable: a clerk can be built in one process and used in another (a Ray task, or a shard
group's replica actor, which uses an :class:`~shardctrler.AsyncClerk` to follow the controller).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any, Protocol

from shardctrler.ops import Batch


class Endpoints(Protocol):
    names: tuple[str, ...]

    def submit(self, server: int, ops: Batch) -> Any:
        """Start the call ``ctrl(ops)`` on ``server``; returns a Ray ObjectRef."""

    def unpack(self, value: Any) -> Any:
        """The server's reply from what the ObjectRef resolved to; ``None`` for a failed call."""


@dataclass(frozen=True)
class DirectEndpoints:
    """Calls go to the replica actors themselves, as ``CtrlerReplica.ctrl(pickled batch)``."""

    handles: tuple[Any, ...]
    names: tuple[str, ...]

    def submit(self, server: int, ops: Batch) -> Any:
        return self.handles[server].ctrl.remote(pickle.dumps(ops, protocol=5))

    def unpack(self, value: Any) -> Any:
        return None if value is None else pickle.loads(value)


@dataclass(frozen=True)
class NetworkEndpoints:
    """Calls go through :class:`~actors.network.FaultyNetwork` via this clerk's own ends."""

    network: Any
    ends: tuple[str, ...]
    names: tuple[str, ...]

    def submit(self, server: int, ops: Batch) -> Any:
        return self.network.call.remote(self.ends[server], "ctrl", (ops,), 1)

    def unpack(self, value: Any) -> Any:
        ok, reply = value
        return reply if ok else None
