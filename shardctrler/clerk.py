"""Clerks: the client side of the controller (the reference's ``shardctrler.Clerk``).

:class:`Clerk` is synchronous; :class:`~shardctrler.AsyncClerk` (in :mod:`shardctrler.async_clerk`)
is the asyncio twin that coalesces concurrent calls into batches and never blocks its event loop (a
shard group's replica actor uses it to follow the controller). Both offer:

- ``join({gid: [server, ...], ...}) -> int``: add groups; returns the number of the new configuration;
- ``leave([gid, ...]) -> int``: remove groups; returns the new configuration's number;
- ``move(shard, gid) -> int``: put one shard on one group; returns the new configuration's number;
- ``query(num=-1) -> Config``: configuration ``num``, or the latest for ``-1`` (or for a number above
  the latest, as in the reference).

Both check each request's shape and types before sending and raise
:class:`~shardctrler.errors.RefusedError` (``sent=False``; also a ``TypeError`` for a wrong type)
without using a sequence number; a request the controller refuses raises ``RefusedError``
(``sent=True``) with the controller's code and message, and the configuration is unchanged. They tag
every operation with the clerk's ``client_id`` and the next sequence number (applied at most once
however often it is resent; a resent write gets the answer of its first application), remember the
last leader, follow leader hints, move on after a failed call or ``attempt_timeout`` seconds, pause
``retry_pause`` after a full round of failures, and retry until the call completes or its optional
``timeout`` passes (:class:`~shardctrler.errors.CtrlerTimeoutError`).

The routing and numbering are those of :mod:`kvraft.clerk`, written again here so that services do
not import each other.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayError

from shardctrler.config import Config
from shardctrler.endpoints import Endpoints
from shardctrler.errors import CtrlerTimeoutError, RefusedError
from shardctrler.ops import (
    ERR_BAD_REQUEST,
    INVALID,
    JOIN,
    LEAVE,
    MOVE,
    OK,
    QUERY,
    TIMEOUT,
    WRONG_LEADER,
    Batch,
    Op,
    Refusal,
    describe,
    normalise,
)

#: default seconds a clerk waits for one server before trying the next
DEFAULT_ATTEMPT_TIMEOUT_S = 1.0
#: default pause after a full round of failed attempts
DEFAULT_RETRY_PAUSE_S = 0.05


def new_client_id() -> int:
    """A random 62-bit client id (collisions are as unlikely as for a UUID's random half)."""
    return random.SystemRandom().getrandbits(62)


def check_timeout(timeout: float | None) -> None:
    if timeout is not None and not timeout > 0:
        raise ValueError(f"timeout must be > 0 (or None to retry forever), got {timeout}")


def result_of(op: Op, result: Any) -> Any:
    """A result from the controller, or the :class:`RefusedError` it stands for, raised."""
    if isinstance(result, Refusal):
        raise RefusedError(result.code, f"{describe(op[0], op[1])} refused: {result.message}", sent=True)
    return result


class ClerkCore:
    """What both clerks share: identity, sequence numbers, request checks and leader routing.

    Invariant: ``seq`` only grows, and an operation's number is taken when it is submitted (after its
    checks passed), so the operations of one clerk reach the log in the order of their numbers.
    """

    def __init__(
        self,
        endpoints: Endpoints,
        *,
        attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT_S,
        retry_pause: float = DEFAULT_RETRY_PAUSE_S,
        client_id: int | None = None,
    ) -> None:
        if not attempt_timeout > 0:
            raise ValueError(f"attempt_timeout must be > 0, got {attempt_timeout}")
        if retry_pause < 0:
            raise ValueError(f"retry_pause must be >= 0, got {retry_pause}")
        if not endpoints.names:
            raise ValueError("a clerk needs at least one server")
        self.endpoints = endpoints
        self.n = len(endpoints.names)
        self.attempt_timeout = attempt_timeout
        self.retry_pause = retry_pause
        self.client_id = new_client_id() if client_id is None else client_id
        self.seq = 0
        #: the server that answered last (the reference clerks start from a shuffled list)
        self.leader = random.randrange(self.n)

    def make_op(self, kind: int, args: Any) -> Op:
        args = normalise(kind, args)  # raises RefusedError before a number is used
        self.seq += 1
        return (kind, args, self.client_id, self.seq)

    def route(self, server: int, reply: Any) -> int:
        """The server to try after ``server`` answered ``reply`` (anything but ``ok``)."""
        if isinstance(reply, tuple) and reply[0] == WRONG_LEADER:
            hint = reply[1]
            if isinstance(hint, int) and 0 <= hint < self.n and hint != server:
                return hint
        return (server + 1) % self.n

    def check_reply(self, server: int, reply: Any) -> None:
        """Raise for an answer that retrying cannot fix (the call itself was malformed)."""
        if isinstance(reply, tuple) and reply[0] == INVALID:
            raise RefusedError(ERR_BAD_REQUEST, f"{self.endpoints.names[server]} refused the call: "
                                                f"{reply[1]}. Nothing was proposed; this is a bug in the "
                                                "caller (clerks check their input before sending)", sent=True)

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
    """A synchronous clerk. Thread-safe, but one operation at a time (calls from several threads are
    serialised); use one clerk per thread, or an :class:`~shardctrler.AsyncClerk`, for concurrency.
    Do not use it inside an async actor (it blocks on ``ray.get``): use the AsyncClerk there.
    """

    def __init__(self, endpoints: Endpoints, **options: Any) -> None:
        super().__init__(endpoints, **options)
        self._lock = threading.Lock()

    def join(self, groups: Mapping[int, Sequence[str]], *, timeout: float | None = None) -> int:
        """Add the groups ``{gid: [server, ...]}``; returns the new configuration's number."""
        return self._run(JOIN, groups, timeout)  # type: ignore[no-any-return]

    def leave(self, gids: Iterable[int], *, timeout: float | None = None) -> int:
        """Remove the groups ``gids``; returns the new configuration's number."""
        return self._run(LEAVE, gids, timeout)  # type: ignore[no-any-return]

    def move(self, shard: int, gid: int, *, timeout: float | None = None) -> int:
        """Put ``shard`` on group ``gid``; returns the new configuration's number."""
        return self._run(MOVE, (shard, gid), timeout)  # type: ignore[no-any-return]

    def query(self, num: int = -1, *, timeout: float | None = None) -> Config:
        """Configuration ``num``; the latest for ``-1`` (or for a number above the latest)."""
        return self._run(QUERY, num, timeout)  # type: ignore[no-any-return]

    def _run(self, kind: int, args: Any, timeout: float | None) -> Any:
        check_timeout(timeout)
        with self._lock:
            op = self.make_op(kind, args)
            results = self._send((op,), timeout, describe(kind, op[1]))
            return result_of(op, results[0])

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
                    raise CtrlerTimeoutError(what, timeout, tried, last)  # type: ignore[arg-type]
                wait = min(wait, remaining)
            name = self.endpoints.names[server]
            if name not in tried:
                tried.append(name)
            reply = self._call(server, ops, wait)
            if isinstance(reply, tuple) and reply[0] == OK:
                self.leader = server
                return reply[1]
            self.check_reply(server, reply)
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
