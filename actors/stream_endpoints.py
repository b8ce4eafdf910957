"""How a clerk reaches the servers of one group over the stream transport (docs/transports.md).

:class:`StreamEndpoints` is the stream flavour of the endpoint sets of :mod:`actors.service_endpoints`:
servers numbered ``0 .. n-1`` in peer-id order, ``call`` (blocking) and ``acall`` (asyncio) returning
the server's reply, ``NO_ANSWER`` when it did not answer in time, or ``None`` for a failed call. A
service names its RPC in a subclass (``"kv"`` for kvraft, ``"ctrl"`` for the controller); the batch
travels pickled, as to the direct endpoints' actor methods, and the reply comes back pickled.

What it holds: each server's listener address (what the replica's ``open_stream`` returned, handed
out through Ray), the service's secret (only ever handed out through Ray: the endpoints travel
pickled inside Ray calls, never over a stream), the servers' names and, optionally, the replica
actors' handles. Picklable: the connections are not part of the pickle; they are made lazily, per
process and per event loop, on the first call to a server (a connection belongs to the loop it was
made on: the asyncio clerks use their own loop, the sync clerks the process's background loop,
:mod:`actors.stream_loop`).

Finding a server that moved. With ``handles``, a call to a server that failed without timing out (no
connection, connection lost) marks the server *stale*; the next call to it first asks the group's
replicas, through Ray (:meth:`~actors.replica.ReplicaActor.stream_peers`), where it listens now (a
replica restarted as a new actor has a new address, which the group's shell republishes to every
replica). At most one such lookup per server per :data:`LOOKUP_INTERVAL_S`.
"""

from __future__ import annotations

import asyncio
import pickle
import time
from typing import Any, ClassVar

from actors.service_protocol import NO_ANSWER
from actors.transport import check_address

#: the least time between two lookups of one server's address
LOOKUP_INTERVAL_S = 0.5
#: how long one lookup may wait for a replica's answer
LOOKUP_TIMEOUT_S = 1.0


class StreamEndpoints:
    """A group's servers over authenticated streams; see the module docstring.

    ``faults``: an optional :class:`~actors.stream_faults.StreamFaults` (the tests' fault hook) used by
    every connection of these endpoints; destinations are labelled by server name.
    """

    #: the service's RPC (set by the service's subclass)
    method: ClassVar[str] = ""

    def __init__(self, addresses: tuple[tuple[str, int], ...] | list[tuple[str, int]], secret: bytes,
                 names: tuple[str, ...], handles: tuple[Any, ...] | None = None, *,
                 faults: Any = None) -> None:
        from actors.stream_auth import check_secret

        names = tuple(names)
        if len(addresses) != len(names):
            raise ValueError(f"{len(addresses)} stream addresses for {len(names)} servers: give one per "
                             "server")
        if handles is not None and len(handles) != len(names):
            raise ValueError(f"{len(handles)} actor handles for {len(names)} servers: give one per server")
        self.addresses = [check_address(a) for a in addresses]
        self.secret = check_secret(secret)
        self.names = names
        self.handles = None if handles is None else tuple(handles)
        self.faults = faults
        #: loop -> server -> its client on that loop
        self._clients: dict[asyncio.AbstractEventLoop, dict[int, Any]] = {}
        self._stale: set[int] = set()
        self._looked_up: dict[int, float] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"addresses": list(self.addresses), "secret": self.secret, "names": self.names,
                "handles": self.handles, "faults": self.faults}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["addresses"], state["secret"], state["names"], state["handles"],  # type: ignore[misc]
                      faults=state["faults"])

    def __repr__(self) -> str:
        where = ", ".join(f"{n}@{h}:{p}" for n, (h, p) in zip(self.names, self.addresses, strict=True))
        return f"{type(self).__name__}({where})"

    # -- the calls ------------------------------------------------------------------------------------

    def call(self, server: int, ops: Any, timeout_s: float) -> Any:
        """Blocking ``acall`` (on the process's background stream loop): the reply, ``NO_ANSWER``
        after ``timeout_s``, ``None`` for a failed call."""
        from actors.stream_loop import run_blocking

        try:
            return run_blocking(lambda: self.acall(server, ops, timeout_s), timeout_s + 1.0)
        except TimeoutError:
            return NO_ANSWER

    async def acall(self, server: int, ops: Any, timeout_s: float) -> Any:
        """``server``'s reply to ``ops``; ``NO_ANSWER`` after ``timeout_s``; ``None`` for a failed call."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        if server in self._stale and self.handles is not None:
            await self._look_up(server, min(LOOKUP_TIMEOUT_S, timeout_s / 2))
        client = self._client(server, loop)
        remaining = max(0.001, timeout_s - (loop.time() - start))
        ok, reply = await client.start(self.method, pickle.dumps(ops, protocol=5), remaining)
        if ok:
            self._stale.discard(server)
            return None if reply is None else pickle.loads(reply)
        if loop.time() - start >= timeout_s * 0.999:
            return NO_ANSWER
        if not client.connected:
            self._stale.add(server)  # no connection: it may have moved; look it up before the next call
        return None

    def set_faults(self, faults: Any) -> None:
        """Use ``faults`` (a :class:`~actors.stream_faults.StreamFaults`, or ``None``) from now on."""
        self.faults = faults
        for clients in self._clients.values():
            for client in clients.values():
                client.faults = faults

    async def aclose(self) -> None:
        """Close the connections made on the running loop."""
        clients = self._clients.pop(asyncio.get_running_loop(), {})
        for client in clients.values():
            await client.close()

    # -- connections and lookups ----------------------------------------------------------------------

    def _client(self, server: int, loop: asyncio.AbstractEventLoop) -> Any:
        clients = self._clients.get(loop)
        if clients is None:
            for old in [lp for lp in list(self._clients) if lp.is_closed()]:
                self._clients.pop(old, None)  # connections of a loop that is gone
            clients = self._clients[loop] = {}
        client = clients.get(server)
        if client is None:
            from actors.stream_client import StreamClient

            client = clients[server] = StreamClient(self.addresses[server], self.secret,
                                                    label=self.names[server], faults=self.faults)
        elif client.address != self.addresses[server]:
            client.set_address(self.addresses[server])
        return client

    async def _look_up(self, server: int, timeout_s: float) -> None:
        """Ask the replicas (``server``'s own first) where ``server`` listens now; at most once per
        :data:`LOOKUP_INTERVAL_S`. A lookup that finds nothing leaves the address as it was."""
        now = time.monotonic()
        if now - self._looked_up.get(server, -1e9) < LOOKUP_INTERVAL_S:
            return
        self._looked_up[server] = now
        assert self.handles is not None
        order = [server] + [i for i in range(len(self.handles)) if i != server]
        for i in order:
            try:
                known = await asyncio.wait_for(_await_ref(self.handles[i].stream_peers.remote()), timeout_s)
            except asyncio.CancelledError:
                raise
            except Exception:  # a dead actor, a timeout: ask the next one
                continue
            address = known.get(server) if isinstance(known, dict) else None
            if address is not None:
                self.addresses[server] = check_address(tuple(address))
                self._stale.discard(server)
                return


async def _await_ref(ref: Any) -> Any:
    """Await a Ray ObjectRef on any event loop (not only the driver's)."""
    return await asyncio.wrap_future(ref.future())
