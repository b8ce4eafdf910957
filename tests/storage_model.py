"""A naive reference model of the Storage semantics, and a seeded generator of valid saves.

Shared by the storage property test (``test_storage.py``) and the crash-point test
(``test_storage_crashpoints.py``). The model is written independently of ``actors.storage``: a dict
of entries and the rules of the module docstring, nothing clever.
"""

from __future__ import annotations

import pickle
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from raft.types import Entry, HardState, PersistentState, Snapshot


def entry_size(e: Entry) -> int:
    """The documented encoding: 8 bytes of term + the pickled command."""
    return 8 + len(pickle.dumps(e.command, protocol=5))


class Model:
    """The simplest possible implementation of the semantics."""

    def __init__(self) -> None:
        self.hs = HardState()
        self.snap = Snapshot()
        self.hs_saved = False
        self.log: dict[int, Entry] = {}

    def copy(self) -> Model:
        other = Model()
        other.hs, other.snap, other.hs_saved, other.log = self.hs, self.snap, self.hs_saved, dict(self.log)
        return other

    def term_at(self, i: int) -> int | None:
        if i == self.snap.index:
            return self.snap.term
        return self.log[i].term if i in self.log else None

    def save(self, hs: HardState | None, entries: Sequence[Entry], snap: Snapshot | None) -> None:
        if snap is not None:
            matches = self.term_at(snap.index) == snap.term
            self.log = {i: e for i, e in self.log.items() if i > snap.index} if matches else {}
            self.snap = snap
        if entries:
            self.log = {i: e for i, e in self.log.items() if i < entries[0].index}
            self.log.update((e.index, e) for e in entries)
        if hs is not None:
            self.hs = hs
            self.hs_saved = True

    def state(self) -> PersistentState:
        return PersistentState(self.hs, self.snap, tuple(self.log[i] for i in sorted(self.log)))

    def size(self) -> int:
        return (16 if self.hs_saved else 0) + sum(map(entry_size, self.log.values()))

    def last(self) -> int:
        return max(self.log, default=self.snap.index)


Save = tuple[HardState | None, tuple[Entry, ...], Snapshot | None]


@dataclass
class SaveGenerator:
    """Random valid saves for a model: appends (with truncation), hard states, snapshots (at a
    matching entry, at an entry of another term, beyond the log's end), and combinations."""

    rng: random.Random
    term: int = 1
    counter: int = field(default=0)

    def command(self) -> object:
        self.counter += 1
        kind = self.rng.randrange(12)
        if kind == 11:  # now and then a command that spans disk sectors
            return "x" * self.rng.randrange(300, 1500)
        kind %= 4
        if kind == 0:
            return None
        if kind == 1:
            return self.counter
        if kind == 2:
            return f"c{self.counter}" * self.rng.randrange(1, 4)
        return bytes(self.rng.randrange(256) for _ in range(self.rng.randrange(0, 40)))

    def next(self, m: Model) -> Save:
        rng = self.rng
        self.term = max(self.term, m.hs.term)
        r = rng.random()
        if r < 0.5:  # append, possibly overwriting a suffix, possibly with a hard state
            back = rng.randrange(0, 4)
            first = max(m.snap.index + 1, m.last() + 1 - back)
            if rng.random() < 0.3:
                self.term += 1
            es = tuple(Entry(self.term, first + k, self.command()) for k in range(rng.randrange(1, 5)))
            hs = HardState(self.term, rng.randrange(-1, 3)) if rng.random() < 0.4 else None
            return hs, es, None
        if r < 0.7:  # hard state alone
            self.term += rng.randrange(0, 2)
            return HardState(self.term, rng.randrange(-1, 3)), (), None
        # snapshot: at a matching entry, beyond the end, or at an entry with another term
        index = max(m.snap.index, m.last() + rng.randrange(-6, 3))
        known = m.term_at(index)
        if known is not None and (index == m.snap.index or rng.random() < 0.5):
            term = known
        else:
            term = self.term + rng.randrange(0, 2) if known is None else known + 1
            self.term = max(self.term, term)
        snap = Snapshot(index, term, bytes(rng.randrange(256) for _ in range(rng.randrange(0, 30))))
        es = tuple(Entry(self.term, index + 1 + k, self.command()) for k in range(rng.randrange(0, 3)))
        hs = HardState(self.term, rng.randrange(-1, 3)) if rng.random() < 0.5 else None
        return hs, es, snap
