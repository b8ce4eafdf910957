"""Tests of actors.network.FaultyNetwork (labrpc on Ray) with a tiny echo server actor."""

from __future__ import annotations

import asyncio
import pickle
import random
import time
import types
from collections.abc import Iterator
from typing import Any

import pytest
import ray

from actors import network as network_module
from actors.network import (
    DEAD_DELAY_MS,
    DROP_PER_MILLE,
    LONG_DEAD_DELAY_MS,
    REORDER_BASE_MS,
    REORDER_OF,
    REORDER_SPREAD_MS,
    SHORT_DELAY_MS,
    FaultyNetwork,
    Network,
    StaleIncarnationError,
)

pytestmark = pytest.mark.timeout(60)


@ray.remote(num_cpus=0, max_concurrency=1000)
class EchoServer:
    """``echo`` returns (incarnation, args); ``sleep`` sleeps args[0] s; ``block`` waits until
    :meth:`release`; ``boom`` and ``stale`` raise."""

    def __init__(self) -> None:
        self.received = 0
        self.finished = 0
        self.gate: asyncio.Event | None = None

    def _gate(self) -> asyncio.Event:
        if self.gate is None:
            self.gate = asyncio.Event()
        return self.gate

    async def rpc(self, incarnation: int, method: str, args: tuple) -> Any:
        self.received += 1
        if method == "echo":
            return incarnation, args
        if method == "sleep":
            await asyncio.sleep(args[0])
            self.finished += 1
            return "woke"
        if method == "block":
            await self._gate().wait()
            self.finished += 1
            return "released"
        if method == "boom":
            raise RuntimeError("boom: a bug in the handler")
        if method == "stale":
            raise StaleIncarnationError(f"not incarnation {incarnation}")
        raise ValueError(method)

    async def counts(self) -> tuple[int, int]:
        return self.received, self.finished

    async def release(self) -> None:
        self._gate().set()


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


#: Upper bounds on wall-clock time leave this much room for a busy machine (a Ray round trip here
#: takes about 1 ms when idle): they tell "failed fast" from "waited for something", nothing finer.
SLACK_S = 1.5
#: asyncio may fire a timer this early (clock resolution); lower bounds allow for it
EARLY_S = 0.002


def timed_call(net: Any, *args: Any) -> tuple[tuple[bool, Any], float]:
    t = time.monotonic()
    result = ray.get(net.call.remote(*args), timeout=60)
    return result, time.monotonic() - t


def completion_times(start: float, refs: list[Any], timeout: float) -> list[float]:
    """Seconds from ``start`` (taken before the calls were made) until each ref completes, sorted."""
    times: list[float] = []
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1, timeout=timeout)
        assert done, f"{len(pending)} calls still pending after {timeout} s"
        times.append(time.monotonic() - start)
    return sorted(times)


def dead_end_delays(seed: int, n: int, limit_ms: int) -> list[float]:
    """The delays (s) the network draws for its first ``n`` calls to a dead end: one
    ``randrange(limit_ms)`` each, from its seeded generator, in the order the calls arrive."""
    rng = random.Random(seed)
    return [rng.randrange(limit_ms) / 1000 for _ in range(n)]


def reorder_delays(seed: int, n: int) -> list[float]:
    """The reply delays (s) of the first ``n`` calls on a reliable network with long reordering:
    each call draws, when its handler has returned and with no pause in between, whether to hold
    the reply (600 in 900) and for how long (200 + rand(0 .. rand(0 .. 1999)) ms). The draws of one
    call are consecutive, so the multiset of delays does not depend on the order of the calls."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        if rng.randrange(REORDER_OF[1]) < REORDER_OF[0]:
            out.append((REORDER_BASE_MS + rng.randrange(1 + rng.randrange(REORDER_SPREAD_MS))) / 1000)
        else:
            out.append(0.0)
    return out


def wait_until(cond: Any, what: str, deadline_s: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not cond():
        assert time.monotonic() < deadline, f"{what} (not within {deadline_s:.0f} s)"
        time.sleep(0.01)


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
    """A call to a dead end fails after its drawn 0-99 ms (the network's seed is 42, and these are its
    only draws, so each delay is known), not after a long delay and not at once."""
    connect(net, server)
    ray.get(net.make_end.remote("nowhere", "no-such-server"))
    ray.get(net.enable.remote("nowhere", True))
    ray.get(net.enable.remote("e", False))
    delays = iter(dead_end_delays(42, 15 + 50, DEAD_DELAY_MS))
    for end in ("e", "nowhere", "never-made"):
        for _ in range(5):
            result, took = timed_call(net, end, "echo", ())
            delay = next(delays)
            assert result == (False, None)
            assert took >= delay - EARLY_S, f"failed after {took:.3f} s, before its {delay:.3f} s delay"
            assert took < delay + SLACK_S, f"a dead-end call took {took:.3f} s (drawn delay {delay:.3f} s)"
    concurrent = sorted(delays)
    t = time.monotonic()
    refs = [net.call.remote("e", "echo", ()) for _ in range(50)]
    times = completion_times(t, refs, timeout=60)
    assert ray.get(refs) == [(False, None)] * 50
    assert all(got >= want - EARLY_S for got, want in zip(times, concurrent, strict=True)), (
        times, concurrent)
    assert times[-1] < concurrent[-1] + SLACK_S, (times, concurrent)
    received, _ = ray.get(server.counts.remote())
    assert received == 0
    assert ray.get(net.get_count.remote("s")) == 0


@pytest.mark.ray
def test_long_delays(net: Any, server: Any) -> None:
    """With long delays, a call to a disabled end fails after its drawn 0-6999 ms. The 30 delays are
    the seeded network's first 30 draws (in whichever order the calls arrive), so each sorted
    completion time must be at least the matching sorted delay; nothing here depends on chance."""
    connect(net, server)
    ray.get([net.enable.remote("e", False), net.set_long_delays.remote(True)])
    delays = sorted(dead_end_delays(42, 30, LONG_DEAD_DELAY_MS))
    assert delays[-1] > 5.0 and delays[0] < 1.0  # this seed spreads them over the range
    t = time.monotonic()
    refs = [net.call.remote("e", "echo", ()) for _ in range(30)]
    times = completion_times(t, refs, timeout=60)
    assert all(r == (False, None) for r in ray.get(refs))
    assert all(got >= want - EARLY_S for got, want in zip(times, delays, strict=True)), (times, delays)
    assert times[-1] < delays[-1] + SLACK_S, (times, delays)


@pytest.mark.ray
def test_delete_server_cuts_in_flight_call(net: Any, server: Any) -> None:
    connect(net, server)
    ref = net.call.remote("e", "block", ())
    wait_until(lambda: ray.get(server.counts.remote()) == (1, 0), "the call reached its handler")
    ray.get(net.delete_server.remote("s"))
    # The call fails while its handler is still blocked: the cut did not wait for the handler.
    assert ray.get(ref, timeout=60) == (False, None)
    assert ray.get(server.counts.remote()) == (1, 0)
    # The handler runs on: its reply is produced, but never delivered.
    ray.get(server.release.remote())
    wait_until(lambda: ray.get(server.counts.remote()) == (1, 1), "the released handler finished")
    wait_until(lambda: ray.get(net.stats.remote())["in_flight"] == 0, "no call left in flight")
    # New calls fail like calls to a disabled end.
    assert ray.get(net.call.remote("e", "echo", ())) == (False, None)


@pytest.mark.ray
def test_restart_or_disable_cuts_in_flight_calls(net: Any, server: Any) -> None:
    connect(net, server, incarnation=1)
    ray.get([net.make_end.remote("e2", "s"), net.enable.remote("e2", True)])
    through_e = [net.call.remote("e", "block", ()) for _ in range(3)]
    through_e2 = net.call.remote("e2", "block", ())
    wait_until(lambda: ray.get(server.counts.remote()) == (4, 0), "all four calls reached the handler")
    ray.get(net.enable.remote("e", False))  # disconnect the end
    assert ray.get(through_e, timeout=60) == [(False, None)] * 3
    assert ray.get(server.counts.remote()) == (4, 0)  # cut while every handler was still blocked
    ray.get(server.release.remote())
    assert ray.get(through_e2, timeout=60) == (True, "released")  # another end is unaffected
    # A new incarnation under the same name cuts calls to the old one.
    slow = net.call.remote("e2", "sleep", (30.0,))
    wait_until(lambda: ray.get(server.counts.remote())[0] == 5, "the call reached its handler")
    ray.get(net.add_server.remote("s", server, 2))
    assert ray.get(slow, timeout=10) == (False, None)  # long before the 30 s handler is done
    assert ray.get(net.call.remote("e2", "echo", ())) == (True, (2, ()))


@pytest.mark.ray
def test_unreliable_drops_on_ray(net: Any, server: Any) -> None:
    """The bookkeeping of drops through the actor. (The rates themselves are checked exactly, with a
    fixed seed and a deterministic schedule, by test_plain_network_drop_rates.) P(no request or no
    reply dropped among 400 calls) is about 0.9**360 < 1e-16."""
    connect(net, server)
    ray.get(net.set_reliable.remote(False))
    n = 400
    results = ray.get([net.call.remote("e", "echo", (k,)) for k in range(n)], timeout=60)
    delivered = ray.get(net.get_count.remote("s"))
    assert ray.get(server.counts.remote())[0] == delivered
    ok = sum(r[0] for r in results)
    assert 0 < delivered < n, "no request was dropped"
    assert 0 < ok < delivered, "no reply was dropped"
    assert all(r == (True, (7, (k,))) for k, r in enumerate(results) if r[0])
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
    """Replies held back by their drawn 200-2199 ms (2 in 3 of them): the seeded network's draws are
    known (see reorder_delays), so each sorted completion time is bounded below exactly."""
    connect(net, server)
    ray.get(net.set_long_reordering.remote(True))
    n = 30
    delays = sorted(reorder_delays(42, n))
    held = sum(d > 0 for d in delays)
    assert 10 <= held <= n - 3  # this seed holds back some replies and not others
    t = time.monotonic()
    refs = [net.call.remote("e", "echo", (k,)) for k in range(n)]
    times = completion_times(t, refs, timeout=60)
    assert all(ok for ok, _ in ray.get(refs))  # reordering delays, never drops
    assert all(got >= want - EARLY_S for got, want in zip(times, delays, strict=True)), (times, delays)
    assert times[-1] < delays[-1] + SLACK_S, (times, delays)


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
    """The server behind a :class:`FakeHandle`; ``block`` waits until ``gate`` is set."""

    def __init__(self) -> None:
        self.received = 0
        self.finished = 0
        self.gate = asyncio.Event()

    async def rpc(self, incarnation: int, method: str, args: tuple) -> Any:
        self.received += 1
        if method == "block":
            await self.gate.wait()
            self.finished += 1
            return "released"
        if method == "boom":
            raise RuntimeError("boom")
        return incarnation, args


class FakeHandle:
    """Quacks like an actor handle: ``handle.rpc.remote(...)`` returns an awaitable."""

    def __init__(self, server: FakeServer) -> None:
        self.rpc = _FakeRpc(server)


async def _until(cond: Any) -> None:
    """Yield to the event loop until ``cond()`` holds (everything here is in-process and instant)."""
    for _ in range(10_000):
        if cond():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


def test_plain_network_in_process(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        srv = FakeServer()
        net = Network(seed=1)
        await net.add_server("s", FakeHandle(srv), 3)
        await net.make_end("e", "s")
        assert await net.call("e", "echo", (1,)) == (False, None)  # ends start disabled
        await net.enable("e", True)
        assert await net.call("e", "echo", (1,), 2) == (True, (3, (1,)))
        blocked = asyncio.ensure_future(net.call("e", "block", ()))
        await _until(lambda: srv.received == 2)
        await net.delete_server("s")
        assert await blocked == (False, None)
        assert srv.finished == 0  # failed while the handler was still blocked
        srv.gate.set()
        await _until(lambda: srv.finished == 1)  # the handler ran to the end; its reply was dropped
        await net.add_server("s", FakeHandle(srv), 4)
        assert await net.call("e", "boom", ()) == (False, None)
        st = await net.stats()
        assert (st["counts"], st["total_count"], st["handler_errors"], st["in_flight"]) == (
            {"s": 4}, 5, 1, 0)

    asyncio.run(scenario())
    assert any("boom" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)


@pytest.fixture
def instant_sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Make the network's sleeps instant (a bare yield to the loop) and record what they asked for.
    With no real timers the in-process schedule, and so every draw, is fixed by the seed."""
    asked: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(delay: float, result: Any = None) -> Any:
        asked.append(delay)
        return await real_sleep(0, result)

    fake = types.SimpleNamespace(**{k: getattr(asyncio, k) for k in dir(asyncio) if not k.startswith("__")})
    fake.sleep = sleep
    monkeypatch.setattr(network_module, "asyncio", fake)
    return asked


def test_plain_network_draws_each_delay_from_its_range(instant_sleeps: list[float]) -> None:
    """Sequential calls make the draws in a known order: each delay is exactly the next draw of a
    generator seeded like the network, from the reference's range."""

    async def scenario() -> None:
        srv = FakeServer()
        net = Network(seed=5)
        mirror = random.Random(5)
        await net.add_server("s", FakeHandle(srv), 1)
        await net.make_end("e", "s")  # disabled
        for long in (False, True):
            await net.set_long_delays(long)
            limit = LONG_DEAD_DELAY_MS if long else DEAD_DELAY_MS
            for _ in range(20):
                instant_sleeps.clear()
                assert await net.call("e", "echo", ()) == (False, None)
                assert instant_sleeps == [mirror.randrange(limit) / 1000]
        await net.enable("e", True)
        await net.set_long_reordering(True)
        held = 0
        for _ in range(40):
            instant_sleeps.clear()
            assert (await net.call("e", "echo", ()))[0]
            if mirror.randrange(REORDER_OF[1]) < REORDER_OF[0]:
                delay = REORDER_BASE_MS + mirror.randrange(1 + mirror.randrange(REORDER_SPREAD_MS))
                assert instant_sleeps == [delay / 1000]
                held += 1
            else:
                assert instant_sleeps == []
        assert 0 < held < 40

    asyncio.run(scenario())


def test_plain_network_drop_rates(instant_sleeps: list[float]) -> None:
    """Unreliable: 10% of requests and 10% of replies dropped, each request first delayed 0-26 ms.
    2,000 concurrent calls on a deterministic schedule with a fixed seed: the outcome is the same
    on every run (the bounds are the binomial mean +- 3 standard deviations, met by this seed)."""

    async def scenario() -> tuple[int, int, int]:
        srv = FakeServer()
        net = Network(seed=11)
        await net.add_server("s", FakeHandle(srv), 1)
        await net.make_end("e", "s")
        await net.enable("e", True)
        await net.set_reliable(False)
        results = await asyncio.gather(*(net.call("e", "echo", (k,)) for k in range(2000)))
        assert all(r == (True, (1, (k,))) for k, r in enumerate(results) if r[0])
        delivered = (await net.stats())["counts"]["s"]
        assert srv.received == delivered
        return len(results), delivered, sum(r[0] for r in results)

    n, delivered, ok = asyncio.run(scenario())
    p = DROP_PER_MILLE / 1000
    request_drop, reply_drop = 1 - delivered / n, 1 - ok / delivered
    assert abs(request_drop - p) <= 3 * (p * (1 - p) / n) ** 0.5, request_drop
    assert abs(reply_drop - p) <= 3 * (p * (1 - p) / delivered) ** 0.5, reply_drop
    assert len(instant_sleeps) == n
    assert all(0 <= d < SHORT_DELAY_MS / 1000 for d in instant_sleeps)
    assert max(instant_sleeps) == (SHORT_DELAY_MS - 1) / 1000
