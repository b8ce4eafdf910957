"""How a replica reaches its peers: through the faulty network actor, or straight to their actors.

Both transports have the same shape: ``await transport.call(peer, method, args, rpcs)`` returns
``(True, result)`` or ``(False, None)`` for a call that failed (dropped, timed out, peer dead).
``transport.start(...)`` is the same call split in two: it issues the Ray call at once (synchronously)
and returns the awaitable outcome, so a caller can put a message on the wire before doing slow local
work (the replica sends a leader's AppendEntries before its own fsync). A
failed call is an ordinary event in Raft, never an exception. Choosing one is a deployment decision,
not a code fork: the replica does not know which one it has.
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
        """Learn how to reach ``peer`` (an actor handle, or a network end name)."""

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


async def _failed() -> tuple[bool, Any]:
    return False, None


def get_actor_handles(names: dict[int, str], namespace: str | None = None) -> dict[int, ActorHandle]:
    """Look up named peer actors (used by replicas that talk directly)."""
    return {p: ray.get_actor(n, namespace=namespace) for p, n in names.items()}
