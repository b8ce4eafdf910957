"""Storage keeps the group configuration a snapshot records (raft.membership), no Ray.

A snapshot taken after a membership change records the configuration at its index
(``Snapshot.config``); a restarted peer recovers its configuration from that snapshot plus its log, so
both storages must give it back. Snapshots of groups that never changed membership (``config`` None)
are written exactly as before (first file format).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.file_storage import _SNAP_MAGIC, _SNAP_MAGIC2
from actors.storage import FileStorage, MemoryStorage, StorageCorruptionError
from raft.membership import Membership
from raft.types import Entry, HardState, Snapshot

CFG = Membership(frozenset({0, 2, 5}), frozenset({7}))


def _ents(first: int, last: int) -> tuple[Entry, ...]:
    return tuple(Entry(1, i, f"c{i}") for i in range(first, last + 1))


def test_memory_storage_keeps_the_configuration() -> None:
    s = MemoryStorage()
    s.save(HardState(1, 0), _ents(1, 5), None)
    s.save(None, (), Snapshot(4, 1, bytearray(b"snap"), CFG))
    assert s.load().snapshot.config == CFG
    assert s.copy().load().snapshot.config == CFG


def test_file_storage_keeps_the_configuration_across_reopen(tmp_path: Path) -> None:
    d = tmp_path / "r"
    with FileStorage(d, new=True) as s:
        s.save(HardState(1, 0), _ents(1, 5), None)
        s.save(None, (), Snapshot(4, 1, b"snap", CFG))
        assert s.load().snapshot == Snapshot(4, 1, b"snap", CFG)
    assert (d / FileStorage.SNAPSHOT_NAME).read_bytes().startswith(_SNAP_MAGIC2)
    with FileStorage(d) as s:
        st = s.load()
        assert st.snapshot == Snapshot(4, 1, b"snap", CFG) and [e.index for e in st.entries] == [5]
        s.save(None, (), Snapshot(5, 1, b"plain"))  # back to the bootstrap configuration
    assert (d / FileStorage.SNAPSHOT_NAME).read_bytes().startswith(_SNAP_MAGIC)
    with FileStorage(d) as s:
        assert s.load().snapshot == Snapshot(5, 1, b"plain")


def test_a_damaged_configured_snapshot_is_detected(tmp_path: Path) -> None:
    d = tmp_path / "r"
    with FileStorage(d, new=True) as s:
        s.save(HardState(1, 0), _ents(1, 5), None)
        s.save(None, (), Snapshot(3, 1, b"snapshot-data" * 10, CFG))
    snap = d / FileStorage.SNAPSHOT_NAME
    good = snap.read_bytes()
    head = len(_SNAP_MAGIC2) + 8 * 3 + 4 + 4
    for damaged in (good[:-1], good[:20], good + b"x", good[: head + 2] + b"Y" + good[head + 3 :]):
        snap.write_bytes(damaged)
        with FileStorage(d) as s, pytest.raises(StorageCorruptionError) as info:
            s.load()
        assert str(snap) in str(info.value)
