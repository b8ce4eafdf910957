"""Frames of the stream transport: length-prefixed, one request, reply or refusal each.

Wire format (every integer big-endian)::

    length   4 bytes, unsigned: the size of the body that follows (at most the reader's limit)
    body     request id  8 bytes, unsigned (the caller's number; a reply carries its request's)
             kind        1 byte: REQUEST, REPLY or NO_ANSWER
             method      2-byte length, then that many bytes of UTF-8 (empty in replies)
             payload     the rest of the body, opaque bytes (a pickled batch)

Invariants:

- A reader never buffers more than ``max_frame`` bytes of one frame: the length prefix is checked
  against the limit *before* a byte of the body is read, so an oversized frame costs 4 bytes.
- Every malformed frame raises :class:`FrameError` with a reason a person can act on; a clean end of
  stream at a frame boundary raises :class:`ConnectionClosed`; nothing else escapes
  :func:`read_frame` except the ``OSError`` of a broken socket.
- A body over 64 KiB is read in parts (fixed header, method, payload), so a large payload reaches the
  caller as the very ``bytes`` object the stream produced, never copied again; a small one is read in
  one piece and sliced (one read is cheaper than three, and copying a few KiB costs nothing).

Nothing here imports Ray: this module is plain asyncio.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass

#: the default limit on a frame's body (a pickled batch of Raft messages, a snapshot chunk)
MAX_FRAME_BYTES = 64 * 1024 * 1024

#: kinds of frames
REQUEST = 1
REPLY = 2
NO_ANSWER = 3
KIND_NAMES = {REQUEST: "REQUEST", REPLY: "REPLY", NO_ANSWER: "NO_ANSWER"}

_LENGTH = struct.Struct(">I")
_HEAD = struct.Struct(">QBH")  # request id, kind, method length
#: bytes of the length prefix plus the fixed part of the body
HEADER_BYTES = _LENGTH.size + _HEAD.size
_MAX_ID = 2**64 - 1
_MAX_METHOD = 2**16 - 1
_MAX_LENGTH = 2**32 - 1
#: frames up to this size are read in one piece and sliced; bigger ones in parts, so that the payload
#: is the very bytes object the stream produced (no copy of a large payload)
SMALL_FRAME_BYTES = 64 * 1024


class StreamError(Exception):
    """Base of the stream layer's errors."""


class FrameError(StreamError):
    """A frame that breaks the format or the size limit; the connection it came on must be closed.

    ``reason`` says what was wrong (for the log line); ``key`` is a short category for counters.
    """

    def __init__(self, reason: str, *, key: str = "malformed") -> None:
        super().__init__(reason)
        self.reason = reason
        self.key = key


class ConnectionClosed(StreamError):
    """The other side ended the stream cleanly, between two frames."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame. ``method`` is empty in replies; ``payload`` is opaque bytes."""

    request_id: int
    kind: int
    method: str
    payload: bytes


def body_size(method: str, payload: bytes | bytearray | memoryview) -> int:
    """The body length :func:`encode_frame` would write (compare it with a limit before encoding)."""
    return _HEAD.size + len(method.encode("utf-8")) + len(payload)


def encode_frame(request_id: int, kind: int, method: str, payload: bytes | bytearray | memoryview) -> bytes:
    """The complete frame (length prefix included) as one ``bytes`` object, for a single write.

    Raises ``ValueError`` for a request id outside 0..2**64-1, an unknown kind, a method name longer
    than 65,535 UTF-8 bytes or a body longer than 2**32-1 bytes: these are the caller's bugs, never
    the network's.
    """
    if not 0 <= request_id <= _MAX_ID:
        raise ValueError(f"request id {request_id} is outside 0..2**64-1")
    if kind not in KIND_NAMES:
        raise ValueError(f"unknown frame kind {kind!r}; use REQUEST, REPLY or NO_ANSWER")
    name = method.encode("utf-8")
    if len(name) > _MAX_METHOD:
        raise ValueError(f"method name of {len(name)} UTF-8 bytes is over the 65,535-byte limit")
    length = _HEAD.size + len(name) + len(payload)
    if length > _MAX_LENGTH:
        raise ValueError(f"a frame body of {length} bytes does not fit the 4-byte length prefix")
    return b"".join((_LENGTH.pack(length), _HEAD.pack(request_id, kind, len(name)), name, payload))


async def read_frame(reader: asyncio.StreamReader, max_frame: int = MAX_FRAME_BYTES) -> Frame:
    """Read one frame whose body is at most ``max_frame`` bytes.

    Raises :class:`ConnectionClosed` at a clean end of stream (no byte of a next frame), and
    :class:`FrameError` for an oversized or too-short length, an unknown kind, a method name that
    overruns the body or is not UTF-8, or a stream that ends inside a frame.
    """
    try:
        prefix = await reader.readexactly(_LENGTH.size)
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            raise ConnectionClosed("the stream ended") from None
        raise FrameError(f"the stream ended inside a length prefix ({len(e.partial)} of 4 bytes)",
                         key="truncated") from None
    (length,) = _LENGTH.unpack(prefix)
    if length > max_frame:
        raise FrameError(f"frame of {length:,} bytes is over the limit of {max_frame:,} bytes",
                         key="oversized")
    if length < _HEAD.size:
        raise FrameError(f"frame of {length} bytes is shorter than the {_HEAD.size}-byte frame header")
    if length <= SMALL_FRAME_BYTES:  # one read, then slices: cheaper than three reads for small frames
        body = await _read_part(reader, length, length, "body")
        request_id, kind, name_len = _check_head(body, length)
        end = _HEAD.size + name_len
        return Frame(request_id, kind, _method(body[_HEAD.size:end]), body[end:])
    head = await _read_part(reader, _HEAD.size, length, "frame header")
    request_id, kind, name_len = _check_head(head, length)
    method = _method(await _read_part(reader, name_len, length, "method name")) if name_len else ""
    size = length - _HEAD.size - name_len
    payload = await _read_part(reader, size, length, "payload") if size else b""
    return Frame(request_id, kind, method, payload)


def _check_head(data: bytes, length: int) -> tuple[int, int, int]:
    request_id, kind, name_len = _HEAD.unpack_from(data)
    if kind not in KIND_NAMES:
        raise FrameError(f"unknown frame kind {kind} (request id {request_id})")
    if name_len > length - _HEAD.size:
        raise FrameError(f"method name of {name_len} bytes overruns the {length}-byte frame")
    return request_id, kind, name_len


def _method(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError(f"method name is not UTF-8: {raw[:40]!r}") from None


async def _read_part(reader: asyncio.StreamReader, n: int, length: int, what: str) -> bytes:
    try:
        return await reader.readexactly(n)
    except asyncio.IncompleteReadError as e:
        raise FrameError(f"the stream ended inside a {length}-byte frame ({what}: {len(e.partial)} of "
                         f"{n} bytes)", key="truncated") from None
