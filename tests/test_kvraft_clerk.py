"""kvraft beyond the reference: clerk input checks and timeouts, the asyncio clerk (batching and
linearizability under faults), and the public API (``kvraft.start_group``). (Its documented
example runs in ``tests/test_docs_examples.py``.)"""

from __future__ import annotations

import asyncio
import random
import re
import time

import pytest
from kvraft_generic import OP_TIMEOUT_S, check_history, harness_factory

import kvraft
from kvraft.errors import KVTimeoutError
from linearizability import Recorder

pytestmark = [pytest.mark.ray, pytest.mark.timeout(240)]

NKEYS = 40


@pytest.fixture
def kv_harness(ray_session):
    yield from harness_factory()


class _CountingEndpoints:
    """Wraps a clerk's endpoints and counts the calls that leave the clerk."""

    def __init__(self, inner):
        self.inner, self.names, self.calls = inner, inner.names, 0

    def submit(self, server, ops):
        self.calls += 1
        return self.inner.submit(server, ops)

    def unpack(self, value):
        return self.inner.unpack(value)


def test_bad_input_is_refused_before_sending(kv_harness):
    cfg = kv_harness(3)
    ck = cfg.make_client(max_value_bytes=8)
    ck.endpoints = counting = _CountingEndpoints(ck.endpoints)
    for call in (lambda: ck.put(1, "v"), lambda: ck.put("k", 1), lambda: ck.append("k", None),
                 lambda: ck.get(b"k")):
        with pytest.raises(TypeError):
            call()
    with pytest.raises(ValueError, match="above the limit of 8 bytes"):
        ck.put("k", "123456789")
    assert counting.calls == 0 and ck.seq == 0
    ck.put("k", "12345678", timeout=OP_TIMEOUT_S)
    assert ck.get("k", timeout=OP_TIMEOUT_S) == "12345678"

    ack = cfg.make_async_client(max_value_bytes=8)
    ack.endpoints = acounting = _CountingEndpoints(ack.endpoints)

    async def bad() -> None:
        with pytest.raises(TypeError):
            await ack.put("k", 3)
        with pytest.raises(ValueError):
            await ack.append("k", "x" * 9)
        assert await ack.get("k", timeout=OP_TIMEOUT_S) == "12345678"

    asyncio.run(bad())
    assert acounting.calls >= 1 and ack.seq == 1


def _logs_settled(cfg) -> bool:
    """No call is waiting on a server, and every server has applied its whole log, the same log
    length everywhere: no uncommitted copy of anything is left in any log, and nothing is on its way
    to be proposed."""
    import ray

    stats = ray.get(cfg.net.stats.remote(), timeout=30)
    sts = ray.get([r.status.remote() for r in cfg.replicas], timeout=30)
    ends = {(st["applied"], st["last_index"]) for st in sts}
    return stats["in_flight"] == 0 and len(ends) == 1 and all(a == last for a, last in ends)


def test_timeout_names_servers_and_leaves_nothing_half_done(kv_harness):
    """A call that cannot complete raises TimeoutError naming the servers it tried; the operation
    then either took effect once, before the clerk's next completed operation, or never does."""
    cfg = kv_harness(5)
    rec = Recorder()
    ck = cfg.make_client()
    with rec.operation(1, ("put", "k", "a")):
        ck.put("k", "a", timeout=OP_TIMEOUT_S)
    # Reach no server at all: nothing can be applied.
    cfg.disconnect_client(ck, list(range(5)))
    with rec.operation(1, ("put", "k", "never")) as op:
        t = time.monotonic()
        with pytest.raises(TimeoutError) as info:
            ck.put("k", "never", timeout=1.0)
        took = time.monotonic() - t
        op.unknown()
    assert 0.9 <= took <= 2.0, f"timeout 1.0 s took {took:.2f} s"
    assert isinstance(info.value, KVTimeoutError)
    assert re.search(r"servers tried: server\d", str(info.value)), str(info.value)
    assert len(info.value.servers) >= 2

    # Reach only a minority that holds the old leader: the put is proposed but cannot commit.
    p1, p2 = cfg.make_partition()
    cfg.partition(p1, p2)
    cfg.connect_client(ck, p2)
    with rec.operation(1, ("put", "k", "maybe")) as op:
        with pytest.raises(TimeoutError):
            ck.put("k", "maybe", timeout=1.5)
        op.unknown()  # marked inside the operation: the recorder closes it as unknown
    cfg.connect_all()
    cfg.connect_client(ck, list(range(5)))
    with rec.operation(1, ("append", "k", "+next")):
        ck.append("k", "+next", timeout=OP_TIMEOUT_S)
    with rec.operation(1, ("get", "k")) as op:
        op.output = v1 = ck.get("k", timeout=OP_TIMEOUT_S)
    assert v1 in ("a+next", "maybe+next"), v1
    # The evidence that no copy of the timed-out put can take effect from now on: no call is in
    # flight, and every server holds only applied entries, the same number everywhere (a copy left
    # in the old leader's log would be an entry it has not applied). A copy the clerk might still
    # send is a duplicate: its seq is below the append's, which every server has applied.
    deadline = time.monotonic() + 10
    while not _logs_settled(cfg):
        assert time.monotonic() < deadline, "the servers' logs did not settle within 10 s"
        time.sleep(0.05)
    other = cfg.make_client()
    with rec.operation(2, ("get", "k")) as op:
        op.output = v2 = other.get("k", timeout=OP_TIMEOUT_S)
    assert v2 == v1, f"the value changed after the clerk moved on: {v1!r} -> {v2!r}"
    check_history(rec, "timeouts")


def test_async_clerk_batches_and_is_linearizable_under_faults(kv_harness):
    """Three asyncio clerks, 15 coroutines each, on an unreliable network with partitions: every
    history is linearizable and requests share calls. (Keys are many so that few appends to one key
    are concurrent: blind concurrent appends make a checker try every order of them.)"""
    cfg = kv_harness(5, True)
    rec = Recorder()
    clerks = [cfg.make_async_client() for _ in range(3)]
    rng = random.Random(cfg.seed)
    ops = 0

    async def client(ck: kvraft.AsyncClerk, cid: int, seed: int, stop: float) -> None:
        nonlocal ops
        crng = random.Random(seed)
        j = 0
        loop = asyncio.get_running_loop()
        while loop.time() < stop:
            key = str(crng.randrange(NKEYS))
            r = crng.random()
            if r < 0.5:
                value = f"x {cid} {j} y"
                j += 1
                with rec.operation(cid, ("append", key, value)):
                    await ck.append(key, value, timeout=OP_TIMEOUT_S)
            elif r < 0.55:
                value = f"p {cid} {j} y"
                j += 1
                with rec.operation(cid, ("put", key, value)):
                    await ck.put(key, value, timeout=OP_TIMEOUT_S)
            else:
                with rec.operation(cid, ("get", key)) as op:
                    op.output = await ck.get(key, timeout=OP_TIMEOUT_S)
            ops += 1

    async def partitioner(stop: float) -> None:
        loop = asyncio.get_running_loop()
        while loop.time() < stop - 1.0:
            await asyncio.sleep(1.0)
            sides: list[list[int]] = [[], []]
            for i in range(5):
                sides[rng.randrange(2)].append(i)
            await asyncio.to_thread(cfg.partition, sides[0], sides[1])
        await asyncio.to_thread(cfg.connect_all)

    async def main() -> None:
        stop = asyncio.get_running_loop().time() + 6.0
        await asyncio.gather(partitioner(stop), *(
            client(clerks[c % 3], c + 1, rng.randrange(2**31), stop) for c in range(45)))
        for ck in clerks:
            await ck.close()

    asyncio.run(main())
    calls = sum(ck.calls for ck in clerks)
    print(f"{ops} operations in {calls} calls")
    assert ops > 0 and calls < ops, f"no batching: {ops} operations took {calls} calls"
    check_history(rec, "async clerks")


def test_async_clerk_timeout(kv_harness):
    cfg = kv_harness(3)
    ck = cfg.make_async_client(to=[])

    async def main() -> None:
        t = time.monotonic()
        with pytest.raises(KVTimeoutError, match="servers tried: server"):
            await ck.put("k", "v", timeout=0.5)
        assert time.monotonic() - t < 1.5
        cfg.connect_client(ck, [0, 1, 2])
        await ck.put("k", "w", timeout=OP_TIMEOUT_S)
        assert await ck.get("k", timeout=OP_TIMEOUT_S) == "w"
        await ck.close()

    asyncio.run(main())


@pytest.mark.parametrize("storage,transport", [("durable", "direct"), ("memory", "network")])
def test_start_group(ray_session, storage, transport):
    group = kvraft.start_group(3, storage=storage, transport=transport)
    try:
        ck = group.clerk()
        ck.put("a", "1", timeout=OP_TIMEOUT_S)
        ck.append("a", "2", timeout=OP_TIMEOUT_S)
        assert ck.get("a", timeout=OP_TIMEOUT_S) == "12"

        async def main() -> list[str]:
            ack = group.async_clerk()
            await asyncio.gather(*(ack.append("b", "x") for _ in range(50)))
            values = await asyncio.gather(ack.get("a"), ack.get("b"))
            await ack.close()
            return values

        a, b = asyncio.run(main())
        assert a == "12" and b == "x" * 50
        assert 0 <= group.leader() < 3
        if storage == "durable":
            assert group.data_dir is not None and any(group.data_dir.rglob("raft.wal"))
    finally:
        data_dir = group.data_dir
        group.stop()
    if data_dir is not None:
        assert not data_dir.exists(), "stop() must remove the temporary data directory it made"


