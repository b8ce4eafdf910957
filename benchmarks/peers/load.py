"""A closed-loop load driver shared by every system a benchmark measures.

``await drive(op, writers, warmup_s, duration_s)`` runs ``writers`` coroutines; writer ``c`` calls
``await op(c)`` again as soon as the previous call returned, from the start until the end of the
window. Only operations *started* inside the measured window (after the warm-up) are counted, and
each one's latency is recorded in full even if it ends after the window; so
``ops_per_s = count / duration_s`` and the latency percentiles describe the same operations. An
exception raised by ``op`` fails the whole run (a benchmark that hides errors measures nothing).
"""

from __future__ import annotations

import argparse
import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from read_paths import percentile


def ratio(a: float, b: float | None) -> float | None:
    """``a / b`` rounded to 3 places, or ``None`` when there is no ``b`` to compare with (missing,
    zero, or not a number) or ``a`` is not a number."""
    if b is None or not b or math.isnan(a) or math.isnan(b):
        return None
    return round(a / b, 3)


def check_window(ap: argparse.ArgumentParser, duration_s: float, warmup_s: float) -> None:
    """Refuse (``ap.error``: a usage error, exit status 2) a measured window that is not a positive
    finite number of seconds, or a warm-up that is negative or not finite."""
    if not (duration_s > 0 and math.isfinite(duration_s)) or not (warmup_s >= 0 and math.isfinite(warmup_s)):
        ap.error(f"need --duration > 0 and --warmup >= 0 seconds, got {duration_s} and {warmup_s}")


@dataclass(frozen=True)
class Measurement:
    """One system at one concurrency: operations per second over the window, latency in ms."""

    writers: int
    count: int
    duration_s: float
    p50_ms: float
    p99_ms: float

    @property
    def ops_per_s(self) -> float:
        return self.count / self.duration_s if self.duration_s > 0 else math.nan

    @classmethod
    def of(cls, writers: int, latencies_s: list[float], duration_s: float) -> Measurement:
        """From the latencies (seconds, any order) of the operations started in the window."""
        lat = sorted(latencies_s)
        return cls(writers, len(lat), duration_s, percentile(lat, 0.5) * 1e3, percentile(lat, 0.99) * 1e3)


async def drive(op: Callable[[int], Awaitable[object]], writers: int, warmup_s: float,
                duration_s: float) -> Measurement:
    """Run ``writers`` closed-loop writers of ``op`` for ``warmup_s`` + ``duration_s`` seconds."""
    if writers < 1:
        raise ValueError(f"writers must be at least 1, got {writers}")
    if warmup_s < 0 or duration_s <= 0:
        raise ValueError(f"need warmup_s >= 0 and duration_s > 0, got {warmup_s} and {duration_s}")
    loop = asyncio.get_running_loop()
    start = loop.time() + warmup_s
    stop = start + duration_s
    latencies: list[float] = []

    async def writer(c: int) -> None:
        while True:
            t = loop.time()
            if t >= stop:
                return
            await op(c)
            if t >= start:
                latencies.append(loop.time() - t)

    await asyncio.gather(*(writer(c) for c in range(writers)))
    return Measurement.of(writers, latencies, duration_s)
