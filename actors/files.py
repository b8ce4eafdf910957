"""The file-system calls :class:`~actors.file_storage.FileStorage` makes, behind one small interface.

Every step that changes what is on disk (create, write, fsync, rename, unlink, directory fsync, mkdir)
is one method call here, so a test can substitute a simulated file system that stops ("crashes") after
any given step and then shows what a real disk could hold after such a crash (what was fsynced, plus
possibly a torn or zero-filled tail of what was not). :class:`OsFiles` is the real thing.

Handles are opaque: whatever :meth:`Files.create` / :meth:`Files.open_append` / :meth:`Files.open_write`
return is passed back to :meth:`Files.write`, :meth:`Files.pwrite`, :meth:`Files.fsync`,
:meth:`Files.fdatasync` and :meth:`Files.close`.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import Any, Protocol


class LockBusy(Exception):
    """The lock is held by someone else; ``holder`` is what they wrote into the lock file."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


class Files(Protocol):
    """What FileStorage needs from a file system. Paths are absolute or relative :class:`Path` s."""

    def exists(self, path: Path) -> bool: ...

    def is_dir(self, path: Path) -> bool: ...

    def read(self, path: Path) -> bytes: ...

    def makedirs(self, path: Path) -> None:
        """Create ``path`` and any missing parents, making every new directory entry durable."""
        ...

    def create(self, path: Path) -> Any:
        """Open ``path`` for writing, created empty (truncated if it exists)."""
        ...

    def open_append(self, path: Path) -> Any: ...

    def open_write(self, path: Path) -> Any:
        """Open the existing file ``path`` for positioned writes (:meth:`pwrite`), not truncated."""
        ...

    def write(self, handle: Any, data: bytes) -> None: ...

    def pwrite(self, handle: Any, data: bytes, offset: int) -> None:
        """Write all of ``data`` at byte ``offset`` (overwriting, or extending the file)."""
        ...

    def truncate(self, handle: Any, size: int) -> None:
        """Cut the open file to ``size`` bytes (durable only after :meth:`fsync`)."""
        ...

    def fsync(self, handle: Any) -> None: ...

    def fdatasync(self, handle: Any) -> None:
        """Make the file's data durable, and of its metadata only what is needed to read it back
        (on Linux: the size if it changed, not the modification time)."""
        ...

    def close(self, handle: Any) -> None: ...

    def rename(self, src: Path, dst: Path) -> None:
        """Atomically replace ``dst`` by ``src`` (durable only after :meth:`fsync_dir`)."""
        ...

    def unlink(self, path: Path) -> None: ...

    def fsync_dir(self, path: Path) -> None: ...

    def lock(self, path: Path, timeout: float) -> Any:
        """Take an exclusive lock on the file ``path`` (created if missing), waiting up to
        ``timeout`` seconds; raise :class:`LockBusy` if it stays held."""
        ...

    def unlock(self, handle: Any) -> None: ...


class OsFiles:
    """The real file system (``os`` calls; ``os.fsync`` is looked up at call time, so tests can wrap
    it)."""

    def exists(self, path: Path) -> bool:
        return path.exists()

    def is_dir(self, path: Path) -> bool:
        return path.is_dir()

    def read(self, path: Path) -> bytes:
        return path.read_bytes()

    def makedirs(self, path: Path) -> None:
        missing: list[Path] = []
        p = path
        while not p.exists():
            missing.append(p)
            if p.parent == p:
                break
            p = p.parent
        for d in reversed(missing):
            d.mkdir(exist_ok=True)
            self.fsync_dir(d.parent)

    def create(self, path: Path) -> int:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)

    def open_append(self, path: Path) -> int:
        return os.open(path, os.O_WRONLY | os.O_APPEND)

    def open_write(self, path: Path) -> int:
        return os.open(path, os.O_WRONLY)

    def write(self, handle: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(handle, view)
            view = view[written:]

    def pwrite(self, handle: int, data: bytes, offset: int) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(handle, view, offset)
            view = view[written:]
            offset += written

    def truncate(self, handle: int, size: int) -> None:
        os.ftruncate(handle, size)

    def fsync(self, handle: int) -> None:
        os.fsync(handle)

    def fdatasync(self, handle: int) -> None:
        os.fdatasync(handle)

    def close(self, handle: int) -> None:
        os.close(handle)

    def rename(self, src: Path, dst: Path) -> None:
        os.replace(src, dst)

    def unlink(self, path: Path) -> None:
        path.unlink()

    def fsync_dir(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def lock(self, path: Path, timeout: float) -> int:
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
                    raise LockBusy(holder) from None
                time.sleep(0.02)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    def unlock(self, handle: int) -> None:
        fcntl.flock(handle, fcntl.LOCK_UN)
        os.close(handle)
