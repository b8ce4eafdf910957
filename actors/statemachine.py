"""The contract between a replica actor and the service it replicates, and the Raft tests' recorder.

A :class:`StateMachine` is deterministic: given the same snapshot and the same sequence of applied
commands, every replica reaches the same state and returns the same results. The replica actor
applies committed entries in index order, restores from snapshots, and asks the state machine when
to take a snapshot.
"""

from __future__ import annotations

import pickle
from typing import Any, Protocol

#: What a service state machine's ``read(op, now_ms, ttl)`` returns for a read only the log can answer
#: (malformed, or a client the dedup table must first open, refuse or renew): the replica then
#: proposes the whole batch instead of serving it with ReadIndex (:mod:`actors.reads`). Defined here,
#: in a module without Ray, so the pure state machines can name it.
NEEDS_LOG: Any = type("NeedsLog", (), {"__repr__": lambda self: "NEEDS_LOG"})()


class StateMachine(Protocol):
    """What a replicated service implements (hashicorp/raft calls this the FSM)."""

    def apply(self, index: int, command: Any) -> Any:
        """Apply the committed ``command`` at log ``index`` and return its result.

        Called once per committed entry, in index order, with no gaps after a snapshot.
        """

    def snapshot(self) -> bytes:
        """Serialise the state after the last applied entry."""

    def restore(self, data: bytes, index: int) -> None:
        """Replace the whole state with a snapshot covering the log up to ``index``."""

    def should_snapshot(self, applied_index: int, raft_state_size: int) -> bool:
        """Whether to snapshot now, after applying ``applied_index``."""


class ApplyRecorder:
    """The Raft suites' state machine, as the reference ``applierSnap``: it keeps every command applied
    so far (``log``: index -> command), and with ``snapshot_interval`` set it asks for a snapshot
    whenever ``(index + 1) % snapshot_interval == 0``; its snapshot holds every command up to the
    snapshot's index, so a peer restored from one can still be cross-checked command by command.

    It is the peer's state and nothing more: a restart builds a new one, which a snapshot restores.
    The tests' record of what was applied is not kept here (a crash would lose it) but in the
    harness's :class:`~actors.ledger.ApplyLedger`, which also checks that entries arrive in order.
    """

    def __init__(self, snapshot_interval: int | None = None) -> None:
        self.snapshot_interval = snapshot_interval
        self.log: dict[int, Any] = {}
        self.last_applied = 0

    def apply(self, index: int, command: Any) -> Any:
        self.log[index] = command
        self.last_applied = index
        return None

    def snapshot(self) -> bytes:
        return pickle.dumps((self.last_applied, [self.log.get(i) for i in range(1, self.last_applied + 1)]))

    def restore(self, data: bytes, index: int) -> None:
        last, commands = pickle.loads(data)
        if last != index:
            raise ValueError(f"snapshot for index {index} holds the commands up to {last}")
        self.log = {i + 1: c for i, c in enumerate(commands)}
        self.last_applied = last

    def should_snapshot(self, applied_index: int, raft_state_size: int) -> bool:
        return self.snapshot_interval is not None and (applied_index + 1) % self.snapshot_interval == 0
