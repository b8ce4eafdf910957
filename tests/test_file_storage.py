"""FileStorage (no Ray): durability, fsync counts, locking, identity, and what each kind of damage does.

Damage a crash can leave (a torn or zero-filled tail, a snapshot newer than the log) is repaired on
open with a warning, and the files are rewritten to the recovered state; damage a crash cannot explain
(a bad record followed by a valid one, a garbled last record without zero-filled sectors, a garbled
snapshot, a missing log or identity) raises StorageCorruptionError; a missing or never-created
directory raises StorageMissingError unless the replica is created with new=True.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from storage_model import entry_size

from actors.file_storage import _REC_HEADER, _WAL_MAGIC
from actors.storage import (
    FileStorage,
    StorageCorruptionError,
    StorageError,
    StorageIdentityError,
    StorageLockedError,
    StorageMissingError,
)
from raft.types import NO_VOTE, Entry, HardState, PersistentState, Snapshot

pytestmark = pytest.mark.timeout(120)


def ents(first: int, last: int, term: int, tag: str = "c") -> tuple[Entry, ...]:
    return tuple(Entry(term, i, f"{tag}{i}") for i in range(first, last + 1))


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every os.fsync ("fsync") and os.fdatasync ("fdatasync") call, in order."""
    calls: list[str] = []
    for name in ("fsync", "fdatasync"):
        real = getattr(os, name)

        def counting(fd: int, name: str = name, real: Callable[[int], None] = real) -> None:
            calls.append(name)
            real(fd)

        monkeypatch.setattr(os, name, counting)
    return calls


def record_offsets(wal: Path) -> list[int]:
    """The byte offset of every record in a whole log (which ends at its end or at its zero region)."""
    data = wal.read_bytes()
    pos, out = len(_WAL_MAGIC), []
    while pos < len(data) and data.count(0, pos) != len(data) - pos:
        out.append(pos)
        length = _REC_HEADER.unpack_from(data, pos)[0]
        pos += _REC_HEADER.size + length
    assert pos <= len(data)
    return out


def logical_end(wal: Path) -> int:
    """Where the log's records end (its pre-zeroed region starts there)."""
    data = wal.read_bytes()
    offsets = record_offsets(wal)
    if not offsets:
        return len(_WAL_MAGIC)
    return offsets[-1] + _REC_HEADER.size + _REC_HEADER.unpack_from(data, offsets[-1])[0]


def trim(wal: Path) -> bytes:
    """Cut the log's zero region off (a log as an older raykv, or a log rewrite, leaves it); return
    the bytes left."""
    data = wal.read_bytes()[: logical_end(wal)]
    wal.write_bytes(data)
    return data


# --------------------------------------------------------------------------------------------------
# Durability, fsyncs, locking
# --------------------------------------------------------------------------------------------------


def test_file_reopen_after_close(tmp_path: Path) -> None:
    with FileStorage(tmp_path, new=True) as s:
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


def test_file_one_fsync_per_save(tmp_path: Path, fsyncs: list[str]) -> None:
    """A save is one fdatasync into the pre-zeroed region; growing the region costs one fsync."""
    s = FileStorage(tmp_path, new=True)
    s.load()
    fsyncs.clear()
    s.save(HardState(1, 0), ents(1, 100, 1), None)
    assert fsyncs == ["fsync", "fdatasync"]  # the first append grows the region
    s.save(None, ents(50, 60, 1), None)
    s.save(HardState(2, 0), (), None)
    assert fsyncs[2:] == ["fdatasync", "fdatasync"]
    s.save(None, (), None)  # nothing to persist
    assert len(fsyncs) == 4
    # A snapshot: snapshot temp file, directory, log temp file, directory (all fsync).
    s.save(HardState(2, 1), ents(61, 62, 2), Snapshot(30, 1, b"s"))
    assert fsyncs[4:] == ["fsync"] * 4
    s.save(HardState(2, 1), ents(63, 63, 2), None)  # the rewritten log grows a region again
    assert fsyncs[8:] == ["fsync", "fdatasync"]
    s.close()


def test_each_save_is_one_record(tmp_path: Path) -> None:
    """Entries and hard state of one save share one record, so a crash never keeps half a save."""
    with FileStorage(tmp_path, new=True) as s:
        s.save(HardState(1, 0), ents(1, 3, 1), None)
        s.save(HardState(2, 1), ents(4, 5, 2), None)
        s.save(HardState(3, 1), (), None)
    assert len(record_offsets(tmp_path / FileStorage.WAL_NAME)) == 3


def test_file_log_is_compacted_on_snapshot(tmp_path: Path) -> None:
    s = FileStorage(tmp_path, new=True)
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
    s = FileStorage(tmp_path, new=True)
    with pytest.raises(StorageLockedError, match="in use"):
        FileStorage(tmp_path)
    with pytest.raises(StorageLockedError):
        FileStorage(tmp_path, lock_timeout=0.1)
    s.close()
    FileStorage(tmp_path).close()  # free again


def test_file_failed_write_poisons_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = FileStorage(tmp_path, new=True)
    s.save(HardState(1, 0), ents(1, 2, 1), None)

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing)
    monkeypatch.setattr(os, "fdatasync", failing)
    with pytest.raises(OSError):
        s.save(None, ents(3, 3, 1), None)
    monkeypatch.undo()
    with pytest.raises(StorageError, match="reopen"):
        s.save(None, ents(3, 3, 1), None)
    s.close()
    with FileStorage(tmp_path) as s:  # the save never returned: either outcome is a correct state
        assert s.load().entries in (ents(1, 2, 1), ents(1, 3, 1))
        s.save(None, ents(3, 4, 2), None)
    with FileStorage(tmp_path) as s:
        assert s.load().entries == ents(1, 2, 1) + ents(3, 4, 2)


# --------------------------------------------------------------------------------------------------
# Identity: a replica is created explicitly, never by a missing directory
# --------------------------------------------------------------------------------------------------


def test_missing_directory_refuses_to_start(tmp_path: Path) -> None:
    d = tmp_path / "gone"
    with pytest.raises(StorageMissingError, match="does not exist") as info:
        FileStorage(d)
    assert info.value.path == d
    assert "new=True" in str(info.value)
    assert not d.exists()  # nothing was created


def test_empty_directory_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(StorageMissingError, match="holds no replica"):
        FileStorage(tmp_path)
    with FileStorage(tmp_path, new=True, identity={"group": "g", "replica": 1}) as s:
        assert s.load() == PersistentState()
        assert s.identity == {"format": 2, "group": "g", "replica": 1}
    assert FileStorage.read_identity(tmp_path) == {"format": 2, "group": "g", "replica": 1}


def test_new_refuses_an_existing_replica(tmp_path: Path) -> None:
    with FileStorage(tmp_path, new=True, identity={"replica": 0}) as s:
        s.save(HardState(3, 1), ents(1, 2, 3), None)
    with pytest.raises(StorageIdentityError, match="already holds replica") as info:
        FileStorage(tmp_path, new=True, identity={"replica": 0})
    assert info.value.found == {"format": 2, "replica": 0}
    with FileStorage(tmp_path) as s:  # untouched
        assert s.load().hard_state == HardState(3, 1)


def test_identity_mismatch(tmp_path: Path) -> None:
    with FileStorage(tmp_path, new=True, identity={"group": "a", "replica": 0}):
        pass
    with pytest.raises(StorageIdentityError, match="replica: expected 1, found 0") as info:
        FileStorage(tmp_path, identity={"group": "a", "replica": 1})
    assert info.value.expected == {"group": "a", "replica": 1}
    FileStorage(tmp_path, identity={"group": "a"}).close()  # only the given keys are compared


def test_deleted_log_without_snapshot_is_detected(tmp_path: Path) -> None:
    with FileStorage(tmp_path, new=True) as s:
        s.save(HardState(5, 2), ents(1, 3, 5), None)
    (tmp_path / FileStorage.WAL_NAME).unlink()
    with FileStorage(tmp_path) as s, pytest.raises(StorageCorruptionError, match="log is missing"):
        s.load()


def test_deleted_identity_with_state_is_detected(tmp_path: Path) -> None:
    with FileStorage(tmp_path, new=True) as s:
        s.save(HardState(5, 2), ents(1, 3, 5), None)
    (tmp_path / FileStorage.IDENTITY_NAME).unlink()
    with pytest.raises(StorageCorruptionError, match="identity file is missing"):
        FileStorage(tmp_path)
    with pytest.raises(StorageIdentityError, match="refusing to overwrite"):
        FileStorage(tmp_path, new=True)


def test_garbled_identity_is_detected(tmp_path: Path) -> None:
    with FileStorage(tmp_path, new=True, identity={"replica": 3}):
        pass
    path = tmp_path / FileStorage.IDENTITY_NAME
    good = path.read_bytes()
    for bad in (good[:-3], good.replace(b"3", b"4"), b"", b"x" + good[1:]):
        path.write_bytes(bad)
        with pytest.raises(StorageCorruptionError, match="identity file is garbled"):
            FileStorage(tmp_path)


def test_interrupted_creation_can_be_redone(tmp_path: Path) -> None:
    """A crash after the empty log but before the identity file: nothing was ever saved there."""
    with FileStorage(tmp_path, new=True):
        pass
    (tmp_path / FileStorage.IDENTITY_NAME).unlink()
    (tmp_path / "IDENTITY.tmp").write_bytes(b"partial")
    with pytest.raises(StorageMissingError, match="creation was interrupted"):
        FileStorage(tmp_path)
    with FileStorage(tmp_path, new=True) as s:
        assert s.load() == PersistentState()
    assert not list(tmp_path.glob("*.tmp"))


def test_old_format_is_named(tmp_path: Path) -> None:
    with FileStorage(tmp_path, new=True):
        pass
    (tmp_path / FileStorage.WAL_NAME).write_bytes(b"RKVWAL1\n" + b"\x00" * 20)
    with FileStorage(tmp_path) as s, pytest.raises(StorageCorruptionError, match="older raykv"):
        s.load()


# --------------------------------------------------------------------------------------------------
# A crash between replacing the snapshot and rewriting the log (finding 1 of issue 10)
# --------------------------------------------------------------------------------------------------


def _crash_between_snapshot_and_log(d: Path, snapshot: Snapshot) -> None:
    """Save entries 1..5 of term 1, then a snapshot, and put back the log as it was before the
    snapshot's save rewrote it (as if the crash came right after the snapshot's rename)."""
    with FileStorage(d, new=True) as s:
        s.save(HardState(1, 0), ents(1, 5, 1), None)
    saved_wal = (d / FileStorage.WAL_NAME).read_bytes()
    with FileStorage(d) as s:
        s.save(HardState(9, 0), (), snapshot)
    (d / FileStorage.WAL_NAME).write_bytes(saved_wal)


def test_crash_between_snapshot_and_log_matching_term(tmp_path: Path) -> None:
    _crash_between_snapshot_and_log(tmp_path, Snapshot(3, 1, b"three"))
    with FileStorage(tmp_path) as s:
        assert s.load() == PersistentState(HardState(1, 0), Snapshot(3, 1, b"three"), ents(4, 5, 1))
        assert s.raft_state_size() == 16 + sum(map(entry_size, ents(4, 5, 1)))
        s.save(HardState(2, 1), ents(6, 7, 2), None)
    with FileStorage(tmp_path) as s:
        assert s.load() == PersistentState(HardState(2, 1), Snapshot(3, 1, b"three"),
                                           ents(4, 5, 1) + ents(6, 7, 2))


def test_crash_between_snapshot_and_log_snapshot_beyond_the_log(tmp_path: Path) -> None:
    """Before the fix the next reopen failed: 'entries record starts at index 101, but the log
    replayed so far covers 1..5'."""
    _crash_between_snapshot_and_log(tmp_path, Snapshot(100, 7, b"far"))
    with FileStorage(tmp_path) as s:
        assert s.load() == PersistentState(HardState(1, 0), Snapshot(100, 7, b"far"), ())
        s.save(HardState(7, 2), ents(101, 103, 7), None)
    with FileStorage(tmp_path) as s:
        assert s.load() == PersistentState(HardState(7, 2), Snapshot(100, 7, b"far"), ents(101, 103, 7))
        s.save(None, ents(104, 104, 7), None)
    with FileStorage(tmp_path) as s:
        assert s.load().entries == ents(101, 104, 7)


def test_crash_between_snapshot_and_log_other_term(tmp_path: Path) -> None:
    """Before the fix, entries saved after this recovery came back as () on the next reopen."""
    _crash_between_snapshot_and_log(tmp_path, Snapshot(4, 3, b"other history"))
    with FileStorage(tmp_path) as s:
        assert s.load() == PersistentState(HardState(1, 0), Snapshot(4, 3, b"other history"), ())
        s.save(HardState(3, 1), ents(5, 8, 3), None)
    with FileStorage(tmp_path) as s:
        assert s.load() == PersistentState(HardState(3, 1), Snapshot(4, 3, b"other history"),
                                           ents(5, 8, 3))


def test_recovery_rewrites_the_log_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _crash_between_snapshot_and_log(tmp_path, Snapshot(100, 7, b"far"))
    with caplog.at_level(logging.WARNING, "raykv.storage"), FileStorage(tmp_path) as s:
        s.load()
    assert "newer than the log" in caplog.text and "rewrote the log" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, "raykv.storage"), FileStorage(tmp_path) as s:
        s.load()
    assert caplog.text == ""  # the files now hold the recovered state


# --------------------------------------------------------------------------------------------------
# Torn and zero-filled tails are repaired; other damage is refused
# --------------------------------------------------------------------------------------------------


def _saved_dir(tmp_path: Path) -> Path:
    d = tmp_path / "d"
    with FileStorage(d, new=True) as s:
        s.save(HardState(1, 0), ents(1, 3, 1), None)
        s.save(HardState(2, 1), ents(4, 5, 2), None)
    trim(d / FileStorage.WAL_NAME)  # damage below is laid at the file's end (see also the region tests)
    return d


def test_file_flipped_byte_is_detected(tmp_path: Path) -> None:
    """A flipped bit anywhere in the log is refused, never repaired (nothing in it is zero-filled)."""
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
        assert "delete" in msg or "backup" in msg  # says what to do


def test_torn_tail_is_repaired(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = _saved_dir(tmp_path)
    wal = d / FileStorage.WAL_NAME
    good = wal.read_bytes()
    last = record_offsets(wal)[-1]
    for cut in range(last, len(good)):  # every torn length of the last save's record
        wal.write_bytes(good[:cut])
        caplog.clear()
        with caplog.at_level(logging.WARNING, "raykv.storage"), FileStorage(d) as s:
            assert s.load() == PersistentState(HardState(1, 0), Snapshot(), ents(1, 3, 1))
        assert wal.read_bytes() == good[:last]  # cut, and the file holds what was recovered
        if cut > last:
            assert f"byte offset {last}; cut off the last {cut - last} bytes" in caplog.text
    with FileStorage(d) as s:  # the repaired log takes further saves
        s.save(HardState(3, 0), ents(4, 4, 3), None)
    with FileStorage(d) as s:
        assert s.load() == PersistentState(HardState(3, 0), Snapshot(), ents(1, 3, 1) + ents(4, 4, 3))


def test_zero_tail_is_the_clean_end(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An all-zero tail behind the last valid record (the pre-zeroed region, or a last write that
    never reached the disk at all) is the log's clean end: no warning, nothing cut, appends go there."""
    d = _saved_dir(tmp_path)
    wal = d / FileStorage.WAL_NAME
    good = wal.read_bytes()
    last = record_offsets(wal)[-1]
    cases = {
        "zeros after the last save": (good + b"\x00" * 700, ents(1, 3, 1) + ents(4, 5, 2)),
        "the last save's record zeroed": (good[:last] + b"\x00" * (len(good) - last), ents(1, 3, 1)),
    }
    for name, (data, expected) in cases.items():
        wal.write_bytes(data)
        caplog.clear()
        with caplog.at_level(logging.WARNING, "raykv.storage"), FileStorage(d) as s:
            assert s.load().entries == expected, name
        assert caplog.text == "", name
        assert wal.read_bytes() == data, name  # nothing cut
        with FileStorage(d) as s:
            s.save(HardState(3, 0), (Entry(3, len(expected) + 1, "after"),), None)
        with FileStorage(d) as s:
            assert s.load().entries == (*expected, Entry(3, len(expected) + 1, "after")), name


# --------------------------------------------------------------------------------------------------
# The pre-zeroed region
# --------------------------------------------------------------------------------------------------


def test_region_is_grown_ahead_and_appends_do_not_change_the_size(tmp_path: Path) -> None:
    wal = tmp_path / FileStorage.WAL_NAME
    with FileStorage(tmp_path, new=True, grow_min=4096, grow_max=16384) as s:
        s.load()
        assert wal.stat().st_size == len(_WAL_MAGIC)
        s.save(HardState(1, 0), ents(1, 1, 1), None)
        size = wal.stat().st_size
        assert size >= 4096 and logical_end(wal) < size
        s.save(None, ents(2, 3, 1), None)
        assert wal.stat().st_size == size  # written into the region
        sizes = {size}
        for i in range(4, 400):
            s.save(HardState(1, 0), (Entry(1, i, "x" * 300),), None)
            sizes.add(wal.stat().st_size)
        steps = sorted(b - a for a, b in zip(sorted(sizes), sorted(sizes)[1:], strict=False))
        assert steps and max(steps) <= 16384 + 4096  # doubling, capped
        assert wal.read_bytes()[logical_end(wal):].count(0) == wal.stat().st_size - logical_end(wal)
        expected = s.load()
    with FileStorage(tmp_path) as s:
        assert s.load() == expected


def test_reopen_and_append_many_times(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with FileStorage(tmp_path, new=True, grow_min=1024, grow_max=4096) as s:
        s.load()
    wal = tmp_path / FileStorage.WAL_NAME
    for i in range(1, 80):
        with caplog.at_level(logging.WARNING, "raykv.storage"), FileStorage(
                tmp_path, grow_min=1024, grow_max=4096) as s:
            assert s.load().entries == tuple(Entry(1, k, f"v{k}" * (k % 7)) for k in range(1, i))
            s.save(HardState(1, 0), (Entry(1, i, f"v{i}" * (i % 7)),), None)
        assert record_offsets(wal)  # records, then zeros only
    assert caplog.text == ""


def test_compaction_then_append(tmp_path: Path) -> None:
    """A snapshot rewrites the log without a region; the next append grows one again."""
    wal = tmp_path / FileStorage.WAL_NAME
    with FileStorage(tmp_path, new=True, grow_min=4096, grow_max=4096) as s:
        s.save(HardState(1, 0), ents(1, 20, 1), None)
        s.save(None, (), Snapshot(15, 1, b"snap"))
        assert wal.stat().st_size == logical_end(wal)  # just rewritten: no region
        s.save(HardState(2, 1), ents(21, 22, 2), None)
        assert wal.stat().st_size > logical_end(wal)
        s.save(None, ents(23, 23, 2), Snapshot(21, 2, b"snap2"))
        s.save(None, ents(24, 25, 2), None)
        expected = s.load()
    assert expected.entries == ents(22, 23, 2) + ents(24, 25, 2)
    with FileStorage(tmp_path) as s:
        assert s.load() == expected
        s.save(None, ents(26, 26, 2), None)
    with FileStorage(tmp_path) as s:
        assert s.load().entries == expected.entries + ents(26, 26, 2)


def _region_dir(tmp_path: Path) -> tuple[Path, Path, bytes, int, int]:
    """A log with two saves and a region behind them: (dir, wal, bytes, last record, logical end)."""
    d = tmp_path / "d"
    with FileStorage(d, new=True, grow_min=8192, grow_max=8192) as s:
        s.save(HardState(1, 0), ents(1, 3, 1), None)
        s.save(HardState(2, 1), (Entry(2, 4, "x" * 1500),), None)
    wal = d / FileStorage.WAL_NAME
    data = wal.read_bytes()
    end = logical_end(wal)
    assert len(data) > end + 1024
    return d, wal, data, record_offsets(wal)[-1], end


def test_torn_record_inside_the_region_is_cut(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A crash during a pwrite into the region: a prefix of the record, or some of its sectors, reached
    the disk; the rest shows the region's zeros. Cut, with a warning."""
    d, wal, good, last, _end = _region_dir(tmp_path)
    zeroed = bytearray(good)
    zeroed[1024:1536] = bytes(512)  # a middle sector of the last record never written
    for name, data in {"prefix": good[:last + 700] + bytes(len(good) - last - 700),
                       "header only": good[:last + 12] + bytes(len(good) - last - 12),
                       "a sector": bytes(zeroed)}.items():
        wal.write_bytes(data)
        caplog.clear()
        with caplog.at_level(logging.WARNING, "raykv.storage"), FileStorage(d) as s:
            assert s.load().entries == ents(1, 3, 1), name
        assert f"byte offset {last}" in caplog.text, name
        assert wal.read_bytes() == good[:last], name
        with FileStorage(d) as s:
            s.save(None, ents(4, 4, 1), None)
        with FileStorage(d) as s:
            assert s.load().entries == ents(1, 4, 1), name


def test_garbage_at_the_logical_end_is_still_refused(tmp_path: Path) -> None:
    """Non-zero bytes that no torn write explains are refused as before, the region behind them
    notwithstanding: a flipped bit in the last record, or a garbage record written over the region."""
    d, wal, good, last, end = _region_dir(tmp_path)
    flipped = bytearray(good)
    flipped[end - 3] ^= 0x01
    garbage = bytearray(good)
    garbage[end : end + 40] = bytes(range(1, 41))
    for name, data, where in (("flipped", flipped, last), ("garbage", garbage, end)):
        wal.write_bytes(bytes(data))
        with FileStorage(d) as s, pytest.raises(StorageCorruptionError,
                                                match="no sign of an interrupted") as info:
            s.load()
        assert info.value.offset == where, name
        assert wal.read_bytes() == bytes(data), name  # nothing cut
    wal.write_bytes(bytes(flipped))
    with FileStorage(d, repair_torn_tail=True) as s:
        assert s.load().entries == ents(1, 3, 1)


def test_crash_mid_growth(tmp_path: Path) -> None:
    """A crash while the region grows leaves the records plus some (unsynced) zeros: the clean end."""
    d, wal, good, _last, end = _region_dir(tmp_path)
    for data in (good[:end], good[:end] + bytes(100), good + bytes(3000)):
        wal.write_bytes(data)
        with FileStorage(d) as s:
            assert s.load().entries == (*ents(1, 3, 1), Entry(2, 4, "x" * 1500))
        assert wal.read_bytes() == data
        with FileStorage(d, grow_min=1024, grow_max=1024) as s:
            s.save(None, ents(5, 5, 2), None)
        with FileStorage(d) as s:
            assert s.load().entries[-1] == Entry(2, 5, "c5")


def test_grow_bounds_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="grow_min"):
        FileStorage(tmp_path, new=True, grow_min=0)


@pytest.mark.parametrize("zeroed", [(2048, 2560), (1024, None), (512, 4096)])
def test_unwritten_sectors_in_a_big_last_save(tmp_path: Path, zeroed: tuple[int, int | None]) -> None:
    """A large last record, its header intact, with sectors the crash left unwritten (zero)."""
    d = tmp_path / "d"
    with FileStorage(d, new=True) as s:
        s.save(HardState(1, 0), ents(1, 3, 1), None)
        s.save(HardState(1, 0), (Entry(1, 4, "x" * 5000),), None)
    wal = d / FileStorage.WAL_NAME
    data = bytearray(trim(wal))
    start, stop = zeroed
    stop = len(data) if stop is None else stop
    data[start:stop] = bytes(stop - start)
    wal.write_bytes(bytes(data))
    with FileStorage(d) as s:
        assert s.load().entries == ents(1, 3, 1)


def test_partly_zeroed_last_record_within_one_sector_is_refused(tmp_path: Path) -> None:
    """A sector is written whole or not at all; zeros in part of one are damage (as etcd decides)."""
    d = _saved_dir(tmp_path)
    wal = d / FileStorage.WAL_NAME
    last = record_offsets(wal)[-1]
    good = wal.read_bytes()
    assert len(good) < 512
    wal.write_bytes(good[: last + 20] + bytes(len(good) - last - 20))
    with FileStorage(d) as s, pytest.raises(StorageCorruptionError, match="no sign of an interrupted"):
        s.load()


def test_damage_before_the_last_record_is_never_repaired(tmp_path: Path) -> None:
    d = _saved_dir(tmp_path)
    wal = d / FileStorage.WAL_NAME
    first, last = record_offsets(wal)
    good = wal.read_bytes()
    for damaged in (
        good[: first + 20] + bytes([good[first + 20] ^ 0xFF]) + good[first + 21 :],  # flipped
        good[:first] + bytes(last - first) + good[last:],  # a zeroed record with a valid one after it
        good[:first] + bytes(10) + good[first + 10 :],  # a zeroed header
    ):
        wal.write_bytes(damaged)
        with FileStorage(d, repair_torn_tail=True) as s, pytest.raises(
                StorageCorruptionError, match=f"a valid record follows at byte offset {last}") as info:
            s.load()
        assert info.value.offset == first
        assert wal.read_bytes() == damaged  # nothing was cut


def test_damaged_last_record_needs_an_explicit_repair(tmp_path: Path) -> None:
    """A flipped bit in the last record looks like nothing a crash leaves: refused, unless the
    operator says the machine crashed (repair_torn_tail=True)."""
    d = _saved_dir(tmp_path)
    wal = d / FileStorage.WAL_NAME
    last = record_offsets(wal)[-1]
    data = bytearray(wal.read_bytes())
    data[-3] ^= 0x01
    wal.write_bytes(bytes(data))
    with FileStorage(d) as s, pytest.raises(StorageCorruptionError, match="no sign of an interrupted"
                                            ) as info:
        s.load()
    assert info.value.offset == last
    assert "repair_torn_tail=True" in str(info.value)
    with FileStorage(d, repair_torn_tail=True) as s:
        assert s.load().entries == ents(1, 3, 1)
    with FileStorage(d) as s:
        assert s.load().entries == ents(1, 3, 1)


def test_file_garbled_snapshot(tmp_path: Path) -> None:
    d = tmp_path / "d"
    with FileStorage(d, new=True) as s:
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
    with FileStorage(d, new=True) as s:
        s.save(None, ents(1, 2, 1), None)
        s.save(None, (), Snapshot(1, 1, b"x"))
    (d / FileStorage.WAL_NAME).unlink()
    with FileStorage(d) as s, pytest.raises(StorageCorruptionError, match="missing"):
        s.load()
