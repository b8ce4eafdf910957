"""How a clerk reaches the servers of a KV group: straight to the replica actors, or through the
faulty network actor (tests). A clerk does not know which one it has.

An endpoint set numbers the servers ``0 .. n-1`` in peer-id order (so a server's leader hint, a peer
id, names a server directly) and turns one call into a Ray ``ObjectRef``; :meth:`unpack` turns what
the ref resolves to into the server's reply, or ``None`` for a failed call (dropped, cut, peer down).

Both are picklable: a clerk can be built in one process and used in another (a Ray task, say).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any, Protocol

from kvraft.ops import Batch


class Endpoints(Protocol):
    names: tuple[str, ...]

    def submit(self, server: int, ops: Batch) -> Any:
        """Start the call ``kv(ops)`` on ``server``; returns a Ray ObjectRef."""

    def unpack(self, value: Any) -> Any:
        """The server's reply from what the ObjectRef resolved to; ``None`` for a failed call."""


@dataclass(frozen=True)
class DirectEndpoints:
    """Calls go to the replica actors themselves (production: no fault injection, one hop), as
    ``KVReplica.kv(pickled batch)``: Ray moves one bytes argument much faster than nested tuples."""

    handles: tuple[Any, ...]
    names: tuple[str, ...]

    def submit(self, server: int, ops: Batch) -> Any:
        return self.handles[server].kv.remote(pickle.dumps(ops, protocol=5))

    def unpack(self, value: Any) -> Any:
        return None if value is None else pickle.loads(value)


@dataclass(frozen=True)
class NetworkEndpoints:
    """Calls go through :class:`~actors.network.FaultyNetwork` via this clerk's own ends."""

    network: Any
    ends: tuple[str, ...]
    names: tuple[str, ...]

    def submit(self, server: int, ops: Batch) -> Any:
        return self.network.call.remote(self.ends[server], "kv", (ops,), 1)

    def unpack(self, value: Any) -> Any:
        ok, reply = value
        return reply if ok else None
