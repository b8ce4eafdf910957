"""The controller's Queries by ReadIndex (issue 13, item 2): a batch of Queries of known clients is
answered without a log entry (``read_path="index"``, the default), anything else goes through the log
as before; ``read_path="log"`` sends every Query through the log. In process (a single replica that
leads itself, no Ray) and on Ray.

What a Query answers is checked by the reference suite (tests/test_shardctrler_5a.py, whose
histories must stay as they were) and the state machine's read by tests/test_service_reads.py.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import pytest

from actors.replica import ReplicaSpec
from shardctrler.ops import JOIN, OK, QUERY, Refusal
from shardctrler.server import CtrlerReplica
from shardctrler.statemachine import CtrlerStateMachine


async def _solo_leader(**extra: Any) -> CtrlerReplica:
    replica = CtrlerReplica(ReplicaSpec(name="solo", peer_id=0, peers=(0,), election_ticks=3,
                                        heartbeat_ticks=1, tick_s=0.005,
                                        state_machine=functools.partial(CtrlerStateMachine, 10), extra=extra))
    await replica.start(1, ("direct", {}))
    for _ in range(400):
        if replica.core is not None and replica.core.is_leader:
            return replica
        await asyncio.sleep(0.005)
    raise AssertionError("a single replica did not become leader")


def _last(replica: CtrlerReplica) -> int:
    assert replica.core is not None
    return replica.core.last_index


@pytest.mark.parametrize("read_path", ["index", "log"])
def test_queries_of_known_clients_need_no_log_entry(read_path: str) -> None:
    async def main() -> None:
        replica = await _solo_leader(read_path=read_path)
        assert await replica.rpc_ctrl(((JOIN, {1: ["a"]}, 7, 1),)) == (OK, [1])
        assert await replica.rpc_ctrl(((JOIN, {2: ["b"]}, 7, 2),)) == (OK, [2])
        sm = replica.sm
        assert isinstance(sm, CtrlerStateMachine)
        before = _last(replica)
        got = await asyncio.gather(*(replica.rpc_ctrl(((QUERY, n, 7, 3 + n),)) for n in (-1, 0, 1, 2, 5)))
        assert got == [(OK, [sm.configs[n]]) for n in (2, 0, 1, 2, 2)]
        grew = _last(replica) - before
        assert grew == 0 if read_path == "index" else grew >= 1, (read_path, grew)
        # a batch of several Queries: one answer each, in order
        reply = await replica.rpc_ctrl(((QUERY, 1, 7, 9), [QUERY, -1, 7, 10]))
        assert reply == (OK, [sm.configs[1], sm.configs[2]])
        # through the log, whatever the read path: a client the table does not know (its first
        # operation opens its session), a malformed Query (refused with a clear reason), a batch
        # with a write
        before = _last(replica)
        assert await replica.rpc_ctrl(((QUERY, -1, 8, 1),)) == (OK, [sm.configs[2]])
        assert 8 in sm.sessions
        bad = await replica.rpc_ctrl(((QUERY, "x", 7, 11),))
        assert bad is not None and bad[0] == OK and isinstance(bad[1][0], Refusal)
        assert await replica.rpc_ctrl(((QUERY, -1, 7, 12), (JOIN, {3: ["c"]}, 7, 13))) == (
            OK, [sm.configs[2], 3])
        assert _last(replica) - before == 3
        await replica.crash()

    asyncio.run(main())


def test_a_bad_read_path_is_refused() -> None:
    import shardctrler

    with pytest.raises(ValueError, match="read_path"):
        CtrlerReplica(ReplicaSpec(name="s", peer_id=0, peers=(0,), state_machine=CtrlerStateMachine,
                                  extra={"read_path": "lease"}))
    with pytest.raises(ValueError, match="read_path"):
        shardctrler.start_group(3, read_path="lease")  # refused before anything starts


@pytest.mark.ray
@pytest.mark.timeout(120)
@pytest.mark.parametrize("read_path", ["index", "log"])
def test_queries_on_ray_see_every_change_and_only_the_log_path_writes_entries(ray_session,
                                                                              read_path: str) -> None:
    import shardctrler

    ctrler = shardctrler.start_group(3, storage="memory", read_path=read_path)
    try:
        ck = ctrler.clerk()
        assert ck.join({1: ["a"]}) == 1
        assert ck.query().num == 1  # the clerk's session is known from here on

        def last_index() -> int:
            return int(ctrler.status()[ctrler.leader()]["last_index"])

        async def queries() -> list[Any]:
            ack = ctrler.async_clerk()
            assert await ack.join({2: ["b"]}) == 2  # opens the async clerk's session (through the log)
            mid = last_index()
            got = await asyncio.gather(*(ack.query(n % 4 - 1) for n in range(60)))
            grew = last_index() - mid
            assert grew == 0 if read_path == "index" else grew >= 1, (read_path, grew)
            await ack.close()
            return list(got)

        got = asyncio.run(queries())
        assert [c.num for c in got] == [(2, 0, 1, 2)[n % 4] for n in range(60)]
        assert ck.leave([1]) == 3 and ck.query().num == 3  # a read after a write sees it
        assert set(ck.query().shards) == {2}
    finally:
        ctrler.stop()
