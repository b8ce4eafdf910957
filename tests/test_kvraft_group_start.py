"""start_group on an existing data directory (issue 10, findings 2, 3 and 5), on Ray.

A group restarts on its healthy majority when one replica's storage is damaged or missing, serves,
and reports the damaged replica with the reason in ``status()``; a torn tail is repaired by itself;
a replica is never started empty in place of a lost one; too few healthy replicas, or a directory
of another shape, is a GroupStartError naming each replica and why.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.timeout(180)]


def _first_record_payload(wal: Path) -> int:
    from actors.file_storage import _REC_HEADER, _WAL_MAGIC

    return len(_WAL_MAGIC) + _REC_HEADER.size + 3


def _fill(data_dir: Path, name: str | None = None) -> str:
    import kvraft

    group = kvraft.start_group(3, data_dir=data_dir, name=name)
    try:
        ck = group.clerk()
        for k in range(20):
            ck.put(f"k{k}", f"v{k}", timeout=30)
        ck.append("k0", "+", timeout=30)
        return group.name
    finally:
        group.stop()


def _check_data(group) -> None:
    ck = group.clerk()
    assert ck.get("k0", timeout=30) == "v0+"
    assert all(ck.get(f"k{k}", timeout=30) == f"v{k}" for k in range(1, 20))
    ck.put("after", "restart", timeout=30)
    assert ck.get("after", timeout=30) == "restart"


def test_group_starts_on_its_healthy_majority_and_reports_the_damaged_replica(ray_session, tmp_path):
    """The user story of the issue: one replica's log flipped mid-file, another's torn by 7 bytes."""
    import kvraft

    data_dir = tmp_path / "group"
    name = _fill(data_dir)
    for i in range(3):
        assert (data_dir / f"replica{i}" / "IDENTITY").exists()
    wal1 = data_dir / "replica1" / "raft.wal"
    data = bytearray(wal1.read_bytes())
    at = _first_record_payload(wal1)
    data[at] ^= 0x01  # mid-file: valid records follow
    wal1.write_bytes(bytes(data))
    wal2 = data_dir / "replica2" / "raft.wal"
    wal2.write_bytes(wal2.read_bytes()[:-7])  # a torn tail: repaired by itself

    group = kvraft.start_group(3, data_dir=data_dir)  # no name: the stored one is used
    try:
        assert group.name == name
        assert set(group.failed_at_start) == {1}
        _check_data(group)
        status = group.status()
        assert [s["replica"] for s in status] == [0, 1, 2]
        bad = status[1]
        assert bad["damaged"] and not bad["alive"] and not bad["leader"], bad
        assert "StorageCorruptionError" in bad["reason"] and str(wal1) in bad["reason"], bad
        assert "checksum" in bad["reason"] and "valid record follows" in bad["reason"], bad
        for s in (status[0], status[2]):
            assert s["alive"] and not s["damaged"] and s["reason"] is None, s
        assert sum(s["leader"] for s in status) == 1
        leader = next(s for s in status if s["leader"])
        assert leader["term"] >= 1 and leader["term"] == max(s["term"] for s in status)
    finally:
        group.stop()
    assert wal1.exists() and data_dir.exists(), "stop() must not remove a data_dir it did not make"


def test_missing_replica_is_never_started_empty(ray_session, tmp_path):
    import kvraft
    from kvraft.errors import GroupStartError

    data_dir = tmp_path / "group"
    _fill(data_dir)
    shutil.rmtree(data_dir / "replica0")
    group = kvraft.start_group(3, data_dir=data_dir)
    try:
        _check_data(group)
        st = group.status()[0]
        assert st["damaged"] and "StorageMissingError" in st["reason"] and "does not exist" in st["reason"]
        assert "new=True" in st["reason"]
        assert not (data_dir / "replica0").exists(), "a lost replica must not be recreated empty"
    finally:
        group.stop()

    shutil.rmtree(data_dir / "replica2")
    with pytest.raises(GroupStartError, match="2 of 3 replicas could not start") as info:
        kvraft.start_group(3, data_dir=data_dir)
    assert set(info.value.failed) == {0, 2}
    assert all("does not exist" in why for why in info.value.failed.values())


def test_a_directory_of_another_group_shape_is_refused(ray_session, tmp_path):
    import kvraft
    from kvraft.errors import GroupStartError

    data_dir = tmp_path / "group"
    _fill(data_dir, name="alpha")
    with pytest.raises(GroupStartError) as info:
        kvraft.start_group(5, data_dir=data_dir)
    reasons = info.value.failed
    assert set(reasons) == {0, 1, 2, 3, 4}
    assert all("replicas: expected 5, found 3" in reasons[i] for i in range(3)), reasons
    with pytest.raises(GroupStartError, match="group: expected 'beta', found 'alpha'"):
        kvraft.start_group(3, data_dir=data_dir, name="beta")
    group = kvraft.start_group(3, data_dir=data_dir, name="alpha")  # still whole
    try:
        _check_data(group)
        assert all(s["alive"] for s in group.status())
    finally:
        group.stop()
