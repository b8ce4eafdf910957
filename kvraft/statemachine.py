"""The KV state machine: Get / Put / Append with exactly-once semantics, hosted by a replica actor.

State: ``data`` (key -> value; a missing key reads as ``""``), the *dedup table* ``sessions`` (a
:class:`~actors.sessions.SessionTable`: client id -> the highest ``seq`` applied for that client and the
log time of its last request) and the log clock ``clock`` (:class:`~actors.sessions.LogClock`).

Exactly once. A clerk numbers its operations 1, 2, 3, ... and may send one many times (a lost reply,
a timeout, a new leader). An operation is applied only if its ``seq`` is above the client's entry in
the dedup table; otherwise it is a duplicate and changes nothing. This is correct because the
operations of one clerk reach the log in ``seq`` order: a clerk has one batch outstanding at a time
and resends it (possibly with newer operations appended) until a leader answers, and every copy of
an old batch that may still commit sits at a lower log index than anything the clerk sent after it
(terms never decrease along the log, and one leader appends in the order it receives). So once an
operation of a client is applied, no lower ``seq`` of that client can be applied after it.

Results. Put and Append return ``None``. A Get returns the value at the moment its entry is applied,
also when the entry is a duplicate (re-reading is as good as remembering: the duplicate entry is
applied inside the interval of the call that is waiting for it). So the table keeps only the last
``seq`` per client, and it is part of every snapshot: a restored replica still recognises retries.

Sessions expire through the log (:mod:`actors.sessions`): an entry stamped by its leader ``(STAMP,
time_ms, ttl_ms, batch)`` first advances the log clock and forgets every client idle for longer than
the TTL, then its batch is applied. An operation of a client the table does not know is refused with a
:class:`~actors.sessions.SessionExpired` result (nothing applied) unless it is the client's first
(``seq == 1``) or the table has never forgotten anybody: so an operation applied before its session
expired is never applied again.

Invariants: ``apply`` is deterministic (same snapshot + same entries -> same state and results) and
total: an entry that is not a well-formed batch (servers refuse those before proposing, but a log
may hold anything) yields a :class:`~kvraft.ops.Rejected` result and changes nothing, on every
replica alike, instead of raising (an exception would stop the replica from applying the entries
behind it, and the replicas would diverge); a batch is applied atomically, all of it or none (no
await inside); ``snapshot()`` / ``restore()`` round-trip the whole state, dedup table (with its times
and order) and log clock included.
"""

from __future__ import annotations

import pickle
from typing import Any

from actors.sessions import LogClock, SessionExpired, SessionTable, unstamp
from actors.statemachine import NEEDS_LOG
from kvraft.ops import APPEND, GET, PUT, Batch, Rejected, batch_problem

_PICKLE_PROTOCOL = 5


class KVStateMachine:
    """The replicated KV store (implements :class:`actors.statemachine.StateMachine`).

    ``maxraftstate``: ask Raft for a snapshot when the persisted Raft state exceeds this many bytes;
    ``-1`` (or any negative number) never snapshots.
    """

    def __init__(self, maxraftstate: int = -1) -> None:
        self.maxraftstate = maxraftstate
        self.data: dict[str, str] = {}
        self.sessions = SessionTable()
        self.clock = LogClock()
        self.last_applied = 0
        self.applied_ops = 0
        self.duplicates = 0
        self.expired_refused = 0  # operations refused because their session had expired
        self.rejected = 0  # entries that were not well-formed batches (nothing of them applied)
        # The persisted size reported with the last snapshot request: the size only drops once the
        # replica has saved the snapshot, so the same size again means "already asked".
        self._asked_at_size = -1

    # -- StateMachine protocol -------------------------------------------------------------------

    def apply(self, index: int, command: Any) -> list[Any] | Rejected | None:
        """Apply one log entry (a :data:`~kvraft.ops.Batch`, or ``None`` for a no-op; either may be
        stamped with the log time, see :mod:`actors.sessions`).

        Returns one result per operation: the value for a Get, ``None`` for a Put or an Append,
        :class:`~actors.sessions.SessionExpired` for an operation of an expired session; or
        :class:`~kvraft.ops.Rejected` (and changes nothing) if the entry is not a well-formed batch.
        Never raises for any command.
        """
        self.last_applied = index
        time_ms, ttl, command = unstamp(command)
        if self.clock.advance(time_ms, ttl):
            self.sessions.expire(self.clock.now_ms, ttl)
        if command is None:
            return None
        problem = batch_problem(command)
        if problem is not None:
            self.rejected += 1
            return Rejected(problem)
        return self.apply_batch(command)

    def apply_batch(self, batch: Batch) -> list[Any]:
        """Apply a well-formed batch (see :func:`~kvraft.ops.batch_problem`) at the current log time."""
        data, sessions, now = self.data, self.sessions, self.clock.now_ms
        results: list[Any] = []
        for kind, key, value, client, seq in batch:
            session = sessions.get(client)
            if session is None:
                if sessions.refuses(client, seq):
                    results.append(SessionExpired(client, seq))
                    self.expired_refused += 1
                    continue
                session = sessions.open(client, now)
            else:
                sessions.touch(client, session, now)
            if kind == GET:
                results.append(data.get(key, ""))
                if seq > session[0]:
                    session[0] = seq
                continue
            results.append(None)
            if seq <= session[0]:
                self.duplicates += 1
                continue
            session[0] = seq
            if kind == PUT:
                data[key] = value  # type: ignore[assignment]
            elif kind == APPEND:
                data[key] = data.get(key, "") + value  # type: ignore[operator]
        self.applied_ops += len(batch)
        return results

    def snapshot(self) -> bytes:
        """The whole state after the last applied entry: data, dedup table (with times) and log clock."""
        return pickle.dumps((self.data, self.sessions, self.clock.now_ms, self.clock.ttl_ms),
                            protocol=_PICKLE_PROTOCOL)

    def restore(self, data: bytes, index: int) -> None:
        """Replace the whole state with a snapshot covering the log up to ``index`` (also one written
        before sessions expired: ``(data, {client: seq})``, every client then active at time 0)."""
        state = pickle.loads(data)
        if len(state) == 2:
            self.data, self.sessions, self.clock = state[0], SessionTable.from_seqs(state[1], 0), LogClock()
        else:
            self.data, self.sessions = state[0], state[1]
            self.clock = LogClock(state[2], state[3])
        self.last_applied = index

    def should_snapshot(self, applied_index: int, raft_state_size: int) -> bool:
        """Snapshot when the persisted Raft state is above ``maxraftstate`` bytes.

        Within one batch of applied entries the replica reports the same (stale) size until it has
        saved the snapshot; asking again at the same size would only serialise the state again.
        """
        if self.maxraftstate < 0 or raft_state_size <= self.maxraftstate:
            return False
        if raft_state_size == self._asked_at_size:
            return False
        self._asked_at_size = raft_state_size
        return True

    # -- queries ---------------------------------------------------------------------------------

    def get(self, key: str) -> str:
        return self.data.get(key, "")

    def read(self, op: Any, now_ms: int = 0, ttl: int | None = None) -> Any:
        """What the Get ``op`` returns if served now without the log (ReadIndex; nothing changes), or
        :data:`~actors.reads.NEEDS_LOG` if only the log can answer it: not a well-formed Get, a client
        the dedup table does not know (the log opens its session, or refuses it as expired), or a
        session idle for longer than half the TTL (the log refreshes it, so a client that only reads
        does not expire: :func:`~actors.sessions.renewal_due`). ``now_ms`` and ``ttl``: the reading
        leader's clock and the TTL it stamps (see :meth:`~actors.sessions.LogClock.for_read`)."""
        if (not isinstance(op, tuple) or len(op) != 5 or op[0] != GET
                or not self.sessions.readable(op[3], *self.clock.for_read(now_ms, ttl))):
            return NEEDS_LOG
        return self.data.get(op[1], "")

    def stats(self) -> dict[str, int]:
        return {
            "keys": len(self.data),
            "clients": len(self.sessions),
            "sessions_expired": self.sessions.expired,
            "expired_refused": self.expired_refused,
            "log_time_ms": self.clock.now_ms,
            "last_applied": self.last_applied,
            "applied_ops": self.applied_ops,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
        }
