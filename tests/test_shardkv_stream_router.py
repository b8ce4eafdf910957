"""The sharded KV's stream router (shardkv/stream_router.py) without a Ray runtime: real authenticated stream
servers (actors/stream_server.py) on loopback, and a lookup function of the test's own standing in for
"ask the server's actor through Ray". What is checked: the address is looked up once and cached (one
lookup shared by concurrent callers), a failed call with the connection down makes the router look the
server up again (a replacement under the same name is found at its new address), a timeout on a live
connection does not, an unknown name caches nothing, a wrong secret gets nowhere, the reply codes
(``NO_ANSWER``, ``None``), the payload shapes (``kv``/``ctrl``: the batch; others: the argument
tuple), the blocking ``call`` on the background stream loop, ``CtrlerEndpoints`` over the router, and
pickling without caches or connections.
"""

from __future__ import annotations

import asyncio
import pickle
from typing import Any

import pytest

from actors.service_protocol import NO_ANSWER
from actors.stream_auth import new_secret
from actors.stream_server import StreamServer
from shardkv.endpoints import CtrlerEndpoints, StreamRouter

SECRET = new_secret()


class _Servers:
    """Named stream servers whose handler echoes what it got; ``slow`` delays answers."""

    def __init__(self) -> None:
        self.servers: dict[str, StreamServer] = {}
        self.where: dict[str, tuple[str, int]] = {}
        self.seen: list[tuple[str, str, Any]] = []
        self.slow = 0.0
        self.lookups: list[str] = []

    async def add(self, name: str) -> tuple[str, int]:
        async def handler(method: str, payload: bytes) -> bytes | None:
            self.seen.append((name, method, pickle.loads(payload)))
            if self.slow:
                await asyncio.sleep(self.slow)
            return pickle.dumps(("ok", (name, method, pickle.loads(payload))), protocol=5)

        server = StreamServer(handler, SECRET, label=name)
        self.servers[name] = server
        self.where[name] = await server.start()
        return self.where[name]

    async def remove(self, name: str) -> None:
        await self.servers.pop(name).close()

    async def lookup(self, name: str) -> tuple[str, int] | None:
        self.lookups.append(name)
        await asyncio.sleep(0.01)  # a Ray call takes a while: concurrent callers must share it
        return self.where.get(name)

    async def close(self) -> None:
        for server in self.servers.values():
            await server.close()


def _run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_an_address_is_looked_up_once_and_cached() -> None:
    async def main() -> None:
        s = _Servers()
        await s.add("g1-0")
        router = StreamRouter(SECRET, lookup=s.lookup)
        try:
            replies = await asyncio.gather(*(router.acall("g1-0", "kv", ((i,),), 5.0) for i in range(10)))
            assert replies == [("ok", ("g1-0", "kv", (i,))) for i in range(10)]
            assert await router.acall("g1-0", "kv", (("again",),), 5.0) == ("ok", ("g1-0", "kv", ("again",)))
            assert s.lookups == ["g1-0"] and router.lookups == 1, "one lookup, shared and cached"
            assert router.address("g1-0") == s.where["g1-0"]
        finally:
            await router.close()
            await s.close()

    _run(main())


def test_kv_and_ctrl_carry_the_batch_other_methods_the_argument_tuple() -> None:
    async def main() -> None:
        s = _Servers()
        await s.add("g1-0")
        router = StreamRouter(SECRET, lookup=s.lookup)
        try:
            await router.acall("g1-0", "kv", (("op1", "op2"),), 5.0)
            await router.acall("g1-0", "ctrl", (("q",),), 5.0)
            await router.acall("g1-0", "pull", (3, (1, 2)), 5.0)
            await router.acall("g1-0", "delete", (3, (1,)), 5.0)
            assert s.seen == [("g1-0", "kv", ("op1", "op2")), ("g1-0", "ctrl", ("q",)),
                              ("g1-0", "pull", (3, (1, 2))), ("g1-0", "delete", (3, (1,)))]
        finally:
            await s.close()

    _run(main())


def test_a_replaced_server_is_found_again_under_its_name() -> None:
    async def main() -> None:
        s = _Servers()
        old = await s.add("g1-2")
        router = StreamRouter(SECRET, lookup=s.lookup)
        try:
            assert (await router.acall("g1-2", "kv", ((1,),), 5.0))[0] == "ok"
            await s.remove("g1-2")  # the replica dies with its node ...
            new = await s.add("g1-2")  # ... and its replacement listens elsewhere, under the same name
            assert new != old
            assert await router.acall("g1-2", "kv", ((2,),), 5.0) is None, "the old address is gone"
            assert router.address("g1-2") is None, "a failed call with no connection forgets the server"
            assert await router.acall("g1-2", "kv", ((3,),), 5.0) == ("ok", ("g1-2", "kv", (3,)))
            assert router.address("g1-2") == new and s.lookups == ["g1-2", "g1-2"]
        finally:
            await router.close()
            await s.close()

    _run(main())


def test_a_timeout_on_a_live_connection_is_no_answer_and_keeps_the_address() -> None:
    async def main() -> None:
        s = _Servers()
        await s.add("g1-0")
        router = StreamRouter(SECRET, lookup=s.lookup)
        try:
            assert (await router.acall("g1-0", "kv", ((1,),), 5.0))[0] == "ok"
            s.slow = 1.0
            assert await router.acall("g1-0", "kv", ((2,),), 0.2) == NO_ANSWER
            assert router.address("g1-0") == s.where["g1-0"] and router.lookups == 1
        finally:
            await router.close()
            await s.close()

    _run(main())


def test_unknown_servers_and_failed_lookups_cache_nothing() -> None:
    async def broken(name: str) -> tuple[str, int] | None:
        raise RuntimeError(f"the actor {name} died")

    async def main() -> None:
        s = _Servers()
        router = StreamRouter(SECRET, lookup=s.lookup)
        assert await router.acall("nobody", "kv", ((1,),), 1.0) is None
        assert await router.acall("nobody", "kv", ((1,),), 1.0) is None
        assert s.lookups == ["nobody", "nobody"] and router.address("nobody") is None
        dead = StreamRouter(SECRET, lookup=broken)
        assert await dead.acall("g1-0", "kv", ((1,),), 1.0) is None and dead.address("g1-0") is None

        async def hangs(name: str) -> tuple[str, int] | None:
            await asyncio.sleep(10)
            return None

        assert await StreamRouter(SECRET, lookup=hangs).acall("g1-0", "kv", ((1,),), 0.2) == NO_ANSWER

    _run(main())


def test_a_router_with_another_secret_gets_nowhere() -> None:
    async def main() -> None:
        s = _Servers()
        await s.add("g1-0")
        router = StreamRouter(new_secret(), lookup=s.lookup)
        try:
            assert await router.acall("g1-0", "kv", ((1,),), 2.0) is None
            assert s.seen == [], "nothing of an unauthenticated connection reaches the handler"
        finally:
            await router.close()
            await s.close()

    _run(main())


def test_blocking_calls_and_the_controller_endpoints() -> None:
    """``call`` runs on the process's background stream loop (a sync clerk's path); the controller's
    clerks reach it through ``CtrlerEndpoints``."""
    from actors.stream_loop import get_loop, run_blocking

    s = _Servers()
    run_blocking(lambda: s.add("ctrl-0"), 10)
    run_blocking(lambda: s.add("ctrl-1"), 10)
    router = StreamRouter(SECRET, lookup=s.lookup)
    try:
        assert router.call("ctrl-0", "kv", (("x",),), 5.0) == ("ok", ("ctrl-0", "kv", ("x",)))
        ends = CtrlerEndpoints(router, ("ctrl-0", "ctrl-1")).ensure()
        assert ends.call(1, ("q",), 5.0) == ("ok", ("ctrl-1", "ctrl", ("q",)))
        assert asyncio.run_coroutine_threadsafe(ends.acall(0, ("j",), 5.0), get_loop()).result(10) == \
            ("ok", ("ctrl-0", "ctrl", ("j",)))
        assert router.call("nobody", "kv", (("x",),), 1.0) is None
    finally:
        run_blocking(s.close, 10)


def test_a_router_pickles_without_its_caches_and_never_shows_its_secret() -> None:
    async def main() -> None:
        s = _Servers()
        await s.add("g1-0")
        router = StreamRouter(SECRET, {"ctrl-0": "handle0"}, "ns", lookup=s.lookup)
        try:
            await router.acall("g1-0", "kv", ((1,),), 5.0)
            copy = pickle.loads(pickle.dumps(router))
            assert copy.secret == SECRET and copy.known == {"ctrl-0": "handle0"} and copy.namespace == "ns"
            assert copy.address("g1-0") is None and copy.lookups == 0, "caches are not pickled"
            assert copy._lookup == copy._ray_lookup, "an unpickled router asks Ray"
            assert SECRET.hex() not in repr(router) and repr(SECRET) not in repr(router)
        finally:
            await router.close()
            await s.close()

    _run(main())
    with pytest.raises(ValueError, match="needs the service's secret"):
        StreamRouter(b"")


def test_connections_are_shared_per_loop_and_closed_loops_are_forgotten() -> None:
    """Routers without a fault hook share one connection per server on a loop; a router with one keeps
    its own; the entries of loops that are gone are dropped when a new loop comes."""
    import shardkv.stream_router as sr

    async def once() -> tuple[Any, Any, Any]:
        s = _Servers()
        await s.add("g1-0")
        a, b = StreamRouter(SECRET, lookup=s.lookup), StreamRouter(SECRET, lookup=s.lookup)
        from actors.stream_faults import StreamFaults

        c = StreamRouter(SECRET, lookup=s.lookup, faults=StreamFaults(1))
        for r in (a, b, c):
            assert (await r.acall("g1-0", "kv", ((1,),), 5.0))[0] == "ok"
        loop = asyncio.get_running_loop()
        shared = sr._SHARED[loop]
        mine = [cl for k, cl in shared.items() if k[1] == SECRET and k[2] == "g1-0"]
        assert len(mine) == 1, "a and b share one connection"
        assert c._loops[loop].clients["g1-0"] is not mine[0], "a router with a fault hook has its own"
        await c.close()
        await s.close()
        return loop, a, b

    first, _, _ = _run(once())
    second, _, _ = _run(once())
    assert first.is_closed() and first not in sr._SHARED and second in sr._SHARED


def test_a_router_with_an_older_address_follows_the_shared_connection() -> None:
    """Two routers share a connection; one finds a moved server again (one failed call, one lookup);
    the other, whose cache still holds the old address, follows the shared connection at once (no
    failed call, no lookup) instead of moving it back."""
    async def main() -> None:
        s = _Servers()
        await s.add("g2-1")
        a, b = StreamRouter(SECRET, lookup=s.lookup), StreamRouter(SECRET, lookup=s.lookup)
        try:
            assert (await a.acall("g2-1", "kv", ((1,),), 5.0))[0] == "ok"
            assert (await b.acall("g2-1", "kv", ((1,),), 5.0))[0] == "ok"
            await s.remove("g2-1")
            new = await s.add("g2-1")
            assert await a.acall("g2-1", "kv", ((2,),), 5.0) is None
            assert (await a.acall("g2-1", "kv", ((3,),), 5.0))[0] == "ok" and a.address("g2-1") == new
            assert b.address("g2-1") != new, "b's cache is older"
            lookups = b.lookups
            assert (await b.acall("g2-1", "kv", ((4,),), 5.0))[0] == "ok"
            assert b.address("g2-1") == new and b.lookups == lookups, "b followed without a lookup"
            assert (await a.acall("g2-1", "kv", ((5,),), 5.0))[0] == "ok" and a.lookups == 2
        finally:
            await s.close()

    _run(main())


def test_shard_groups_follow_the_controller_s_transport() -> None:
    """``shardkv.start_group`` takes its routing from the controller it is given: its network, its
    stream secret (with its replicas known by name), or direct calls. (Imports Ray's module; no
    runtime.)"""
    from types import SimpleNamespace

    from shardkv.endpoints import DirectRouter, NetworkRouter
    from shardkv.group import router_for, routing_for

    ctrler = SimpleNamespace(names=("c-0", "c-1"), replicas=("h0", "h1"), network=None, secret=SECRET)
    assert routing_for(ctrler) == ("stream", SECRET, {"c-0": "h0", "c-1": "h1"}, None)
    router = router_for(ctrler)
    assert isinstance(router, StreamRouter) and router.secret == SECRET and router.known["c-1"] == "h1"
    assert routing_for(SimpleNamespace(**{**vars(ctrler), "secret": None}))[0] == "direct"
    assert isinstance(router_for(SimpleNamespace(**{**vars(ctrler), "secret": None})), DirectRouter)
    assert isinstance(router_for(SimpleNamespace(**{**vars(ctrler), "network": "net"})), NetworkRouter)
