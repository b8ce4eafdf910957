"""raykv's transports against etcd: durable writes/s and p50/p99 at 1, 10 and 100 writers, in one run.

    /work/bin/heavy python benchmarks/transports.py [--transports direct network stream]
        [--writers 1 10 100] [--duration S] [--warmup S] [--quick] [--etcd PATH | --no-etcd]
        [--json FILE] [--plot FILE.png]

Issue 14's table. Every system is driven by the same closed loop (:func:`peers.load.drive`): N asyncio
writers in this process, each putting a 16-byte value to its own key and issuing the next put as soon
as the last one answered; only puts started in the measured window count (``--warmup`` seconds of
warm-up first). In the order run:

- ``tcp-rtt`` (floor): a framed echo over one asyncio TCP connection to another Python process
  (:mod:`peers.tcp_echo`), the least any stream transport can cost;
- ``etcd``: a 3-member etcd cluster on loopback (:mod:`peers.etcd`; every WAL append fsynced), all
  writers sharing one ``aetcd`` client connected to the leader; skipped, with the reason, when there
  is no etcd binary or ``--no-etcd``; it is stopped before Ray starts, so the two never share the CPU;
- ``ray-rtt`` (floor): the raw Ray actor round trip, the driver awaiting an empty async actor method;
- ``raykv/<transport>`` for every transport asked for (default: every one this checkout has, from
  ``actors.service_group.TRANSPORTS``): a group of 3 replicas with durable storage (one fsync per
  batch), all writers sharing one asyncio clerk (which coalesces their puts into batches).

Every figure is also given as a ratio to etcd's at the same number of writers (ops/s ÷ etcd's ops/s:
above 1 is faster; p50 ÷ etcd's p50: below 1 is faster), and issue 14's targets are checked for each
raykv transport. A transport that fails (its group does not start, a put raises) is reported with its
error and the others are still measured; the exit status is then 1. ``--json FILE`` writes
``{"config": {...}, "etcd_skipped": reason or null, "failed": {transport: error}, "results":
[{"system", "kind", "writers", "count", "ops_per_s", "p50_ms", "p99_ms", "ops_vs_etcd", "p50_vs_etcd"},
...], "targets": [{"system", "target", "value", "unit", "met"}, ...]}``; ``--plot FILE`` draws ops/s
and p50 per system and writer count (matplotlib).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

# The repo's packages first (``kvraft`` is the package, not benchmarks/kvraft.py, which running this
# script would otherwise put first), benchmarks/ last (``peers``, ``read_paths``).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))
sys.path.append(str(_HERE))

from peers.load import Measurement, check_window, drive, ratio  # noqa: E402 (after the sys.path order above)

REPLICAS = 3
VALUE = 16 * b"v"
WRITERS = (1, 10, 100)
# Issue 14, "Done when", for the stream transport (checked for every raykv transport measured).
TARGET_THROUGHPUT_OPS = 30_000.0
TARGET_RATIO = {1: 1.0, 10: 1.0, 100: 4.0}  # writers -> raykv ops/s at least this times etcd's
FLOORS = ("tcp-rtt", "ray-rtt")


def parse_args(argv: Sequence[str] | None, available: Sequence[str]) -> argparse.Namespace:
    """The command line; ``available`` are the transports this checkout has (the default set). A
    transport not in it, a writer count below 1 or a non-positive duration is a usage error (exit 2)
    that names what is allowed."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--transports", nargs="+", metavar="T", default=list(available),
                    help=f"raykv transports to measure (default: all available: {' '.join(available)})")
    ap.add_argument("--writers", nargs="+", type=int, metavar="N", default=list(WRITERS),
                    help="concurrent writers per run (default: 1 10 100)")
    ap.add_argument("--duration", type=float, default=3.0, help="measured seconds per run (3)")
    ap.add_argument("--warmup", type=float, default=0.5, help="warm-up seconds per run (0.5)")
    ap.add_argument("--quick", action="store_true", help="1 s runs after a 0.3 s warm-up")
    etcd = ap.add_mutually_exclusive_group()
    etcd.add_argument("--etcd", metavar="PATH", help="the etcd binary (default: etcd on PATH)")
    etcd.add_argument("--no-etcd", action="store_true", help="leave etcd out (no ratios)")
    ap.add_argument("--json", type=Path, metavar="FILE", help="write the results as JSON")
    ap.add_argument("--plot", type=Path, metavar="FILE", help="draw ops/s and p50 to this PNG")
    a = ap.parse_args(argv)
    unknown = [t for t in a.transports if t not in available]
    if unknown:
        ap.error(f"unknown transport(s) {', '.join(unknown)}: this checkout has {', '.join(available)}")
    if any(w < 1 for w in a.writers):
        ap.error(f"--writers must all be at least 1, got {a.writers}")
    if a.quick:
        a.duration, a.warmup = 1.0, 0.3
    check_window(ap, a.duration, a.warmup)
    a.transports = list(dict.fromkeys(a.transports))
    a.writers = sorted(set(a.writers))
    return a


def row(system: str, kind: str, m: Measurement) -> dict[str, Any]:
    """One result: ``kind`` is ``"raykv"``, ``"etcd"`` or ``"floor"``."""
    return {"system": system, "kind": kind, "writers": m.writers, "count": m.count,
            "ops_per_s": round(m.ops_per_s, 1), "p50_ms": round(m.p50_ms, 3), "p99_ms": round(m.p99_ms, 3)}


def with_ratios(results: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of ``results`` ordered by writers, then raykv transports, etcd, floors, each with
    ``ops_vs_etcd`` and ``p50_vs_etcd`` against etcd's row at the same writer count (``None`` where
    there is none)."""
    results = list(results)
    etcd = {r["writers"]: r for r in results if r["kind"] == "etcd"}
    order = {"raykv": 0, "etcd": 1, "floor": 2}
    out = []
    for r in sorted(results, key=lambda r: (r["writers"], order[r["kind"]])):
        e = etcd.get(r["writers"])
        out.append(r | {"ops_vs_etcd": ratio(r["ops_per_s"], e["ops_per_s"] if e else None),
                        "p50_vs_etcd": ratio(r["p50_ms"], e["p50_ms"] if e else None)})
    return out


def check_targets(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 14's targets for every raykv row they apply to: ops/s at least ``TARGET_RATIO[w]``
    times etcd's (strictly faster at 1 writer), and at least ``TARGET_THROUGHPUT_OPS`` at 100."""
    out = []
    for r in rows:
        if r["kind"] != "raykv":
            continue
        w, ratio = r["writers"], r.get("ops_vs_etcd")
        if w in TARGET_RATIO and ratio is not None:
            need = TARGET_RATIO[w]
            met = ratio > need if w == 1 else ratio >= need
            what = "faster than etcd" if w == 1 else f"ops/s >= {need:g}x etcd's"
            out.append({"system": r["system"], "target": f"{w} writers: {what}", "value": ratio, "unit": "×",
                        "met": met})
        if w == 100:
            ops = r["ops_per_s"]
            target = f"100 writers: >= {TARGET_THROUGHPUT_OPS:,.0f} ops/s"
            out.append({"system": r["system"], "target": target, "value": ops, "unit": "ops/s",
                        "met": ops >= TARGET_THROUGHPUT_OPS})
    return out


def _x(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}×"


def format_table(rows: Iterable[dict[str, Any]]) -> str:
    """The results as a Markdown table (what the docs show)."""
    lines = ["| writers | system | ops/s | p50 | p99 | ops/s ÷ etcd | p50 ÷ etcd |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['writers']} | {r['system']} | {r['ops_per_s']:,.0f} | {r['p50_ms']:.2f} ms | "
                     f"{r['p99_ms']:.2f} ms | {_x(r['ops_vs_etcd'])} | {_x(r['p50_vs_etcd'])} |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Grouped bars: ops/s (log scale) and p50 per system, one group per writer count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    writers = sorted({r["writers"] for r in rows})
    systems = list(dict.fromkeys(r["system"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / max(1, len(systems))
    for i, s in enumerate(systems):
        by_w = {r["writers"]: r for r in rows if r["system"] == s}
        xs = [j + i * width for j, w in enumerate(writers) if w in by_w]
        axes[0].bar(xs, [by_w[w]["ops_per_s"] for w in writers if w in by_w], width, label=s)
        axes[1].bar(xs, [by_w[w]["p50_ms"] for w in writers if w in by_w], width, label=s)
    for ax, title in zip(axes, ("operations/s (log)", "p50 latency, ms (log)"), strict=True):
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(writers))], [f"{w} writers" for w in writers])
        ax.set_yscale("log")
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"durable 16-byte puts, {REPLICAS} replicas, {os.cpu_count()} cores")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


Op = Callable[[int], Awaitable[object]]


async def _measure_all(op: Op, writers: list[int], warmup: float, duration: float,
                       done: Callable[[Measurement], None]) -> list[Measurement]:
    out = []
    for w in writers:
        m = await drive(op, w, warmup, duration)
        done(m)
        out.append(m)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from tqdm import tqdm

    from actors.service_group import TRANSPORTS

    a = parse_args(argv, TRANSPORTS)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: etcd and Ray are stopped
    systems = 1 + (0 if a.no_etcd else 1) + 1 + len(a.transports)
    bar = tqdm(total=systems * len(a.writers), desc="transports", unit="run", file=sys.stderr)
    results: list[dict[str, Any]] = []
    config: dict[str, Any] = {
        "replicas": REPLICAS, "value_bytes": len(VALUE), "storage": "durable", "writers": a.writers,
        "transports": a.transports, "duration_s": a.duration, "warmup_s": a.warmup, "cores": os.cpu_count(),
        "python": platform.python_version()}

    def record(system: str, kind: str) -> Callable[[Measurement], None]:
        def done(m: Measurement) -> None:
            results.append(row(system, kind, m))
            bar.update()
            tqdm.write(f"  {system:>13} {m.writers:>3} writers: {m.ops_per_s:>9,.0f} ops/s  "
                       f"p50 {m.p50_ms:.2f} ms  p99 {m.p99_ms:.2f} ms", file=sys.stderr)
        return done

    etcd_skipped = run_floor_and_etcd(a, config, record, bar)
    failures = run_ray(a, config, record, bar)
    bar.close()

    rows = with_ratios(results)
    targets = check_targets(rows)
    print(f"\n{REPLICAS} replicas, durable storage, {len(VALUE)}-byte puts, {os.cpu_count()} cores, "
          f"{a.duration:g} s per run; etcd {config.get('etcd_version', 'not run')}, "
          f"Ray {config.get('ray_version')}\n")
    print(format_table(rows))
    if etcd_skipped:
        print(f"\netcd skipped: {etcd_skipped}; no ratios")
    for transport, error in failures.items():
        print(f"\nraykv/{transport} FAILED: {error}")
    for t in targets:
        v = f"{t['value']:.2f}×" if t["unit"] == "×" else f"{t['value']:,.0f} ops/s"
        print(f"target {t['system']}, {t['target']}: {v}: {'met' if t['met'] else 'MISSED'}")
    if a.json:
        a.json.write_text(json.dumps({"config": config, "etcd_skipped": etcd_skipped, "failed": failures,
                                      "results": rows, "targets": targets}, indent=2) + "\n")
        print(f"wrote {a.json}")
    if a.plot:
        plot(rows, a.plot)
        print(f"wrote {a.plot}")
    return 1 if failures else 0


def run_floor_and_etcd(a: argparse.Namespace, config: dict[str, Any],
                       record: Callable[[str, str], Callable[[Measurement], None]], bar: Any) -> str | None:
    """The TCP floor, then etcd; returns why etcd was skipped, or ``None``."""
    from peers.etcd import EtcdCluster, EtcdStartError, EtcdUnavailable, etcd_version, etcd_writer
    from peers.tcp_echo import EchoClient, echo_server_process

    async def tcp() -> None:
        async with echo_server_process() as address, EchoClient(address) as client:
            await client.call(VALUE)
            await _measure_all(lambda c: client.call(VALUE), a.writers, a.warmup, a.duration,
                               record("tcp-rtt", "floor"))

    asyncio.run(tcp())
    if a.no_etcd:
        return "--no-etcd"
    try:
        import aetcd  # noqa: F401 (the etcd client, from the bench extra)
    except ImportError:
        bar.update(len(a.writers))
        return "the aetcd client is not installed: pip install -e '.[bench]'"
    try:
        cluster = EtcdCluster(3, binary=a.etcd)
    except EtcdUnavailable as e:
        bar.update(len(a.writers))
        return str(e)
    config["etcd_version"] = etcd_version(cluster.binary)
    try:
        cluster.start()
    except EtcdStartError as e:  # the raykv rows are still worth having: say why etcd is missing
        bar.update(len(a.writers))
        return f"the etcd cluster did not start: {e}"
    try:
        leader = cluster.leader_endpoint()

        async def etcd() -> None:
            async with etcd_writer(leader, VALUE) as op:
                await _measure_all(op, a.writers, a.warmup, a.duration, record("etcd", "etcd"))

        asyncio.run(etcd())
    finally:
        cluster.stop()
    return None


def run_ray(a: argparse.Namespace, config: dict[str, Any],
            record: Callable[[str, str], Callable[[Measurement], None]], bar: Any) -> dict[str, str]:
    """The raw Ray round trip, then one durable group of ``REPLICAS`` per transport; returns the
    transports that failed, with the error (the others are still measured)."""
    import ray
    from tqdm import tqdm

    config["ray_version"] = ray.__version__

    @ray.remote(num_cpus=0)
    class Echo:
        async def ping(self, payload: bytes) -> bytes:
            return payload

    def tqdm_write(text: str) -> None:
        tqdm.write(text, file=sys.stderr)

    failures: dict[str, str] = {}
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        echo = Echo.remote()  # type: ignore[attr-defined]
        ray.get(echo.ping.remote(VALUE))

        async def rtt() -> None:
            await _measure_all(lambda c: echo.ping.remote(VALUE), a.writers, a.warmup, a.duration,
                               record("ray-rtt", "floor"))

        asyncio.run(rtt())
        ray.kill(echo)
        for transport in a.transports:
            before = bar.n
            try:
                run_transport(a, transport, record(f"raykv/{transport}", "raykv"))
            except Exception as e:  # one transport failing (e.g. one landing today) loses only its rows
                failures[transport] = f"{type(e).__name__}: {e}"
                tqdm_write(f"  raykv/{transport} FAILED: {failures[transport]}")
            bar.update(before + len(a.writers) - bar.n)
    finally:
        ray.shutdown()
    return failures


def run_transport(a: argparse.Namespace, transport: str, done: Callable[[Measurement], None]) -> list[
        Measurement]:
    """One durable group of ``REPLICAS`` on ``transport``, driven at every writer count, stopped."""
    import kvraft

    value = VALUE.decode()
    group = kvraft.start_group(REPLICAS, storage="durable", transport=transport)
    try:
        async def kv() -> list[Measurement]:
            ck = group.async_clerk()
            try:
                await ck.put("warm", value)
                return await _measure_all(lambda c: ck.put(f"k{c}", value), a.writers, a.warmup,
                                          a.duration, done)
            finally:
                await ck.close()

        return asyncio.run(kv())
    finally:
        group.stop()


if __name__ == "__main__":
    raise SystemExit(main())
