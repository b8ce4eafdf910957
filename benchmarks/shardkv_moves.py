"""Shard moves under load: how long a move takes, what clients get done meanwhile, and what garbage
collection gives back.

    python benchmarks/shardkv_moves.py [--window S] [--callers N] [--keys N] [--value-bytes N] [--json FILE]
                                       [--transport direct|stream]

A controller and two shard groups of 3 replicas (direct actor calls unless ``--transport stream``;
memory storage, the hash key mapping over 10 shards, maxraftstate 8 KiB) are started on an embedded
Ray runtime, ``--keys`` keys
are written with values of ``--value-bytes`` bytes, and one asyncio clerk shared by ``--callers``
coroutines keeps putting (50 %) and getting (50 %) random keys. Five windows of ``--window``
seconds follow one another: steady (2 groups), a Join of a third group at the start of the window,
steady (3 groups), a Leave of that group, steady (2 groups). For each window it reports the
operations completed, and the worst 100 ms within it.

Per moved shard, the time from the controller's new configuration (the driver's Join / Leave call
returning) to the shard being served by its new owner (the first replica of the new owner to apply
the shard's install), from the replicas' own records (``ShardKVReplica.shard_events``; every clock
is the machine's CLOCK_MONOTONIC). Median and worst over the run.

Garbage collection: the bytes of keys and values the old owners' replicas still hold for shards
that left them (``resident_bytes["leaving"]``), sampled every 20 ms: the peak during the move and
the value once the group has settled; and the old owners' persisted bytes (Raft state + snapshot)
before the move and after it settled.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import ray

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import shardctrler
import shardkv

REPLICAS = 3
BUCKET_S = 0.1


class Load:
    """An asyncio clerk shared by ``callers`` coroutines, in its own thread; completions are counted
    per 100 ms bucket of the monotonic clock."""

    def __init__(self, ctrler: Any, callers: int, keys: list[str], value_bytes: int) -> None:
        self.ctrler, self.callers, self.keys, self.value_bytes = ctrler, callers, keys, value_bytes
        self.done: list[float] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.calls = 0
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self.thread.start()

    async def _main(self) -> None:
        ck = shardkv.make_async_clerk(self.ctrler, mapping="hash")
        rng = random.Random(1)
        value = "x" * self.value_bytes

        async def caller() -> None:
            while not self.stop.is_set():
                key = rng.choice(self.keys)
                if rng.random() < 0.5:
                    await ck.put(key, value, timeout=60)
                else:
                    await ck.get(key, timeout=60)
                self.done.append(time.monotonic())

        try:
            await asyncio.gather(*(caller() for _ in range(self.callers)))
        except BaseException as e:
            self.error = e
        self.calls = ck.calls
        await ck.close()

    def between(self, t0: float, t1: float) -> tuple[int, int]:
        """Operations completed in [t0, t1), and the fewest in any full 100 ms bucket of it."""
        done = [t for t in list(self.done) if t0 <= t < t1]
        buckets = [0] * max(1, int((t1 - t0) / BUCKET_S))
        for t in done:
            i = int((t - t0) / BUCKET_S)
            if i < len(buckets):
                buckets[i] += 1
        return len(done), min(buckets)

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(120)
        if self.error is not None:
            raise self.error


def leaving_bytes(groups: list[Any]) -> int:
    """Bytes of keys and values that every replica of ``groups`` holds for shards that left."""
    total = 0
    for g in groups:
        for st in ray.get([r.shard_stats.remote() for r in g.replicas], timeout=30):
            total += st.get("resident_bytes", {}).get("leaving", 0)
    return total


def persisted(groups: list[Any]) -> int:
    return sum(st["raft_state_size"] + st["snapshot_size"] for g in groups
               for st in ray.get([r.shard_stats.remote() for r in g.replicas], timeout=30))


def settled(groups: list[Any], num: int) -> bool:
    for g in groups:
        sts = ray.get([r.shard_stats.remote() for r in g.replicas], timeout=30)
        if not all(st.get("config") == num and st.get("settled") for st in sts):
            return False
    return True


def watch_move(groups: list[Any], old_owners: list[Any], num: int, window: float) -> dict[str, int]:
    """Sample the old owners' leaving bytes every 20 ms for ``window`` seconds (and until every
    group has settled in ``num``)."""
    t_end = time.monotonic() + window
    peak = 0
    while True:
        peak = max(peak, leaving_bytes(old_owners))
        if time.monotonic() >= t_end and settled(groups, num):
            break
        assert time.monotonic() < t_end + 60, "the groups did not settle within 60 s after the window"
        time.sleep(0.02)
    return {"leaving_peak_bytes": peak, "leaving_after_bytes": leaving_bytes(old_owners)}


def move_times(groups: list[Any], changes: list[tuple[int, float]]) -> list[float]:
    """Seconds from each change's configuration to each moved shard's first install at its new owner."""
    installed: dict[tuple[int, int], float] = {}
    for g in groups:
        for events in ray.get([r.shard_events.remote() for r in g.replicas], timeout=30):
            for what, num, shards, t in events:
                if what == "installed":
                    for s in shards:
                        installed[(num, s)] = min(t, installed.get((num, s), t))
    out = []
    for num, t0 in changes:
        out += [t - t0 for (n, _), t in installed.items() if n == num]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--window", type=float, default=3.0, help="seconds per window (default 3)")
    ap.add_argument("--callers", type=int, default=50, help="concurrent callers on one asyncio clerk")
    ap.add_argument("--keys", type=int, default=200, help="keys written and used (default 200)")
    ap.add_argument("--value-bytes", type=int, default=100, help="bytes per value (default 100)")
    ap.add_argument("--json", type=Path, help="write the results as JSON here")
    ap.add_argument("--transport", choices=("direct", "stream"), default="direct",
                    help="how replicas and clerks talk (default: direct, as the published figures)")
    args = ap.parse_args()

    ray.init(include_dashboard=False, logging_level="WARNING")
    ctrler = shardctrler.start_group(REPLICAS, storage="memory", transport=args.transport)
    groups: list[Any] = []
    try:
        opts = {"storage": "memory", "mapping": "hash", "maxraftstate": 8192}
        groups.append(shardkv.start_group(1, ctrler, REPLICAS, join=False, **opts))
        groups.append(shardkv.start_group(2, ctrler, REPLICAS, join=False, **opts))
        ck = ctrler.clerk()
        ck.join({g.gid: g.names for g in groups}, timeout=30)
        kv = shardkv.make_clerk(ctrler, mapping="hash")
        keys = [f"user:{i}" for i in range(args.keys)]
        for k in keys:
            kv.put(k, "x" * args.value_bytes, timeout=30)
        load = Load(ctrler, args.callers, keys, args.value_bytes)
        time.sleep(1.0)  # warm up
        windows: dict[str, Any] = {}
        changes: list[tuple[int, float]] = []

        t = time.monotonic()
        time.sleep(args.window)
        windows["steady, 2 groups"] = load.between(t, t + args.window)

        g3 = shardkv.start_group(3, ctrler, REPLICAS, **opts)
        groups.append(g3)
        before = persisted(groups[:2])
        t = time.monotonic()
        num = ck.join({3: g3.names}, timeout=30)
        changes.append((num, time.monotonic()))
        gc_join = watch_move(groups, groups[:2], num, args.window)
        gc_join["persisted_before_bytes"], gc_join["persisted_after_bytes"] = before, persisted(groups[:2])
        windows["join"] = load.between(t, t + args.window)

        t = time.monotonic()
        time.sleep(args.window)
        windows["steady, 3 groups"] = load.between(t, t + args.window)

        before = persisted([g3])
        t = time.monotonic()
        num = ck.leave([3], timeout=30)
        changes.append((num, time.monotonic()))
        gc_leave = watch_move(groups, [g3], num, args.window)
        gc_leave["persisted_before_bytes"], gc_leave["persisted_after_bytes"] = before, persisted([g3])
        windows["leave"] = load.between(t, t + args.window)

        t = time.monotonic()
        time.sleep(args.window)
        windows["steady, 2 groups again"] = load.between(t, t + args.window)
        load.finish()
        moves = move_times(groups, changes)
    finally:
        for g in groups:
            g.stop()
        ctrler.stop()

    print(f"{args.callers} callers on one asyncio clerk, {args.keys} keys of {args.value_bytes} bytes, "
          f"windows of {args.window:g} s; {load.calls} calls for {len(load.done)} operations")
    for name, (ops, worst) in windows.items():
        print(f"  {name:24s} {ops:7d} ops ({ops / args.window:8.0f}/s), worst 100 ms: {worst}")
    print(f"  shard moves: {len(moves)}, from new configuration to served by the new owner: "
          f"median {statistics.median(moves) * 1000:.0f} ms, worst {max(moves) * 1000:.0f} ms")
    for name, gc in (("join (old owners 1, 2)", gc_join), ("leave (old owner 3)", gc_leave)):
        print(f"  GC after {name}: leaving shards' bytes peak {gc['leaving_peak_bytes']}, after "
              f"{gc['leaving_after_bytes']}; persisted {gc['persisted_before_bytes']} -> "
              f"{gc['persisted_after_bytes']} bytes")
    if args.json:
        args.json.write_text(json.dumps({
            "windows": {k: {"ops": v[0], "worst_100ms": v[1]} for k, v in windows.items()},
            "window_s": args.window, "moves_s": moves, "gc_join": gc_join, "gc_leave": gc_leave,
            "calls": load.calls, "ops": len(load.done)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
