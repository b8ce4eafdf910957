"""kvraft units without Ray: the state machine, the dedup table, snapshots, input checks, routing."""

from __future__ import annotations

import asyncio
import pickle
import random

import pytest

from kvraft.clerk import ClerkCore
from kvraft.errors import KVTimeoutError
from kvraft.ops import APPEND, GET, PUT, WRONG_LEADER, check_key, check_value
from kvraft.statemachine import KVStateMachine


def op(kind: int, key: str, value: str | None, client: int, seq: int) -> tuple:
    return (kind, key, value, client, seq)


def test_get_put_append_semantics():
    sm = KVStateMachine()
    assert sm.apply(1, (op(GET, "k", None, 1, 1),)) == [""]
    assert sm.apply(2, (op(PUT, "k", "a", 1, 2), op(APPEND, "k", "b", 1, 3), op(GET, "k", None, 1, 4))) == [
        None, None, "ab"]
    assert sm.apply(3, (op(APPEND, "new", "x", 2, 1),)) == [None]
    assert sm.get("new") == "x"
    assert sm.last_applied == 3


def test_noop_entry_is_ignored():
    sm = KVStateMachine()
    assert sm.apply(1, None) is None
    assert sm.last_applied == 1 and sm.data == {}


def test_duplicate_writes_apply_once():
    sm = KVStateMachine()
    batch = (op(APPEND, "k", "x", 7, 1), op(APPEND, "k", "y", 7, 2))
    sm.apply(1, batch)
    sm.apply(2, batch)  # a resend of the whole batch
    sm.apply(3, (op(APPEND, "k", "y", 7, 2), op(APPEND, "k", "z", 7, 3)))  # resend + a newer op
    assert sm.get("k") == "xyz"
    assert sm.sessions.seqs()[7] == 3
    assert sm.duplicates == 3


def test_old_sequence_number_never_applies_after_a_newer_one():
    sm = KVStateMachine()
    sm.apply(1, (op(PUT, "k", "new", 1, 5),))
    sm.apply(2, (op(PUT, "k", "stale", 1, 4),))  # an abandoned op that committed late
    assert sm.get("k") == "new"


def test_duplicate_get_rereads():
    sm = KVStateMachine()
    sm.apply(1, (op(PUT, "k", "a", 1, 1), op(GET, "k", None, 2, 1)))
    sm.apply(2, (op(PUT, "k", "b", 1, 2),))
    assert sm.apply(3, (op(GET, "k", None, 2, 1),)) == ["b"]


def test_clients_are_independent():
    sm = KVStateMachine()
    sm.apply(1, (op(APPEND, "k", "a", 1, 1), op(APPEND, "k", "b", 2, 1)))
    assert sm.get("k") == "ab"


def test_unknown_kind_is_rejected_not_raised():
    """apply is total: a malformed entry yields an error result and changes nothing (more cases in
    test_kvraft_validation.py)."""
    from kvraft.ops import Rejected

    sm = KVStateMachine()
    result = sm.apply(1, ((PUT, "k", "v", 1, 1), (9, "k", "v", 1, 2)))
    assert isinstance(result, Rejected) and "unknown kind 9" in result.reason
    assert sm.data == {} and sm.sessions.seqs() == {} and sm.last_applied == 1


def test_snapshot_round_trip_keeps_data_and_dedup_table():
    sm = KVStateMachine()
    sm.apply(1, (op(PUT, "a", "1", 1, 1), op(APPEND, "a", "2", 2, 1)))
    data = sm.snapshot()
    other = KVStateMachine()
    other.restore(data, 1)
    assert other.data == {"a": "12"} and other.sessions.seqs() == {1: 1, 2: 1}
    assert other.last_applied == 1
    other.apply(2, (op(APPEND, "a", "2", 2, 1),))  # a retry arriving after the snapshot
    assert other.get("a") == "12"
    kv, sessions, now_ms, ttl_ms = pickle.loads(data)
    assert kv == {"a": "12"} and sessions.seqs() == {1: 1, 2: 1} and (now_ms, ttl_ms) == (0, 0)


def test_replicas_agree_deterministically():
    rng = random.Random(1)
    log = []
    for i in range(1, 300):
        batch = tuple(op(rng.choice((GET, PUT, APPEND)), str(rng.randrange(5)), str(i), rng.randrange(4),
                         rng.randrange(1, 200)) for _ in range(rng.randrange(1, 5)))
        log.append(batch)
    a, b = KVStateMachine(), KVStateMachine()
    ra = [a.apply(i + 1, e) for i, e in enumerate(log)]
    # b restores from a snapshot taken half way, then applies the rest
    for i, e in enumerate(log[:150]):
        b.apply(i + 1, e)
    c = KVStateMachine()
    c.restore(b.snapshot(), 150)
    rc = [c.apply(i + 1, e) for i, e in enumerate(log) if i >= 150]
    assert rc == ra[150:]
    assert c.data == a.data and c.sessions == a.sessions


def test_should_snapshot_threshold_and_repeat_guard():
    assert not KVStateMachine(-1).should_snapshot(5, 10**9)
    sm = KVStateMachine(1000)
    assert not sm.should_snapshot(1, 1000)
    assert sm.should_snapshot(2, 1001)
    assert not sm.should_snapshot(3, 1001)  # same stale size: already asked
    assert sm.should_snapshot(4, 1200)


def test_snapshot_of_small_state_is_small():
    sm = KVStateMachine(1000)
    for i in range(1, 801):
        sm.apply(i, (op(PUT, "x", str(i % 2), 123456789012345, i),))
    assert len(sm.snapshot()) <= 500


@pytest.mark.parametrize("bad", [1, None, b"k", 1.5, ["k"]])
def test_non_string_key_or_value_is_a_type_error(bad):
    with pytest.raises(TypeError, match="must be a str"):
        check_key(bad)
    with pytest.raises(TypeError, match="must be a str"):
        check_value(bad)


def test_value_size_limit_counts_utf8_bytes():
    assert check_value("é" * 5, 10) == "é" * 5
    with pytest.raises(ValueError, match="11 bytes, above the limit of 10"):
        check_value("é" * 5 + "x", 10)
    with pytest.raises(ValueError, match="above the limit"):
        check_key("k" * 11, 10)


class _FakeEndpoints:
    names = ("s0", "s1", "s2")

    def submit(self, server, ops):  # pragma: no cover - never called here
        raise AssertionError

    def unpack(self, value):  # pragma: no cover
        return value


def test_clerk_checks_input_before_numbering():
    ck = ClerkCore(_FakeEndpoints(), max_value_bytes=4)
    with pytest.raises(TypeError):
        ck.make_op(PUT, 3, "v")
    with pytest.raises(TypeError):
        ck.make_op(APPEND, "k", 3)
    with pytest.raises(ValueError):
        ck.make_op(PUT, "k", "12345")
    assert ck.seq == 0
    assert ck.make_op(GET, "k", None) == (GET, "k", None, ck.client_id, 1)


def test_clerk_routing_follows_hints_and_rotates():
    ck = ClerkCore(_FakeEndpoints())
    assert ck.route(0, (WRONG_LEADER, 2)) == 2
    assert ck.route(0, (WRONG_LEADER, None)) == 1
    assert ck.route(2, (WRONG_LEADER, 2)) == 0  # a server naming itself is not a hint
    assert ck.route(1, (WRONG_LEADER, 7)) == 2  # out of range
    assert ck.route(2, None) == 0


def test_timeout_error_names_servers():
    e = KVTimeoutError("put('k')", 0.5, ["server0", "server2"], "server2: no answer")
    assert isinstance(e, TimeoutError)
    assert "server0, server2" in str(e) and e.servers == ["server0", "server2"]


# ------------------------------------------------------------------------------------------------
# The asyncio clerk against an in-process fake group (no Ray): batching, routing, timeouts
# ------------------------------------------------------------------------------------------------


class _FakeRef:
    def __init__(self, fut):
        self._fut = fut

    def future(self):
        return self._fut


class _FakeGroup:
    """Three 'servers' sharing one state machine; only ``leader`` accepts; replies after ``delay``."""

    names = ("s0", "s1", "s2")

    def __init__(self, leader: int = 2, delay: float = 0.005, drop_first: int = 0) -> None:
        self.sm = KVStateMachine()
        self.leader = leader
        self.delay = delay
        self.drop_first = drop_first
        self.batches: list[tuple] = []
        self.index = 0

    def submit(self, server, ops):
        import concurrent.futures
        import threading

        fut = concurrent.futures.Future()
        if self.drop_first > 0:
            self.drop_first -= 1
            reply = None  # a failed call
        elif server != self.leader:
            reply = (WRONG_LEADER, self.leader)
        else:
            self.batches.append(ops)
            self.index += 1
            reply = ("ok", self.sm.apply(self.index, ops))
        def deliver():
            if not fut.done():  # the clerk may have given up (cancelled) already
                fut.set_result(reply)

        threading.Timer(self.delay, deliver).start()
        return _FakeRef(fut)

    def unpack(self, value):
        return value


def test_async_clerk_coalesces_concurrent_requests():
    import asyncio

    from kvraft.async_clerk import AsyncClerk

    group = _FakeGroup()

    async def main():
        ck = AsyncClerk(group, attempt_timeout=1.0)
        await asyncio.gather(*(ck.append("k", f"{i},") for i in range(200)))
        value = await ck.get("k")
        await ck.close()
        return ck, value

    ck, value = asyncio.run(main())
    assert value == "".join(f"{i}," for i in range(200))  # submission order is log order
    assert len(group.batches) <= 5, f"{len(group.batches)} calls for 201 operations"
    assert ck.leader == 2


def test_async_clerk_resends_after_failures_without_duplicates():
    import asyncio

    from kvraft.async_clerk import AsyncClerk

    group = _FakeGroup(leader=1, drop_first=3)

    async def main():
        ck = AsyncClerk(group, attempt_timeout=1.0, retry_pause=0.001)
        await asyncio.gather(*(ck.append("k", "x") for _ in range(10)))
        return await ck.get("k")

    assert asyncio.run(main()) == "x" * 10


def test_async_clerk_timeout_drops_the_operation_from_resends():
    import asyncio

    from kvraft.async_clerk import AsyncClerk

    group = _FakeGroup(leader=0, delay=0.3)

    async def main():
        ck = AsyncClerk(group, attempt_timeout=0.05, retry_pause=0.001)
        with pytest.raises(KVTimeoutError, match="servers tried: s"):
            await ck.put("k", "v", timeout=0.2)
        assert ck._queue == []
        await ck.close()

    asyncio.run(main())


# ------------------------------------------------------------------------------------------------
# The KV replica itself, in-process: three KVReplica objects (the actor class without Ray) wired
# with coroutine "handles", driven by the asyncio clerk
# ------------------------------------------------------------------------------------------------


class _Method:
    def __init__(self, fn):
        self.fn = fn

    def remote(self, *args):
        return self.fn(*args)


class _Handle:
    def __init__(self, replica):
        self.rpc = _Method(replica.rpc)


class _TaskRef:
    """Looks like an ObjectRef to the asyncio clerk: ``future()`` is a concurrent future."""

    def __init__(self, coro):
        self.task = asyncio.ensure_future(coro)

    def future(self):
        import concurrent.futures

        fut = concurrent.futures.Future()

        def done(task):
            if not fut.done():
                fut.set_result(task.result())

        self.task.add_done_callback(done)
        return fut


class _InProcessEndpoints:
    def __init__(self, replicas):
        self.replicas = replicas
        self.names = tuple(f"s{i}" for i in range(len(replicas)))

    def submit(self, server, ops):
        return _TaskRef(self.replicas[server].rpc(None, "kv", (ops,)))

    def unpack(self, value):
        return value


def test_kv_replicas_in_process_snapshot_restart_and_dedup():
    import functools

    from actors.replica import ReplicaSpec
    from kvraft.async_clerk import AsyncClerk
    from kvraft.server import KVReplica

    n = 3

    async def main():
        replicas = [KVReplica(ReplicaSpec(name=f"s{i}", peer_id=i, peers=tuple(range(n)),
                                          state_machine=functools.partial(KVStateMachine, 1000), seed=i))
                    for i in range(n)]
        handles = {i: _Handle(r) for i, r in enumerate(replicas)}

        def peers(i):
            return ("direct", {j: h for j, h in handles.items() if j != i})

        for i, r in enumerate(replicas):
            await r.start(1, peers(i))
        ck = AsyncClerk(_InProcessEndpoints(replicas), attempt_timeout=1.0)
        await ck.put("a", "1", timeout=10)
        await asyncio.gather(*(ck.append("b", f"{i};") for i in range(500)))
        assert ck.calls < 100
        for i in range(60):  # enough single-op entries to pass maxraftstate several times
            await ck.put("c", str(i), timeout=10)
        statuses = [await r.status() for r in replicas]
        assert all(s["snapshot_index"] > 0 for s in statuses), statuses
        assert all(s["raft_state_size"] <= 8 * 1000 for s in statuses), statuses
        # resend an already applied batch under the same client id and sequence number: no effect
        stale = ((2, "b", "DUP", ck.client_id, 2),)
        leader = next(r for r in replicas if r.core.is_leader)
        assert (await leader.rpc(None, "kv", (stale,)))[0] == "ok"
        # crash and restart every replica: each restores from its snapshot and replays its log
        for r in replicas:
            await r.crash()
        for i, r in enumerate(replicas):
            await r.start(2, peers(i))
        assert await ck.get("b", timeout=10) == "".join(f"{i};" for i in range(500))
        assert await ck.get("c", timeout=10) == "59"
        leader = next(r for r in replicas if r.core.is_leader)
        # the dedup table survived the restart (it holds the last write: the two Gets were served
        # with ReadIndex, which writes nothing)
        assert leader.sm.sessions.seqs()[ck.client_id] == ck.seq - 2
        await ck.close()
        for r in replicas:
            await r.crash()

    asyncio.run(main())


def test_async_clerk_fails_callers_when_the_sender_breaks():
    from kvraft.async_clerk import AsyncClerk

    class Broken(_FakeGroup):
        def unpack(self, value):
            return ("ok", [])  # wrong number of results: a broken server

    async def main():
        ck = AsyncClerk(Broken(leader=0), attempt_timeout=1.0)
        with pytest.raises(ValueError):
            await asyncio.wait_for(ck.put("k", "v"), 5)

    asyncio.run(main())
