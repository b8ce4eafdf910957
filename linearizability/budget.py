"""Time and memory budgets of a check.

A search looks at its :class:`Limits` every few thousand backtracks.  When the deadline has
passed, or the memory in use has grown by more than the budget since the check started, the
search stops and the answer is UNKNOWN with the reason: a check is never killed for memory,
never raises ``MemoryError`` on purpose, and never guesses.

Memory in use is the larger of two measures: how much the process's resident set has grown
since the check first looked at it (``/proc/self/statm`` on Linux, else ``psutil`` if
installed), and the search's own estimate of its cache.  The estimate alone keeps the budget
meaningful where the resident set cannot be read, and when freed memory is reused so that the
resident set does not grow.

The default memory budget (:func:`default_memory_limit`) is half of the machine's physical
memory, and at most three quarters of what is available when the check starts.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Limits", "default_memory_limit", "format_bytes", "parse_size", "resident_bytes"]

_FALLBACK_LIMIT = 2 << 30  # if the machine's memory cannot be read at all


def _statm_reader() -> Callable[[], int] | None:
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        with open("/proc/self/statm", "rb") as f:
            int(f.read().split()[1])
    except (OSError, ValueError, IndexError, AttributeError):
        return None

    def read() -> int:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * page

    return read


def _psutil_reader() -> Callable[[], int] | None:
    try:
        import psutil  # type: ignore[import-untyped]
    except ImportError:
        return None
    process = psutil.Process()
    return lambda: int(process.memory_info().rss)


_READER = _statm_reader() or _psutil_reader()


def resident_bytes() -> int | None:
    """The resident set size of this process in bytes, or None where it cannot be read."""
    if _READER is None:
        return None
    try:
        return _READER()
    except (OSError, ValueError):
        return None


def _meminfo(field_name: str) -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


_cached_default: tuple[float, int] | None = None


def default_memory_limit() -> int:
    """Half of the physical memory, at most three quarters of the memory available now (read
    at most once a second: checks of many small histories need not read it each time)."""
    global _cached_default
    now = time.monotonic()
    if _cached_default is not None and now - _cached_default[0] < 1.0:
        return _cached_default[1]
    limit = _default_memory_limit()
    _cached_default = (now, limit)
    return limit


def _default_memory_limit() -> int:
    total: int | None
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        total = _meminfo("MemTotal")
    available = _meminfo("MemAvailable")
    if total is None or total <= 0:
        return _FALLBACK_LIMIT if available is None else available * 3 // 4
    limit = total // 2
    if available is not None:
        limit = min(limit, available * 3 // 4)
    return max(limit, 64 << 20)


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``"512M"``, ``"1.5G"``, ``"2GiB"``, ``"1000000"`` -> bytes (K, M, G, T are powers of 1024).

    Raises:
        ValueError: for anything else, saying what is expected.
    """
    m = _SIZE.match(text)
    if not m or (m.group(3) and not m.group(2) and m.group(3).lower() != "b"):
        raise ValueError(f"expected a size such as 800M, 1.5G or a number of bytes; got {text!r}")
    value = float(m.group(1)) * 1024 ** " kmgt".index((m.group(2) or " ").lower())
    if value < 1:
        raise ValueError(f"expected a positive size; got {text!r}")
    return int(value)


def format_bytes(n: float) -> str:
    """A short human form: ``"812 MB"``, ``"1.5 GB"`` (powers of 1024)."""
    for unit in ("B", "KB", "MB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.1f} GB" if n < 100 else f"{n:.0f} GB"


def _format_seconds(s: float) -> str:
    return f"{s:g} s" if s >= 1 else f"{s * 1000:.0f} ms"


@dataclass
class Limits:
    """The budget a search runs under.

    Attributes:
        timeout: seconds allowed (None: no limit), counted from ``started``.
        memory_limit: bytes the check may add to the process (None: no limit).
        started: the :func:`time.monotonic` instant the budget starts.
        baseline: the resident set size the growth is counted from: read at the first look at
            the memory (a search first looks after a few thousand backtracks, when it holds
            well under a megabyte, so a small check never pays for reading it); None if it
            cannot be read.
    """

    timeout: float | None = None
    memory_limit: int | None = None
    started: float = field(default_factory=time.monotonic)
    baseline: int | None = None
    _baseline_read: bool = field(default=False, repr=False)

    @property
    def deadline(self) -> float | None:
        return None if self.timeout is None else self.started + self.timeout

    def in_use(self, estimate: int) -> int:
        """Memory attributed to the check: the larger of the resident growth and ``estimate``."""
        now = resident_bytes()
        if not self._baseline_read:
            self._baseline_read = True
            if self.baseline is None:
                self.baseline = now
        if self.baseline is not None and now is not None:
            return max(now - self.baseline, estimate)
        return estimate

    def out_of_time(self) -> str | None:
        """The reason for UNKNOWN if the deadline has passed, else None."""
        if self.timeout is not None and time.monotonic() > self.started + self.timeout:
            return f"the time budget of {_format_seconds(self.timeout)} ran out"
        return None

    def exceeded(self, estimate: int) -> str | None:
        """Why the search must stop now (the reason for UNKNOWN), or None to go on.

        ``estimate`` is the search's own estimate of the bytes it holds.
        """
        late = self.out_of_time()
        if late is not None:
            return late
        if self.memory_limit is not None:
            used = self.in_use(estimate)
            if used > self.memory_limit:
                return (
                    f"the memory budget of {format_bytes(self.memory_limit)} was reached "
                    f"({format_bytes(used)} in use)"
                )
        return None
