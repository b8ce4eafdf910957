"""Helpers for ``experiments.ipynb``: the experiment logic, so that the notebook stays readable.

Everything here is plain Python on top of raykv's public API (:func:`raykv.start_sharded`, its
:class:`~raykv.ShardedKV`, the clerks, :mod:`linearizability`); only the ``plot_*`` functions import
matplotlib. The notebook imports this module from its own directory (Jupyter starts kernels there).

- :func:`throughput_sweep`: for each number of concurrent clients, how many operations per second
  one asyncio clerk gets through, and their latencies (median, p99).
- :class:`Timeline`: polls the service's status in a background thread and turns what it sees into
  events: a group's leader changed (an election), a shard started or finished moving.
- :class:`HistoryClients`: client threads whose every operation is recorded for the checker.
- :func:`plot_sweep`, :func:`plot_timeline`: the two pictures.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from linearizability import Recorder

#: deadline of one recorded operation (one that takes longer is recorded with an unknown outcome)
OP_TIMEOUT_S = 10.0

# --------------------------------------------------------------------------------------------------
# Throughput against clients
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepPoint:
    """One run of :func:`throughput_sweep`: ``clients`` coroutines for ``seconds`` seconds."""

    clients: int
    op: str
    ops: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.seconds


async def _drive(kv: Any, clients: int, seconds: float, op: str) -> SweepPoint:
    ck = kv.async_clerk()
    latencies: list[float] = []
    try:
        keys = [f"sweep-{clients}-{i}" for i in range(clients)]
        await asyncio.gather(*(ck.put(k, "v") for k in keys))  # every key exists; the clerk is warm
        stop = time.monotonic() + seconds

        async def client(key: str) -> None:
            n = 0
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                if op == "put":
                    await ck.put(key, f"v{n}")
                else:
                    await ck.get(key)
                latencies.append(time.perf_counter() - t0)
                n += 1

        start = time.monotonic()
        await asyncio.gather(*(client(k) for k in keys))
        elapsed = time.monotonic() - start
    finally:
        await ck.close()
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return SweepPoint(clients, op, len(latencies), elapsed, 1000 * statistics.median(ordered), 1000 * p99)


def _run_in_thread(coro: Any) -> Any:
    """``asyncio.run(coro)`` in a thread of its own: a notebook's kernel already runs an event loop
    in this thread, where ``asyncio.run`` refuses to start another."""
    result: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:  # handed to the caller below
            errors.append(exc)

    worker = threading.Thread(target=run, name="sweep")
    worker.start()
    worker.join()
    if errors:
        raise errors[0]
    return result[0]


def throughput_sweep(kv: Any, clients: Sequence[int], seconds: float, ops: Sequence[str] = ("put", "get"),
                     ) -> list[SweepPoint]:
    """For every ``op`` and every number of ``clients``: that many coroutines share one
    :class:`~shardkv.async_clerk.AsyncClerk` (which batches their requests per group), each doing
    ``op`` on its own key in a loop for ``seconds`` seconds; one :class:`SweepPoint` per run."""
    points = []
    for op in ops:
        for n in clients:
            point = _run_in_thread(_drive(kv, n, seconds, op))
            print(f"{op:>3} with {n:>3} clients: {point.ops_per_s:8,.0f} ops/s, "
                  f"p50 {point.p50_ms:6.2f} ms, p99 {point.p99_ms:6.2f} ms")
            points.append(point)
    return points


def plot_sweep(points: Sequence[SweepPoint]) -> Any:
    """Operations per second (left) and median latency (right) against concurrent clients."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    for op in sorted({p.op for p in points}):
        mine = [p for p in points if p.op == op]
        xs = [p.clients for p in mine]
        left.plot(xs, [p.ops_per_s for p in mine], marker="o", label=op)
        right.plot(xs, [p.p50_ms for p in mine], marker="o", label=f"{op} p50")
        right.plot(xs, [p.p99_ms for p in mine], marker=".", linestyle="--", label=f"{op} p99")
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.grid(alpha=0.3)
        ax.legend()
    left.set_ylabel("operations / s")
    right.set_ylabel("latency (ms)")
    fig.suptitle("one asyncio clerk, sharded service")
    return fig


# --------------------------------------------------------------------------------------------------
# A timeline of elections and shard moves
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimelineEvent:
    """``t``: seconds since the timeline started; ``kind``: ``"leader"`` (a group has a new leader,
    ``detail`` says who and in which term), ``"moving"`` / ``"settled"`` (a group's shards started /
    stopped moving), ``"gone"`` (the group is no longer in the service), or ``"action"`` (what the
    experiment did, noted with :meth:`Timeline.note`)."""

    t: float
    gid: int
    kind: str
    detail: str


@dataclass
class Timeline:
    """Polls ``kv.status()`` every ``interval`` seconds in a background thread (start with
    :meth:`start`, end with :meth:`stop`) and keeps the events it sees. A leader that lasts less than
    one poll may go unseen; a new (leader, term) is an election won (terms only grow)."""

    kv: Any
    interval: float = 0.1
    events: list[TimelineEvent] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _t0: float = 0.0

    def start(self) -> Timeline:
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="timeline", daemon=True)
        self._thread.start()
        return self

    def note(self, what: str) -> None:
        self.events.append(TimelineEvent(time.monotonic() - self._t0, -1, "action", what))

    def stop(self) -> list[TimelineEvent]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        return self.events

    def _run(self) -> None:
        leaders: dict[int, tuple[int, int]] = {}
        moving: dict[int, bool] = {}
        while not self._stop.is_set():
            try:
                status = self.kv.status(timeout=2.0)
            except Exception:  # the service may be reconfiguring; the next poll sees it
                self._stop.wait(self.interval)
                continue
            t = time.monotonic() - self._t0
            present = {g.gid for g in status.groups}
            for gid in [gid for gid in moving if gid and gid not in present]:
                self.events.append(TimelineEvent(t, gid, "gone", "left the service"))
                del moving[gid]
            for g in (status.ctrler, *status.groups):
                if g.leader is not None and leaders.get(g.gid) != (g.leader, g.term):
                    self.events.append(TimelineEvent(t, g.gid, "leader", f"P{g.leader} term {g.term}"))
                    leaders[g.gid] = (g.leader, g.term)
                busy = bool(g.arriving or g.leaving)
                if busy != moving.get(g.gid, False):
                    what = f"in {list(g.arriving)} out {list(g.leaving)}" if busy else "settled"
                    self.events.append(TimelineEvent(t, g.gid, "moving" if busy else "settled", what))
                    moving[g.gid] = busy
            self._stop.wait(self.interval)

    def now(self) -> float:
        """Seconds since the timeline started (the ``t`` of an event seen now)."""
        return time.monotonic() - self._t0

    def wait_for_leader(self, gid: int, since: float, timeout: float = 30.0) -> TimelineEvent:
        """The first new leader of group ``gid`` seen after ``since`` (seconds on this timeline),
        waiting up to ``timeout`` seconds for it (polling, as the timeline itself polls)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for e in self.elections() if e.gid == gid and e.t > since]
            if found:
                return found[0]
            time.sleep(self.interval / 2)
        raise TimeoutError(f"group {gid} elected no new leader within {timeout:.0f} s")

    def elections(self) -> list[TimelineEvent]:
        return [e for e in self.events if e.kind == "leader"]

    def format(self) -> str:
        rows = []
        for e in self.events:
            who = "experiment" if e.gid < 0 else ("controller" if e.gid == 0 else f"group {e.gid}")
            rows.append(f"{e.t:7.2f} s  {who:<11} {e.kind:<8} {e.detail}")
        return "\n".join(rows)


def plot_timeline(events: Sequence[TimelineEvent]) -> Any:
    """One lane per group (the controller is group 0): a dot per new leader, a bar while shards
    move, and a dashed line per action of the experiment."""
    import matplotlib.pyplot as plt

    gids = sorted({e.gid for e in events if e.gid >= 0})
    fig, ax = plt.subplots(figsize=(10, 1 + 0.6 * max(1, len(gids))))
    end = max((e.t for e in events), default=1.0) + 0.5
    for lane, gid in enumerate(gids):
        mine = [e for e in events if e.gid == gid]
        started = None
        for e in mine:
            if e.kind == "moving" and started is None:
                started = e.t
            elif e.kind in ("settled", "gone") and started is not None:
                ax.barh(lane, e.t - started, left=started, height=0.4, color="tab:orange", alpha=0.6)
                started = None
        if started is not None:
            ax.barh(lane, end - started, left=started, height=0.4, color="tab:orange", alpha=0.6)
        leaders = [e for e in mine if e.kind == "leader"]
        ax.scatter([e.t for e in leaders], [lane] * len(leaders), color="tab:blue", zorder=3)
        for e in leaders:
            ax.annotate(e.detail, (e.t, lane), textcoords="offset points", xytext=(3, 6), fontsize=7)
    for e in events:
        if e.kind == "action":
            ax.axvline(e.t, color="grey", linestyle="--", linewidth=0.8)
            ax.text(e.t, len(gids) - 0.4, e.detail, rotation=90, fontsize=7, va="top", ha="right")
    ax.set_yticks(range(len(gids)), ["controller" if g == 0 else f"group {g}" for g in gids])
    ax.set_xlim(0, end)
    ax.set_ylim(-0.6, max(1, len(gids)) - 0.2)
    ax.set_xlabel("seconds  (dot: a new leader; orange: shards moving; dashed: what we did)")
    return fig


# --------------------------------------------------------------------------------------------------
# Recorded clients for the checker
# --------------------------------------------------------------------------------------------------


class HistoryClients:
    """``n`` client threads, each with its own clerk, doing a seeded mix of get / put / append on a
    few shared keys until :meth:`stop`; every operation goes through one :class:`Recorder` (an
    operation that fails or times out is recorded with an unknown outcome, as the checker requires).
    Inputs are ``("get", key)``, ``("put", key, value)`` and ``("append", key, value)``, as
    :class:`linearizability.KVModel` reads them."""

    def __init__(self, kv: Any, n: int, keys: Sequence[str], seed: int = 1) -> None:
        self.kv, self.keys, self.rec = kv, list(keys), Recorder()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i, seed + i), daemon=True)
                         for i in range(n)]
        self.errors = 0

    def start(self) -> HistoryClients:
        for t in self._threads:
            t.start()
        return self

    def _run(self, i: int, seed: int) -> None:
        rng = random.Random(seed)
        ck = self.kv.clerk()
        n = 0
        while not self._stop.is_set():
            key = rng.choice(self.keys)
            kind = rng.choice(("get", "put", "append", "append"))
            value = f"{i}.{n} "
            n += 1
            try:
                if kind == "get":
                    with self.rec.operation(i, ("get", key)) as op:
                        op.output = ck.get(key, timeout=OP_TIMEOUT_S)
                elif kind == "put":
                    with self.rec.operation(i, ("put", key, value)):
                        ck.put(key, value, timeout=OP_TIMEOUT_S)
                else:
                    with self.rec.operation(i, ("append", key, value)):
                        ck.append(key, value, timeout=OP_TIMEOUT_S)
            except Exception:  # recorded with an unknown outcome by the recorder
                self.errors += 1
                self._stop.wait(0.05)

    def stop(self) -> int:
        """Stop the clients; how many operations were recorded."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)
        return len(self.rec.history())


# --------------------------------------------------------------------------------------------------
# A crash
# --------------------------------------------------------------------------------------------------


def kill_leader(kv: Any, gid: int) -> str:
    """Kill the Ray actor of group ``gid``'s current leader (as a crashed process: no goodbye, its
    memory lost); returns a line saying who was killed. The survivors elect a new leader; where a node
    free of the group's replicas exists, the group also replaces the dead replica (see
    docs/cluster-operations.md)."""
    import ray

    status = kv.status()
    group = status.group(gid)
    if group is None or group.leader is None:
        raise LookupError(f"group {gid} has no known leader right now: wait for one and try again")
    info = kv.info.group(gid)
    slot = info.peers.index(group.leader) if info.peers else group.leader
    ray.kill(info.replicas[slot], no_restart=True)
    return (f"killed P{group.leader} (slot {slot}, {info.names[slot]}), "
            f"leader of group {gid} in term {group.term}")
