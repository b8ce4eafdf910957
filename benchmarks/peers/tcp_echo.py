"""The bare asyncio TCP round trip between two Python processes: the floor under a stream transport.

    async with echo_server_process() as address:          # a child process serving 127.0.0.1
        async with EchoClient(address) as client:
            await client.call(b"x" * 16)                   # one framed round trip

Frames are a 4-byte big-endian body length, then the body: an 8-byte request id and the payload
(the shape of the stream transport's frames without its method name and handshake). The server
echoes every frame unchanged, in order; the client keeps one connection, writes each request as soon
as it is made and matches replies by request id, so any number of coroutines can have calls in
flight at once (as writers sharing one stream do).

Run as a script, this module is the server: it prints ``PORT <n>`` on stdout once listening and
exits when its standard input closes, so it dies with the driver that started it however the
driver ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import TypeVar

HEADER = struct.Struct(">IQ")  # body length (id + payload), request id
MAX_BODY = 1 << 20


async def _serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readexactly(HEADER.size)
            length, _ = HEADER.unpack(head)
            if not 8 <= length <= MAX_BODY:
                return
            writer.write(head + await reader.readexactly(length - 8))
    except (asyncio.IncompleteReadError, ConnectionError):
        return
    finally:
        writer.close()


async def _serve_until_stdin_closes() -> None:
    server = await asyncio.start_server(_serve_connection, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.buffer.read)  # returns at EOF
    server.close()


@contextlib.asynccontextmanager
async def echo_server_process() -> AsyncIterator[tuple[str, int]]:
    """Start the echo server in a child Python process; yields its address; stops it on exit."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(Path(__file__).resolve()), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None and proc.stdin is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        if not line.startswith(b"PORT "):
            raise RuntimeError(f"the echo server process did not start (it printed {line!r})")
        yield "127.0.0.1", int(line.split()[1])
    finally:
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()


_Client = TypeVar("_Client", bound="FramedClient")


class FramedClient:
    """One connection speaking this module's framing (``HEADER``: body length, request id; then the
    body): requests are multiplexed by id, so ``_request`` may be awaited by many coroutines at once.
    Use it with ``async with``; a lost connection fails every request still waiting. Subclasses give
    the request bodies a meaning (:class:`EchoClient` here, the PySyncObj front's client)."""

    #: what the connection is to, for the error of a lost connection
    peer = "framed"

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[bytes]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None

    async def __aenter__(self: _Client) -> _Client:
        reader, self._writer = await asyncio.open_connection(*self.address)
        self._reader_task = asyncio.create_task(self._read_replies(reader))
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task

    async def _read_replies(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                length, rid = HEADER.unpack(await reader.readexactly(HEADER.size))
                payload = await reader.readexactly(length - 8)
                fut = self._pending.pop(rid, None)
                if fut is not None and not fut.done():
                    fut.set_result(payload)
        except (asyncio.IncompleteReadError, ConnectionError) as e:
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError(f"{self.peer} connection lost: {e!r}"))
            self._pending.clear()

    async def _request(self, body: bytes) -> bytes:
        """Send ``body`` as one request; the body of its reply."""
        if self._writer is None:
            raise RuntimeError(f"{type(self).__name__} used outside 'async with'")
        rid = self._next_id
        self._next_id += 1
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        self._writer.write(HEADER.pack(len(body) + 8, rid) + body)
        return await fut


class EchoClient(FramedClient):
    """One connection to an echo server; ``call`` may be awaited by many coroutines at once."""

    peer = "echo"

    async def call(self, payload: bytes) -> bytes:
        """Send ``payload`` and return the echoed copy."""
        return await self._request(payload)


if __name__ == "__main__":
    asyncio.run(_serve_until_stdin_closes())
