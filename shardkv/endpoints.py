"""How the sharded KV reaches a server by its name: the controller's servers, a group's servers (from a
configuration's ``groups``), or another group's servers during a migration.

A shard group learns the servers of other groups from configurations, as names, so every caller
(clerk or server) addresses servers by name through a *router*:

- :class:`NetworkRouter` (tests): every call goes through the :class:`~actors.network.FaultyNetwork`
  actor, via an end of this router's own, made and enabled the first time a name is used (the
  reference harness's ``make_end``); the network decides whether the call gets through.
- :class:`DirectRouter` (real use): straight to the replica actor, found by its Ray actor name (the
  group's servers are named actors), or in the table of handles given at construction (the
  controller's replicas).

- :class:`~shardkv.stream_router.StreamRouter` (real use, the default of :mod:`raykv.sharded`):
  over the service's authenticated TCP streams (:mod:`actors.stream_client`), to the address the
  server's actor publishes (``stream_address()``), looked up through Ray once and cached.

Calls, every kind: :meth:`acall` (asyncio code; a replica actor never blocks) and :meth:`call`
(blocking: the synchronous clerks) take ``(server, method, args, timeout_s)`` and return the server's
reply, :data:`~actors.service_protocol.NO_ANSWER` when it did not answer within ``timeout_s``, or
``None`` for a failed call (dropped, dead actor, unknown name); a router that finds servers by name
forgets a server after a failed call and looks it up again on the next one (a lost replica's
replacement runs under its name). :meth:`ensure` / :meth:`aensure` make a name callable ahead of
time (an end, a handle lookup; nothing for the stream router, which looks up lazily). The Ray-call
routers also keep their two-step form, :meth:`submit` (a Ray ``ObjectRef``) and :meth:`unpack`. The
``kv`` and ``ctrl`` RPCs go to the direct actors as one pickled bytes argument (Ray moves bytes far
faster than nested tuples), the others through the replica's generic ``rpc`` entry.

Routers are picklable; an unpickled :class:`NetworkRouter` takes a fresh end prefix (ends are never
shared between processes), an unpickled :class:`DirectRouter` or ``StreamRouter`` looks names up again
(and the stream router opens its own connections).

:class:`CtrlerEndpoints` adapts a router to the :mod:`shardctrler` clerks' endpoint interface, so the
sharded KV reaches the controller with the controller's own clerks.
"""

from __future__ import annotations

import asyncio
import pickle
import uuid
from collections.abc import Mapping
from typing import Any

from actors.service_protocol import NO_ANSWER
from shardkv.stream_router import BYTES_METHODS as _BYTES_METHODS
from shardkv.stream_router import StreamRouter, actor_by_name

__all__ = ["CtrlerEndpoints", "DirectRouter", "NetworkRouter", "Router", "StreamRouter"]



class NetworkRouter:
    """Calls through the faulty network actor ``network``; ends are named ``{prefix}.{k}->{server}``."""

    def __init__(self, network: Any, prefix: str | None = None) -> None:
        self.network = network
        self.prefix = prefix or f"r{uuid.uuid4().hex[:12]}"
        self._ends: dict[str, str] = {}
        self._making: dict[str, asyncio.Future[None]] = {}
        self._made = 0

    def __getstate__(self) -> dict[str, Any]:
        return {"network": self.network}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["network"])  # type: ignore[misc]

    def _new_end(self, server: str) -> str:
        """A name never used before (a failed attempt may have left its end behind)."""
        self._made += 1
        return f"{self.prefix}.{self._made}->{server}"

    def ensure(self, server: str, timeout: float = 30.0) -> None:
        """Make (and enable) this router's end to ``server``, blocking (drivers and clerks only)."""
        if server not in self._ends:
            import ray

            end = self._new_end(server)
            ray.get(self.network.make_end.remote(end, server), timeout=timeout)
            ray.get(self.network.enable.remote(end, True), timeout=timeout)
            self._ends[server] = end

    async def aensure(self, server: str) -> None:
        """:meth:`ensure` for asyncio code (concurrent callers for one name share one end)."""
        if server in self._ends:
            return
        making = self._making.get(server)
        if making is None:
            making = self._making[server] = asyncio.ensure_future(self._make(server))
        await asyncio.shield(making)

    async def _make(self, server: str) -> None:
        end = self._new_end(server)
        try:
            await self.network.make_end.remote(end, server)
            await self.network.enable.remote(end, True)
        finally:
            self._making.pop(server, None)
        self._ends[server] = end

    def submit(self, server: str, method: str, args: tuple) -> Any:
        return self.network.call.remote(self._ends[server], method, args, 1)

    def unpack(self, method: str, value: Any) -> Any:
        ok, reply = value
        return reply if ok else None

    async def acall(self, server: str, method: str, args: tuple, timeout: float) -> Any:
        """``method(*args)`` on ``server``: the reply, ``NO_ANSWER`` after ``timeout`` seconds, or
        ``None`` if the call failed."""
        return await _acall(self, server, method, args, timeout)

    def call(self, server: str, method: str, args: tuple, timeout: float) -> Any:
        """:meth:`acall`, blocking (drivers and synchronous clerks only)."""
        return _call(self, server, method, args, timeout)


class DirectRouter:
    """Calls straight to replica actors: those in ``known`` (name -> handle) or, for other names, the
    named actor of that name in Ray namespace ``namespace`` (``None``: the caller's namespace)."""

    def __init__(self, known: Mapping[str, Any] | None = None, namespace: str | None = None) -> None:
        self.known = dict(known or {})
        self.namespace = namespace
        self._handles: dict[str, Any] = dict(self.known)

    def __getstate__(self) -> dict[str, Any]:
        return {"known": self.known, "namespace": self.namespace}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["known"], state["namespace"])  # type: ignore[misc]

    def _lookup(self, server: str) -> Any:
        """The actor named ``server`` now; for a name in ``known`` that is not (or no longer) a named
        actor, the known handle."""
        return actor_by_name(server, self.namespace, self.known)

    def ensure(self, server: str, timeout: float = 30.0) -> None:
        if server not in self._handles:
            self._handles[server] = self._lookup(server)

    async def aensure(self, server: str) -> None:
        if server not in self._handles:
            # ray.get_actor blocks on the cluster's directory: keep it off the event loop
            handle = await asyncio.get_running_loop().run_in_executor(None, self._lookup, server)
            self._handles[server] = handle

    def forget(self, server: str) -> None:
        """Drop a cached handle after a failed call: the next call looks the name up again, so a
        replica replaced under the same name (a lost replica's replacement, see actors/replacer.py)
        is found; a known handle is the fallback while no actor has the name."""
        self._handles.pop(server, None)

    def submit(self, server: str, method: str, args: tuple) -> Any:
        if server not in self._handles:
            self.ensure(server)
        handle = self._handles[server]
        if method in _BYTES_METHODS:
            return getattr(handle, method).remote(pickle.dumps(args[0], protocol=5))
        return handle.rpc.remote(None, method, args)

    def unpack(self, method: str, value: Any) -> Any:
        if method in _BYTES_METHODS:
            return None if value is None else pickle.loads(value)
        return value

    async def acall(self, server: str, method: str, args: tuple, timeout: float) -> Any:
        return await _acall(self, server, method, args, timeout)

    def call(self, server: str, method: str, args: tuple, timeout: float) -> Any:
        return _call(self, server, method, args, timeout)


Router = NetworkRouter | DirectRouter | StreamRouter


async def _acall(router: NetworkRouter | DirectRouter, server: str, method: str, args: tuple,
                 timeout: float) -> Any:
    try:
        await asyncio.wait_for(router.aensure(server), timeout)
        ref = router.submit(server, method, args)
        value = await asyncio.wait_for(asyncio.wrap_future(ref.future()), timeout)
    except asyncio.CancelledError:
        raise
    except asyncio.TimeoutError:
        return NO_ANSWER
    except Exception:  # a dead actor, an unknown name: a failed call
        if isinstance(router, DirectRouter):
            router.forget(server)
        return None
    return router.unpack(method, value)


def _call(router: NetworkRouter | DirectRouter, server: str, method: str, args: tuple, timeout: float) -> Any:
    import ray  # here, so that the stream router's users (and its tests) load without Ray
    from ray.exceptions import GetTimeoutError, RayError

    try:
        router.ensure(server)
        value = ray.get(router.submit(server, method, args), timeout=timeout)
    except GetTimeoutError:
        return NO_ANSWER
    except (RayError, ValueError):  # a dead actor, an unknown name
        if isinstance(router, DirectRouter):  # look the name up again: the server may have been replaced
            router.forget(server)
        return None
    return router.unpack(method, value)


class CtrlerEndpoints:
    """The controller's servers ``names``, reached through ``router``: the endpoint interface of the
    :mod:`shardctrler` clerks (``names``; ``call(i, ops, timeout_s)`` / ``acall(...)``; and, over the
    Ray-call routers, ``submit(i, ops)`` / ``unpack(value)``). Call :meth:`ensure` (or
    :meth:`aensure`) once before the first call. Picklable (with its router)."""

    def __init__(self, router: Any, names: tuple[str, ...]) -> None:
        if not names:
            raise ValueError("the controller needs at least one server name")
        self.router = router
        self.names = tuple(names)

    def ensure(self) -> CtrlerEndpoints:
        for name in self.names:
            self.router.ensure(name)
        return self

    async def aensure(self) -> CtrlerEndpoints:
        for name in self.names:
            await self.router.aensure(name)
        return self

    def call(self, server: int, ops: Any, timeout_s: float) -> Any:
        """The reply of server ``server`` to the batch ``ops``, ``NO_ANSWER`` or ``None`` (blocking)."""
        return self.router.call(self.names[server], "ctrl", (ops,), timeout_s)

    async def acall(self, server: int, ops: Any, timeout_s: float) -> Any:
        """:meth:`call` for asyncio code."""
        return await self.router.acall(self.names[server], "ctrl", (ops,), timeout_s)

    def submit(self, server: int, ops: Any) -> Any:
        return self.router.submit(self.names[server], "ctrl", (ops,))

    def unpack(self, value: Any) -> Any:
        return self.router.unpack("ctrl", value)

    def forget(self, server: int) -> None:
        """A call to ``server`` failed: look its name up again next time (see
        :meth:`DirectRouter.forget`)."""
        forget = getattr(self.router, "forget", None)
        if forget is not None:
            forget(self.names[server])
