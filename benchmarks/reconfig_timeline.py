"""Reconfiguration timeline: throughput and latency of a sharded service, interval by interval, while a
group joins, a group leaves and a node is lost (its replicas replaced), with the events marked.

    python benchmarks/reconfig_timeline.py [--nodes 4] [--groups 2] [--callers 32] [--phase 5]
        [--interval 0.5] [--value-bytes 100] [--retry-pause S] [--quick] [--json FILE] [--plot FILE]

A ``ray.cluster_utils.Cluster`` is started on this machine (a head node without CPUs and ``--nodes``
worker nodes; Ray declares a silent node dead after about 2 s, as in tests/test_replacement_ray.py).
A sharded service (``raykv.start_sharded``: a controller and ``--groups`` groups of 3 replicas, stream
transport, durable storage, 12 shards under the hash mapping, each group spread over distinct nodes)
serves ``--callers`` callers sharing one asyncio clerk, each putting (50 %) or getting random keys (4
per shard), closed loop; every completion is recorded with its latency. The driver then, with
``--phase`` seconds of steady load before each step and after the last:

1. **join**: ``add_group()`` starts a new group and joins it (events: the call, the join returned,
   every group settled: the shards have moved);
2. **leave**: ``remove_group()`` of that group (events: the call, the group emptied and stopped);
3. **node lost**: the worker node holding replicas of the most groups is killed (events: the kill,
   the first replica found dead by its group's leader, every group back at full strength: each lost
   replica replaced on a live node, see docs/cluster-operations.md).

Per ``--interval`` of the run: operations completed, ops/s, p50 / p99 / max latency of the operations
that completed in it (an operation stalled by a step shows as a late, slow completion). Per phase
(between consecutive events): the same over the phase, and its worst interval. ``--quick``: phases of
1 s, 16 callers (the test suite's mode). ``--json FILE``: ``{"config": {...}, "events": [{"t",
"label"}], "intervals": [{"t", "ops", "ops_per_s", "p50_ms", "p99_ms", "max_ms"}], "phases": [{"name",
"start", "end", "ops", "ops_per_s", "p50_ms", "p99_ms", "max_ms", "worst_interval_ops_per_s"}],
"failures": [[t, error]], "replacements": [...]}``, times in seconds from the start of the load.
``--plot FILE``: a PNG of ops/s and latency against time, each event a vertical line with its label.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# The repo's packages first (``kvraft`` is the package, not benchmarks/kvraft.py), benchmarks/ last.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))
sys.path.append(str(_HERE))

from sharded_load import (  # noqa: E402 (after the sys.path order above)
    FAST_NODE_DEATH,
    Load,
    Op,
    keys_by_shard,
    local_cluster,
    percentile,
)

NSHARDS = 12
REPLICAS = 3
KEYS_PER_SHARD = 4
STEP_TIMEOUT_S = 120.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line; fewer than 4 nodes (the node loss needs a free live node for each replacement),
    no group, no caller or a non-positive phase or interval is a usage error (exit 2)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=4, help="worker nodes of the local cluster (4, at least 4)")
    ap.add_argument("--groups", type=int, default=2, help="shard groups at the start (2)")
    ap.add_argument("--callers", type=int, default=None,
                    help="callers on one asyncio clerk (32; --quick: 16)")
    ap.add_argument("--phase", type=float, default=None, help="seconds of steady load around each step "
                    "(5; --quick: 1)")
    ap.add_argument("--interval", type=float, default=None, help="seconds per interval of the series "
                    "(0.5; --quick: 0.25)")
    ap.add_argument("--value-bytes", type=int, default=100, help="bytes per value (100)")
    ap.add_argument("--retry-pause", type=float, default=None, metavar="S",
                    help="the clerk's pause before asking for a new configuration after a wrong-group "
                    "answer (default: the clerk's own, 0.1 s)")
    ap.add_argument("--quick", action="store_true", help="short mode: phases of 1 s, 16 callers")
    ap.add_argument("--json", type=Path, metavar="FILE", help="write the series and events as JSON")
    ap.add_argument("--plot", type=Path, metavar="FILE", help="draw the timeline to this PNG")
    a = ap.parse_args(argv)
    a.callers = a.callers if a.callers is not None else (16 if a.quick else 32)
    a.phase = a.phase if a.phase is not None else (1.0 if a.quick else 5.0)
    a.interval = a.interval if a.interval is not None else (0.25 if a.quick else 0.5)
    if a.nodes < REPLICAS + 1:
        ap.error(f"--nodes must be at least {REPLICAS + 1}: each group's {REPLICAS} replicas run on distinct "
                 "nodes, and a lost replica is replaced on a live node its group does not use yet")
    if not 1 <= a.groups < NSHARDS:
        ap.error(f"--groups must be between 1 and {NSHARDS - 1} (one more group joins), got {a.groups}")
    if a.retry_pause is not None and a.retry_pause < 0:
        ap.error("--retry-pause must be >= 0")
    if a.callers < 1 or a.phase <= 0 or a.interval <= 0 or a.value_bytes < 0:
        ap.error("need --callers >= 1, --phase > 0, --interval > 0 and --value-bytes >= 0")
    return a


# ------------------------------------------------------------------------------------------------
# The series (pure: tested without Ray)
# ------------------------------------------------------------------------------------------------


def _stats(ops: Sequence[Op], seconds: float) -> dict[str, Any]:
    lat = [o.latency_s * 1000 for o in ops]
    return {"ops": len(ops), "ops_per_s": len(ops) / seconds if seconds > 0 else 0.0,
            "p50_ms": percentile(lat, 0.5), "p99_ms": percentile(lat, 0.99), "max_ms": max(lat, default=None)}


def intervals(ops: Sequence[Op], start: float, end: float, width: float) -> list[dict[str, Any]]:
    """The series: for each interval ``[start + i·width, start + (i+1)·width)`` up to ``end`` (the last
    one may be shorter), its start ``t`` (seconds from ``start``) and the figures of the operations that
    completed in it. Every operation completed in ``[start, end)`` is in exactly one interval."""
    n = max(1, int((end - start) / width + 0.999999))
    buckets: list[list[Op]] = [[] for _ in range(n)]
    for o in ops:
        if start <= o.end < end:
            buckets[min(n - 1, int((o.end - start) / width))].append(o)
    out = []
    for i, b in enumerate(buckets):
        t0 = i * width
        out.append({"t": round(t0, 6), **_stats(b, min(width, end - start - t0))})
    return out


def phases(ops: Sequence[Op], events: Sequence[dict[str, Any]], start: float, end: float,
           series: Sequence[dict[str, Any]], width: float) -> list[dict[str, Any]]:
    """Per phase, between consecutive events (``{"t": seconds from start, "label"}``, in time order)
    and from the start / to the end: the figures over the phase and its worst full interval."""
    marks = [(0.0, "start")] + [(e["t"], e["label"]) for e in events] + [(end - start, "end")]
    out = []
    for (t0, a), (t1, b) in itertools.pairwise(marks):
        if t1 <= t0:
            continue
        inside = [o for o in ops if start + t0 <= o.end < start + t1]
        full = [iv["ops"] / width for iv in series if iv["t"] >= t0 - 1e-9 and iv["t"] + width <= t1 + 1e-9]
        out.append({"name": f"{a} → {b}", "start": t0, "end": t1, **_stats(inside, t1 - t0),
                    "worst_interval_ops_per_s": min(full) if full else None})
    return out


def _f(v: float | None, fmt: str) -> str:
    return "n/a" if v is None else format(v, fmt)


def format_tables(events: Sequence[dict[str, Any]], ph: Sequence[dict[str, Any]]) -> str:
    """The events, then the phases' markdown table."""
    lines = ["| t (s) | event |", "| ---: | --- |"]
    lines += [f"| {e['t']:.2f} | {e['label']} |" for e in events]
    lines += ["", "| phase | from (s) | to (s) | ops/s | worst interval ops/s | p50 | p99 | max |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for p in ph:
        lines.append(f"| {p['name']} | {p['start']:.2f} | {p['end']:.2f} | {p['ops_per_s']:,.0f} "
                     f"| {_f(p['worst_interval_ops_per_s'], ',.0f')} | {_f(p['p50_ms'], '.1f')} ms "
                     f"| {_f(p['p99_ms'], '.1f')} ms | {_f(p['max_ms'], ',.0f')} ms |")
    return "\n".join(lines)


def plot(series: Sequence[dict[str, Any]], events: Sequence[dict[str, Any]], width: float, path: Path,
         title: str) -> None:
    """Ops/s (top) and p50 / p99 latency (bottom, log scale) per interval against time; every event a
    vertical line, labelled at the top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [iv["t"] + width / 2 for iv in series]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(12, 6.5), sharex=True)
    ax1.plot(t, [iv["ops_per_s"] for iv in series], "-", color="tab:blue", lw=1.2)
    ax1.set(ylabel="operations / s", title=title)
    ax1.set_ylim(bottom=0)
    p50 = [(x, iv["p50_ms"]) for x, iv in zip(t, series, strict=True) if iv["p50_ms"] is not None]
    p99 = [(x, iv["p99_ms"]) for x, iv in zip(t, series, strict=True) if iv["p99_ms"] is not None]
    if p50:
        ax2.plot(*zip(*p50, strict=True), "-", color="tab:green", lw=1.2, label="p50")
    if p99:
        ax2.plot(*zip(*p99, strict=True), "-", color="tab:red", lw=1.2, label="p99")
        ax2.set_yscale("log")
    ax2.set(xlabel="seconds since the load started", ylabel="latency, ms")
    ax2.legend(loc="upper left")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, e in enumerate(events):
        c = colors[(i + 3) % len(colors)]
        for ax in (ax1, ax2):
            ax.axvline(e["t"], color=c, ls="--", lw=1)
        ax1.text(e["t"], 1.0, f" {e['label']}", transform=ax1.get_xaxis_transform(), rotation=90,
                 va="top", ha="right", fontsize=7.5, color=c)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------


def _until(what: str, cond: Callable[[], Any], timeout: float, every: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


def run(a: argparse.Namespace, cluster: Any, workers: list[Any]) -> dict[str, Any]:
    """The timeline on the connected ``cluster``: returns the raw record (ops, events, replacements)."""
    from tqdm import tqdm

    import raykv

    steps = ["start", "steady", "join", "steady", "leave", "steady", "node lost", "steady"]
    bar = tqdm(total=len(steps), desc="reconfiguration", unit="step", file=sys.stderr)
    kv = raykv.start_sharded(f"timeline-{uuid.uuid4().hex[:6]}", groups=a.groups, replicas=REPLICAS,
                             nshards=NSHARDS, placement="spread")
    load: Load | None = None
    events: list[dict[str, Any]] = []
    try:
        bar.update()
        keys = [k for ks in keys_by_shard(NSHARDS, KEYS_PER_SHARD) for k in ks]
        ck = kv.clerk()
        for k in keys:
            ck.put(k, "v" * a.value_bytes, timeout=60)
        options = {} if a.retry_pause is None else {"retry_pause": a.retry_pause}
        load = Load(kv.async_clerk(**options), [keys] * a.callers, [0] * a.callers, value_bytes=a.value_bytes)
        t0 = time.monotonic()

        def mark(label: str, at: float | None = None) -> None:
            t = (time.monotonic() if at is None else at) - t0
            events.append({"t": round(t, 3), "label": label})
            tqdm.write(f"  {t:6.2f} s  {label}", file=sys.stderr)

        def steady() -> None:
            bar.set_postfix_str("steady")
            time.sleep(a.phase)  # a phase of load: its length is the measurement, not a synchronisation
            bar.update()

        steady()
        bar.set_postfix_str("join")
        gid = max(kv.gids) + 1
        mark(f"join g{gid}")
        kv.add_group(gid, timeout=STEP_TIMEOUT_S)
        mark(f"g{gid} joined")
        cfg = kv.wait_settled(timeout=STEP_TIMEOUT_S)
        mark(f"settled (config {cfg.num})")
        bar.update()
        steady()
        bar.set_postfix_str("leave")
        mark(f"leave g{gid}")
        kv.remove_group(gid, timeout=STEP_TIMEOUT_S)
        mark(f"g{gid} removed")
        bar.update()
        steady()
        bar.set_postfix_str("node lost")
        info = kv.info
        groups = (info.ctrler, *info.groups)
        hits = {w.node_id: [g.gid for g in groups if w.node_id in g.nodes] for w in workers}
        victim = max(workers, key=lambda w: (len(hits[w.node_id]), w.node_id))
        live = {w.node_id for w in workers if w is not victim}
        wall_to_mono = time.monotonic() - time.time()
        mark(f"node lost ({len(hits[victim.node_id])} replicas)")
        cluster.remove_node(victim, allow_graceful=False)

        def full() -> Any:
            st = kv.status(timeout=5)
            for g in (st.ctrler, *st.groups):
                if not (g.full_strength and set(g.nodes) <= live
                        and all(r.outcome != "in progress" for r in g.replacements)):
                    return None
            return st

        st = _until("every group back at full strength on live nodes", full, STEP_TIMEOUT_S)
        t_full = time.monotonic()
        replaced = [{"gid": g.gid, "old_peer": r.old_peer, "new_peer": r.new_peer, "outcome": r.outcome,
                     "detected": r.detected + wall_to_mono - t0, "started": r.started + wall_to_mono - t0,
                     "finished": None if r.finished is None else r.finished + wall_to_mono - t0}
                    for g in (st.ctrler, *st.groups) for r in g.replacements]
        if replaced:
            mark("replica found dead", min(r["detected"] for r in replaced) + t0)
        mark(f"replaced ({len(replaced)} replicas)", t_full)
        events.sort(key=lambda e: e["t"])
        bar.update()
        steady()
        t_end = time.monotonic()
        load.stop()
        return {"ops": list(load.ops), "failures": list(load.failures), "events": events, "t0": t0,
                "t_end": t_end, "replacements": replaced, "victim_groups": hits[victim.node_id]}
    finally:
        bar.close()
        if load is not None:
            try:
                load.stop()
            except Exception as exc:  # already reported by the first stop, or the run failed anyway
                print(f"load: {type(exc).__name__}: {exc}", file=sys.stderr)
        kv.stop()


def main(argv: Sequence[str] | None = None, cluster: tuple[Any, list[Any]] | None = None) -> int:
    """Run the timeline on a cluster of its own (or on ``cluster``, ``(Cluster, worker nodes)`` with this
    process connected and Ray told to notice a dead node quickly), print the tables, write JSON and the
    plot. Exit status 1 if an operation timed out."""
    a = parse_args(argv)
    if cluster is None:
        with local_cluster(a.nodes, FAST_NODE_DEATH) as (c, workers):
            rec = run(a, c, workers)
        nodes = a.nodes
    else:
        rec = run(a, cluster[0], cluster[1])
        nodes = len(cluster[1])
    t0, t_end, ops = rec["t0"], rec["t_end"], rec["ops"]
    series = intervals(ops, t0, t_end, a.interval)
    ph = phases(ops, rec["events"], t0, t_end, series, a.interval)
    ncores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 0)
    head = (f"reconfiguration timeline: {a.groups} groups of {REPLICAS} on {nodes} worker nodes, {ncores} "
            f"cores; {a.callers} callers, 50 % puts of {a.value_bytes} bytes; phases of {a.phase:g} s")
    print(head)
    print(format_tables(rec["events"], ph))
    failures = [(round(t - t0, 3), err) for t, _, err in rec["failures"]]
    print(f"{len(ops)} operations, {len(failures)} timed out; lost node held replicas of groups "
          f"{rec['victim_groups']} (0 = the controller)")
    config = {k: v for k, v in vars(a).items() if k not in ("json", "plot")} | {
        "nshards": NSHARDS, "replicas": REPLICAS, "keys_per_shard": KEYS_PER_SHARD, "cores": ncores,
        "worker_nodes": nodes, "python": platform.python_version(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if a.json:
        a.json.write_text(json.dumps({"config": config, "events": rec["events"], "intervals": series,
                                      "phases": ph, "failures": failures,
                                      "replacements": rec["replacements"]}, indent=2))
    if a.plot:
        plot(series, rec["events"], a.interval, a.plot, head)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
