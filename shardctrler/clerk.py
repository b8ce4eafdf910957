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

The identity, numbering, routing and retry loop are the shared clerk core
(:mod:`actors.service_clerk`), as for :mod:`kvraft.clerk`; this module adds the controller's
operations, their checks and its errors.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from actors.service_clerk import (
    DEFAULT_ATTEMPT_TIMEOUT_S,
    DEFAULT_RETRY_PAUSE_S,
    GroupClerkCore,
    SyncGroupClerk,
)
from actors.service_protocol import check_timeout, new_client_id
from shardctrler.config import Config
from shardctrler.errors import CtrlerTimeoutError, RefusedError
from shardctrler.ops import (
    ERR_BAD_REQUEST,
    JOIN,
    LEAVE,
    MOVE,
    QUERY,
    Op,
    Refusal,
    describe,
    normalise,
)

__all__ = ["DEFAULT_ATTEMPT_TIMEOUT_S", "DEFAULT_RETRY_PAUSE_S", "Clerk", "ClerkCore", "check_timeout",
           "new_client_id", "result_of"]


def result_of(op: Op, result: Any) -> Any:
    """A result from the controller, or the :class:`RefusedError` it stands for, raised."""
    if isinstance(result, Refusal):
        raise RefusedError(result.code, f"{describe(op[0], op[1])} refused: {result.message}", sent=True)
    return result


class ClerkCore(GroupClerkCore):
    """What both controller clerks share: the shared group clerk core (identity, sequence numbers,
    leader routing) plus the controller's request checks and errors.

    Invariant: ``seq`` only grows, and an operation's number is taken when it is submitted (after its
    checks passed), so the operations of one clerk reach the log in the order of their numbers.
    """

    timeout_error = CtrlerTimeoutError
    service = "shardctrler"

    def make_op(self, kind: int, args: Any) -> Op:
        args = normalise(kind, args)  # raises RefusedError before a number is used
        return (kind, args, self.client_id, self.next_seq())

    def rejected(self, server: str, reason: str) -> Exception:
        return RefusedError(ERR_BAD_REQUEST, f"{server} refused the call: {reason}. Nothing was proposed; "
                                             "this is a bug in the caller (clerks check their input before "
                                             "sending)", sent=True)

    def is_read(self, op: Any) -> bool:
        return op[0] == QUERY  # type: ignore[no-any-return]

    def renumber(self, op: Any) -> Op:
        return (op[0], op[1], self.client_id, self.next_seq())

    def describe_op(self, op: Any) -> str:
        return describe(op[0], op[1])


class Clerk(SyncGroupClerk, ClerkCore):
    """A synchronous clerk. Thread-safe, but one operation at a time (calls from several threads are
    serialised); use one clerk per thread, or an :class:`~shardctrler.AsyncClerk`, for concurrency.
    Do not use it inside an async actor (it blocks on ``ray.get``): use the AsyncClerk there.
    """

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
