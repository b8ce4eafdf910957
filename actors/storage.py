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
* :class:`FileStorage` (in :mod:`actors.file_storage`, importable from here too) keeps everything in
  a directory: a write-ahead log of checksummed records, a snapshot file and an identity file, with
  one ``fsync`` per ``save``, atomic replacement of the snapshot, and recovery that repairs what a
  crash can leave (see that module).

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

import pickle
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from raft.types import Entry, HardState, PersistentState, Snapshot

__all__ = [
    "FileStorage",
    "MemoryStorage",
    "Storage",
    "StorageClosedError",
    "StorageCorruptionError",
    "StorageError",
    "StorageIdentityError",
    "StorageLockedError",
    "StorageMissingError",
]

if TYPE_CHECKING:
    from actors.file_storage import FileStorage

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
    is not at one place, e.g. a missing file), ``reason`` what was wrong, ``advice`` what the user can
    do about it (the message says both). Nothing is loaded from a damaged directory: a partial log is
    never taken for a whole one. Picklable with its fields (it crosses Ray actor boundaries).
    """

    def __init__(self, path: Path, offset: int | None, reason: str, advice: str) -> None:
        where = f", byte offset {offset}" if offset is not None else ""
        super().__init__(f"{path}{where}: {reason}. {advice}")
        self.path = path
        self.offset = offset
        self.reason = reason
        self.advice = advice

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.offset, self.reason, self.advice), self.__dict__)


class StorageMissingError(StorageError):
    """The directory holds no replica: it does not exist, or it was never (completely) created.

    Starting empty must be an explicit act (``FileStorage(directory, new=True)``), never what a missing
    or wiped directory silently means: a peer that voted and acknowledged entries and comes back empty
    can vote twice in one term and help elect a leader that lacks committed entries. ``path`` is the
    directory, ``reason`` what was missing, ``advice`` what to do.
    """

    def __init__(self, path: Path, reason: str, advice: str) -> None:
        super().__init__(f"{path}: {reason}. {advice}")
        self.path = path
        self.reason = reason
        self.advice = advice

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.reason, self.advice), self.__dict__)


class StorageIdentityError(StorageError):
    """The directory belongs to another replica than the caller expects, or ``new=True`` was asked
    of a directory that already holds a replica. ``expected`` and ``found`` are the identities (dicts;
    ``found`` is ``None`` when the directory has state but no identity file)."""

    def __init__(self, path: Path, reason: str, expected: dict[str, Any] | None,
                 found: dict[str, Any] | None) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.expected = expected
        self.found = found

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.reason, self.expected, self.found), self.__dict__)


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
    return Snapshot(snapshot.index, snapshot.term, bytes(snapshot.data), snapshot.config)


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


def __getattr__(name: str) -> Any:
    """``from actors.storage import FileStorage`` keeps working; the class lives in
    :mod:`actors.file_storage` (which imports this module, hence the lazy import)."""
    if name == "FileStorage":
        from actors.file_storage import FileStorage

        return FileStorage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
