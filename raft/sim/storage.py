"""A peer's stable storage in the simulator: exactly what the Ready contract says, nothing more.

:meth:`MemoryStorage.persist` carries out step 1 of a :class:`raft.types.Ready` in the documented
order (snapshot, then entries, then hard state) as one atomic batch (one "fsync"). A crash loses the
core and everything it had not yet handed out; storage survives, and a restarted core is built from
:meth:`MemoryStorage.state`.

Invariants: ``entries[k].index == snapshot.index + 1 + k``; the stored term never decreases.
"""

from __future__ import annotations

from raft.types import Entry, HardState, PersistentState, Ready, Snapshot


class MemoryStorage:
    __slots__ = ("entries", "hard_state", "snapshot", "writes")

    def __init__(self) -> None:
        self.hard_state = HardState()
        self.snapshot = Snapshot()
        self.entries: list[Entry] = []
        self.writes = 0

    def persist(self, rd: Ready) -> None:
        """Make the persist part of ``rd`` durable (a no-op for a Ready with nothing to persist)."""
        snap = rd.snapshot
        if snap is not None:
            base = self.snapshot.index
            if snap.index < base:
                raise AssertionError(f"snapshot went back from {base} to {snap.index}")
            k = snap.index - base - 1  # position of the stored entry at snap.index
            if 0 <= k < len(self.entries) and self.entries[k].term == snap.term:
                del self.entries[: k + 1]
            elif snap.index == base and snap.term == self.snapshot.term:
                pass
            else:
                self.entries = []
            self.snapshot = snap
        if rd.entries:
            first = rd.entries[0].index
            k = first - self.snapshot.index - 1
            if k < 0 or k > len(self.entries):
                raise AssertionError(
                    f"Ready entries start at {first} but storage holds "
                    f"{self.snapshot.index + 1}..{self.snapshot.index + len(self.entries)}"
                )
            del self.entries[k:]
            self.entries.extend(rd.entries)
        hs = rd.hard_state
        if hs is not None:
            if hs.term < self.hard_state.term:
                raise AssertionError(f"persisted term went back from {self.hard_state.term} to {hs.term}")
            self.hard_state = hs
        if snap is not None or rd.entries or hs is not None:
            self.writes += 1

    def state(self) -> PersistentState:
        """What a restarted core is built from."""
        return PersistentState(self.hard_state, self.snapshot, tuple(self.entries))

    @property
    def last_index(self) -> int:
        return self.snapshot.index + len(self.entries)
