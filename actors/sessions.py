"""Client sessions that expire through the log (Raft thesis §6.3): log time, session tables, and what a
clerk whose session expired is told. Pure: no Ray, no asyncio, no clock (the services' state machines
import it).

**Why.** Every service remembers, per client, the last sequence number it applied (the *dedup table*),
so that a resent request is applied at most once. Without expiry that table holds one entry per clerk
ever used and only grows. Expiring idle sessions bounds it, but the decision to forget a client must be
the same on every replica, at the same point of the log, or the replicas would disagree about which
request is a duplicate.

**Log time.** So the time comes from the log, never from a replica's clock: the leader's shell stamps
every entry it proposes with its wall-clock time in milliseconds and the session TTL (:func:`stamp`:
``(STAMP, time_ms, ttl_ms, command)``). A state machine keeps a :class:`LogClock`: its ``now_ms`` is the
largest stamp applied so far (``max(previous, stamped)``, so log time never runs backwards when a new
leader's clock is behind), and its ``ttl_ms`` is the last entry's TTL. Both are part of every snapshot.
An entry without a stamp (a log written before stamping, the Raft suites' recorder) leaves the clock as
it is and expires nothing.

**Sessions.** A :class:`SessionTable` maps a client id to ``[last_seq, last_ms, extra]`` (``extra``: what
the service remembers besides the number, e.g. the controller's last results). Every request of a known
client refreshes ``last_ms`` to the log time of its entry; since log time never decreases, the table is
kept in order of last activity (an ``OrderedDict``; a refreshed client moves to the end), so expiry only
looks at the front. After every stamped entry's clock update, the state machine calls
:meth:`SessionTable.expire`: every client idle for longer than the TTL (``last_ms < now_ms - ttl_ms``)
is forgotten, and the table remembers that it has forgotten someone (``forgot``).

**The rule that keeps exactly-once.** A request from a client the table does not know is executed only
if it cannot be a resend of something forgotten: it is the client's first request (``seq == 1``), or the
table has never forgotten anybody. Otherwise it is refused, changes nothing, and its result is
:class:`SessionExpired`; the clerk raises :class:`SessionExpiredError`. So a request that was applied and
then had its session expire is never applied again: a later copy of it (``seq > 1``) finds the client
unknown and the table ``forgot``. The one request the rule cannot protect is a session's *first*
(``seq == 1``), resent after the session expired; the clerks never resend a request for longer than half
the TTL (their own clock: the one place where a clock outside the log matters, and only through its
rate), so that copy cannot exist while clock rates agree within a factor of two.

**Readers renew through the log.** A read served without the log (ReadIndex, :mod:`actors.reads`)
touches no table, so a client that only reads would look idle and expire. So a read of a session
idle for longer than half the TTL goes through the log instead (:func:`renewal_due`, asked by the
state machines' ``read()``): its entry refreshes the session like any request, and the client's next
write is not refused. "Idle" is measured against the newer of the log clock and the leader's own
clock (which stamps the next entry): when nothing else is written the log clock stands still, but the
next entry's stamp will not. The choice of path is not replicated state (both paths are
linearizable), so a clock may decide it; what the session table holds is still decided by the log
alone. A reading session thus costs at most about one log entry per half TTL (the reads already in
flight when its renewal is decided may go through the log too).

Invariants (checked by the unit and property tests): the same entries give the same tables, entries in
the same order, and the same clock on every replica, whatever snapshots were taken or restored on the
way; every table is ordered by ``last_ms`` and no ``last_ms`` is above the clock; no request is executed
twice.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

#: the tag of a stamped log entry ``(STAMP, time_ms, ttl_ms, command)``
STAMP = "ts"
#: default session TTL: a client idle for longer than this is forgotten (and then told so)
DEFAULT_SESSION_TTL_S = 3600.0


def ttl_ms(session_ttl: float | None) -> int:
    """The TTL in whole milliseconds for ``session_ttl`` seconds; ``None`` means never expire (``0``).

    Raises ``TypeError`` / ``ValueError`` (saying what to pass) for anything else than ``None`` or a
    finite number of seconds >= 0.001.
    """
    if session_ttl is None:
        return 0
    if isinstance(session_ttl, bool) or not isinstance(session_ttl, (int, float)):
        raise TypeError(f"session_ttl must be a number of seconds (or None: never expire), got "
                        f"{type(session_ttl).__name__}: {session_ttl!r:.60}")
    if not math.isfinite(session_ttl) or session_ttl < 0.001:
        raise ValueError(f"session_ttl must be a finite number of seconds >= 0.001 (or None: never "
                         f"expire), got {session_ttl!r}")
    return max(1, round(session_ttl * 1000))


def stamp(command: Any, time_ms: int, ttl: int) -> tuple[str, int, int, Any]:
    """``command`` stamped with the proposing leader's wall-clock time and the session TTL (ms)."""
    return (STAMP, time_ms, ttl, command)


def unstamp(entry: Any) -> tuple[int | None, int, Any]:
    """``(time_ms, ttl_ms, command)`` of a stamped entry; ``(None, 0, entry)`` for any other entry.

    Total: a tuple that merely looks stamped but has non-int fields is treated as unstamped (and the
    service then rejects it as it would any malformed command).
    """
    if (type(entry) is tuple and len(entry) == 4 and type(entry[0]) is str and entry[0] == STAMP
            and type(entry[1]) is int and type(entry[2]) is int):
        return entry[1], entry[2], entry[3]
    return None, 0, entry


def renewal_due(last_ms: int, now_ms: int, ttl: int) -> bool:
    """Whether a read of a session last active at ``last_ms`` (log time) should go through the log at
    ``now_ms``, to refresh the session: idle for longer than half the TTL ``ttl`` (``0``: never)."""
    return ttl > 0 and now_ms - last_ms > ttl // 2


@dataclass(slots=True)
class LogClock:
    """The newest log time applied (``now_ms``, never decreasing) and the TTL of the last stamped
    entry (``ttl_ms``; ``0``: nothing expires)."""

    now_ms: int = 0
    ttl_ms: int = 0

    def advance(self, time_ms: int | None, ttl: int) -> bool:
        """Take an entry's stamp (``None``: unstamped, nothing changes). Returns whether it was
        stamped, i.e. whether the caller should expire sessions now."""
        if time_ms is None:
            return False
        self.ttl_ms = ttl
        if time_ms > self.now_ms:
            self.now_ms = time_ms
        return True

    def for_read(self, now_ms: int = 0, ttl: int | None = None) -> tuple[int, int]:
        """``(now, ttl)`` to judge a read by: the newer of the log clock and ``now_ms`` (the reading
        leader's clock, which stamps the next entry; ``0``: the log clock alone), and ``ttl`` (the TTL
        the leader stamps; ``None``: the last stamped entry's)."""
        return max(self.now_ms, now_ms), self.ttl_ms if ttl is None else ttl


@dataclass(frozen=True, slots=True)
class SessionExpired:
    """The result of a request refused because its client's session is unknown (expired) and the
    request is not the client's first: nothing of it was applied."""

    client_id: int
    seq: int


class SessionTable:
    """client id -> ``[last_seq, last_ms, extra]``, in order of last activity (see the module
    docstring). ``forgot``: some session has expired from this table; ``expired``: how many."""

    __slots__ = ("entries", "expired", "forgot")

    def __init__(self, entries: Iterable[tuple[int, list[Any]]] = (), forgot: bool = False,
                 expired: int = 0) -> None:
        self.entries: OrderedDict[int, list[Any]] = OrderedDict(entries)
        self.forgot = forgot
        self.expired = expired

    # -- the rule --------------------------------------------------------------------------------

    def get(self, client: int) -> list[Any] | None:
        return self.entries.get(client)

    def readable(self, client: int, now_ms: int, ttl: int) -> bool:
        """Whether a read of ``client`` may be served without the log at ``now_ms`` (ms, the newer of
        the log clock and the reading leader's clock) under the TTL ``ttl``: its session is known and
        not due for renewal (:func:`renewal_due`). Otherwise only the log can answer: it opens the
        session, refuses it as expired, or refreshes it."""
        entry = self.entries.get(client)
        return entry is not None and not renewal_due(entry[1], now_ms, ttl)

    def refuses(self, client: int, seq: int) -> bool:
        """Whether a request ``seq`` of ``client`` must be refused: the client is unknown, the request
        is not its first, and the table has forgotten a session (it may have been this one)."""
        return seq > 1 and self.forgot and client not in self.entries

    def open(self, client: int, now_ms: int, extra: Any = None) -> list[Any]:
        """A new session for ``client`` (unknown until now), active at ``now_ms``; returns its entry."""
        entry = [0, now_ms, extra]
        self.entries[client] = entry
        return entry

    def touch(self, client: int, entry: list[Any], now_ms: int) -> None:
        """``client`` (whose entry is ``entry``) was active at ``now_ms`` (>= its last activity)."""
        if entry[1] != now_ms:
            entry[1] = now_ms
            self.entries.move_to_end(client)

    def expire(self, now_ms: int, ttl: int) -> int:
        """Forget every client idle for longer than ``ttl`` ms at ``now_ms`` (``ttl <= 0``: none).
        Returns how many were forgotten."""
        if ttl <= 0 or not self.entries:
            return 0
        horizon = now_ms - ttl
        gone = []
        for client, entry in self.entries.items():
            if entry[1] >= horizon:
                break
            gone.append(client)
        for client in gone:
            del self.entries[client]
        if gone:
            self.forgot = True
            self.expired += len(gone)
        return len(gone)

    # -- moving tables (shardkv) -----------------------------------------------------------------

    def copy(self) -> SessionTable:
        """An independent copy (entries copied too)."""
        return SessionTable(((c, list(e)) for c, e in self.entries.items()), self.forgot, self.expired)

    def installed(self, now_ms: int) -> SessionTable:
        """A copy for a group whose log time is ``now_ms``: every ``last_ms`` above it is lowered to it
        (the sending group's clock may be ahead), then re-ordered by ``last_ms`` (stably), so the
        copy keeps the table's order invariant under the receiving group's clock."""
        rows = [(c, [e[0], min(e[1], now_ms), e[2]]) for c, e in self.entries.items()]
        rows.sort(key=lambda row: row[1][1])
        return SessionTable(rows, self.forgot, self.expired)

    @classmethod
    def from_seqs(cls, seqs: dict[int, int], now_ms: int) -> SessionTable:
        """A table from the old form ``{client: last_seq}`` (snapshots and payloads written before
        sessions expired), every client active at ``now_ms``."""
        return cls((c, [s, now_ms, None]) for c, s in seqs.items())

    # -- queries ---------------------------------------------------------------------------------

    def seqs(self) -> dict[int, int]:
        """client id -> last applied seq."""
        return {c: e[0] for c, e in self.entries.items()}

    def clear(self) -> None:
        """Forget every session *without* a trace (``forgot`` unchanged): only the planted fault
        ``kv_no_dedup`` does this, to prove the tests catch a dedup table that loses entries."""
        self.entries.clear()

    def __getitem__(self, client: int) -> list[Any]:
        return self.entries[client]

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, client: object) -> bool:
        return client in self.entries

    def __iter__(self) -> Iterator[int]:
        return iter(self.entries)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SessionTable):
            return NotImplemented
        return (list(self.entries.items()) == list(other.entries.items()) and self.forgot == other.forgot
                and self.expired == other.expired)

    __hash__ = None  # type: ignore[assignment]

    def __getstate__(self) -> tuple[list[tuple[int, list[Any]]], bool, int]:
        return list(self.entries.items()), self.forgot, self.expired

    def __setstate__(self, state: tuple[list[tuple[int, list[Any]]], bool, int]) -> None:
        entries, self.forgot, self.expired = state
        self.entries = OrderedDict(entries)

    def __repr__(self) -> str:
        return f"SessionTable({len(self.entries)} sessions, forgot={self.forgot}, expired={self.expired})"


class SessionExpiredError(RuntimeError):
    """A clerk's request was refused because its session expired: the client was idle for longer than
    the service's session TTL, so the servers forgot its dedup entry and can no longer tell a resend
    from a new request. Nothing of the refused request was applied now; if it was a resend
    (``maybe_applied``), an earlier copy may have been applied before the session expired. The clerk
    has already moved to a new session: retry if the operation is idempotent, or after checking.

    Fields: ``service``, ``operation`` (description), ``client_id`` and ``seq`` (of the expired
    session), ``maybe_applied``.
    """

    def __init__(self, service: str, operation: str, client_id: int, seq: int,
                 maybe_applied: bool = True) -> None:
        earlier = ("an earlier copy of it may have been applied before the session expired"
                   if maybe_applied else "it was never applied")
        super().__init__(
            f"{service}: {operation} was refused: the session of client {client_id} expired (idle for "
            f"longer than the service's session TTL) before its request {seq} was applied; nothing of "
            f"it was applied now ({earlier}). The clerk has started a new session: retry the operation "
            f"if it is safe to repeat, or raise session_ttl when starting the service")
        self.service = service
        self.operation = operation
        self.client_id = client_id
        self.seq = seq
        self.maybe_applied = maybe_applied

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.service, self.operation, self.client_id, self.seq, self.maybe_applied),
                self.__dict__)
