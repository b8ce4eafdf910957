"""The shard controller beyond the reference tests, on Ray: bad input refused (before sending, or by
the controller) with nothing changed, exactly-once writes when replies are lost, timeouts, the
asyncio clerk (batching, and use inside an async actor, as a shard group will), ``start_group`` with
both storages and transports. (The example of docs/shardctrler.md runs in
``tests/test_docs_examples.py``.)"""

from __future__ import annotations

import asyncio
import re
import threading

import pytest
import ray

import shardctrler
from raykv.testing.ctrler_harness import CtrlerHarness, check_config
from shardctrler.errors import CtrlerTimeoutError, RefusedError, RefusedTypeError
from shardctrler.ops import ERR_BAD_SHARD, ERR_GROUP_EXISTS, ERR_SERVER_IN_USE, ERR_UNKNOWN_GROUP

pytestmark = [pytest.mark.ray, pytest.mark.timeout(240)]

OP_TIMEOUT_S = 30.0


@pytest.fixture
def ctrler_harness(ray_session):
    made: list[CtrlerHarness] = []

    def make(n: int = 3, unreliable: bool = False) -> CtrlerHarness:
        h = CtrlerHarness(n, unreliable)
        made.append(h)
        return h

    yield make
    failures = []
    for h in made:
        try:
            print(f"ctrler harness seed {h.seed}: {h.summary()}")
            h.cleanup()
        except AssertionError as e:
            failures.append(str(e))
    if failures:
        pytest.fail("; ".join(failures))


class _CountingEndpoints:
    """Wraps a clerk's endpoints and counts the calls that leave the clerk."""

    def __init__(self, inner):
        self.inner, self.names, self.calls = inner, inner.names, 0

    def submit(self, server, ops):
        self.calls += 1
        return self.inner.submit(server, ops)

    def unpack(self, value):
        return self.inner.unpack(value)


class _LoseFirstReply(_CountingEndpoints):
    """For a synchronous clerk (one call in flight): the first "ok" reply to every operation is lost
    after the server has applied it, so every operation is resent once it has taken effect."""

    def __init__(self, inner):
        super().__init__(inner)
        self.lost: set[int] = set()
        self.seq = 0

    def submit(self, server, ops):
        self.seq = ops[0][3]
        return super().submit(server, ops)

    def unpack(self, value):
        reply = self.inner.unpack(value)
        if reply is not None and reply[0] == "ok" and self.seq not in self.lost:
            self.lost.add(self.seq)
            return None  # the answer is lost on its way back; the entry was applied
        return reply


def test_bad_requests_are_refused_and_change_nothing(ctrler_harness):
    cfg = ctrler_harness()
    ck = cfg.make_client()
    ck.endpoints = counting = _CountingEndpoints(ck.endpoints)
    for call in (lambda: ck.join({"1": ["a"]}), lambda: ck.join({1: "abc"}), lambda: ck.leave(1),
                 lambda: ck.move("0", 1), lambda: ck.query("latest")):
        with pytest.raises(RefusedTypeError):
            call()
    for call in (lambda: ck.join({0: ["a"]}), lambda: ck.join({-1: ["a"]}), lambda: ck.join({1: []}),
                 lambda: ck.join({1: ["a", "a"]}), lambda: ck.join({}), lambda: ck.leave([]),
                 lambda: ck.move(-1, 1), lambda: ck.query(-2)):
        with pytest.raises(RefusedError) as e:
            call()
        assert not e.value.sent
    assert counting.calls == 0 and ck.seq == 0, "refused before anything was sent or numbered"

    assert ck.join({1: ["x", "y", "z"]}, timeout=OP_TIMEOUT_S) == 1
    before = ck.query(timeout=OP_TIMEOUT_S)
    refusals = [
        (lambda: ck.join({1: ["p"]}), ERR_GROUP_EXISTS, "already in config 1"),
        (lambda: ck.join({2: ["x"]}), ERR_SERVER_IN_USE, "already serves group 1"),
        (lambda: ck.leave([1, 2]), ERR_UNKNOWN_GROUP, "cannot leave group 2"),
        (lambda: ck.move(10, 1), ERR_BAD_SHARD, "numbered 0 .. 9"),
        (lambda: ck.move(3, 7), ERR_UNKNOWN_GROUP, "cannot move shard 3 to group 7"),
    ]
    for call, code, text in refusals:
        with pytest.raises(RefusedError, match=re.escape(text)) as e:
            call()
        assert e.value.sent and e.value.code == code
    assert ck.query(timeout=OP_TIMEOUT_S) == before, "refused requests left the configuration unchanged"
    assert sum(s["refused"] for s in cfg.ctrl_stats()) >= len(refusals)


def test_lost_replies_are_answered_from_the_dedup_table(ctrler_harness):
    """Every reply is lost once, so every write is applied and then resent: the resend must get the
    first answer (not "group already in" for a Join that succeeded, nor a second configuration)."""
    cfg = ctrler_harness()
    ck = cfg.make_client(retry_pause=0.01)
    ck.endpoints = lossy = _LoseFirstReply(ck.endpoints)
    assert ck.join({1: ["a"]}, timeout=OP_TIMEOUT_S) == 1
    assert ck.join({2: ["b"], 3: ["c"]}, timeout=OP_TIMEOUT_S) == 2
    assert ck.move(0, 3, timeout=OP_TIMEOUT_S) == 3
    assert ck.leave([1], timeout=OP_TIMEOUT_S) == 4
    with pytest.raises(RefusedError) as e:
        ck.leave([1], timeout=OP_TIMEOUT_S)  # refused, and the resend gets the same refusal
    assert e.value.code == ERR_UNKNOWN_GROUP
    last = ck.query(timeout=OP_TIMEOUT_S)
    assert last.num == 4 and sorted(last.groups) == [2, 3]
    assert lossy.calls >= 2 * 6
    assert max(s["duplicates"] for s in cfg.ctrl_stats()) >= 5


def test_concurrent_clerks_on_an_unreliable_network(ctrler_harness):
    """10 clerks join, move and leave at once while the network drops and delays: every call
    completes with its own answer and the final configuration is exactly the expected one."""
    cfg = ctrler_harness(3, unreliable=True)
    errors: list[BaseException] = []
    nums: list[int] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        ck = cfg.make_client()
        try:
            gid = 200 + i
            got = [ck.join({gid: [f"{gid}a", f"{gid}b"]}, timeout=OP_TIMEOUT_S),
                   ck.join({gid + 100: [f"{gid + 100}a"]}, timeout=OP_TIMEOUT_S),
                   ck.move(i, gid, timeout=OP_TIMEOUT_S),
                   ck.leave([gid + 100], timeout=OP_TIMEOUT_S)]
            with lock:
                nums.extend(got)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
        assert not t.is_alive(), "a client did not finish"
    if errors:
        raise errors[0]
    assert sorted(nums) == list(range(1, 41)), "each write made exactly one configuration"
    ck = cfg.make_client()
    final = ck.query(timeout=OP_TIMEOUT_S)
    assert final.num == 40
    check_config(final, range(200, 210))  # the last operations were Leaves: balanced again


def test_timeout_names_the_servers_tried(ctrler_harness):
    cfg = ctrler_harness()
    ck = cfg.make_client(to=[], attempt_timeout=0.2)
    with pytest.raises(CtrlerTimeoutError, match="servers tried: ctrler-") as e:
        ck.query(timeout=1.0)
    assert e.value.servers and all(s.startswith("ctrler-") for s in e.value.servers)
    cfg.connect_client(ck, [0, 1, 2])
    assert ck.query(timeout=OP_TIMEOUT_S).num == 0


def test_async_clerk_batches_on_the_network(ctrler_harness):
    cfg = ctrler_harness()

    async def main():
        ack = cfg.make_async_client()
        nums = await asyncio.gather(*(ack.join({g: [f"{g}a"]}, timeout=OP_TIMEOUT_S) for g in range(1, 31)))
        configs = await asyncio.gather(*(ack.query(n, timeout=OP_TIMEOUT_S) for n in range(31)))
        with pytest.raises(RefusedError):
            await ack.join({5: ["again"]}, timeout=OP_TIMEOUT_S)
        await ack.close()
        return ack, nums, configs

    ack, nums, configs = asyncio.run(main())
    assert sorted(nums) == list(range(1, 31))
    assert [c.num for c in configs] == list(range(31))
    check_config(configs[-1], range(1, 31))
    assert ack.calls < 30, f"{ack.calls} calls for 62 operations"


@ray.remote(num_cpus=0)
class _Follower:
    """An async actor that follows the controller with an AsyncClerk, as a shard group's replica will
    (no blocking ray.get inside an actor)."""

    def __init__(self, endpoints) -> None:
        self.endpoints = endpoints

    async def follow(self, upto: int) -> list[int]:
        ck = shardctrler.AsyncClerk(self.endpoints, attempt_timeout=1.0)
        seen, num = [], 0
        while num < upto:
            cfg = await ck.query(num + 1, timeout=30)
            if cfg.num == num + 1:
                seen.append(cfg.num)
                num = cfg.num
            else:
                await asyncio.sleep(0.05)
        await ck.close()
        return seen


def test_async_clerk_inside_an_actor_follows_configurations(ctrler_harness):
    cfg = ctrler_harness()
    follower = _Follower.remote(cfg.endpoints(caller="follower"))
    ref = follower.follow.remote(5)
    ck = cfg.make_client()
    for g in range(1, 6):
        ck.join({g: [f"{g}a"]}, timeout=OP_TIMEOUT_S)
    assert ray.get(ref, timeout=60) == [1, 2, 3, 4, 5]
    ray.kill(follower)


@pytest.mark.parametrize("storage,transport", [("durable", "direct"), ("memory", "network")])
def test_start_group(ray_session, storage, transport):
    group = shardctrler.start_group(3, nshards=16, storage=storage, transport=transport)
    try:
        ck = group.clerk()
        assert ck.join({7: ["a", "b"], 9: ["c"]}, timeout=OP_TIMEOUT_S) == 1
        cfg = ck.query(timeout=OP_TIMEOUT_S)
        assert cfg.nshards == 16 and sorted(cfg.counts().values()) == [8, 8]
        assert ck.move(0, 9, timeout=OP_TIMEOUT_S) == 2

        async def main():
            ack = group.async_clerk()
            latest = await ack.query(timeout=OP_TIMEOUT_S)
            await ack.close()
            return latest

        assert asyncio.run(main()).shards[0] == 9
        assert 0 <= group.leader() < 3
        status = group.status()
        assert len(status) == 3 and all(s["ctrl"]["latest"] <= 2 for s in status)
        if storage == "durable":
            assert group.data_dir is not None and any(group.data_dir.rglob("*"))
    finally:
        data_dir = group.data_dir
        group.stop()
    if data_dir is not None:
        assert not data_dir.exists(), "stop() must remove the temporary data directory it made"
    with pytest.raises(ValueError):
        shardctrler.start_group(3, nshards=0)


def test_start_group_reopens_its_data_dir(ray_session, tmp_path):
    """A durable controller stopped and started again on the same data_dir keeps its configurations."""
    group = shardctrler.start_group(3, data_dir=tmp_path / "ctrler")
    try:
        ck = group.clerk()
        ck.join({1: ["a"]}, timeout=OP_TIMEOUT_S)
        ck.join({2: ["b"]}, timeout=OP_TIMEOUT_S)
        before = [ck.query(n, timeout=OP_TIMEOUT_S) for n in range(3)]
    finally:
        group.stop()
    assert (tmp_path / "ctrler").exists(), "stop() keeps a data_dir it did not make"
    group = shardctrler.start_group(3, data_dir=tmp_path / "ctrler")
    try:
        ck = group.clerk()
        assert [ck.query(n, timeout=OP_TIMEOUT_S) for n in range(3)] == before
        assert ck.join({3: ["c"]}, timeout=OP_TIMEOUT_S) == 3
    finally:
        group.stop()


