"""Placement of a kvraft group's replicas (:func:`kvraft.start_group` through the shared group shell,
:mod:`actors.service_group`, and :mod:`actors.placement`), on Ray.

On a cluster with enough nodes every replica runs on a node of its own (a STRICT_SPREAD placement
group), asked of each actor where it runs, and its durable storage is a directory the replica made on
its node; on a single-node runtime the replicas are packed with a logged warning and the group works
as before. A placement for another group size is refused before anything starts, and ``stop()``
gives the placement back and removes the temporary storage it made.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import ray
from ray.cluster_utils import Cluster
from test_multinode import _storage_dir, cluster  # noqa: F401  (the multi-node cluster fixture)

import kvraft
from actors import placement
from actors.placement import nodes_of

pytestmark = [pytest.mark.ray, pytest.mark.timeout(240)]

OP_TIMEOUT_S = 20.0


def _use(group: kvraft.KVGroup) -> None:
    ck = group.clerk()
    ck.put("k", "v", timeout=OP_TIMEOUT_S)
    ck.append("k", "w", timeout=OP_TIMEOUT_S)
    assert ck.get("k", timeout=OP_TIMEOUT_S) == "vw"


def test_single_node_packs_with_a_warning(ray_session: None, caplog: pytest.LogCaptureFixture,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(placement, "_warned_single_node", False)
    with caplog.at_level(logging.WARNING, logger="raykv.placement"):
        group = kvraft.start_group(3, name="kv-packed")
    try:
        warnings = [r.getMessage() for r in caplog.records if r.name == "raykv.placement"]
        assert len(warnings) == 1 and "kv-packed" in warnings[0] and "share nodes" in warnings[0], warnings
        assert group.placement is not None and group.placement.mode == placement.PACKED
        assert not group.placement.spread and group.placement.placement_group is None
        here = ray.get_runtime_context().get_node_id()
        assert group.nodes == [here] * 3 == nodes_of(group.replicas)
        _use(group)
        data_dir = group.data_dir
        assert data_dir is not None and any(data_dir.rglob("raft.wal"))
    finally:
        group.stop()
    assert group.placement.released and not data_dir.exists()
    with pytest.raises(ValueError, match="the placement is for 3 replicas, not 5"):
        kvraft.start_group(5, placement=placement.place_group(3, name="wrong-size", strategy="pack"))


def test_replicas_on_distinct_nodes(cluster: tuple[Cluster, list[Any]]) -> None:  # noqa: F811
    _, workers = cluster
    worker_ids = {w.node_id for w in workers}
    group = kvraft.start_group(3, name="kv-spread")
    try:
        assert group.placement is not None and group.placement.spread
        where = nodes_of(group.replicas)
        assert len(set(where)) == 3 and set(where) <= worker_ids, \
            f"replicas run on {where}, not on 3 distinct worker nodes"
        assert list(where) == group.nodes
        data_dir = group.data_dir
        assert data_dir is not None
        for i, r in enumerate(group.replicas):
            d = _storage_dir(r)
            assert Path(d) == data_dir / f"replica{i}", d
        _use(group)
        rows = group.status()
        assert [row["replica"] for row in rows] == [0, 1, 2] and all(row["alive"] for row in rows)
    finally:
        group.stop()
    assert group.placement.released
    assert not data_dir.exists(), "stop() removes the temporary storage on every node"
