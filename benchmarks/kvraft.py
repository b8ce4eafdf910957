"""kvraft throughput and latency over a grid: clients × replicas × transport × reads/writes, in one run.

    python benchmarks/kvraft.py [--clients 1 4 16 64 256] [--replicas 3 5]
        [--transports direct network stream] [--ops write read] [--storage durable|memory]
        [--duration S] [--warmup S] [--quick] [--json FILE] [--plot FILE.png]

For every replica count and transport (``direct``: Ray actor calls; ``network``: every call through
one reliable FaultyNetwork actor; ``stream``: the public default, TCP streams between the processes)
it starts one group (``kvraft.start_group``, durable storage unless ``--storage memory``), and for
every operation and client count drives it with the closed loop every benchmark here shares
(:func:`peers.load.drive`): N asyncio clients sharing one ``AsyncClerk`` (which coalesces what
they have in flight into batches), client ``c`` putting a 16-byte value to key ``k{c}`` (``write``)
or getting it back (``read``: ReadIndex, linearizable; every key is written first), the next
operation issued as soon as the last one answered. On the ``direct`` transport it also measures the
*sequential* latency: one blocking ``Clerk`` in one thread, one operation at a time.

The floor is measured in the same run, on the same Ray: the raw Ray actor round trip of an empty
async actor method, both as ``ray.get`` from a plain thread (sequential, the denominator of the
target below) and awaited from asyncio at every client count (``ray-rtt`` rows, the floor under
the asyncio clerk's rows). Every row's p50 is also given as a ratio to its floor. Target (issue 15):
the sequential write latency on the direct transport (smallest replica count measured) at most 3×
the raw round trip.

``--json FILE`` writes ``{"config", "raw_ray_rtt_ms", "failed": {group: error}, "results":
[{"system", "replicas", "transport", "op", "clerk", "clients", "count", "ops_per_s", "p50_ms",
"p99_ms", "p50_vs_floor"}, ...], "targets": [...]}``; ``--plot FILE`` draws ops/s, p50 and p99
against clients per transport and replica count, one row of panels per operation, with the floor.
A group that fails (does not start, an operation raises) loses only its rows; the exit status is 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import signal
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

# The repo's packages first (``import kvraft`` is the package, not this file), benchmarks/ last.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))
sys.path.append(str(_HERE))

from peers.load import Measurement, drive  # noqa: E402 (after the sys.path order above)

CLIENTS = (1, 4, 16, 64, 256)
REPLICAS = (3, 5)
TRANSPORTS = ("direct", "network", "stream")
OPS = ("write", "read")
VALUE = 16 * "v"
LATENCY_TARGET_RATIO = 3.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line; an unknown transport or operation, a count below 1 (clients) or 3
    (replicas) or a non-positive duration is a usage error (exit 2) naming what is allowed."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", nargs="+", type=int, metavar="N",
                    help="concurrent asyncio clients per run (default: 1 4 16 64 256)")
    ap.add_argument("--replicas", nargs="+", type=int, metavar="R",
                    help="group sizes (default: 3 5)")
    ap.add_argument("--transports", nargs="+", metavar="T", default=list(TRANSPORTS),
                    help="transports (default: direct network stream)")
    ap.add_argument("--ops", nargs="+", metavar="OP", default=list(OPS), help="write and/or read")
    ap.add_argument("--storage", choices=("durable", "memory"), default="durable")
    ap.add_argument("--duration", type=float, help="measured seconds per run (1.5)")
    ap.add_argument("--warmup", type=float, help="warm-up seconds per run (0.3)")
    ap.add_argument("--quick", action="store_true", help="0.5 s runs after 0.1 s, clients 1 16 256, "
                    "3 replicas (options given explicitly still apply)")
    ap.add_argument("--json", type=Path, metavar="FILE", help="write the results as JSON")
    ap.add_argument("--plot", type=Path, metavar="FILE", help="draw the grid to this PNG")
    a = ap.parse_args(argv)
    defaults = (("duration", 1.5, 0.5), ("warmup", 0.3, 0.1), ("clients", list(CLIENTS), [1, 16, 256]),
                ("replicas", list(REPLICAS), [3]))
    for name, full, quick in defaults:
        if getattr(a, name) is None:
            setattr(a, name, quick if a.quick else full)
    for name, chosen, allowed in (("transport", a.transports, TRANSPORTS), ("operation", a.ops, OPS)):
        unknown = [x for x in chosen if x not in allowed]
        if unknown:
            ap.error(f"unknown {name}(s) {', '.join(unknown)}: choose from {', '.join(allowed)}")
    if any(c < 1 for c in a.clients):
        ap.error(f"--clients must all be at least 1, got {a.clients}")
    if any(r < 1 for r in a.replicas):
        ap.error(f"--replicas must all be at least 1, got {a.replicas}")
    if not (a.duration > 0 and math.isfinite(a.duration)) or not (a.warmup >= 0 and math.isfinite(a.warmup)):
        ap.error(f"need --duration > 0 and --warmup >= 0 seconds, got {a.duration} and {a.warmup}")
    a.clients = sorted(set(a.clients))
    a.replicas = sorted(set(a.replicas))
    a.transports = [t for t in TRANSPORTS if t in a.transports]
    a.ops = [o for o in OPS if o in a.ops]
    return a


def row(m: Measurement, *, system: str = "raykv", replicas: int | None = None, transport: str | None = None,
        op: str = "write", clerk: str = "async") -> dict[str, Any]:
    return {"system": system, "replicas": replicas, "transport": transport, "op": op, "clerk": clerk,
            "clients": m.writers, "count": m.count, "ops_per_s": round(m.ops_per_s, 1),
            "p50_ms": round(m.p50_ms, 3), "p99_ms": round(m.p99_ms, 3)}


def with_floor(results: Iterable[dict[str, Any]], raw_rtt_ms: float) -> list[dict[str, Any]]:
    """Copies with ``p50_vs_floor``: an async row's p50 ÷ the ``ray-rtt`` row's p50 at the same client
    count, a sync row's ÷ ``raw_rtt_ms`` (``None`` without a floor). Ordered: floor rows first, then
    by op, replicas, transport, clerk (sync first), clients."""
    results = list(results)
    floor = {r["clients"]: r["p50_ms"] for r in results if r["system"] == "ray-rtt"}
    out = []

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        if r["system"] == "ray-rtt":
            return (0, 0, 0, 0, 0, r["clients"])
        return (1, OPS.index(r["op"]), r["replicas"], TRANSPORTS.index(r["transport"]), r["clerk"] != "sync",
                r["clients"])

    for r in sorted(results, key=key):
        base = raw_rtt_ms if r["clerk"] == "sync" else floor.get(r["clients"])
        ratio = round(r["p50_ms"] / base, 3) if base and not math.isnan(r["p50_ms"]) else None
        out.append(r | {"p50_vs_floor": None if r["system"] == "ray-rtt" else ratio})
    return out


def check_targets(rows: Iterable[dict[str, Any]], raw_rtt_ms: float) -> list[dict[str, Any]]:
    """The sequential-latency target: the direct transport's sequential write p50 (smallest replica
    count measured) at most ``LATENCY_TARGET_RATIO`` × the raw Ray round trip."""
    seq = [r for r in rows if r["system"] == "raykv" and r["transport"] == "direct" and r["clerk"] == "sync"
           and r["op"] == "write"]
    if not seq or not raw_rtt_ms:
        return []
    r = min(seq, key=lambda r: r["replicas"])
    ratio = round(r["p50_ms"] / raw_rtt_ms, 3)
    return [{"target": f"sequential write p50, direct, {r['replicas']} replicas <= "
                       f"{LATENCY_TARGET_RATIO:g}x the raw Ray round trip",
             "p50_ms": r["p50_ms"], "raw_rtt_ms": round(raw_rtt_ms, 3), "value": ratio, "unit": "×",
             "met": ratio <= LATENCY_TARGET_RATIO}]


def _x(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}×"


def format_table(rows: Iterable[dict[str, Any]]) -> str:
    """The results as a Markdown table (what the docs show)."""
    lines = ["| op | replicas | transport | clerk | clients | ops/s | p50 | p99 | p50 ÷ floor |",
             "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        if r["system"] == "ray-rtt":
            head = "| (floor) | — | ray-rtt | await |"
        else:
            head = f"| {r['op']} | {r['replicas']} | {r['transport']} | {r['clerk']} |"
        lines.append(f"{head} {r['clients']} | {r['ops_per_s']:,.0f} | {r['p50_ms']:.2f} ms | "
                     f"{r['p99_ms']:.2f} ms | {_x(r['p50_vs_floor'])} |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path, raw_rtt_ms: float) -> None:
    """One row of panels per operation: ops/s, p50 and p99 against clients (log–log), a line per
    transport and replica count (async clerk), the ``ray-rtt`` floor dashed, the raw sequential
    round trip dotted on the latency panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ops = [o for o in OPS if any(r["op"] == o and r["system"] == "raykv" for r in rows)] or ["write"]
    floor = sorted((r for r in rows if r["system"] == "ray-rtt"), key=lambda r: r["clients"])
    clients = sorted({r["clients"] for r in rows})
    series = sorted({(r["transport"], r["replicas"]) for r in rows if r["system"] == "raykv"},
                    key=lambda s: (TRANSPORTS.index(s[0]), s[1]))
    fig, axes = plt.subplots(len(ops), 3, figsize=(15, 4 * len(ops)), squeeze=False)
    for i, op in enumerate(ops):
        for transport, replicas in series:
            pts = sorted((r for r in rows if r["system"] == "raykv" and r["clerk"] == "async"
                          and (r["op"], r["transport"], r["replicas"]) == (op, transport, replicas)),
                         key=lambda r: r["clients"])
            for ax, field in zip(axes[i], ("ops_per_s", "p50_ms", "p99_ms"), strict=True):
                ax.plot([r["clients"] for r in pts], [r[field] for r in pts], marker="o",
                        label=f"{transport}, {replicas} replicas")
        for ax, field, title in zip(axes[i], ("ops_per_s", "p50_ms", "p99_ms"),
                                    ("operations/s", "p50 latency, ms", "p99 latency, ms"), strict=True):
            if floor:
                ax.plot([r["clients"] for r in floor], [r[field] for r in floor], "k--",
                        label="ray-rtt (floor)")
            if field != "ops_per_s" and raw_rtt_ms:
                ax.axhline(raw_rtt_ms, color="grey", linestyle=":", label="ray.get round trip")
            ax.set_xscale("log", base=2)
            ax.set_xticks(clients, [str(c) for c in clients])
            ax.set_yscale("log")
            ax.set_xlabel("concurrent clients")
            ax.set_title(f"{op}s: {title}")
        axes[i][0].legend(fontsize=7)
    fig.suptitle(f"kvraft, {os.cpu_count()} cores, 16-byte values")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def raw_rtt_ms(echo: Any, calls: int) -> float:
    """Median ``ray.get`` round trip of ``echo.ping`` from this thread, after 100 unmeasured calls."""
    import ray

    for _ in range(100):
        ray.get(echo.ping.remote())
    samples = []
    for _ in range(calls):
        t = time.perf_counter()
        ray.get(echo.ping.remote())
        samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1e3


def sequential(op: Callable[[], object], warmup_s: float, duration_s: float) -> Measurement:
    """One client in this thread, one blocking ``op()`` at a time; the operations started in the
    window after ``warmup_s`` count (the same rule as :func:`peers.load.drive`)."""
    start = time.monotonic() + warmup_s
    stop = start + duration_s
    lat: list[float] = []
    while (t := time.monotonic()) < stop:
        op()
        if t >= start:
            lat.append(time.monotonic() - t)
    return Measurement.of(1, lat, duration_s)


def run_group(a: argparse.Namespace, replicas: int, transport: str,
              done: Callable[[dict[str, Any]], None]) -> None:
    """One group: the async grid for every op and client count, then (direct transport) the
    sequential rows; the group is stopped whatever happens."""
    import kvraft

    group = kvraft.start_group(replicas, storage=a.storage, transport=transport)
    try:
        async def grid() -> None:
            ck = group.async_clerk()
            try:
                await asyncio.gather(*(ck.put(f"k{c}", VALUE) for c in range(max(a.clients))))
                for op in a.ops:
                    fn = (lambda c: ck.put(f"k{c}", VALUE)) if op == "write" else (lambda c: ck.get(f"k{c}"))
                    for n in a.clients:
                        m = await drive(fn, n, a.warmup, a.duration)
                        done(row(m, replicas=replicas, transport=transport, op=op))
            finally:
                await ck.close()

        asyncio.run(grid())
        if transport == "direct":
            ck = group.clerk()
            for op in a.ops:
                m = sequential((lambda: ck.put("k0", VALUE)) if op == "write" else (lambda: ck.get("k0")),
                               a.warmup, a.duration)
                done(row(m, replicas=replicas, transport=transport, op=op, clerk="sync"))
    finally:
        group.stop()


def main(argv: Sequence[str] | None = None) -> int:
    import ray
    from tqdm import tqdm

    a = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: Ray is shut down
    per_group = {t: len(a.ops) * (len(a.clients) + (1 if t == "direct" else 0)) for t in a.transports}
    total = len(a.clients) + len(a.replicas) * sum(per_group.values())
    bar = tqdm(total=total, desc="kvraft", unit="run", file=sys.stderr)
    results: list[dict[str, Any]] = []
    failed: dict[str, str] = {}
    config: dict[str, Any] = {
        "clients": a.clients, "replicas": a.replicas, "transports": a.transports, "ops": a.ops,
        "storage": a.storage, "value_bytes": len(VALUE), "duration_s": a.duration, "warmup_s": a.warmup,
        "cores": os.cpu_count(), "python": platform.python_version(), "ray_version": ray.__version__}

    def done(r: dict[str, Any]) -> None:
        results.append(r)
        bar.update()
        what = "ray-rtt" if r["system"] == "ray-rtt" else (f"{r['transport']}/{r['replicas']} {r['op']} "
                                                            f"{r['clerk']}")
        tqdm.write(f"  {what:>24} {r['clients']:>3} clients: {r['ops_per_s']:>9,.0f} ops/s  "
                   f"p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms", file=sys.stderr)

    @ray.remote(num_cpus=0)
    class Echo:
        async def ping(self) -> None:
            return None

    owns_ray = not ray.is_initialized()  # a runtime already up (a notebook, the tests) is used and kept
    if owns_ray:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        echo = Echo.remote()  # type: ignore[attr-defined]
        rtt = raw_rtt_ms(echo, 300 if a.quick else 2000)

        async def floor() -> None:
            for n in a.clients:
                done(row(await drive(lambda c: echo.ping.remote(), n, a.warmup, a.duration), system="ray-rtt",
                         op="round trip"))

        asyncio.run(floor())
        ray.kill(echo)
        for replicas in a.replicas:
            for transport in a.transports:
                before = bar.n
                bar.set_postfix_str(f"{transport}/{replicas}")
                try:
                    run_group(a, replicas, transport, done)
                except Exception as e:  # one group failing loses only its rows
                    failed[f"{transport}/{replicas}"] = f"{type(e).__name__}: {e}"
                    tqdm.write(f"  {transport}/{replicas} FAILED: {type(e).__name__}: {e}", file=sys.stderr)
                bar.update(before + per_group[transport] - bar.n)
    finally:
        if owns_ray:
            ray.shutdown()
        bar.close()

    rows = with_floor(results, rtt)
    targets = check_targets(rows, rtt)
    print(f"\nkvraft, {a.storage} storage, 16-byte values, {os.cpu_count()} cores, {a.duration:g} s per run "
          f"after {a.warmup:g} s, Ray {ray.__version__}; raw Ray round trip (ray.get, median): "
          f"{rtt:.3f} ms\n")
    print(format_table(rows))
    for group, error in failed.items():
        print(f"\n{group} FAILED: {error}")
    for t in targets:
        print(f"target: {t['target']}: {t['p50_ms']:.2f} ms = {t['value']:.2f}× {t['raw_rtt_ms']:.3f} ms: "
              f"{'met' if t['met'] else 'MISSED'}")
    if a.json:
        a.json.write_text(json.dumps({"config": config, "raw_ray_rtt_ms": round(rtt, 4), "failed": failed,
                                      "results": rows, "targets": targets}, indent=2) + "\n")
        print(f"wrote {a.json}")
    if a.plot:
        plot(rows, a.plot, rtt)
        print(f"wrote {a.plot}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
