"""The calling side of the stream transport: one persistent, authenticated connection per destination.

``client.start(method, payload, timeout_s)`` returns a coroutine whose outcome is ``(True, reply)``
or ``(False, None)``; network trouble (no connection, refused handshake, a connection lost with the
call in flight, a ``NO_ANSWER``, a timeout) is an outcome, never an exception.

Invariants:

- When the connection is up, the request frame is written inside :meth:`StreamClient.start` itself,
  before it returns (one ``write`` of the whole frame): a replica puts its AppendEntries on the wire
  before its own fsync. Otherwise the returned coroutine connects (handshake included), then sends.
  (A fault hook's delay, when one is installed, also defers the send to the coroutine.)
- Calls are multiplexed on the connection by request id; one reader task per connection resolves
  them in whatever order replies come back. No other task is created per call.
- Nothing outlives its connection: when a connection drops (EOF, broken socket, malformed frame,
  :meth:`set_address`, :meth:`close`), every call pending on it fails at once and its map is emptied;
  a call's entry is also removed when it is answered, times out or is cancelled.
- Memory is bounded: a request larger than ``max_frame`` fails at once (it would only get the
  connection closed by the server), and so does a request while more than ``max_buffered`` bytes
  (4 MiB) wait in the socket's write buffer, so at most that plus one frame ever waits there (a
  congested link loses messages, as any network does; Raft resends): the caller is never blocked by a
  slow peer.
- Every task (connection attempts, readers) is tracked and cancelled by :meth:`close`; none ends with
  an unhandled exception. A client belongs to the event loop it is first used on.
- Reconnection is lazy: the first call after a failure opens a new connection; concurrent calls
  share one attempt. A call that times out with nothing at all received on its connection since it
  was sent drops the connection (a crashed host sends no FIN: without this, calls would queue behind
  a silent socket until TCP gave up, minutes later).

Nothing here imports Ray.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Coroutine
from typing import Any

from actors.stream_auth import AuthError, check_secret, client_handshake
from actors.stream_faults import StreamFaults
from actors.stream_frames import (
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
from actors.stream_server import READ_BUFFER_BYTES, tune_socket

log = logging.getLogger("raykv.stream")

Outcome = tuple[bool, bytes | None]
#: a new request fails at once while more than this waits in the connection's write buffer
MAX_BUFFERED_BYTES = 4 * 1024 * 1024
_FAILED: Outcome = (False, None)


class _Connection:
    """One authenticated connection and the calls waiting on it (``pending``: request id -> future)."""

    __slots__ = ("address", "alive", "held", "last_rx", "loop", "pending", "reader", "reader_task", "writer")

    def __init__(self, address: tuple[str, int], reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, loop: asyncio.AbstractEventLoop) -> None:
        self.address = address
        self.reader = reader
        self.writer = writer
        self.loop = loop
        self.pending: dict[int, asyncio.Future[Outcome]] = {}
        self.held: set[asyncio.TimerHandle] = set()  # replies a fault hook is delaying
        self.reader_task: asyncio.Task[None] | None = None
        self.alive = True
        self.last_rx = loop.time()  # when the last frame arrived (or the connection was made)


class StreamClient:
    """Calls to one :class:`~actors.stream_server.StreamServer` over one connection, reconnecting lazily."""

    def __init__(self, address: tuple[str, int], secret: bytes, *, max_frame: int = MAX_FRAME_BYTES,
                 connect_timeout_s: float = 1.0, label: str = "", faults: StreamFaults | None = None,
                 max_buffered: int | None = None) -> None:
        if not connect_timeout_s > 0:
            raise ValueError(f"connect_timeout_s={connect_timeout_s} must be a positive number of seconds")
        self._address = _check_address(address)
        self.secret = check_secret(secret)
        self.max_frame = max_frame
        self.max_buffered = MAX_BUFFERED_BYTES if max_buffered is None else max_buffered
        self.connect_timeout_s = connect_timeout_s
        self.label = label
        self.faults = faults
        self._conn: _Connection | None = None
        self._connecting: asyncio.Task[_Connection | None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._next_id = 1
        self._closed = False
        self._counts: Counter[str] = Counter()
        self._last_failure: str | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self._address

    @property
    def connected(self) -> bool:
        """Whether an authenticated connection is up (a call would be written at once)."""
        return self._conn is not None and self._conn.alive and not self._conn.writer.is_closing()

    def stats(self) -> dict[str, int]:
        """Counters: calls, replies, no_answer, timeouts, failed (connection lost or refused), connects,
        connect_failures, late_replies, dropped_requests / dropped_replies (fault hook), oversized,
        congested, silent_drops (connections dropped because a call timed out with nothing received);
        ``pending``: calls waiting now."""
        keys = ("calls", "replies", "no_answer", "timeouts", "failed", "connects", "connect_failures",
                "late_replies", "dropped_requests", "dropped_replies", "oversized", "congested",
                "silent_drops")
        pending = len(self._conn.pending) if self._conn is not None else 0
        return {**{k: self._counts[k] for k in keys}, "pending": pending}

    def start(self, method: str, payload: bytes, timeout_s: float) -> Coroutine[Any, Any, Outcome]:
        """Issue the call now (written before this returns when connected); await the outcome.

        Must be called on the event loop the client runs on (a ``RuntimeError`` otherwise, unless that
        loop is closed: then the client starts afresh on this one). ``timeout_s`` bounds everything the
        call waits for: connecting, a fault hook's delay and the reply.
        """
        self._counts["calls"] += 1
        if self._closed:
            return _outcome(_FAILED)
        loop = asyncio.get_running_loop()
        if self._conn is not None and self._conn.loop is not loop:
            self._other_loop(self._conn.loop)
        size = body_size(method, payload)
        if size > self.max_frame:
            self._counts["oversized"] += 1
            log.warning("stream client %s: a %r request of %d bytes is over the %d-byte frame limit; "
                        "not sent", self._name(), method, size, self.max_frame)
            return _outcome(_FAILED)
        delay = 0.0
        if self.faults is not None:
            drop, delay = self.faults.on_request(self.label)
            if drop:
                self._counts["dropped_requests"] += 1
                return self._lost(delay, timeout_s)
        conn = self._conn
        if delay <= 0 and conn is not None and conn.alive:
            if not conn.writer.is_closing():
                sent = self._send(conn, method, payload, timeout_s)
                if sent is None:
                    return _outcome(_FAILED)
                return self._wait(conn, *sent)
            self._drop(conn, "the connection was closing")
        return self._connect_then_call(method, payload, timeout_s, delay)

    def _other_loop(self, other: asyncio.AbstractEventLoop) -> None:
        """The connection belongs to another event loop: forget it if that loop is closed (its sockets
        went with it; the next call connects on this loop), refuse otherwise."""
        if not other.is_closed():
            raise RuntimeError(f"stream client {self._name()} is used from a second event loop while the "
                               f"first still runs; a client belongs to the loop it connected on")
        self._conn = None
        self._connecting = None
        self._tasks.clear()  # tasks of a closed loop never run again

    def set_address(self, address: tuple[str, int]) -> None:
        """The destination moved: drop the connection (its pending calls fail) and use ``address``."""
        address = _check_address(address)
        if address == self._address:
            return
        old, self._address = self._address, address
        if self._conn is not None:
            self._drop(self._conn, f"the destination moved from {old[0]}:{old[1]}", quiet=True)
        if self._connecting is not None:
            self._connecting.cancel()
            self._connecting = None

    async def close(self) -> None:
        """Fail every pending call, close the connection and wait for this client's tasks to end."""
        self._closed = True
        if self._conn is not None and self._conn.loop is not asyncio.get_running_loop():
            self._other_loop(self._conn.loop)
        conn = self._conn
        if conn is not None:
            self._drop(conn, "the client closed", quiet=True)
        if self._connecting is not None:
            self._connecting.cancel()
            self._connecting = None
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.writer.wait_closed(), 1.0)

    # -- sending and waiting ------------------------------------------------------------------------

    def _send(self, conn: _Connection, method: str, payload: bytes,
              timeout_s: float) -> tuple[int, asyncio.Future[Outcome], asyncio.TimerHandle] | None:
        """Write one request frame now and start its timeout clock; ``None`` if the link is congested
        (the call fails). The timer also removes the call from ``pending``, so a call is cleaned up
        even if nobody awaits it."""
        transport = conn.writer.transport
        if transport.get_write_buffer_size() > self.max_buffered:
            self._counts["congested"] += 1
            return None
        request_id = self._next_id
        self._next_id += 1
        fut: asyncio.Future[Outcome] = conn.loop.create_future()
        conn.pending[request_id] = fut
        conn.writer.write(encode_frame(request_id, REQUEST, method, payload))
        loop = conn.loop
        timer = loop.call_at(loop.time() + max(0.0, timeout_s), self._expire, conn, request_id, fut,
                             loop.time())
        return request_id, fut, timer

    @staticmethod
    async def _wait(conn: _Connection, request_id: int, fut: asyncio.Future[Outcome],
                    timer: asyncio.TimerHandle) -> Outcome:
        try:
            return await fut
        finally:
            timer.cancel()
            conn.pending.pop(request_id, None)

    def _expire(self, conn: _Connection, request_id: int, fut: asyncio.Future[Outcome], sent: float) -> None:
        """A call ran out of time. If nothing at all arrived on its connection since it was sent, the
        peer is dead or stalled (a crashed host sends no FIN): drop the connection, so that the calls
        after it reconnect instead of queueing behind a silent socket."""
        conn.pending.pop(request_id, None)
        if fut.done():
            return
        self._counts["timeouts"] += 1
        fut.set_result(_FAILED)
        if conn.alive and conn.last_rx < sent:
            self._counts["silent_drops"] += 1
            self._drop(conn, f"nothing received for {conn.loop.time() - sent:.2f} s while a call waited "
                             f"(the peer is dead or stalled)")

    async def _lost(self, delay: float, timeout_s: float) -> Outcome:
        """A request the fault hook dropped: it fails after ``delay`` (capped by the call's timeout)."""
        await asyncio.sleep(max(0.0, min(delay, timeout_s)))
        return _FAILED

    async def _connect_then_call(self, method: str, payload: bytes, timeout_s: float,
                                 delay: float) -> Outcome:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        if delay > 0:
            if delay >= timeout_s:
                await asyncio.sleep(max(0.0, timeout_s))
                self._counts["timeouts"] += 1
                return _FAILED
            await asyncio.sleep(delay)
        conn = await self._connection(deadline - loop.time())
        if conn is None:
            self._counts["failed"] += 1
            return _FAILED
        sent = self._send(conn, method, payload, deadline - loop.time())
        if sent is None:
            return _FAILED
        return await self._wait(conn, *sent)

    # -- connections ----------------------------------------------------------------------------------

    async def _connection(self, timeout_s: float) -> _Connection | None:
        """The live connection, or one attempt to open it (shared by concurrent callers)."""
        conn = self._conn
        if conn is not None and conn.alive and not conn.writer.is_closing():
            return conn
        if self._closed or timeout_s <= 0:
            return None
        task = self._connecting
        if task is None:
            task = asyncio.get_running_loop().create_task(self._connect(self._address))
            self._connecting = task
            self._track(task)
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
        if not done or task.cancelled():
            return None
        return task.result()

    async def _connect(self, address: tuple[str, int]) -> _Connection | None:
        """Open and authenticate a connection to ``address``; ``None`` (logged) on failure. Never raises
        but ``CancelledError``."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        writer: asyncio.StreamWriter | None = None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(address[0], address[1], limit=READ_BUFFER_BYTES),
                self.connect_timeout_s)
            tune_socket(writer)
            await client_handshake(reader, writer, self.secret,
                                   max(0.001, self.connect_timeout_s - (loop.time() - t0)))
        except (OSError, asyncio.TimeoutError, AuthError) as e:
            if writer is not None:
                writer.close()
            self._connect_failed(address, e)
            return None
        except BaseException:
            if writer is not None:
                writer.close()
            raise
        finally:
            if self._connecting is asyncio.current_task():
                self._connecting = None
        if self._closed or address != self._address:
            writer.close()
            return None
        conn = _Connection(address, reader, writer, loop)
        conn.reader_task = loop.create_task(self._read_replies(conn))
        self._track(conn.reader_task)
        self._conn = conn
        self._counts["connects"] += 1
        if self._last_failure is not None:
            log.info("stream client %s: connected again", self._name())
        self._last_failure = None
        return conn

    def _connect_failed(self, address: tuple[str, int], e: BaseException) -> None:
        self._counts["connect_failures"] += 1
        if isinstance(e, AuthError):
            reason, key = f"handshake failed: {e.reason}", e.key
        elif isinstance(e, asyncio.TimeoutError):
            reason, key = f"no connection within {self.connect_timeout_s:g} s", "timeout"
        else:
            reason, key = f"{e!r}", type(e).__name__
        level = logging.WARNING if key != self._last_failure else logging.DEBUG
        self._last_failure = key
        log.log(level, "stream client %s: cannot connect to %s:%s: %s", self._name(), address[0], address[1],
                reason)

    async def _read_replies(self, conn: _Connection) -> None:
        """The connection's only reader: resolve calls by request id until the connection ends."""
        reason, quiet = "", False
        try:
            while True:
                frame = await read_frame(conn.reader, self.max_frame)
                conn.last_rx = conn.loop.time()
                if frame.kind == REQUEST:
                    raise FrameError("the server sent a REQUEST frame; only REPLY and NO_ANSWER go from "
                                     "server to client", key="unexpected_kind")
                fut = conn.pending.get(frame.request_id)
                if fut is None or fut.done():
                    self._counts["late_replies"] += 1
                    continue
                if frame.kind == NO_ANSWER:
                    self._counts["no_answer"] += 1
                    del conn.pending[frame.request_id]
                    fut.set_result(_FAILED)
                    continue
                assert frame.kind == REPLY
                self._deliver(conn, frame.request_id, fut, frame.payload)
        except ConnectionClosed:
            reason = "the server closed the connection"
        except FrameError as e:
            reason = f"bad frame from the server: {e.reason}"
        except OSError as e:
            reason = f"the connection broke: {e!r}"
        except asyncio.CancelledError:
            reason, quiet = "the client dropped the connection", True
        except Exception as e:  # a bug of ours: never let it escape the task
            log.exception("stream client %s: unexpected error reading replies", self._name())
            reason = f"unexpected error: {e!r}"
        finally:
            self._drop(conn, reason, quiet=quiet)

    def _deliver(self, conn: _Connection, request_id: int, fut: asyncio.Future[Outcome],
                 payload: bytes) -> None:
        if self.faults is not None:
            drop, delay = self.faults.on_reply()
            if drop:
                self._counts["dropped_replies"] += 1
                del conn.pending[request_id]
                fut.set_result(_FAILED)
                return
            if delay > 0:  # held back (long reordering): the call stays pending until then

                def release() -> None:
                    conn.held.discard(handle)
                    if conn.pending.pop(request_id, None) is not None and not fut.done():
                        self._counts["replies"] += 1
                        fut.set_result((True, payload))

                handle = conn.loop.call_later(delay, release)
                conn.held.add(handle)
                return
        del conn.pending[request_id]
        self._counts["replies"] += 1
        fut.set_result((True, payload))

    def _drop(self, conn: _Connection, reason: str, *, quiet: bool = False) -> None:
        """End ``conn``: fail its pending calls at once, cancel its timers and reader, close the socket."""
        if not conn.alive:
            return
        conn.alive = False
        if self._conn is conn:
            self._conn = None
        pending, conn.pending = conn.pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_result(_FAILED)
        self._counts["failed"] += len(pending)
        for handle in conn.held:
            handle.cancel()
        conn.held.clear()
        try:
            current = asyncio.current_task()
        except RuntimeError:
            # No running loop: the reader coroutine is being finalised after its loop ended (garbage
            # collection); its socket and task went with the loop, nothing is left to close or cancel.
            return
        conn.writer.close()
        task = conn.reader_task
        if task is not None and task is not current:
            task.cancel()
        level = logging.DEBUG if quiet else logging.WARNING
        log.log(level, "stream client %s: connection to %s:%s closed: %s; %d pending calls failed",
                self._name(), conn.address[0], conn.address[1], reason, len(pending))

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _name(self) -> str:
        return self.label or f"{self._address[0]}:{self._address[1]}"


def _check_address(address: tuple[str, int]) -> tuple[str, int]:
    try:
        host, port = address
        port = int(port)
    except (TypeError, ValueError):
        raise ValueError(f"a stream address is (host, port), got {address!r}") from None
    if not isinstance(host, str) or not host or not 0 < port < 65536:
        raise ValueError(f"a stream address is (host, port) with a port in 1..65535, got {address!r}")
    return host, port


async def _outcome(value: Outcome) -> Outcome:
    return value
