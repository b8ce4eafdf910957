"""A StreamClient against a StreamServer over real loopback sockets: calls, failures, reconnection, faults.

Plain asyncio, no Ray. Waits are bounded polls of a condition, never sleeps standing in for one.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable

import pytest

from actors import stream_loop
from actors.stream_auth import new_secret
from actors.stream_client import StreamClient
from actors.stream_faults import StreamFaults
from actors.stream_frames import MAX_FRAME_BYTES, SMALL_FRAME_BYTES
from actors.stream_server import StreamServer

pytestmark = pytest.mark.timeout(30)

SECRET = new_secret()


async def echo(method: str, payload: bytes) -> bytes:
    return method.encode() + b":" + payload


async def until(condition: Callable[[], bool], within_s: float = 2.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


def run(main: Callable[[], Awaitable[None]]) -> None:
    """Run ``main`` and check it left no task of its own behind (every task tracked and closed) and that
    nothing reached the loop's exception handler (no task or callback ended with an unhandled error)."""
    errors: list[dict[str, object]] = []

    async def wrapper() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: errors.append(context))
        await main()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert others == [], f"tasks left running: {others}"
        gc.collect()  # a task that died with an unretrieved exception reports it when collected
        await asyncio.sleep(0)

    asyncio.run(wrapper())
    assert errors == [], f"unhandled errors in the loop: {errors}"


def test_calls_of_every_size_come_back() -> None:
    async def main() -> None:
        server = StreamServer(echo, SECRET, label="s")
        client = StreamClient(await server.start(), SECRET, label="s")
        rng = random.Random(1)
        for size in (0, 1, 1000, SMALL_FRAME_BYTES, SMALL_FRAME_BYTES * 3, 8 * 1024 * 1024):
            payload = rng.randbytes(size)
            assert await client.start("m", payload, 5.0) == (True, b"m:" + payload)
        assert server.stats()["accepted"] == 1 and client.stats()["connects"] == 1
        assert client.stats()["pending"] == 0 and server.stats()["frames_in"] == 6
        await client.close()
        await server.close()

    run(main)


def test_the_request_is_written_inside_start_before_anyone_awaits() -> None:
    async def main() -> None:
        arrived = asyncio.Event()

        async def handler(method: str, payload: bytes) -> bytes:
            arrived.set()
            return payload

        server = StreamServer(handler, SECRET)
        client = StreamClient(await server.start(), SECRET)
        assert await client.start("warm", b"", 2.0) == (True, b"")  # connects
        arrived.clear()
        pending = client.start("now", b"x", 2.0)  # not awaited yet
        await asyncio.wait_for(arrived.wait(), 2.0)  # ... and yet the server got it
        assert await pending == (True, b"x")
        await client.close()
        await server.close()

    run(main)


def test_many_calls_multiplexed_on_one_connection_with_replies_out_of_order() -> None:
    async def main() -> None:
        order: list[int] = []

        async def handler(method: str, payload: bytes) -> bytes:
            i = int(payload)
            await asyncio.sleep((200 - i) * 0.0005)  # later requests answer first
            order.append(i)
            return b"%d" % (i * i)

        server = StreamServer(handler, SECRET)
        client = StreamClient(await server.start(), SECRET)
        results = await asyncio.gather(*(client.start("sq", b"%d" % i, 5.0) for i in range(200)))
        assert results == [(True, b"%d" % (i * i)) for i in range(200)]
        assert order != sorted(order) and sorted(order) == list(range(200))
        assert server.stats()["accepted"] == 1 and client.stats()["connects"] == 1
        assert client.stats()["pending"] == 0
        await client.close()
        await server.close()

    run(main)


def test_a_connection_runs_at_most_max_in_flight_requests_and_the_rest_wait_in_tcp() -> None:
    async def main() -> None:
        release = asyncio.Event()

        async def gated(method: str, payload: bytes) -> bytes:
            await release.wait()
            return payload

        server = StreamServer(gated, SECRET, max_in_flight=3)
        client = StreamClient(await server.start(), SECRET)
        calls = [asyncio.ensure_future(client.start("g", b"%d" % i, 5.0)) for i in range(10)]
        await until(lambda: server.stats()["requests_running"] == 3)
        await asyncio.sleep(0.05)  # give the server every chance to read more: it must not
        assert server.stats()["requests_running"] == 3 and server.stats()["frames_in"] == 3
        release.set()
        assert await asyncio.gather(*calls) == [(True, b"%d" % i) for i in range(10)]
        await client.close()
        await server.close()

    run(main)


def test_replies_to_a_client_that_does_not_read_wait_in_drain_not_in_memory() -> None:
    async def main() -> None:
        from actors.stream_auth import client_handshake
        from actors.stream_frames import REPLY, REQUEST, encode_frame, read_frame

        big = b"r" * (1024 * 1024)  # 40 MiB in all: more than loopback socket buffers hold

        async def handler(method: str, payload: bytes) -> bytes:
            return big

        server = StreamServer(handler, SECRET)
        reader, writer = await asyncio.open_connection(*await server.start())
        await client_handshake(reader, writer, SECRET, 2.0)
        writer.write(b"".join(encode_frame(i, REQUEST, "m", b"") for i in range(40)))
        await until(lambda: server.stats()["frames_in"] == 40)
        await asyncio.sleep(0.1)  # the handlers are done at once; the replies cannot all leave
        assert server.stats()["requests_running"] > 0  # waiting in drain() before writing
        (server_writer,) = server._connections.values()
        assert server_writer.transport.get_write_buffer_size() <= len(big) + 64 * 1024 + 100
        frames = [await read_frame(reader, 2 << 20) for _ in range(40)]
        assert sorted(f.request_id for f in frames) == list(range(40))
        assert all(f.kind == REPLY and f.payload == big for f in frames)
        await until(lambda: server.stats()["requests_running"] == 0)
        writer.close()
        await server.close()

    run(main)


def test_a_handler_exception_or_refusal_is_no_answer_and_the_server_lives(
        caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async def handler(method: str, payload: bytes) -> bytes | None:
            if method == "boom":
                raise ValueError("handler bug")
            if method == "unknown":
                return None
            if method == "not-bytes":
                return "a str"  # type: ignore[return-value]
            return payload

        server = StreamServer(handler, SECRET, label="s")
        client = StreamClient(await server.start(), SECRET)
        for method in ("boom", "unknown", "not-bytes"):
            assert await client.start(method, b"x", 2.0) == (False, None)
            assert await client.start("ok", b"y", 2.0) == (True, b"y")
        stats = server.stats()
        assert stats["handler_errors"] == 2 and stats["no_answer"] == 3 and stats["accepted"] == 1
        assert client.stats()["no_answer"] == 3 and client.connected
        await client.close()
        await server.close()

    run(main)
    assert any("handler for 'boom' raised" in r.getMessage() and r.exc_info for r in caplog.records)


def test_the_server_closing_fails_every_pending_call_at_once() -> None:
    async def main() -> None:
        async def never(method: str, payload: bytes) -> bytes:
            await asyncio.Event().wait()
            return b""

        server = StreamServer(never, SECRET, close_grace_s=0.2)
        client = StreamClient(await server.start(), SECRET)
        calls = [asyncio.ensure_future(client.start("wait", b"%d" % i, 20.0)) for i in range(50)]
        await until(lambda: server.stats()["requests_running"] == 50)
        t0 = time.monotonic()
        closing = asyncio.ensure_future(server.close())
        assert await asyncio.gather(*calls) == [(False, None)] * 50
        assert time.monotonic() - t0 < 2.0  # at once, not at the 20 s timeout
        await closing
        assert server.stats()["requests_running"] == 0  # cancelled after the grace period
        assert client.stats()["pending"] == 0 and not client.connected
        assert await client.start("again", b"", 1.0) == (False, None)  # nobody listens: fails, never raises
        await client.close()

    run(main)


def test_the_client_reconnects_after_the_server_restarts_on_the_same_port() -> None:
    async def main() -> None:
        first = StreamServer(echo, SECRET)
        address = await first.start()
        client = StreamClient(address, SECRET, connect_timeout_s=0.5)
        assert await client.start("a", b"1", 2.0) == (True, b"a:1")
        await first.close()
        await until(lambda: not client.connected)
        assert await client.start("a", b"2", 2.0) == (False, None)
        second = StreamServer(echo, SECRET, port=address[1])
        assert await second.start() == address
        assert await client.start("a", b"3", 2.0) == (True, b"a:3")  # the next call reconnects
        assert client.stats()["connects"] == 2 and client.stats()["connect_failures"] == 1
        await client.close()
        await second.close()

    run(main)


def test_concurrent_calls_share_one_connection_attempt() -> None:
    async def main() -> None:
        server = StreamServer(echo, SECRET)
        client = StreamClient(await server.start(), SECRET)
        results = await asyncio.gather(*(client.start("c", b"%d" % i, 2.0) for i in range(50)))
        assert results == [(True, b"c:%d" % i) for i in range(50)]
        assert server.stats()["accepted"] == 1 and client.stats()["connects"] == 1
        await client.close()
        await server.close()

    run(main)


def test_set_address_moves_the_client_and_fails_calls_pending_on_the_old_one() -> None:
    async def main() -> None:
        hold = asyncio.Event()

        async def old(method: str, payload: bytes) -> bytes:
            await hold.wait()
            return b"old"

        async def new(method: str, payload: bytes) -> bytes:
            return b"new"

        a, b = StreamServer(old, SECRET, close_grace_s=0.1), StreamServer(new, SECRET)
        address_a, address_b = await a.start(), await b.start()
        client = StreamClient(address_a, SECRET)
        stuck = asyncio.ensure_future(client.start("x", b"", 20.0))
        await until(lambda: a.stats()["requests_running"] == 1)
        client.set_address(address_a)  # the same address: nothing happens
        assert client.connected and not stuck.done()
        client.set_address(address_b)
        assert await asyncio.wait_for(stuck, 2.0) == (False, None)  # at once, not at 20 s
        assert client.address == address_b
        assert await client.start("x", b"", 2.0) == (True, b"new")
        hold.set()
        await client.close()
        await a.close()
        await b.close()

    run(main)


def test_a_call_times_out_and_its_late_reply_is_discarded() -> None:
    async def main() -> None:
        async def slow(method: str, payload: bytes) -> bytes:
            await asyncio.sleep(float(payload))
            return payload

        server = StreamServer(slow, SECRET)
        client = StreamClient(await server.start(), SECRET)
        assert await client.start("s", b"0", 2.0) == (True, b"0")
        t0 = time.monotonic()
        late = client.start("s", b"0.3", 0.1)
        assert await client.start("s", b"0", 2.0) == (True, b"0")  # the connection is seen alive meanwhile
        assert await late == (False, None)
        assert 0.09 < time.monotonic() - t0 < 1.5
        assert client.stats()["timeouts"] == 1 and client.stats()["pending"] == 0
        await until(lambda: client.stats()["late_replies"] == 1)  # arrived, discarded
        assert client.connected and client.stats()["connects"] == 1
        await client.close()
        await server.close()

    run(main)


def test_the_timeout_runs_from_start_and_cleans_up_a_call_nobody_awaits() -> None:
    async def main() -> None:
        async def slow(method: str, payload: bytes) -> bytes:
            await asyncio.sleep(0.2)
            return payload

        server = StreamServer(slow, SECRET)
        client = StreamClient(await server.start(), SECRET)
        assert await client.start("s", b"warm", 2.0) == (True, b"warm")
        forgotten = client.start("s", b"x", 0.05)
        forgotten.close()  # never awaited
        await until(lambda: client.stats()["pending"] == 0 and client.stats()["timeouts"] == 1)
        pending = client.start("s", b"y", 0.05)
        await asyncio.sleep(0.1)  # the caller comes back after the deadline: the clock ran from start()
        assert await pending == (False, None)
        await client.close()
        await server.close()

    run(main)


def test_a_call_that_times_out_on_a_silent_connection_drops_it() -> None:
    """A peer that stops answering without closing (a crashed host sends no FIN): the connection is
    dropped at the first timeout with nothing received, and the next call connects afresh."""

    async def main() -> None:
        stalled = asyncio.Event()

        async def handler(method: str, payload: bytes) -> bytes:
            if method == "stall":
                await stalled.wait()
            return payload

        server = StreamServer(handler, SECRET, close_grace_s=0.1)
        client = StreamClient(await server.start(), SECRET)
        assert await client.start("ok", b"1", 2.0) == (True, b"1")
        other = asyncio.ensure_future(client.start("stall", b"2", 5.0))
        assert await client.start("stall", b"3", 0.1) == (False, None)
        assert client.stats()["silent_drops"] == 1 and not client.connected
        assert await other == (False, None)  # failed with its connection, not at its 5 s timeout
        assert await client.start("ok", b"4", 2.0) == (True, b"4")
        assert client.stats()["connects"] == 2
        stalled.set()
        await client.close()
        await server.close()

    run(main)


def test_unreachable_addresses_oversized_requests_and_a_closed_client_fail_without_raising() -> None:
    async def main() -> None:
        server = StreamServer(echo, SECRET)
        address = await server.start()
        await server.close()  # nobody listens there now
        client = StreamClient(address, SECRET)
        assert await client.start("x", b"", 1.0) == (False, None)
        await client.close()
        blackhole = StreamClient(("10.255.255.1", 9), SECRET, connect_timeout_s=0.1)  # unroutable
        t0 = time.monotonic()
        assert await blackhole.start("x", b"", 10.0) == (False, None)
        assert time.monotonic() - t0 < 3.0  # the 0.1 s connect timeout, not the call's 10 s
        await blackhole.close()

        server = StreamServer(echo, SECRET, max_frame=1024)
        client = StreamClient(await server.start(), SECRET, max_frame=1024)
        assert await client.start("x", b"y" * 2000, 1.0) == (False, None)  # never sent
        assert client.stats()["oversized"] == 1 and server.stats()["frames_in"] == 0
        assert await client.start("x", b"y", 1.0) == (True, b"x:y")
        pending = asyncio.ensure_future(client.start("x", b"", 5.0))
        await client.close()
        assert await pending in ((False, None), (True, b"x:"))
        assert await client.start("x", b"y", 1.0) == (False, None)
        await server.close()
        with pytest.raises(ValueError, match="host, port"):
            StreamClient(("h", 0), SECRET)
        with pytest.raises(ValueError, match="too short"):
            StreamClient(("h", 1), b"short")

    run(main)


def test_closing_the_client_fails_pending_calls_at_once(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async def never(method: str, payload: bytes) -> bytes:
            await asyncio.Event().wait()
            return b""

        server = StreamServer(never, SECRET, close_grace_s=0.1)
        client = StreamClient(await server.start(), SECRET)
        calls = [asyncio.ensure_future(client.start("w", b"", 20.0)) for _ in range(10)]
        await until(lambda: server.stats()["requests_running"] == 10)
        t0 = time.monotonic()
        await client.close()
        assert await asyncio.gather(*calls) == [(False, None)] * 10 and time.monotonic() - t0 < 2.0
        await until(lambda: server.stats()["open"] == 0)
        await server.close()

    caplog.set_level(logging.DEBUG, logger="raykv.stream")
    run(main)
    assert any("10 pending calls failed" in r.getMessage() for r in caplog.records)


def test_a_cut_destination_fails_after_a_short_delay_and_heals() -> None:
    async def main() -> None:
        served: list[bytes] = []

        async def handler(method: str, payload: bytes) -> bytes:
            served.append(payload)
            return payload

        server = StreamServer(handler, SECRET)
        faults = StreamFaults(7, cut={"peer-2"})
        client = StreamClient(await server.start(), SECRET, label="peer-2", faults=faults)
        t0 = time.monotonic()
        outcomes = await asyncio.gather(*(client.start("m", b"%d" % i, 2.0) for i in range(20)))
        assert outcomes == [(False, None)] * 20 and served == []
        assert 0.03 < time.monotonic() - t0 < 1.5  # after 0-100 ms each (the longest of 20)
        faults.configure(cut=())
        assert await client.start("m", b"back", 2.0) == (True, b"back")
        await client.close()
        await server.close()

    run(main)


CALLS = 80


def unreliable_run(seed: int) -> tuple[list[bool], list[bytes], dict[str, int]]:
    served: list[bytes] = []

    async def main() -> tuple[list[bool], dict[str, int]]:
        async def handler(method: str, payload: bytes) -> bytes:
            served.append(payload)
            return payload

        server = StreamServer(handler, SECRET)
        faults = StreamFaults(seed, reliable=False)
        client = StreamClient(await server.start(), SECRET, label="d", faults=faults)
        ok = []
        for i in range(CALLS):  # one at a time: the sequence of decisions is the sequence of calls
            success, reply = await client.start("m", b"%d" % i, 2.0)
            assert reply == (b"%d" % i if success else None)
            ok.append(success)
        stats = client.stats()
        await client.close()
        await server.close()
        return ok, stats

    ok, stats = asyncio.run(main())
    return ok, served, stats


def test_an_unreliable_hook_drops_requests_and_replies_the_same_way_for_the_same_seed() -> None:
    ok, served, stats = unreliable_run(11)
    assert (ok, served) == unreliable_run(11)[:2]
    assert ok != unreliable_run(12)[0]
    assert stats["dropped_requests"] > 0 and stats["dropped_replies"] > 0
    assert len(served) == CALLS - stats["dropped_requests"]  # a dropped request never reaches the server
    assert ok.count(False) == stats["dropped_requests"] + stats["dropped_replies"]
    assert 0.08 < ok.count(False) / CALLS < 0.35


def test_long_reordering_holds_replies_back_so_they_overtake_each_other() -> None:
    async def main() -> None:
        server = StreamServer(echo, SECRET)
        client = StreamClient(await server.start(), SECRET, faults=StreamFaults(3, long_reordering=True))
        await client.start("warm", b"", 3.0)
        finished: list[int] = []

        async def one(i: int) -> None:
            assert await client.start("m", b"%d" % i, 3.0) == (True, b"m:%d" % i)
            finished.append(i)

        t0 = time.monotonic()
        await asyncio.gather(*(one(i) for i in range(12)))
        assert finished != sorted(finished) and time.monotonic() - t0 > 0.2
        await client.close()
        await server.close()

    run(main)


def test_blocking_callers_share_the_background_loop() -> None:
    async def setup() -> tuple[StreamServer, StreamClient]:
        server = StreamServer(echo, SECRET)
        return server, StreamClient(await server.start(), SECRET)

    server, client = stream_loop.run_blocking(setup, 5.0)
    results: list[tuple[bool, bytes | None]] = []

    def caller(i: int) -> None:
        for j in range(20):
            payload = b"%d.%d" % (i, j)
            results.append(stream_loop.run_blocking(lambda p=payload: client.start("b", p, 2.0), 5.0))

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == sorted((True, b"b:%d.%d" % (i, j)) for i in range(8) for j in range(20))
    assert client.stats()["connects"] == 1
    stream_loop.run_blocking(client.close, 5.0)
    stream_loop.run_blocking(server.close, 5.0)


def test_a_client_outlives_a_closed_loop_but_refuses_a_second_running_one() -> None:
    """A client connected under one ``asyncio.run`` starts afresh under the next; used from another
    running loop while its own still runs, it says so instead of mixing loops."""
    port: list[int] = []

    def serve() -> None:
        async def main() -> None:
            server = StreamServer(echo, SECRET)
            port.append((await server.start())[1])
            while port[-1] != 0:
                await asyncio.sleep(0.01)
            await server.close()

        asyncio.run(main())

    thread = threading.Thread(target=serve)
    thread.start()
    deadline = time.monotonic() + 5
    while not port:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    client = StreamClient(("127.0.0.1", port[0]), SECRET)

    async def call() -> tuple[bool, bytes | None]:
        return await client.start("m", b"x", 2.0)

    assert asyncio.run(call()) == (True, b"m:x")
    assert asyncio.run(call()) == (True, b"m:x")  # the first loop is closed: a new connection
    asyncio.run(client.close())  # closing under a new loop forgets the old connection
    client = StreamClient(("127.0.0.1", port[0]), SECRET)
    assert asyncio.run(call()) == (True, b"m:x")

    async def from_a_second_loop() -> None:
        assert await client.start("m", b"y", 2.0) == (True, b"m:y")
        with pytest.raises(RuntimeError, match="second event loop"):
            stream_loop.run_blocking(call, 2.0)
        await client.close()

    asyncio.run(from_a_second_loop())
    assert client.stats()["connects"] == 2
    port.append(0)
    thread.join(5)


def test_default_limit_and_validation() -> None:
    assert MAX_FRAME_BYTES == 64 * 1024 * 1024
    with pytest.raises(ValueError, match="handshake_timeout_s"):
        StreamServer(echo, SECRET, handshake_timeout_s=0)
    with pytest.raises(ValueError, match="bytes"):
        StreamServer(echo, "not bytes")  # type: ignore[arg-type]


def test_a_reader_collected_after_its_loop_was_closed_raises_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A loop closed with a connection still up (an actor's loop at shutdown, a notebook's loop) leaves the
    reader task pending; when it is garbage-collected its coroutine is closed outside any running loop,
    and ending the connection must then raise nothing (it used to: "Event loop is closed")."""
    unraisable: list[object] = []
    monkeypatch.setattr("sys.unraisablehook", unraisable.append)
    server_loop = asyncio.new_event_loop()
    server = StreamServer(echo, SECRET)
    address = server_loop.run_until_complete(server.start())
    server_thread = threading.Thread(target=server_loop.run_forever)
    server_thread.start()
    try:
        _call_then_close_the_loop(address)
        gc.collect()
        assert unraisable == []
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), server_loop).result(5)
        server_loop.call_soon_threadsafe(server_loop.stop)
        server_thread.join(5)
        server_loop.close()


def _call_then_close_the_loop(address: tuple[str, int]) -> None:
    """One call on a fresh loop, then close the loop with the connection up (its locals die on return)."""
    client = StreamClient(address, SECRET)

    async def call() -> tuple[bool, bytes | None]:
        return await client.start("m", b"x", 2.0)

    loop = asyncio.new_event_loop()
    assert loop.run_until_complete(call()) == (True, b"m:x")
    loop.close()  # the reader task is still pending: nothing cancelled it
