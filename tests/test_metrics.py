"""Replica metrics without Ray: the pure accumulator (actors/metrics.py), the Ray exporter against
stand-in metric classes (actors/metrics_ray.py), the events a replica derives from its Readies (three
kvraft replicas' Python classes over streams in one asyncio loop), shard moves, and how the sharded
service's status shows them."""

from __future__ import annotations

import asyncio
import functools
import math
import pickle
from typing import Any

import pytest

from actors.metrics import (
    COUNTERS,
    LATENCY_BOUNDS_S,
    Histogram,
    ReplicaMetrics,
    aggregate,
    merged,
    ops_in,
)
from actors.metrics_ray import METRICS, TAG_KEYS, RayExporter
from actors.replica import ReplicaSpec
from actors.stream_auth import new_secret
from kvraft.statemachine import KVStateMachine


def test_histogram_buckets_sums_and_quantiles() -> None:
    h = Histogram((1.0, 2.0, 4.0))
    for v in (0.5, 1.0, 1.5, 2.0, 3.0, 10.0):
        h.observe(v)
    assert h.counts == [2, 2, 1, 1]  # (.., 1], (1, 2], (2, 4], above: Prometheus' le is inclusive
    assert h.sums == [1.5, 3.5, 3.0, 10.0] and h.count == 6 and h.sum == 18.0
    assert h.quantile(0.5) == 1.5  # rank 3 of 6: the first of the (1, 2] bucket's two, halfway up
    assert h.quantile(1.0) == 4.0  # the top bucket answers its lower bound
    assert 0 < h.quantile(0.1) <= 1.0  # type: ignore[operator]
    s = h.summary()
    assert s["count"] == 6 and s["sum"] == 18.0 and s["mean"] == 3.0
    assert s["buckets"] == {1.0: 2, 2.0: 2, 4.0: 1, math.inf: 1}
    assert Histogram((1.0,)).summary()["p50"] is None
    assert pickle.loads(pickle.dumps(s)) == s
    with pytest.raises(ValueError, match="quantile"):
        h.quantile(0)
    for bad in ((), (0.0, 1.0), (2.0, 1.0), (1.0, 1.0)):
        with pytest.raises(ValueError, match="strictly increasing"):
            Histogram(bad)


def test_elections_and_leader_changes_are_derived_from_term_and_role() -> None:
    m = ReplicaMetrics()
    m.reset_role(7, "follower")  # restored from storage in term 7: nothing counted
    assert m.elections_started == m.leader_changes == 0
    m.role(7, "pre_candidate", False)  # a PreVote round starts no election
    m.role(8, "candidate", True)  # campaigned in term 8
    m.role(9, "candidate", True)  # split vote: campaigned again
    m.role(9, "leader", True)
    assert (m.elections_started, m.leader_changes) == (2, 1)
    m.role(9, "leader", True)  # nothing changed
    m.role(10, "follower", False)  # deposed by a higher term: no election of its own
    m.role(11, "leader", True)  # a single-peer group campaigns and wins within one Ready
    assert (m.elections_started, m.leader_changes) == (3, 2)


def test_commit_latency_one_sample_per_leader_ready_and_forgotten_on_role_change() -> None:
    m = ReplicaMetrics()
    m.role(1, "leader", True)
    assert not m.waiting
    m.appended(3, now=10.0)
    m.appended(5, now=10.5)
    assert m.waiting
    m.committed(4, now=11.0)  # only the first Ready's entries are all committed
    assert m.commit_latency.count == 1 and m.commit_latency.sum == 1.0
    m.committed(5, now=12.0)
    assert m.commit_latency.count == 2 and m.commit_latency.sum == 2.5 and not m.waiting
    m.appended(6, now=13.0)
    m.role(2, "follower", False)  # deposed: index 6 may be overwritten by another leader's entry
    m.role(3, "leader", True)
    m.committed(6, now=14.0)
    assert m.commit_latency.count == 2
    m.applied(entries=3, ops=40)
    m.applied(entries=1, ops=0)
    assert (m.entries_applied, m.ops_applied) == (4, 40)


def test_snapshots_shards_and_summary() -> None:
    m = ReplicaMetrics()
    m.snapshot_taken(2_000)
    m.snapshot_installed(50_000)
    m.shards_moved("in", 3)
    m.shards_moved("out", 2)
    with pytest.raises(ValueError, match="'in' or 'out'"):
        m.shards_moved("sideways", 1)
    s = m.summary()
    assert {k: s[k] for k in ("snapshots_taken", "snapshots_installed", "shards_in", "shards_out")} == \
        {"snapshots_taken": 1, "snapshots_installed": 1, "shards_in": 3, "shards_out": 2}
    assert s["last_snapshot_bytes"] == 50_000 and s["snapshot_bytes"]["count"] == 2
    assert s["snapshot_bytes"]["sum"] == 52_000
    assert set(COUNTERS) <= set(s) and pickle.loads(pickle.dumps(s)) == s


def test_ops_in_an_entry() -> None:
    assert ops_in([1, 2, 3], ("batch",)) == 3
    assert ops_in(None, None) == 0  # the leader's no-op
    assert ops_in(True, ("config",)) == 1


def test_aggregate_a_groups_replicas() -> None:
    a, b, c = ReplicaMetrics(), ReplicaMetrics(), ReplicaMetrics()
    for m, ops in ((a, 100), (b, 90), (c, 100)):
        m.applied(ops, ops)
    a.role(1, "candidate", True)
    a.role(1, "leader", True)
    b.role(2, "candidate", True)
    b.role(2, "leader", True)
    b.appended(1, 0.0)
    b.committed(1, 0.003)
    c.snapshot_taken(5_000)
    b.snapshot_installed(7_000)
    g = aggregate([a.summary(), b.summary(), None, c.summary()], leader=1)
    assert g["replicas"] == 3 and g["ops_applied"] == 100
    assert g["elections_started"] == 2 and g["leader_changes"] == 2
    assert g["commit_latency"]["count"] == 1 and g["commit_latency"]["sum"] == 0.003  # the leader's
    assert g["snapshot_bytes"]["count"] == 2 and g["last_snapshot_bytes"] == 7_000
    assert aggregate([a.summary(), b.summary()])["commit_latency"]["count"] == 1  # no leader: most samples
    empty = aggregate([None, None])
    assert empty["replicas"] == 0 and empty["ops_applied"] == 0 and empty["commit_latency"]["count"] == 0
    assert merged([]) is None


class _FakeMetric:
    """Records every call as ray.util.metrics would receive it."""

    made: list[_FakeMetric] = []

    def __init__(self, name: str, description: str = "", boundaries: list[float] | None = None,
                 tag_keys: tuple[str, ...] | None = None) -> None:
        self.name, self.description, self.boundaries, self.tag_keys = name, description, boundaries, tag_keys
        self.tags: dict[str, str] = {}
        self.values: list[float] = []
        _FakeMetric.made.append(self)

    def set_default_tags(self, tags: dict[str, str]) -> _FakeMetric:
        self.tags = dict(tags)
        return self

    def inc(self, value: float = 1.0) -> None:
        assert value > 0, "ray.util.metrics.Counter refuses a non-positive increment"
        self.values.append(value)

    def observe(self, value: float) -> None:
        self.values.append(value)


class _FakeModule:
    Counter = _FakeMetric
    Histogram = _FakeMetric


def test_the_exporter_mirrors_the_accumulator_exactly_and_only_what_changed() -> None:
    _FakeMetric.made = []
    tags = {"service": "kvraft", "group": "kv-1", "replica": "kv-1-0"}
    ex = RayExporter(tags, _FakeModule)
    assert {f.name for f in _FakeMetric.made} == {name for name, _ in METRICS.values()}
    assert all(f.tag_keys == TAG_KEYS and f.tags == tags and f.description for f in _FakeMetric.made)
    lat = ex.histograms["commit_latency"]
    assert lat.name == "raykv_commit_latency_seconds" and lat.boundaries == list(LATENCY_BOUNDS_S)

    m = ReplicaMetrics()
    m.role(1, "candidate", True)
    m.role(1, "leader", True)
    m.applied(10, 250)
    for i, seconds in enumerate((0.0004, 0.0015, 0.0017, 0.003, 7.0)):
        m.appended(i + 1, 0.0)
        m.committed(i + 1, seconds)
    m.snapshot_taken(12_345)
    calls = ex.flush(m)
    assert calls == 5 + 5 + 1  # counters that grew (ops, entries, elections, leaders, snapshots) + samples
    assert ex.counters["ops_applied"].values == [250] and ex.counters["shards_in"].values == []
    assert sorted(lat.values) == pytest.approx([0.0004, 0.0016, 0.0016, 0.003, 7.0])  # bucket means
    assert sum(lat.values) == pytest.approx(m.commit_latency.sum)
    for v, count in ((0.0016, 2),):  # both (0.001, 0.002] samples land in their bucket
        assert sum(1 for x in lat.values if x == pytest.approx(v)) == count
    assert ex.flush(m) == 0  # nothing changed, nothing sent
    m.applied(1, 5)
    assert ex.flush(m) == 2 and ex.counters["ops_applied"].values == [250, 5]

    out = ex.exported()
    fig = m.summary()
    assert all(out[name] == fig[name] for name in COUNTERS)
    for name in ("commit_latency", "snapshot_bytes"):
        assert out[name]["buckets"] == fig[name]["buckets"]
        assert out[name]["sum"] == pytest.approx(fig[name]["sum"])
    assert out["calls"] == calls + 2
    with pytest.raises(ValueError, match="tags"):
        RayExporter({"service": "x"}, _FakeModule)


def test_a_bucket_mean_never_leaves_its_bucket() -> None:
    _FakeMetric.made = []
    ex = RayExporter({"service": "s", "group": "g", "replica": "r"}, _FakeModule)
    m = ReplicaMetrics()
    for _ in range(3):  # three samples exactly on a bound: their float mean may round above it
        m.commit_latency.observe(0.1)
    m.commit_latency.observe(0.1 + 1e-12)
    ex.flush(m)
    values = ex.histograms["commit_latency"].values
    assert values[:3] == [0.1, 0.1, 0.1] and values[3] > 0.1


def _kv_replicas(n: int, maxraftstate: int) -> list[Any]:
    from kvraft.server import KVReplica

    sm = functools.partial(KVStateMachine, maxraftstate)
    return [KVReplica(ReplicaSpec(name=f"kvm-{i}", peer_id=i, peers=tuple(range(n)), state_machine=sm,
                                  seed=300 + i)) for i in range(n)]


def test_three_replicas_derive_their_metrics_from_their_readies() -> None:
    """Writes through an asyncio clerk: every replica counts the operations it applied, the leader
    samples commit latencies, an election made a leader, snapshots were taken with their sizes; a
    restart from storage counts no election of its own; outside a Ray runtime nothing is exported."""
    from kvraft.async_clerk import AsyncClerk
    from kvraft.endpoints import StreamEndpoints

    secret = new_secret()
    writes = 200

    async def main() -> None:
        replicas = _kv_replicas(3, maxraftstate=4_000)
        addresses = [await r.open_stream(secret, "127.0.0.1") for r in replicas]
        for i, r in enumerate(replicas):
            await r.start(1, ("stream", secret, {j: a for j, a in enumerate(addresses) if j != i}))
        endpoints = StreamEndpoints(addresses, secret, tuple(r.spec.name for r in replicas))
        ck = AsyncClerk(endpoints, attempt_timeout=1.0)
        try:
            for k in range(writes):  # one at a time: one commit-latency sample each, at least
                await ck.put(f"k{k % 7}", "v" * 50, timeout=10)
            leader = next(i for i, r in enumerate(replicas) if r.core is not None and r.core.is_leader)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while len({r.core.log.applied for r in replicas}) > 1 and loop.time() < deadline:
                await asyncio.sleep(0.02)
            statuses = [await r.status() for r in replicas]
            figures = [st["metrics"] for st in statuses]
            for f in figures:
                assert f["ops_applied"] >= writes and f["entries_applied"] >= f["ops_applied"] // 10, f
                assert f["snapshots_taken"] + f["snapshots_installed"] >= 1 and f["last_snapshot_bytes"] > 0
            entry_by_entry = {f["ops_applied"] for f in figures if not f["snapshots_installed"]}
            assert len(entry_by_entry) == 1, "every replica that applied entry by entry applied the same log"
            lat = figures[leader]["commit_latency"]  # one sample per write, unless leadership changed
            assert lat["count"] >= 1 and 0 < lat["p50"] < 1.0, lat
            assert sum(f["leader_changes"] for f in figures) >= 1 and figures[leader]["leader_changes"] >= 1
            assert figures[leader]["elections_started"] >= 1
            group = aggregate(figures, leader)
            assert group["ops_applied"] == figures[0]["ops_applied"] and group["commit_latency"] == lat

            report = await replicas[0].metrics_report()
            assert report["tags"] == {"service": "kvraft", "group": "kvm", "replica": "kvm-0"}
            # exported only where a Ray runtime runs (the suite's shared one may run in this process)
            import ray

            if ray.is_initialized():
                assert all(report["exported"][k] == report["figures"][k] for k in COUNTERS), report
            else:
                assert report["exported"] is None

            follower = replicas[(leader + 1) % 3]
            before = follower.metrics.elections_started
            await follower.crash()
            await follower.start(2, ("stream", secret, {j: a for j, a in enumerate(addresses)
                                                        if j != follower.spec.peer_id}))
            await ck.put("after", "restart", timeout=10)
            assert follower.metrics.elections_started == before  # its stored term/vote is not an election
        finally:
            await ck.close()
            await endpoints.aclose()
            for r in replicas:
                await r.crash()
            for r in replicas:
                await r.close_stream()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_shard_group_counts_shards_moved_in_and_out() -> None:
    from shardkv.ops import DELETE, GC_DONE, INSTALL
    from shardkv.server import ShardKVReplica
    from shardkv.statemachine import ShardKVStateMachine

    r = ShardKVReplica(ReplicaSpec(name="svc-g1-0", peer_id=0, peers=(0,), state_machine=functools.partial(
        ShardKVStateMachine, 1), extra={"gid": 1, "ctrlers": ("c-0",), "routing": ("direct",)}))
    r._record((INSTALL, 2, ()), (3, 4))
    r._record((DELETE, 2, (5,)), (5,))
    r._record((GC_DONE, 2, (3,)), (3,))  # the old copy gone: no move of its own
    r._record((INSTALL, 2, ()), ())  # a late duplicate installs nothing
    assert (r.metrics.shards_in, r.metrics.shards_out) == (2, 1)
    assert r.metrics_tags() == {"service": "shardkv", "group": "svc-g1", "replica": "svc-g1-0"}


def test_the_sharded_status_table_shows_each_groups_figures() -> None:
    from raykv.sharded_status import GroupStatus, ServiceStatus

    m = ReplicaMetrics()
    m.applied(12, 1_234)
    m.role(1, "candidate", True)
    m.role(1, "leader", True)
    m.appended(1, 0.0)
    m.committed(1, 0.0042)
    m.shards_moved("in", 5)
    m.snapshot_taken(2_500_000)
    g = GroupStatus(1, "svc-g1", ("leader",), 0, 1, 1, metrics=aggregate([m.summary()], 0))
    ctrler = GroupStatus(0, "svc-ctrler", ("leader",), 0, 1, -1)
    text = ServiceStatus("svc", "ns", 10, "hash", False, None, ctrler, (g,)).format()
    assert "metrics (ops: operations applied" in text
    row = next(line for line in text.splitlines() if line.startswith("   1  ") and "ms" in line)
    assert row.split()[:4] == ["1", "1234", "3.5", "ms"] and "5 / 0" in row and "2.5 MB" in row
    bare = GroupStatus(1, "g", (), None, 0, 1)
    plain = ServiceStatus("svc", "ns", 10, "hash", False, None, ctrler, (bare,))
    assert "metrics (" not in plain.format()
