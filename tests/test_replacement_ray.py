"""Replacing lost replicas on a real multi-node Ray cluster (issue 13 item 4), and a node that joins.

A ``ray.cluster_utils.Cluster`` of a head node without CPUs and four worker nodes (the fixture of
``tests/test_multinode.py``, with Ray told to declare a silent node dead after about 2 s instead of
about 15 s). A sharded service (a controller and 2 groups of 3 replicas, each group on 3 distinct
nodes) serves clients that record their history. The worker node that holds replicas of the most groups
is killed; then, in order:

1. every group (the controller included) gets back to 3 voting members, each on its own live node,
   without the driver doing anything: each group's leader replaces its lost replica (the time from the
   kill to the last group at full strength is printed); ``status()`` shows each replacement;
2. the clerks made before the kill keep working (they find the replacements by name);
3. a new node joins, a new group is added and shards move onto it;
4. every acknowledged write is in the final values, and the whole history (final reads included) is
   linearizable, to a definite verdict.

On both transports that replace lost replicas: the stream transport (the default: the replacement
opens a listener of its own, its address reaches the members through ``add_peer`` and the clerks by
asking its actor) and the direct one.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
import ray
from test_multinode import (
    NODE_ARGS,
    OP_TIMEOUT_S,
    _assert_linearizable,
    _Clients,
    _keys,
    _stop_service,
    ray_cluster,
)

import raykv
from actors.placement import nodes_of
from linearizability import Recorder
from raykv.torture_check import lost_writes

pytestmark = [pytest.mark.ray, pytest.mark.timeout(240)]

NSHARDS = 10
#: Ray declares a node dead once it missed this many health checks of this period (about 2 s)
FAST_NODE_DEATH: dict[str, Any] = {"health_check_initial_delay_ms": 1000, "health_check_period_ms": 500,
                                   "health_check_failure_threshold": 4}
FULL_STRENGTH_S = 60.0

T = TypeVar("T")


def _until(what: str, cond: Callable[[], T | None], timeout: float, every: float = 0.2) -> T:
    """Poll ``cond`` until it returns something truthy (returned); fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


@pytest.mark.parametrize("transport", ["stream", "direct"])
def test_lost_replicas_are_replaced_and_a_new_node_takes_a_new_group(transport: str) -> None:
    t0 = time.monotonic()
    with ray_cluster(4, FAST_NODE_DEATH, namespace="raykv-replace") as (c, workers):
        t_cluster = time.monotonic() - t0
        kv = raykv.start_sharded("replace", groups=2, replicas=3, nshards=NSHARDS, placement="strict",
                                 transport=transport)
        clients: _Clients | None = None
        try:
            info = kv.info
            groups = (info.ctrler, *info.groups)
            t_service = time.monotonic() - t0 - t_cluster
            print(f"cluster in {t_cluster:.1f} s, service in {t_service:.1f} s: {kv!r}")
            # the victim: the worker node holding replicas of the most groups (with 3 groups of 3 on 4
            # nodes, one node holds a replica of every group)
            hits = {w.node_id: [g.gid for g in groups if w.node_id in g.nodes] for w in workers}
            victim = max(workers, key=lambda w: (len(hits[w.node_id]), w.node_id))
            hit = hits[victim.node_id]
            live = {w.node_id for w in workers if w is not victim}
            before = kv.status(timeout=10)
            if transport == "stream":  # every replica listens on its own node's address
                for g in (before.ctrler, *before.groups):
                    assert len(g.addresses) == 3 and None not in g.addresses, g
            keys, probes = _keys(NSHARDS)
            rec = Recorder()
            clients = _Clients(kv, keys, rec, seed=random.randrange(2**31))
            _until("30 client operations before the kill", lambda: sum(clients.ops) >= 30, 30)

            # 1. a node dies; every group gets back to full strength on the live nodes by itself
            t_kill, wall_kill = time.monotonic(), time.time()
            c.remove_node(victim, allow_graceful=False)
            full_at: dict[int, float] = {}
            last: list[Any] = []

            def everyone_full() -> Any:
                st = kv.status(timeout=5)
                last[:] = [st]
                for g in (st.ctrler, *st.groups):
                    done = all(r.outcome != "in progress" for r in g.replacements)
                    if g.gid not in full_at and g.full_strength and done and set(g.nodes) <= live:
                        full_at[g.gid] = time.monotonic() - t_kill
                return st if len(full_at) == len(groups) else None

            try:
                st = _until("every group back at 3 voters on live nodes", everyone_full, FULL_STRENGTH_S)
            except AssertionError:
                for g in (last[0].ctrler, *last[0].groups) if last else ():
                    print(f"group {g.gid}: voters {g.voters} learners {g.learners} peers {g.peers} "
                          f"roles {g.roles} replacing: {g.replacing}; {g.replacements}")
                raise
            t_full = max(full_at.values())
            print(f"killed node {victim.node_id[:8]} (replicas of groups {hit}); every group at full "
                  f"strength {t_full:.1f} s later (per group: "
                  f"{', '.join(f'{gid}: {s:.1f} s' for gid, s in sorted(full_at.items()))})")
            print(st.format())
            assert hit == sorted(hit) and 0 in hit and len(hit) == 3, hits  # every group lost one
            kv._refresh()
            for g, gs in zip((kv.info.ctrler, *kv.info.groups), (st.ctrler, *st.groups), strict=True):
                where = nodes_of(g.replicas)
                assert len(set(where)) == 3 and set(where) <= live and tuple(where) == g.nodes, \
                    f"group {g.gid}: replicas run on {where}, registry says {g.nodes}"
                assert sorted(gs.voters) == sorted(g.peers) and not gs.learners, gs
                done = [r for r in g.replacements if r.outcome == "done"]
                assert len(done) == 1 and done[0].old_node == victim.node_id, g.replacements
                assert done[0].new_node in live and done[0].new_peer == 3 and done[0].finished is not None
                assert g.peers[done[0].slot] == 3
                if transport == "stream":  # the replacement listens at an address of its own
                    old_addr = next(b for b in (before.ctrler, *before.groups) if b.gid == g.gid).addresses
                    slot = done[0].slot
                    assert None not in gs.addresses and gs.addresses[slot] != old_addr[slot], \
                        (old_addr, gs.addresses)
                r = done[0]
                assert r.finished is not None
                print(f"group {g.gid}: P{r.old_peer} found dead {r.detected - wall_kill:.1f} s after the "
                      f"kill, P{r.new_peer} spawned at {r.started - wall_kill:.1f} s, replaced at "
                      f"{r.finished - wall_kill:.1f} s")

            # 2. the clients (their clerks made before the kill) go on; 3. a new node and a new group
            n_full = sum(clients.ops)
            _until("20 more operations after full strength", lambda: sum(clients.ops) >= n_full + 20, 30)
            new_node = c.add_node(num_cpus=1, **NODE_ARGS)
            c.wait_for_nodes(timeout=60)
            gid = kv.add_group()
            cfg = kv.wait_settled(timeout=60)
            g3 = kv.info.group(gid)
            assert g3 is not None
            where3 = nodes_of(g3.replicas)
            moved = [s for s, g in enumerate(cfg.shards) if g == gid]
            print(f"node {new_node.node_id[:8]} joined; group {gid} on nodes {[w[:8] for w in where3]} "
                  f"serves shards {moved}; configuration {cfg.num}")
            assert cfg.counts().get(gid, 0) >= 3, f"shards did not move to group {gid}: {cfg}"
            assert len(set(where3)) == 3 and set(where3) <= live | {new_node.node_id}, where3
            n_moved = sum(clients.ops)
            _until("20 more client operations after the move", lambda: sum(clients.ops) >= n_moved + 20, 30)

            # 4. nothing acknowledged is lost, and the history is linearizable
            clients.stop()
            assert not clients.failures, f"operations failed: {clients.failures[:5]}"
            ck = kv.clerk()  # a clerk made now: every shard answers a write and a read
            for shard, key in enumerate(probes):
                with rec.operation("probe", ("put", key, f"probe{shard};")):
                    ck.put(key, f"probe{shard};", timeout=OP_TIMEOUT_S)
            finals: dict[str, str] = {}
            for key in keys + probes:
                with rec.operation("final", ("get", key)) as op:
                    op.output = ck.get(key, timeout=OP_TIMEOUT_S)
                finals[key] = op.output
            history = rec.history()
            lost = lost_writes(history, finals)
            print(f"{len(history)} operations; {lost.checked} acknowledged writes looked up: "
                  f"{len(lost.lost)} lost, {len(lost.duplicated)} duplicated")
            assert lost.ok, f"lost {lost.lost[:5]}, duplicated {lost.duplicated[:5]}"
            _assert_linearizable(history)
        finally:
            _stop_service(kv, clients)
            # nothing of the service is left running (replacements included; killing is asynchronous)
            def service_gone() -> bool:
                names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
                return not [n for n in names if n.startswith("replace")]

            _until("every actor of the service gone", service_gone, 20)
    print(f"test took {time.monotonic() - t0:.1f} s")
