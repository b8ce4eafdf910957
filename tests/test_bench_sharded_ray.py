"""benchmarks/sharded_scale.py and benchmarks/reconfig_timeline.py in their quick modes, on one multi-node
``ray.cluster_utils.Cluster`` (a head node without CPUs and 4 worker nodes; Ray declares a silent node
dead after about 2 s), in this order: the scale run (1 and 2 groups), then the timeline (from 1 group), whose
node loss leaves the cluster a node short. Each writes its JSON and PNG; the figures' shape is checked
here, their values are the benchmarks' (docs/benchmarks.md)."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# appended, not prepended: benchmarks/kvraft.py must not shadow the kvraft package for later tests
sys.path.append(str(Path(__file__).resolve().parent.parent / "benchmarks"))

import reconfig_timeline
import sharded_scale
from sharded_load import FAST_NODE_DEATH
from test_multinode import ray_cluster

pytestmark = [pytest.mark.ray, pytest.mark.timeout(240)]

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[Any, list[Any]]]:
    with ray_cluster(4, FAST_NODE_DEATH, namespace="raykv-bench-tests") as made:
        yield made


def test_sharded_scale_quick_measures_each_group_and_its_cpu(
        cluster: tuple[Any, list[Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    js, png = tmp_path / "scale.json", tmp_path / "scale.png"
    assert sharded_scale.main(["--quick", "--groups", "1", "2", "--json", str(js), "--plot", str(png)],
                              cluster=cluster) == 0
    out = capsys.readouterr().out
    print(out)
    data = json.loads(js.read_text())
    rows = data["rows"]
    assert [r["groups"] for r in rows] == [1, 2]
    for r in rows:
        assert r["cores"] == len(os.sched_getaffinity(0)) and r["nodes"] == 4
        assert len(r["per_group"]) == r["groups"] and r["callers"] == 8 * r["groups"]
        assert sorted(s for g in r["per_group"] for s in g["shards"]) == list(range(12))
        for g in r["per_group"]:
            assert g["ops"] > 0 and g["cpu_us_per_op"] > 0 and g["p50_ms"] <= g["p99_ms"]
        assert r["ops"] == sum(g["ops"] for g in r["per_group"]) and r["failures"] == 0
        assert r["cluster_cores"] > 0 and r["cluster_processes"] > 10  # raylets, GCS, the replicas
    assert data["prediction"]["linear"][1]["ops_per_s"] == pytest.approx(2 * rows[0]["ops_per_s"])
    assert "cannot grow much" in out and "| 2 | 4 | " in out
    assert png.read_bytes()[:8] == PNG


def test_reconfig_timeline_quick_marks_join_leave_and_a_replaced_node(
        cluster: tuple[Any, list[Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    js, png = tmp_path / "timeline.json", tmp_path / "timeline.png"
    argv = ["--quick", "--groups", "1", "--json", str(js), "--plot", str(png)]
    assert reconfig_timeline.main(argv, cluster=cluster) == 0
    print(capsys.readouterr().out)
    data = json.loads(js.read_text())
    labels = [re.sub(r"g\d+", "gN", e["label"]) for e in data["events"]]   # the new group is g2 here
    order = ["join gN", "gN joined", "settled", "leave gN", "gN removed", "node lost", "replica found dead",
             "replaced"]
    assert [next(i for i, lab in enumerate(labels) if lab.startswith(o)) for o in order] == list(range(8))
    assert [e["t"] for e in data["events"]] == sorted(e["t"] for e in data["events"])
    assert data["replacements"] and all(r["outcome"] == "done" for r in data["replacements"])
    series = data["intervals"]
    assert [iv["t"] for iv in series] == pytest.approx([i * 0.25 for i in range(len(series))])
    assert sum(iv["ops"] for iv in series) == sum(p["ops"] for p in data["phases"]) > 0
    assert data["phases"][-1]["name"].startswith("replaced") and data["phases"][-1]["ops"] > 0
    assert png.read_bytes()[:8] == PNG
