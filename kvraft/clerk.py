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
  batch as malformed (nothing was proposed; only a bug can cause it, so retrying would not help).

A timed-out operation is never half-applied: it is one log entry, applied atomically, exactly once or
not at all; and once the clerk's next operation has completed it can no longer take effect (its
sequence number is below the one the servers have seen).
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayError

from kvraft.endpoints import Endpoints
from kvraft.errors import KVRejectedError, KVTimeoutError
from kvraft.ops import (
    APPEND,
    DEFAULT_MAX_KEY_BYTES,
    DEFAULT_MAX_VALUE_BYTES,
    GET,
    INVALID,
    KIND_NAMES,
    OK,
    PUT,
    TIMEOUT,
    WRONG_LEADER,
    Batch,
    check_key,
    check_value,
)

#: default seconds a clerk waits for one server before trying the next
DEFAULT_ATTEMPT_TIMEOUT_S = 1.0
#: default pause after a full round of failed attempts
DEFAULT_RETRY_PAUSE_S = 0.05


def new_client_id() -> int:
    """A random 62-bit client id (collisions are as unlikely as for a UUID's random half)."""
    return random.SystemRandom().getrandbits(62)


def describe(kind: int, key: str) -> str:
    return f"{KIND_NAMES[kind]}({key!r:.60})"


class ClerkCore:
    """What both clerks share: identity, sequence numbers, input checks and leader routing.

    Invariant: ``seq`` only grows, and an operation's number is taken when it is submitted, so the
    operations of one clerk reach the servers (and the log) in the order of their numbers.
    """

    def __init__(
        self,
        endpoints: Endpoints,
        *,
        attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT_S,
        retry_pause: float = DEFAULT_RETRY_PAUSE_S,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        max_key_bytes: int = DEFAULT_MAX_KEY_BYTES,
        client_id: int | None = None,
    ) -> None:
        if attempt_timeout <= 0:
            raise ValueError(f"attempt_timeout must be > 0, got {attempt_timeout}")
        if not endpoints.names:
            raise ValueError("a clerk needs at least one server")
        self.endpoints = endpoints
        self.n = len(endpoints.names)
        self.attempt_timeout = attempt_timeout
        self.retry_pause = retry_pause
        self.max_value_bytes = max_value_bytes
        self.max_key_bytes = max_key_bytes
        self.client_id = new_client_id() if client_id is None else client_id
        self.seq = 0
        #: the server that answered last (the reference clerks start from a shuffled list)
        self.leader = random.randrange(self.n)

    def make_op(self, kind: int, key: Any, value: Any) -> tuple[int, str, str | None, int, int]:
        check_key(key, self.max_key_bytes)
        if kind != GET:
            check_value(value, self.max_value_bytes)
        self.seq += 1
        return (kind, key, value, self.client_id, self.seq)

    def route(self, server: int, reply: Any) -> int:
        """The server to try after ``server`` answered ``reply`` (anything but ``ok``)."""
        if isinstance(reply, tuple) and reply[0] == WRONG_LEADER:
            hint = reply[1]
            if isinstance(hint, int) and 0 <= hint < self.n and hint != server:
                return hint
        return (server + 1) % self.n

    @staticmethod
    def outcome(reply: Any) -> str:
        if reply is None:
            return "the call failed (dropped, cut off, or the server is down)"
        if reply[0] == WRONG_LEADER:
            return f"wrong leader (hint: {reply[1]})"
        if reply[0] == TIMEOUT:
            return "the server timed out waiting for the entry to commit"
        return str(reply[0])


class Clerk(ClerkCore):
    """A synchronous clerk. Thread-safe, but one operation at a time (calls from several threads
    are serialised); use one clerk per thread, or an :class:`~kvraft.AsyncClerk`, for concurrency.
    """

    def __init__(self, endpoints: Endpoints, **options: Any) -> None:
        super().__init__(endpoints, **options)
        self._lock = threading.Lock()

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
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be > 0 (or None to retry forever), got {timeout}")
        with self._lock:
            op = self.make_op(kind, key, value)
            results = self._send((op,), timeout, describe(kind, key))
            return results[0]

    def _send(self, ops: Batch, timeout: float | None, what: str) -> list[Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        tried: list[str] = []
        server = self.leader
        failed_in_a_row = 0
        last = "no attempt"
        while True:
            wait = self.attempt_timeout
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise KVTimeoutError(what, timeout, tried, last)  # type: ignore[arg-type]
                wait = min(wait, remaining)
            name = self.endpoints.names[server]
            if name not in tried:
                tried.append(name)
            reply = self._call(server, ops, wait)
            if isinstance(reply, tuple) and reply[0] == OK:
                self.leader = server
                return reply[1]
            if isinstance(reply, tuple) and reply[0] == INVALID:
                raise KVRejectedError(name, str(reply[1]))
            last = f"{name}: " + (f"no answer within {wait:.2g} s" if reply == "no answer"
                                  else self.outcome(reply))
            server = self.route(server, reply)
            failed_in_a_row += 1
            if failed_in_a_row % self.n == 0:
                pause = self.retry_pause
                if deadline is not None:
                    pause = min(pause, max(0.0, deadline - time.monotonic()))
                time.sleep(pause)

    def _call(self, server: int, ops: Batch, wait: float) -> Any:
        try:
            ref = self.endpoints.submit(server, ops)
            value = ray.get(ref, timeout=wait)
        except GetTimeoutError:
            return "no answer"
        except RayError:
            return None
        return self.endpoints.unpack(value)
