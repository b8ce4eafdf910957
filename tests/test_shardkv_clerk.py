"""shardkv clerks and groups on Ray: bad input refused before sending, a key mapping that disagrees with
the servers' refused by them, timeouts that name what was tried, the asyncio clerk under an unreliable
network while shards move (linearizable, batched: fewer calls than operations), and start_group with
direct calls, durable storage and the hash mapping."""

from __future__ import annotations

import asyncio
import random
import threading
import time

import pytest

from linearizability import Recorder
from raykv.testing.shardkv_harness import ShardKVHarness, check_history, join_threads
from shardctrler.config import key2shard
from shardkv.errors import ShardKVRequestError, ShardKVTimeoutError
from shardkv.ops import ERR_BAD_SHARD

pytestmark = [pytest.mark.ray, pytest.mark.timeout(240)]


@pytest.fixture
def harness(ray_session):
    made: list[ShardKVHarness] = []

    def make(unreliable: bool = False, maxraftstate: int = -1) -> ShardKVHarness:
        h = ShardKVHarness(3, unreliable, maxraftstate)
        made.append(h)
        return h

    yield make
    for h in made:
        h.cleanup()


def test_bad_input_is_refused_before_sending(harness):
    cfg = harness()
    cfg.join(0)
    ck = cfg.make_client(max_value_bytes=100)
    ck.put("k", "v", timeout=30)
    seq = ck.seq
    for bad, exc in [((5, "v"), TypeError), (("k", b"v"), TypeError), (("k", None), TypeError),
                     (("k", "x" * 101), ValueError)]:
        with pytest.raises(exc):
            ck.put(*bad)
    with pytest.raises(TypeError):
        ck.get(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        ck.get("k", timeout=0)
    assert ck.seq == seq, "a refused call used a sequence number"
    assert ck.get("k", timeout=30) == "v"
    with pytest.raises(ValueError, match="unknown key mapping"):
        cfg.make_client(mapping="crc")
    with pytest.raises(ValueError, match="attempt_timeout"):
        cfg.make_client(attempt_timeout=0)


def test_clerk_with_another_mapping_is_refused_and_changes_nothing(harness):
    cfg = harness()
    cfg.join(0)
    ck = cfg.make_client()
    ck.put("user:1", "kept", timeout=30)
    wrong = cfg.make_client(mapping="hash")
    key = next(k for k in (f"user:{i}" for i in range(100)) if key2shard(k, 10) != ord(k[0]) % 10)
    with pytest.raises(ShardKVRequestError, match="'reference' mapping") as err:
        wrong.put(key, "lost", timeout=30)
    assert err.value.code == ERR_BAD_SHARD
    assert ck.get(key, timeout=30) == ("kept" if key == "user:1" else "")


def test_timeout_names_the_shard_and_servers_and_no_group(harness):
    cfg = harness()
    ck = cfg.make_client()
    with pytest.raises(ShardKVTimeoutError, match="no group owned the shard") as err:
        ck.get("a", timeout=1.0)  # nobody joined: every shard is on gid 0
    assert err.value.shard == ord("a") % 10 and err.value.config == 0
    cfg.join(0)
    ck.put("a", "1", timeout=30)
    cfg.shutdown_group(0)
    t = time.monotonic()
    with pytest.raises(ShardKVTimeoutError) as err:
        ck.put("a", "2", timeout=2.0)
    assert time.monotonic() - t < 4.0
    assert set(err.value.servers) <= set(cfg.names(0)) and err.value.servers
    cfg.start_group(0)
    assert ck.get("a", timeout=30) in ("1", "2")  # the timed-out put took effect once or not at all


def test_async_clerk_while_shards_move_unreliable(harness):
    """Many concurrent callers on one asyncio clerk, per-group batches, through an unreliable network
    while groups join and leave: every history linearizable, fewer calls than operations."""
    cfg = harness(unreliable=True, maxraftstate=1000)
    cfg.join(0)
    rec = Recorder()
    stop = threading.Event()
    counts: dict[str, int] = {}

    async def run() -> None:
        ck = cfg.make_async_client()
        rng = random.Random(cfg.seed)

        async def caller(c: int) -> None:
            n = 0
            while not stop.is_set():
                key = str(rng.randrange(10))
                if rng.random() < 0.5:
                    v = f"{c}.{n};"
                    with rec.operation(c, ("append", key, v)):
                        await ck.append(key, v, timeout=30)
                else:
                    with rec.operation(c, ("get", key)) as op:
                        op.output = await ck.get(key, timeout=30)
                n += 1

        await asyncio.gather(*(caller(c) for c in range(30)))
        counts["ops"] = sum(1 for _ in rec.history())
        counts["calls"] = ck.calls
        await ck.close()

    t = threading.Thread(target=lambda: asyncio.run(run()), daemon=True)
    t.start()
    time.sleep(1)
    cfg.join(1)
    time.sleep(1)
    cfg.join(2)
    time.sleep(1)
    cfg.leave(0)
    time.sleep(1.5)
    stop.set()
    join_threads([t], "the asyncio clerk")
    print(f"asyncio clerk: {counts['ops']} operations in {counts['calls']} calls")
    assert counts["ops"] > 100
    assert counts["calls"] < counts["ops"], "no batching: one call per operation or more"
    check_history(rec, "async clerk while shards move")
    cfg.check_logs()


@pytest.mark.parametrize("transport", ["stream", "direct"])
def test_start_group_durable_hash_mapping(ray_session, tmp_path, transport):
    """The real-use path: a controller and two groups calling each other over the service's streams
    (the default) or directly, durable storage, 16 shards under the hash mapping; data written before a
    join is readable after its shards moved, and the old owner's copies are deleted."""
    import shardctrler
    import shardkv

    ctrler = shardctrler.start_group(3, nshards=16, storage="memory", transport=transport)
    assert (ctrler.secret is not None) == (transport == "stream")
    groups = []
    try:
        g1 = shardkv.start_group(1, ctrler, storage="durable", data_dir=tmp_path / "g1", mapping="hash",
                                 join=True)
        groups.append(g1)
        import ray

        st = ray.get([r.status.remote() for r in g1.replicas], timeout=30)
        assert {s["transport"] for s in st} == {transport}, st
        ck = shardkv.make_clerk(ctrler, mapping="hash")
        keys = [f"user:{i}" for i in range(64)]
        for k in keys:
            ck.put(k, k.upper(), timeout=30)
        g2 = shardkv.start_group(2, ctrler, storage="memory", mapping="hash", join=True)
        groups.append(g2)
        assert len({key2shard(k, 16) for k in keys}) >= 12
        for k in keys:
            assert ck.get(k, timeout=30) == k.upper()
        config = ck.query(timeout=30)
        assert len(config.shards_of(2)) == 8

        async def many() -> list[str]:
            ack = shardkv.make_async_clerk(ctrler, mapping="hash")
            await asyncio.gather(*(ack.append(k, "!") for k in keys))
            values = await asyncio.gather(*(ack.get(k, timeout=30) for k in keys))
            calls = ack.calls
            await ack.close()
            assert calls < len(keys), f"{calls} calls for {2 * len(keys)} operations"
            return values

        assert asyncio.run(many()) == [k.upper() + "!" for k in keys]
        # group 1 handed 8 shards to group 2 and, once they were installed, deleted its copies
        deadline = time.monotonic() + 30
        while True:
            st = [s for s in g1.status() if s["role"] == "leader"]
            if st and st[0]["settled"] and sorted(st[0]["shards"].get("serving", [])) == list(
                    config.shards_of(1)) and "leaving" not in st[0]["shards"]:
                break
            assert time.monotonic() < deadline, f"group 1 did not settle: {g1.status()}"
            time.sleep(0.1)
        assert (tmp_path / "g1" / "replica0").is_dir()
    finally:
        for g in groups:
            g.stop()
        ctrler.stop()


def test_malformed_calls_are_answered_invalid_and_change_nothing(harness):
    """A caller other than our clerks gets a clear "invalid" answer; nothing is proposed."""
    import ray

    cfg = harness()
    cfg.join(0)
    ck = cfg.make_client()
    ck.put("k", "v", timeout=30)
    replica = cfg.groups[0].replicas[0]
    for method, args in [("kv", ("notatuple",)), ("kv", ((),)), ("pull", ("1", (0,))),
                         ("pull", (1, [0])), ("delete", (-1, (0,))), ("delete", (1, ()))]:
        reply = ray.get(replica.rpc.remote(None, method, args), timeout=30)
        assert reply[0] == "invalid" and isinstance(reply[1], str), (method, args, reply)
    # a malformed operation inside a well-formed batch is refused by the state machine
    deadline = time.monotonic() + 30
    while True:
        replies = ray.get([r.rpc.remote(None, "kv", (((9, "k", None, 1, 1, 0),),))
                           for r in cfg.groups[0].replicas], timeout=30)
        oks = [r for r in replies if r is not None and r[0] == "ok"]
        if oks:
            assert oks[0][1][0].code == "bad_request"
            break
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert ck.get("k", timeout=30) == "v"


