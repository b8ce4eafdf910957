"""Mutual HMAC-SHA256 challenge-response: a stream connection proves it belongs to the service.

Every service has one secret of 32 random bytes (:func:`new_secret`), handed to its replicas and
clerks through Ray (whose own connections are token-authenticated); it never travels on a stream.
The handshake, before any frame::

    server -> client   MAGIC, VERSION, server nonce (32 random bytes)
    client -> server   MAGIC, VERSION, client nonce (32 random bytes),
                       HMAC(secret, "raykv-stream client" | server nonce | client nonce)
    server -> client   HMAC(secret, "raykv-stream server" | client nonce | server nonce)

Invariants:

- Nothing a client sends reaches a handler before its proof has been checked: the server reads
  exactly the fixed-size answer above (no length field an attacker controls) and closes the
  connection on any mismatch.
- Proofs cover both fresh nonces, so a recorded handshake cannot be replayed on another connection,
  and the two directions use different labels, so the server's proof cannot be reflected back to it
  as a client's. A client that checks the server's proof knows it reached the service, not an
  impostor listening on a reused address.
- Every comparison is ``hmac.compare_digest`` (constant time); every wait is bounded by ``timeout_s``
  (a half-open connection is refused when it runs out).
- Failures raise :class:`AuthError` with a reason (for the log line) and a short ``key`` (for
  counters); no other exception escapes, except ``asyncio.CancelledError``.

Nothing here imports Ray.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets

from actors.stream_frames import StreamError

MAGIC = b"RKVS"
VERSION = 1
NONCE_BYTES = 32
SECRET_BYTES = 32
PROOF_BYTES = hashlib.sha256().digest_size
_HELLO = len(MAGIC) + 1 + NONCE_BYTES
_ANSWER = _HELLO + PROOF_BYTES
_CLIENT_LABEL = b"raykv-stream client"
_SERVER_LABEL = b"raykv-stream server"


class AuthError(StreamError):
    """A handshake that failed: ``reason`` for the log line, ``key`` a short category for counters."""

    def __init__(self, reason: str, *, key: str = "auth") -> None:
        super().__init__(reason)
        self.reason = reason
        self.key = key


def new_secret() -> bytes:
    """A fresh per-service secret: 32 bytes from the operating system's cryptographic generator."""
    return secrets.token_bytes(SECRET_BYTES)


def check_secret(secret: bytes) -> bytes:
    """``secret`` itself if it can key a service's streams; otherwise a ``ValueError`` saying why."""
    if not isinstance(secret, bytes | bytearray):
        raise ValueError(f"a stream secret must be bytes (from actors.stream_auth.new_secret()), "
                         f"not {type(secret).__name__}")
    if len(secret) < 16:
        raise ValueError(f"a stream secret of {len(secret)} bytes is too short to authenticate anything; "
                         f"use actors.stream_auth.new_secret() (32 random bytes)")
    return bytes(secret)


def _proof(secret: bytes, label: bytes, first: bytes, second: bytes) -> bytes:
    return hmac.new(secret, label + first + second, hashlib.sha256).digest()


async def server_handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, secret: bytes,
                           timeout_s: float) -> None:
    """Challenge the client on a fresh connection; return only if it proved it holds ``secret``."""
    try:
        await asyncio.wait_for(_server_side(reader, writer, secret), timeout_s)
    except asyncio.TimeoutError:
        raise AuthError(f"no valid handshake within {timeout_s:g} s (half-open or silent connection)",
                        key="timeout") from None


async def client_handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, secret: bytes,
                           timeout_s: float) -> None:
    """Answer the server's challenge and check its proof; return only if both sides hold ``secret``."""
    try:
        await asyncio.wait_for(_client_side(reader, writer, secret), timeout_s)
    except asyncio.TimeoutError:
        raise AuthError(f"the server did not complete the handshake within {timeout_s:g} s",
                        key="timeout") from None


async def _server_side(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, secret: bytes) -> None:
    server_nonce = secrets.token_bytes(NONCE_BYTES)
    writer.write(MAGIC + bytes((VERSION,)) + server_nonce)
    await _drain(writer)
    magic = await _read(reader, len(MAGIC), "the client's answer")
    _check_magic(magic, "client")  # a stranger is refused at its first bytes, not after a timeout
    answer = magic + await _read(reader, _ANSWER - len(MAGIC), "the client's answer")
    _check_hello(answer, "client")
    client_nonce = answer[len(MAGIC) + 1:_HELLO]
    expected = _proof(secret, _CLIENT_LABEL, server_nonce, client_nonce)
    if not hmac.compare_digest(answer[_HELLO:], expected):
        raise AuthError("wrong proof: the client does not hold this service's secret", key="wrong_proof")
    writer.write(_proof(secret, _SERVER_LABEL, client_nonce, server_nonce))
    await _drain(writer)


async def _client_side(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, secret: bytes) -> None:
    hello = await _read(reader, _HELLO, "the server's challenge")
    _check_hello(hello, "server")
    server_nonce = hello[len(MAGIC) + 1:]
    client_nonce = secrets.token_bytes(NONCE_BYTES)
    writer.write(MAGIC + bytes((VERSION,)) + client_nonce
                 + _proof(secret, _CLIENT_LABEL, server_nonce, client_nonce))
    await _drain(writer)
    proof = await _read(reader, PROOF_BYTES, "the server's proof (a refused client is disconnected here: "
                                             "wrong secret?)")
    if not hmac.compare_digest(proof, _proof(secret, _SERVER_LABEL, client_nonce, server_nonce)):
        raise AuthError("wrong proof from the server: it does not hold this service's secret "
                        "(another service on this address?)", key="wrong_proof")


def _check_magic(data: bytes, who: str) -> None:
    if data[:len(MAGIC)] != MAGIC:
        raise AuthError(f"the {who} does not speak the raykv stream protocol "
                        f"(first bytes {data[:len(MAGIC)]!r}, expected {MAGIC!r})", key="bad_magic")


def _check_hello(data: bytes, who: str) -> None:
    _check_magic(data, who)
    if data[len(MAGIC)] != VERSION:
        raise AuthError(f"the {who} speaks stream protocol version {data[len(MAGIC)]}, this side "
                        f"version {VERSION}", key="bad_version")


async def _read(reader: asyncio.StreamReader, n: int, what: str) -> bytes:
    try:
        return await reader.readexactly(n)
    except asyncio.IncompleteReadError as e:
        raise AuthError(f"the connection ended during the handshake after {len(e.partial)} of {n} bytes "
                        f"of {what}", key="eof") from None
    except OSError as e:
        raise AuthError(f"the connection broke during the handshake: {e!r}", key="eof") from None


async def _drain(writer: asyncio.StreamWriter) -> None:
    try:
        await writer.drain()
    except OSError as e:
        raise AuthError(f"the connection broke during the handshake: {e!r}", key="eof") from None
