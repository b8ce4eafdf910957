"""Durable storage in a directory: :class:`FileStorage`, and how it recovers from crashes and damage.

Files (all inside the replica's directory):

* ``IDENTITY`` — who this directory belongs to (e.g. group, replica number), written once, atomically,
  when the replica is created with ``new=True``, and checksummed. A directory without it holds no
  replica: opening it without ``new=True`` raises :class:`~actors.storage.StorageMissingError`
  instead of silently starting empty (a peer that voted and acknowledged entries must never come back
  empty by accident). A directory whose identity differs from the one the caller expects raises
  :class:`~actors.storage.StorageIdentityError`.
* ``raft.wal`` — the write-ahead log: the header ``RKVWAL2\\n``, then records
  ``length u32 | crc32(length) u32 | crc32(length, payload) u32 | payload``, the payload being one
  kind byte and a body. Every :meth:`FileStorage.save` appends exactly **one** record (its entries
  and hard state together) with one write and one ``fdatasync``, so a crash leaves either the whole
  save or a torn copy of it, never half of its parts. A save carrying a snapshot instead rewrites the
  log (temp file, fsync, rename, directory fsync) to hold a compaction marker and one record with the
  hard state and the remaining entries.

  **Pre-zeroed region.** The log's *logical end* (behind its last record) is tracked apart from the
  file's size: behind the records the file holds zero bytes, written ahead of need and made durable
  with a full ``fsync`` (growth: at least ``grow_min`` bytes, doubling with the file up to
  ``grow_max`` per step). An append is a ``pwrite`` of its record at the logical end, over those
  zeros, then ``os.fdatasync``: the file's size does not change, so on ext4 and the like the sync
  flushes the data without committing a journal transaction (the only metadata that matters, the
  size, changes only at growth, which is fsynced before any record is written into it; the file is
  never created by growth, so no directory entry changes). An acknowledged save is as durable as
  before. The file's zero tail is never part of the state: a file with no zero tail (an older one, or
  one just rewritten) is simply grown by the next append.
* ``snapshot.bin`` — the latest snapshot, checksummed, replaced atomically (temp file, fsync, rename,
  directory fsync) *before* the log is rewritten.
* ``LOCK`` — held with ``fcntl.flock`` while the storage is open.

Recovery (on first use) leaves the files in exactly the state it recovered to, so that a crash at any
later point, recovery included, recovers the same state again:

* leftover ``*.tmp`` files (a replacement that never got renamed) are removed;
* an **all-zero tail** behind the last valid record is the clean end of the log (the pre-zeroed
  region, or a write that never reached the disk at all): no warning, nothing cut, appends continue
  at its start;
* a **torn tail** — what a crash during a save's write leaves: an incomplete last record, or a last
  record with zero-filled sectors (sectors of the write that never reached the disk, which show the
  region's zeros) — is cut off (truncate, fsync; the next append grows the file again), with a
  warning on the ``raykv.storage`` logger saying what was cut. The save that wrote it never returned,
  so nothing depends on it (etcd repairs its WAL the same way). Only the bytes up to the last
  non-zero one count as the torn write's: the region behind it is not taken for zero-filled sectors
  of the record;
* a **snapshot newer than the log** (a crash between replacing the snapshot and rewriting the log)
  is applied to the log as the interrupted save would have, and the log is rewritten to hold the
  recovered state (temp file, fsync, rename, directory fsync; the old file stays whole until the
  rename), before anything is appended behind it.

Damage that a crash cannot explain is never repaired: a bad record followed by a valid one, a last
record whose checksum fails with no zero-filled sector, a garbled snapshot or identity file, a missing
log. Those raise :class:`~actors.storage.StorageCorruptionError` naming the file, the byte offset and
what to do; nothing is loaded. ``repair_torn_tail=True`` additionally cuts a damaged *last* record
that shows no sign of a torn write (use it only when you know the machine crashed).

Costs: a save without a snapshot costs one fdatasync (plus, now and then, a growth: one write of
zeros and one fsync); a save with one costs four (snapshot temp file,
directory, log temp file, directory); an empty save costs none. Creating a replica costs a few more.

All file-system calls go through an :class:`~actors.files.Files` object (``files=``), so a test can
crash the storage after any single step (see ``tests/test_storage_crashpoints.py``).
"""

from __future__ import annotations

import json
import logging
import struct
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from actors.files import Files, LockBusy, OsFiles
from actors.storage import (
    _HARD_STATE,
    StorageClosedError,
    StorageCorruptionError,
    StorageError,
    StorageIdentityError,
    StorageLockedError,
    StorageMissingError,
    _encode_entry,
    _entry_term,
    _Log,
    _own_snapshot,
)
from raft.membership import Membership
from raft.types import Entry, HardState, PersistentState, Snapshot

__all__ = ["FileStorage"]


def _encode_config(config: Membership) -> bytes:
    return json.dumps({"voters": sorted(config.voters), "learners": sorted(config.learners)},
                      separators=(",", ":")).encode()


def _decode_config(blob: bytes) -> Membership:
    try:
        obj = json.loads(blob)
        return Membership(frozenset(obj["voters"]), frozenset(obj["learners"]))
    except (KeyError, TypeError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(str(exc)) from exc

_log = logging.getLogger("raykv.storage")

_WAL_MAGIC = b"RKVWAL2\n"
_OLD_WAL_MAGIC = b"RKVWAL1\n"
_SNAP_MAGIC = b"RKVSNP1\n"
#: a snapshot that records a group configuration (raft.membership); groups whose configuration never
#: changed write the first format, byte for byte as before
_SNAP_MAGIC2 = b"RKVSNP2\n"
_ID_MAGIC = b"RKVID1\n"
_REC_HEADER = struct.Struct("<III")  # length, crc32(length), crc32(length + payload)
_U32 = struct.Struct("<I")
_KIND_COMPACT = 3  # body: index u64, term u64: log compacted through (index, term) by a snapshot
_KIND_SAVE = 4  # body: flags u8, [term i64, vote i64 if flags & 1], [first u64, count u32, then count x
#                 (length u32, encoded entry) if flags & 2]; the entries apply before the hard state
_HAS_HARD_STATE, _HAS_ENTRIES = 1, 2
_ENTRIES_HEAD = struct.Struct("<QI")
_COMPACT = struct.Struct("<QQ")
# The snapshot file: magic, then index u64, term u64, length u64, crc32 u32, then the data; the CRC is
# taken over index, term, length and the data.
_SNAP_HEADER = struct.Struct("<QQQI")
# The second format: magic, index u64, term u64, length u64, config length u32, crc32 u32, then the
# configuration (JSON: {"voters": [...], "learners": [...]}) and the data; the CRC covers all of it.
_SNAP_HEADER2 = struct.Struct("<QQQII")
_MAX_RECORD = 0xFFFF_FFFF
#: a torn write leaves whole sectors unwritten (zero); records are checked in these file-offset chunks
_SECTOR = 512
#: the pre-zeroed region behind the log's records grows by at least this much, doubling with the file
#: (so a small replica stays small) up to :data:`_GROW_MAX` per growth
_GROW_MIN = 64 << 10
_GROW_MAX = 8 << 20
#: the identity format (stored as "format" in the identity file)
_FORMAT = 2

_ADVICE_RESTORE = (
    "Restore this directory from a backup if there is one. Otherwise the directory can be deleted and "
    "the replica recreated empty (new=True), to catch up from the leader; but it then forgets the votes "
    "it cast and the entries it acknowledged, which Raft's safety depends on (an entry committed with "
    "this replica's help can be lost), so do that only while the other replicas are up and caught up "
    "with the leader"
)
_ADVICE_LAST = (
    "If you know the machine crashed while this record was being written, reopen with "
    "FileStorage(directory, repair_torn_tail=True) to cut it off (the save that wrote it then never "
    "returned). Otherwise, " + _ADVICE_RESTORE[0].lower() + _ADVICE_RESTORE[1:]
)
_ADVICE_MISSING = (
    "If this is a new replica, create its storage with FileStorage(directory, new=True) (start_group "
    "does this when it creates a group). If the directory held a replica's state, that state is lost: "
    "restore it from a backup; starting the replica empty in its place makes it forget the votes it "
    "cast and the entries it acknowledged, which Raft's safety depends on, so do that only "
    "deliberately (delete the directory, create it with new=True, and only while the other replicas "
    "are up and caught up with the leader)"
)


# --------------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------------


def _record(kind: int, *body: bytes) -> list[bytes]:
    """The parts of one WAL record (to be joined by the caller)."""
    length = 1 + sum(map(len, body))
    if length > _MAX_RECORD:
        raise StorageError(f"record of {length} bytes is too large for the write-ahead log")
    head = _U32.pack(length)
    crc = zlib.crc32(bytes((kind,)), zlib.crc32(head))
    for part in body:
        crc = zlib.crc32(part, crc)
    return [head, _U32.pack(zlib.crc32(head)), _U32.pack(crc), bytes((kind,)), *body]


def _save_record(hard_state: HardState | None, first: int, blobs: Sequence[bytes]) -> list[bytes]:
    """One save's record: its entries (if any) and hard state (if any)."""
    flags = (_HAS_HARD_STATE if hard_state is not None else 0) | (_HAS_ENTRIES if blobs else 0)
    body = [bytes((flags,))]
    if hard_state is not None:
        body.append(_HARD_STATE.pack(hard_state.term, hard_state.voted_for))
    if blobs:
        body.append(_ENTRIES_HEAD.pack(first, len(blobs)))
        for blob in blobs:
            body.append(_U32.pack(len(blob)))
            body.append(blob)
    return _record(_KIND_SAVE, *body)


def _valid_record_end(data: bytes, pos: int) -> int | None:
    """The end offset of the record at ``pos`` if it is whole and its checksums hold, else None."""
    if len(data) - pos < _REC_HEADER.size:
        return None
    length, length_crc, crc = _REC_HEADER.unpack_from(data, pos)
    end = pos + _REC_HEADER.size + length
    if length == 0 or end > len(data) or zlib.crc32(data[pos : pos + 4]) != length_crc:
        return None
    if zlib.crc32(memoryview(data)[pos + _REC_HEADER.size : end], zlib.crc32(data[pos : pos + 4])) != crc:
        return None
    return end


def _has_zero_sector(data: bytes, start: int, end: int) -> bool:
    """Whether some chunk of ``data[start:end]`` between sector boundaries is all zero bytes."""
    pos = start
    while pos < end:
        stop = min((pos // _SECTOR + 1) * _SECTOR, end)
        if data.count(0, pos, stop) == stop - pos:
            return True
        pos = stop
    return False


def _encode_identity(identity: Mapping[str, Any]) -> bytes:
    body = json.dumps(dict(identity), sort_keys=True).encode()
    return _ID_MAGIC + body + b"\n" + f"{zlib.crc32(body):08x}\n".encode()


def _check_identity_value(identity: Mapping[str, Any] | None) -> dict[str, Any]:
    if identity is None:
        return {}
    out: dict[str, Any] = {}
    for k, v in identity.items():
        if not isinstance(k, str) or not (v is None or isinstance(v, (str, int, float, bool))):
            raise TypeError(f"identity must map str to str/int/float/bool/None, got {k!r}: {v!r}")
        out[k] = v
    return out


# --------------------------------------------------------------------------------------------------
# FileStorage
# --------------------------------------------------------------------------------------------------


class FileStorage:
    """Durable storage in a directory; the default outside tests (see the module docstring).

    ``new=True`` creates the replica: the directory (and its parents) if missing, an empty log and the
    identity file (``identity``: a small dict such as ``{"group": "kv-1", "replica": 0}``). It refuses a
    directory that already holds a replica or any replica state. Without ``new``, the directory must
    hold a replica (else :class:`StorageMissingError`), and if ``identity`` is given, every key of it
    must match the stored identity (else :class:`StorageIdentityError`); :attr:`identity` is the
    stored one.

    The directory's contents are read on first use (:meth:`load`, :meth:`save` or a size query), and
    repaired or rejected then (see the module docstring). ``lock_timeout`` is how long to wait for a
    previous holder of the lock to go away. ``grow_min`` / ``grow_max`` bound each growth of the log's
    pre-zeroed region (see the module docstring). If a write fails (disk full, I/O error), the instance
    refuses further saves: reopen it (the partial record is a torn tail, cut on reopening).
    Not thread-safe.
    """

    WAL_NAME = "raft.wal"
    SNAPSHOT_NAME = "snapshot.bin"
    IDENTITY_NAME = "IDENTITY"
    LOCK_NAME = "LOCK"
    _TMP_SUFFIX = ".tmp"

    def __init__(
        self,
        directory: str | Path,
        *,
        new: bool = False,
        identity: Mapping[str, Any] | None = None,
        lock_timeout: float = 0.0,
        repair_torn_tail: bool = False,
        files: Files | None = None,
        grow_min: int = _GROW_MIN,
        grow_max: int = _GROW_MAX,
    ) -> None:
        if not 0 < grow_min <= grow_max:
            raise ValueError(f"need 0 < grow_min <= grow_max, got grow_min={grow_min}, "
                             f"grow_max={grow_max}")
        self._grow_min, self._grow_max = grow_min, grow_max
        self.directory = Path(directory)
        self._files: Files = files if files is not None else OsFiles()
        self._repair = repair_torn_tail
        self._wal_path = self.directory / self.WAL_NAME
        self._snap_path = self.directory / self.SNAPSHOT_NAME
        self._id_path = self.directory / self.IDENTITY_NAME
        self._log: _Log | None = None  # None until recovered from disk
        self._snapshot = Snapshot()
        self._wal: Any = None
        # Invariant while open: the log's records fill [0, _end); [_end, _size) of the file holds
        # zero bytes that are durable (fsynced), and _size is the file's durable size.
        self._end = 0
        self._size = 0
        self._failed: BaseException | None = None
        self._closed = False
        self._lock_handle: Any = None
        expected = _check_identity_value(identity)
        #: the identity stored in the directory
        self.identity: dict[str, Any] = {}
        if new:
            self._files.makedirs(self.directory)
        elif not self._files.is_dir(self.directory):
            raise StorageMissingError(self.directory, "the replica's directory does not exist",
                                      _ADVICE_MISSING + ".")
        self._lock_handle = self._lock(lock_timeout)
        try:
            if new:
                self._create(expected)
            else:
                self._check_identity(expected)
        except BaseException:
            self.close()
            raise

    @classmethod
    def read_identity(cls, directory: str | Path, files: Files | None = None) -> dict[str, Any] | None:
        """The identity stored in ``directory``, or ``None`` if it has none (no lock is taken)."""
        return cls._read_identity_file(Path(directory) / cls.IDENTITY_NAME, files or OsFiles())

    # ---- the Storage protocol -------------------------------------------------------------------

    def load(self) -> PersistentState:
        log = self._recovered()
        return PersistentState(log.hard_state, self._snapshot, log.entries())

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None,
    ) -> None:
        log = self._recovered()
        if self._failed is not None:
            raise StorageError(f"{self.directory}: an earlier write failed ({self._failed!r}); the "
                               f"files may end in a partial record: reopen the storage") from None
        log.check(hard_state, entries, snapshot)
        blobs = [_encode_entry(e) for e in entries]  # before any change: pickling may fail
        terms = [e.term for e in entries]
        if snapshot is None and hard_state is None and not entries:
            return  # nothing to persist: no write, no fsync
        first = entries[0].index if entries else 0
        try:
            if snapshot is not None:
                self._save_with_snapshot(log, hard_state, first, terms, blobs, snapshot)
                return
            self._append(b"".join(_save_record(hard_state, first, blobs)))
        except BaseException as exc:
            self._failed = exc
            raise
        # Durable: now update the in-memory image.
        if entries:
            log.append(first, terms, blobs)
        if hard_state is not None:
            log.set_hard_state(hard_state)

    def raft_state_size(self) -> int:
        return self._recovered().raft_state_size()

    def snapshot_size(self) -> int:
        self._recovered()
        return len(self._snapshot.data)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._wal is not None:
            self._files.close(self._wal)
            self._wal = None
        if self._lock_handle is not None:
            self._files.unlock(self._lock_handle)
            self._lock_handle = None

    def __enter__(self) -> FileStorage:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"FileStorage({str(self.directory)!r}, {state})"

    # ---- saving ---------------------------------------------------------------------------------

    def _append(self, record: bytes) -> None:
        """Write ``record`` at the log's logical end, into the pre-zeroed region (grown first if it is
        too small), and make it durable with ``fdatasync``: the file's size does not change."""
        files = self._files
        need = self._end + len(record)
        if need > self._size:
            step = min(self._grow_max, max(self._grow_min, self._size))
            new_size = max(self._size + step, need + self._grow_min)
            # Zeros first, fully synced (data and the new size), before any record lands in them.
            files.pwrite(self._wal, bytes(new_size - self._size), self._size)
            files.fsync(self._wal)
            self._size = new_size
        files.pwrite(self._wal, record, self._end)
        files.fdatasync(self._wal)
        self._end = need

    def _save_with_snapshot(
        self,
        log: _Log,
        hard_state: HardState | None,
        first: int,
        terms: list[int],
        blobs: list[bytes],
        snapshot: Snapshot,
    ) -> None:
        snapshot = _own_snapshot(snapshot)
        new = log.copy()
        new.compact(snapshot.index, snapshot.term)
        if blobs:
            new.append(first, terms, blobs)
        if hard_state is not None:
            new.set_hard_state(hard_state)
        # 1. The snapshot file, atomically. From here on a crash leaves the new snapshot with the
        #    old log, which recovery compacts against it (and rewrites).
        if snapshot.config is None:
            head = _SNAP_HEADER.pack(snapshot.index, snapshot.term, len(snapshot.data), 0)[:-4]
            crc = zlib.crc32(snapshot.data, zlib.crc32(head))
            self._replace(self._snap_path, [_SNAP_MAGIC, head, _U32.pack(crc), snapshot.data])
        else:
            cfg = _encode_config(snapshot.config)
            head = _SNAP_HEADER2.pack(snapshot.index, snapshot.term, len(snapshot.data), len(cfg),
                                      0)[:-4]
            crc = zlib.crc32(snapshot.data, zlib.crc32(cfg, zlib.crc32(head)))
            self._replace(self._snap_path, [_SNAP_MAGIC2, head, _U32.pack(crc), cfg, snapshot.data])
        # 2. The log, rewritten to hold only what is left.
        self._end = self._size = self._write_log(new)
        self._wal = self._files.open_write(self._wal_path)
        self._log = new
        self._snapshot = snapshot

    def _write_log(self, log: _Log) -> int:
        """Atomically replace the log by one that holds exactly ``log`` (no zero region: the next
        append grows one). Returns the new file's size."""
        parts: list[bytes] = [_WAL_MAGIC]
        parts += _record(_KIND_COMPACT, _COMPACT.pack(log.snap_index, log.snap_term))
        if log.hard_state_saved or log.blobs:
            parts += _save_record(log.hard_state if log.hard_state_saved else None,
                                  log.snap_index + 1, log.blobs)
        if self._wal is not None:
            self._files.close(self._wal)
            self._wal = None
        self._replace(self._wal_path, parts)
        return sum(map(len, parts))

    def _replace(self, path: Path, parts: list[bytes]) -> None:
        """Atomically replace ``path`` by ``parts``: temp file, fsync, rename, fsync directory."""
        files = self._files
        tmp = path.with_name(path.name + self._TMP_SUFFIX)
        handle = files.create(tmp)
        try:
            files.write(handle, b"".join(parts))
            files.fsync(handle)
        finally:
            files.close(handle)
        files.rename(tmp, path)
        files.fsync_dir(self.directory)

    # ---- opening: lock, identity, creation -----------------------------------------------------

    def _lock(self, timeout: float) -> Any:
        path = self.directory / self.LOCK_NAME
        try:
            return self._files.lock(path, timeout)
        except LockBusy as busy:
            raise StorageLockedError(
                f"{self.directory} is in use: another FileStorage holds {path} (pid {busy.holder}). "
                f"Two live peers must never share one storage directory; close the other one first, "
                f"or wait for its process to exit (pass lock_timeout to wait)") from None

    @staticmethod
    def _read_identity_file(path: Path, files: Files) -> dict[str, Any] | None:
        if not files.exists(path):
            return None
        data = files.read(path)
        lines = data.split(b"\n")
        ok = len(lines) == 4 and lines[3] == b"" and data.startswith(_ID_MAGIC)
        if ok:
            body, crc = lines[1], lines[2]
            ok = crc == f"{zlib.crc32(body):08x}".encode()
        if ok:
            try:
                found = json.loads(body)
            except ValueError:
                ok = False
            else:
                ok = isinstance(found, dict)
        if not ok:
            raise StorageCorruptionError(
                path, None, f"the identity file is garbled ({len(data)} bytes, bad header or checksum)",
                _ADVICE_RESTORE + ".")
        return found

    def _remove_tmp_files(self) -> None:
        for path in (self._wal_path, self._snap_path, self._id_path):
            tmp = path.with_name(path.name + self._TMP_SUFFIX)
            if self._files.exists(tmp):  # a replacement that never got renamed: never part of the state
                _log.info("removing unfinished %s", tmp)
                self._files.unlink(tmp)

    def _has_records(self) -> bool:
        """Whether the log holds anything beyond (a prefix of) its header, or a snapshot exists."""
        if self._files.exists(self._snap_path):
            return True
        if not self._files.exists(self._wal_path):
            return False
        data = self._files.read(self._wal_path)
        return not _WAL_MAGIC.startswith(data.rstrip(b"\0"))  # a zero region is no record

    def _create(self, identity: dict[str, Any]) -> None:
        found = self._read_identity_file(self._id_path, self._files)
        if found is not None:
            raise StorageIdentityError(
                self.directory, f"new=True, but the directory already holds replica {found}: to "
                f"restart that replica open it without new=True; to replace it by a new one, delete the "
                f"directory first (it then forgets its votes and acknowledged entries)", identity, found)
        if self._has_records():
            raise StorageIdentityError(
                self.directory, "new=True, but the directory holds replica state (a log with records or a "
                "snapshot) and no identity file: it may be a replica whose identity file was lost; "
                "refusing to overwrite it. Restore the identity file from a backup, or delete the "
                "directory to start a new replica there", identity, None)
        self._remove_tmp_files()
        # The log first, the identity last: an identity file means the creation is complete.
        self._replace(self._wal_path, [_WAL_MAGIC])
        stored = {"format": _FORMAT, **identity}
        self._replace(self._id_path, [_encode_identity(stored)])
        self.identity = stored

    def _check_identity(self, expected: dict[str, Any]) -> None:
        found = self._read_identity_file(self._id_path, self._files)
        if found is None:
            if self._has_records():
                raise StorageCorruptionError(
                    self._id_path, None, "the identity file is missing, but the directory holds replica "
                    "state (it was deleted, or the directory was written by an older raykv)",
                    "If you are sure this is the state of the expected replica, restore the identity "
                    "file from a backup. " + _ADVICE_RESTORE + ".")
            interrupted = self._files.exists(self._wal_path)
            raise StorageMissingError(
                self.directory, "the directory holds no replica (no identity file" +
                ("; its creation was interrupted before anything was saved" if interrupted else "") + ")",
                _ADVICE_MISSING + ".")
        if found.get("format") != _FORMAT:
            raise StorageCorruptionError(
                self._id_path, None, f"the identity file names storage format {found.get('format')!r}; "
                f"this raykv reads format {_FORMAT}", "Open the directory with the raykv version that "
                "wrote it")
        wrong = {k: (v, found.get(k)) for k, v in expected.items() if found.get(k) != v}
        if wrong:
            diff = ", ".join(f"{k}: expected {e!r}, found {f!r}" for k, (e, f) in wrong.items())
            raise StorageIdentityError(
                self.directory, f"the directory belongs to another replica ({diff}); check the paths "
                f"given to each replica (two replicas must never share or swap directories)",
                expected, found)
        self.identity = found

    # ---- recovery -------------------------------------------------------------------------------

    def _recovered(self) -> _Log:
        if self._closed:
            raise StorageClosedError(f"{self!r} used after close()")
        if self._log is None:
            self._recover()
            assert self._log is not None
        return self._log

    def _recover(self) -> None:
        files = self._files
        self._remove_tmp_files()
        if not files.exists(self._wal_path):
            what = "a snapshot exists" if files.exists(self._snap_path) else "there is no snapshot either"
            raise StorageCorruptionError(
                self._wal_path, None, f"the write-ahead log is missing ({what}), but the identity file "
                f"says this directory holds replica {self.identity}: the log was deleted or lost",
                _ADVICE_RESTORE + ".")
        data = files.read(self._wal_path)
        log, end, cut = self._replay(data)
        snapshot = self._read_snapshot() if files.exists(self._snap_path) else Snapshot()
        if snapshot.index < log.snap_index or (
            snapshot.index == log.snap_index and snapshot.term != log.snap_term
        ):
            what = "missing" if not files.exists(self._snap_path) else (
                f"at index {snapshot.index} term {snapshot.term}")
            raise StorageCorruptionError(
                self._snap_path, None,
                f"the log was compacted through index {log.snap_index} term {log.snap_term}, but "
                f"the snapshot file is {what} (lost or replaced by an older one)",
                _ADVICE_RESTORE + ".")
        rewrite = False
        if snapshot.index > log.snap_index:
            # A crash between replacing the snapshot and rewriting the log: finish that save's
            # compaction, and make it durable before anything is appended behind it.
            _log.warning("%s: the snapshot (index %d, term %d) is newer than the log (compacted "
                         "through %d): a crash came between replacing the snapshot and rewriting the "
                         "log; compacting the log against the snapshot", self._wal_path, snapshot.index,
                         snapshot.term, log.snap_index)
            log.compact(snapshot.index, snapshot.term)
            rewrite = True
        size = len(data)
        if rewrite:
            end = size = self._write_log(log)
            _log.warning("%s: rewrote the log to hold the recovered state (term %d, log %d..%d)",
                         self._wal_path, log.hard_state.term, log.snap_index + 1, log.last_index())
        self._wal = files.open_write(self._wal_path)
        if cut is not None and not rewrite:
            # Cut the torn tail for good before anything is appended behind it (the next append
            # grows a new zero region).
            files.truncate(self._wal, cut)
            files.fsync(self._wal)
            size = cut
        self._end, self._size = end, size
        self._log = log
        self._snapshot = snapshot

    def _replay(self, data: bytes) -> tuple[_Log, int, int | None]:
        """Rebuild the state from the log's bytes. Returns it, the log's logical end (where the next
        record goes) and the offset of the torn tail to cut off (``None`` if none); raises on any
        damage a crash cannot explain. An all-zero tail is the clean end (the pre-zeroed region)."""
        path = self._wal_path
        if data[: len(_WAL_MAGIC)] != _WAL_MAGIC:
            old = data.startswith(_OLD_WAL_MAGIC)
            raise StorageCorruptionError(
                path, 0, "the log was written by an older raykv (format 1), which this version does not "
                "read" if old else f"the file does not start with the write-ahead log header "
                f"{_WAL_MAGIC!r} (it is {len(data)} bytes long)", _ADVICE_RESTORE + ".")
        view = memoryview(data)
        log = _Log()
        pos = len(_WAL_MAGIC)
        while pos < len(data):
            end = _valid_record_end(data, pos)
            if end is None:
                if data.count(0, pos) == len(data) - pos:
                    return log, pos, None  # the clean end: the zero region behind the records
                torn = self._torn_tail(data, pos)
                _log.warning("%s: %s at byte offset %d; cut off the last %d bytes (a save that never "
                             "returned, so nothing depended on it)", path, torn, pos, len(data) - pos)
                return log, pos, pos
            try:
                self._apply_record(log, view[pos + _REC_HEADER.size : end], pos)
            except StorageCorruptionError:
                raise
            except Exception as exc:  # a checksummed record we cannot parse: a format mismatch
                raise StorageCorruptionError(
                    path, pos, f"record passed its checksum but cannot be decoded ({exc!r})",
                    _ADVICE_RESTORE + ".") from exc
            pos = end
        return log, pos, None

    def _torn_tail(self, data: bytes, pos: int) -> str:
        """What a crash left from ``pos`` (a record that fails its checks) to the end of the file, if
        it can be a torn write; otherwise raise :class:`StorageCorruptionError`. The caller has ruled
        out an all-zero tail. Only the bytes up to the last non-zero one are looked at (``eof``): the
        zeros behind them are the pre-zeroed region (or a tail the file system never wrote), which
        says nothing about the record at ``pos`` beyond where the record itself reaches."""
        path, eof = self._wal_path, len(data.rstrip(b"\0"))
        if eof - pos < _REC_HEADER.size:
            return f"an incomplete record header ({eof - pos} of {_REC_HEADER.size} bytes)"
        length, length_crc, _ = _REC_HEADER.unpack_from(data, pos)
        header_ok = zlib.crc32(data[pos : pos + 4]) == length_crc
        if header_ok and pos + _REC_HEADER.size + length > len(data):
            return (f"an incomplete last record (its header announces {length} bytes, "
                    f"{len(data) - pos - _REC_HEADER.size} follow)")
        reason = ("the record header fails its checksum" if not header_ok else
                  "the record has length 0" if length == 0 else "the record fails its checksum")
        # A record's length field is non-zero, so a valid record starts before the last non-zero byte.
        for q in range(pos + 1, min(eof, len(data) - _REC_HEADER.size + 1)):
            if _valid_record_end(data, q) is not None:
                raise StorageCorruptionError(
                    path, pos, f"{reason}, and a valid record follows at byte offset {q}, so this is "
                    f"damage, not an interrupted write", _ADVICE_RESTORE + ".")
        # Zero sectors count within the record's own extent if its header is intact (the region's
        # zeros past it do not), else up to the last non-zero byte.
        span = min(pos + _REC_HEADER.size + length, len(data)) if header_ok and length else eof
        if _has_zero_sector(data, pos, span):
            return f"a last record with zero-filled sectors ({reason}: a write that never reached the disk)"
        if self._repair:
            return f"a damaged last record ({reason}; cut because repair_torn_tail=True)"
        raise StorageCorruptionError(
            path, pos, f"{reason}; it is the last record but shows no sign of an interrupted write (no "
            f"zero-filled sector), so it was damaged after it was written", _ADVICE_LAST + ".")

    def _apply_record(self, log: _Log, payload: memoryview, offset: int) -> None:
        kind, body = payload[0], payload[1:]
        if kind == _KIND_SAVE:
            flags, pos = body[0], 1
            if flags & ~(_HAS_HARD_STATE | _HAS_ENTRIES):
                raise ValueError(f"unknown flags {flags:#x} in a save record")
            hard_state = None
            if flags & _HAS_HARD_STATE:
                hard_state = HardState(*_HARD_STATE.unpack_from(body, pos))
                pos += _HARD_STATE.size
            if flags & _HAS_ENTRIES:
                first, count = _ENTRIES_HEAD.unpack_from(body, pos)
                pos += _ENTRIES_HEAD.size
                if not log.snap_index < first <= log.last_index() + 1:
                    raise StorageCorruptionError(
                        self._wal_path, offset, f"a save record's entries start at index {first}, but "
                        f"the log replayed so far covers {log.snap_index + 1}..{log.last_index()}",
                        _ADVICE_RESTORE + ".")
                blobs: list[bytes] = []
                for _ in range(count):
                    (size,) = _U32.unpack_from(body, pos)
                    pos += _U32.size
                    if pos + size > len(body):
                        raise ValueError("entry runs past the end of its record")
                    blobs.append(bytes(body[pos : pos + size]))
                    pos += size
                log.append(first, [_entry_term(b) for b in blobs], blobs)
            if pos != len(body):
                raise ValueError(f"{len(body) - pos} stray bytes at the end of a save record")
            if hard_state is not None:
                log.set_hard_state(hard_state)
        elif kind == _KIND_COMPACT:
            index, term = _COMPACT.unpack(body)
            if index < log.snap_index:
                raise ValueError(f"compaction marker at index {index} goes back behind "
                                 f"{log.snap_index}")
            log.compact(index, term)
        else:
            raise ValueError(f"unknown record kind {kind}")

    def _read_snapshot(self) -> Snapshot:
        path = self._snap_path
        data = self._files.read(path)
        head_end = len(_SNAP_MAGIC) + _SNAP_HEADER.size

        def corrupt(offset: int, reason: str) -> StorageCorruptionError:
            return StorageCorruptionError(path, offset, reason, _ADVICE_RESTORE + ".")

        if data[: len(_SNAP_MAGIC2)] == _SNAP_MAGIC2:
            return self._read_snapshot2(data, corrupt)
        if data[: len(_SNAP_MAGIC)] != _SNAP_MAGIC:
            raise corrupt(0, f"the file does not start with the snapshot header {_SNAP_MAGIC!r}")
        if len(data) < head_end:
            raise corrupt(len(data), f"the snapshot header is truncated ({len(data)} bytes)")
        index, term, length, crc = _SNAP_HEADER.unpack_from(data, len(_SNAP_MAGIC))
        if len(data) != head_end + length:
            raise corrupt(min(len(data), head_end + length),
                          f"the header announces {length} bytes of data but the file holds "
                          f"{len(data) - head_end}")
        view = memoryview(data)
        if zlib.crc32(view[head_end:], zlib.crc32(view[len(_SNAP_MAGIC) : head_end - 4])) != crc:
            raise corrupt(len(_SNAP_MAGIC), "the snapshot has a bad checksum (header or data)")
        return Snapshot(index, term, bytes(view[head_end:]))

    @staticmethod
    def _read_snapshot2(data: bytes, corrupt: Callable[[int, str], StorageCorruptionError]) -> Snapshot:
        """A snapshot in the second format (with the group configuration)."""
        head_end = len(_SNAP_MAGIC2) + _SNAP_HEADER2.size
        if len(data) < head_end:
            raise corrupt(len(data), f"the snapshot header is truncated ({len(data)} bytes)")
        index, term, length, cfg_len, crc = _SNAP_HEADER2.unpack_from(data, len(_SNAP_MAGIC2))
        if len(data) != head_end + cfg_len + length:
            raise corrupt(min(len(data), head_end + cfg_len + length),
                          f"the header announces {cfg_len} + {length} bytes of configuration and data "
                          f"but the file holds {len(data) - head_end}")
        view = memoryview(data)
        if zlib.crc32(view[head_end:], zlib.crc32(view[len(_SNAP_MAGIC2) : head_end - 4])) != crc:
            raise corrupt(len(_SNAP_MAGIC2), "the snapshot has a bad checksum (header or data)")
        try:
            config = _decode_config(bytes(view[head_end : head_end + cfg_len]))
        except ValueError as exc:
            raise corrupt(head_end, f"the snapshot's configuration cannot be read: {exc}") from exc
        return Snapshot(index, term, bytes(view[head_end + cfg_len :]), config)
