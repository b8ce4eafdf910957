"""The stream layer's pure parts, without sockets or Ray: frames, the fault hook, the blocking loop helper."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import struct
import sys
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.stream_faults import StreamFaults
from actors.stream_frames import (
    MAX_FRAME_BYTES,
    NO_ANSWER,
    REPLY,
    REQUEST,
    SMALL_FRAME_BYTES,
    ConnectionClosed,
    Frame,
    FrameError,
    body_size,
    encode_frame,
    read_frame,
)

pytestmark = pytest.mark.timeout(30)


def decode(data: bytes, max_frame: int = MAX_FRAME_BYTES, eof: bool = True) -> Frame:
    """``read_frame`` over a reader that holds ``data`` (then the end of the stream, if ``eof``)."""

    async def main() -> Frame:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        if eof:
            reader.feed_eof()
        return await read_frame(reader, max_frame)

    return asyncio.run(main())


def frame_error(data: bytes, max_frame: int = MAX_FRAME_BYTES) -> FrameError:
    with pytest.raises(FrameError) as e:
        decode(data, max_frame)
    return e.value


# -- frames ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("payload_size", [0, 1, 100, SMALL_FRAME_BYTES - 20, SMALL_FRAME_BYTES + 1,
                                          3_000_000])
@pytest.mark.parametrize("kind,method", [(REQUEST, "deliver"), (REPLY, ""), (NO_ANSWER, ""),
                                         (REQUEST, "kv€")])
def test_a_frame_decodes_to_what_was_encoded(payload_size: int, kind: int, method: str) -> None:
    payload = random.Random(payload_size).randbytes(payload_size)
    data = encode_frame(2**64 - 1, kind, method, payload)
    assert len(data) == 4 + body_size(method, payload)
    assert struct.unpack(">I", data[:4])[0] == body_size(method, payload)
    assert decode(data) == Frame(2**64 - 1, kind, method, payload)


def test_frames_follow_each_other_and_a_clean_end_is_connection_closed() -> None:
    async def main() -> list[Frame]:
        reader = asyncio.StreamReader()
        frames = [encode_frame(i, REQUEST, "m", bytes([i]) * i) for i in range(1, 4)]
        reader.feed_data(b"".join(frames))
        reader.feed_eof()
        out = [await read_frame(reader, 1024) for _ in range(3)]
        with pytest.raises(ConnectionClosed):
            await read_frame(reader, 1024)
        return out

    frames = asyncio.run(main())
    assert [(f.request_id, f.payload) for f in frames] == [(1, b"\1"), (2, b"\2\2"), (3, b"\3" * 3)]


def test_a_length_over_the_limit_is_refused_before_the_body_is_read() -> None:
    # only the 4-byte prefix is there: the reader must refuse it without waiting for the body
    async def main() -> FrameError:
        reader = asyncio.StreamReader()
        reader.feed_data(struct.pack(">I", 1025))  # no EOF: waiting for the body would hang
        with pytest.raises(FrameError) as e:
            await asyncio.wait_for(read_frame(reader, 1024), 1.0)
        return e.value

    e = asyncio.run(main())
    assert e.key == "oversized" and "1,025 bytes is over the limit of 1,024" in e.reason
    assert frame_error(encode_frame(1, REQUEST, "m", b"x" * 2000), 1024).key == "oversized"
    assert decode(encode_frame(1, REQUEST, "m", b"x" * (1024 - 12)), 1024).payload == b"x" * 1012


def test_malformed_frames_are_frame_errors_with_a_reason() -> None:
    good = encode_frame(7, REQUEST, "abc", b"payload")
    # unknown kind
    bad_kind = good[:12] + bytes([9]) + good[13:]
    assert "unknown frame kind 9" in frame_error(bad_kind).reason
    # a method length that overruns the body
    overrun = good[:13] + struct.pack(">H", 500) + good[15:]
    assert "overruns" in frame_error(overrun).reason
    # a method name that is not UTF-8
    not_utf8 = encode_frame(7, REQUEST, "abc", b"")[:15] + b"\xff\xfe\xfd"
    assert "not UTF-8" in frame_error(not_utf8).reason
    # a body shorter than the fixed header
    assert "shorter than the 11-byte" in frame_error(struct.pack(">I", 5) + b"12345").reason
    # the same checks hold for frames read in parts (over SMALL_FRAME_BYTES)
    big = encode_frame(7, REQUEST, "abc", b"x" * (SMALL_FRAME_BYTES + 10))
    assert "unknown frame kind 0" in frame_error(big[:12] + bytes([0]) + big[13:]).reason
    assert "not UTF-8" in frame_error(big[:15] + b"\xff" + big[16:]).reason


@pytest.mark.parametrize("cut", [1, 3, 4, 10, 15, 20])
def test_a_stream_that_ends_inside_a_frame_is_truncated(cut: int) -> None:
    data = encode_frame(1, REQUEST, "method", b"0123456789")
    e = frame_error(data[:cut])
    assert e.key == "truncated" and "ended inside" in e.reason


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**64 - 1), st.sampled_from([REQUEST, REPLY, NO_ANSWER]),
                          st.text(max_size=12), st.binary(max_size=300)), min_size=1, max_size=8),
       st.lists(st.integers(1, 97), min_size=1, max_size=30))
def test_frames_decode_the_same_however_tcp_splits_the_stream(
        frames: list[tuple[int, int, str, bytes]], cuts: list[int]) -> None:
    data = b"".join(encode_frame(*f) for f in frames)

    async def main() -> list[Frame]:
        reader = asyncio.StreamReader()

        async def feed() -> None:  # the bytes arrive in arbitrary pieces, with the reader waiting between
            i, k = 0, 0
            while i < len(data):
                n = cuts[k % len(cuts)]
                reader.feed_data(data[i:i + n])
                i, k = i + n, k + 1
                await asyncio.sleep(0)
            reader.feed_eof()

        feeder = asyncio.ensure_future(feed())
        out = [await read_frame(reader, 1024) for _ in frames]
        with pytest.raises(ConnectionClosed):
            await read_frame(reader, 1024)
        await feeder
        return out

    assert asyncio.run(main()) == [Frame(*f) for f in frames]


def test_encode_refuses_the_callers_mistakes() -> None:
    with pytest.raises(ValueError, match="request id"):
        encode_frame(-1, REQUEST, "m", b"")
    with pytest.raises(ValueError, match="request id"):
        encode_frame(2**64, REQUEST, "m", b"")
    with pytest.raises(ValueError, match="unknown frame kind"):
        encode_frame(1, 0, "m", b"")
    with pytest.raises(ValueError, match="65,535-byte limit"):
        encode_frame(1, REQUEST, "m" * 70_000, b"")


def test_random_bytes_never_escape_as_anything_but_frame_errors() -> None:
    rng = random.Random(14)
    for _ in range(300):
        data = rng.randbytes(rng.randrange(1, 64))
        with contextlib.suppress(FrameError, ConnectionClosed):
            decode(data, 1024)


# -- the fault hook -------------------------------------------------------------------------------------


def decisions(faults: StreamFaults, n: int = 400) -> list[tuple[bool, float]]:
    out = []
    for i in range(n):
        out.append(faults.on_request(f"d{i % 3}"))
        out.append(faults.on_reply())
    return out


def test_faults_are_deterministic_per_seed() -> None:
    a = decisions(StreamFaults(5, reliable=False, long_reordering=True, cut={"d2"}))
    b = decisions(StreamFaults(5, reliable=False, long_reordering=True, cut={"d2"}))
    c = decisions(StreamFaults(6, reliable=False, long_reordering=True, cut={"d2"}))
    assert a == b and a != c


def test_reliable_faults_change_nothing() -> None:
    assert set(decisions(StreamFaults(1))) == {(False, 0.0)}


def test_unreliable_faults_have_labrpcs_shape() -> None:
    f = StreamFaults(3, reliable=False)
    requests = [f.on_request("x") for _ in range(20_000)]
    replies = [f.on_reply() for _ in range(20_000)]
    assert 0.08 < sum(d for d, _ in requests) / len(requests) < 0.12
    assert 0.08 < sum(d for d, _ in replies) / len(replies) < 0.12
    assert {round(s * 1000) for _, s in requests} == set(range(27))  # 0-26 ms before every request
    assert {s for _, s in replies} == {0.0}
    assert f.counts["requests_dropped"] == sum(d for d, _ in requests)


def test_a_cut_destination_fails_after_a_short_or_a_long_delay() -> None:
    f = StreamFaults(4, cut={"b"})
    short = [f.on_request("b") for _ in range(2000)]
    assert all(drop for drop, _ in short) and max(s for _, s in short) < 0.1 and min(s for _, s in short) == 0
    assert f.on_request("a") == (False, 0.0)
    f.configure(long_delays=True)
    long = [f.on_request("b")[1] for _ in range(2000)]
    assert max(long) > 5 and max(long) < 7
    f.configure(cut=())
    assert f.on_request("b") == (False, 0.0)


def test_long_reordering_holds_two_thirds_of_replies_200_to_2200_ms() -> None:
    f = StreamFaults(8, long_reordering=True)
    delays = [f.on_reply()[1] for _ in range(9000)]
    held = [d for d in delays if d > 0]
    assert 0.62 < len(held) / len(delays) < 0.71
    assert min(held) >= 0.2 and max(held) <= 2.2


def test_configure_refuses_unknown_fields_and_wrong_types() -> None:
    f = StreamFaults(1)
    with pytest.raises(TypeError, match="unknown field"):
        f.configure(unreliable=True)
    with pytest.raises(TypeError, match="True or False"):
        f.configure(reliable=1)
    with pytest.raises(TypeError, match="labels"):
        f.configure(cut="abc")
    f.configure(reliable=False, cut=["x"])
    assert f.config() == {"reliable": False, "long_reordering": False, "long_delays": False, "cut": ["x"]}
    assert StreamFaults(1, **f.config()).config() == f.config()


# -- the blocking loop helper ----------------------------------------------------------------------------


def test_run_blocking_runs_on_one_background_loop() -> None:
    from actors import stream_loop

    async def where() -> tuple[int, asyncio.AbstractEventLoop]:
        await asyncio.sleep(0.001)
        return threading.get_ident(), asyncio.get_running_loop()

    a = stream_loop.run_blocking(where, 5.0)
    b = stream_loop.run_blocking(where, 5.0)
    assert a == b and a[0] != threading.get_ident() and a[1] is stream_loop.get_loop()
    results: list[int] = []

    def call(i: int) -> None:
        async def echo() -> int:
            await asyncio.sleep(0.01)
            return i

        results.append(stream_loop.run_blocking(echo, 5.0))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(20))


def test_run_blocking_times_out_propagates_errors_and_refuses_its_own_thread() -> None:
    from actors import stream_loop

    cancelled = threading.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(TimeoutError, match=r"within 0\.05 s"):
        stream_loop.run_blocking(slow, 0.05)
    assert cancelled.wait(2.0)  # the coroutine was cancelled, not left running

    async def boom() -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError):
        stream_loop.run_blocking(boom, 1.0)

    async def nested() -> None:
        stream_loop.run_blocking(boom, 1.0)

    with pytest.raises(RuntimeError, match="own thread"):
        stream_loop.run_blocking(nested, 1.0)


def test_run_blocking_after_shutdown_and_in_a_forked_child() -> None:
    from actors import stream_loop

    async def answer() -> int:
        return 42

    first = stream_loop.get_loop()
    assert stream_loop.run_blocking(answer, 1.0) == 42
    stream_loop.shutdown()
    assert first.is_closed()
    assert stream_loop.run_blocking(answer, 1.0) == 42 and stream_loop.get_loop() is not first
    if sys.platform != "linux":
        return
    pid = os.fork()
    if pid == 0:  # the child: the parent's loop thread does not exist here; a fresh one must start
        code = 1
        try:
            code = 0 if stream_loop.run_blocking(answer, 2.0) == 42 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
