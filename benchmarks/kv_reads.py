"""kvraft reads: ReadIndex against reads through the log, at 1, 10 and 100 concurrent clients.

    python benchmarks/kv_reads.py [--quick] [--json FILE] [--duration S]

For each read path (``log``: a Get batch is proposed, committed and applied like a write; ``index``:
ReadIndex, one heartbeat round per batch and nothing written, see docs/raft.md) it starts a group of
3 replicas (durable FileStorage with one fsync per batch, direct transport), writes 100 keys, and
lets N asyncio clients (coroutines sharing one AsyncClerk, which coalesces their Gets into batches)
read their own key in a loop for ``--duration`` seconds after a warm-up. It records every read's
latency, checks every value read, and prints a table of reads/s and median / p99 latency.

``--json FILE`` writes ``{"results": [{"read_path", "clients", "reads_per_s", "p50_ms", "p99_ms",
"calls"}, ...], "speedup": {clients: index/log reads_per_s}}``. ``--quick`` shortens every run.
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

import kvraft

CLIENTS = (1, 10, 100)
READ_PATHS = ("log", "index")


def start_kv_group(read_path: str, storage: str = "durable") -> kvraft.KVGroup:
    """A 3-replica KV group whose servers serve Gets by ``read_path`` (``"index"`` or ``"log"``):
    ``kvraft.start_group`` with the servers' ``read_path`` option (``spec.extra``)."""
    import functools
    import uuid

    from actors.service_group import start_replicas
    from kvraft.group import KVGroup
    from kvraft.server import kv_replica_actor
    from kvraft.statemachine import KVStateMachine

    actor_cls = kv_replica_actor()
    started = start_replicas(3, name=None, default_name=lambda: f"kvreads-{uuid.uuid4().hex[:8]}",
                             actor_cls=lambda i: actor_cls,
                             state_machine=functools.partial(KVStateMachine, -1),
                             storage=storage, transport="direct", extra={"read_path": read_path},
                             identity=True)
    group = KVGroup(started, {})
    group.leader()
    return group


def run_reads(group: kvraft.KVGroup, clients: int, warmup: float, duration: float) -> tuple[list[float], int]:
    """N coroutines each reading their own key; returns (latencies of the measured reads, calls)."""

    async def main() -> tuple[list[float], int]:
        ck = group.async_clerk()
        loop = asyncio.get_running_loop()
        start = loop.time() + warmup
        stop = start + duration
        lat: list[float] = []

        async def client(c: int) -> None:
            key, want = f"k{c}", f"value-{c}"
            while True:
                t = loop.time()
                if t >= stop:
                    return
                got = await ck.get(key)
                if got != want:
                    raise AssertionError(f"read {key!r} = {got!r}, expected {want!r}")
                if t >= start:
                    lat.append(loop.time() - t)

        await asyncio.gather(*(client(c) for c in range(clients)))
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
            group = start_kv_group(path)
            try:
                ck = group.clerk()
                for c in range(max(CLIENTS)):
                    ck.put(f"k{c}", f"value-{c}")
                for clients in CLIENTS:
                    t0 = time.perf_counter()
                    lat, calls = run_reads(group, clients, warmup, duration)
                    lat.sort()
                    row = {"read_path": path, "clients": clients,
                           "reads_per_s": round(len(lat) / duration, 1),
                           "p50_ms": round(percentile(lat, 0.5) * 1e3, 3),
                           "p99_ms": round(percentile(lat, 0.99) * 1e3, 3), "calls": calls}
                    results.append(row)
                    print(f"  {path:>5} {clients:>3} clients: {row['reads_per_s']:>9,.0f} reads/s  "
                          f"p50 {row['p50_ms']:.2f} ms  p99 {row['p99_ms']:.2f} ms  "
                          f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
            finally:
                group.stop()
    finally:
        ray.shutdown()

    speedup = print_comparison(results, CLIENTS, "reads_per_s", "reads")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "speedup": speedup,
                                               "duration_s": duration}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
