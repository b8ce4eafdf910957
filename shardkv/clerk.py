"""Clerks: the client side of the sharded KV service.

:class:`Clerk` is synchronous; :class:`~shardkv.async_clerk.AsyncClerk` is the asyncio twin that
batches per group. Both:

- map a key to its shard with the service's mapping (``"reference"``: first byte mod nshards, the
  ported tests; ``"hash"``: a stable hash of the whole key) and send the shard with the operation
  (the servers refuse a shard that disagrees with their mapping:
  :class:`~shardkv.errors.ShardKVRequestError`);
- cache the latest configuration, and ask the controller for it again after a wrong-group answer or
  after a full round of the owning group's servers without an answer (pausing ``retry_pause`` first,
  100 ms as in the reference);
- remember the server of each group that answered last and follow leader hints;
- check their input before sending anything (``TypeError`` / ``ValueError``), tag every operation with
  its shard's session (a client id and the next sequence number *on that shard*: the servers keep one
  session table per shard, which moves with the shard, and a table that has forgotten a session
  accepts an unknown client only at its first number, see :mod:`shardkv.statemachine`), and retry until
  the operation completes or its optional ``timeout`` passes (:class:`~shardkv.errors.ShardKVTimeoutError`);
- when a shard's servers forgot its session (idle longer than ``session_ttl``): start a new session
  for that shard, resend a Get in it, and raise :class:`~actors.sessions.SessionExpiredError` for a Put
  or an Append; never resend an operation for longer than half the ``session_ttl`` (raise
  ``SessionExpiredError`` instead; see :mod:`actors.service_clerk` for why).

What a client sees during a move: an operation on a shard that is leaving its group, or has not yet
arrived at its new owner, is refused with wrong-group and retried; it completes as soon as the new
owner has installed the shard. Operations on shards that are not moving are not held up.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from actors.service_clerk import ClerkBase
from actors.service_protocol import NO_ANSWER, check_timeout, new_client_id, next_server
from actors.service_protocol import outcome as group_outcome
from actors.sessions import DEFAULT_SESSION_TTL_S, SessionExpired, SessionExpiredError
from shardctrler.clerk import Clerk as CtrlerClerk
from shardctrler.config import Config
from shardctrler.errors import CtrlerTimeoutError
from shardkv.endpoints import CtrlerEndpoints
from shardkv.errors import ShardKVRequestError, ShardKVTimeoutError
from shardkv.ops import (
    APPEND,
    DEFAULT_MAX_KEY_BYTES,
    DEFAULT_MAX_VALUE_BYTES,
    ERR_WRONG_GROUP,
    GET,
    INVALID,
    OK,
    PUT,
    Op,
    OpError,
    check_key,
    check_value,
    describe,
)
from shardkv.statemachine import mapping_function

#: default seconds a clerk waits for one server before trying the next
DEFAULT_ATTEMPT_TIMEOUT_S = 1.0
#: default pause before asking the controller again (the reference clerk's 100 ms)
DEFAULT_RETRY_PAUSE_S = 0.1


__all__ = ["DEFAULT_ATTEMPT_TIMEOUT_S", "DEFAULT_RETRY_PAUSE_S", "Clerk", "ClerkCore", "check_timeout",
           "is_wrong_group", "new_client_id", "outcome"]


def is_wrong_group(result: Any) -> bool:
    return isinstance(result, OpError) and result.code == ERR_WRONG_GROUP


def outcome(reply: Any) -> str:
    """A short description of a failed attempt, for error messages."""
    if reply == NO_ANSWER:
        return "no answer in time"
    if reply is not None and reply[0] == OK:
        return "wrong group"
    return group_outcome(reply)


class ClerkCore(ClerkBase):
    """What both clerks share: identity, sequence numbers and retry options (the shared
    :class:`actors.service_clerk.ClerkBase`), input checks, the key mapping, the cached
    configuration and per-group leader memory.

    ``router`` reaches servers by name (:mod:`shardkv.endpoints`); ``ctrlers`` are the controller's
    server names. Invariant: a shard's session numbers only grow, and an operation's number is taken
    when it is submitted, so one clerk's operations on one shard reach the servers in the order of
    their numbers.
    """

    def __init__(
        self,
        router: Any,
        ctrlers: tuple[str, ...] | list[str],
        *,
        mapping: str = "reference",
        attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT_S,
        retry_pause: float = DEFAULT_RETRY_PAUSE_S,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        max_key_bytes: int = DEFAULT_MAX_KEY_BYTES,
        client_id: int | None = None,
        session_ttl: float | None = DEFAULT_SESSION_TTL_S,
    ) -> None:
        super().__init__(attempt_timeout=attempt_timeout, retry_pause=retry_pause, client_id=client_id,
                         session_ttl=session_ttl)
        self.key2shard = mapping_function(mapping)
        self.mapping = mapping
        self.router = router
        self.ctrler_endpoints = CtrlerEndpoints(router, tuple(ctrlers))
        self.max_value_bytes = max_value_bytes
        self.max_key_bytes = max_key_bytes
        #: the latest configuration this clerk has seen (``None`` before the first query)
        self.config: Config | None = None
        #: per gid, the index of the server that answered last
        self.leaders: dict[int, int] = {}
        #: per shard, its session: [client id, last number used] (the clerk's id until renewed)
        self.shard_sessions: dict[int, list[int]] = {}

    def make_op(self, kind: int, key: Any, value: Any, nshards: int) -> Op:
        check_key(key, self.max_key_bytes)
        if kind != GET:
            check_value(value, self.max_value_bytes)
        shard = self.key2shard(key, nshards)
        client, seq = self._number(shard)
        return (kind, key, value, client, seq, shard)

    def _number(self, shard: int) -> tuple[int, int]:
        """The next (client id, number) of ``shard``'s session; ``seq`` counts every number used."""
        session = self.shard_sessions.setdefault(shard, [self.client_id, 0])
        session[1] += 1
        self.seq += 1
        return session[0], session[1]

    def renew_shard(self, shard: int) -> None:
        """A new session for ``shard`` (its servers forgot the old one): a new id, numbers from 1."""
        self.shard_sessions[shard] = [new_client_id(), 0]
        self.sessions_renewed += 1

    def renumber(self, op: Op) -> Op:
        """``op`` as an operation of its shard's current session, with the next number."""
        client, seq = self._number(op[5])
        return (op[0], op[1], op[2], client, seq, op[5])

    @staticmethod
    def expired(op: Op, client: int, seq: int, maybe_applied: bool, why: str = "") -> SessionExpiredError:
        return SessionExpiredError("shardkv", describe(op[0], op[1]) + why, client, seq, maybe_applied)

    def servers_for(self, shard: int) -> tuple[int, tuple[str, ...]]:
        """The gid owning ``shard`` in the cached configuration, and its servers (empty if none)."""
        assert self.config is not None
        gid = self.config.shards[shard]
        return gid, self.config.groups.get(gid, ())

    def next_server(self, gid: int, i: int, n: int, reply: Any) -> int:
        """The server to try after server ``i`` of group ``gid`` answered ``reply`` (not ok)."""
        return next_server(i, n, reply)

    def update_config(self, config: Config) -> None:
        if self.config is None or config.num > self.config.num:
            self.config = config

    @staticmethod
    def refused(op: Op, result: OpError) -> ShardKVRequestError:
        return ShardKVRequestError(describe(op[0], op[1]), result.code, result.message)


class Clerk(ClerkCore):
    """A synchronous clerk. Thread-safe, but one operation at a time (calls from several threads are
    serialised); use one clerk per thread, or an :class:`~shardkv.async_clerk.AsyncClerk`, for
    concurrency. It blocks (its router's blocking ``call``): never use it inside an async actor.
    """

    def __init__(self, router: Any, ctrlers: tuple[str, ...] | list[str], **options: Any) -> None:
        super().__init__(router, ctrlers, **options)
        self.ctrler = CtrlerClerk(self.ctrler_endpoints.ensure(),  # type: ignore[arg-type]
                                  attempt_timeout=self.attempt_timeout, retry_pause=self.retry_pause,
                                  session_ttl=self.session_ttl)
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

    def query(self, *, timeout: float | None = None) -> Config:
        """Ask the controller for the latest configuration (and cache it)."""
        check_timeout(timeout)
        config = self.ctrler.query(-1, timeout=timeout)
        self.update_config(config)
        return config

    def _run(self, kind: int, key: Any, value: Any, timeout: float | None) -> Any:
        check_timeout(timeout)
        with self._lock:
            deadline = None if timeout is None else time.monotonic() + timeout
            check_key(key, self.max_key_bytes)
            if self.config is None:
                self._refresh(deadline, None, describe(kind, key), -1, [], "no attempt")
            assert self.config is not None
            op = self.make_op(kind, key, value, self.config.nshards)
            return self._send(op, deadline, timeout)

    def _send(self, op: Op, deadline: float | None, timeout: float | None) -> Any:
        what, shard = describe(op[0], op[1]), op[5]
        tried: list[str] = []
        last = "no attempt"
        batch = (op,)
        start, attempts = time.monotonic(), 0
        while True:
            gid, servers = self.servers_for(shard)
            n = len(servers)
            i = self.leaders.get(gid, 0) % n if n else 0
            for _ in range(n):
                if self.give_up_s is not None and time.monotonic() - start > self.give_up_s:
                    self.renew_shard(shard)
                    raise self.expired(op, op[3], op[4], True, " (resent for half the session TTL)")
                wait = self._remaining(deadline, what, timeout, shard, tried, last)
                name = servers[i]
                if name not in tried:
                    tried.append(name)
                reply = self._call(name, batch, min(wait, self.attempt_timeout))
                attempts += 1
                if isinstance(reply, tuple) and reply[0] == OK:
                    result = reply[1][0]
                    if is_wrong_group(result):
                        last = f"{name}: wrong group (configuration {self._num()})"
                        break
                    self.leaders[gid] = i
                    if isinstance(result, SessionExpired):
                        self.renew_shard(shard)
                        if op[0] != GET:
                            raise self.expired(op, result.client_id, result.seq, attempts > 1)
                        op = self.renumber(op)  # a read: again, in the new session
                        batch, start, attempts = (op,), time.monotonic(), 0
                        continue
                    if isinstance(result, OpError):
                        raise self.refused(op, result)
                    return result
                if isinstance(reply, tuple) and reply[0] == INVALID:
                    raise ShardKVRequestError(what, INVALID, f"{name} refused the call: {reply[1]}")
                last = f"{name}: {outcome(reply)}"
                i = self.next_server(gid, i, n, reply)
            self._refresh(deadline, timeout, what, shard, tried, last)

    def _refresh(self, deadline: float | None, timeout: float | None, what: str, shard: int,
                 tried: list[str], last: str) -> None:
        """Pause, then ask the controller for the latest configuration (within the deadline)."""
        pause = self.retry_pause
        if deadline is not None:
            pause = min(pause, max(0.0, deadline - time.monotonic()))
        if self.config is not None:
            time.sleep(pause)
        wait = self._remaining(deadline, what, timeout, shard, tried, last)
        try:
            self.update_config(self.ctrler.query(-1, timeout=wait if deadline is not None else None))
        except CtrlerTimeoutError as e:
            last = f"the controller did not answer: {e}"
            self._remaining(deadline, what, timeout, shard, tried, last)

    def _remaining(self, deadline: float | None, what: str, timeout: float | None, shard: int,
                   tried: list[str], last: str) -> float:
        """Seconds left before the deadline (a large number without one); raises once it passed."""
        if deadline is None:
            return 3600.0
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ShardKVTimeoutError(what, timeout or 0.0, shard, self._num(), tried, last)
        return remaining

    def _num(self) -> int:
        return self.config.num if self.config is not None else -1

    def _call(self, server: str, ops: tuple[Op, ...], wait: float) -> Any:
        """One attempt: the reply, ``NO_ANSWER`` after ``wait`` seconds, or ``None`` for a failed call
        (the router looks a server up again after one: it may have been replaced)."""
        return self.router.call(server, "kv", (ops,), wait)
