"""kvraft reads on Ray: ReadIndex (the default) writes nothing to the log; ``read_path="log"`` does;
both read what was written, and a group runs with the services' core rules (PreVote, CheckQuorum, the
leader's no-op).

The linearizability of ReadIndex reads under faults is checked by every history of the reference
suites (tests/test_kvraft_4a.py, tests/test_kvraft_4b.py, tests/test_shardkv_5.py) and, in the core,
by the simulator (tests/test_sim.py).
"""

from __future__ import annotations

import asyncio

import pytest

import kvraft

pytestmark = [pytest.mark.ray, pytest.mark.timeout(120)]


def start_kv_group(read_path: str, storage: str = "memory") -> kvraft.KVGroup:
    """A 3-replica KV group whose servers serve Gets by ``read_path`` (``"index"`` or ``"log"``):
    ``kvraft.start_group`` with the servers' ``read_path`` option (``spec.extra``)."""
    import functools
    import uuid

    from actors.service_group import start_replicas
    from kvraft.group import KVGroup
    from kvraft.server import kv_replica_actor
    from kvraft.statemachine import KVStateMachine

    actor_cls = kv_replica_actor()
    started = start_replicas(3, name=None, default_name=lambda: f"kvreads-{uuid.uuid4().hex[:8]}",
                             actor_cls=lambda i: actor_cls,
                             state_machine=functools.partial(KVStateMachine, -1),
                             storage=storage, transport="direct", extra={"read_path": read_path},
                             identity=True)
    group = KVGroup(started, {})
    group.leader()
    return group


def _leader_status(group: kvraft.KVGroup) -> dict:
    return group.status()[group.leader()]


@pytest.mark.parametrize("read_path", ["index", "log"])
def test_reads_see_the_writes_and_only_the_log_path_writes_entries(ray_session, read_path):
    group = start_kv_group(read_path)
    try:
        ck = group.clerk()
        ck.put("a", "1")
        ck.append("a", "2")
        assert ck.get("a") == "12"  # the clerk's first Get after writes: its session is known
        before = _leader_status(group)["last_index"]

        async def reads() -> list[str]:
            ack = group.async_clerk()
            await ack.put("b", "x")  # open the async clerk's session (through the log)
            mid = _leader_status(group)["last_index"]
            got = await asyncio.gather(*(ack.get("a") for _ in range(50)), *(ack.get("b") for _ in range(50)))
            grew = _leader_status(group)["last_index"] - mid
            assert grew == 0 if read_path == "index" else grew >= 1, (read_path, grew)
            await ack.close()
            return list(got)

        got = asyncio.run(reads())
        assert got == ["12"] * 50 + ["x"] * 50
        after = _leader_status(group)["last_index"]
        if read_path == "index":
            assert after == before + 1, "only the async clerk's put reached the log"
        else:
            assert after >= before + 2
        st = group.status()
        assert all(s["term"] == st[0]["term"] for s in st)
    finally:
        group.stop()


def test_a_bad_read_path_is_refused():
    from actors.replica import ReplicaSpec
    from kvraft.server import KVReplica
    from kvraft.statemachine import KVStateMachine

    with pytest.raises(ValueError, match="read_path"):
        KVReplica(ReplicaSpec(name="s", peer_id=0, peers=(0,), state_machine=KVStateMachine,
                              extra={"read_path": "lease"}))
