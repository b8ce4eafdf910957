"""Storage that outlives a Raft peer: its hard state (term, vote), its log and its snapshot.

A Raft peer must not send a message before the state that message depends on is on stable storage
(a vote it granted, the entries it acknowledged). The core (``raft/``) therefore hands its driver a
:class:`~raft.types.Ready` whose first part is "persist this"; the driver calls
:meth:`Storage.save` with it and sends only after ``save`` returns. When the peer restarts, the
driver calls :meth:`Storage.load` and builds a new core from what it returns.

Two implementations share one in-memory image of the state (:class:`_Log`) and therefore one set of
rules:

* :class:`MemoryStorage` keeps everything in memory. Tests use it as the reference harness uses its
  ``Persister``: on a crash the harness gives the restarted peer :meth:`MemoryStorage.copy`, an
  independent copy, so that nothing the dead instance still writes can reach its successor.
* :class:`FileStorage` keeps everything in a directory: a write-ahead log of checksummed records and
  a snapshot file, with one ``fsync`` per ``save`` and atomic replacement of the snapshot.

The semantics of ``save(hard_state, entries, snapshot)`` (exactly those of ``Ready``), in this order:

1. ``snapshot`` (if not ``None``): store it and drop every log entry with index <= ``snapshot.index``.
   Entries after it are kept only if the log holds the entry at ``snapshot.index`` with
   ``snapshot.term`` (Raft paper, Figure 13, step 6); otherwise the whole log is discarded (step 7),
   because entries that follow a different history must not survive behind this snapshot.
2. ``entries`` (if non-empty; they must be contiguous): delete every stored entry with index
   >= ``entries[0].index`` and append ``entries``. ``entries[0].index`` must lie in
   ``snapshot_index + 1 .. last_index + 1`` (no gap, nothing the snapshot already covers).
3. ``hard_state`` (if not ``None``): store it. Its term never decreases.

A call that breaks these preconditions is a bug in the caller and raises :class:`ValueError` before
anything is changed. Storage problems raise :class:`StorageError` and its subclasses.

Sizes: :meth:`Storage.raft_state_size` is the number of bytes of the encoded hard state (16 bytes:
term and vote as two 64-bit integers, counted once a hard state has been saved) plus the encoded log
entries (8 bytes of term + the pickled command, per entry); the framing of the on-disk records
(lengths, checksums) is not counted, just as the reference's ``Persister.RaftStateSize`` counts the
encoded state and nothing else. :meth:`Storage.snapshot_size` is ``len(snapshot.data)``. Both are
maintained as running totals, so they cost O(1).

Commands are encoded with :mod:`pickle`: load storage only from directories you trust.
"""

from __future__ import annotations

import fcntl
import logging
import os
import pickle
import struct
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Protocol, runtime_checkable

from raft.types import Entry, HardState, PersistentState, Snapshot

__all__ = [
    "FileStorage",
    "MemoryStorage",
    "Storage",
    "StorageClosedError",
    "StorageCorruptionError",
    "StorageError",
    "StorageLockedError",
]

_log = logging.getLogger("raykv.storage")

_PICKLE_PROTOCOL = 5
_HARD_STATE = struct.Struct("<qq")  # term, voted_for (NO_VOTE is -1, hence signed)
_TERM = struct.Struct("<Q")  # the term that prefixes every encoded entry
#: Encoded size of a hard state; counted in raft_state_size once one has been saved.
HARD_STATE_SIZE = _HARD_STATE.size


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


class StorageError(Exception):
    """Base class of every storage failure (as opposed to a caller's bug, which is a ValueError)."""


class StorageCorruptionError(StorageError):
    """The files on disk are truncated, garbled or inconsistent with each other.

    ``path`` is the damaged file, ``offset`` the byte offset of the damage (or ``None`` when the damage
    is not at one place, e.g. a missing file), ``reason`` what was wrong. The message also says what the
    user can do about it. Nothing is loaded from a damaged directory: a partial log is never taken for
    a whole one.
    """

    def __init__(self, path: Path, offset: int | None, reason: str, advice: str) -> None:
        where = f", byte offset {offset}" if offset is not None else ""
        super().__init__(f"{path}{where}: {reason}. {advice}")
        self.path = path
        self.offset = offset
        self.reason = reason


class StorageLockedError(StorageError):
    """Another live process (or another FileStorage in this process) has the directory open."""


class StorageClosedError(StorageError):
    """The storage was used after :meth:`close`."""


# --------------------------------------------------------------------------------------------------
# The protocol
# --------------------------------------------------------------------------------------------------


@runtime_checkable
class Storage(Protocol):
    """Where a Raft peer keeps what must survive a crash. Not thread-safe: one owner at a time."""

    def load(self) -> PersistentState:
        """The stored hard state, snapshot and log entries after the snapshot (fresh objects)."""
        ...

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None,
    ) -> None:
        """Persist one ``Ready``'s worth of state (see the module docstring); durable on return."""
        ...

    def raft_state_size(self) -> int:
        """Bytes of encoded hard state + log entries (the reference's ``RaftStateSize``)."""
        ...

    def snapshot_size(self) -> int:
        """Bytes of the stored snapshot's data (the reference's ``SnapshotSize``)."""
        ...

    def close(self) -> None:
        """Release the storage; any later use raises :class:`StorageClosedError`. Idempotent."""
        ...


# --------------------------------------------------------------------------------------------------
# Encoding and the shared in-memory image
# --------------------------------------------------------------------------------------------------


def _encode_entry(entry: Entry) -> bytes:
    """8 bytes of term, then the pickled command. The index is implied by the entry's position."""
    return _TERM.pack(entry.term) + pickle.dumps(entry.command, protocol=_PICKLE_PROTOCOL)


def _entry_term(blob: bytes | memoryview) -> int:
    return _TERM.unpack_from(blob)[0]


def _decode_entry(index: int, blob: bytes) -> Entry:
    return Entry(_TERM.unpack_from(blob)[0], index, pickle.loads(memoryview(blob)[_TERM.size :]))


def _own_snapshot(snapshot: Snapshot) -> Snapshot:
    """The snapshot itself if its data is immutable bytes, else a copy that cannot change under us."""
    if type(snapshot.data) is bytes:
        return snapshot
    return Snapshot(snapshot.index, snapshot.term, bytes(snapshot.data))


class _Log:
    """The persisted Raft state minus the snapshot's data, entries kept encoded.

    Invariants: the log holds entries ``snap_index + 1 .. snap_index + len(blobs)``; ``terms[k]`` is
    the term of ``blobs[k]``; ``log_bytes == sum(map(len, blobs))``.
    """

    __slots__ = ("blobs", "hard_state", "hard_state_saved", "log_bytes", "snap_index", "snap_term",
                 "terms")

    def __init__(self) -> None:
        self.hard_state = HardState()
        self.hard_state_saved = False
        self.snap_index = 0
        self.snap_term = 0
        self.terms: list[int] = []
        self.blobs: list[bytes] = []
        self.log_bytes = 0

    def copy(self) -> _Log:
        other = _Log()
        other.hard_state = self.hard_state
        other.hard_state_saved = self.hard_state_saved
        other.snap_index = self.snap_index
        other.snap_term = self.snap_term
        other.terms = self.terms.copy()
        other.blobs = self.blobs.copy()
        other.log_bytes = self.log_bytes
        return other

    def last_index(self) -> int:
        return self.snap_index + len(self.blobs)

    def term_at(self, index: int) -> int | None:
        """The term of the entry at ``index``; the snapshot's term at its index; None if unknown."""
        if index == self.snap_index:
            return self.snap_term
        if self.snap_index < index <= self.last_index():
            return self.terms[index - self.snap_index - 1]
        return None

    def raft_state_size(self) -> int:
        return (HARD_STATE_SIZE if self.hard_state_saved else 0) + self.log_bytes

    def check(
        self, hard_state: HardState | None, entries: Sequence[Entry], snapshot: Snapshot | None
    ) -> None:
        """Raise ValueError if ``save(hard_state, entries, snapshot)`` breaks its preconditions."""
        base, last = self.snap_index, self.last_index()
        if snapshot is not None:
            if snapshot.index < 0 or snapshot.term < 0:
                raise ValueError(f"snapshot with negative index or term: {snapshot.index=}, "
                                 f"{snapshot.term=}")
            if snapshot.index < base:
                raise ValueError(f"snapshot at index {snapshot.index} is older than the stored "
                                 f"snapshot at index {base}")
            if snapshot.index == base and snapshot.term != self.snap_term:
                raise ValueError(f"snapshot at index {base} has term {snapshot.term}, but the stored "
                                 f"snapshot at the same index has term {self.snap_term}")
            if self.term_at(snapshot.index) != snapshot.term:
                last = snapshot.index  # the log is discarded (see compact)
            base = snapshot.index
        if entries:
            first = entries[0].index
            if not base < first <= last + 1:
                raise ValueError(f"entries start at index {first}, but the log after this save's "
                                 f"snapshot (if any) covers {base + 1}..{last}: they must start in "
                                 f"{base + 1}..{last + 1}")
            for k, entry in enumerate(entries):
                if entry.index != first + k:
                    raise ValueError(f"entries are not contiguous: entry {k} has index "
                                     f"{entry.index}, expected {first + k}")
        if hard_state is not None and hard_state.term < self.hard_state.term:
            raise ValueError(f"hard state term went backwards: {hard_state.term} after "
                             f"{self.hard_state.term}")

    def compact(self, index: int, term: int) -> None:
        """Drop the log up to ``index``; keep what follows iff the entry at ``index`` has ``term``."""
        if self.term_at(index) == term:
            drop = index - self.snap_index
            if drop > 0:
                self.log_bytes -= sum(map(len, self.blobs[:drop]))
                del self.blobs[:drop]
                del self.terms[:drop]
        else:
            self.blobs.clear()
            self.terms.clear()
            self.log_bytes = 0
        self.snap_index, self.snap_term = index, term

    def append(self, first: int, terms: list[int], blobs: list[bytes]) -> None:
        """Delete entries >= ``first`` and append; ``first`` is in snap_index+1 .. last_index+1."""
        keep = first - self.snap_index - 1
        if keep < len(self.blobs):
            self.log_bytes -= sum(map(len, self.blobs[keep:]))
            del self.blobs[keep:]
            del self.terms[keep:]
        self.blobs.extend(blobs)
        self.terms.extend(terms)
        self.log_bytes += sum(map(len, blobs))

    def set_hard_state(self, hard_state: HardState) -> None:
        self.hard_state = hard_state
        self.hard_state_saved = True

    def entries(self) -> tuple[Entry, ...]:
        """Freshly decoded entries: the caller may keep or mutate them without touching storage."""
        base = self.snap_index + 1
        return tuple(_decode_entry(base + k, blob) for k, blob in enumerate(self.blobs))


# --------------------------------------------------------------------------------------------------
# MemoryStorage
# --------------------------------------------------------------------------------------------------


class MemoryStorage:
    """In-memory storage for tests: the reference harness's ``Persister``.

    Entries are stored pickled, so :meth:`raft_state_size` is a real encoded size and :meth:`load`
    returns fresh objects (nothing the caller does to them reaches the storage, and the reverse).
    Instances are picklable, so one can be handed to a Ray actor.
    """

    def __init__(self) -> None:
        self._log = _Log()
        self._snapshot = Snapshot()
        self._closed = False

    def copy(self) -> MemoryStorage:
        """An independent copy (open even if this one is closed): the harness's "fresh persister
        holding a copy" for a restarted peer. Later writes to either one never reach the other."""
        other = MemoryStorage()
        other._log = self._log.copy()
        other._snapshot = self._snapshot
        return other

    def load(self) -> PersistentState:
        self._check_open()
        return PersistentState(self._log.hard_state, self._snapshot, self._log.entries())

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None,
    ) -> None:
        self._check_open()
        log = self._log
        log.check(hard_state, entries, snapshot)
        blobs = [_encode_entry(e) for e in entries]  # before any change: pickling may fail
        if snapshot is not None:
            self._snapshot = _own_snapshot(snapshot)
            log.compact(snapshot.index, snapshot.term)
        if entries:
            log.append(entries[0].index, [e.term for e in entries], blobs)
        if hard_state is not None:
            log.set_hard_state(hard_state)

    def raft_state_size(self) -> int:
        return self._log.raft_state_size()

    def snapshot_size(self) -> int:
        return len(self._snapshot.data)

    def close(self) -> None:
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise StorageClosedError("MemoryStorage used after close()")

    def __repr__(self) -> str:
        log = self._log
        return (f"MemoryStorage(term={log.hard_state.term}, snapshot_index={log.snap_index}, "
                f"last_index={log.last_index()}, raft_state_size={log.raft_state_size()})")


# --------------------------------------------------------------------------------------------------
# FileStorage
# --------------------------------------------------------------------------------------------------

# The write-ahead log: a magic header, then records. A record is
#     length: u32 | crc32: u32 | payload (length bytes) = kind: u8 | body
# with the CRC taken over the length field and the payload. Record kinds:
_WAL_MAGIC = b"RKVWAL1\n"
_SNAP_MAGIC = b"RKVSNP1\n"
_REC_HEADER = struct.Struct("<II")
_REC_LEN = struct.Struct("<I")
_KIND_HARD_STATE = 1  # body: term i64, voted_for i64
_KIND_ENTRIES = 2  # body: first u64, count u32, then count x (length u32, encoded entry)
_KIND_COMPACT = 3  # body: index u64, term u64: log compacted through (index, term) by a snapshot
_ENTRIES_HEAD = struct.Struct("<QI")
_COMPACT = struct.Struct("<QQ")
# The snapshot file: magic, then index u64, term u64, length u64, crc32 u32, then the data; the CRC is
# taken over index, term, length and the data.
_SNAP_HEADER = struct.Struct("<QQQI")
_MAX_RECORD = 0xFFFF_FFFF

_ADVICE_RESTORE = (
    "Restore this directory from a backup if there is one. Otherwise the directory can be deleted and "
    "the peer restarted empty, to catch up from the leader; but it then forgets the votes it cast and "
    "the entries it acknowledged, which Raft's safety depends on (an entry committed with this peer's "
    "help can be lost), so do that only while the other replicas are up and caught up with the leader"
)
_ADVICE_TORN = (
    "The process or machine probably crashed while writing this last record, so the save that wrote "
    "it never returned and nothing depends on it: reopen with FileStorage(directory, "
    "repair_torn_tail=True) to cut it off and recover the state of the last complete save. Otherwise, "
    + _ADVICE_RESTORE[0].lower() + _ADVICE_RESTORE[1:]
)


def _record(kind: int, *body: bytes) -> list[bytes]:
    """The parts of one WAL record (to be joined by the caller)."""
    length = 1 + sum(map(len, body))
    if length > _MAX_RECORD:
        raise StorageError(f"record of {length} bytes is too large for the write-ahead log")
    head = _REC_LEN.pack(length)
    crc = zlib.crc32(head)
    crc = zlib.crc32(bytes((kind,)), crc)
    for part in body:
        crc = zlib.crc32(part, crc)
    return [head, _REC_LEN.pack(crc), bytes((kind,)), *body]


def _entries_record(first: int, blobs: Sequence[bytes]) -> list[bytes]:
    body = [_ENTRIES_HEAD.pack(first, len(blobs))]
    for blob in blobs:
        body.append(_REC_LEN.pack(len(blob)))
        body.append(blob)
    return _record(_KIND_ENTRIES, *body)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileStorage:
    """Durable storage in a directory; the default outside tests.

    Files (all inside ``directory``):

    * ``raft.wal`` — the write-ahead log: records of hard state, entries (with the index they
      truncate at) and compaction markers, each checksummed. Every :meth:`save` appends its records
      with a single write and a single ``os.fsync``. A save that carries a snapshot instead rewrites
      the log (temp file, fsync, atomic rename) to hold only a compaction marker, the hard state and
      the remaining entries, so the file does not grow forever.
    * ``snapshot.bin`` — the latest snapshot, checksummed; replaced by writing a temp file, fsyncing
      it, renaming it over the old one and fsyncing the directory. It is replaced before the log is
      rewritten, so a crash in between leaves a new snapshot with the old log, which :meth:`load`
      compacts exactly as the interrupted save would have.
    * ``LOCK`` — held with ``fcntl.flock`` while the storage is open, so two live processes cannot
      use one directory (the kernel releases it when the holder dies, e.g. under ``ray.kill``).

    A save with a snapshot costs four fsyncs (snapshot temp file, directory, log temp file,
    directory); any other non-empty save costs exactly one; an empty save costs none.

    The directory is read on first use (:meth:`load`, :meth:`save` or a size query); a truncated or
    corrupt file raises :class:`StorageCorruptionError` then, and nothing is loaded. With
    ``repair_torn_tail=True`` an incomplete or checksum-failing *last* record of the log (what a crash
    in the middle of a write leaves) is cut off with a warning instead; damage anywhere else is never
    repaired. Use it only after a crash: a bit flip that inflates a record's length field looks like
    an incomplete last record, and repairing it would cut off the records behind it.
    ``lock_timeout`` is how long to wait for a previous holder of the lock to go away.

    If a write fails (disk full, I/O error), the instance refuses further saves: reopen it.
    Not thread-safe.
    """

    WAL_NAME = "raft.wal"
    SNAPSHOT_NAME = "snapshot.bin"
    LOCK_NAME = "LOCK"
    _TMP_SUFFIX = ".tmp"

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        lock_timeout: float = 0.0,
        repair_torn_tail: bool = False,
    ) -> None:
        self.directory = Path(directory)
        self._repair = repair_torn_tail
        self._wal_path = self.directory / self.WAL_NAME
        self._snap_path = self.directory / self.SNAPSHOT_NAME
        self._log: _Log | None = None  # None until recovered from disk
        self._snapshot = Snapshot()
        self._wal_fd: int | None = None
        self._failed: BaseException | None = None
        self._closed = False
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd: int | None = self._lock(lock_timeout)

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
        parts: list[bytes] = []
        if snapshot is None:
            if entries:
                parts += _entries_record(entries[0].index, blobs)
            if hard_state is not None:
                parts += _record(_KIND_HARD_STATE, _HARD_STATE.pack(hard_state.term,
                                                                    hard_state.voted_for))
            if not parts:
                return  # nothing to persist: no write, no fsync
        try:
            if snapshot is not None:
                self._save_with_snapshot(log, hard_state, entries, terms, blobs, snapshot)
                return
            assert self._wal_fd is not None
            _write_all(self._wal_fd, b"".join(parts))
            os.fsync(self._wal_fd)
        except BaseException as exc:
            self._failed = exc
            raise
        # Durable: now update the in-memory image.
        if entries:
            log.append(entries[0].index, terms, blobs)
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
        if self._wal_fd is not None:
            os.close(self._wal_fd)
            self._wal_fd = None
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

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

    def _save_with_snapshot(
        self,
        log: _Log,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        terms: list[int],
        blobs: list[bytes],
        snapshot: Snapshot,
    ) -> None:
        snapshot = _own_snapshot(snapshot)
        new = log.copy()
        new.compact(snapshot.index, snapshot.term)
        if entries:
            new.append(entries[0].index, terms, blobs)
        if hard_state is not None:
            new.set_hard_state(hard_state)

        # 1. The snapshot file, atomically. From here on a crash leaves the new snapshot with the
        #    old log, which recovery compacts against it.
        head = _SNAP_HEADER.pack(snapshot.index, snapshot.term, len(snapshot.data), 0)[:-4]
        crc = zlib.crc32(snapshot.data, zlib.crc32(head))
        self._replace(self._snap_path, [_SNAP_MAGIC, head, _REC_LEN.pack(crc), snapshot.data])

        # 2. The log, rewritten to hold only what is left.
        parts: list[bytes] = [_WAL_MAGIC]
        parts += _record(_KIND_COMPACT, _COMPACT.pack(new.snap_index, new.snap_term))
        if new.hard_state_saved:
            hs = new.hard_state
            parts += _record(_KIND_HARD_STATE, _HARD_STATE.pack(hs.term, hs.voted_for))
        if new.blobs:
            parts += _entries_record(new.snap_index + 1, new.blobs)
        if self._wal_fd is not None:
            os.close(self._wal_fd)
            self._wal_fd = None
        self._replace(self._wal_path, parts)
        self._wal_fd = os.open(self._wal_path, os.O_WRONLY | os.O_APPEND)

        self._log = new
        self._snapshot = snapshot

    def _replace(self, path: Path, parts: list[bytes]) -> None:
        """Atomically replace ``path`` by ``parts``: temp file, fsync, rename, fsync directory."""
        tmp = path.with_name(path.name + self._TMP_SUFFIX)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, b"".join(parts))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(self.directory)

    # ---- opening and recovery -------------------------------------------------------------------

    def _lock(self, timeout: float) -> int:
        path = self.directory / self.LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                    os.close(fd)
                    raise StorageLockedError(
                        f"{self.directory} is in use: another FileStorage holds {path} (pid "
                        f"{holder}). Two live peers must never share one storage directory; close "
                        f"the other one first, or wait for its process to exit (pass lock_timeout "
                        f"to wait)") from None
                time.sleep(0.02)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    def _recovered(self) -> _Log:
        if self._closed:
            raise StorageClosedError(f"{self!r} used after close()")
        if self._log is None:
            self._recover()
            assert self._log is not None
        return self._log

    def _recover(self) -> None:
        for stale in (self._wal_path, self._snap_path):
            tmp = stale.with_name(stale.name + self._TMP_SUFFIX)
            if tmp.exists():  # a replacement that never got renamed: never part of the state
                _log.info("removing unfinished %s", tmp)
                tmp.unlink()
        if not self._wal_path.exists():
            if self._snap_path.exists():
                raise StorageCorruptionError(
                    self._wal_path, None, "the write-ahead log is missing but a snapshot exists",
                    _ADVICE_RESTORE + ".")
            self._replace(self._wal_path, [_WAL_MAGIC])
            log = _Log()
        else:
            log = self._replay(self._wal_path.read_bytes())
        snapshot = self._read_snapshot() if self._snap_path.exists() else Snapshot()
        if snapshot.index < log.snap_index or (
            snapshot.index == log.snap_index and snapshot.term != log.snap_term
        ):
            what = "missing" if not self._snap_path.exists() else (
                f"at index {snapshot.index} term {snapshot.term}")
            raise StorageCorruptionError(
                self._snap_path, None,
                f"the log was compacted through index {log.snap_index} term {log.snap_term}, but "
                f"the snapshot file is {what} (lost or replaced by an older one)",
                _ADVICE_RESTORE + ".")
        if snapshot.index > log.snap_index:
            # A crash between replacing the snapshot and rewriting the log.
            log.compact(snapshot.index, snapshot.term)
        self._wal_fd = os.open(self._wal_path, os.O_WRONLY | os.O_APPEND)
        self._log = log
        self._snapshot = snapshot

    def _replay(self, data: bytes) -> _Log:
        """Rebuild the state from the log's bytes; raise (or repair) on any damage."""
        path = self._wal_path
        if data[: len(_WAL_MAGIC)] != _WAL_MAGIC:
            raise StorageCorruptionError(
                path, 0, f"the file does not start with the write-ahead log header {_WAL_MAGIC!r} "
                f"(it is {len(data)} bytes long)", _ADVICE_RESTORE + ".")
        view = memoryview(data)
        log = _Log()
        pos = len(_WAL_MAGIC)
        end_of_file = len(data)
        while pos < end_of_file:
            torn: str | None = None
            if end_of_file - pos < _REC_HEADER.size:
                torn = (f"the last record is truncated: {end_of_file - pos} bytes of a "
                        f"{_REC_HEADER.size}-byte record header")
            else:
                length, crc = _REC_HEADER.unpack_from(data, pos)
                start, end = pos + _REC_HEADER.size, pos + _REC_HEADER.size + length
                if end > end_of_file:
                    torn = (f"the last record is truncated: its header announces {length} bytes but "
                            f"only {end_of_file - start} follow")
                elif length == 0 or zlib.crc32(view[start:end], zlib.crc32(view[pos : pos + 4])) != crc:
                    reason = "record has a bad checksum" if length else "record has length 0"
                    if end != end_of_file:
                        raise StorageCorruptionError(
                            path, pos, f"{reason} (a later record follows, so this is damage, not "
                            f"an interrupted write)", _ADVICE_RESTORE + ".")
                    torn = f"the last {reason}"
            if torn is not None:
                if not self._repair:
                    raise StorageCorruptionError(path, pos, torn, _ADVICE_TORN + ".")
                _log.warning("%s: %s at byte offset %d; cutting off the last %d bytes "
                             "(repair_torn_tail=True)", path, torn, pos, end_of_file - pos)
                with open(path, "r+b") as f:
                    f.truncate(pos)
                    f.flush()
                    os.fsync(f.fileno())
                break
            try:
                self._apply_record(log, view[start:end], pos)
            except StorageCorruptionError:
                raise
            except Exception as exc:  # a checksummed record we cannot parse: a format mismatch
                raise StorageCorruptionError(
                    path, pos, f"record passed its checksum but cannot be decoded ({exc!r})",
                    _ADVICE_RESTORE + ".") from exc
            pos = end
        return log

    def _apply_record(self, log: _Log, payload: memoryview, offset: int) -> None:
        kind, body = payload[0], payload[1:]
        if kind == _KIND_HARD_STATE:
            term, voted_for = _HARD_STATE.unpack(body)
            log.set_hard_state(HardState(term, voted_for))
        elif kind == _KIND_ENTRIES:
            first, count = _ENTRIES_HEAD.unpack_from(body)
            if not log.snap_index < first <= log.last_index() + 1:
                raise StorageCorruptionError(
                    self._wal_path, offset, f"entries record starts at index {first}, but the log "
                    f"replayed so far covers {log.snap_index + 1}..{log.last_index()}",
                    _ADVICE_RESTORE + ".")
            blobs: list[bytes] = []
            pos = _ENTRIES_HEAD.size
            for _ in range(count):
                (size,) = _REC_LEN.unpack_from(body, pos)
                pos += _REC_LEN.size
                if pos + size > len(body):
                    raise ValueError("entry runs past the end of its record")
                blobs.append(bytes(body[pos : pos + size]))
                pos += size
            if pos != len(body):
                raise ValueError(f"{len(body) - pos} stray bytes after the last entry")
            log.append(first, [_entry_term(b) for b in blobs], blobs)
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
        data = path.read_bytes()
        head_end = len(_SNAP_MAGIC) + _SNAP_HEADER.size

        def corrupt(offset: int, reason: str) -> StorageCorruptionError:
            return StorageCorruptionError(path, offset, reason, _ADVICE_RESTORE + ".")

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

