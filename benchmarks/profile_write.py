"""Where one durable write's time goes on the stream transport, and what limits 100 writers.

    /work/bin/heavy python benchmarks/profile_write.py [--writes N] [--writers 1 100] [--duration S]
        [--warmup S] [--rate HZ] [--no-py-spy] [--json FILE]

One group of 3 replicas with durable storage on the stream transport (``kvraft.start_group(3,
storage="durable", transport="stream")``), all writers sharing one asyncio clerk, as in
``benchmarks/transports.py``. Three parts, in this order:

1. **One write, hop by hop.** ``--writes`` sequential 16-byte puts (after a warm-up of 50), with
   timestamps taken at every hop: the clerk's call, the leader's ``kv`` handler, the proposal, the
   AppendEntries written to each follower's connection, each follower's ``deliver`` and fsync, the
   leader receiving each follower's reply, the entry applied, the handler returning, the reply at the
   clerk. The hooks are installed only for this part and removed after it, by wrapping methods inside
   each replica's process (``actor.__ray_call__``) and on the driver's endpoint set: nothing in the
   repository's code is changed, and nothing is traced otherwise. Timestamps are ``time.monotonic_ns``
   (``CLOCK_MONOTONIC``, one clock for every process of the machine). The table gives each hop's median
   over the writes, its p90, and its share of the median write.
2. **CPU at 1 and 100 writers** (``--writers``): ``--duration`` seconds of closed-loop load after
   ``--warmup``, untraced; ops/s, p50, the clerk's batches (calls/s, operations per call), and the CPU
   each process used (from ``/proc/PID/stat``: the driver, the leader, the two followers, everything
   else on the machine from ``/proc/stat``), in cores, and the CPU per write summed over all of them.
3. **py-spy** (``--no-py-spy`` to skip): the same load again while ``py-spy record --format raw``
   samples the leader, one follower and the driver (``--rate`` Hz, on-CPU samples only, nonblocking),
   and the top functions of each by own time (a function's own time includes the C code it calls
   directly: ``pickle.dumps``, ``os.fsync``, a socket's ``send``). py-spy's own sampling costs CPU,
   so the load runs a little slower than in part 2; its figures are the share of each process's time.

``--json FILE`` writes ``{"config", "hops": {"writes", "segments": [{"hop", "p50_ms", "p90_ms",
"share"}], "total_p50_ms", "leader_fsync_p50_ms"}, "load": [{"writers", "ops_per_s", "p50_ms",
"calls_per_s", "ops_per_call", "cores": {process: cores}, "cpu_us_per_write"}], "profiles":
[{"writers", "process", "cores", "samples", "top": [{"function", "share"}]}]}``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))
sys.path.append(str(_HERE))

from peers.load import Measurement, drive  # noqa: E402 (after the sys.path order above)

REPLICAS = 3
VALUE = 16 * "v"
WARM_WRITES = 50
Event = tuple[Any, ...]

# ---------------------------------------------------------------------------------------------------
# Part 1: the hooks (run inside each replica's process through __ray_call__; pickled by value)
# ---------------------------------------------------------------------------------------------------


def install_trace(replica: Any) -> int:
    """Wrap, in this replica's process, the methods a write passes through so that each records a
    timestamped event in ``replica._pw_events`` (only for this replica's own objects); the originals
    are kept for :func:`remove_trace` (several replicas in one process: remove in reverse order).
    Returns the process id."""
    import pickle
    import time as _time

    from actors.transport import StreamTransport
    from raft import AppendEntries, RaftNode

    now = _time.monotonic_ns
    ev: list[Event] = []
    cur = {"idx": 0}
    replica._pw_events = ev
    cls, storage_cls = type(replica), type(replica.storage)
    orig: dict[tuple[type, str], Any] = {}

    def patch(owner: type, name: str, make: Callable[[Any], Any]) -> None:
        orig[(owner, name)] = owner.__dict__.get(name)
        setattr(owner, name, make(getattr(owner, name)))

    def last_index(msgs: Any) -> int:
        return max((m.entries[-1].index for m in msgs if type(m) is AppendEntries and m.entries), default=0)

    def w_kv(f: Any) -> Any:
        async def kv(self: Any, data: bytes) -> Any:
            if self is not replica:
                return await f(self, data)
            t0 = now()
            r = await f(self, data)
            ev.append(("kv", t0, now()))
            return r
        return kv

    def w_propose(f: Any) -> Any:
        def propose(self: Any, command: Any) -> Any:
            r = f(self, command)
            if r[2] and self is replica.core:
                ev.append(("propose", r[0], now()))
            return r
        return propose

    def w_dispatch(f: Any) -> Any:
        def _dispatch(self: Any, inc: int, messages: Any, reply_to: Any, replies: Any) -> None:
            cur["idx"] = last_index(messages) if self is replica else 0
            try:
                f(self, inc, messages, reply_to, replies)
            finally:
                cur["idx"] = 0
        return _dispatch

    def w_start(f: Any) -> Any:
        def start(self: Any, peer: int, method: str, args: tuple, rpcs: int = 1) -> Any:
            coro = f(self, peer, method, args, rpcs)
            idx, sent = cur["idx"], now()  # the frame is written inside start() when connected
            if not idx or self is not replica.transport:
                return coro

            async def timed() -> Any:
                r = await coro
                ev.append(("ack", peer, idx, sent, now()))
                return r
            return timed()
        return start

    def w_rpc(f: Any) -> Any:
        async def rpc(self: Any, incarnation: Any, method: str, args: tuple) -> Any:
            if method != "deliver" or self is not replica:
                return await f(self, incarnation, method, args)
            t0 = now()
            r = await f(self, incarnation, method, args)
            t1 = now()  # the trace's own unpickling below is left out of the follower's time
            idx = last_index(pickle.loads(args[0]) if isinstance(args[0], bytes) else args[0])
            if idx:
                ev.append(("deliver", idx, t0, t1))
            return r
        return rpc

    def w_save(f: Any) -> Any:
        def save(self: Any, hard_state: Any, entries: Any, snapshot: Any) -> None:
            t0 = now()
            f(self, hard_state, entries, snapshot)
            if entries and self is replica.storage:
                ev.append(("save", entries[-1].index, t0, now()))
        return save

    def w_applied(f: Any) -> Any:
        def _on_applied(self: Any, index: int, term: int, command: Any, result: Any) -> None:
            if self is replica:
                ev.append(("apply", index, now()))
            f(self, index, term, command, result)
        return _on_applied

    patch(cls, "kv", w_kv)
    patch(cls, "rpc", w_rpc)
    patch(cls, "_dispatch", w_dispatch)
    patch(cls, "_on_applied", w_applied)
    patch(RaftNode, "propose", w_propose)
    patch(StreamTransport, "start", w_start)
    patch(storage_cls, "save", w_save)
    replica._pw_orig = orig
    return os.getpid()


def remove_trace(replica: Any) -> list[Event]:
    """Put the originals back and return the events recorded."""
    for (owner, name), f in replica._pw_orig.items():
        if f is None:
            delattr(owner, name)
        else:
            setattr(owner, name, f)
    events, replica._pw_events, replica._pw_orig = replica._pw_events, None, {}
    return list(events)


def _first(events: list[Event], kind: str, idx: int, after: int = 0) -> Event | None:
    """The first event of ``kind`` with an index (position 1) of at least ``idx`` and a last time of
    at least ``after``."""
    for e in events:
        if e[0] == kind and e[1] >= idx and e[-1] >= after:
            return e
    return None


HOPS = (
    "clerk -> leader's handler (pickle, frame, loopback, read, task)",
    "leader: unpickle, check, propose",
    "leader: flush -> AppendEntries written to the follower",
    "AppendEntries in flight -> follower's deliver",
    "follower: step, append (before its save)",
    "follower: save (write + fsync)",
    "follower: after save -> reply returned",
    "reply in flight -> leader has it (quorum)",
    "leader: commit + apply",
    "leader: waiter wakes -> handler returns",
    "leader's reply -> clerk has it (frame, loopback, unpickle)",
)


def breakdown(calls: list[Event], leader: list[Event],
              followers: dict[int, list[Event]]) -> list[list[float]]:
    """One row of hop durations (ms, in :data:`HOPS` order, then the total and the leader's own save)
    per clerk call that can be followed through every hop; the follower whose reply made the quorum
    is the one followed."""
    rows = []
    for _, c0, c1 in calls:
        kv = next((e for e in leader if e[0] == "kv" and c0 <= e[1] <= c1), None)
        prop = kv and next((e for e in leader if e[0] == "propose" and kv[1] <= e[2] <= kv[2]), None)
        if kv is None or prop is None:
            continue
        i, tp = prop[1], prop[2]
        acks = [e for e in leader if e[0] == "ack" and e[2] >= i and e[3] >= tp]
        apply_ = next((e for e in leader if e[0] == "apply" and e[1] == i), None)
        lsave = _first([e for e in leader if e[0] == "save"], "save", i, tp)
        if not acks or apply_ is None or lsave is None:
            continue
        ack = min(acks, key=lambda e: e[4])
        fev = followers.get(ack[1], [])
        dl = _first([e for e in fev if e[0] == "deliver"], "deliver", i, ack[3])
        fs = dl and _first([e for e in fev if e[0] == "save"], "save", i, dl[2])
        if dl is None or fs is None:
            continue
        points = [c0, kv[1], tp, ack[3], dl[2], fs[2], fs[3], dl[3], ack[4], apply_[2], kv[2], c1]
        hops = [(b - a) / 1e6 for a, b in itertools.pairwise(points)]
        rows.append([*hops, (c1 - c0) / 1e6, (lsave[3] - lsave[2]) / 1e6])
    return rows


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))] if s else float("nan")


def summarise_hops(rows: list[list[float]]) -> dict[str, Any]:
    cols = list(zip(*rows, strict=True)) if rows else [[] for _ in range(len(HOPS) + 2)]
    total = _pct(list(cols[len(HOPS)]), 0.5)
    segments = [{"hop": h, "p50_ms": round(_pct(list(c), 0.5), 3), "p90_ms": round(_pct(list(c), 0.9), 3),
                 "share": round(_pct(list(c), 0.5) / total, 3) if total else None}
                for h, c in zip(HOPS, cols, strict=False)]
    return {"writes": len(rows), "segments": segments, "total_p50_ms": round(total, 3),
            "total_p90_ms": round(_pct(list(cols[len(HOPS)]), 0.9), 3),
            "sum_of_p50s_ms": round(sum(s["p50_ms"] for s in segments), 3),
            "leader_fsync_p50_ms": round(_pct(list(cols[len(HOPS) + 1]), 0.5), 3)}


# ---------------------------------------------------------------------------------------------------
# Parts 2 and 3: CPU accounting and py-spy
# ---------------------------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def machine_busy_s() -> float:
    """CPU seconds every core of the machine spent not idle (nor waiting on I/O) since boot."""
    v = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / _TICK


def top_functions(raw: str, n: int) -> tuple[int, list[dict[str, Any]]]:
    """Aggregate py-spy ``--format raw`` stacks by their leaf frame (file:line dropped): total samples
    and the ``n`` functions with the most own time, each with its share."""
    own: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        leaf = stack.rsplit(";", 1)[-1]
        name, _, where = leaf.partition(" (")
        own[f"{name} ({where.split(':')[0].rstrip(')')})" if where else name] += int(count)
        total += int(count)
    if not total:
        return 0, []
    return total, [{"function": f, "share": round(c / total, 3)} for f, c in own.most_common(n)]


def spy(pid: int, seconds: float, rate: int, out: Path) -> subprocess.Popen[bytes]:
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return subprocess.Popen([exe, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
                             "--rate", str(rate), "--format", "raw", "--nonblocking", "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


# ---------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--writes", type=int, default=300, help="sequential writes traced (300)")
    ap.add_argument("--writers", nargs="+", type=int, default=[1, 100], help="load runs (1 100)")
    ap.add_argument("--duration", type=float, default=3.0, help="measured seconds per load run (3)")
    ap.add_argument("--warmup", type=float, default=0.5, help="warm-up seconds per load run (0.5)")
    ap.add_argument("--rate", type=int, default=200, help="py-spy samples per second (200)")
    ap.add_argument("--top", type=int, default=10, help="functions listed per profile (10)")
    ap.add_argument("--no-py-spy", action="store_true", help="skip part 3")
    ap.add_argument("--json", type=Path, metavar="FILE", help="write the results as JSON")
    a = ap.parse_args(argv)
    if a.writes < 1 or any(w < 1 for w in a.writers) or a.duration <= 0 or a.warmup < 0:
        ap.error("need --writes >= 1, --writers >= 1, --duration > 0 and --warmup >= 0")
    return a


async def trace_writes(ck: Any, writes: int) -> list[Event]:
    """``writes`` sequential puts with the clerk's calls timed: ``("call", t0, t1)`` each."""
    calls: list[Event] = []
    endpoints = ck._calls
    inner = endpoints.acall

    async def acall(server: int, ops: Any, timeout_s: float) -> Any:
        t0 = time.monotonic_ns()
        r = await inner(server, ops, timeout_s)
        calls.append(("call", t0, time.monotonic_ns()))
        return r

    endpoints.acall = acall
    try:
        for i in range(writes):
            await ck.put(f"t{i}", VALUE)
    finally:
        del endpoints.acall
    return calls


async def load(ck: Any, writers: int, warmup: float, duration: float, pids: dict[str, int]) -> dict[str, Any]:
    """One closed-loop run with the CPU of every process accounted over the measured window."""
    loop = asyncio.get_running_loop()
    snap: dict[str, Any] = {}

    def take() -> tuple[float, float, dict[str, float], int]:
        return time.monotonic(), machine_busy_s(), {k: proc_cpu_s(p) for k, p in pids.items()}, ck.calls

    loop.call_later(warmup, lambda: snap.setdefault("a", take()))
    m: Measurement = await drive(lambda c: ck.put(f"k{c}", VALUE), writers, warmup, duration)
    b = take()
    t0, busy0, cpu0, calls0 = snap["a"]
    wall = b[0] - t0
    cores = {k: round((b[2][k] - cpu0[k]) / wall, 3) for k in pids}
    cores["machine"] = round((b[1] - busy0) / wall, 3)
    cores["other"] = round(cores["machine"] - sum(cores[k] for k in pids), 3)
    calls = b[3] - calls0
    return {"writers": writers, "ops_per_s": round(m.ops_per_s, 1), "p50_ms": round(m.p50_ms, 3),
            "p99_ms": round(m.p99_ms, 3), "calls_per_s": round(calls / wall, 1),
            "ops_per_call": round(m.ops_per_s * wall / calls, 2) if calls else None, "cores": cores,
            "cpu_us_per_write": round(cores["machine"] / m.ops_per_s * 1e6, 1) if m.count else None}


async def profiled(ck: Any, a: argparse.Namespace, pids: dict[str, int], tmp: Path) -> list[dict[str, Any]]:
    out = []
    for w in a.writers:
        files = {k: tmp / f"{k}-{w}.txt" for k in pids}
        procs = {k: spy(p, a.warmup + a.duration, a.rate, files[k]) for k, p in pids.items()}
        await asyncio.sleep(0.3)  # let py-spy attach
        m = await drive(lambda c: ck.put(f"k{c}", VALUE), w, a.warmup, a.duration)
        for k, p in procs.items():
            _, err = await asyncio.to_thread(p.communicate)
            raw = files[k].read_text() if files[k].exists() else ""
            total, top = top_functions(raw, a.top)
            seconds = max(1, round(a.warmup + a.duration))
            out.append({"writers": w, "process": k, "samples": total,
                        "cores": round(total / a.rate / seconds, 3),
                        "ops_per_s_while_sampled": round(m.ops_per_s, 1), "top": top,
                        "error": None if total else err.decode(errors="replace")[-300:]})
    return out


def main(argv: Sequence[str] | None = None) -> int:
    import ray

    import kvraft

    a = parse_args(argv)
    if __name__ != "__main__":  # imported: the hooks go by value (workers can't import benchmarks/)
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    group = kvraft.start_group(REPLICAS, storage="durable", transport="stream")
    result: dict[str, Any] = {"config": {
        "replicas": REPLICAS, "value_bytes": len(VALUE), "storage": "durable", "transport": "stream",
        "writes": a.writes, "writers": a.writers, "duration_s": a.duration, "warmup_s": a.warmup,
        "rate_hz": a.rate, "cores": os.cpu_count(), "python": platform.python_version(),
        "ray": ray.__version__}}
    try:
        leader = group.leader()
        others = [i for i in range(REPLICAS) if i != leader]

        async def run() -> None:
            ck = group.async_clerk()
            try:
                for i in range(WARM_WRITES):
                    await ck.put(f"w{i}", VALUE)
                pids_by_peer = dict(zip(range(REPLICAS), ray.get(
                    [r.__ray_call__.remote(install_trace) for r in group.replicas]), strict=True))
                calls = await trace_writes(ck, a.writes)
                events = ray.get([r.__ray_call__.remote(remove_trace) for r in group.replicas])
                rows = breakdown(calls, events[leader], {i: events[i] for i in others})
                result["hops"] = summarise_hops(rows)
                pids = {"driver": os.getpid(), "leader": pids_by_peer[leader],
                        "follower 1": pids_by_peer[others[0]], "follower 2": pids_by_peer[others[1]]}
                result["load"] = [await load(ck, w, a.warmup, a.duration, pids) for w in a.writers]
                if not a.no_py_spy:
                    with tempfile.TemporaryDirectory() as tmp:
                        spied = {k: pids[k] for k in ("leader", "follower 1", "driver")}
                        result["profiles"] = await profiled(ck, a, spied, Path(tmp))
            finally:
                await ck.close()

        asyncio.run(run())
    finally:
        group.stop()
        ray.shutdown()
    report(result)
    if a.json:
        a.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {a.json}")
    return 0


def report(r: dict[str, Any]) -> None:
    h = r["hops"]
    print(f"\nOne durable write, hop by hop ({h['writes']} sequential 16-byte puts, 3 replicas, stream):\n")
    print("| hop | p50 | p90 | share of the p50 write |\n| --- | ---: | ---: | ---: |")
    for s in h["segments"]:
        share = "n/a" if s["share"] is None else f"{s['share'] * 100:.0f} %"
        print(f"| {s['hop']} | {s['p50_ms']:.3f} ms | {s['p90_ms']:.3f} ms | {share} |")
    print(f"| **whole write** (sum of the p50s: {h['sum_of_p50s_ms']:.3f} ms) | {h['total_p50_ms']:.3f} ms | "
          f"{h['total_p90_ms']:.3f} ms | 100 % |")
    print(f"| (in parallel: the leader's own save, write + fsync) | {h['leader_fsync_p50_ms']:.3f} ms | | |")
    procs = list(r["load"][0]["cores"]) if r["load"] else []
    print(f"\nLoad, untraced: CPU in cores (the machine has {r['config']['cores']}):\n")
    print("| writers | ops/s | p50 | clerk calls/s | ops per call | " + " | ".join(procs)
          + " | CPU per write |")
    print("| ---: | ---: | ---: | ---: | ---: | " + " | ".join("---:" for _ in procs) + " | ---: |")
    for x in r["load"]:
        print(f"| {x['writers']} | {x['ops_per_s']:,.0f} | {x['p50_ms']:.2f} ms | {x['calls_per_s']:,.0f} | "
              f"{x['ops_per_call']} | " + " | ".join(f"{x['cores'][k]:.2f}" for k in procs)
              + f" | {x['cpu_us_per_write']} µs |")
    by: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for p in r.get("profiles", []):
        by[p["writers"]].append(p)
    for w, ps in by.items():
        print(f"\npy-spy at {w} writers ({ps[0]['ops_per_s_while_sampled']:,.0f} ops/s while sampled), "
              "own time, share of each process's on-CPU samples:")
        for p in ps:
            print(f"\n  {p['process']}: {p['cores']:.2f} cores of Python ({p['samples']} samples)")
            if p["error"]:
                print(f"  py-spy: {p['error']}")
            for t in p["top"]:
                print(f"    {t['share'] * 100:5.1f} %  {t['function']}")


if __name__ == "__main__":
    raise SystemExit(main())
