"""The faulty network: the reference harness's ``labrpc`` as an async Ray actor.

Every RPC in the tests travels through one :class:`FaultyNetwork` actor, from a named *client end* to
a named *server*, so that a test can lose, delay and reorder messages and cut peers off, exactly as
the MIT 6.5840 harness does (catalogue, Part 1):

* An **end** (``make_end(end, server)``) belongs to one caller and leads to one server *name*. Ends
  start **disabled**; ``enable`` / ``enable_many`` switch them. A peer is "disconnected" when every
  end into and out of it is disabled; a partition is one ``enable_many`` call.
* A **server** (``add_server(name, handle, incarnation)``) is a Ray actor exposing
  ``async def rpc(self, incarnation, method, args)``. The network passes along the incarnation it
  registered; the actor must refuse calls meant for an earlier incarnation of itself (returning a
  value its callers read as failure, or raising :class:`StaleIncarnationError`, which the network
  turns into a failed call without complaint). ``delete_server`` (a crash) or ``add_server`` under
  the same name (a restart) makes the old registration dead.

``call(end, method, args, rpcs)`` returns ``(True, result)`` or ``(False, None)``; network faults
never raise. What happens to a call, in order (labrpc's ``processReq``):

1. It is counted: ``total_count += rpcs`` and ``total_bytes += len(pickle(args))`` — every call that
   enters the network, delivered or not, as labrpc counts at its entry.
2. If the end is unknown or disabled, or no server is registered under its name: the call fails
   after a random 0-100 ms, or 0-7000 ms with **long delays** on (so that a Raft leader that waits
   for RPCs synchronously is caught out).
3. **Unreliable**: the request is delayed 0-26 ms, then dropped with probability 10% (the call fails
   at once; the server never sees it).
4. The request is delivered: the server's count grows by ``rpcs`` and its handler runs. While it
   runs, the call is *cut* if its end is disabled or deleted, or the server is deleted or replaced:
   the caller sees a failure at once, and the handler's reply (whenever it comes) is thrown away.
   (labrpc polls for this every 100 ms; here the cut wakes the waiting call directly. A disable that
   is undone while the handler runs still cuts the call, which labrpc's polling could miss.)
5. **Unreliable**: the reply is dropped with probability 10% (the handler ran; the caller sees a
   failure).
6. **Long reordering**: with probability 600/900 the reply is held back for
   ``200 + rand(0 .. rand(0 .. 1999))`` ms before the caller gets it.

A handler that raises is a bug in the server: the call fails and the exception is logged at ERROR
level on ``raykv.network`` (and counted in ``stats()["handler_errors"]``, so tests can insist on zero).

``rpcs`` lets one Ray call carry a batch of Raft messages and still count as that many RPCs in the
per-server and total counts (the byte count is the size of the whole batch).

Randomness comes from ``random.Random(seed)``. The draws are made in the order calls reach the actor,
so a seed fixes the fault pattern of a given interleaving, not of a whole concurrent test.

Differences from labrpc worth knowing: per-server counts are kept per *name* and survive a restart
(labrpc's ``Server`` object, and its count, is replaced); replies are not added to the byte count
(the catalogue's count is of request bytes); an end cannot be re-pointed (labrpc's ``Connect``):
make a new end instead.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import pickle
import random
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError

__all__ = ["FaultyNetwork", "Network", "StaleIncarnationError"]

log = logging.getLogger("raykv.network")

#: What a failed call returns.
FAILED: tuple[bool, None] = (False, None)

# labrpc's constants.
SHORT_DELAY_MS = 27  # unreliable: each request first waits rand(0..26) ms
DROP_PER_MILLE = 100  # unreliable: 10% of requests and 10% of replies are dropped
DEAD_DELAY_MS = 100  # a disabled end or missing server fails after rand(0..99) ms ...
LONG_DEAD_DELAY_MS = 7000  # ... or rand(0..6999) ms with long delays
REORDER_OF = (600, 900)  # long reordering: delay a reply with probability 600/900 ...
REORDER_BASE_MS, REORDER_SPREAD_MS = 200, 2000  # ... by 200 + rand(0..rand(0..1999)) ms


class StaleIncarnationError(Exception):
    """Raised by a server's ``rpc`` for a call addressed to an earlier incarnation of itself.

    The network reports such a call as failed, quietly: it is a normal consequence of a restart.
    """


def _wake(waiter: asyncio.Future[None], _: object = None) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _wake_all(waiters: set[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        _wake(waiter)
    waiters.clear()


def _retrieve(handler: asyncio.Future[Any]) -> None:
    """Mark a discarded handler's outcome as retrieved (no "exception never retrieved" noise)."""
    if not handler.cancelled():
        handler.exception()


def _as_future(ref: Any) -> asyncio.Future[Any]:
    """An asyncio future for the result of ``handle.rpc.remote(...)``.

    A Ray ObjectRef is wrapped without creating a task; anything else awaitable (a fake handle in an
    in-process test of :class:`Network`) becomes a task.
    """
    if isinstance(ref, ray.ObjectRef):
        return asyncio.wrap_future(ref.future())
    return asyncio.ensure_future(ref)


def _request_bytes(args: tuple) -> int:
    try:
        return len(pickle.dumps(args, protocol=5))
    except Exception:  # not picklable by the standard pickler: measure as Ray would send it
        return len(ray.cloudpickle.dumps(args))


@dataclass(eq=False, slots=True)
class _End:
    """A client end. ``cuts`` counts the times it was disabled or deleted: a call remembers the value
    it started with and is cut if it changes. ``waiters`` wake the calls waiting on a handler."""

    server: str
    enabled: bool = False
    cuts: int = 0
    waiters: set[asyncio.Future[None]] = field(default_factory=set)

    def cut(self) -> None:
        self.cuts += 1
        _wake_all(self.waiters)


@dataclass(eq=False, slots=True)
class _Server:
    """One registration of a server: dead once deleted or replaced (a new registration is a new
    object, so a call in flight to the old one can tell)."""

    handle: Any
    incarnation: int
    dead: bool = False
    waiters: set[asyncio.Future[None]] = field(default_factory=set)

    def kill(self) -> None:
        self.dead = True
        _wake_all(self.waiters)


class Network:
    """The network's logic as a plain class (usable in-process under asyncio, e.g. with fake
    handles); :data:`FaultyNetwork` is the same class as a Ray actor. All methods are coroutines and
    run on one event loop, so no locking is needed: state changes only between ``await`` points."""

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)
        self._reliable = True
        self._long_delays = False
        self._long_reordering = False
        self._ends: dict[str, _End] = {}
        self._servers: dict[str, _Server] = {}
        self._counts: dict[str, int] = {}
        self._total_count = 0
        self._total_bytes = 0
        self._handler_errors = 0
        self._in_flight = 0

    # ---- servers --------------------------------------------------------------------------------

    async def add_server(self, name: str, handle: Any, incarnation: int) -> None:
        """Register ``handle`` as server ``name``; replaces (and cuts calls to) an earlier one."""
        old = self._servers.get(name)
        if old is not None:
            old.kill()
        self._servers[name] = _Server(handle, incarnation)
        self._counts.setdefault(name, 0)

    async def delete_server(self, name: str) -> None:
        """Remove server ``name`` (a crash): calls in flight to it fail now and their replies are
        never delivered; new calls fail as for a disabled end. Deleting a missing server is a no-op."""
        old = self._servers.pop(name, None)
        if old is not None:
            old.kill()

    # ---- ends -----------------------------------------------------------------------------------

    async def make_end(self, end: str, server: str) -> None:
        """Create client end ``end`` leading to server name ``server`` (which may not exist yet).
        The end starts disabled. End names are unique: re-creating a live end is an error."""
        if end in self._ends:
            raise ValueError(f"end {end!r} already exists (leading to {self._ends[end].server!r}); "
                             f"delete_end it first or use a new name")
        self._ends[end] = _End(server)

    async def enable(self, end: str, on: bool) -> None:
        """Enable or disable one end; disabling cuts the calls in flight through it."""
        self._set_enabled(self._end(end), on)

    async def enable_many(self, ends: list[str], on: bool) -> None:
        """Enable or disable several ends at once (a partition is one call). All names must exist;
        if one does not, nothing changes."""
        records = [self._end(e) for e in ends]
        for record in records:
            self._set_enabled(record, on)

    async def delete_end(self, end: str) -> None:
        """Delete an end; calls in flight through it fail. Deleting a missing end is a no-op."""
        record = self._ends.pop(end, None)
        if record is not None:
            record.enabled = False
            record.cut()

    def _end(self, end: str) -> _End:
        try:
            return self._ends[end]
        except KeyError:
            raise ValueError(f"no end named {end!r}") from None

    @staticmethod
    def _set_enabled(record: _End, on: bool) -> None:
        if record.enabled and not on:
            record.cut()
        record.enabled = on

    # ---- fault switches -------------------------------------------------------------------------

    async def set_reliable(self, reliable: bool) -> None:
        self._reliable = reliable

    async def set_long_delays(self, on: bool) -> None:
        self._long_delays = on

    async def set_long_reordering(self, on: bool) -> None:
        self._long_reordering = on

    # ---- the call -------------------------------------------------------------------------------

    async def call(self, end: str, method: str, args: tuple, rpcs: int = 1) -> tuple[bool, Any]:
        """Carry ``server.rpc(incarnation, method, args)`` through ``end``; see the module docstring.

        Returns ``(True, result)`` or ``(False, None)``; never raises for a network fault.
        """
        self._total_count += rpcs
        self._total_bytes += _request_bytes(args)
        rng = self._rng
        e = self._ends.get(end)
        srv = self._servers.get(e.server) if e is not None else None
        if e is None or srv is None or not e.enabled:
            limit = LONG_DEAD_DELAY_MS if self._long_delays else DEAD_DELAY_MS
            await asyncio.sleep(rng.randrange(limit) / 1000)
            return FAILED
        reliable, long_reordering, cuts = self._reliable, self._long_reordering, e.cuts

        if not reliable:
            await asyncio.sleep(rng.randrange(SHORT_DELAY_MS) / 1000)
            if rng.randrange(1000) < DROP_PER_MILLE:
                return FAILED
            if e.cuts != cuts or srv.dead:  # cut off during the delay: nothing to deliver to
                return FAILED

        # Deliver the request, then wait for the handler or for the call to be cut.
        self._counts[e.server] += rpcs
        handler = _as_future(srv.handle.rpc.remote(srv.incarnation, method, args))
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        handler.add_done_callback(functools.partial(_wake, waiter))
        e.waiters.add(waiter)
        srv.waiters.add(waiter)
        self._in_flight += 1
        try:
            await waiter
        finally:
            self._in_flight -= 1
            e.waiters.discard(waiter)
            srv.waiters.discard(waiter)
            if not handler.done():  # cut (or this call cancelled): the reply will be thrown away
                handler.add_done_callback(_retrieve)
        if e.cuts != cuts or srv.dead or not handler.done():
            # Cut while the handler ran: fail now, and never deliver what the handler returns.
            if handler.done():
                _retrieve(handler)
            return FAILED
        error = handler.exception()
        if error is not None:
            self._handler_failed(e.server, srv, method, error)
            return FAILED
        result = handler.result()

        if not reliable and rng.randrange(1000) < DROP_PER_MILLE:
            return FAILED
        if long_reordering and rng.randrange(REORDER_OF[1]) < REORDER_OF[0]:
            delay_ms = REORDER_BASE_MS + rng.randrange(1 + rng.randrange(REORDER_SPREAD_MS))
            await asyncio.sleep(delay_ms / 1000)
        return True, result

    def _handler_failed(self, name: str, srv: _Server, method: str, error: BaseException) -> None:
        if isinstance(error, StaleIncarnationError):
            log.debug("server %s refused %s: stale incarnation %d", name, method, srv.incarnation)
        elif isinstance(error, RayActorError):
            log.warning("server %s (incarnation %d) died or is unreachable while registered; "
                        "%s failed: %s", name, srv.incarnation, method, error)
        else:
            self._handler_errors += 1
            log.error("handler %s on server %s (incarnation %d) raised; the call fails. This is a "
                      "bug in the server:\n%s", method, name, srv.incarnation, error,
                      exc_info=None if isinstance(error, RayTaskError) else error)

    # ---- counts ---------------------------------------------------------------------------------

    async def get_count(self, server: str) -> int:
        """RPCs delivered to server ``server`` (all its incarnations), counting ``rpcs`` per call."""
        return self._counts.get(server, 0)

    async def get_total_count(self) -> int:
        """RPCs that entered the network, delivered or not (``rpcs`` per call)."""
        return self._total_count

    async def get_total_bytes(self) -> int:
        """Bytes of request arguments that entered the network (pickled size of ``args``)."""
        return self._total_bytes

    async def stats(self) -> dict[str, Any]:
        """Every count and switch in one call: ``total_count``, ``total_bytes``, ``counts`` (per
        server name), ``handler_errors``, ``in_flight`` (calls waiting on a handler now),
        ``reliable``, ``long_delays``, ``long_reordering``, ``servers`` (name -> incarnation) and
        ``enabled_ends`` (how many ends are enabled)."""
        return {
            "total_count": self._total_count,
            "total_bytes": self._total_bytes,
            "counts": dict(self._counts),
            "handler_errors": self._handler_errors,
            "in_flight": self._in_flight,
            "reliable": self._reliable,
            "long_delays": self._long_delays,
            "long_reordering": self._long_reordering,
            "servers": {name: s.incarnation for name, s in self._servers.items()},
            "enabled_ends": sum(e.enabled for e in self._ends.values()),
        }


#: The network as a Ray actor: ``net = FaultyNetwork.remote(seed=1)``. It needs no CPU (it only
#: waits), and runs up to 10,000 calls at once on its event loop.
FaultyNetwork = ray.remote(num_cpus=0, max_concurrency=10000)(Network)
