"""Tests of actors.network.FaultyNetwork (labrpc on Ray) with a tiny echo server actor."""

from __future__ import annotations

import asyncio
import pickle
import time
from collections.abc import Iterator
from typing import Any

import pytest
import ray

from actors.network import FaultyNetwork, Network, StaleIncarnationError

pytestmark = pytest.mark.timeout(60)


@ray.remote(num_cpus=0, max_concurrency=1000)
class EchoServer:
    """``echo`` returns (incarnation, args); ``sleep`` sleeps args[0] s; ``boom`` and ``stale`` raise."""

    def __init__(self) -> None:
        self.received = 0
        self.finished = 0

    async def rpc(self, incarnation: int, method: str, args: tuple) -> Any:
        self.received += 1
        if method == "echo":
            return incarnation, args
        if method == "sleep":
            await asyncio.sleep(args[0])
            self.finished += 1
            return "woke"
        if method == "boom":
            raise RuntimeError("boom: a bug in the handler")
        if method == "stale":
            raise StaleIncarnationError(f"not incarnation {incarnation}")
        raise ValueError(method)

    async def counts(self) -> tuple[int, int]:
        return self.received, self.finished


@pytest.fixture(scope="module")
def ray_runtime() -> Iterator[None]:
    """Ray for this module: reuse a running runtime (e.g. a session fixture's), else start and stop
    a small one."""
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, namespace="test_network")
    yield
    if started:
        ray.shutdown()


@pytest.fixture
def net(ray_runtime: None) -> Iterator[Any]:
    network = FaultyNetwork.remote(seed=42)
    yield network
    ray.kill(network)


@pytest.fixture
def server(ray_runtime: None) -> Iterator[Any]:
    s = EchoServer.remote()
    yield s
    ray.kill(s)


def connect(net: Any, server: Any, end: str = "e", name: str = "s", incarnation: int = 7) -> None:
    ray.get([net.add_server.remote(name, server, incarnation), net.make_end.remote(end, name)])
    ray.get(net.enable.remote(end, True))


def timed_call(net: Any, *args: Any) -> tuple[tuple[bool, Any], float]:
    t = time.monotonic()
    result = ray.get(net.call.remote(*args))
    return result, time.monotonic() - t


def completion_times(refs: list[Any], timeout: float) -> list[float]:
    """Seconds from now until each ref completes (in completion order)."""
    start = time.monotonic()
    times: list[float] = []
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1, timeout=timeout)
        assert done, f"{len(pending)} calls still pending after {timeout} s"
        times.append(time.monotonic() - start)
    return times


@pytest.mark.ray
def test_reliable_delivery_and_incarnation(net: Any, server: Any) -> None:
    ray.get([net.add_server.remote("s", server, 7), net.make_end.remote("e", "s")])
    # Ends start disabled, as in labrpc.
    assert ray.get(net.call.remote("e", "echo", ("hi",))) == (False, None)
    ray.get(net.enable.remote("e", True))
    for k in range(20):
        assert ray.get(net.call.remote("e", "echo", ("hi", k))) == (True, (7, ("hi", k)))
    # A restart registers a new incarnation under the same name; the network passes it along.
    ray.get(net.add_server.remote("s", server, 8))
    assert ray.get(net.call.remote("e", "echo", (1,))) == (True, (8, (1,)))
    st = ray.get(net.stats.remote())
    assert st["servers"] == {"s": 8}
    assert st["counts"] == {"s": 21}  # per name, across incarnations
    assert st["handler_errors"] == 0


@pytest.mark.ray
def test_disabled_end_missing_server_unknown_end_fail_fast(net: Any, server: Any) -> None:
    connect(net, server)
    ray.get(net.make_end.remote("nowhere", "no-such-server"))
    ray.get(net.enable.remote("nowhere", True))
    ray.get(net.enable.remote("e", False))
    for end in ("e", "nowhere", "never-made"):
        for _ in range(5):
            result, took = timed_call(net, end, "echo", ())
            assert result == (False, None)
            assert took < 0.3, f"a call to a dead end took {took:.3f} s (limit 0-100 ms)"
    refs = [net.call.remote("e", "echo", ()) for _ in range(50)]
    t = time.monotonic()
    assert ray.get(refs) == [(False, None)] * 50
    assert time.monotonic() - t < 0.5
    received, _ = ray.get(server.counts.remote())
    assert received == 0
    assert ray.get(net.get_count.remote("s")) == 0


@pytest.mark.ray
def test_long_delays(net: Any, server: Any) -> None:
    connect(net, server)
    ray.get([net.enable.remote("e", False), net.set_long_delays.remote(True)])
    refs = [net.call.remote("e", "echo", ()) for _ in range(30)]
    done, pending = ray.wait(refs, num_returns=len(refs), timeout=1.0)
    # Each fails after rand(0..6999) ms: P(all 30 within 1 s) = (1/7)^30.
    assert pending, "with long delays, calls to a disabled end should take up to 7 s"
    assert done, "P(none of 30 within 1 s) = (6/7)^30 ~ 1%: suspicious"
    assert all(r == (False, None) for r in ray.get(done))


@pytest.mark.ray
def test_delete_server_cuts_in_flight_call(net: Any, server: Any) -> None:
    connect(net, server)
    ref = net.call.remote("e", "sleep", (1.5,))
    time.sleep(0.3)
    t = time.monotonic()
    ray.get(net.delete_server.remote("s"))
    assert ray.get(ref) == (False, None)
    assert time.monotonic() - t < 0.3, "the in-flight call should fail as soon as the server is gone"
    # The handler did run on: its reply was produced, but never delivered.
    time.sleep(1.4)
    assert ray.get(server.counts.remote()) == (1, 1)
    assert ray.get(net.stats.remote())["in_flight"] == 0
    # New calls fail like calls to a disabled end.
    assert ray.get(net.call.remote("e", "echo", ())) == (False, None)


@pytest.mark.ray
def test_restart_or_disable_cuts_in_flight_calls(net: Any, server: Any) -> None:
    connect(net, server, incarnation=1)
    ray.get([net.make_end.remote("e2", "s"), net.enable.remote("e2", True)])
    through_e = [net.call.remote("e", "sleep", (1.0,)) for _ in range(3)]
    through_e2 = net.call.remote("e2", "sleep", (0.2,))
    time.sleep(0.1)
    t = time.monotonic()
    ray.get(net.enable.remote("e", False))  # disconnect the end
    assert ray.get(through_e) == [(False, None)] * 3
    assert time.monotonic() - t < 0.3
    assert ray.get(through_e2) == (True, "woke")  # another end to the same server is unaffected
    # A new incarnation under the same name cuts calls to the old one.
    slow = net.call.remote("e2", "sleep", (1.0,))
    time.sleep(0.1)
    ray.get(net.add_server.remote("s", server, 2))
    assert ray.get(slow) == (False, None)
    assert ray.get(net.call.remote("e2", "echo", ())) == (True, (2, ()))


@pytest.mark.ray
def test_unreliable_drop_rates(net: Any, server: Any) -> None:
    connect(net, server)
    ray.get(net.set_reliable.remote(False))
    n = 400
    t = time.monotonic()
    results = ray.get([net.call.remote("e", "echo", (k,)) for k in range(n)])
    took = time.monotonic() - t
    delivered = ray.get(net.get_count.remote("s"))
    assert ray.get(server.counts.remote())[0] == delivered
    ok = sum(r[0] for r in results)
    request_drop = 1 - delivered / n
    reply_drop = 1 - ok / delivered
    # Expected 10% each; the binomial standard deviation is about 1.5%.
    assert 0.04 <= request_drop <= 0.18, request_drop
    assert 0.04 <= reply_drop <= 0.18, reply_drop
    assert all(r == (True, (7, (k,))) for k, r in enumerate(results) if r[0])
    assert took < 5, took
    st = ray.get(net.stats.remote())
    assert st["total_count"] == n
    assert st["handler_errors"] == 0


@pytest.mark.ray
def test_counts_and_bytes(net: Any, server: Any) -> None:
    connect(net, server)
    ray.get([net.make_end.remote("off", "s")])  # disabled
    sent: list[tuple] = []
    for k in range(10):
        args = ("x" * (100 * k), k)
        sent.append(args)
        assert ray.get(net.call.remote("e", "echo", args, 3))[0]
    for k in range(4):
        args = (k,)
        sent.append(args)
        assert not ray.get(net.call.remote("off", "echo", args, 2))[0]
    st = ray.get(net.stats.remote())
    # Per server: delivered requests; total: every call entering the network (rpcs per call).
    assert ray.get(net.get_count.remote("s")) == st["counts"]["s"] == 30
    assert ray.get(net.get_total_count.remote()) == st["total_count"] == 30 + 8
    expected_bytes = sum(len(pickle.dumps(a, protocol=5)) for a in sent)
    assert ray.get(net.get_total_bytes.remote()) == st["total_bytes"] == expected_bytes
    assert ray.get(net.get_count.remote("unknown")) == 0


@pytest.mark.ray
def test_handler_exceptions(net: Any, server: Any) -> None:
    connect(net, server)
    assert ray.get(net.call.remote("e", "boom", ())) == (False, None)
    assert ray.get(net.stats.remote())["handler_errors"] == 1
    # A refused stale incarnation is a normal event, not a bug.
    assert ray.get(net.call.remote("e", "stale", ())) == (False, None)
    assert ray.get(net.stats.remote())["handler_errors"] == 1
    assert ray.get(net.call.remote("e", "echo", ()))[0]


@pytest.mark.ray
def test_long_reordering(net: Any, server: Any) -> None:
    connect(net, server)
    ray.get(net.set_long_reordering.remote(True))
    n = 30
    refs = [net.call.remote("e", "echo", (k,)) for k in range(n)]
    times = completion_times(refs, timeout=5.0)
    assert all(ok for ok, _ in ray.get(refs))  # reordering delays, never drops
    slow = sum(t >= 0.2 for t in times)
    # Expected 2/3 of the replies held back by 200..2199 ms.
    assert 8 <= slow <= n - 2, times
    assert max(times) < 2.6, times


@pytest.mark.ray
def test_end_management_errors(net: Any, server: Any) -> None:
    connect(net, server)
    with pytest.raises(ray.exceptions.RayTaskError, match="already exists"):
        ray.get(net.make_end.remote("e", "s"))
    # enable_many is all or nothing.
    ray.get(net.make_end.remote("f", "s"))
    with pytest.raises(ray.exceptions.RayTaskError, match="no end named"):
        ray.get(net.enable_many.remote(["f", "typo"], True))
    assert ray.get(net.stats.remote())["enabled_ends"] == 1
    ray.get(net.enable_many.remote(["e", "f"], False))
    assert ray.get(net.stats.remote())["enabled_ends"] == 0
    ray.get(net.delete_end.remote("f"))
    ray.get(net.delete_end.remote("f"))  # idempotent
    ray.get(net.delete_server.remote("nobody"))  # idempotent
    ray.get(net.make_end.remote("f", "s"))  # the name is free again


# --------------------------------------------------------------------------------------------------
# The plain class in-process (no Ray): the same logic with a fake handle, fast and easy to debug
# --------------------------------------------------------------------------------------------------


class _FakeRpc:
    def __init__(self, server: FakeServer) -> None:
        self.server = server

    def remote(self, incarnation: int, method: str, args: tuple) -> Any:
        return self.server.rpc(incarnation, method, args)


class FakeServer:
    """The server behind a :class:`FakeHandle`."""

    def __init__(self) -> None:
        self.finished = 0

    async def rpc(self, incarnation: int, method: str, args: tuple) -> Any:
        if method == "sleep":
            await asyncio.sleep(args[0])
            self.finished += 1
            return "woke"
        if method == "boom":
            raise RuntimeError("boom")
        return incarnation, args


class FakeHandle:
    """Quacks like an actor handle: ``handle.rpc.remote(...)`` returns an awaitable."""

    def __init__(self, server: FakeServer) -> None:
        self.rpc = _FakeRpc(server)


def test_plain_network_in_process(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        srv = FakeServer()
        net = Network(seed=1)
        await net.add_server("s", FakeHandle(srv), 3)
        await net.make_end("e", "s")
        assert await net.call("e", "echo", (1,)) == (False, None)  # ends start disabled
        await net.enable("e", True)
        assert await net.call("e", "echo", (1,), 2) == (True, (3, (1,)))
        slow = asyncio.ensure_future(net.call("e", "sleep", (0.5,)))
        await asyncio.sleep(0.05)
        t = time.monotonic()
        await net.delete_server("s")
        assert await slow == (False, None)
        assert time.monotonic() - t < 0.05
        await asyncio.sleep(0.5)
        assert srv.finished == 1  # the handler ran to the end; its reply was dropped
        await net.add_server("s", FakeHandle(srv), 4)
        assert await net.call("e", "boom", ()) == (False, None)
        st = await net.stats()
        assert (st["counts"], st["total_count"], st["handler_errors"]) == ({"s": 4}, 5, 1)

    asyncio.run(scenario())
    assert any("boom" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)
