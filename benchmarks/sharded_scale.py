"""Sharded scale: operations per second per group and in total with 1, 2 and 4 shard groups on a
multi-node Ray cluster, and the CPU each group costs per operation.

    python benchmarks/sharded_scale.py [--groups 1 2 4] [--nodes 3] [--callers 16] [--duration 5]
        [--warmup 1] [--value-bytes 100] [--storage durable|memory] [--quick] [--json FILE] [--plot FILE]

A ``ray.cluster_utils.Cluster`` is started on this machine: a head node without CPUs and ``--nodes``
worker nodes, each its own raylet and worker processes. One sharded service (``raykv.start_sharded``:
a controller and 1 group of 3 replicas, stream transport, ``--storage`` storage, 12 shards under the
hash mapping, each group's replicas spread over distinct nodes) is grown group by group
(``add_group``, then ``wait_settled``) to each count in ``--groups``. At each count, ``--callers``
callers *per group* (weak scaling: the offered load grows with the groups) share one asyncio clerk;
each caller loads one group only, putting (50 %) or getting random keys of that group's shards (8
keys per shard, ``--value-bytes`` values), closed loop. After ``--warmup`` seconds, ``--duration``
seconds are measured: operations per second per group and in total, p50 / p99 latency, and CPU:
each group's replicas (their processes' CPU time, asked of each actor), the controller, this process
(the clients), the whole local cluster (this process and every process descending from it: raylets,
GCS, workers; ``/proc``) and the whole machine (``/proc/stat``, which counts other users too).

On a machine with few cores the total cannot grow with the groups: every process shares the same
cores. What predicts a larger machine is the CPU cost: *group CPU per op* (the group's three replicas'
CPU seconds ÷ the operations it served) and *cluster CPU per op* (every process of the local cluster:
clients, controller, Ray's own). A machine with M free cores carries at most about
M ÷ (cluster CPU per op) operations per second, and G groups at the 1-group rate r need about
G × r × (cluster CPU per op) cores; the note under the table gives both.

``--quick``: 1 s measured after 0.5 s, 8 callers per group (the test suite's mode). ``--json FILE``:
``{"config": {...}, "rows": [{"groups", "nodes", "cores", "callers", "ops", "ops_per_s",
"per_group": [{"gid", "shards", "ops_per_s", "p50_ms", "p99_ms", "cores", "cpu_us_per_op"}],
"p50_ms", "p99_ms", "group_cpu_us_per_op", "ctrler_cores", "client_cores", "cluster_cores",
"cluster_processes", "cluster_cpu_us_per_op", "machine_cores", "machine_cpu_us_per_op", "failures",
"seconds"}], "prediction": {...}}``. ``--plot FILE``: a PNG of ops/s (total, per group, linear scaling
from 1 group) and CPU per op against the number of groups.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# The repo's packages first (``kvraft`` is the package, not benchmarks/kvraft.py), benchmarks/ last.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))
sys.path.append(str(_HERE))

from sharded_load import (  # noqa: E402 (after the sys.path order above)
    Load,
    actor_cpu_s,
    keys_by_shard,
    local_cluster,
    machine_busy_s,
    percentile,
    tree_cpu_s,
    tree_delta_s,
)

NSHARDS = 12  # 12, 6 + 6, 3 + 3 + 3 + 3: every group count here gets an equal share
REPLICAS = 3
KEYS_PER_SHARD = 8


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line; a group count outside 1..12, fewer than 1 node or caller, or a non-positive
    duration is a usage error (exit 2) that says what is allowed."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--groups", nargs="+", type=int, metavar="G", default=[1, 2, 4],
                    help="group counts to measure, grown in increasing order (default: 1 2 4)")
    ap.add_argument("--nodes", type=int, default=3, help="worker nodes of the local cluster (3)")
    ap.add_argument("--callers", type=int, default=None, help="callers per group (16; --quick: 8)")
    ap.add_argument("--duration", type=float, default=None, help="measured seconds per count (5; --quick: 1)")
    ap.add_argument("--warmup", type=float, default=None, help="warm-up seconds per count (1; --quick: 0.5)")
    ap.add_argument("--value-bytes", type=int, default=100, help="bytes per value (100)")
    ap.add_argument("--storage", choices=("durable", "memory"), default="durable",
                    help="the replicas' storage (durable: one fsync per batch)")
    ap.add_argument("--quick", action="store_true", help="short mode: 1 s after 0.5 s, 8 callers per group")
    ap.add_argument("--json", type=Path, metavar="FILE", help="write the results as JSON")
    ap.add_argument("--plot", type=Path, metavar="FILE", help="draw ops/s and CPU per op to this PNG")
    a = ap.parse_args(argv)
    a.callers = a.callers if a.callers is not None else (8 if a.quick else 16)
    a.duration = a.duration if a.duration is not None else (1.0 if a.quick else 5.0)
    a.warmup = a.warmup if a.warmup is not None else (0.5 if a.quick else 1.0)
    a.groups = sorted(set(a.groups))
    if a.groups[0] < 1 or a.groups[-1] > NSHARDS:
        ap.error(f"--groups must be between 1 and {NSHARDS} (the shards), got {a.groups}")
    if a.nodes < 1 or a.callers < 1:
        ap.error("--nodes and --callers must be at least 1")
    if a.duration <= 0 or a.warmup < 0:
        ap.error("need --duration > 0 and --warmup >= 0")
    if a.value_bytes < 0:
        ap.error("--value-bytes must be >= 0")
    return a


# ------------------------------------------------------------------------------------------------
# Figures (pure: tested without Ray)
# ------------------------------------------------------------------------------------------------


def group_figures(gid: int, shards: list[int], latencies: list[float], seconds: float,
                  cpu_s: float) -> dict[str, Any]:
    """One group's row: its operations (``latencies``, seconds) over ``seconds``, and the CPU seconds
    its replicas used meanwhile."""
    n = len(latencies)
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    return {"gid": gid, "shards": shards, "ops": n, "ops_per_s": n / seconds,
            "p50_ms": None if p50 is None else p50 * 1000, "p99_ms": None if p99 is None else p99 * 1000,
            "cores": cpu_s / seconds, "cpu_us_per_op": cpu_s / n * 1e6 if n else None}


def prediction(rows: list[dict[str, Any]], cores: int) -> dict[str, Any]:
    """What the measured costs predict. From the smallest count measured: the rate of one group r, the
    CPU per operation of a group's replicas and of the whole local cluster c (every process of it: the
    clients in this process, the controller, Ray's own; the machine's if the cluster's cannot be read).
    The most this machine can carry is about cores ÷ c; G groups at r each (linear scaling) need about
    G × r × c cores, or G × r × c_G at the cluster CPU per op c_G measured with G groups (higher: there
    the groups compete for the same cores, and each group's batches are smaller)."""
    base = rows[0]
    r = base["ops_per_s"] / base["groups"]
    c = base.get("cluster_cpu_us_per_op") or base["machine_cpu_us_per_op"]
    out: dict[str, Any] = {"per_group_ops_per_s": r, "group_cpu_us_per_op": base["group_cpu_us_per_op"],
                           "cpu_us_per_op": c, "cores": cores}
    if c:
        out["max_ops_per_s_here"] = cores / (c * 1e-6)
        out["linear"] = [{"groups": row["groups"], "ops_per_s": row["groups"] * r,
                          "cores_needed": row["groups"] * r * c * 1e-6,
                          "cores_needed_at_own_cost": row["groups"] * r * own * 1e-6 if own else None}
                         for row in rows for own in [row.get("cluster_cpu_us_per_op")]]
    return out


def cores() -> int:
    """The cores this process may run on (what every process of the local cluster shares)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 0)


def _ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f} ms"


def _us(v: float | None) -> str:
    return "n/a" if v is None else f"{v:,.0f} µs"


def _cores(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def format_table(rows: list[dict[str, Any]]) -> str:
    """The markdown table of the run, one line per group count (CPU in cores of the machine's)."""
    lines = ["| groups | nodes | cores | callers | total ops/s | per group ops/s | p50 | p99 "
             "| group CPU per op | cluster CPU (cores) | cluster CPU per op | machine busy (cores) |",
             "| ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        per = " / ".join(f"{g['ops_per_s']:,.0f}" for g in r["per_group"])
        lines.append(f"| {r['groups']} | {r['nodes']} | {r['cores']} | {r['callers']} "
                     f"| {r['ops_per_s']:,.0f} | {per} | {_ms(r['p50_ms'])} | {_ms(r['p99_ms'])} "
                     f"| {_us(r['group_cpu_us_per_op'])} | {_cores(r.get('cluster_cores'))} "
                     f"| {_us(r.get('cluster_cpu_us_per_op'))} | {_cores(r['machine_cores'])} |")
    return "\n".join(lines)


def format_prediction(p: dict[str, Any]) -> str:
    """The note under the table: why the total cannot grow here, and what a larger machine would do."""
    if not p.get("cpu_us_per_op"):
        return "no operations were measured: no prediction"
    text = (f"On {p['cores']} cores every process of the cluster shares the same cores, so the total cannot "
            f"grow much with the groups. Costs at {p['per_group_ops_per_s']:,.0f} ops/s per group: "
            f"{_us(p['group_cpu_us_per_op'])} of CPU per operation in the group's 3 replicas, "
            f"{_us(p['cpu_us_per_op'])} in the whole cluster (clients, controller and Ray included). So "
            f"this machine carries at most about {p['max_ops_per_s_here']:,.0f} ops/s, and linear scaling "
            "needs: ")
    first = p["linear"][0]["groups"]

    def need(x: dict[str, Any]) -> str:
        own = x.get("cores_needed_at_own_cost")
        at_own = ""
        if own and x["groups"] != first:
            at_own = f" ({own:.1f} at the CPU per op measured with {x['groups']})"
        return f"{x['groups']} group(s): {x['ops_per_s']:,.0f} ops/s on {x['cores_needed']:.1f} cores{at_own}"

    text += ", ".join(need(x) for x in p["linear"])
    return text + "."


def plot(rows: list[dict[str, Any]], pred: dict[str, Any], path: Path) -> None:
    """Ops/s (total, each group, linear from the first count) and CPU per op against the group count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gs = [r["groups"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax1.plot(gs, [r["ops_per_s"] for r in rows], "o-", label="total")
    for r in rows:
        ax1.scatter([r["groups"]] * len(r["per_group"]), [g["ops_per_s"] for g in r["per_group"]],
                    color="tab:orange", marker="x", label="each group" if r is rows[0] else None)
    if pred.get("linear"):
        ax1.plot(gs, [x["ops_per_s"] for x in pred["linear"]], "--", color="grey",
                 label="linear from 1 group")
    ax1.set(xlabel="shard groups", ylabel="operations / s", xticks=gs,
            title=f"throughput on {rows[0]['cores']} cores, {rows[0]['nodes']} nodes")
    ax1.set_ylim(bottom=0)
    ax1.legend()
    ax2.plot(gs, [r["group_cpu_us_per_op"] or 0 for r in rows], "o-", label="a group's replicas")
    ax2.plot(gs, [r.get("cluster_cpu_us_per_op") or 0 for r in rows], "s-", label="whole cluster")
    ax2.set(xlabel="shard groups", ylabel="CPU µs per operation", xticks=gs, title="CPU per operation")
    ax2.set_ylim(bottom=0)
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------


def measure(kv: Any, a: argparse.Namespace, keys: list[list[str]], nodes: int) -> dict[str, Any]:
    """One group count: the load on every group of ``kv`` as it is now (settled), measured."""
    cfg = kv.wait_settled(timeout=120)
    info = kv.info
    gids = sorted(info.gids)
    shards_of = {gid: [s for s, g in enumerate(cfg.shards) if g == gid] for gid in gids}
    keys_per_caller, tags = [], []
    for gid in gids:
        mine = [k for s in shards_of[gid] for k in keys[s]]
        keys_per_caller += [mine] * a.callers
        tags += [gid] * a.callers
    load = Load(kv.async_clerk(), keys_per_caller, tags, value_bytes=a.value_bytes)
    try:
        time.sleep(a.warmup)  # the window is counted from the clock below, not from this sleep
        actors = {g.gid: list(g.replicas) for g in info.groups}
        ctrler = list(info.ctrler.replicas)
        cpu0 = {gid: sum(actor_cpu_s(r)) for gid, r in actors.items()}
        c0, m0, d0, k0 = sum(actor_cpu_s(ctrler)), machine_busy_s(), time.process_time(), tree_cpu_s()
        t0 = time.monotonic()
        time.sleep(a.duration)
        t1 = time.monotonic()
        c1, m1, d1, k1 = sum(actor_cpu_s(ctrler)), machine_busy_s(), time.process_time(), tree_cpu_s()
        cpu1 = {gid: sum(actor_cpu_s(r)) for gid, r in actors.items()}
    finally:
        load.stop()
    dt = t1 - t0
    ops = load.between(t0, t1)
    per_group = [group_figures(gid, shards_of[gid], [o.latency_s for o in ops if o.tag == gid], dt,
                               cpu1[gid] - cpu0[gid]) for gid in gids]
    lat = [o.latency_s for o in ops]
    served = [g["cpu_us_per_op"] for g in per_group if g["cpu_us_per_op"] is not None]
    machine = None if m0 is None or m1 is None else (m1 - m0) / dt
    tree = tree_delta_s(k0, k1)
    cluster = None if tree is None else tree / dt
    rate = len(ops) / dt
    p50, p99 = percentile(lat, 0.5), percentile(lat, 0.99)
    return {"groups": len(gids), "nodes": nodes, "cores": cores(), "callers": len(tags),
            "ops": len(ops), "ops_per_s": len(ops) / dt, "per_group": per_group,
            "p50_ms": None if p50 is None else p50 * 1000, "p99_ms": None if p99 is None else p99 * 1000,
            "group_cpu_us_per_op": sum(served) / len(served) if served else None,
            "ctrler_cores": (c1 - c0) / dt, "client_cores": (d1 - d0) / dt,
            "cluster_cores": cluster, "cluster_processes": len(k1 or {}),
            "cluster_cpu_us_per_op": cluster / rate * 1e6 if cluster and ops else None,
            "machine_cores": machine or 0.0,
            "machine_cpu_us_per_op": machine / rate * 1e6 if machine and ops else None,
            "failures": len(load.failures), "seconds": dt}


def run(a: argparse.Namespace, nodes: int) -> list[dict[str, Any]]:
    """Start the service on the connected cluster, grow it through ``a.groups`` and measure each."""
    from tqdm import tqdm

    import raykv

    keys = keys_by_shard(NSHARDS, KEYS_PER_SHARD)
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(a.groups), desc="sharded scale", unit="count", file=sys.stderr)
    kv = raykv.start_sharded(f"scale-{uuid.uuid4().hex[:6]}", groups=a.groups[0], replicas=REPLICAS,
                             nshards=NSHARDS, storage=a.storage, placement="spread")
    try:
        ck = kv.clerk()
        for ks in keys:
            for k in ks:
                ck.put(k, "v" * a.value_bytes, timeout=60)
        for g in a.groups:
            while len(kv.gids) < g:
                bar.set_postfix_str(f"adding group {len(kv.gids) + 1}")
                kv.add_group()
            bar.set_postfix_str(f"measuring {g} group(s)")
            row = measure(kv, a, keys, nodes)
            rows.append(row)
            tqdm.write(f"  {g} group(s): {row['ops_per_s']:,.0f} ops/s, machine {row['machine_cores']:.2f} "
                       f"cores busy", file=sys.stderr)
            bar.update()
    finally:
        bar.close()
        kv.stop()
    return rows


def main(argv: Sequence[str] | None = None, cluster: tuple[Any, list[Any]] | None = None) -> int:
    """Run the benchmark on a cluster of its own (or on ``cluster``, ``(Cluster, worker nodes)``, this
    process already connected to it), print the table and the prediction, write JSON and the plot."""
    a = parse_args(argv)
    if cluster is None:
        with local_cluster(a.nodes) as (_, workers):
            rows = run(a, len(workers))
    else:
        rows = run(a, len(cluster[1]))
    pred = prediction(rows, cores())
    print(f"sharded scale: {a.callers} callers per group, 50 % puts of {a.value_bytes} bytes, "
          f"{NSHARDS} shards, {REPLICAS} replicas per group ({a.storage}), {a.duration:g} s after "
          f"{a.warmup:g} s per count")
    print(format_table(rows))
    print(format_prediction(pred))
    failures = sum(r["failures"] for r in rows)
    if failures:
        print(f"{failures} operations timed out")
    config = {k: v for k, v in vars(a).items() if k not in ("json", "plot")} | {
        "nshards": NSHARDS, "replicas": REPLICAS, "keys_per_shard": KEYS_PER_SHARD, "cores": cores(),
        "python": platform.python_version(), "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if a.json:
        a.json.write_text(json.dumps({"config": config, "rows": rows, "prediction": pred}, indent=2))
    if a.plot:
        plot(rows, pred, a.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
