"""The contract between a replica actor and the service it replicates, and the Raft tests' recorder.

A :class:`StateMachine` is deterministic: given the same snapshot and the same sequence of applied
commands, every replica reaches the same state and returns the same results. The replica actor
applies committed entries in index order, restores from snapshots, and asks the state machine when
to take a snapshot.
"""

from __future__ import annotations

import pickle
from typing import Any, Protocol


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
    """The Raft suites' state machine: records every applied command, as the reference applier does.

    It checks that entries arrive in order with no gaps; a violation is recorded in ``errors`` (the
    harness fails the test when it sees one). With ``snapshot_interval`` set, it asks for a snapshot
    whenever ``(index + 1) % snapshot_interval == 0`` (the reference ``applierSnap``), and its snapshot
    holds every command applied so far, so a restored peer can still be cross-checked.

    ``log`` maps index -> command and survives a simulated crash of the peer (in the reference it is
    the tester's record, not the peer's memory); a restore replaces it with the snapshot's contents.
    The replica therefore calls :meth:`reset` on restart instead of building a new recorder
    (``survives_restart``); a real service loses everything and is rebuilt from its snapshot.
    """

    survives_restart = True

    def __init__(self, snapshot_interval: int | None = None) -> None:
        self.snapshot_interval = snapshot_interval
        self.log: dict[int, Any] = {}
        self.last_applied = 0
        self.errors: list[str] = []

    def reset(self) -> None:
        """A restart: the peer re-applies from its snapshot (or from index 1)."""
        self.last_applied = 0

    def apply(self, index: int, command: Any) -> Any:
        if index != self.last_applied + 1:
            self.errors.append(f"applied index {index} out of order (expected {self.last_applied + 1})")
        self.log[index] = command
        self.last_applied = index
        return None

    def snapshot(self) -> bytes:
        return pickle.dumps((self.last_applied, [self.log.get(i) for i in range(1, self.last_applied + 1)]))

    def restore(self, data: bytes, index: int) -> None:
        last, commands = pickle.loads(data)
        if last != index:
            self.errors.append(f"snapshot for index {index} holds state up to {last}")
        self.log = {i + 1: c for i, c in enumerate(commands)}
        self.last_applied = last

    def should_snapshot(self, applied_index: int, raft_state_size: int) -> bool:
        return self.snapshot_interval is not None and (applied_index + 1) % self.snapshot_interval == 0
