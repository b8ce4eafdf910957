"""The sharded service on a real multi-node Ray cluster (``ray.cluster_utils.Cluster``: a head node with
no CPUs and three worker nodes, each its own raylet and worker processes).

One test, in the order a person would check it: each group's replicas run on distinct nodes (asked of
each actor: where do you run?) and each replica's storage directory was made by the replica itself;
then clients write and read while one worker node is killed; every shard stays available afterwards;
and the whole recorded history is linearizable, to a definite verdict.

Each test gets a cluster of its own (a test kills one of its nodes); it replaces the test session's
embedded Ray runtime for the length of the test, and the session's runtime is started again afterwards
(as ``tests/conftest.py`` starts it).
"""

from __future__ import annotations

import os
import random
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import ray
from ray.cluster_utils import Cluster

import raykv
from actors.placement import nodes_of
from linearizability import KVModel, Recorder, Verdict, check
from raykv.torture_check import token
from shardctrler.config import key2shard

NSHARDS = 10
CLIENTS = 3
OP_TIMEOUT_S = 20.0
#: clients run this long before the node is killed, and this long after
BEFORE_S, AFTER_S = 3.0, 5.0
CHECK_TIMEOUT_S = 60.0


#: what every node of the test clusters gets (small object stores, no dashboard)
NODE_ARGS: dict[str, Any] = {"object_store_memory": 80 * 1024 * 1024, "include_dashboard": False}


@contextmanager
def ray_cluster(workers: int = 3, system_config: dict[str, Any] | None = None,
                namespace: str = "raykv-multinode") -> Iterator[tuple[Cluster, list[Any]]]:
    """A ``Cluster`` of a head node without CPUs and ``workers`` worker nodes of 1 CPU each, with this
    process connected to it (``system_config``: Ray's, e.g. how fast a dead node is noticed); the test
    session's runtime is stopped meanwhile and started again afterwards."""
    had_session = ray.is_initialized()
    if had_session:
        ray.shutdown()
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
        if had_session:  # the session's runtime, as tests/conftest.py makes it
            ray.init(address="local", num_cpus=int(os.environ.get("RAYKV_TEST_CPUS", "2")),
                     include_dashboard=False, logging_level="WARNING", log_to_driver=True,
                     namespace="raykv-tests")


@pytest.fixture
def cluster() -> Iterator[tuple[Cluster, list[Any]]]:
    with ray_cluster(3) as made:
        yield made


def _storage_dir(actor: Any) -> str:
    def where(self: Any) -> str:
        return str(self.storage.directory) if self.storage is not None else ""

    return ray.get(actor.__ray_call__.remote(where), timeout=30)


def _keys(nshards: int) -> tuple[list[str], list[str]]:
    """Two keys per shard for the clients, and one more per shard (index = shard) for probes."""
    keys: list[str] = []
    probes: list[str] = []
    for shard in range(nshards):
        *two, probe = [k for k in (f"k{j}" for j in range(10_000)) if key2shard(k, nshards) == shard][:3]
        keys += two
        probes.append(probe)
    return keys, probes


class _Clients:
    """``clients`` threads, each with its own clerk, doing random gets, puts and appends on a few keys
    per shard until stopped; every operation is recorded (an operation that fails is recorded with an
    unknown outcome, which the checker allows either way). Every value written is a unique token
    (:func:`raykv.torture_check.token`), so the final values say which writes were applied."""

    def __init__(self, kv: Any, keys: list[str], rec: Recorder, seed: int, clients: int = CLIENTS) -> None:
        self.rec, self.keys = rec, keys
        self.done = threading.Event()
        self.ops = [0] * clients
        #: when each operation completed (``time.monotonic()``), successful or not
        self.done_at: list[float] = []
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(i, kv.clerk(), seed + i), daemon=True)
                        for i in range(clients)]
        for t in self.threads:
            t.start()

    def _run(self, i: int, ck: Any, seed: int) -> None:
        rng = random.Random(seed)
        n = 0
        while not self.done.is_set():
            key = rng.choice(self.keys)
            r = rng.random()
            try:
                if r < 0.4:
                    with self.rec.operation(i, ("get", key)) as op:
                        op.output = ck.get(key, timeout=OP_TIMEOUT_S)
                elif r < 0.6:
                    with self.rec.operation(i, ("put", key, token(i, n))):
                        ck.put(key, token(i, n), timeout=OP_TIMEOUT_S)
                else:
                    with self.rec.operation(i, ("append", key, token(i, n))):
                        ck.append(key, token(i, n), timeout=OP_TIMEOUT_S)
            except Exception as exc:  # recorded as unknown; the test fails on it below
                self.failures.append(f"client {i}: {type(exc).__name__}: {exc}")
            n += 1
            self.ops[i] = n
            self.done_at.append(time.monotonic())

    def stop(self, deadline_s: float = OP_TIMEOUT_S + 10) -> None:
        self.done.set()
        for t in self.threads:
            t.join(deadline_s)
            assert not t.is_alive(), "a client did not finish its last operation in time"


def _assert_linearizable(history: list[Any]) -> None:
    """Check ``history`` to a definite verdict and require it linearizable."""
    t = time.monotonic()
    result = check(history, KVModel(), timeout=CHECK_TIMEOUT_S)
    print(f"{len(history)} operations: {result.verdict} in {time.monotonic() - t:.2f} s")
    assert result.verdict is Verdict.LINEARIZABLE, f"history: {result.verdict}"


def _stop_service(kv: Any, clients: _Clients | None) -> None:
    """Stop the clients and the service, and remove its data root (this machine's nodes share one disk,
    so the dead node's part is removed too)."""
    if clients is not None:
        clients.done.set()
    root = kv.info.data_root
    left = kv.stop()
    print(f"stopped; not removed (their node is gone): {left}")
    if root is not None:
        shutil.rmtree(root, ignore_errors=True)


def test_groups_on_distinct_nodes_survive_losing_a_node(cluster: tuple[Cluster, list[Any]]) -> None:
    c, workers = cluster
    t0 = time.monotonic()
    worker_ids = {w.node_id for w in workers}
    kv = raykv.start_sharded("multinode", groups=2, replicas=3, nshards=NSHARDS, placement="strict")
    clients: _Clients | None = None
    try:
        print(f"started in {time.monotonic() - t0:.1f} s: {kv!r}")
        info = kv.info
        # 1. every group (the controller too) on three distinct worker nodes, as the actors report it
        for g in (info.ctrler, *info.groups):
            where = nodes_of(g.replicas)
            assert len(set(where)) == 3 and set(where) <= worker_ids, \
                f"group {g.name}: replicas run on {where}, not on 3 distinct worker nodes"
            assert tuple(where) == g.nodes and g.placement.spread
            # its storage: a directory under the service's root, opened by the replica on its node
            for i, r in enumerate(g.replicas):
                d = _storage_dir(r)
                assert d.startswith(f"{info.data_root}/") and d.endswith(f"replica{i}"), d
        # the registry (what attach() and every re-read of the layout need) runs on the head node
        registry_node = ray.get(kv._registry.node_id.remote(), timeout=30)
        head_id = c.head_node.node_id
        print(f"registry on {registry_node[:8]} (head {head_id[:8]}); workers {[w[:8] for w in worker_ids]}")
        assert registry_node == head_id, f"the registry runs on {registry_node}, not on the head node"
        # 2. clients run; the node of group 1's leader is killed under them
        keys, probes = _keys(NSHARDS)
        rec = Recorder()
        clients = _Clients(kv, keys, rec, seed=random.randrange(2**31))
        time.sleep(BEFORE_S)  # let the clients run before the failure (not a synchronisation)
        g1 = kv.status().group(1)
        assert g1 is not None and g1.leader is not None
        victim_id = info.group(1).nodes[g1.leader]  # type: ignore[union-attr]
        victim = next(w for w in workers if w.node_id == victim_id)
        t_kill = time.monotonic()
        c.remove_node(victim, allow_graceful=False)
        time.sleep(AFTER_S)
        t_after = time.monotonic()
        # 3. every shard answers a write and a read (on a key of its own), recorded like the rest
        ck = kv.clerk()
        for shard, key in enumerate(probes):
            with rec.operation("probe", ("put", key, f"probe{shard}")):
                ck.put(key, f"probe{shard}", timeout=OP_TIMEOUT_S)
            with rec.operation("probe", ("get", key)) as op:
                op.output = ck.get(key, timeout=OP_TIMEOUT_S)
            assert op.output == f"probe{shard}"
        t_probed = time.monotonic()
        clients.stop()
        done = sorted(clients.done_at)
        before_kill = sum(t < t_kill for t in done)
        after_kill = sum(t_kill <= t < t_after for t in done)
        later = [t for t in done if t >= t_kill]
        gap = max(b - a for a, b in zip([t_kill, *later], later, strict=False)) if later else float("inf")
        print(f"{len(done)} client operations: {before_kill} before the kill, {after_kill} in the "
              f"{AFTER_S:g} s after it (longest wait for the next completion after the kill: {gap:.2f} s); "
              f"every shard answered a put and a get {t_probed - t_kill:.1f} s after the kill")
        assert not clients.failures, f"operations failed: {clients.failures[:5]}"
        assert after_kill > 0, "no client operation completed after the node was killed"
        # 4. each group lost exactly one replica and has a leader on a live node
        st = kv.status()
        print(st.format())
        for g in (st.ctrler, *st.groups):
            assert g.up == 2 and g.leader is not None, f"group {g.name}: {g.roles}"
            assert g.nodes[g.leader] != victim_id
        assert st.settled and sorted(s for g in st.groups for s in g.owned) == list(range(NSHARDS))
        # 5. the history is linearizable, decided
        _assert_linearizable(rec.history())
    finally:
        _stop_service(kv, clients)
    print(f"test took {time.monotonic() - t0:.1f} s")
