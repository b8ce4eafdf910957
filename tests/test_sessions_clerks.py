"""Session expiry end to end in process, without Ray (issue 13, item 5): a single replica of each
service whose leader stamps its entries, and the asyncio clerks talking to it directly. A clerk idle
for longer than the session TTL gets ``SessionExpiredError`` for a write (and moves to a new session, so
its next call works), has its reads resent in a new session silently, and a clerk never resends an
operation for longer than half the TTL. The idle periods are the subject of the tests (real time that
must pass for the log's clock to move), not a way to wait for something.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import time
from typing import Any

import pytest

from actors.replica import ReplicaSpec
from actors.service_protocol import NO_ANSWER
from actors.sessions import DEFAULT_SESSION_TTL_S, SessionExpiredError, stamp, unstamp

TTL_S = 0.3


async def _solo_leader(cls: type, **spec: Any) -> Any:
    replica = cls(ReplicaSpec(name="solo", peer_id=0, peers=(0,), election_ticks=3, heartbeat_ticks=1,
                              tick_s=0.005, **spec))
    await replica.start(1, ("direct", {}))
    for _ in range(400):
        if replica.core is not None and replica.core.is_leader:
            return replica
        await asyncio.sleep(0.005)
    raise AssertionError("a single replica did not become leader")


class _Direct:
    """Endpoints that call one in-process replica's RPC on the running loop (the asyncio clerks await
    ``ref.future()``); ``silent`` makes every call go unanswered."""

    names = ("solo",)

    def __init__(self, rpc: Any) -> None:
        self.rpc = rpc
        self.batches: list[tuple[Any, ...]] = []
        self.silent = False

    def submit(self, server: int, ops: Any) -> Any:
        self.batches.append(ops)
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        if not self.silent:
            task = asyncio.get_running_loop().create_task(self.rpc(ops))
            task.add_done_callback(lambda t: fut.set_result(t.result()))
        return type("Ref", (), {"future": lambda self: fut})()

    def unpack(self, value: Any) -> Any:
        return value


def test_the_leader_stamps_its_entries_with_its_clock_and_the_ttl() -> None:
    from kvraft.server import KVReplica
    from kvraft.statemachine import KVStateMachine

    async def main() -> None:
        replica = await _solo_leader(KVReplica, state_machine=KVStateMachine, extra={"session_ttl": 2.5})
        before = time.time_ns() // 1_000_000
        assert (await replica.rpc_kv(((1, "k", "v", 7, 1),)))[0] == "ok"
        entry = replica.core.log.entry(replica.core.last_index).command  # type: ignore[union-attr]
        t, ttl, command = unstamp(entry)
        assert command == ((1, "k", "v", 7, 1),) and ttl == 2500
        assert t is not None and before <= t <= time.time_ns() // 1_000_000
        assert replica.sm.clock.now_ms == t and replica.sm.clock.ttl_ms == 2500
        default = await _solo_leader(KVReplica, state_machine=KVStateMachine)
        assert default._stamped(None)[2] == int(DEFAULT_SESSION_TTL_S * 1000)
        never = await _solo_leader(KVReplica, state_machine=KVStateMachine, extra={"session_ttl": None})
        assert never._stamped(None)[2] == 0  # None: sessions never expire
        for r in (replica, default, never):
            await r.crash()

    asyncio.run(main())


def test_kv_idle_clerk_gets_the_error_for_a_write_and_its_reads_go_on() -> None:
    from kvraft.async_clerk import AsyncClerk
    from kvraft.server import KVReplica
    from kvraft.statemachine import KVStateMachine

    async def main() -> None:
        replica = await _solo_leader(KVReplica, state_machine=KVStateMachine, extra={"session_ttl": TTL_S})
        ck = AsyncClerk(_Direct(replica.rpc_kv), session_ttl=TTL_S)  # type: ignore[arg-type]
        await ck.put("a", "1")
        await ck.append("a", "2")
        old = ck.client_id
        await asyncio.sleep(2 * TTL_S)  # idle past the TTL
        with pytest.raises(SessionExpiredError) as err:
            await ck.append("a", "3")
        e = err.value
        assert (e.service, e.client_id, e.seq, e.maybe_applied) == ("kvraft", old, 3, False)
        assert "append('a')" in str(e) and "never applied" in str(e)
        assert ck.client_id != old and ck.sessions_renewed == 1
        assert replica.sm.data == {"a": "12"} and old not in replica.sm.sessions
        await ck.append("a", "3")  # the new session works at once
        assert await ck.get("a") == "123"
        await asyncio.sleep(2 * TTL_S)
        # a read after the TTL never fails: the session has been idle for more than half the TTL, so the
        # leader sends the read through the log (docs/kvraft.md, "Read strategy"), which refuses it as
        # expired; the clerk resends it in a new session without a word
        assert await ck.get("a") == "123"
        assert ck.sessions_renewed == 2
        # concurrent callers after idling: every write of the refused batch fails, reads come back,
        # and the operations queued behind it are renumbered into the new session and applied
        await asyncio.sleep(2 * TTL_S)
        got = await asyncio.gather(ck.append("a", "4"), ck.get("a"), ck.append("a", "5"),
                                   return_exceptions=True)
        assert isinstance(got[0], SessionExpiredError) and got[1] == "123"
        assert got[2] is None or isinstance(got[2], SessionExpiredError)
        assert replica.sm.data["a"] in ("123", "1235")
        # the two idle sessions expired
        assert replica.sm.stats()["sessions_expired"] >= 2 and len(replica.sm.sessions) == 1
        await ck.close()
        await replica.crash()

    asyncio.run(main())


def test_kv_clerk_that_only_reads_for_three_ttls_keeps_its_session() -> None:
    from kvraft.async_clerk import AsyncClerk
    from kvraft.server import KVReplica
    from kvraft.statemachine import KVStateMachine

    async def main() -> None:
        replica = await _solo_leader(KVReplica, state_machine=KVStateMachine, extra={"session_ttl": TTL_S})
        ck = AsyncClerk(_Direct(replica.rpc_kv), session_ttl=TTL_S)  # type: ignore[arg-type]
        await ck.put("a", "1")
        first_index, reads = replica.sm.last_applied, 0
        end = time.monotonic() + 3 * TTL_S
        while time.monotonic() < end:  # nobody writes: the log clock stands still meanwhile
            assert await ck.get("a") == "1"
            reads += 1
        await ck.append("a", "2")  # no SessionExpiredError: the reads renewed the session
        assert ck.sessions_renewed == 0 and replica.sm.expired_refused == 0
        assert replica.sm.data == {"a": "12"}
        # ReadIndex stays the common case: about one entry per half TTL went through the log (7 at
        # most in 3 TTLs, plus the append), against many reads
        entries = replica.sm.last_applied - first_index
        assert entries <= 8 and reads > 5 * entries, (entries, reads)
        await ck.close()
        await replica.crash()

    asyncio.run(main())


def test_ctrler_idle_clerk_gets_the_error_for_a_write_and_queries_go_on() -> None:
    from shardctrler.async_clerk import AsyncClerk
    from shardctrler.server import CtrlerReplica
    from shardctrler.statemachine import CtrlerStateMachine

    async def main() -> None:
        replica = await _solo_leader(CtrlerReplica, state_machine=functools.partial(CtrlerStateMachine, 10),
                                     extra={"session_ttl": TTL_S})
        ck = AsyncClerk(_Direct(replica.rpc_ctrl), session_ttl=TTL_S)  # type: ignore[arg-type]
        assert await ck.join({1: ["a"]}) == 1
        await asyncio.sleep(2 * TTL_S)
        assert (await ck.query()).num == 1  # a query: resent in a new session
        await asyncio.sleep(2 * TTL_S)
        with pytest.raises(SessionExpiredError) as err:
            await ck.move(0, 1)
        assert err.value.service == "shardctrler" and "move" in err.value.operation
        assert (await ck.query()).num == 1, "the refused Move changed nothing"
        assert await ck.move(0, 1) == 2
        await ck.close()
        await replica.crash()

    asyncio.run(main())


def test_a_clerk_stops_resending_after_half_the_ttl() -> None:
    from kvraft.async_clerk import AsyncClerk

    async def main() -> None:
        endpoints = _Direct(None)
        endpoints.silent = True  # nobody ever answers
        ck = AsyncClerk(endpoints, session_ttl=0.2, attempt_timeout=0.03, retry_pause=0.01)  # type: ignore[arg-type]
        old = ck.client_id
        start = time.monotonic()
        with pytest.raises(SessionExpiredError) as err:
            await ck.put("k", "v")
        assert 0.1 <= time.monotonic() - start < 1.0
        assert err.value.maybe_applied and err.value.client_id == old and err.value.seq == 1
        assert "half the session TTL" in str(err.value) and ck.client_id != old
        await ck.close()

    asyncio.run(main())
    assert NO_ANSWER  # the silent endpoint's calls end as "no answer" in the clerk


def test_shardkv_clerk_numbers_operations_per_shard() -> None:
    from shardkv.clerk import ClerkCore
    from shardkv.ops import APPEND, GET, PUT

    ck = ClerkCore(object(), ("c0",))
    ops = [ck.make_op(k, key, v, 10) for k, key, v in
           ((PUT, "0", "x"), (PUT, "1", "y"), (APPEND, "0", "z"), (GET, "1", None), (GET, "2", None))]
    assert [(op[3], op[4], op[5]) for op in ops] == [
        (ck.client_id, 1, 8), (ck.client_id, 1, 9), (ck.client_id, 2, 8), (ck.client_id, 2, 9),
        (ck.client_id, 1, 0)]
    ck.renew_shard(8)
    renewed = ck.renumber(ops[2])
    assert renewed[3] != ck.client_id and renewed[4] == 1 and renewed[5] == 8 and renewed[:3] == ops[2][:3]
    assert ck.make_op(GET, "1", None, 10)[3:5] == (ck.client_id, 3)  # shard 9 kept its session
    assert stamp(None, 1, 2) == ("ts", 1, 2, None)


class _ShardRouter:
    """A router whose every server is one shard group's state machine, applied in process with a
    log clock the test moves (``t``, ms): the shardkv clerks' expiry paths against the real rule."""

    def __init__(self, ttl_ms: int) -> None:
        from shardctrler.config import Config
        from shardkv.ops import CONFIG
        from shardkv.statemachine import ShardKVStateMachine

        self.sm = ShardKVStateMachine(100)
        self.ttl, self.t, self.index = ttl_ms, 0, 0
        self.config = Config(1, (100,) * 10, {100: ("g100-0",)})
        self.apply((CONFIG, self.config))

    def apply(self, command: Any) -> Any:
        self.index += 1
        return self.sm.apply(self.index, stamp(command, self.t, self.ttl))

    async def acall(self, name: str, method: str, args: tuple, timeout: float) -> Any:
        from shardkv.ops import CLIENT

        assert method == "kv"
        return "ok", self.apply((CLIENT, args[0]))


def test_shardkv_async_clerk_renews_a_shard_session_and_renumbers_what_waits() -> None:
    from shardkv.async_clerk import AsyncClerk

    router = _ShardRouter(ttl_ms=1000)

    async def main() -> None:
        ck = AsyncClerk(router, ("c0",))
        ck.config = router.config
        await ck.put("0", "x")  # shard 8
        await ck.put("1", "y")  # shard 9
        router.t += 5000  # the entry carrying the next put expires shard 9's session first
        with pytest.raises(SessionExpiredError) as err:
            await ck.put("1", "z")
        assert err.value.service == "shardkv" and err.value.seq == 2 and not err.value.maybe_applied
        assert router.sm.shards[9].data == {"1": "y"}
        await ck.close()

    asyncio.run(main())

    async def more() -> None:
        ck = AsyncClerk(router, ("c0",))
        ck.config = router.config
        await ck.put("0", "a")
        await ck.put("2", "b")  # shard 0
        first = ck.shard_sessions[8][0]
        router.t += 5000
        got = await asyncio.gather(ck.get("0"), ck.append("0", "c"), ck.get("2"), return_exceptions=True)
        assert got[0] == "a" and isinstance(got[1], SessionExpiredError) and got[2] == "b"
        assert ck.shard_sessions[8][0] != first and ck.shard_sessions[8][1] == 1  # only the read renumbered
        await ck.append("0", "c")  # the new session works at once
        assert await ck.get("0") == "ac"
        await ck.close()

    asyncio.run(more())
    assert router.sm.expired_refused >= 3
