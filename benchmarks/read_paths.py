"""What the two read-path benchmarks (``kv_reads.py``, ``ctrler_queries.py``) share: the percentile of
their latency samples and the table that sets reads through the log against ReadIndex reads."""

from __future__ import annotations

from typing import Any


def percentile(sorted_samples: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``sorted_samples``; NaN when there are none."""
    if not sorted_samples:
        return float("nan")
    k = min(len(sorted_samples) - 1, max(0, round(q * (len(sorted_samples) - 1))))
    return sorted_samples[k]


def print_comparison(results: list[dict[str, Any]], clients: tuple[int, ...], rate: str,
                     label: str) -> dict[int, float | None]:
    """Print, per client count, the log row against the ReadIndex row of ``results`` (``rate`` is the
    per-second field, ``label`` its name in the header); returns ReadIndex's speed-up per client count."""

    def find(path: str, n: int) -> dict[str, Any]:
        return next(r for r in results if r["read_path"] == path and r["clients"] == n)

    print(f"\n| clients | {label}/s, log | {label}/s, ReadIndex | × | p50 log | p50 ReadIndex | p99 log | "
          "p99 ReadIndex |")
    print("|---|---|---|---|---|---|---|---|")
    speedup: dict[int, float | None] = {}
    for n in clients:
        a, b = find("log", n), find("index", n)
        speedup[n] = round(b[rate] / a[rate], 2) if a[rate] else None
        print(f"| {n} | {a[rate]:,.0f} | {b[rate]:,.0f} | {speedup[n]} | {a['p50_ms']:.2f} ms | "
              f"{b['p50_ms']:.2f} ms | {a['p99_ms']:.2f} ms | {b['p99_ms']:.2f} ms |")
    return speedup
