"""The single-group services on the stream transport, on Ray (issue 14): ``kvraft.start_group`` and
``shardctrler.start_group`` with their default transport (streams) serve clerks (blocking in the
driver, asyncio, and one built inside a Ray task from pickled endpoints), and survive a replica killed
and started again as a new actor (``restart_replica``): its new listener address is republished to
the other replicas (it catches up) and found by the clerks made before (through the replicas' actors).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.timeout(180)]

OP_TIMEOUT_S = 30.0
#: the client id of the probes sent to one server (a client of its own: the clerks' numbers stay theirs)
PROBE_CLIENT = 4242


def _poll(what: str, check: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        time.sleep(0.05)


def _caught_up(group: Any, i: int) -> bool:
    from actors.service_group import ServiceGroup

    rows = ServiceGroup.status(group)  # the shared rows (the controller's status() adds its own)
    leader = [r for r in rows if r["leader"]]
    return bool(leader) and rows[i]["alive"] and rows[i]["applied"] >= leader[0]["commit"]


def _restart_and_check(group: Any, ck: Any, probe: tuple) -> None:
    """Restart the leader as a new actor; the others learn its new address (it catches up), and the
    old clerk's endpoints find it through the replicas."""
    import ray

    i = group.leader()
    old = group.addresses[i]
    group.restart_replica(i)
    assert group.addresses[i] != old, "a new actor listens on a new port"
    st = ray.get(group.replicas[i].status.remote(), timeout=30)
    assert st["transport"] == "stream" and tuple(st["stream"]["address"]) == group.addresses[i]
    _poll(f"replica {i} caught up at its new address", lambda: _caught_up(group, i))
    # the clerk made before the restart: its first call to the moved server fails, the next ones ask
    # the replicas where it listens now and reach it (an answer, whatever it says)
    _poll("the old clerk's endpoints reached the restarted replica",
          lambda: isinstance(ck.endpoints.call(i, probe, 1.0), tuple))
    assert ck.endpoints.addresses[i] == group.addresses[i]


def test_kvraft_on_streams_by_default_survives_a_replica_restart(ray_session: None) -> None:
    import ray

    import kvraft
    from kvraft.clerk import Clerk
    from kvraft.ops import GET

    group = kvraft.start_group(3)
    try:
        assert group.transport == "stream" and group.secret is not None and len(group.addresses) == 3
        rows = group.status()
        assert all(r["alive"] and r["transport"] == "stream" for r in rows)
        ck = group.clerk()
        ck.put("k", "v", timeout=OP_TIMEOUT_S)
        ck.append("k", "w", timeout=OP_TIMEOUT_S)
        assert ck.get("k", timeout=OP_TIMEOUT_S) == "vw"

        async def many() -> int:
            ack = group.async_clerk()
            await asyncio.gather(*(ack.append("a", f"{i};") for i in range(200)))
            assert await ack.get("a", timeout=OP_TIMEOUT_S) == "".join(f"{i};" for i in range(200))
            await ack.close()
            return ack.calls

        assert asyncio.run(many()) < 60

        @ray.remote(num_cpus=0)
        def in_a_task(endpoints: Any) -> str:
            task_ck = Clerk(endpoints)
            task_ck.append("k", "+task", timeout=OP_TIMEOUT_S)
            return task_ck.get("k", timeout=OP_TIMEOUT_S)

        assert ray.get(in_a_task.remote(group.endpoints), timeout=60) == "vw+task"

        _restart_and_check(group, ck, ((GET, "k", None, PROBE_CLIENT, 1),))
        ck.put("after", "restart", timeout=OP_TIMEOUT_S)
        assert group.clerk().get("after", timeout=OP_TIMEOUT_S) == "restart"
        assert ck.get("k", timeout=OP_TIMEOUT_S) == "vw+task"
    finally:
        group.stop()


def test_controller_on_streams_by_default_survives_a_replica_restart(ray_session: None) -> None:
    import shardctrler
    from shardctrler.ops import QUERY

    ctrler = shardctrler.start_group(3)
    try:
        assert ctrler.transport == "stream" and ctrler.secret is not None
        ck = ctrler.clerk()
        assert ck.join({1: ["a", "b", "c"]}, timeout=OP_TIMEOUT_S) == 1
        _restart_and_check(ctrler, ck, ((QUERY, -1, PROBE_CLIENT, 1),))
        assert ck.join({2: ["d", "e", "f"]}, timeout=OP_TIMEOUT_S) == 2
        config = ctrler.clerk().query(timeout=OP_TIMEOUT_S)
        assert config.num == 2 and sorted(config.groups) == [1, 2]
    finally:
        ctrler.stop()
