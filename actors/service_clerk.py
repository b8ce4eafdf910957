"""The client side every replicated service shares: identity and numbering, leader finding, retry.

- :class:`ClerkBase`: a clerk's ``client_id`` (random, 62 bits) and its sequence numbers, and the
  retry options every clerk takes (``attempt_timeout``: how long one server is waited for;
  ``retry_pause``: the pause after a full round of failed attempts), checked on construction.
- :class:`GroupClerkCore`: a clerk of *one* Raft group, reached through an endpoint set (servers
  numbered ``0 .. n-1`` in peer-id order, see ``kvraft.endpoints``): it remembers the server that
  answered last, goes to the leader a server names, moves on round the ring after a failed call,
  and turns an ``invalid`` answer into the service's error at once (nothing was proposed, so a retry
  would not help). A service sets :attr:`~GroupClerkCore.timeout_error` and :meth:`~GroupClerkCore.rejected`.
- :class:`SyncGroupClerk`: the blocking retry loop over that core (the endpoint set's blocking
  ``call`` with a deadline per attempt); the asyncio twin, which batches, is
  :class:`actors.service_async_clerk.AsyncGroupClerk` (the endpoint set's ``acall``). Neither knows
  the transport: the endpoint set hides it (:mod:`actors.service_endpoints`).

The kvraft and controller clerks are these with the service's operations on top; the sharded KV's
clerks, which route by configuration to many groups, share :class:`ClerkBase` and the routing rule
(:func:`actors.service_protocol.next_server`).

Invariant: ``seq`` only grows, and an operation's number is taken when it is submitted (after its
checks passed), so the operations of one clerk reach the servers (and the log) in the order of their
numbers, which the services' dedup tables rely on.

Sessions (:mod:`actors.sessions`). A clerk's ``client_id`` and numbers are its *session*; the servers
forget a session idle for longer than their ``session_ttl`` and then refuse its operations (other than
its first) with a :class:`~actors.sessions.SessionExpired` result. The clerk then starts a new session
(:meth:`ClerkBase.new_session`: a new ``client_id``, numbers from 1) and, for a read, simply resends it
in the new session (reading twice is harmless); for a write it raises
:class:`~actors.sessions.SessionExpiredError`, saying whether an earlier copy may have been applied.
And a clerk never resends an operation for longer than half its ``session_ttl`` (it raises
``SessionExpiredError`` instead): a copy of a session's first operation sent after the servers forgot
the session would open it afresh and be applied again, so no such copy may exist.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

from actors.service_endpoints import Endpoints, calls_of
from actors.service_protocol import INVALID, NO_ANSWER, OK, new_client_id, next_server, outcome
from actors.sessions import DEFAULT_SESSION_TTL_S, SessionExpired, SessionExpiredError, ttl_ms

#: default seconds a clerk waits for one server before trying the next
DEFAULT_ATTEMPT_TIMEOUT_S = 1.0
#: default pause after a full round of failed attempts
DEFAULT_RETRY_PAUSE_S = 0.05


class ClerkBase:
    """A clerk's identity, numbering and retry options (see the module docstring)."""

    def __init__(
        self,
        *,
        attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT_S,
        retry_pause: float = DEFAULT_RETRY_PAUSE_S,
        client_id: int | None = None,
        session_ttl: float | None = DEFAULT_SESSION_TTL_S,
    ) -> None:
        ttl = ttl_ms(session_ttl)
        if not attempt_timeout > 0:
            raise ValueError(f"attempt_timeout must be > 0, got {attempt_timeout}")
        if not retry_pause >= 0:
            raise ValueError(f"retry_pause must be >= 0, got {retry_pause}")
        self.attempt_timeout = attempt_timeout
        self.retry_pause = retry_pause
        self.client_id = new_client_id() if client_id is None else client_id
        self.seq = 0
        self.session_ttl = session_ttl
        #: seconds after which the clerk stops resending an operation (half the TTL; None: never)
        self.give_up_s: float | None = ttl / 2000 if ttl else None
        self.sessions_renewed = 0

    def new_session(self) -> None:
        """Start a new session: a new ``client_id``, numbers from 1 (after the servers forgot the old)."""
        self.client_id = new_client_id()
        self.seq = 0
        self.sessions_renewed += 1

    def next_seq(self) -> int:
        """The number of the next operation (call it only once the operation passed its checks)."""
        self.seq += 1
        return self.seq


def op_client(op: Any) -> int:
    """The client id of an operation: kvraft's ``(kind, key, value, client, seq)``, the controller's
    ``(kind, args, client, seq)`` and shardkv's ``(kind, key, value, client, seq, shard)``."""
    return int(op[3] if len(op) in (5, 6) else op[2])


def op_seq(op: Any) -> int:
    """The sequence number of an operation (see :func:`op_client`)."""
    return int(op[4] if len(op) in (5, 6) else op[3])


class GroupClerkCore(ClerkBase):
    """A clerk of one group of servers behind ``endpoints``: leader memory and routing."""

    #: the service's ``TimeoutError`` subclass, built as ``(operation, timeout, servers, last)``
    timeout_error: type[TimeoutError] = TimeoutError
    #: the service's name in a :class:`~actors.sessions.SessionExpiredError`
    service = "service"

    def __init__(self, endpoints: Endpoints, **options: Any) -> None:
        super().__init__(**options)
        if not endpoints.names:
            raise ValueError("a clerk needs at least one server")
        self.endpoints = endpoints
        self.n = len(endpoints.names)
        #: the server that answered last (the reference clerks start from a shuffled list)
        self.leader = random.randrange(self.n)

    @property
    def endpoints(self) -> Any:
        """The endpoint set this clerk calls (assigning another one is allowed: tests wrap it)."""
        return self._endpoints

    @endpoints.setter
    def endpoints(self, endpoints: Any) -> None:
        self._endpoints = endpoints
        #: what the clerk calls: ``endpoints`` itself, or an adapter (see actors.service_endpoints)
        self._calls: Endpoints = calls_of(endpoints)

    def route(self, server: int, reply: Any) -> int:
        """The server to try after ``server`` answered ``reply`` (anything but ``ok``)."""
        return next_server(server, self.n, reply)

    outcome = staticmethod(outcome)

    def rejected(self, server: str, reason: str) -> Exception:
        """The error for a batch that ``server`` refused as malformed (the service's own type)."""
        return ValueError(f"{server} refused the request: {reason}")

    def check_reply(self, server: int, reply: Any) -> None:
        """Raise for an answer that retrying cannot fix (the call itself was malformed)."""
        if isinstance(reply, tuple) and reply[0] == INVALID:
            raise self.rejected(self.endpoints.names[server], str(reply[1]))

    def is_read(self, op: Any) -> bool:
        """Whether ``op`` only reads (a refused read is resent in a new session, not raised)."""
        return False

    def renumber(self, op: Any) -> Any:
        """``op`` as an operation of the current session, with the next number (the service's layout)."""
        raise NotImplementedError

    def describe_op(self, op: Any) -> str:
        """How an error message names ``op``."""
        return repr(op)

    def expired(self, op: Any, result: SessionExpired, maybe_applied: bool) -> SessionExpiredError:
        """The error for ``op``, refused because its session expired (the clerk has moved on)."""
        return SessionExpiredError(self.service, self.describe_op(op), result.client_id, result.seq,
                                   maybe_applied)

    def gave_up(self, op: Any, elapsed: float) -> SessionExpiredError:
        """The error for ``op`` after resending it for half the session TTL (the clerk moves on)."""
        return SessionExpiredError(self.service, f"{self.describe_op(op)} (resent for {elapsed:.0f} s, "
                                                 f"half the session TTL)", op_client(op), op_seq(op), True)

    def failed_attempt(self, name: str, reply: Any, wait: float) -> str:
        """What the attempt on server ``name`` came to, for error messages."""
        return f"{name}: " + (f"no answer within {wait:.2g} s" if reply == NO_ANSWER else self.outcome(reply))


class SyncGroupClerk(GroupClerkCore):
    """The blocking retry loop: :meth:`_send` resends a batch until some leader answers ``ok``.

    Thread-safe, but one operation at a time: callers hold :attr:`_lock` around numbering and
    sending, so the numbers reach the servers in order.
    """

    def __init__(self, endpoints: Endpoints, **options: Any) -> None:
        super().__init__(endpoints, **options)
        self._lock = threading.Lock()

    def _send(self, ops: Any, timeout: float | None, what: str) -> list[Any]:
        """The results of ``ops`` (one per operation) from the leader that applied them; raises
        :attr:`timeout_error` once ``timeout`` passes, :meth:`rejected` for a malformed batch."""
        start = time.monotonic()
        deadline = None if timeout is None else start + timeout
        tried: list[str] = []
        server = self.leader
        failed_in_a_row = 0
        attempts = 0
        last = "no attempt"
        while True:
            wait = self.attempt_timeout
            if self.give_up_s is not None and time.monotonic() - start > self.give_up_s:
                self.new_session()
                raise self.gave_up(ops[0], time.monotonic() - start)
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self.timeout_error(what, timeout, tried, last)  # type: ignore[call-arg]
                wait = min(wait, remaining)
            name = self.endpoints.names[server]
            if name not in tried:
                tried.append(name)
            reply = self._call(server, ops, wait)
            attempts += 1
            if isinstance(reply, tuple) and reply[0] == OK:
                self.leader = server
                results = reply[1]
                refused = [r for r in results if isinstance(r, SessionExpired)]
                if not refused:
                    return results  # type: ignore[no-any-return]
                self.new_session()
                if not all(self.is_read(op) for op in ops):
                    raise self.expired(ops[0], refused[0], attempts > 1)
                ops = tuple(self.renumber(op) for op in ops)  # reads: again, in the new session
                start, attempts = time.monotonic(), 0
                continue
            self.check_reply(server, reply)
            last = self.failed_attempt(name, reply, wait)
            server = self.route(server, reply)
            failed_in_a_row += 1
            if failed_in_a_row % self.n == 0:
                pause = self.retry_pause
                if deadline is not None:
                    pause = min(pause, max(0.0, deadline - time.monotonic()))
                time.sleep(pause)

    def _call(self, server: int, ops: Any, wait: float) -> Any:
        """One attempt: the reply, :data:`~actors.service_protocol.NO_ANSWER` after ``wait``
        seconds, or ``None`` for a failed call."""
        return self._calls.call(server, ops, wait)
