"""Crash-point test of FileStorage (pure: no Ray, no real disk).

FileStorage does every file-system step through a :class:`~actors.files.Files` object. Here that is
:class:`SimFiles`, an in-memory file system that keeps, for every file, what is durable (fsynced) and
what is only in the page cache, and for every directory the entry changes (create, rename, unlink,
mkdir) not yet made durable by a directory fsync. It can stop ("crash") after its Nth step; what the
disk then holds is drawn (seeded) from what a real disk may hold after such a crash:

* every directory keeps its durable entries plus some prefix of its pending entry changes;
* every file keeps its durable bytes, plus, of what was written after its last fsync/fdatasync
  behind its durable content — appended past its end, or written over its durable zero tail (the
  log's pre-zeroed region, overwritten in place) — nothing, all of it, a prefix of it (a torn write),
  zeros (space allocated, data never written), or a prefix with some sectors left zero (a prefix of a
  write over zeros ends at a sector boundary: a sector is written whole or not at all); an unsynced
  truncation or other rewrite is either kept or lost;
* a write in flight at the crash counts as done in the page cache (so it may be torn).

For each seeded history (create the replica; saves with entries, hard states and snapshots, the
snapshots at matching entries, at entries of another term and beyond the log's end; reopens), the
test crashes it after every step, recovers, and checks that the recovered state is one a correct Raft
peer may have: the state after the saves that returned, or (if a save was in flight) after that save
too, or after only its snapshot part (the snapshot is replaced before the log). Then it crashes the
recovery itself after each of its steps and checks that recovering again gives the same state; and
it checks that the recovered storage takes further saves and reopens to exactly them.

``RAYKV_CRASH_SEEDS`` (default 300) sets the number of histories, ``RAYKV_CRASH_SEED_BASE`` the first
seed. A failure names the seed and crash points; ``replay(seed, crash_after, recovery_crash_after)``
reruns one case.
"""

from __future__ import annotations

import logging
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import pytest
from storage_model import Model, Save, SaveGenerator

from actors.files import LockBusy
from actors.storage import FileStorage, StorageMissingError
from raft.types import PersistentState

pytestmark = pytest.mark.timeout(600)

ROOT = PurePosixPath("/disk")
DIR = ROOT / "replica0"
IDENTITY = {"group": "g", "replica": 0}
SECTOR = 512
SEEDS = int(os.environ.get("RAYKV_CRASH_SEEDS", "300"))
SEED_BASE = int(os.environ.get("RAYKV_CRASH_SEED_BASE", "0"))
#: small growth steps for the log's pre-zeroed region, so that histories grow it often, records land
#: across its boundaries, and the simulated files stay small
GROW = {"grow_min": 1024, "grow_max": 2048}


class Crash(Exception):
    """The simulated machine stopped before the step named in the message."""


# --------------------------------------------------------------------------------------------------
# The simulated file system
# --------------------------------------------------------------------------------------------------


class Inode:
    __slots__ = ("durable", "live")

    def __init__(self, data: bytes = b"") -> None:
        self.durable = data
        self.live = bytearray(data)


@dataclass
class Handle:
    path: PurePosixPath
    inode: Inode


Image = tuple[frozenset[PurePosixPath], dict[PurePosixPath, bytes]]  # directories, files


class SimFiles:
    """An in-memory :class:`actors.files.Files` that crashes after ``crash_after`` mutating steps."""

    def __init__(self, image: Image, crash_after: int | None = None) -> None:
        dirs, files = image
        self.dirs_durable = set(dirs)
        self.dirs_live = set(dirs)
        inodes = {p: Inode(b) for p, b in files.items()}
        self.durable: dict[PurePosixPath, Inode] = dict(inodes)
        self.live: dict[PurePosixPath, Inode] = dict(inodes)
        # per directory: entry changes since its last fsync, in order
        self.pending: dict[PurePosixPath, list[tuple[str, PurePosixPath, Any]]] = {}
        self.crash_after = crash_after
        self.steps = 0
        self.trace: list[str] = []

    def _step(self, what: str) -> bool:
        """Count a step; True if the machine crashes instead of completing it."""
        if self.crash_after is not None and self.steps >= self.crash_after:
            self.trace.append(f"CRASH before {what}")
            return True
        self.steps += 1
        self.trace.append(what)
        return False

    def _entry(self, kind: str, path: PurePosixPath, arg: Any) -> None:
        self.pending.setdefault(path.parent, []).append((kind, path, arg))

    # -- reads
    def exists(self, path: Any) -> bool:
        p = PurePosixPath(path)
        return p in self.live or p in self.dirs_live

    def is_dir(self, path: Any) -> bool:
        return PurePosixPath(path) in self.dirs_live

    def read(self, path: Any) -> bytes:
        p = PurePosixPath(path)
        if p not in self.live:
            raise FileNotFoundError(str(p))
        return bytes(self.live[p].live)

    # -- steps
    def makedirs(self, path: Any) -> None:
        p = PurePosixPath(path)
        missing = []
        while p not in self.dirs_live:
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            if self._step(f"mkdir {d}"):
                raise Crash(f"mkdir {d}")
            self.dirs_live.add(d)
            self._entry("mkdir", d, None)
            self.fsync_dir(d.parent)

    def create(self, path: Any) -> Handle:
        p = PurePosixPath(path)
        if self._step(f"create {p.name}"):
            raise Crash(f"create {p.name}")
        inode = self.live.get(p)
        if inode is None:
            inode = Inode()
            self.live[p] = inode
            self._entry("link", p, inode)
        else:
            inode.live = bytearray()
        return Handle(p, inode)

    def open_append(self, path: Any) -> Handle:
        p = PurePosixPath(path)
        if p not in self.live:
            raise FileNotFoundError(str(p))
        return Handle(p, self.live[p])

    def open_write(self, path: Any) -> Handle:
        return self.open_append(path)

    def write(self, handle: Handle, data: bytes) -> None:
        crash = self._step(f"write {len(data)} bytes to {handle.path.name}")
        handle.inode.live += data  # in the page cache even if the machine stops now
        if crash:
            raise Crash("write")

    def pwrite(self, handle: Handle, data: bytes, offset: int) -> None:
        crash = self._step(f"pwrite {len(data)} bytes at {offset} to {handle.path.name}")
        live = handle.inode.live
        if len(live) < offset:
            live += bytes(offset - len(live))
        live[offset : offset + len(data)] = data  # in the page cache even if the machine stops now
        if crash:
            raise Crash("pwrite")

    def truncate(self, handle: Handle, size: int) -> None:
        if self._step(f"truncate {handle.path.name} to {size}"):
            raise Crash("truncate")
        del handle.inode.live[size:]

    def fsync(self, handle: Handle) -> None:
        if self._step(f"fsync {handle.path.name}"):
            raise Crash("fsync")
        handle.inode.durable = bytes(handle.inode.live)

    def fdatasync(self, handle: Handle) -> None:
        # The data and the size (what reading it back needs): for this model, the same as fsync.
        if self._step(f"fdatasync {handle.path.name}"):
            raise Crash("fdatasync")
        handle.inode.durable = bytes(handle.inode.live)

    def close(self, handle: Handle) -> None:
        pass

    def rename(self, src: Any, dst: Any) -> None:
        s, d = PurePosixPath(src), PurePosixPath(dst)
        if self._step(f"rename {s.name} -> {d.name}"):
            raise Crash("rename")
        self.live[d] = self.live.pop(s)
        self._entry("rename", s, d)

    def unlink(self, path: Any) -> None:
        p = PurePosixPath(path)
        if self._step(f"unlink {p.name}"):
            raise Crash("unlink")
        del self.live[p]
        self._entry("unlink", p, None)

    def fsync_dir(self, path: Any) -> None:
        p = PurePosixPath(path)
        if self._step(f"fsync dir {p.name}"):
            raise Crash("fsync dir")
        for op in self.pending.pop(p, []):
            self._apply_entry(op, self.durable, self.dirs_durable)

    def lock(self, path: Any, timeout: float) -> object:
        if PurePosixPath(path).parent not in self.dirs_live:
            raise LockBusy("no such directory")
        return object()

    def unlock(self, handle: Any) -> None:
        pass

    # -- the crash
    @staticmethod
    def _apply_entry(op: tuple[str, PurePosixPath, Any], entries: dict[PurePosixPath, Inode],
                     dirs: set[PurePosixPath]) -> None:
        kind, p, arg = op
        if kind == "mkdir":
            dirs.add(p)
        elif kind == "link":
            entries[p] = arg
        elif kind == "rename":
            if p in entries:
                entries[arg] = entries.pop(p)
        else:
            entries.pop(p, None)

    def crash_image(self, rng: random.Random) -> Image:
        """What the disk may hold after a crash now (one draw)."""
        entries = dict(self.durable)
        dirs = set(self.dirs_durable)
        for ops in self.pending.values():
            for op in ops[: rng.randint(0, len(ops))]:
                self._apply_entry(op, entries, dirs)
        files = {p: self._content_after_crash(inode, rng) for p, inode in entries.items()
                 if p.parent in dirs}
        return frozenset(dirs), files

    @staticmethod
    def _content_after_crash(inode: Inode, rng: random.Random) -> bytes:
        durable, live = inode.durable, bytes(inode.live)
        if live == durable:
            return durable
        n = len(durable)
        # base: where the unsynced writes start; everything of the durable file from there on is zero
        # (an append has base == n; a write into the pre-zeroed region has base < n)
        base = next((i for i in range(n) if live[i] != durable[i]), n) if len(live) >= n else -1
        if base < 0 or durable.count(0, base) != n - base:  # an unsynced truncation or rewrite
            return rng.choice((durable, live))
        extra = live[base:]
        variant = rng.randrange(5)
        if variant == 0:
            return durable
        if variant == 1:
            return live
        k = rng.randint(1, len(extra))
        if variant == 2 and base < n:  # torn over zeros: whole sectors reach the disk, a prefix of them
            k = min(len(extra), (base + k + SECTOR - 1) // SECTOR * SECTOR - base)
            got = extra[:k]
        elif variant == 2:
            got = extra[:k]  # torn: the file's end reached the disk, not all of it
        elif variant == 3:
            got = bytes(k)  # size extended, data never written
        else:
            torn = bytearray(extra)  # some sectors written, others left zero
            pos, end = base, len(live)
            while pos < end:
                stop = min((pos // SECTOR + 1) * SECTOR, end)
                if rng.random() < 0.5:
                    torn[pos - base : stop - base] = bytes(stop - pos)
                pos = stop
            got = bytes(torn)
        out = live[:base] + got
        return out + bytes(n - len(out)) if len(out) < n else out  # a write over zeros keeps the size


EMPTY_DISK: Image = (frozenset({PurePosixPath("/"), ROOT}), {})


# --------------------------------------------------------------------------------------------------
# Histories
# --------------------------------------------------------------------------------------------------

Op = Save | str  # a save, or "reopen"


def make_history(seed: int) -> list[Op]:
    rng = random.Random(seed)
    gen = SaveGenerator(random.Random(seed * 7919 + 1))
    model = Model()
    ops: list[Op] = []
    for _ in range(rng.randrange(4, 11)):
        if rng.random() < 0.12:
            ops.append("reopen")
            continue
        save = gen.next(model)
        model.save(*save)
        ops.append(save)
    return ops


@dataclass
class Progress:
    created: bool = False
    returned: int = 0  # saves that returned
    in_flight: Save | None = None
    models: list[Model] = field(default_factory=lambda: [Model()])


def run_history(files: SimFiles, ops: list[Op], progress: Progress) -> None:
    s = FileStorage(DIR, new=True, identity=IDENTITY, files=files, **GROW)  # type: ignore[arg-type]
    progress.created = True
    s.load()
    for op in ops:
        if isinstance(op, str):
            s.close()
            s = FileStorage(DIR, identity=IDENTITY, files=files, **GROW)  # type: ignore[arg-type]
            s.load()
            continue
        progress.in_flight = op
        s.save(*op)
        model = progress.models[-1].copy()
        model.save(*op)
        progress.models.append(model)
        progress.returned += 1
        progress.in_flight = None
    s.close()


def acceptable(progress: Progress) -> list[Model]:
    """The states a correct peer may recover after a crash at this point of the history."""
    base = progress.models[progress.returned]
    out = [base]
    if progress.in_flight is not None:
        hs, entries, snap = progress.in_flight
        whole = base.copy()
        whole.save(hs, entries, snap)
        out.append(whole)
        if snap is not None:  # the snapshot is replaced before the log is rewritten
            part = base.copy()
            part.save(None, (), snap)
            out.append(part)
    return out


def recover(image: Image) -> tuple[SimFiles, FileStorage | None, PersistentState | None]:
    """Open the replica on ``image`` and load it: (files, storage, state), or a None state if the
    replica was never completely created (StorageMissingError, which is then correct)."""
    files = SimFiles(image)
    try:
        s = FileStorage(DIR, identity=IDENTITY, files=files, **GROW)  # type: ignore[arg-type]
    except StorageMissingError:
        return files, None, None
    return files, s, s.load()


def check_case(seed: int, ops: list[Op], crash_after: int, rng: random.Random) -> str:
    """Crash the history after ``crash_after`` steps, recover, and check everything. Returns what
    happened, for the coverage counts ("missing", "recovered")."""
    files = SimFiles(EMPTY_DISK, crash_after)
    progress = Progress()
    try:
        run_history(files, ops, progress)
    except Crash:
        pass
    else:
        raise AssertionError(f"seed {seed}: the history finished within {crash_after} steps")
    where = f"seed {seed}, crash after step {crash_after} ({files.trace[-1]})"
    image = files.crash_image(rng)

    rfiles, storage, state = recover(image)
    if state is None:
        assert not progress.created, f"{where}: a created replica came back as missing"
        with FileStorage(DIR, new=True, identity=IDENTITY, files=rfiles, **GROW) as s:  # type: ignore[arg-type]
            assert s.load() == PersistentState(), where
        return "missing"
    assert storage is not None
    matches = [m for m in acceptable(progress) if m.state() == state]
    assert matches, (f"{where}: recovered {state}, but a correct peer may only have one of "
                     f"{[m.state() for m in acceptable(progress)]}; steps: {files.trace}")
    assert storage.raft_state_size() == matches[0].size(), where

    # A crash during recovery, after each of its steps, recovers the same state again.
    for m in range(rfiles.steps):
        mfiles = SimFiles(image, crash_after=m)
        try:
            FileStorage(DIR, identity=IDENTITY, files=mfiles, **GROW).load()  # type: ignore[arg-type]
        except Crash:
            pass
        else:
            raise AssertionError(f"{where}: recovery took {rfiles.steps} steps once, {m} the next time")
        again = recover(mfiles.crash_image(rng))[2]
        assert again == state, (f"{where}, then recovery crashed after its step {m} "
                                f"({mfiles.trace[-1]}): recovered {again}, expected {state}")

    # The recovered storage takes further saves, and reopens to exactly them.
    model = matches[0].copy()
    gen = SaveGenerator(random.Random(f"{seed}-{crash_after}-more"), term=max(1, state.hard_state.term))
    for _ in range(rng.randrange(1, 4)):
        save = gen.next(model)
        storage.save(*save)
        model.save(*save)
    storage.close()
    with FileStorage(DIR, identity=IDENTITY, files=rfiles, **GROW) as s:  # type: ignore[arg-type]
        assert s.load() == model.state(), f"{where}: later saves did not survive a reopen"
        assert s.raft_state_size() == model.size(), where
    return "recovered"


def history_steps(ops: list[Op]) -> int:
    files = SimFiles(EMPTY_DISK)
    run_history(files, ops, Progress())
    return files.steps


def replay(seed: int, crash_after: int) -> str:
    """Rerun one case (for debugging a failure): ``replay(seed, crash_after)``."""
    return check_case(seed, make_history(seed), crash_after, random.Random(f"{seed}-{crash_after}"))


class _Count(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seen: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        for key in ("zero bytes", "zero-filled sectors", "incomplete record header",
                    "incomplete last record", "newer than the log", "removing unfinished"):
            if key in msg:
                self.seen[key] += 1


# --------------------------------------------------------------------------------------------------
# The test
# --------------------------------------------------------------------------------------------------

CHUNKS = 6


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_crash_after_every_step(chunk: int) -> None:
    """Every step of save, snapshot, creation and recovery, in SEEDS seeded histories."""
    logger = logging.getLogger("raykv.storage")
    counter = _Count()
    logger.addHandler(counter)
    saved_level, saved_propagate = logger.level, logger.propagate
    logger.setLevel(logging.INFO)
    logger.propagate = False  # thousands of repair messages: counted here, not printed
    outcomes: Counter[str] = Counter()
    steps = 0
    try:
        for seed in range(SEED_BASE + chunk, SEED_BASE + SEEDS, CHUNKS):
            ops = make_history(seed)
            total = history_steps(ops)
            steps += total
            for n in range(total):
                outcomes[check_case(seed, ops, n, random.Random(f"{seed}-{n}"))] += 1
    finally:
        logger.removeHandler(counter)
        logger.setLevel(saved_level)
        logger.propagate = saved_propagate
    print(f"chunk {chunk}: {steps} crash points, {dict(outcomes)}, repairs {dict(counter.seen)}")
    if SEEDS >= 30 * CHUNKS:  # the test is only worth something if every kind of repair happened
        # An all-zero tail is the log's clean end (no "zero bytes" warning), and every record is
        # written into the durable zero region, so a torn one shows zero sectors, never a file too
        # short for it ("incomplete last record": tests/test_file_storage.py, on logs without region).
        for key in ("zero-filled sectors", "newer than the log", "removing unfinished"):
            assert counter.seen[key] > 0, f"no crash point exercised {key!r}: {dict(counter.seen)}"
        assert outcomes["missing"] > 0


def test_simulated_disk_loses_what_was_not_synced() -> None:
    """The simulator itself: unsynced data and entries may vanish, synced ones never do."""
    files = SimFiles(EMPTY_DISK)
    files.makedirs(DIR)
    h = files.create(DIR / "a")
    files.write(h, b"durable")
    files.fsync(h)
    files.fsync_dir(DIR)
    files.write(h, b"+volatile")
    h2 = files.create(DIR / "b")
    files.write(h2, b"never synced")
    images = [files.crash_image(random.Random(k)) for k in range(200)]
    assert all(img[1][DIR / "a"].startswith(b"durable") for img in images)
    assert {img[1][DIR / "a"] for img in images} >= {b"durable", b"durable+volatile"}
    assert any(img[1][DIR / "a"] == b"durable" + bytes(3) for img in images) or any(
        img[1][DIR / "a"].startswith(b"durable\0") for img in images)
    assert any(DIR / "b" not in img[1] for img in images)
    assert any(DIR / "b" in img[1] for img in images)


def test_simulated_disk_tears_writes_over_zeros() -> None:
    """A write over a durable zero tail (the log's pre-zeroed region) that was not synced yet may
    reach the disk whole, not at all, as a prefix of whole sectors, or with some sectors left zero;
    the file's size stays, and what was durable before it never changes."""
    files = SimFiles(EMPTY_DISK)
    files.makedirs(DIR)
    h = files.create(DIR / "log")
    files.write(h, b"head" + bytes(2044))
    files.fsync(h)
    files.fsync_dir(DIR)
    record = bytes(range(1, 201)) * 7  # 1400 bytes over offsets 4..1404: three sectors
    files.pwrite(h, record, 4)
    images = [files.crash_image(random.Random(k))[1][DIR / "log"] for k in range(300)]
    assert all(len(img) == 2048 and img.startswith(b"head") for img in images)
    assert all(img[1404:] == bytes(644) for img in images)
    got = {img[4:1404] for img in images}
    assert bytes(1400) in got and record in got
    assert record[:508] + bytes(892) in got  # torn at the first sector boundary
    assert any(g[:508] == bytes(508) and g[508:1020] == record[508:1020] for g in got)  # a hole
    for g in got:  # sectors are whole: every sector-aligned chunk is all new or all zero
        for lo, hi in ((0, 508), (508, 1020), (1020, 1400)):
            assert g[lo:hi] in (record[lo:hi], bytes(hi - lo))
    files.fdatasync(h)
    assert {files.crash_image(random.Random(k))[1][DIR / "log"] for k in range(20)} == {
        b"head" + record + bytes(644)}
