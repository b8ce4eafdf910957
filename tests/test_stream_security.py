"""Only holders of the service's secret reach a stream handler (issue 14, item 2), over real sockets.

Each attack below runs against a live :class:`StreamServer`; in every case the handler is never called,
the attacker's connection is closed with one WARNING line on ``raykv.stream`` naming its address and the
reason, and the server goes on serving a good client. Plain asyncio, no Ray.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import struct
import time
from collections.abc import Awaitable, Callable

import pytest

from actors.stream_auth import MAGIC, VERSION, AuthError, client_handshake, new_secret
from actors.stream_client import StreamClient
from actors.stream_frames import REPLY, REQUEST, encode_frame
from actors.stream_server import StreamServer

pytestmark = pytest.mark.timeout(30)

SECRET = new_secret()
HANDSHAKE_S = 0.3
LIMIT = 4096


class Service:
    """A server whose handler records every call it gets."""

    def __init__(self, handshake_timeout_s: float = HANDSHAKE_S) -> None:
        self.calls: list[tuple[str, bytes]] = []
        self.server = StreamServer(self.handle, SECRET, max_frame=LIMIT,
                                   handshake_timeout_s=handshake_timeout_s, label="victim")

    async def handle(self, method: str, payload: bytes) -> bytes:
        self.calls.append((method, payload))
        return b"ok:" + payload

    async def serves_a_good_client(self) -> None:
        """A client with the secret gets its answer (a fresh connection, then the same one again)."""
        assert self.server.address is not None
        client = StreamClient(self.server.address, SECRET, label="good")
        try:
            for i in range(2):
                assert await client.start("echo", b"good%d" % i, 2.0) == (True, b"ok:good%d" % i)
        finally:
            await client.close()
        assert self.calls[-2:] == [("echo", b"good0"), ("echo", b"good1")]
        self.calls.clear()


def attack(body: Callable[[Service, tuple[str, int]], Awaitable[None]],
           handshake_timeout_s: float = HANDSHAKE_S) -> Service:
    """Run ``body`` against a fresh service, then check a good client is served and nothing got in."""

    errors: list[dict[str, object]] = []

    async def main() -> Service:
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: errors.append(context))
        service = Service(handshake_timeout_s)
        address = await service.server.start()
        try:
            await body(service, address)
            assert service.calls == [], f"the handler was called: {service.calls}"
            await service.serves_a_good_client()
        finally:
            await service.server.close()
        gc.collect()  # a task that died with an unretrieved exception reports it when collected
        await asyncio.sleep(0)
        return service

    service = asyncio.run(main())
    assert errors == [], f"unhandled errors in the server's loop: {errors}"
    return service


async def closed_by_server(reader: asyncio.StreamReader, within_s: float = 2.0) -> bytes:
    """Everything the server sends until it closes the connection (which it must, within ``within_s``)."""
    data = b""
    deadline = time.monotonic() + within_s
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), max(0.01, deadline - time.monotonic()))
            if not chunk:
                return data
            data += chunk
    except ConnectionResetError:
        return data


async def authenticated(address: tuple[str, int]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw connection that passed the handshake with the right secret (then behaves as the test says)."""
    reader, writer = await asyncio.open_connection(*address)
    await client_handshake(reader, writer, SECRET, 2.0)
    return reader, writer


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "raykv.stream" and r.levelno == logging.WARNING and "victim" in r.getMessage()]


def test_a_client_with_the_wrong_secret_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    async def body(service: Service, address: tuple[str, int]) -> None:
        impostor = StreamClient(address, new_secret(), label="impostor")
        assert await impostor.start("echo", b"let me in", 2.0) == (False, None)
        assert not impostor.connected and impostor.stats()["connect_failures"] == 1
        await impostor.close()
        # the raw handshake says why
        reader, writer = await asyncio.open_connection(*address)
        with pytest.raises(AuthError, match="wrong secret"):
            await client_handshake(reader, writer, b"w" * 32, 2.0)
        writer.close()

    service = attack(body)
    assert service.server.stats()["refused"] == {"wrong_proof": 2}
    lines = refusals(caplog)
    assert len(lines) == 2 and all("refused 127.0.0.1:" in x and "wrong proof" in x for x in lines)


def test_a_client_that_never_answers_the_challenge_is_refused_at_the_timeout(
        caplog: pytest.LogCaptureFixture) -> None:
    async def body(service: Service, address: tuple[str, int]) -> None:
        reader, writer = await asyncio.open_connection(*address)
        t0 = time.monotonic()
        challenge = await closed_by_server(reader)
        waited = time.monotonic() - t0
        assert challenge[:len(MAGIC) + 1] == MAGIC + bytes((VERSION,)) and len(challenge) == 37
        assert HANDSHAKE_S * 0.9 <= waited < HANDSHAKE_S + 1.5
        writer.close()

    service = attack(body)
    assert service.server.stats()["refused"] == {"timeout": 1}
    assert any("no valid handshake within 0.3 s" in x for x in refusals(caplog))


def test_a_plain_client_sending_a_request_at_once_is_refused_at_its_first_bytes(
        caplog: pytest.LogCaptureFixture) -> None:
    async def body(service: Service, address: tuple[str, int]) -> None:
        reader, writer = await asyncio.open_connection(*address)
        writer.write(encode_frame(1, REQUEST, "echo", b"no secret at all"))
        await closed_by_server(reader)
        # refused at the bytes, not at the timeout: the counters below say bad_magic, not timeout
        writer.close()
        # a client that copies the magic and sends a made-up proof
        reader, writer = await asyncio.open_connection(*address)
        await reader.readexactly(37)
        writer.write(MAGIC + bytes((VERSION,)) + bytes(32) + bytes(32)
                     + encode_frame(1, REQUEST, "echo", b"x"))
        await closed_by_server(reader)
        writer.close()

    service = attack(body)
    assert service.server.stats()["refused"] == {"bad_magic": 1, "wrong_proof": 1}
    assert any("does not speak the raykv stream protocol" in x for x in refusals(caplog))


def test_a_client_of_another_protocol_version_is_refused() -> None:
    async def body(service: Service, address: tuple[str, int]) -> None:
        reader, writer = await asyncio.open_connection(*address)
        await reader.readexactly(37)
        writer.write(MAGIC + bytes((VERSION + 1,)) + bytes(64))
        await closed_by_server(reader)
        writer.close()

    assert attack(body).server.stats()["refused"] == {"bad_version": 1}


def test_an_oversized_frame_is_refused_before_its_body_is_read(caplog: pytest.LogCaptureFixture) -> None:
    async def body(service: Service, address: tuple[str, int]) -> None:
        # the length prefix alone, far over the limit: the server must not wait for (or buffer) a body
        reader, writer = await authenticated(address)
        writer.write(struct.pack(">I", 2**31))
        await closed_by_server(reader)  # closed without the body: the server does not wait for it
        writer.close()
        # a well-formed request one byte over the limit
        reader, writer = await authenticated(address)
        writer.write(encode_frame(1, REQUEST, "echo", b"x" * (LIMIT - 11 - 4 + 1)))
        await closed_by_server(reader)
        writer.close()

    service = attack(body)
    assert service.server.stats()["closed"]["oversized"] == 2
    lines = refusals(caplog)
    assert any("closed the connection from 127.0.0.1:" in x and "over the limit of 4,096 bytes" in x
               for x in lines)


def test_garbage_instead_of_the_handshake_is_refused() -> None:
    rng = random.Random(14)

    async def body(service: Service, address: tuple[str, int]) -> None:
        for _ in range(20):
            reader, writer = await asyncio.open_connection(*address)
            writer.write(rng.randbytes(rng.randrange(1, 300)))
            await closed_by_server(reader)
            writer.close()

    service = attack(body)
    stats = service.server.stats()
    assert sum(stats["refused"].values()) == 20 and stats["authenticated"] == 1  # the good client's


def test_garbage_after_the_handshake_closes_the_connection(caplog: pytest.LogCaptureFixture) -> None:
    rng = random.Random(15)

    async def body(service: Service, address: tuple[str, int]) -> None:
        for _ in range(20):
            reader, writer = await authenticated(address)
            writer.write(rng.randbytes(rng.randrange(20, 300)))
            writer.write_eof()
            await closed_by_server(reader)
            writer.close()
        # well-framed nonsense: an unknown kind, a method that is not UTF-8, a reply sent to the server
        good = encode_frame(3, REQUEST, "echo", b"x")
        for bad in (good[:12] + b"\x07" + good[13:], encode_frame(3, REQUEST, "ab", b"x")[:15] + b"\xff\xffx",
                    encode_frame(3, REPLY, "", b"x")):
            reader, writer = await authenticated(address)
            writer.write(bad)
            await closed_by_server(reader)
            writer.close()

    service = attack(body)
    closed = service.server.stats()["closed"]
    assert sum(closed.values()) - closed.get("eof", 0) == 23 and closed["unexpected_kind"] == 1
    assert sum("closed the connection from" in x for x in refusals(caplog)) == 23


def test_half_open_connections_are_closed_at_the_timeout_while_others_are_served(
        caplog: pytest.LogCaptureFixture) -> None:
    timeout_s = 1.0

    async def body(service: Service, address: tuple[str, int]) -> None:
        silent = [await asyncio.open_connection(*address) for _ in range(30)]
        try:
            t0 = time.monotonic()
            # while they hang, a good client is served at once
            await service.serves_a_good_client()
            assert time.monotonic() - t0 < timeout_s
            assert service.server.stats()["open"] >= 30
            await asyncio.gather(*(closed_by_server(r, timeout_s + 2.0) for r, _ in silent))
            assert timeout_s * 0.9 < time.monotonic() - t0 < timeout_s + 2.0
        finally:
            for _, w in silent:
                w.close()

    service = attack(body, timeout_s)
    stats = service.server.stats()
    assert stats["refused"] == {"timeout": 30} and stats["open"] == 0
    assert sum("no valid handshake within 1 s" in x for x in refusals(caplog)) == 30


def test_a_flood_of_unauthenticated_connections_is_capped() -> None:
    """Beyond ``max_handshakes`` connections in their handshake, new ones are refused at once (bounded
    memory under a flood); once the flood times out, a good client is served again."""

    async def main() -> None:
        calls: list[bytes] = []

        async def handler(method: str, payload: bytes) -> bytes:
            calls.append(payload)
            return payload

        server = StreamServer(handler, SECRET, handshake_timeout_s=0.5, max_handshakes=5, label="victim")
        address = await server.start()
        flood = [await asyncio.open_connection(*address) for _ in range(12)]
        try:
            await asyncio.gather(*(closed_by_server(r, 3.0) for r, _ in flood))
        finally:
            for _, w in flood:
                w.close()
        assert server.stats()["refused"] == {"too_many_handshakes": 7, "timeout": 5}
        client = StreamClient(address, SECRET)
        assert await client.start("m", b"ok", 2.0) == (True, b"ok") and calls == [b"ok"]
        await client.close()
        await server.close()

    asyncio.run(main())


def test_a_client_refuses_a_server_without_the_secret() -> None:
    """Mutual: a client that reached an impostor (another service, a reused port) sends it nothing."""

    async def main() -> None:
        seen: list[bytes] = []

        async def handler(method: str, payload: bytes) -> bytes:
            seen.append(payload)
            return b"fake"

        impostor = StreamServer(handler, new_secret(), label="impostor")
        address = await impostor.start()
        client = StreamClient(address, SECRET, label="careful")
        assert await client.start("echo", b"secret data", 2.0) == (False, None)
        await client.close()
        await impostor.close()
        assert seen == []

        writers: list[asyncio.StreamWriter] = []

        async def garbage_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.append(writer)
            writer.write(random.Random(1).randbytes(200))
            await writer.drain()

        listener = await asyncio.start_server(garbage_server, "127.0.0.1", 0)
        client = StreamClient(listener.sockets[0].getsockname()[:2], SECRET, connect_timeout_s=0.5)
        assert await client.start("echo", b"x", 2.0) == (False, None)
        await client.close()
        for w in writers:
            w.close()
        listener.close()
        await listener.wait_closed()

    asyncio.run(main())
