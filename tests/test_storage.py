"""Unit tests of actors.storage (no Ray): semantics, sizes, durability and corruption detection."""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from actors.storage import (
    FileStorage,
    MemoryStorage,
    Storage,
    StorageClosedError,
    StorageCorruptionError,
    StorageError,
    StorageLockedError,
)
from raft.types import NO_VOTE, Entry, HardState, PersistentState, Snapshot

pytestmark = pytest.mark.timeout(120)


def ents(first: int, last: int, term: int, tag: str = "c") -> tuple[Entry, ...]:
    return tuple(Entry(term, i, f"{tag}{i}") for i in range(first, last + 1))


def entry_size(e: Entry) -> int:
    """The documented encoding: 8 bytes of term + the pickled command."""
    return 8 + len(pickle.dumps(e.command, protocol=5))


@pytest.fixture(params=["memory", "file"])
def make_storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Storage]]:
    opened: list[Storage] = []

    def make() -> Storage:
        s: Storage = MemoryStorage() if request.param == "memory" else FileStorage(tmp_path / "s")
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
# FileStorage: durability, fsyncs, locking, corruption
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = os.fsync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    return calls


def test_file_reopen_after_close(tmp_path: Path) -> None:
    with FileStorage(tmp_path) as s:
        s.save(HardState(1, 0), ents(1, 10, 1), None)
        s.save(None, ents(8, 12, 2), None)
        s.save(HardState(2, 1), (), Snapshot(9, 2, b"nine"))
        s.save(HardState(3, NO_VOTE), ents(13, 14, 3), None)
        expected = s.load()
        size = s.raft_state_size()
    with FileStorage(tmp_path) as s:
        assert s.load() == expected
        assert s.raft_state_size() == size
        assert s.snapshot_size() == 4
        s.save(None, ents(14, 15, 3, "n"), None)
    with FileStorage(tmp_path) as s:
        assert s.load().entries == ents(10, 12, 2) + ents(13, 13, 3) + ents(14, 15, 3, "n")


def test_file_one_fsync_per_save(tmp_path: Path, fsyncs: list[int]) -> None:
    s = FileStorage(tmp_path)
    s.load()  # creating the log costs fsyncs of its own
    fsyncs.clear()
    s.save(HardState(1, 0), ents(1, 100, 1), None)
    assert len(fsyncs) == 1
    s.save(None, ents(50, 60, 1), None)
    s.save(HardState(2, 0), (), None)
    assert len(fsyncs) == 3
    s.save(None, (), None)  # nothing to persist
    assert len(fsyncs) == 3
    # A snapshot: snapshot temp file, directory, log temp file, directory.
    s.save(HardState(2, 1), ents(61, 62, 2), Snapshot(30, 1, b"s"))
    assert len(fsyncs) == 7
    s.close()


def test_file_log_is_compacted_on_snapshot(tmp_path: Path) -> None:
    s = FileStorage(tmp_path)
    wal = tmp_path / FileStorage.WAL_NAME
    big = tuple(Entry(1, i, "x" * 1000) for i in range(1, 101))
    s.save(HardState(1, 0), big, None)
    for k in range(10):  # churn: rewrite the tail many times
        s.save(None, tuple(Entry(1, i, "y" * 1000) for i in range(91, 101)), None)
        s.save(HardState(1 + k, 0), (), None)
    assert wal.stat().st_size > 200_000
    s.save(None, (), Snapshot(99, 1, b"snap"))
    assert wal.stat().st_size < 2_000
    assert s.load().entries == (Entry(1, 100, "y" * 1000),)
    s.close()
    with FileStorage(tmp_path) as s2:
        assert s2.load().entries == (Entry(1, 100, "y" * 1000),)
        assert s2.load().hard_state == HardState(10, 0)
    assert not list(tmp_path.glob("*.tmp"))


def test_file_lock(tmp_path: Path) -> None:
    s = FileStorage(tmp_path)
    with pytest.raises(StorageLockedError, match="in use"):
        FileStorage(tmp_path)
    with pytest.raises(StorageLockedError):
        FileStorage(tmp_path, lock_timeout=0.1)
    s.close()
    FileStorage(tmp_path).close()  # free again


def test_file_crash_between_snapshot_and_log_rewrite(tmp_path: Path) -> None:
    """A crash after the snapshot was replaced but before the log was rewritten recovers the state
    the interrupted save would have produced, minus its entries and hard state (never acknowledged)."""
    with FileStorage(tmp_path) as s:
        s.save(HardState(1, 0), ents(1, 10, 1), None)
    saved_wal = (tmp_path / FileStorage.WAL_NAME).read_bytes()
    with FileStorage(tmp_path) as s:
        s.save(HardState(2, 0), ents(11, 11, 2), Snapshot(6, 1, b"six"))
    (tmp_path / FileStorage.WAL_NAME).write_bytes(saved_wal)  # as if the rename never happened
    with FileStorage(tmp_path) as s:
        assert s.load() == PersistentState(HardState(1, 0), Snapshot(6, 1, b"six"), ents(7, 10, 1))
        assert s.raft_state_size() == 16 + sum(map(entry_size, ents(7, 10, 1)))


def _saved_dir(tmp_path: Path) -> Path:
    d = tmp_path / "d"
    with FileStorage(d) as s:
        s.save(HardState(1, 0), ents(1, 3, 1), None)
        s.save(HardState(2, 1), ents(4, 5, 2), None)
    return d


def test_file_flipped_byte_is_detected(tmp_path: Path) -> None:
    d = _saved_dir(tmp_path)
    wal = d / FileStorage.WAL_NAME
    good = wal.read_bytes()
    for offset in range(len(good)):
        data = bytearray(good)
        data[offset] ^= 0x40
        wal.write_bytes(bytes(data))
        with FileStorage(d) as s, pytest.raises(StorageCorruptionError) as info:
            s.load()
        msg = str(info.value)
        assert str(wal) in msg
        assert "byte offset" in msg
        assert "delete it" in msg or "backup" in msg  # says what to do


def test_file_truncated_mid_record(tmp_path: Path) -> None:
    d = _saved_dir(tmp_path)
    wal = d / FileStorage.WAL_NAME
    good = wal.read_bytes()
    with FileStorage(d) as s:
        whole = s.load()
    for cut in (len(good) - 1, len(good) - 10, len(good) - 30, 12):
        wal.write_bytes(good[:cut])
        with FileStorage(d) as s, pytest.raises(StorageCorruptionError, match="truncated") as info:
            s.load()
        assert info.value.offset is not None
        assert "repair_torn_tail=True" in str(info.value)
    # Repair cuts the torn record off and keeps every complete save before it.
    wal.write_bytes(good[:-1])
    with FileStorage(d, repair_torn_tail=True) as s:
        state = s.load()
        assert state.entries == whole.entries  # the last save was the hard state alone
        assert state.hard_state == HardState(1, 0)
        s.save(HardState(3, 0), (), None)  # appends after the repaired end
    with FileStorage(d) as s:
        assert s.load().hard_state == HardState(3, 0)


def test_file_damage_before_last_record_is_never_repaired(tmp_path: Path) -> None:
    d = _saved_dir(tmp_path)
    wal = d / FileStorage.WAL_NAME
    data = bytearray(wal.read_bytes())
    data[20] ^= 0xFF  # inside the first record's payload
    wal.write_bytes(bytes(data))
    with FileStorage(d, repair_torn_tail=True) as s, pytest.raises(StorageCorruptionError,
                                                                   match="checksum"):
        s.load()


def test_file_garbled_snapshot(tmp_path: Path) -> None:
    d = tmp_path / "d"
    with FileStorage(d) as s:
        s.save(HardState(1, 0), ents(1, 5, 1), None)
        s.save(None, (), Snapshot(3, 1, b"snapshot-data" * 10))
    snap = d / FileStorage.SNAPSHOT_NAME
    good = snap.read_bytes()
    for damaged in (good[:-1], good[:20], good + b"x", good[:40] + b"Y" + good[41:],
                    b"Z" + good[1:], good[:9] + b"\x07" + good[10:]):
        snap.write_bytes(damaged)
        with FileStorage(d) as s, pytest.raises(StorageCorruptionError) as info:
            s.load()
        assert str(snap) in str(info.value)
    snap.unlink()
    with FileStorage(d) as s, pytest.raises(StorageCorruptionError, match="snapshot file is missing"):
        s.load()


def test_file_missing_log_with_snapshot(tmp_path: Path) -> None:
    d = tmp_path / "d"
    with FileStorage(d) as s:
        s.save(None, ents(1, 2, 1), None)
        s.save(None, (), Snapshot(1, 1, b"x"))
    (d / FileStorage.WAL_NAME).unlink()
    with FileStorage(d) as s, pytest.raises(StorageCorruptionError, match="missing"):
        s.load()


def test_file_failed_write_poisons_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = FileStorage(tmp_path)
    s.save(HardState(1, 0), ents(1, 2, 1), None)

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(OSError):
        s.save(None, ents(3, 3, 1), None)
    monkeypatch.undo()
    with pytest.raises(StorageError, match="reopen"):
        s.save(None, ents(3, 3, 1), None)
    s.close()


# --------------------------------------------------------------------------------------------------
# Property test: FileStorage (with reopens) == MemoryStorage (with copies) == a naive model
# --------------------------------------------------------------------------------------------------


class Model:
    """The simplest possible implementation of the semantics, written independently."""

    def __init__(self) -> None:
        self.hs = HardState()
        self.snap = Snapshot()
        self.hs_saved = False
        self.log: dict[int, Entry] = {}

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

    def last(self) -> int:
        return max(self.log, default=self.snap.index)


commands = st.one_of(st.none(), st.integers(), st.text(max_size=20), st.binary(max_size=50))


class StorageMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="raykv-storage-"))
        self.file = FileStorage(self.dir)
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
