"""How a clerk reaches the servers of one group: straight to the replica actors, over the stream
transport, or through the faulty network actor (tests). A clerk does not know which one it has.

An endpoint set numbers the servers ``0 .. n-1`` in peer-id order (so a server's leader hint, a peer
id, names a server directly) and offers two calls that hide the mechanism (the clerk-side call API of
docs/transports.md):

- ``call(server, ops, timeout_s)`` (blocking: the sync clerks) and
- ``await acall(server, ops, timeout_s)`` (asyncio: the asyncio clerks, replicas following another
  service),

each returning the server's reply, :data:`~actors.service_protocol.NO_ANSWER` when the server did not
answer within ``timeout_s`` seconds, or ``None`` for a failed call (dropped, cut, peer down).

A service names its RPC in a subclass (:attr:`DirectEndpoints.method`: ``"kv"`` for kvraft,
``"ctrl"`` for the controller). Direct calls go to the replica's method of that name with the batch
pickled by the caller (one bytes argument costs Ray far less to move than nested tuples; see
:meth:`actors.service_server.ServiceReplica._serve_pickled`); network calls go to the replica's
``rpc_<method>`` through the network actor; stream calls (:mod:`actors.stream_endpoints`) go over an
authenticated TCP stream to the replica's listener. All are picklable: a clerk can be built in one
process and used in another (a Ray task, or another service's replica actor).

The two Ray flavours are built on one Ray call each (:class:`RefEndpoints`: ``submit`` returns an
``ObjectRef``, ``unpack`` turns what it resolves to into the reply). An endpoint set of that older
shape only (``submit`` / ``unpack``, no ``call`` / ``acall``) is adapted by :func:`calls_of`, which
the clerks apply to whatever they are given.
"""

from __future__ import annotations

import asyncio
import pickle
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from actors.service_protocol import NO_ANSWER


class Endpoints(Protocol):
    """What a clerk of one group needs of its endpoint set."""

    names: tuple[str, ...]

    def call(self, server: int, ops: Any, timeout_s: float) -> Any:
        """Blocking: ``server``'s reply to ``ops``; ``NO_ANSWER`` after ``timeout_s``; ``None`` for a
        failed call."""

    async def acall(self, server: int, ops: Any, timeout_s: float) -> Any:
        """:meth:`call` for asyncio code (never blocks the event loop)."""


class RefEndpoints:
    """``call`` / ``acall`` for endpoint sets built on one Ray call: a subclass (or an adapted object,
    see :func:`calls_of`) provides ``submit(server, ops) -> ObjectRef`` and ``unpack(value) -> reply``,
    and optionally ``forget(server)`` (endpoints that find servers by name look a server up again after
    a failed call)."""

    names: tuple[str, ...]

    def submit(self, server: int, ops: Any) -> Any:
        raise NotImplementedError

    def unpack(self, value: Any) -> Any:
        raise NotImplementedError

    def call(self, server: int, ops: Any, timeout_s: float) -> Any:
        return _ref_call(self, server, ops, timeout_s)

    async def acall(self, server: int, ops: Any, timeout_s: float) -> Any:
        return await _ref_acall(self, server, ops, timeout_s)


def _forget(endpoints: Any, server: int) -> None:
    forget = getattr(endpoints, "forget", None)
    if forget is not None:  # endpoints that find servers by name look this one up again
        forget(server)


def _ref_call(endpoints: Any, server: int, ops: Any, timeout_s: float) -> Any:
    import ray
    from ray.exceptions import GetTimeoutError, RayError

    try:
        value = ray.get(endpoints.submit(server, ops), timeout=timeout_s)
    except GetTimeoutError:
        return NO_ANSWER
    except (RayError, ValueError):  # a dead actor (a router that looks names up: an unknown name)
        _forget(endpoints, server)
        return None
    return endpoints.unpack(value)


async def _ref_acall(endpoints: Any, server: int, ops: Any, timeout_s: float) -> Any:
    try:
        ref = endpoints.submit(server, ops)
        value = await asyncio.wait_for(asyncio.wrap_future(ref.future()), timeout_s)
    except asyncio.TimeoutError:
        return NO_ANSWER
    except asyncio.CancelledError:
        raise
    except Exception:  # a Ray error: the actor died or the call failed
        _forget(endpoints, server)
        return None
    return endpoints.unpack(value)


class _RefAdapter:
    """``call`` / ``acall`` over an object that only has ``submit`` / ``unpack`` (see :func:`calls_of`)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    @property
    def names(self) -> tuple[str, ...]:
        return self.inner.names  # type: ignore[no-any-return]

    def _check(self) -> None:
        inner = self.inner
        if not (callable(getattr(inner, "submit", None)) and callable(getattr(inner, "unpack", None))):
            raise TypeError(f"{type(self.inner).__name__} is not an endpoint set: it needs call(server, "
                            "ops, timeout_s) and acall(...) (or submit(server, ops) and unpack(value))")

    def call(self, server: int, ops: Any, timeout_s: float) -> Any:
        self._check()
        return _ref_call(self.inner, server, ops, timeout_s)

    async def acall(self, server: int, ops: Any, timeout_s: float) -> Any:
        self._check()
        return await _ref_acall(self.inner, server, ops, timeout_s)


def calls_of(endpoints: Any) -> Endpoints:
    """``endpoints`` itself when it has ``call`` and ``acall``; else an adapter over its ``submit`` /
    ``unpack`` (an endpoint set of the Ray-ref shape), whose calls raise ``TypeError`` if it has
    neither."""
    if callable(getattr(endpoints, "call", None)) and callable(getattr(endpoints, "acall", None)):
        return endpoints  # type: ignore[no-any-return]
    return _RefAdapter(endpoints)


@dataclass(frozen=True)
class DirectEndpoints(RefEndpoints):
    """Calls go to the replica actors themselves (one hop, Ray actor calls), as
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
class NetworkEndpoints(RefEndpoints):
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
