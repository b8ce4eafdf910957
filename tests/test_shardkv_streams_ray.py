"""The sharded KV's tests on the stream transport, on Ray (issue 14, "the same correctness, tested"): the
scenarios of the sharded reference tests (``tests/test_shardkv_5.py``, run unchanged where they exist)
against a service started through the public API on its default transport: a controller group and
three shard groups of three replicas, one secret, clerks on the service's stream router, and the
faults made by the stream transport's seeded fault hook instead of the faulty network actor
(:mod:`raykv.testing.stream_shardkv_harness`). Shards move in every test (joins and leaves), and every
test records every operation and checks the whole history linearizable, to a definite verdict.

- unreliable: Unreliable3 (10 clients appending, putting and reading while groups join and leave, 10 %
  of every stream's requests and replies lost);
- crash: Concurrent1 (every group's servers crashed and restarted from their storage while shards
  move, snapshots at maxraftstate 100);
- partition: Unreliable3's clients and schedule with, at the same time, every group and the
  controller re-partitioned at random about every second and a server of a random group crashed and
  restarted from storage each round;
- a crash the network transport cannot have: every replica of two groups killed and started again as a
  new actor on its durable storage (a new listener address) while shards move away from them and
  appenders run; clerks and the other groups find the moved servers again by name through Ray.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.timeout(150)]

#: the partition test: how long the partitions are healed between two rounds, and how long the clients
#: keep running under the faults after the reconfiguration schedule
HEAL_S = 0.5
CHAOS_AFTER_S = 4.0


@pytest.fixture
def stream_shardkv(ray_session: None) -> Iterator[Callable[..., Any]]:
    """Factory of :class:`~raykv.testing.stream_shardkv_harness.StreamShardKVHarness` with the reference
    fixture's ``make(n, unreliable, maxraftstate, **options)`` shape; checks and stops every harness."""
    from test_shardkv_5 import harness_factory

    from raykv.testing.stream_shardkv_harness import StreamShardKVHarness

    yield from harness_factory(StreamShardKVHarness, "stream shardkv harness")


def test_unreliable3_streams(stream_shardkv: Callable[..., Any]) -> None:
    """Unreliable3, unchanged, on unreliable streams."""
    import test_shardkv_5 as ref

    ref.test_unreliable3_5b(stream_shardkv)


def test_concurrent1_streams(stream_shardkv: Callable[..., Any]) -> None:
    """Concurrent1, unchanged: every group crashed and restarted from its storage while shards move."""
    import test_shardkv_5 as ref

    ref.test_concurrent1_5b(stream_shardkv)


def test_partitions_and_crashes_unreliable_streams(stream_shardkv: Callable[..., Any]) -> None:
    """Unreliable3's clients and reconfiguration schedule on unreliable streams, while every shard group
    and the controller are re-partitioned at random about every second and one server of a random group
    is crashed and restarted from its storage each round; then every key is read (recorded) once the
    faults end."""
    import test_shardkv_5 as ref

    from linearizability import Recorder
    from raykv.testing.raft_harness import ELECTION_TIMEOUT_S
    from raykv.testing.shardkv_harness import check_history, join_threads, randstring, rappend, rget, rput
    from raykv.testing.stream_shardkv_harness import CTRL

    cfg = stream_shardkv(3, True, 100)
    rng, rec = random.Random(cfg.seed), Recorder()
    ck = cfg.make_client()
    cfg.join(0)
    n = 10
    ka, _ = ref.put_keys(ck, rec, n, 5, rng)
    done, chaos_done = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    counts = [0] * n
    rounds = [0]

    def client(i: int, ck1: Any, seed: int) -> None:
        crng = random.Random(seed)
        try:
            while not done.is_set():
                key = ka[crng.randrange(n)]
                nv = randstring(5, crng)
                if crng.randrange(1000) < 500:
                    rappend(ck1, key, nv, rec, i + 1)
                elif crng.randrange(1000) < 100:
                    rput(ck1, key, nv, rec, i + 1)
                else:
                    rget(ck1, key, rec, i + 1)
                counts[i] += 1
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    def chaos(seed: int) -> None:
        """Each round: a random partition of every group and of the controller (a side may be empty)
        and one server of a random shard group crashed, for an election timeout or a little more; then
        the server restarted from its storage and the partitions healed for :data:`HEAL_S`."""
        prng = random.Random(seed)
        try:
            while not chaos_done.is_set():
                for gi in (CTRL, 0, 1, 2):
                    sides: list[list[int]] = [[], []]
                    for i in range(3):
                        sides[prng.randrange(2)].append(i)
                    cfg.partition(gi, sides[0], sides[1])
                victim = (prng.randrange(3), prng.randrange(3))
                cfg.shutdown_server(*victim)
                time.sleep(ELECTION_TIMEOUT_S + prng.randrange(200) / 1000)
                cfg.start_server(*victim)
                cfg.connect_all()
                rounds[0] += 1
                time.sleep(HEAL_S)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=client, args=(i, cfg.make_client(), rng.randrange(2**31)),
                                daemon=True, name=f"skv-client-{i}") for i in range(n)]
    chaos_thread = threading.Thread(target=chaos, args=(rng.randrange(2**31),), daemon=True, name="skv-chaos")
    for t in [*threads, chaos_thread]:
        t.start()
    ref.reconfigure_unreliably(cfg)
    time.sleep(CHAOS_AFTER_S)
    chaos_done.set()
    join_threads([chaos_thread], "the partitioner")
    cfg.connect_all()
    done.set()
    cfg.set_unreliable(False)
    join_threads(threads, "the clients")
    if errors:
        raise errors[0]
    print(f"partition rounds {rounds[0]}; operations per client {counts}")
    assert rounds[0] >= 5, f"only {rounds[0]} partition rounds ran"
    assert all(counts), f"a client completed no operation: {counts}"
    for key in ka:  # every shard is served again, by the groups the last configuration names
        rget(ck, key, rec, 0)
    cfg.check_logs()
    check_history(rec, "partitions and crashes, unreliable streams")


def _wait_for_leader(cfg: Any, gi: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        lead = cfg.leader(gi)
        if lead is not None:
            return lead  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"group {gi} elected no leader within {timeout:.0f} s"
        time.sleep(0.05)


def test_groups_restarted_as_new_actors_streams(stream_shardkv: Callable[..., Any]) -> None:
    """Every replica of group 100, then of group 101, killed and started again as a new actor on its
    durable storage (a new listener address under the same name), the leader first, while appenders run
    on unreliable streams and shards move: group 101 joins before 100 is restarted and 100 leaves right
    after (101 and 102 pull its shards from the new actors). The clerks made before, and the other
    groups, find the moved servers by name through Ray. Every value checked, the history linearizable."""
    import test_shardkv_5 as ref

    from linearizability import Recorder
    from raykv.testing.shardkv_harness import check_history

    cfg = stream_shardkv(3, True, -1, storage="durable")
    rng, rec = random.Random(cfg.seed), Recorder()
    ck = cfg.make_client()
    cfg.join(0)
    n = 10
    ka, va = ref.put_keys(ck, rec, n, 5, rng)
    appenders = ref.Appenders(cfg, ka, va, rec, 5, 0.010, rng.randrange(2**31))
    moved: list[tuple[int, int]] = []
    try:
        cfg.join(1)
        for gi, after in ((0, lambda: (cfg.join(2), cfg.leave(0))), (1, lambda: None)):
            first = _wait_for_leader(cfg, gi)
            for i in [first] + [j for j in range(cfg.n) if j != first]:
                old = cfg.groups[gi].addresses[i]
                cfg.restart_actor(gi, i)
                assert cfg.groups[gi].addresses[i] != old, "a new actor listens on a new address"
                moved.append((cfg.gid(gi), i))
                _wait_for_leader(cfg, gi)
            after()
            time.sleep(0.5)
        time.sleep(1.0)
    except BaseException:
        appenders.done.set()  # the failure above is the one to report
        raise
    appenders.stop()
    print(f"restarted as new actors (gid, server): {moved}")
    assert all(c > 0 for c in appenders.counts), f"an appender made no progress: {appenders.counts}"
    ref.check_all(ck, ka, va, rec)
    check_history(rec, "groups restarted as new actors, unreliable streams")
