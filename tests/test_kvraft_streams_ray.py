"""kvraft's generic tests on the stream transport (issue 14, "the same correctness, tested"): the
reference's GenericTest (``tests/kvraft_generic.py``; its harness factory too) against a group started with
``kvraft.start_group(transport="stream")``, its faults made by the stream transport's seeded fault hook
instead of the faulty network actor (:mod:`raykv.testing.stream_kv_harness`): unreliable delivery on
every replica's and every clerk's streams, partitions as the replicas' ``cut`` sets, crashes of every
server's Raft peer and restarts from its storage. Each test asserts what the reference asserts (each
client's appends present once and in order, every Get of a client's own key equal to what it wrote)
and checks the whole history linearizable, to a definite verdict. Shorter than the reference's runs
(two iterations of 3 s): the network-transport suites keep the full length. One more test has a crash
the network transport cannot have: the leader's actor killed and started again as a new actor on its
durable storage, at a new address, while generic clients run on unreliable streams.

The pure part (the cut sets) is tested at the bottom without Ray.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

#: iterations and seconds per iteration of each generic run here (the reference: 3 x 5 s)
ITERATIONS = 2
RUN_S = 3.0


@pytest.fixture
def stream_harness(ray_session: None) -> Iterator[Callable[..., Any]]:
    """Factory of :class:`~raykv.testing.stream_kv_harness.StreamKVHarness` with generic_test's
    ``make(n, unreliable, maxraftstate)`` shape; checks and stops every harness it made."""
    from kvraft_generic import harness_factory

    from raykv.testing.stream_kv_harness import StreamKVHarness

    yield from harness_factory(StreamKVHarness, "stream kv harness")


def _generic(make: Callable[..., Any], nclients: int, nservers: int, unreliable: bool, crash: bool,
             partitions: bool) -> Any:
    from kvraft_generic import generic_test

    return generic_test(make, nclients, nservers, unreliable, crash, partitions, -1, False,
                        iterations=ITERATIONS, run_s=RUN_S)


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_unreliable_streams(stream_harness: Callable[..., Any]) -> None:
    """Unreliable 4A's shape: 5 clients, 5 servers, 10 % of requests and replies lost everywhere."""
    _generic(stream_harness, 5, 5, True, False, False)


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_many_partitions_many_clients_streams(stream_harness: Callable[..., Any]) -> None:
    """ManyPartitionsManyClients 4A's shape: the servers re-partitioned at random every ~1 s."""
    _generic(stream_harness, 5, 5, False, False, True)


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_persist_partition_unreliable_streams(stream_harness: Callable[..., Any]) -> None:
    """PersistPartitionUnreliable 4A's shape: unreliable, partitioned, and every server crashed and
    restarted from its storage at the end of each iteration."""
    _generic(stream_harness, 5, 5, True, True, True)


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_leader_restarted_as_new_actor_unreliable_streams(ray_session: None) -> None:
    """A crash the network transport cannot have: the leader's actor killed and a new one started on
    its durable storage (``KVGroup.restart_replica``: a new listener address, republished to the other
    replicas), twice, while 5 generic clients run on unreliable streams; the clerks made before find
    the moved servers through the replicas. Same assertions as the generic test."""
    import random
    import threading
    import time

    from kvraft_generic import _client, _join, _Run, check_clnt_appends, check_history, rget

    from linearizability import Recorder
    from raykv.testing.kv_harness import ELECTION_TIMEOUT_S
    from raykv.testing.stream_kv_harness import StreamKVHarness

    nclients, restarts = 5, 2
    cfg = StreamKVHarness(5, unreliable=True, storage="durable")
    try:
        rng = random.Random(cfg.seed)
        rec = Recorder()
        ck = cfg.make_client()
        run = _Run(nclients)
        threads = [threading.Thread(target=_client, args=(run, cfg, rec, cli, False, rng.randrange(2**31)),
                                    daemon=True, name=f"kv-client-{cli}") for cli in range(nclients)]
        for t in threads:
            t.start()
        moved = []
        for _ in range(restarts):
            time.sleep(1.5)
            ok, lead = cfg.leader()
            i = lead if ok else rng.randrange(cfg.n)
            old = cfg.group.addresses[i]
            cfg.restart_actor(i)
            assert cfg.group.addresses[i] != old, "a new actor listens on a new address"
            moved.append(i)
            time.sleep(ELECTION_TIMEOUT_S)
        time.sleep(1.5)
        run.done_clients.set()
        _join(threads, "the clients")
        if run.errors:
            raise run.errors[0]
        for cli in range(nclients):
            check_clnt_appends(cli, rget(ck, str(cli), rec, 0), run.counts[cli])
        print(f"restarted as new actors: {moved}; appends per client {run.counts}")
        assert all(c > 0 for c in run.counts), f"a client made no progress: {run.counts}"
        check_history(rec, "leader restarted as a new actor, unreliable streams")
    finally:
        print(f"stream kv harness seed {cfg.seed}: {cfg.summary()}")
        cfg.cleanup()


# ------------------------------------------------------------------------------------------------
# The cut sets (pure)
# ------------------------------------------------------------------------------------------------


def _symmetric(cuts: list[set[int]]) -> bool:
    return all((j in cuts[i]) == (i in cuts[j]) for i in range(len(cuts)) for j in range(len(cuts)))


def test_partition_cuts_split_the_sides() -> None:
    from raykv.testing.stream_cuts import no_cuts, partition_cuts

    cuts = partition_cuts(5, [0, 1, 2], [3, 4])
    assert cuts == [{3, 4}, {3, 4}, {3, 4}, {0, 1, 2}, {0, 1, 2}]
    assert partition_cuts(3, [0, 1, 2], []) == no_cuts(3)
    # a server on neither side reaches nobody; an empty side is allowed (the partitioner draws them)
    assert partition_cuts(3, [0], [1]) == [{1, 2}, {0, 2}, {0, 1}]
    assert partition_cuts(2, [], [0, 1]) == [set(), set()]
    for cuts in (partition_cuts(5, [4, 0], [2]), partition_cuts(4, [], [3, 1])):
        assert _symmetric(cuts) and all(i not in c for i, c in enumerate(cuts))


def test_partition_cuts_refuse_bad_sides() -> None:
    from raykv.testing.stream_cuts import partition_cuts

    with pytest.raises(ValueError, match="both sides"):
        partition_cuts(3, [0, 1], [1])
    with pytest.raises(ValueError, match=r"servers are 0\.\.2"):
        partition_cuts(3, [0, 3], [])
    with pytest.raises(ValueError, match="at least one server"):
        partition_cuts(0, [], [])


def test_isolate_cuts_one_server_both_ways() -> None:
    from raykv.testing.stream_cuts import isolate, partition_cuts

    before = partition_cuts(4, [0, 1], [2, 3])
    after = isolate(before, 1)
    assert after == [{1, 2, 3}, {0, 2, 3}, {0, 1}, {0, 1}]
    assert before == partition_cuts(4, [0, 1], [2, 3])  # not changed in place
    assert _symmetric(after)
    with pytest.raises(ValueError, match="not one of the 4"):
        isolate(before, 4)


def test_clerk_cut_names_the_unreachable_servers() -> None:
    from raykv.testing.stream_cuts import clerk_cut

    names = ("kv-0", "kv-1", "kv-2")
    assert clerk_cut(names, None) == set()
    assert clerk_cut(names, [0, 2]) == {"kv-1"}
    assert clerk_cut(names, []) == set(names)
    with pytest.raises(ValueError, match=r"servers are 0\.\.2"):
        clerk_cut(names, [3])
