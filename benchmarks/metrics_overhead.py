"""What the replica metrics cost a write: the same writes with and without them, in one process.

    /work/bin/heavy python benchmarks/metrics_overhead.py [--rounds 5] [--sequential 400] [--writers 100]
        [--per-writer 40]

Three kvraft replicas' Python classes (``kvraft.server.KVReplica``) and an asyncio clerk in ONE asyncio
loop, over the stream transport on 127.0.0.1, with memory storage (no fsync: the metrics' share of a
write is the largest it can be). Every replica and the clerk share one core, so any CPU the metrics
add shows as lost throughput. Each round runs the workload twice, once with the replicas' ``_drain``
as committed (metrics on) and once with the same ``_drain`` less the metrics lines (off: the
function is rebuilt from its source with them removed), in alternating order after a warm-up run;
the table gives the median over the rounds of sequential latency (``--sequential`` puts one at a time),
of throughput (``--writers`` concurrent writers, ``--per-writer`` puts each) and of this process's CPU
time per write over both parts (the least noisy of the three on a shared machine), and the difference.
Also: Readies and drains per write at the leader, and the cost of the metrics' per-Ready work alone
(``timeit``). No Ray runtime is started.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import inspect
import os
import statistics
import sys
import textwrap
import time
import timeit
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
# the repository first: benchmarks/kvraft.py must not shadow the kvraft package
sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or os.curdir).resolve() != _HERE]

import actors.replica as replica_module  # noqa: E402 (after the sys.path order above)
from actors.metrics import ReplicaMetrics  # noqa: E402
from actors.replica import ReplicaSpec  # noqa: E402
from actors.stream_auth import new_secret  # noqa: E402
from kvraft.statemachine import KVStateMachine  # noqa: E402

#: the lines of ReplicaActor._drain that feed the metrics (removed for the "off" variant)
_METRIC_LINES = (
    "m = self.metrics",
    "if core.term != m.term or core.role != m.last_role:",
    "m.role(core.term, core.role, core.voted_for == core.id)",
    "if rd.entries and core.is_leader:",
    "m.appended(rd.entries[-1].index, time.perf_counter())",
    "m.snapshot_installed(len(rd.apply_snapshot.data))",
    "ops = 0",
    "ops += len(result) if type(result) is list else command is not None",
    "m.snapshot_taken(len(data))",
    "if rd.committed_entries:",
    "m.applied(len(rd.committed_entries), ops)",
    "if m.waiting:",
    "m.committed(rd.committed_entries[-1].index, time.perf_counter())",
)


def drain_without_metrics() -> Any:
    """``ReplicaActor._drain`` rebuilt without the metrics lines (checked: each one is found once)."""
    source = textwrap.dedent(inspect.getsource(replica_module.ReplicaActor._drain))
    kept = []
    found = dict.fromkeys(_METRIC_LINES, 0)
    for line in source.splitlines():
        code = line.split("  #")[0].strip()
        if code in found:
            found[code] += 1
            continue
        kept.append(line)
    missing = [k for k, n in found.items() if n != 1]
    if missing:
        raise SystemExit(f"_drain changed: these metrics lines were not found exactly once: {missing}")
    namespace: dict[str, Any] = {}
    exec(compile("\n".join(kept), "<drain without metrics>", "exec"), vars(replica_module), namespace)
    return namespace["_drain"]


async def _workload(sequential: int, writers: int, per_writer: int) -> tuple[float, float, int, int, float]:
    """``(sequential p50 seconds, writes/s at writers, leader Readies and drains per 1,000 writes, CPU
    seconds of this process per write over both parts)``."""
    from kvraft.async_clerk import AsyncClerk
    from kvraft.endpoints import StreamEndpoints
    from kvraft.server import KVReplica

    secret = new_secret()
    sm = functools.partial(KVStateMachine, -1)
    replicas = [KVReplica(ReplicaSpec(name=f"mo-{i}", peer_id=i, peers=(0, 1, 2), state_machine=sm,
                                      seed=7 + i)) for i in range(3)]
    addresses = [await r.open_stream(secret, "127.0.0.1") for r in replicas]
    for i, r in enumerate(replicas):
        await r.start(1, ("stream", secret, {j: a for j, a in enumerate(addresses) if j != i}))
    endpoints = StreamEndpoints(addresses, secret, tuple(r.spec.name for r in replicas))
    ck = AsyncClerk(endpoints, attempt_timeout=2.0)
    counts = {"readies": 0, "drains": 0}
    try:
        await ck.put("warm", "up", timeout=10)
        leader = next(r for r in replicas if r.core is not None and r.core.is_leader)
        core = leader.core
        assert core is not None
        ready, drain = core.ready, leader._drain

        def counted_ready() -> Any:
            counts["readies"] += 1
            return ready()

        def counted_drain(reply_to: int | None = None) -> Any:
            counts["drains"] += 1
            return drain(reply_to)

        core.ready = counted_ready  # type: ignore[method-assign]
        leader._drain = counted_drain  # type: ignore[method-assign]
        lat = []
        cpu0 = time.process_time()
        for k in range(sequential):
            t0 = time.perf_counter()
            await ck.put(f"s{k % 10}", "x" * 16, timeout=10)
            lat.append(time.perf_counter() - t0)

        async def writer(w: int) -> None:
            for k in range(per_writer):
                await ck.put(f"w{w}-{k % 5}", "x" * 16, timeout=30)

        t0 = time.perf_counter()
        await asyncio.gather(*(writer(w) for w in range(writers)))
        rate = writers * per_writer / (time.perf_counter() - t0)
        total = sequential + writers * per_writer
        cpu = (time.process_time() - cpu0) / total
        per_1k = (counts["readies"] * 1000 // total, counts["drains"] * 1000 // total)
        return statistics.median(lat), rate, *per_1k, cpu
    finally:
        await ck.close()
        await endpoints.aclose()
        for r in replicas:
            await r.crash()
        for r in replicas:
            await r.close_stream()


def per_ready_cost() -> float:
    """Seconds of the metrics' work for one leader Ready that appends, commits and applies one entry
    of a 30-operation batch (the role check, appended, the ops count, applied, committed)."""
    m = ReplicaMetrics()
    m.role(1, "leader", True)
    result = [None] * 30
    state = {"i": 0}

    def one() -> None:
        i = state["i"] = state["i"] + 1
        if m.term != 1 or m.last_role != "leader":
            m.role(1, "leader", True)
        m.appended(i, time.perf_counter())
        ops = 0
        ops += len(result) if type(result) is list else result is not None
        m.applied(1, ops)
        if m.waiting:
            m.committed(i, time.perf_counter())

    n = 200_000
    return timeit.timeit(one, number=n) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--sequential", type=int, default=400)
    ap.add_argument("--writers", type=int, default=100)
    ap.add_argument("--per-writer", type=int, default=40)
    args = ap.parse_args()
    with_metrics = replica_module.ReplicaActor._drain
    without = drain_without_metrics()
    results: dict[str, list[tuple[float, float, int, int, float]]] = {"on": [], "off": []}
    asyncio.run(_workload(50, 10, 10))  # warm-up, not counted: the first run in a process pays for imports
    for rnd in range(args.rounds):
        for variant in (("on", "off") if rnd % 2 == 0 else ("off", "on")):
            replica_module.ReplicaActor._drain = with_metrics if variant == "on" else without
            results[variant].append(asyncio.run(_workload(args.sequential, args.writers, args.per_writer)))
            r = results[variant][-1]
            print(f"round {rnd + 1} metrics {variant:>3}: sequential p50 {r[0] * 1e3:.3f} ms, "
                  f"{args.writers} writers {r[1]:,.0f} writes/s, CPU {r[4] * 1e6:.1f} µs/write", flush=True)
    replica_module.ReplicaActor._drain = with_metrics
    print()
    print(f"{'':<10} {'sequential p50':>15} {f'{args.writers} writers':>16} {'CPU/write':>11} "
          f"{'Readies/1k writes':>18} {'drains/1k writes':>17}")
    med = {}
    for variant in ("on", "off"):
        rs = results[variant]
        med[variant] = (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs),
                        statistics.median(r[4] for r in rs))
        print(f"metrics {variant:<3} {med[variant][0] * 1e3:>12.3f} ms {med[variant][1]:>11,.0f} w/s "
              f"{med[variant][2] * 1e6:>8.1f} µs {statistics.median(r[2] for r in rs):>18} "
              f"{statistics.median(r[3] for r in rs):>17}")
    print(f"{'change':<10} {(med['on'][0] / med['off'][0] - 1) * 100:>+13.1f} % "
          f"{(med['on'][1] / med['off'][1] - 1) * 100:>+13.1f} % "
          f"{(med['on'][2] / med['off'][2] - 1) * 100:>+9.1f} %")
    print(f"\nthe metrics' work per leader Ready (timeit): {per_ready_cost() * 1e6:.2f} µs")


if __name__ == "__main__":
    main()
