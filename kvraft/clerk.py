"""Clerks: the client side of the KV service.

:class:`Clerk` is synchronous (``get`` / ``put`` / ``append`` block); :class:`~kvraft.AsyncClerk`
(in :mod:`kvraft.async_clerk`) is the asyncio twin that keeps many requests in flight. Both:

- check their input before sending anything: a key or value that is not a ``str`` raises
  ``TypeError``; one above ``max_value_bytes`` (``max_key_bytes``) UTF-8 bytes raises ``ValueError``;
- tag every operation with the clerk's ``client_id`` and the next sequence number, so that the
  servers apply it at most once however often it is resent;
- remember the last leader, go to the leader a server names when it answers "wrong leader", move on
  to the next server after a failed call or after ``attempt_timeout`` seconds without an answer, and
  pause ``retry_pause`` seconds after every full round of failed attempts;
- retry until the operation completes, or until the optional per-call ``timeout`` passes, which
  raises :class:`~kvraft.errors.KVTimeoutError` (a ``TimeoutError``) naming the servers tried;
- raise :class:`~kvraft.errors.KVRejectedError` (a ``ValueError``) at once if a server refuses the
  batch as malformed (nothing was proposed; only a bug can cause it, so retrying would not help);
- after the servers forgot the clerk's session (idle longer than ``session_ttl``): resend a Get in a
  new session, and raise :class:`~actors.sessions.SessionExpiredError` for a Put or Append (see
  :mod:`actors.service_clerk`); the clerk's next call works.

The identity, routing and retry loop are the shared clerk core (:mod:`actors.service_clerk`); this
module adds the KV operations and their checks.

A timed-out operation is never half-applied: it is one log entry, applied atomically, exactly once or
not at all; and once the clerk's next operation has completed it can no longer take effect (its
sequence number is below the one the servers have seen).
"""

from __future__ import annotations

from typing import Any

from actors.service_clerk import (
    DEFAULT_ATTEMPT_TIMEOUT_S,
    DEFAULT_RETRY_PAUSE_S,
    GroupClerkCore,
    SyncGroupClerk,
)
from actors.service_protocol import check_timeout, new_client_id
from kvraft.endpoints import Endpoints
from kvraft.errors import KVRejectedError, KVTimeoutError
from kvraft.ops import (
    APPEND,
    DEFAULT_MAX_KEY_BYTES,
    DEFAULT_MAX_VALUE_BYTES,
    GET,
    KIND_NAMES,
    PUT,
    check_key,
    check_value,
)

__all__ = ["DEFAULT_ATTEMPT_TIMEOUT_S", "DEFAULT_RETRY_PAUSE_S", "Clerk", "ClerkCore", "describe",
           "new_client_id"]


def describe(kind: int, key: str) -> str:
    return f"{KIND_NAMES[kind]}({key!r:.60})"


class ClerkCore(GroupClerkCore):
    """What both KV clerks share: the shared group clerk core (identity, sequence numbers, leader
    routing) plus the KV input checks (``max_value_bytes``, ``max_key_bytes``) and errors.

    Invariant: ``seq`` only grows, and an operation's number is taken when it is submitted, so the
    operations of one clerk reach the servers (and the log) in the order of their numbers.
    """

    timeout_error = KVTimeoutError
    service = "kvraft"

    def __init__(
        self,
        endpoints: Endpoints,
        *,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        max_key_bytes: int = DEFAULT_MAX_KEY_BYTES,
        **options: Any,
    ) -> None:
        super().__init__(endpoints, **options)
        self.max_value_bytes = max_value_bytes
        self.max_key_bytes = max_key_bytes

    def make_op(self, kind: int, key: Any, value: Any) -> tuple[int, str, str | None, int, int]:
        check_key(key, self.max_key_bytes)
        if kind != GET:
            check_value(value, self.max_value_bytes)
        return (kind, key, value, self.client_id, self.next_seq())

    def rejected(self, server: str, reason: str) -> Exception:
        return KVRejectedError(server, reason)

    def is_read(self, op: Any) -> bool:
        return op[0] == GET  # type: ignore[no-any-return]

    def renumber(self, op: Any) -> tuple[int, str, str | None, int, int]:
        return (op[0], op[1], op[2], self.client_id, self.next_seq())

    def describe_op(self, op: Any) -> str:
        return describe(op[0], op[1])


class Clerk(SyncGroupClerk, ClerkCore):
    """A synchronous clerk. Thread-safe, but one operation at a time (calls from several threads
    are serialised); use one clerk per thread, or an :class:`~kvraft.AsyncClerk`, for concurrency.
    """

    def get(self, key: str, *, timeout: float | None = None) -> str:
        """The value of ``key`` (``""`` if it was never written)."""
        return self._run(GET, key, None, timeout)  # type: ignore[return-value]

    def put(self, key: str, value: str, *, timeout: float | None = None) -> None:
        """Set ``key`` to ``value``."""
        self._run(PUT, key, value, timeout)

    def append(self, key: str, value: str, *, timeout: float | None = None) -> None:
        """Append ``value`` to the value of ``key``; returns nothing."""
        self._run(APPEND, key, value, timeout)

    def _run(self, kind: int, key: Any, value: Any, timeout: float | None) -> str | None:
        check_timeout(timeout)
        with self._lock:
            op = self.make_op(kind, key, value)
            results = self._send((op,), timeout, describe(kind, key))
            return results[0]  # type: ignore[no-any-return]
