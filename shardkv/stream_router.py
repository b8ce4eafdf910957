"""The stream router: how the sharded KV reaches a server by its name over the service's authenticated
TCP streams (the ``stream`` transport, the default of :mod:`raykv.sharded`).

Ray stays the control plane: a server's *address* (host, port of its replica's stream listener) is
found by asking the server's actor, through Ray, for ``stream_address()``. The actor is the named actor
of that name in the router's Ray namespace, or, for a name that is no named actor (the controller's
first replicas), the handle given in ``known``. The address is cached; :meth:`StreamRouter.forget` makes
the next call ask again. The router forgets a server itself after a call that failed with no
connection up (refused, lost: the server may be gone), not after a mere timeout on a live connection
(a slow server has not moved), so a lost replica's replacement, which takes the dead one's name and
opens a listener of its own, is found without anyone telling the router.

The data plane is one :class:`~actors.stream_client.StreamClient` connection per server and event
loop, opened lazily, authenticated with the service's secret (one secret for the
whole service, controller and every group; handed out only through Ray), reconnected by the client
after a failure. Connections are shared by every router of the process on the same event loop (a
client multiplexes concurrent calls over one connection by request id), so the many clerks of one
driver, or the admin calls of a service handle, do not each open their own; a router with a fault
hook (tests) keeps connections of its own.

Calls take ``(server, method, args, timeout_s)``, as every router's (:mod:`shardkv.endpoints`), and
return the server's reply, :data:`~actors.service_protocol.NO_ANSWER` when the time ran out, or
``None`` for a failed call (refused, connection lost, the server down, an unknown name). On the wire a
call is one frame: method ``kv`` / ``ctrl`` carries the pickled batch (as the direct actor methods of
those names take it), any other method (``pull``, ``delete``) the pickled argument tuple; the reply
is the server's answer, pickled.

Invariants: the address cache only holds what an actor published (a failed lookup caches nothing); a
connection is used only from the event loop that opened it (one set of connections per loop: the
asyncio clerk's loop, a replica's loop, the background loop of :mod:`actors.stream_loop` for the
blocking :meth:`~StreamRouter.call`); a router pickles as its secret, its known handles, its
namespace and its fault hook, never its caches or connections (an unpickled router opens its own).
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from actors.service_protocol import NO_ANSWER

log = logging.getLogger("raykv.shardkv")

__all__ = ["BYTES_METHODS", "Address", "StreamRouter"]

#: how long one address lookup (a Ray call to the server's actor) may take
LOOKUP_TIMEOUT_S = 5.0

#: RPCs whose direct form is a method of the same name taking and returning pickled bytes (on a stream,
#: their frame carries the pickled batch alone; other methods carry the pickled argument tuple)
BYTES_METHODS = frozenset({"kv", "ctrl"})

Address = tuple[str, int]
#: ``lookup(server) -> address`` (``None``: no such server, or it has no listener); raises for a dead
#: actor, which counts the same
Lookup = Callable[[str], Awaitable[Address | None]]


@dataclass
class _LoopState:
    """One router's state on one event loop: its own connections (a router with a fault hook) and its
    lookups in flight, by server name."""

    clients: dict[str, Any] = field(default_factory=dict)
    looking: dict[str, asyncio.Future[Address | None]] = field(default_factory=dict)


#: the connections shared by the routers of this process without a fault hook: per event loop, per
#: (namespace, secret, server name); a closed loop's entry is dropped when a new loop is added (its
#: connections were closed with it: ``asyncio.run`` cancels their reader tasks, which close them)
_SHARED: dict[asyncio.AbstractEventLoop, dict[tuple[str | None, bytes, str], Any]] = {}


def _for_loop(table: dict[asyncio.AbstractEventLoop, Any], loop: asyncio.AbstractEventLoop,
              make: Callable[[], Any]) -> Any:
    """``table[loop]``, made with ``make()`` the first time (dropping the entries of closed loops)."""
    entry = table.get(loop)
    if entry is None:
        for old in [lp for lp in table if lp.is_closed()]:
            del table[old]
        entry = table[loop] = make()
    return entry


def actor_by_name(server: str, namespace: str | None, known: Mapping[str, Any]) -> Any:
    """The actor named ``server`` in ``namespace`` now; for a name in ``known`` that is not (or no longer) a
    named actor (the controller's replicas), the known handle; else Ray's ``ValueError``. Blocking: it asks
    Ray's directory. Shared by every router that finds servers by name."""
    import ray

    try:
        return ray.get_actor(server, namespace=namespace)
    except ValueError:
        if server in known:
            return known[server]
        raise


class StreamRouter:
    """Calls over the service's streams, to the address each server's actor publishes (see the module
    docstring).

    ``secret``: the service's stream secret. ``known``: server name -> actor handle, for names that are
    no named actor (the lookup's fallback, as for :class:`~shardkv.endpoints.DirectRouter`).
    ``namespace``: the Ray namespace of the named actors (``None``: the caller's). ``faults``: an
    optional :class:`~actors.stream_faults.StreamFaults` applied to every call (tests). ``lookup``: how
    an address is found (default: ask the actor through Ray; tests give a function of their own; it is
    not pickled). ``label``: names this router's connections in logs.
    """

    def __init__(self, secret: bytes, known: Mapping[str, Any] | None = None, namespace: str | None = None,
                 *, faults: Any = None, lookup: Lookup | None = None, label: str | None = None,
                 connect_timeout_s: float = 1.0) -> None:
        if not isinstance(secret, bytes) or not secret:
            raise ValueError("a stream router needs the service's secret (non-empty bytes)")
        self.secret = secret
        self.known = dict(known or {})
        self.namespace = namespace
        self.faults = faults
        self.label = label or f"router-{uuid.uuid4().hex[:8]}"
        self.connect_timeout_s = connect_timeout_s
        self._lookup: Lookup = lookup or self._ray_lookup
        self._addresses: dict[str, Address] = {}
        #: servers whose cached address comes from a lookup not yet applied to their connection
        self._fresh: set[str] = set()
        self._loops: dict[asyncio.AbstractEventLoop, _LoopState] = {}
        #: lookups made (each one a Ray call with the default lookup), for tests and status
        self.lookups = 0

    def __getstate__(self) -> dict[str, Any]:
        return {"secret": self.secret, "known": self.known, "namespace": self.namespace,
                "faults": self.faults, "connect_timeout_s": self.connect_timeout_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["secret"], state["known"], state["namespace"],  # type: ignore[misc]
                      faults=state["faults"], connect_timeout_s=state["connect_timeout_s"])

    def __repr__(self) -> str:  # never the secret
        return f"StreamRouter({self.label!r}, namespace={self.namespace!r}, known={sorted(self.known)})"

    # -- addresses -------------------------------------------------------------------------------

    def address(self, server: str) -> Address | None:
        """The cached address of ``server`` (``None``: not looked up, or forgotten)."""
        return self._addresses.get(server)

    def forget(self, server: str) -> None:
        """Drop ``server``'s cached address (after a failed call): the next call asks its actor again.
        Its connection is kept, and moved only if the address changed."""
        self._addresses.pop(server, None)

    def _state(self) -> _LoopState:
        return _for_loop(self._loops, asyncio.get_running_loop(), _LoopState)  # type: ignore[no-any-return]

    async def _resolve(self, server: str) -> Address | None:
        """``server``'s address: the cached one, or a lookup shared by every concurrent caller on this
        loop. ``None`` when it cannot be found now (nothing is cached then)."""
        address = self._addresses.get(server)
        if address is not None:
            return address
        state = self._state()
        pending = state.looking.get(server)
        if pending is None:
            pending = state.looking[server] = asyncio.ensure_future(self._look_up(server, state))
        return await asyncio.shield(pending)

    async def _look_up(self, server: str, state: _LoopState) -> Address | None:
        try:
            self.lookups += 1
            found = await self._lookup(server)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a dead actor, an unknown name: not reachable now
            log.debug("stream router %s: no address for %s (%r)", self.label, server, exc)
            found = None
        finally:
            state.looking.pop(server, None)
        if found is None:
            return None
        address = (str(found[0]), int(found[1]))
        self._addresses[server] = address
        self._fresh.add(server)
        return address

    async def _ray_lookup(self, server: str) -> Address | None:
        """Ask ``server``'s actor for its stream address through Ray (the name lookup blocks on the
        cluster's directory: off the event loop)."""
        handle = await asyncio.get_running_loop().run_in_executor(None, self._handle, server)
        ref = handle.stream_address.remote()
        # an ObjectRef awaited through its future works on any event loop, not only the driver's
        found = await asyncio.wait_for(asyncio.wrap_future(ref.future()), LOOKUP_TIMEOUT_S)
        return None if found is None else (str(found[0]), int(found[1]))

    def _handle(self, server: str) -> Any:
        return actor_by_name(server, self.namespace, self.known)

    # -- connections -----------------------------------------------------------------------------

    def _client(self, state: _LoopState, server: str, address: Address) -> Any:
        """The connection to ``server`` on this loop (the shared one unless this router has a fault
        hook). Where it points elsewhere than ``address``: a fresh lookup moves it there; an older
        cached address is replaced by the connection's (another router of the process moved the
        shared connection after a lookup of its own more recent than this router's cache), so that
        routers never move a shared connection back and forth."""
        from actors.stream_client import StreamClient

        if self.faults is None:
            clients: dict[Any, Any] = _for_loop(_SHARED, asyncio.get_running_loop(), dict)
            key: Any = (self.namespace, self.secret, server)
        else:
            clients, key = state.clients, server
        client = clients.get(key)
        if client is None:
            client = clients[key] = StreamClient(address, self.secret, label=server, faults=self.faults,
                                                 connect_timeout_s=self.connect_timeout_s)
        elif tuple(client.address) != address:
            if server in self._fresh or self.faults is not None:
                client.set_address(address)
            else:
                self._addresses[server] = tuple(client.address)  # type: ignore[assignment]
        self._fresh.discard(server)
        return client

    async def close(self) -> None:
        """Close the connections this router holds on this loop (its own; the shared ones stay open
        for the process's other routers). The router stays usable: calls reconnect."""
        state = self._loops.pop(asyncio.get_running_loop(), None)
        if state is not None:
            for client in state.clients.values():
                await client.close()

    # -- calls -----------------------------------------------------------------------------------

    def ensure(self, server: str, timeout: float = 30.0) -> None:
        """Nothing to prepare: addresses are looked up by the first call (the routers' interface)."""

    async def aensure(self, server: str) -> None:
        """Nothing to prepare (see :meth:`ensure`)."""

    def set_faults(self, faults: Any) -> None:
        """Apply ``faults`` (a :class:`~actors.stream_faults.StreamFaults`, or ``None``: the shared
        connections) to calls from now on; this router's own connections are closed (each on its loop).
        The same object again changes nothing (its settings are read at every call)."""
        if faults is self.faults:
            return
        self.faults = faults
        for loop, state in list(self._loops.items()):
            clients = list(state.clients.values())
            state.clients.clear()
            if clients and not loop.is_closed():
                loop.call_soon_threadsafe(_close_all, clients)

    async def acall(self, server: str, method: str, args: tuple, timeout: float) -> Any:
        """``method(*args)`` on ``server``: the reply, ``NO_ANSWER`` once ``timeout`` seconds have
        passed, or ``None`` for a failed call (after which ``server`` is looked up again)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            address = await asyncio.wait_for(self._resolve(server), timeout)
        except asyncio.TimeoutError:
            return NO_ANSWER
        if address is None:
            return None
        payload = pickle.dumps(args[0] if method in BYTES_METHODS else args, protocol=5)
        client = self._client(self._state(), server, address)
        left = deadline - loop.time()
        if left <= 0:
            return NO_ANSWER
        ok, reply = await client.start(method, payload, left)
        if not ok or reply is None:
            if loop.time() >= deadline - 0.001:
                return NO_ANSWER
            if not client.connected:  # refused or lost: the server may have moved; ask again next time
                self.forget(server)
            return None
        try:
            return pickle.loads(reply)
        except Exception as exc:  # a server of this service never sends this: count it as failed
            log.warning("stream router %s: unreadable reply from %s to %s (%r)", self.label, server, method,
                        exc)
            return None

    def call(self, server: str, method: str, args: tuple, timeout: float) -> Any:
        """:meth:`acall`, blocking: run on the process's background stream loop
        (:mod:`actors.stream_loop`). Never call it from a running event loop."""
        from actors.stream_loop import run_blocking

        try:
            return run_blocking(lambda: self.acall(server, method, args, timeout), timeout + 1.0)
        except TimeoutError:
            return NO_ANSWER


def _close_all(clients: list[Any]) -> None:
    """Close ``clients`` in the background (on the running loop they belong to)."""
    for client in clients:
        task = asyncio.ensure_future(client.close())
        _CLOSING.add(task)
        task.add_done_callback(_CLOSING.discard)


#: closes in flight (a task must be referenced until it is done)
_CLOSING: set[asyncio.Future[Any]] = set()
