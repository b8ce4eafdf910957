"""kvraft throughput and latency: writes/s and p50/p99 for 1, 10 and 100 concurrent clients.

    python benchmarks/kvraft.py [--quick] [--json FILE] [--duration S]

For every combination of clerk (``sync``: one thread and one Clerk per client; ``async``: one
AsyncClerk shared by N coroutines, which coalesces their requests into batches), transport
(``direct``: actor to actor; ``network``: every call through a reliable FaultyNetwork actor) and
storage (``durable``: FileStorage with one fsync per batch; ``memory``), it starts a group of 3
replicas, lets each client Put to its own key in a loop for ``--duration`` seconds after a warm-up,
and records every operation's latency. The raw Ray actor round trip (a driver's ``ray.get`` of an
empty async actor method) is measured in the same run, and the targets are checked against it:

- at least 9,000 writes/s at 100 concurrent asyncio clients, durable storage, direct transport;
- median sequential write latency (1 sync client, durable, direct) at most 3x the raw round trip.

``--json FILE`` writes ``{"raw_ray_rtt_ms": ..., "results": [{"replicas", "clients", "clerk",
"transport", "storage", "ops_per_s", "p50_ms", "p99_ms"}, ...]}``. ``--quick`` shortens every run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import ray
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import kvraft

REPLICAS = 3
CLIENTS = (1, 10, 100)
WRITE_TARGET_OPS = 9000.0
LATENCY_TARGET_RATIO = 3.0


@ray.remote(num_cpus=0)
class Echo:
    async def ping(self) -> None:
        return None


def raw_rtt_ms(calls: int) -> float:
    """Median driver -> async actor -> driver round trip of an empty call."""
    echo = Echo.remote()
    ray.get(echo.ping.remote())
    for _ in range(100):
        ray.get(echo.ping.remote())
    samples = []
    for _ in range(calls):
        t = time.perf_counter()
        ray.get(echo.ping.remote())
        samples.append(time.perf_counter() - t)
    ray.kill(echo)
    return statistics.median(samples) * 1e3


def percentile(sorted_samples: list[float], q: float) -> float:
    if not sorted_samples:
        return float("nan")
    k = min(len(sorted_samples) - 1, max(0, round(q * (len(sorted_samples) - 1))))
    return sorted_samples[k]


def run_sync(group: kvraft.KVGroup, clients: int, warmup: float, duration: float) -> list[float]:
    clerks = [group.clerk() for _ in range(clients)]
    for c, ck in enumerate(clerks):
        ck.put(f"k{c}", "warm")
    start = time.monotonic() + warmup
    stop = start + duration
    lat: list[list[float]] = [[] for _ in range(clients)]
    value = "v" * 16

    def client(c: int) -> None:
        ck, mine, key = clerks[c], lat[c], f"k{c}"
        while True:
            t = time.monotonic()
            if t >= stop:
                return
            ck.put(key, value)
            if t >= start:
                mine.append(time.monotonic() - t)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [x for m in lat for x in m]


def run_async(group: kvraft.KVGroup, clients: int, warmup: float, duration: float) -> tuple[list[float], int]:
    async def main() -> tuple[list[float], int]:
        ck = group.async_clerk()
        await ck.put("k", "warm")
        loop = asyncio.get_running_loop()
        start = loop.time() + warmup
        stop = start + duration
        lat: list[float] = []
        value = "v" * 16

        async def client(c: int) -> None:
            key = f"k{c}"
            while True:
                t = loop.time()
                if t >= stop:
                    return
                await ck.put(key, value)
                if t >= start:
                    lat.append(loop.time() - t)

        await asyncio.gather(*(client(c) for c in range(clients)))
        calls = ck.calls
        await ck.close()
        return lat, calls

    return asyncio.run(main())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs (about a minute in all)")
    parser.add_argument("--json", type=Path, help="write the results to this file")
    parser.add_argument("--duration", type=float, help="seconds measured per configuration")
    parser.add_argument("--only-targets", action="store_true",
                        help="measure only the two target configurations")
    a = parser.parse_args(argv)
    duration = a.duration or (1.0 if a.quick else 3.0)
    warmup = 0.3 if a.quick else 0.5

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        rtt = raw_rtt_ms(500 if a.quick else 2000)
        combos = []
        for storage in ("durable", "memory"):
            for transport in ("direct", "network"):
                for clerk in ("sync", "async"):
                    for clients in CLIENTS:
                        if a.only_targets and not (storage == "durable" and transport == "direct" and (
                                (clerk == "sync" and clients == 1) or (clerk == "async" and clients == 100))):
                            continue
                        combos.append((storage, transport, clerk, clients))
        results: list[dict[str, Any]] = []
        groups: dict[tuple[str, str], kvraft.KVGroup] = {}
        bar = tqdm(combos, desc="kvraft", unit="config", file=sys.stderr)
        for storage, transport, clerk, clients in bar:
            bar.set_postfix_str(f"{storage}/{transport}/{clerk}/{clients}")
            group = groups.get((storage, transport))
            if group is None:
                for g in groups.values():
                    g.stop()
                groups.clear()
                group = groups[(storage, transport)] = kvraft.start_group(
                    REPLICAS, storage=storage, transport=transport)
            if clerk == "sync":
                lat = run_sync(group, clients, warmup, duration)
            else:
                lat, _ = run_async(group, clients, warmup, duration)
            lat.sort()
            results.append({
                "replicas": REPLICAS, "clients": clients, "clerk": clerk, "transport": transport,
                "storage": storage, "ops_per_s": len(lat) / duration,
                "p50_ms": percentile(lat, 0.5) * 1e3, "p99_ms": percentile(lat, 0.99) * 1e3,
            })
        for g in groups.values():
            g.stop()
    finally:
        ray.shutdown()

    print(f"\nraw Ray actor round trip (median): {rtt:.3f} ms\n")
    print(f"{'storage':8} {'transport':9} {'clerk':5} {'clients':>7} {'ops/s':>9} {'p50 ms':>8} "
          f"{'p99 ms':>8}")
    for r in results:
        print(f"{r['storage']:8} {r['transport']:9} {r['clerk']:5} {r['clients']:>7} {r['ops_per_s']:>9.0f} "
              f"{r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f}")

    def find(clerk: str, clients: int) -> dict[str, Any] | None:
        for r in results:
            key = (r["storage"], r["transport"], r["clerk"], r["clients"])
            if key == ("durable", "direct", clerk, clients):
                return r
        return None

    print()
    thr, seq = find("async", 100), find("sync", 1)
    if thr is not None:
        ok = thr["ops_per_s"] >= WRITE_TARGET_OPS
        print(f"target 1: {thr['ops_per_s']:.0f} writes/s at 100 async clients (durable, direct); "
              f"target >= {WRITE_TARGET_OPS:.0f}: {'met' if ok else 'MISSED'} "
              f"({thr['ops_per_s'] / WRITE_TARGET_OPS:.2f}x)")
    if seq is not None:
        ratio = seq["p50_ms"] / rtt
        print(f"target 2: sequential write p50 {seq['p50_ms']:.2f} ms = {ratio:.2f}x the raw round trip "
              f"({rtt:.2f} ms); target <= {LATENCY_TARGET_RATIO:.0f}x: "
              f"{'met' if ratio <= LATENCY_TARGET_RATIO else 'MISSED'}")
    if a.json:
        a.json.write_text(json.dumps({"raw_ray_rtt_ms": rtt, "results": results}, indent=2) + "\n")
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
