"""What benchmarks/sharded_scale.py and benchmarks/reconfig_timeline.py share: a multi-node Ray cluster
on this machine, a closed-loop load on a sharded service recorded operation by operation, and CPU
accounting of the service's actors, this process and the machine.

- :func:`local_cluster`: a ``ray.cluster_utils.Cluster`` of a head node without CPUs and ``workers``
  worker nodes (each its own raylet and worker processes), this process connected to it;
- :class:`Load`: ``len(keys_per_caller)`` coroutines sharing one asyncio clerk in a thread of their
  own, each putting (``put_fraction``) or getting a random key of its own list and issuing the next
  operation as soon as the last one answered; every completion is recorded as
  ``(end time, latency, tag)`` on the monotonic clock (the tag says which group a caller loads);
- :func:`actor_cpu_s` (a process's CPU seconds, asked of the actor itself, so it works on any node),
  :func:`machine_busy_s` (``/proc/stat``: every process of the machine).

Invariant: no function here changes the service; the load only reads and writes its own keys.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: what every node of the benchmark clusters gets (small object stores, no dashboard)
NODE_ARGS: dict[str, Any] = {"object_store_memory": 80 * 1024 * 1024, "include_dashboard": False}
#: Ray declares a silent node dead after about 2 s (4 missed checks of 500 ms) instead of about 15 s,
#: as in tests/test_replacement_ray.py
FAST_NODE_DEATH: dict[str, Any] = {"health_check_initial_delay_ms": 1000, "health_check_period_ms": 500,
                                   "health_check_failure_threshold": 4}


@contextmanager
def local_cluster(workers: int, system_config: dict[str, Any] | None = None,
                  namespace: str = "raykv-bench") -> Iterator[tuple[Any, list[Any]]]:
    """A ``Cluster`` of a head node with no CPUs and ``workers`` worker nodes of 1 CPU each (replicas
    ask for none, so the count only shapes placement), with this process connected; shut down on exit."""
    import ray
    from ray.cluster_utils import Cluster

    if workers < 1:
        raise ValueError(f"need at least 1 worker node, got {workers}")
    head: dict[str, Any] = {"num_cpus": 0, **NODE_ARGS}
    if system_config:
        head["_system_config"] = system_config
    c = Cluster(initialize_head=True, head_node_args=head)
    try:
        nodes = [c.add_node(num_cpus=1, **NODE_ARGS) for _ in range(workers)]
        c.wait_for_nodes(timeout=60)
        ray.init(address=c.address, namespace=namespace, logging_level="WARNING")
        yield c, nodes
    finally:
        ray.shutdown()
        c.shutdown()


def keys_by_shard(nshards: int, per_shard: int, prefix: str = "k") -> list[list[str]]:
    """``per_shard`` keys for each shard under the hash mapping (``shardctrler.key2shard``), in order."""
    from shardctrler.config import key2shard

    out: list[list[str]] = [[] for _ in range(nshards)]
    i = 0
    while min(len(ks) for ks in out) < per_shard:
        k = f"{prefix}{i}"
        ks = out[key2shard(k, nshards)]
        if len(ks) < per_shard:
            ks.append(k)
        i += 1
    return out


@dataclass(frozen=True)
class Op:
    """One completed operation: when it ended (``time.monotonic``), how long it took, whose it was."""

    end: float
    latency_s: float
    tag: int


class Load:
    """A closed loop of ``len(keys_per_caller)`` callers on one asyncio clerk (made by the caller of
    this constructor, used only on this load's event loop and closed by it), in a thread of its own.

    Caller ``i`` uses ``keys_per_caller[i]`` and records its operations with ``tags[i]``. An
    operation that fails (a timeout: ``op_timeout`` seconds) is recorded in ``failures`` with its end
    time and the caller goes on. ``stop()`` ends the loop and returns once the clerk is closed."""

    def __init__(self, clerk: Any, keys_per_caller: Sequence[Sequence[str]], tags: Sequence[int], *,
                 value_bytes: int = 100, put_fraction: float = 0.5, op_timeout: float = 30.0,
                 seed: int = 1) -> None:
        if len(keys_per_caller) != len(tags) or not keys_per_caller:
            raise ValueError("need one tag per caller and at least one caller")
        if any(not ks for ks in keys_per_caller):
            raise ValueError("every caller needs at least one key")
        self.clerk = clerk
        self.keys, self.tags = [list(k) for k in keys_per_caller], list(tags)
        self.value = "v" * value_bytes
        self.put_fraction, self.op_timeout, self.seed = put_fraction, op_timeout, seed
        self.ops: list[Op] = []
        self.failures: list[tuple[float, int, str]] = []
        self.started = threading.Event()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="load", daemon=True)
        self._thread.start()
        if not self.started.wait(60):
            raise RuntimeError("the load's event loop did not start within 60 s")

    async def _main(self) -> None:
        ck = self.clerk

        async def caller(i: int) -> None:
            rng = random.Random(self.seed * 1000 + i)
            keys, tag = self.keys[i], self.tags[i]
            while not self._stop.is_set():
                key = rng.choice(keys)
                t = time.monotonic()
                try:
                    if rng.random() < self.put_fraction:
                        await ck.put(key, self.value, timeout=self.op_timeout)
                    else:
                        await ck.get(key, timeout=self.op_timeout)
                except TimeoutError as exc:
                    self.failures.append((time.monotonic(), tag, f"{type(exc).__name__}: {exc}"))
                    continue
                end = time.monotonic()
                self.ops.append(Op(end, end - t, tag))

        self.started.set()
        try:
            await asyncio.gather(*(caller(i) for i in range(len(self.keys))))
        except BaseException as exc:
            self.error = exc
        finally:
            with suppress(Exception):
                await ck.close()

    def stop(self, timeout: float = 90.0) -> None:
        """End the loop (each caller finishes its operation in flight); raise what the loop raised."""
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError(f"the load did not stop within {timeout:g} s")
        if self.error is not None:
            raise self.error

    def between(self, t0: float, t1: float) -> list[Op]:
        """The operations that ended in ``[t0, t1)``."""
        return [o for o in list(self.ops) if t0 <= o.end < t1]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-quantile (0..1) by the nearest rank; ``None`` for no values."""
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def actor_cpu_s(actors: Sequence[Any], timeout: float = 30.0) -> list[float]:
    """User + system CPU seconds so far of each actor's process (every thread of it), asked of the
    actor itself through ``__ray_call__`` (the function is pickled by value, so it runs on any node)."""
    import ray

    def cpu(self: Any) -> float:
        return time.process_time()

    return [float(x) for x in ray.get([a.__ray_call__.remote(cpu) for a in actors], timeout=timeout)]


def _stat(pid: str) -> tuple[int, float] | None:
    """(parent pid, user + system CPU seconds) of process ``pid`` from ``/proc``; None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_s(root: int | None = None) -> dict[int, float] | None:
    """CPU seconds so far of ``root`` (default: this process) and of every process descending from it,
    by pid (``/proc``; ``None`` where there is none). A cluster this process started (every raylet,
    GCS and worker process of ``local_cluster``) descends from it; compare two calls by pid, so a
    process that ended between them does not count negatively."""
    root = os.getpid() if root is None else root
    if not Path("/proc/self/stat").exists():
        return None
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(entry)
            if st is not None:
                parent[int(entry)], cpu[int(entry)] = st
    children: dict[int, list[int]] = {}
    for pid, pp in parent.items():
        children.setdefault(pp, []).append(pid)
    out: dict[int, float] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid in cpu and pid not in out:
            out[pid] = cpu[pid]
            todo += children.get(pid, [])
    return out


def tree_delta_s(before: dict[int, float] | None, after: dict[int, float] | None) -> float | None:
    """CPU seconds the process tree used between two :func:`tree_cpu_s` readings (processes present
    in the second; a new one counts from zero)."""
    if before is None or after is None:
        return None
    return sum(max(0.0, c - before.get(pid, 0.0)) for pid, c in after.items())


def machine_busy_s() -> float | None:
    """CPU seconds the whole machine spent busy so far (``/proc/stat``: everything but idle and iowait),
    ``None`` where there is no ``/proc/stat``."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return None
    v = [int(x) for x in first[1:]]
    busy = sum(v[:8]) - v[3] - v[4]  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")
