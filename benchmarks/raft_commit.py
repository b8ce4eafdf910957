"""How long one command takes to commit, next to the raw Ray actor round trip measured in the same run.

    python benchmarks/raft_commit.py [--commands 300] [--peers 3] [--json FILE]

Measures, sequentially (one command in flight at a time):

- ``raw_ray_rtt_ms``: driver -> actor -> driver, an empty async method (the floor of any call);
- ``commit_ms`` per transport: driver asks the leader to propose a command and waits until the leader
  has applied it (leader -> followers -> leader, one round trip of AppendEntries, memory storage),
  through the faulty network actor (``network``) and with peers calling each other directly
  (``direct``).

The commit floor is two round trips (driver -> leader, leader -> majority): about 2x the raw RTT
directly, and about 1 + 2 = 3x through the relaying network actor.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import statistics
import time
from pathlib import Path
from typing import Any

import ray
from tqdm import tqdm

from actors.network import FaultyNetwork
from actors.replica import ReplicaActor, ReplicaSpec
from actors.statemachine import ApplyRecorder


class CommitWaiter(ReplicaActor):
    """A replica that can wait for its own proposals to be applied (benchmark only)."""

    def __init__(self, spec: ReplicaSpec) -> None:
        super().__init__(spec)
        self._waiting: dict[int, asyncio.Future[None]] = {}

    def _on_applied(self, index: int, term: int, command: Any, result: Any) -> None:
        fut = self._waiting.pop(index, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def commit(self, command: Any) -> bool:
        index, _, ok = await self.start_command(command)
        if not ok:
            return False
        fut = asyncio.get_running_loop().create_future()
        self._waiting[index] = fut
        await asyncio.wait_for(fut, 5.0)
        return True


@ray.remote(num_cpus=0)
class Echo:
    async def ping(self) -> None:
        return None


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def raw_rtt(n: int) -> list[float]:
    echo = Echo.remote()
    ray.get(echo.ping.remote())
    out = []
    for _ in range(n):
        t = time.perf_counter()
        ray.get(echo.ping.remote())
        out.append((time.perf_counter() - t) * 1000)
    ray.kill(echo)
    return out


def commit_latency(peers: int, commands: int, transport: str) -> list[float]:
    cls = ray.remote(num_cpus=0, max_concurrency=1000)(CommitWaiter)
    specs = [ReplicaSpec(name=f"peer{i}", peer_id=i, peers=tuple(range(peers)),
                         state_machine=functools.partial(ApplyRecorder, None), seed=i)
             for i in range(peers)]
    reps = [cls.remote(s) for s in specs]
    net = None
    if transport == "network":
        net = FaultyNetwork.remote(seed=1)
        for i in range(peers):
            ends = {j: f"p{i}->p{j}" for j in range(peers) if j != i}
            ray.get([net.make_end.remote(e, f"peer{j}") for j, e in ends.items()])
            ray.get(net.enable_many.remote(list(ends.values()), True))
            ray.get(reps[i].start.remote(1, ("network", net, ends)))
            ray.get(net.add_server.remote(f"peer{i}", reps[i], 1))
    else:
        for i in range(peers):
            ray.get(reps[i].start.remote(1, ("direct", {j: reps[j] for j in range(peers) if j != i})))
    leader = None
    deadline = time.monotonic() + 10
    while leader is None and time.monotonic() < deadline:
        time.sleep(0.1)
        for i, (_, is_leader) in enumerate(ray.get([r.get_state.remote() for r in reps])):
            if is_leader:
                leader = i
    assert leader is not None, "no leader elected"
    for k in range(20):  # warm up
        ray.get(reps[leader].commit.remote(-k))
    out = []
    for k in tqdm(range(commands), desc=f"commit via {transport}", leave=False):
        t = time.perf_counter()
        ok = ray.get(reps[leader].commit.remote(k))
        out.append((time.perf_counter() - t) * 1000)
        assert ok, "leader lost leadership during the benchmark"
    for r in reps:
        ray.kill(r)
    if net is not None:
        ray.kill(net)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--commands", type=int, default=300)
    ap.add_argument("--peers", type=int, default=3)
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)
    ray.init(ignore_reinit_error=True, include_dashboard=False, logging_level="WARNING",
             namespace="raykv-bench")
    rtt = raw_rtt(max(200, args.commands))
    res: dict[str, Any] = {"raw_ray_rtt_ms": statistics.median(rtt), "peers": args.peers, "results": []}
    print(f"raw Ray actor round trip: median {statistics.median(rtt):.2f} ms, p99 {pct(rtt, .99):.2f} ms")
    for transport in ("network", "direct"):
        lat = commit_latency(args.peers, args.commands, transport)
        med = statistics.median(lat)
        res["results"].append({"transport": transport, "commit_p50_ms": med,
                               "commit_p99_ms": pct(lat, .99), "ratio_to_rtt": med / res["raw_ray_rtt_ms"]})
        print(f"commit via {transport:8s}: median {med:.2f} ms, p99 {pct(lat, .99):.2f} ms, "
              f"{med / res['raw_ray_rtt_ms']:.1f}x the raw round trip")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
