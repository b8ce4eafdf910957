"""raykv against PySyncObj and etcd: writes and reads at 1, 10 and 100 clients, in one run.

    python benchmarks/compare.py [--systems raykv pysyncobj etcd] [--clients 1 10 100]
        [--ops write read] [--duration S] [--warmup S] [--quick] [--etcd PATH | --no-etcd]
        [--pysyncobj-batch] [--json FILE] [--plot FILE.png]

Issue 15's comparison: the same machine, operation mix, value size (16 bytes) and concurrency for
every system, each a 3-member Raft group on loopback with its log on disk. Every system is driven by
the same closed loop (:func:`peers.load.drive`): N asyncio clients in this process, client ``c``
working on its own key ``k{c}`` and issuing its next operation as soon as the last one answered;
``write`` is a put of a 16-byte value, ``read`` a linearizable get of a key written before. All
clients of a system share one client object connected to the leader. In the order run:

- ``etcd``: 3 members (:mod:`peers.etcd`, every WAL append fsynced), one ``aetcd`` client (one gRPC
  channel); reads are etcd's default (linearizable) range requests. Skipped, with the reason, when
  there is no etcd binary, no ``aetcd``, or ``--no-etcd``.
- ``pysyncobj``: 3 processes (:mod:`peers.pysyncobj_kv`), each a PySyncObj ``SyncObj`` with a
  journal file, plus an asyncio front that calls the replicated method with a callback; one
  connection to the leader's front. Reads go through the log (PySyncObj's only linearizable read).
  PySyncObj does not fsync its journal (see :mod:`peers.pysyncobj_kv`). ``appendEntriesUseBatch`` is
  off unless ``--pysyncobj-batch`` (on, PySyncObj's default, every command waits for the next 50 ms
  tick: about 100 ms per operation here). Skipped when ``pysyncobj`` is not installed.
- ``raykv``: ``kvraft.start_group(3, storage="durable")`` (the public defaults: stream transport,
  ReadIndex reads, one fsync per batch on every replica), one ``AsyncClerk``.

etcd and PySyncObj are stopped before Ray starts, so no two systems share the CPU. Every figure is
also given as a ratio to raykv's at the same operation and client count: ops/s ÷ raykv's (below 1:
raykv is faster), p50 and p99 ÷ raykv's (above 1: raykv is faster). Issue 15's targets are checked:
raykv's durable writes/s at least 4× etcd's at every client count, and at least 30,000 at 100
clients. A system that fails is reported with its error and the others are still measured (exit
status 1). ``--json FILE`` writes ``{"config", "skipped": {system: reason}, "failed": {system:
error}, "results": [{"system", "op", "clients", "count", "ops_per_s", "p50_ms", "p99_ms",
"ops_vs_raykv", "p50_vs_raykv", "p99_vs_raykv"}, ...], "targets": [...]}``; ``--plot FILE`` draws
ops/s and p50 per system, operation and client count.
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

# The repo's packages first (``kvraft`` is the package, not benchmarks/kvraft.py), benchmarks/ last.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))
sys.path.append(str(_HERE))

from peers.load import Measurement, check_window, drive, ratio  # noqa: E402 (after the sys.path order above)

SYSTEMS = ("raykv", "pysyncobj", "etcd")
OPS = ("write", "read")
CLIENTS = (1, 10, 100)
MEMBERS = 3
VALUE = 16 * b"v"
TARGET_ETCD_RATIO = 4.0
TARGET_WRITES_AT_100 = 30_000.0
RATIO_FIELDS = {"ops": "ops_per_s", "p50": "p50_ms", "p99": "p99_ms"}

Op = Callable[[int], Awaitable[object]]
Record = Callable[[str, str], Callable[[Measurement], None]]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line; an unknown system or operation, a client count below 1 or a non-positive
    duration is a usage error (exit 2) that names what is allowed."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--systems", nargs="+", metavar="S", default=list(SYSTEMS),
                    help=f"systems to measure (default: {' '.join(SYSTEMS)})")
    ap.add_argument("--clients", nargs="+", type=int, metavar="N", default=list(CLIENTS),
                    help="concurrent clients per run (default: 1 10 100)")
    ap.add_argument("--ops", nargs="+", metavar="OP", default=list(OPS),
                    help="operations to measure (default: write read)")
    ap.add_argument("--duration", type=float, default=3.0, help="measured seconds per run (3)")
    ap.add_argument("--warmup", type=float, default=0.5, help="warm-up seconds per run (0.5)")
    ap.add_argument("--quick", action="store_true", help="1 s runs after a 0.3 s warm-up")
    etcd = ap.add_mutually_exclusive_group()
    etcd.add_argument("--etcd", metavar="PATH", help="the etcd binary (default: etcd on PATH)")
    etcd.add_argument("--no-etcd", action="store_true", help="leave etcd out")
    ap.add_argument("--pysyncobj-batch", action="store_true",
                    help="PySyncObj's appendEntriesUseBatch on (its default; every command waits a tick)")
    ap.add_argument("--json", type=Path, metavar="FILE", help="write the results as JSON")
    ap.add_argument("--plot", type=Path, metavar="FILE", help="draw ops/s and p50 to this PNG")
    a = ap.parse_args(argv)
    for name, given, allowed in (("system", a.systems, SYSTEMS), ("operation", a.ops, OPS)):
        unknown = [x for x in given if x not in allowed]
        if unknown:
            ap.error(f"unknown {name}(s) {', '.join(unknown)}: choose from {', '.join(allowed)}")
    if any(c < 1 for c in a.clients):
        ap.error(f"--clients must all be at least 1, got {a.clients}")
    if a.quick:
        a.duration, a.warmup = 1.0, 0.3
    check_window(ap, a.duration, a.warmup)
    if a.no_etcd and "etcd" in a.systems:
        a.systems.remove("etcd")
    a.systems = [s for s in SYSTEMS if s in a.systems]  # the order they run in is fixed (see run)
    a.ops = [o for o in OPS if o in a.ops]
    a.clients = sorted(set(a.clients))
    return a


def row(system: str, op: str, m: Measurement) -> dict[str, Any]:
    return {"system": system, "op": op, "clients": m.writers, "count": m.count,
            "ops_per_s": round(m.ops_per_s, 1), "p50_ms": round(m.p50_ms, 3), "p99_ms": round(m.p99_ms, 3)}


def with_ratios(results: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of ``results`` ordered by operation, clients, then raykv, pysyncobj, etcd; each with
    ``ops_vs_raykv``, ``p50_vs_raykv`` and ``p99_vs_raykv`` against raykv's row of the same operation
    and client count (``None`` where there is none)."""
    results = list(results)
    raykv = {(r["op"], r["clients"]): r for r in results if r["system"] == "raykv"}
    out = []
    for r in sorted(results, key=lambda r: (OPS.index(r["op"]), r["clients"], SYSTEMS.index(r["system"]))):
        k = raykv.get((r["op"], r["clients"]))
        out.append(r | {f"{name}_vs_raykv": ratio(r[field], k[field] if k else None)
                        for name, field in RATIO_FIELDS.items()})
    return out


def check_targets(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 15's: raykv's writes/s at least 4× etcd's at every client count measured for both, and
    at least 30,000 at 100 clients."""
    rows = list(rows)
    etcd = {r["clients"]: r for r in rows if r["system"] == "etcd" and r["op"] == "write"}
    out = []
    for r in rows:
        if r["system"] != "raykv" or r["op"] != "write":
            continue
        e = etcd.get(r["clients"])
        if e is not None and e["ops_per_s"]:
            ratio = round(r["ops_per_s"] / e["ops_per_s"], 3)
            out.append({"target": f"{r['clients']} clients: writes/s >= {TARGET_ETCD_RATIO:g}x etcd's",
                        "value": ratio, "unit": "×", "met": ratio >= TARGET_ETCD_RATIO})
        if r["clients"] == 100:
            out.append({"target": f"100 clients: >= {TARGET_WRITES_AT_100:,.0f} writes/s",
                        "value": r["ops_per_s"], "unit": "ops/s",
                        "met": r["ops_per_s"] >= TARGET_WRITES_AT_100})
    return out


def _x(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}×"


def format_table(rows: Iterable[dict[str, Any]]) -> str:
    """The results as a Markdown table (what the docs show)."""
    lines = ["| op | clients | system | ops/s | p50 | p99 | ops/s ÷ raykv | p50 ÷ raykv | p99 ÷ raykv |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['op']} | {r['clients']} | {r['system']} | {r['ops_per_s']:,.0f} | "
                     f"{r['p50_ms']:.2f} ms | {r['p99_ms']:.2f} ms | {_x(r['ops_vs_raykv'])} | "
                     f"{_x(r['p50_vs_raykv'])} | {_x(r['p99_vs_raykv'])} |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """One row of panels per operation: ops/s and p50 (log scales), grouped bars per client count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ops = [o for o in OPS if any(r["op"] == o for r in rows)]
    clients = sorted({r["clients"] for r in rows})
    systems = [s for s in SYSTEMS if any(r["system"] == s for r in rows)]
    fig, axes = plt.subplots(len(ops), 2, figsize=(12, 4 * len(ops)), squeeze=False)
    width = 0.8 / max(1, len(systems))
    for i, op in enumerate(ops):
        for j, s in enumerate(systems):
            by_c = {r["clients"]: r for r in rows if r["system"] == s and r["op"] == op}
            xs = [k + j * width for k, c in enumerate(clients) if c in by_c]
            axes[i][0].bar(xs, [by_c[c]["ops_per_s"] for c in clients if c in by_c], width, label=s)
            axes[i][1].bar(xs, [by_c[c]["p50_ms"] for c in clients if c in by_c], width, label=s)
        for ax, what in zip(axes[i], ("operations/s (log)", "p50 latency, ms (log)"), strict=True):
            ax.set_xticks([k + 0.4 - width / 2 for k in range(len(clients))],
                          [f"{c} clients" for c in clients])
            ax.set_yscale("log")
            ax.set_title(f"{op}s: {what}")
        axes[i][0].legend(fontsize=8)
    fig.suptitle(f"{MEMBERS} members on loopback, log on disk, {len(VALUE)}-byte values, "
                 f"{os.cpu_count()} cores")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


async def _measure(a: argparse.Namespace, write: Op, read: Op, populate: Callable[[int], Awaitable[object]],
                   record: Callable[[str], Callable[[Measurement], None]]) -> None:
    """Every operation at every client count; reads after every key they use was written once."""
    for op in a.ops:
        if op == "read":
            for c in range(max(a.clients)):
                await populate(c)
            await read(0)  # the first read (a new session or path on the server) is not measured
        for n in a.clients:
            record(op)(await drive(write if op == "write" else read, n, a.warmup, a.duration))


def run_etcd(a: argparse.Namespace, config: dict[str, Any], record: Record) -> str | None:
    """etcd's rows; returns why it was skipped, or ``None``."""
    try:
        import aetcd
    except ImportError:
        return "the aetcd client is not installed: pip install -e '.[bench]'"
    from peers.etcd import EtcdCluster, EtcdStartError, EtcdUnavailable, etcd_version

    try:
        cluster = EtcdCluster(MEMBERS, binary=a.etcd)
    except EtcdUnavailable as e:
        return str(e)
    config["etcd_version"] = etcd_version(cluster.binary)
    try:
        cluster.start()
    except EtcdStartError as e:
        return f"the etcd cluster did not start: {e}"
    try:
        host, port = cluster.leader_endpoint()

        async def go() -> None:
            client = aetcd.Client(host=host, port=port)
            try:
                await client.put(b"warm", VALUE)
                await _measure(a, lambda c: client.put(f"k{c}".encode(), VALUE),
                               lambda c: client.get(f"k{c}".encode()),
                               lambda c: client.put(f"k{c}".encode(), VALUE), record("etcd"))
            finally:
                await client.close()

        asyncio.run(go())
    finally:
        cluster.stop()
    return None


def run_pysyncobj(a: argparse.Namespace, config: dict[str, Any], record: Record) -> str | None:
    """PySyncObj's rows; returns why it was skipped, or ``None``."""
    try:
        import pysyncobj
    except ImportError:
        return "pysyncobj is not installed: pip install -e '.[bench]'"
    from peers.pysyncobj_kv import PySyncObjCluster, pysyncobj_client

    config["pysyncobj_version"] = getattr(pysyncobj, "__version__", None) or _dist_version("pysyncobj")
    config["pysyncobj_batch"] = a.pysyncobj_batch
    with PySyncObjCluster(MEMBERS, batch=a.pysyncobj_batch) as cluster:
        front = cluster.leader_front()

        async def go() -> None:
            async with pysyncobj_client(front) as client:
                await _measure(a, lambda c: client.put(f"k{c}".encode(), VALUE),
                               lambda c: client.get(f"k{c}".encode()),
                               lambda c: client.put(f"k{c}".encode(), VALUE), record("pysyncobj"))

        asyncio.run(go())
    return None


def run_raykv(a: argparse.Namespace, config: dict[str, Any], record: Record) -> None:
    """raykv's rows: one durable group of ``MEMBERS`` on the public defaults."""
    import ray

    import kvraft

    config["ray_version"] = ray.__version__
    value = VALUE.decode()
    owns_ray = not ray.is_initialized()  # a runtime already up (a notebook, the tests) is used and kept
    if owns_ray:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        group = kvraft.start_group(MEMBERS, storage="durable")
        config["raykv_transport"] = group.transport
        try:
            async def go() -> None:
                ck = group.async_clerk()
                try:
                    await ck.put("warm", value)
                    await _measure(a, lambda c: ck.put(f"k{c}", value), lambda c: ck.get(f"k{c}"),
                                   lambda c: ck.put(f"k{c}", value), record("raykv"))
                finally:
                    await ck.close()

            asyncio.run(go())
        finally:
            group.stop()
    finally:
        if owns_ray:
            ray.shutdown()


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    from tqdm import tqdm

    a = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: etcd, PySyncObj and Ray are stopped
    per_system = len(a.ops) * len(a.clients)
    bar = tqdm(total=len(a.systems) * per_system, desc="compare", unit="run", file=sys.stderr)
    results: list[dict[str, Any]] = []
    config: dict[str, Any] = {
        "members": MEMBERS, "value_bytes": len(VALUE), "clients": a.clients, "ops": a.ops,
        "systems": a.systems, "duration_s": a.duration, "warmup_s": a.warmup, "cores": os.cpu_count(),
        "python": platform.python_version()}
    skipped: dict[str, str] = {"etcd": "--no-etcd"} if a.no_etcd else {}
    failed: dict[str, str] = {}

    def record(system: str) -> Callable[[str], Callable[[Measurement], None]]:
        def for_op(op: str) -> Callable[[Measurement], None]:
            def done(m: Measurement) -> None:
                results.append(row(system, op, m))
                bar.update()
                tqdm.write(f"  {system:>9} {op:>5} {m.writers:>3} clients: {m.ops_per_s:>9,.0f} ops/s  "
                           f"p50 {m.p50_ms:.2f} ms  p99 {m.p99_ms:.2f} ms", file=sys.stderr)
            return done
        return for_op

    runners: dict[str, Callable[[argparse.Namespace, dict[str, Any], Record], str | None]] = {
        "etcd": run_etcd, "pysyncobj": run_pysyncobj, "raykv": run_raykv}
    for system in ("etcd", "pysyncobj", "raykv"):  # Ray last: the peers are stopped before it starts
        if system not in a.systems:
            continue
        before = bar.n
        try:
            reason = runners[system](a, config, record)
            if reason:
                skipped[system] = reason
                tqdm.write(f"  {system} skipped: {reason}", file=sys.stderr)
        except Exception as e:  # one system failing loses only its rows
            failed[system] = f"{type(e).__name__}: {e}"
            tqdm.write(f"  {system} FAILED: {failed[system]}", file=sys.stderr)
        bar.update(before + per_system - bar.n)
    bar.close()

    rows = with_ratios(results)
    targets = check_targets(rows)
    print(f"\n{MEMBERS} members on loopback, log on disk, {len(VALUE)}-byte values, {os.cpu_count()} cores, "
          f"{a.duration:g} s per run after {a.warmup:g} s; raykv on Ray {config.get('ray_version', '-')} "
          f"({config.get('raykv_transport', '-')} transport), "
          f"PySyncObj {config.get('pysyncobj_version', '-')}, "
          f"etcd {config.get('etcd_version', '-')}\n")
    print(format_table(rows))
    for r in rows:
        if r["count"] == 0:
            print(f"\n{r['system']} {r['op']} at {r['clients']} clients: no operation started in the "
                  f"{a.duration:g} s window (one stalled longer than that); lengthen --duration")
    for system, reason in skipped.items():
        print(f"\n{system} skipped: {reason}")
    for system, error in failed.items():
        print(f"\n{system} FAILED: {error}")
    for t in targets:
        v = f"{t['value']:.2f}×" if t["unit"] == "×" else f"{t['value']:,.0f} writes/s"
        print(f"target raykv, {t['target']}: {v}: {'met' if t['met'] else 'MISSED'}")
    if a.json:
        a.json.write_text(json.dumps({"config": config, "skipped": skipped, "failed": failed, "results": rows,
                                      "targets": targets}, indent=2) + "\n")
        print(f"wrote {a.json}")
    if a.plot:
        plot(rows, a.plot)
        print(f"wrote {a.plot}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
