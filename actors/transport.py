"""How a replica reaches its peers: through the faulty network actor, straight to their actors, or over
authenticated asyncio streams.

All three transports have the same shape: ``await transport.call(peer, method, args, rpcs)`` returns
``(True, result)`` or ``(False, None)`` for a call that failed (dropped, timed out, peer dead).
``transport.start(...)`` is the same call split in two: it issues the Ray call at once (synchronously)
and returns the awaitable outcome, so a caller can put a message on the wire before doing slow local
work (the replica sends a leader's AppendEntries before its own fsync). A
failed call is an ordinary event in Raft, never an exception. Choosing one is a deployment decision,
not a code fork: the replica does not know which one it has.

- :class:`NetworkTransport`: every call through the faulty network actor (the reference suites);
- :class:`DirectTransport`: Ray actor calls to the peers' actors;
- :class:`StreamTransport`: one persistent, authenticated TCP stream per peer
  (:class:`actors.stream_client.StreamClient`), to the address the peer's actor published
  (``open_stream``); Ray only starts the actors and hands out the addresses and the service's secret.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Protocol

import ray
from ray.actor import ActorHandle
from ray.exceptions import RayActorError, RayError


class Transport(Protocol):
    async def call(self, peer: int, method: str, args: tuple, rpcs: int = 1) -> tuple[bool, Any]:
        """Call ``method`` on ``peer`` with ``args``; ``rpcs`` is how many Raft RPCs the call carries.

        A peer the transport does not know (one that joined the group, before :meth:`add_peer` told
        this replica how to reach it) is unreachable: the call fails like a lost message."""

    def add_peer(self, peer: int, endpoint: Any) -> None:
        """Learn how to reach ``peer`` (an actor handle, a network end name, or a stream address)."""

    def start(self, peer: int, method: str, args: tuple,
              rpcs: int = 1) -> Coroutine[Any, Any, tuple[bool, Any]]:
        """Issue the call now; await the returned coroutine for its outcome (as from :meth:`call`)."""


class NetworkTransport:
    """Every call goes through the :class:`~actors.network.FaultyNetwork` actor via a named end.

    ``ends[peer]`` is the name of this peer's client end to ``peer``; the network decides, per end,
    whether the call is delivered, dropped or delayed.
    """

    def __init__(self, network: ActorHandle, ends: dict[int, str]) -> None:
        self.network = network
        self.ends = dict(ends)

    async def call(self, peer: int, method: str, args: tuple, rpcs: int = 1) -> tuple[bool, Any]:
        return await self.start(peer, method, args, rpcs)

    def start(self, peer: int, method: str, args: tuple,
              rpcs: int = 1) -> Coroutine[Any, Any, tuple[bool, Any]]:
        end = self.ends.get(peer)
        if end is None:
            return _failed()
        return self._finish(self.network.call.remote(end, method, args, rpcs))

    def add_peer(self, peer: int, endpoint: Any) -> None:
        self.ends[peer] = endpoint

    @staticmethod
    async def _finish(ref: Any) -> tuple[bool, Any]:
        try:
            ok, result = await ref
        except RayError:
            return False, None
        if not ok or result is None:
            return False, None
        return True, result


class DirectTransport:
    """Calls go straight to the peer actors (production use: no fault injection, one hop fewer).

    A call that takes longer than ``timeout_s`` counts as failed; the remote call itself may still run,
    exactly as a lossy network would behave.
    """

    def __init__(self, handles: dict[int, ActorHandle], timeout_s: float = 2.0) -> None:
        self.handles = dict(handles)
        self.timeout_s = timeout_s

    async def call(self, peer: int, method: str, args: tuple, rpcs: int = 1) -> tuple[bool, Any]:
        return await self.start(peer, method, args, rpcs)

    def start(self, peer: int, method: str, args: tuple,
              rpcs: int = 1) -> Coroutine[Any, Any, tuple[bool, Any]]:
        handle = self.handles.get(peer)
        try:
            ref = handle.rpc.remote(None, method, args) if handle is not None else None
        except RayError:
            ref = None
        return self._finish(ref)

    def add_peer(self, peer: int, endpoint: Any) -> None:
        self.handles[peer] = endpoint

    async def _finish(self, ref: Any) -> tuple[bool, Any]:
        if ref is None:
            return False, None
        try:
            result = await asyncio.wait_for(ref, self.timeout_s)
        except (RayActorError, RayError, asyncio.TimeoutError):
            return False, None
        if result is None:
            return False, None
        return True, result


class StreamTransport:
    """Calls go over one authenticated stream per peer (:class:`~actors.stream_client.StreamClient`).

    ``addresses[peer]`` is the ``(host, port)`` the peer's listener published; ``secret`` is the
    service's (every replica of the service and its clerks share it; it travels only through Ray).
    Only ``"deliver"`` goes over the stream, with its one bytes argument as the frame's payload (the
    replica pickles its messages itself); the reply is the peer's pickled replies. A call that takes
    longer than ``timeout_s``, a lost connection, a refused handshake or a peer that answers nothing
    (down, a dead incarnation) is a failed call. ``faults`` (a :class:`~actors.stream_faults.StreamFaults`,
    shared by every peer's client) is the seeded fault hook of the tests; destinations are labelled
    by their peer id (``str(peer)``), which is what a partition's ``cut`` names.

    Connections are made lazily, on the first call to a peer, and again on the next call after one
    dropped. :meth:`add_peer` points a peer at a new address (a replica restarted elsewhere, or one
    that joined), closing the old connection.
    """

    def __init__(self, addresses: dict[int, tuple[str, int]], secret: bytes, *, timeout_s: float = 2.0,
                 faults: Any = None, label: str = "") -> None:
        self.secret = secret
        self.timeout_s = timeout_s
        self.faults = faults
        self.label = label
        self.clients: dict[int, Any] = {}
        for peer, address in addresses.items():
            self.add_peer(peer, address)

    def _client(self, peer: int, address: tuple[str, int]) -> Any:
        from actors.stream_client import StreamClient

        return StreamClient(address, self.secret, label=str(peer), faults=self.faults)

    async def call(self, peer: int, method: str, args: tuple, rpcs: int = 1) -> tuple[bool, Any]:
        return await self.start(peer, method, args, rpcs)

    def start(self, peer: int, method: str, args: tuple,
              rpcs: int = 1) -> Coroutine[Any, Any, tuple[bool, Any]]:
        client = self.clients.get(peer)
        if client is None or method != "deliver" or len(args) != 1 or not isinstance(args[0], bytes):
            return _failed()  # an unknown peer, or a call the stream does not carry
        return client.start(method, args[0], self.timeout_s)  # type: ignore[no-any-return]

    def add_peer(self, peer: int, endpoint: Any) -> None:
        address = check_address(endpoint)
        client = self.clients.get(peer)
        if client is None:
            self.clients[peer] = self._client(peer, address)
        elif tuple(client.address) != address:
            client.set_address(address)

    def set_faults(self, faults: Any) -> None:
        """Use ``faults`` (or none) for every peer from now on."""
        self.faults = faults
        for client in self.clients.values():
            client.faults = faults

    def addresses(self) -> dict[int, tuple[str, int]]:
        """Where each known peer is reached."""
        return {peer: tuple(client.address) for peer, client in self.clients.items()}  # type: ignore[misc]

    async def close(self) -> None:
        """Close every connection (a crashed replica's transport: its successor makes new ones)."""
        for client in self.clients.values():
            await client.close()


def check_address(address: Any) -> tuple[str, int]:
    """``address`` as a ``(host, port)`` tuple; ``ValueError`` saying what is wrong otherwise."""
    if (not isinstance(address, (tuple, list)) or len(address) != 2 or not isinstance(address[0], str)
            or not isinstance(address[1], int) or isinstance(address[1], bool) or not 0 < address[1] < 65536):
        raise ValueError(f"a stream address is (host, port) with a str host and a port in 1..65535, "
                         f"got {address!r}")
    return address[0], address[1]


async def _failed() -> tuple[bool, Any]:
    return False, None


def get_actor_handles(names: dict[int, str], namespace: str | None = None) -> dict[int, ActorHandle]:
    """Look up named peer actors (used by replicas that talk directly)."""
    return {p: ray.get_actor(n, namespace=namespace) for p, n in names.items()}
