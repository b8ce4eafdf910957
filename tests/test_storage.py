"""Unit tests of actors.storage (no Ray): the semantics both storages share, MemoryStorage, and a property
test of FileStorage (with reopens) against MemoryStorage and a naive model. FileStorage's durability,
identity, damage detection and repair are tested in test_file_storage.py; its crash safety in
test_storage_crashpoints.py."""

from __future__ import annotations

import pickle
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from storage_model import Model, entry_size

from actors.storage import (
    FileStorage,
    MemoryStorage,
    Storage,
    StorageClosedError,
    StorageError,
)
from raft.types import NO_VOTE, Entry, HardState, PersistentState, Snapshot

pytestmark = pytest.mark.timeout(120)


def ents(first: int, last: int, term: int, tag: str = "c") -> tuple[Entry, ...]:
    return tuple(Entry(term, i, f"{tag}{i}") for i in range(first, last + 1))


@pytest.fixture(params=["memory", "file"])
def make_storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Storage]]:
    opened: list[Storage] = []

    def make() -> Storage:
        s: Storage = MemoryStorage() if request.param == "memory" else FileStorage(tmp_path / "s", new=True)
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.close()


# --------------------------------------------------------------------------------------------------
# Semantics shared by both implementations
# --------------------------------------------------------------------------------------------------


def test_fresh_storage_is_empty(make_storage: Callable[[], Storage]) -> None:
    s = make_storage()
    assert isinstance(s, Storage)
    assert s.load() == PersistentState()
    assert s.raft_state_size() == 0
    assert s.snapshot_size() == 0


def test_round_trip(make_storage: Callable[[], Storage]) -> None:
    s = make_storage()
    hs = HardState(3, 1)
    s.save(hs, ents(1, 5, 2), None)
    state = s.load()
    assert state.hard_state == hs
    assert state.entries == ents(1, 5, 2)
    assert state.snapshot == Snapshot()
    # Arbitrary picklable commands, including None (a leader's no-op).
    cmds = [None, {"op": "put", "k": [1, 2]}, b"\x00" * 100, ("append", "k", "v")]
    more = tuple(Entry(4, 6 + k, c) for k, c in enumerate(cmds))
    s.save(HardState(4, NO_VOTE), more, None)
    assert s.load().entries == ents(1, 5, 2) + more
    assert s.load().hard_state == HardState(4, NO_VOTE)


def test_truncation_semantics(make_storage: Callable[[], Storage]) -> None:
    s = make_storage()
    s.save(None, ents(1, 10, 1), None)
    # Entries starting at 6 replace 6..10 entirely, even though the new batch is shorter.
    s.save(None, ents(6, 7, 2, "x"), None)
    assert s.load().entries == ents(1, 5, 1) + ents(6, 7, 2, "x")
    # Appending right after the end.
    s.save(None, ents(8, 8, 2, "y"), None)
    assert s.load().entries[-1] == Entry(2, 8, "y8")
    # Replacing from the first index.
    s.save(None, ents(1, 2, 3, "z"), None)
    assert s.load().entries == ents(1, 2, 3, "z")


def test_contract_violations_raise_and_change_nothing(make_storage: Callable[[], Storage]) -> None:
    s = make_storage()
    s.save(HardState(5, 0), ents(1, 5, 1), None)
    before = s.load()
    size = s.raft_state_size()
    bad_calls: list[tuple[HardState | None, Sequence[Entry], Snapshot | None]] = [
        (None, ents(7, 8, 1), None),  # gap after the last index
        (None, (Entry(1, 3), Entry(1, 5)), None),  # not contiguous
        (None, ents(0, 1, 1), None),  # index 0 is not a log index
        (HardState(4, 0), (), None),  # term goes backwards
        (None, ents(2, 3, 1), Snapshot(3, 1, b"s")),  # entries the snapshot already covers
    ]
    for hs, es, snap in bad_calls:
        with pytest.raises(ValueError):
            s.save(hs, es, snap)
        assert s.load() == before
        assert s.raft_state_size() == size
    s.save(None, (), Snapshot(4, 1, b"s"))
    with pytest.raises(ValueError, match="older"):
        s.save(None, (), Snapshot(3, 1, b"old"))


def test_snapshot_keeps_matching_suffix(make_storage: Callable[[], Storage]) -> None:
    s = make_storage()
    s.save(HardState(2, 0), ents(1, 10, 1) + ents(11, 12, 2), None)
    snap = Snapshot(7, 1, b"seven")
    s.save(None, (), snap)
    state = s.load()
    assert state.snapshot == snap
    assert state.entries == ents(8, 10, 1) + ents(11, 12, 2)
    assert state.hard_state == HardState(2, 0)
    assert s.snapshot_size() == 5


def test_snapshot_with_other_term_or_past_end_drops_log(make_storage: Callable[[], Storage]) -> None:
    s = make_storage()
    s.save(None, ents(1, 10, 1), None)
    s.save(None, (), Snapshot(5, 9, b"x"))  # the entry at 5 has term 1: a different history
    assert s.load().entries == ()
    assert s.load().snapshot.index == 5
    s.save(None, ents(6, 8, 9), None)
    s.save(None, (), Snapshot(20, 9, b"y"))  # beyond the end of the log
    assert s.load().entries == ()
    assert s.raft_state_size() == 0


def test_snapshot_entries_and_hard_state_in_one_save(make_storage: Callable[[], Storage]) -> None:
    """The order is snapshot, then entries, then hard state (Ready's docstring)."""
    s = make_storage()
    s.save(HardState(1, 0), ents(1, 6, 1), None)
    # Install a snapshot from another history at 4, then append after it, then a new term.
    s.save(HardState(3, 2), ents(5, 6, 3), Snapshot(4, 3, b"snap"))
    state = s.load()
    assert state == PersistentState(HardState(3, 2), Snapshot(4, 3, b"snap"), ents(5, 6, 3))
    # A snapshot at the same index and term again (e.g. a repeated InstallSnapshot) is accepted.
    s.save(None, (), Snapshot(4, 3, b"snap2"))
    assert s.load().entries == ents(5, 6, 3)
    assert s.load().snapshot.data == b"snap2"


def test_size_accounting(make_storage: Callable[[], Storage]) -> None:
    s = make_storage()
    s.save(HardState(1, 0), (), None)
    assert s.raft_state_size() == 16
    batch = tuple(Entry(1, i, "v" * i) for i in range(1, 30))
    s.save(None, batch, None)
    assert s.raft_state_size() == 16 + sum(map(entry_size, batch))
    s.save(None, ents(10, 12, 2), None)  # truncate 10..29, append 3
    expected = 16 + sum(map(entry_size, batch[:9])) + sum(map(entry_size, ents(10, 12, 2)))
    assert s.raft_state_size() == expected
    s.save(None, (), Snapshot(11, 2, b"12345"))
    assert s.raft_state_size() == 16 + entry_size(ents(12, 12, 2)[0])
    assert s.snapshot_size() == 5


def test_load_returns_fresh_objects(make_storage: Callable[[], Storage]) -> None:
    s = make_storage()
    cmd = {"k": [1]}
    s.save(None, (Entry(1, 1, cmd),), None)
    cmd["k"].append(2)  # the caller mutates its command after saving
    loaded = s.load().entries[0].command
    assert loaded == {"k": [1]}
    loaded["k"].append(3)
    assert s.load().entries[0].command == {"k": [1]}


def test_use_after_close(make_storage: Callable[[], Storage]) -> None:
    s = make_storage()
    s.close()
    s.close()  # idempotent
    with pytest.raises(StorageClosedError):
        s.save(HardState(1, 0), (), None)
    with pytest.raises(StorageError):
        s.load()


# --------------------------------------------------------------------------------------------------
# MemoryStorage
# --------------------------------------------------------------------------------------------------


def test_memory_copy_is_isolated() -> None:
    a = MemoryStorage()
    a.save(HardState(1, 0), ents(1, 3, 1), Snapshot(0, 0, b""))
    b = a.copy()
    a.save(HardState(2, 1), ents(3, 5, 2), Snapshot(2, 1, b"a"))  # the "dead" instance writes on
    assert b.load() == PersistentState(HardState(1, 0), Snapshot(), ents(1, 3, 1))
    b.save(HardState(7, 7), ents(4, 4, 7), None)
    assert a.load().hard_state == HardState(2, 1)
    assert a.load().entries == ents(3, 5, 2)
    assert b.raft_state_size() == 16 + sum(map(entry_size, ents(1, 3, 1) + ents(4, 4, 7)))
    # A closed instance can still be copied (the harness copies after a crash).
    a.close()
    assert a.copy().load().snapshot == Snapshot(2, 1, b"a")


def test_memory_storage_pickles() -> None:
    a = MemoryStorage()
    a.save(HardState(1, 0), ents(2, 3, 1), Snapshot(1, 1, b"x"))
    b = pickle.loads(pickle.dumps(a))
    assert b.load() == a.load()
    assert b.raft_state_size() == a.raft_state_size()


def test_memory_snapshot_data_is_owned() -> None:
    a = MemoryStorage()
    data = bytearray(b"abc")
    a.save(None, (), Snapshot(0, 0, data))  # type: ignore[arg-type]
    data[0] = ord("X")
    assert a.load().snapshot.data == b"abc"


# --------------------------------------------------------------------------------------------------
# Property test: FileStorage (with reopens) == MemoryStorage (with copies) == a naive model
# --------------------------------------------------------------------------------------------------


commands = st.one_of(st.none(), st.integers(), st.text(max_size=20), st.binary(max_size=50))


class StorageMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="raykv-storage-"))
        self.file = FileStorage(self.dir, new=True)
        self.mem = MemoryStorage()
        self.model = Model()
        self.term = 1

    def teardown(self) -> None:
        self.file.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _save(self, hs: HardState | None, es: Sequence[Entry], snap: Snapshot | None) -> None:
        self.model.save(hs, es, snap)
        self.mem.save(hs, es, snap)
        self.file.save(hs, es, snap)

    @rule(back=st.integers(0, 6), cmds=st.lists(commands, max_size=6), bump=st.booleans())
    def append(self, back: int, cmds: list[object], bump: bool) -> None:
        m = self.model
        first = max(m.snap.index + 1, m.last() + 1 - back)
        if not cmds and first > m.last():
            return
        self.term += bump
        self._save(None, tuple(Entry(self.term, first + k, c) for k, c in enumerate(cmds)), None)

    @rule(bump=st.integers(0, 2), vote=st.integers(-1, 4))
    def hard_state(self, bump: int, vote: int) -> None:
        self.term += bump
        self._save(HardState(self.term, vote), (), None)

    @rule(ahead=st.integers(-8, 3), same_term=st.booleans(), data=st.binary(max_size=40),
          cmds=st.lists(commands, max_size=3), vote=st.none() | st.integers(-1, 4))
    def snapshot(self, ahead: int, same_term: bool, data: bytes, cmds: list[object],
                 vote: int | None) -> None:
        m = self.model
        index = max(m.snap.index, m.last() + ahead)
        known = m.term_at(index)
        term = known if (same_term or index == m.snap.index) and known is not None else self.term
        snap = Snapshot(index, term, data)
        hs = None if vote is None else HardState(self.term, vote)
        es = tuple(Entry(self.term, index + 1 + k, c) for k, c in enumerate(cmds))
        self._save(hs, es, snap)

    @rule()
    def reopen_file(self) -> None:
        self.file.close()
        self.file = FileStorage(self.dir)

    @rule()
    def copy_memory(self) -> None:
        old = self.mem
        self.mem = old.copy()
        old.save(HardState(10_000, 0), (), None)  # the dead instance's writes must not leak

    @precondition(lambda self: self.model.last() > 0)
    @rule()
    def noop_save(self) -> None:
        self._save(None, (), None)

    @invariant()
    def all_agree(self) -> None:
        expected = self.model.state()
        assert self.mem.load() == expected
        assert self.file.load() == expected
        size = (16 if self.model.hs_saved else 0) + sum(map(entry_size, expected.entries))
        assert self.mem.raft_state_size() == size
        assert self.file.raft_state_size() == size
        assert self.file.snapshot_size() == self.mem.snapshot_size() == len(expected.snapshot.data)


TestStorageMachine = StorageMachine.TestCase
TestStorageMachine.settings = settings(
    max_examples=60, stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
