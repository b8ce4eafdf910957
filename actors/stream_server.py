"""The listening side of the stream transport: authenticated connections, one task per request.

A :class:`StreamServer` accepts TCP connections, runs the handshake of :mod:`actors.stream_auth` on
each, then reads request frames and answers each with the handler's reply (or ``NO_ANSWER``),
written as soon as it is ready: replies leave in the order they complete, matched by request id.

Invariants:

- A handler sees a request only from a connection that passed the handshake; a connection that fails
  it, goes silent during it (half-open), sends an oversized or malformed frame, or sends anything but
  a REQUEST is closed, with one WARNING line on logger ``raykv.stream`` naming the remote address and
  the reason, and counted in ``stats()["refused"]`` (before authentication) or ``["closed"]`` (after).
- A handler exception is logged and answered ``NO_ANSWER``; it never closes the connection or the
  server. No task of the server ends with an unhandled exception.
- Memory is bounded: at most ``max_handshakes`` connections are in their handshake at once (more are
  refused at once), a frame body is at most ``max_frame`` bytes (checked before it is read), a
  connection has at most ``max_in_flight`` requests running (beyond that the server stops reading it,
  so TCP pushes back on the client), and when the client reads slowly a reply waits for ``drain()``
  before it is written (one at a time), so at most the write buffer's high-water mark (64 KiB) plus one
  frame waits in memory per connection.
- Every task is tracked: connection tasks and request tasks are cancelled by :meth:`close`. A request
  whose connection drops is *not* interrupted (the work a peer asked for is done or not, exactly as
  with a Ray actor call whose caller went away); its reply is discarded.

Nothing here imports Ray.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from actors.stream_auth import AuthError, check_secret, server_handshake
from actors.stream_frames import (
    KIND_NAMES,
    MAX_FRAME_BYTES,
    NO_ANSWER,
    REPLY,
    REQUEST,
    ConnectionClosed,
    FrameError,
    body_size,
    encode_frame,
    read_frame,
)

log = logging.getLogger("raykv.stream")

Handler = Callable[[str, bytes], Awaitable[bytes | None]]
#: requests one connection may have running before the server stops reading it
MAX_IN_FLIGHT = 4096
#: the StreamReader buffer size of a connection (bigger than asyncio's 64 KiB: fewer pauses on big frames)
READ_BUFFER_BYTES = 1024 * 1024
#: connections that may be in their handshake at once (beyond that, new ones are refused at once)
MAX_HANDSHAKES = 256
#: how long :meth:`StreamServer.close` lets running handlers finish before cancelling them
CLOSE_GRACE_S = 1.0


def tune_socket(writer: asyncio.StreamWriter) -> None:
    """TCP_NODELAY (a frame goes out at once, not after Nagle's wait) and keepalive on a TCP socket."""
    sock = writer.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)


def peer_name(writer: asyncio.StreamWriter) -> str:
    """``host:port`` of the other end, for log lines."""
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


class StreamServer:
    """Serve ``handler(method, payload) -> reply | None`` to clients that hold ``secret``."""

    def __init__(self, handler: Handler, secret: bytes, *, host: str = "127.0.0.1", port: int = 0,
                 max_frame: int = MAX_FRAME_BYTES, handshake_timeout_s: float = 2.0, label: str = "",
                 max_in_flight: int = MAX_IN_FLIGHT, close_grace_s: float = CLOSE_GRACE_S,
                 max_handshakes: int = MAX_HANDSHAKES) -> None:
        if max_frame < 64:
            raise ValueError(f"max_frame={max_frame} is too small to carry a frame; use at least 64 bytes")
        if not handshake_timeout_s > 0:
            raise ValueError(f"handshake_timeout_s={handshake_timeout_s} must be a positive number of "
                             f"seconds")
        if max_in_flight < 1 or max_handshakes < 1:
            raise ValueError(f"max_in_flight={max_in_flight} and max_handshakes={max_handshakes} must be at "
                             f"least 1")
        self.handler = handler
        self.secret = check_secret(secret)
        self.host, self.port = host, port
        self.max_frame = max_frame
        self.handshake_timeout_s = handshake_timeout_s
        self.max_in_flight = max_in_flight
        self.close_grace_s = close_grace_s
        self.max_handshakes = max_handshakes
        self._handshaking: set[asyncio.Task[None]] = set()  # accepted, not yet authenticated or refused
        self.label = label
        self._server: asyncio.Server | None = None
        self._address: tuple[str, int] | None = None
        self._closing = False
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._requests: set[asyncio.Task[None]] = set()
        self._counts: Counter[str] = Counter()
        self._refused: Counter[str] = Counter()
        self._closed: Counter[str] = Counter()

    @property
    def address(self) -> tuple[str, int] | None:
        """The address actually bound (after :meth:`start`), else ``None``."""
        return self._address

    async def start(self) -> tuple[str, int]:
        """Listen; return ``(host, port)`` bound (the real port when ``port=0``). Idempotent."""
        if self._closing:
            raise RuntimeError(f"stream server {self.label!r} is closed; create a new one")
        if self._server is None:
            self._server = await asyncio.start_server(self._on_connect, self.host, self.port,
                                                      limit=READ_BUFFER_BYTES)
            host, port = self._server.sockets[0].getsockname()[:2]
            self._address = (host, port)
        assert self._address is not None
        return self._address

    async def close(self) -> None:
        """Stop listening, close every connection, let running handlers finish for up to
        ``close_grace_s`` (1 s), then cancel the rest. Idempotent."""
        if self._closing:
            return
        self._closing = True
        if self._server is not None:
            self._server.close()
        connections = dict(self._connections)
        for task in connections:
            task.cancel()
        if connections:
            await asyncio.gather(*connections, return_exceptions=True)
        for writer in connections.values():  # a task cancelled before its first step closed nothing
            writer.close()
        if self._requests:
            _, late = await asyncio.wait(set(self._requests), timeout=self.close_grace_s)
            for task in late:
                task.cancel()
            if late:
                await asyncio.gather(*late, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    def stats(self) -> dict[str, Any]:
        """Counters: connections accepted / authenticated / open, refused and closed by reason,
        frames in and out, handler errors, requests running."""
        return {**{k: self._counts[k] for k in ("accepted", "authenticated", "frames_in", "frames_out",
                                                "no_answer", "handler_errors")},
                "open": len(self._connections), "requests_running": len(self._requests),
                "refused": dict(self._refused), "closed": dict(self._closed)}

    def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """asyncio's accept callback: start the connection's task (ours, tracked, never failing)."""
        self._counts["accepted"] += 1
        if self._closing:
            writer.close()
            return
        if len(self._handshaking) >= self.max_handshakes:
            self._refused["too_many_handshakes"] += 1
            log.warning("stream server %s: refused %s: %d connections are already in their handshake (a "
                        "flood of unauthenticated connections?)", self._name(), peer_name(writer),
                        len(self._handshaking))
            writer.close()
            return
        task = asyncio.get_running_loop().create_task(self._serve_connection(reader, writer))
        self._connections[task] = writer
        self._handshaking.add(task)
        task.add_done_callback(self._forget_connection)

    def _forget_connection(self, task: asyncio.Task[None]) -> None:
        self._connections.pop(task, None)
        self._handshaking.discard(task)

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = peer_name(writer)
        in_flight = asyncio.Semaphore(self.max_in_flight)
        drain_lock = asyncio.Lock()  # one drain() at a time per connection (Python 3.10 allows no more)
        try:
            tune_socket(writer)
            try:
                await server_handshake(reader, writer, self.secret, self.handshake_timeout_s)
            except AuthError as e:
                self._refused[e.key] += 1
                log.warning("stream server %s: refused %s: %s", self._name(), peer, e.reason)
                return
            finally:
                self._handshaking.discard(asyncio.current_task())  # type: ignore[arg-type]
            self._counts["authenticated"] += 1
            while True:
                await in_flight.acquire()
                frame = await read_frame(reader, self.max_frame)
                self._counts["frames_in"] += 1
                if frame.kind != REQUEST:
                    raise FrameError(f"a client sent a {KIND_NAMES[frame.kind]} frame; only REQUEST frames "
                                     f"go from client to server", key="unexpected_kind")
                request = asyncio.create_task(self._answer(frame.request_id, frame.method, frame.payload,
                                                           writer, in_flight, drain_lock))
                self._requests.add(request)
                request.add_done_callback(self._requests.discard)
        except ConnectionClosed:
            self._closed["eof"] += 1
            log.debug("stream server %s: %s closed the connection", self._name(), peer)
        except FrameError as e:
            self._closed[e.key] += 1
            log.warning("stream server %s: closed the connection from %s: %s", self._name(), peer, e.reason)
        except OSError as e:
            self._closed["broken"] += 1
            log.warning("stream server %s: the connection from %s broke: %r", self._name(), peer, e)
        except asyncio.CancelledError:
            self._closed["server_closed"] += 1
            raise
        except Exception:  # a bug of ours: never let it escape the task
            self._closed["bug"] += 1
            log.exception("stream server %s: unexpected error on the connection from %s", self._name(), peer)
        finally:
            writer.close()

    async def _answer(self, request_id: int, method: str, payload: bytes, writer: asyncio.StreamWriter,
                      in_flight: asyncio.Semaphore, drain_lock: asyncio.Lock) -> None:
        """Run the handler for one request and write its reply; never raises (but may be cancelled)."""
        try:
            try:
                reply = await self.handler(method, payload)
            except asyncio.CancelledError:
                raise
            except Exception:
                self._counts["handler_errors"] += 1
                log.exception("stream server %s: handler for %r raised; answered NO_ANSWER",
                              self._name(), method)
                reply = None
            if reply is not None and not isinstance(reply, bytes | bytearray | memoryview):
                self._counts["handler_errors"] += 1
                log.error("stream server %s: handler for %r returned %s, not bytes; answered NO_ANSWER",
                          self._name(), method, type(reply).__name__)
                reply = None
            if reply is not None and body_size("", reply) > self.max_frame:
                log.warning("stream server %s: reply to %r of %d bytes is over the %d-byte frame limit; "
                            "answered NO_ANSWER", self._name(), method, len(reply), self.max_frame)
                reply = None
            if reply is None:
                self._counts["no_answer"] += 1
                frame = encode_frame(request_id, NO_ANSWER, "", b"")
            else:
                frame = encode_frame(request_id, REPLY, "", reply)
            transport = writer.transport
            high_water = transport.get_write_buffer_limits()[1]
            if drain_lock.locked() or transport.get_write_buffer_size() > high_water:
                # the client reads slower than we answer: wait for room *before* writing, one reply at a
                # time, so that at most the high-water mark plus one frame waits in memory
                async with drain_lock:
                    await writer.drain()
                    if writer.is_closing():
                        return
                    writer.write(frame)
            elif writer.is_closing():
                return  # the connection is gone: the reply has nowhere to go
            else:
                writer.write(frame)
            self._counts["frames_out"] += 1
        except OSError:
            pass  # the connection broke: its reader reports it
        finally:
            in_flight.release()

    def _name(self) -> str:
        where = f"{self._address[0]}:{self._address[1]}" if self._address else "(not started)"
        return f"{self.label} at {where}" if self.label else where
