"""Controller Queries: ReadIndex against Queries through the log, at 1, 10 and 100 concurrent clients.

    python benchmarks/ctrler_queries.py [--quick] [--json FILE] [--duration S]

For each read path (``log``: a batch of Queries is proposed, committed and applied like a write, as
every Query was before issue 13's item 2; ``index``: ReadIndex, one heartbeat round per batch and
nothing written, see docs/shardctrler.md) it starts a controller group of 3 replicas
(``shardctrler.start_group``: durable FileStorage, one fsync per batch, direct transport), joins 3
groups, and lets N asyncio clients (coroutines sharing one AsyncClerk, which coalesces their Queries
into batches) ask for the latest configuration in a loop for ``--duration`` seconds after a warm-up.
It records every Query's latency, checks every answer, counts the log entries the Queries wrote, and
prints a table of Queries/s and median / p99 latency.

``--json FILE`` writes ``{"results": [{"read_path", "clients", "queries_per_s", "p50_ms", "p99_ms",
"calls", "log_entries"}, ...], "speedup": {clients: index/log queries_per_s}}``. ``--quick`` shortens
every run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import ray

# The repo first (so ``kvraft`` is the package, not benchmarks/kvraft.py), benchmarks/ after it
# (``read_paths``).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.append(str(Path(__file__).resolve().parent))

from read_paths import percentile, print_comparison

import shardctrler

CLIENTS = (1, 10, 100)
READ_PATHS = ("log", "index")


def last_index(ctrler: shardctrler.CtrlerGroup) -> int:
    return int(ctrler.status()[ctrler.leader()]["last_index"])


def run_queries(ctrler: shardctrler.CtrlerGroup, clients: int, warmup: float,
                duration: float) -> tuple[list[float], int]:
    """N coroutines each asking for the latest configuration; returns (latencies measured, calls)."""

    async def main() -> tuple[list[float], int]:
        ck = ctrler.async_clerk()
        await ck.query()  # opens the clerk's session (through the log), before anything is measured
        loop = asyncio.get_running_loop()
        start = loop.time() + warmup
        stop = start + duration
        lat: list[float] = []

        async def client() -> None:
            while True:
                t = loop.time()
                if t >= stop:
                    return
                cfg = await ck.query()
                if cfg.num != 3 or sorted(cfg.groups) != [1, 2, 3]:
                    raise AssertionError(f"Query(-1) answered configuration {cfg.num} with groups "
                                         f"{sorted(cfg.groups)}, expected 3 with [1, 2, 3]")
                if t >= start:
                    lat.append(loop.time() - t)

        await asyncio.gather(*(client() for _ in range(clients)))
        calls = ck.calls
        await ck.close()
        return lat, calls

    return asyncio.run(main())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=5.0, help="measured seconds per run (5)")
    ap.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per run (1)")
    ap.add_argument("--quick", action="store_true", help="1 s runs, 0.3 s warm-up")
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON")
    args = ap.parse_args(argv)
    duration, warmup = (1.0, 0.3) if args.quick else (args.duration, args.warmup)
    ray.init(ignore_reinit_error=True, include_dashboard=False, log_to_driver=False)
    results: list[dict[str, Any]] = []
    try:
        for path in READ_PATHS:
            ctrler = shardctrler.start_group(3, storage="durable", read_path=path)
            try:
                ck = ctrler.clerk()
                for gid in (1, 2, 3):
                    ck.join({gid: [f"s{gid}"]})
                for clients in CLIENTS:
                    t0 = time.perf_counter()
                    before = last_index(ctrler)
                    lat, calls = run_queries(ctrler, clients, warmup, duration)
                    entries = last_index(ctrler) - before
                    lat.sort()
                    row = {"read_path": path, "clients": clients,
                           "queries_per_s": round(len(lat) / duration, 1),
                           "p50_ms": round(percentile(lat, 0.5) * 1e3, 3),
                           "p99_ms": round(percentile(lat, 0.99) * 1e3, 3), "calls": calls,
                           "log_entries": entries}
                    results.append(row)
                    print(f"  {path:>5} {clients:>3} clients: {row['queries_per_s']:>9,.0f} queries/s  "
                          f"p50 {row['p50_ms']:.2f} ms  p99 {row['p99_ms']:.2f} ms  {calls} calls  "
                          f"{entries} log entries ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
            finally:
                ctrler.stop()
    finally:
        ray.shutdown()

    speedup = print_comparison(results, CLIENTS, "queries_per_s", "Queries")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "speedup": speedup,
                                               "duration_s": duration}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
