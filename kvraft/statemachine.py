"""The KV state machine: Get / Put / Append with exactly-once semantics, hosted by a replica actor.

State: ``data`` (key -> value; a missing key reads as ``""``) and the *dedup table* ``sessions``
(client id -> the highest ``seq`` applied for that client).

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

Invariants: ``apply`` is deterministic (same snapshot + same entries -> same state and results) and
total: an entry that is not a well-formed batch (servers refuse those before proposing, but a log
may hold anything) yields a :class:`~kvraft.ops.Rejected` result and changes nothing, on every
replica alike, instead of raising (an exception would stop the replica from applying the entries
behind it, and the replicas would diverge); a batch is applied atomically, all of it or none (no
await inside); ``snapshot()`` / ``restore()`` round-trip the whole state, dedup table included.
"""

from __future__ import annotations

import pickle
from typing import Any

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
        self.sessions: dict[int, int] = {}
        self.last_applied = 0
        self.applied_ops = 0
        self.duplicates = 0
        self.rejected = 0  # entries that were not well-formed batches (nothing of them applied)
        # The persisted size reported with the last snapshot request: the size only drops once the
        # replica has saved the snapshot, so the same size again means "already asked".
        self._asked_at_size = -1

    # -- StateMachine protocol -------------------------------------------------------------------

    def apply(self, index: int, command: Any) -> list[str | None] | Rejected | None:
        """Apply one log entry (a :data:`~kvraft.ops.Batch`, or ``None`` for a no-op).

        Returns one result per operation: the value for a Get, ``None`` for a Put or an Append; or
        :class:`~kvraft.ops.Rejected` (and changes nothing) if the entry is not a well-formed batch.
        Never raises for any command.
        """
        self.last_applied = index
        if command is None:
            return None
        problem = batch_problem(command)
        if problem is not None:
            self.rejected += 1
            return Rejected(problem)
        return self.apply_batch(command)

    def apply_batch(self, batch: Batch) -> list[str | None]:
        """Apply a well-formed batch (see :func:`~kvraft.ops.batch_problem`)."""
        data, sessions = self.data, self.sessions
        results: list[str | None] = []
        for kind, key, value, client, seq in batch:
            if kind == GET:
                results.append(data.get(key, ""))
                if seq > sessions.get(client, 0):
                    sessions[client] = seq
                continue
            results.append(None)
            if seq <= sessions.get(client, 0):
                self.duplicates += 1
                continue
            sessions[client] = seq
            if kind == PUT:
                data[key] = value  # type: ignore[assignment]
            elif kind == APPEND:
                data[key] = data.get(key, "") + value  # type: ignore[operator]
        self.applied_ops += len(batch)
        return results

    def snapshot(self) -> bytes:
        """The whole state after the last applied entry: data and dedup table."""
        return pickle.dumps((self.data, self.sessions), protocol=_PICKLE_PROTOCOL)

    def restore(self, data: bytes, index: int) -> None:
        """Replace the whole state with a snapshot covering the log up to ``index``."""
        self.data, self.sessions = pickle.loads(data)
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

    def stats(self) -> dict[str, int]:
        return {
            "keys": len(self.data),
            "clients": len(self.sessions),
            "last_applied": self.last_applied,
            "applied_ops": self.applied_ops,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
        }
