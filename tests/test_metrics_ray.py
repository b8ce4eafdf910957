"""Replica metrics on Ray: a kvraft group and a controller group take writes; their figures show in
``status()`` and ``KVGroup.metrics()``, and every replica's ``ray.util.metrics`` objects received
exactly those figures (what the exporter sent, checked against the accumulator; the Ray runtime of the
tests has no metrics agent to scrape, see docs/ray-layer.md, "Metrics")."""

from __future__ import annotations

from typing import Any

import pytest
import ray

from actors.metrics import COUNTERS, HISTOGRAMS

pytestmark = pytest.mark.ray


def _check_exported(replica: Any, service: str) -> dict[str, Any]:
    """The replica's report; asserts that its Ray metrics received exactly its figures."""
    report = ray.get(replica.metrics_report.remote(), timeout=30)
    assert report["tags"]["service"] == service
    exported, figures = report["exported"], report["figures"]
    assert exported is not None, "a replica inside Ray exports its metrics"
    for name in COUNTERS:
        assert exported[name] == figures[name], (name, exported, figures)
    for name in HISTOGRAMS:
        assert exported[name]["buckets"] == figures[name]["buckets"], name
        assert exported[name]["sum"] == pytest.approx(figures[name]["sum"]), name
    modules = ray.get(replica.__ray_call__.remote(
        lambda self: sorted({type(m).__module__ for m in (*self._exporter.counters.values(),
                                                          *self._exporter.histograms.values())})), timeout=30)
    assert modules == ["ray.util.metrics"]
    return report


def test_a_kv_group_and_a_controller_show_their_metrics(ray_session: None) -> None:
    import kvraft
    import shardctrler

    writes = 60
    with kvraft.start_group(3, storage="memory", maxraftstate=3_000) as group:
        ck = group.clerk()
        for k in range(writes):
            ck.put(f"k{k % 5}", "v" * 40)
        leader = group.leader()
        rows = group.status()
        assert all("metrics" in r for r in rows)
        lead = rows[leader]["metrics"]
        assert lead["ops_applied"] >= writes and lead["commit_latency"]["count"] >= 1
        assert 0 < lead["commit_latency"]["p50"] < 1.0, lead["commit_latency"]
        figures = group.metrics()
        assert figures["replicas"] == 3 and figures["ops_applied"] >= writes
        assert figures["leader_changes"] >= 1 and figures["elections_started"] >= 1
        assert figures["snapshots_taken"] >= 1 and figures["last_snapshot_bytes"] > 0
        for r in group.replicas:
            report = _check_exported(r, "kvraft")
            assert report["tags"]["group"] == group.name and report["exported"]["calls"] > 0

    with shardctrler.start_group(3, storage="memory") as ctrl:
        ctrl.clerk().join({1: ["a", "b", "c"]})
        rows = ctrl.status()
        assert max(r["metrics"]["ops_applied"] for r in rows) >= 1
        assert sum(r["metrics"]["leader_changes"] for r in rows) >= 1
        _check_exported(ctrl.replicas[ctrl.leader()], "shardctrler")
