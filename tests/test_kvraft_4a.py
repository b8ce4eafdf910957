"""kvraft 4A: the KV service without snapshots (ported from the reference suite; same scenarios and
bounds, every history checked for linearizability, every blocking step with a deadline)."""

from __future__ import annotations

import threading
import time

import pytest
from kvraft_generic import (
    JOIN_DEADLINE_S,
    check_concurrent_appends,
    check_history,
    generic_test,
    generic_test_speed,
    harness_factory,
    rappend,
    rget,
    rput,
)

from linearizability import Recorder
from raykv.testing.kv_harness import ELECTION_TIMEOUT_S

pytestmark = [pytest.mark.ray, pytest.mark.timeout(240)]


@pytest.fixture
def kv_harness(ray_session):
    yield from harness_factory()


def test_basic_4a(kv_harness):
    generic_test(kv_harness, 1, 5, False, False, False, -1, False)


def test_speed_4a(kv_harness):
    generic_test_speed(kv_harness, -1)


def test_concurrent_4a(kv_harness):
    generic_test(kv_harness, 5, 5, False, False, False, -1, False)


def test_unreliable_4a(kv_harness):
    generic_test(kv_harness, 5, 5, True, False, False, -1, False)


def test_unreliable_one_key_4a(kv_harness):
    """Concurrent appends to one key. As in the reference, nothing is recorded: blind appends with
    only a final read leave a checker an exponential number of orders to try; the tag checks below
    decide instead (every tag once, each client's in order)."""
    nservers, nclient, upto = 3, 5, 10
    cfg = kv_harness(nservers, True, -1)
    rec = None
    ck = cfg.make_client()
    rput(ck, "k", "", rec, 0)
    errors: list[BaseException] = []

    def client(me: int) -> None:
        myck = cfg.make_client()
        try:
            for n in range(upto):
                rappend(myck, "k", f"x {me} {n} y", rec, me + 1)
        except BaseException as e:
            errors.append(e)
        finally:
            cfg.delete_client(myck)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(nclient)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN_DEADLINE_S)
        assert not t.is_alive(), "a client did not finish"
    if errors:
        raise errors[0]
    vx = rget(ck, "k", rec, 0)
    check_concurrent_appends(vx, [upto] * nclient)


def test_one_partition_4a(kv_harness):
    """Progress in the majority, none in the minority, and completion after the heal."""
    nservers = 5
    cfg = kv_harness(nservers, False, -1)
    rec = Recorder()
    ck = cfg.make_client()
    rput(ck, "1", "13", rec, 0)

    # progress in majority
    p1, p2 = cfg.make_partition()
    cfg.partition(p1, p2)
    ckp1 = cfg.make_client(p1)  # connect ckp1 to p1
    ckp2a = cfg.make_client(p2)  # connect ckp2a to p2
    ckp2b = cfg.make_client(p2)  # connect ckp2b to p2
    rput(ckp1, "1", "14", rec, 1)
    assert rget(ckp1, "1", rec, 1) == "14"

    # no progress in minority
    done0, done1 = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def minority_put() -> None:
        try:
            rput(ckp2a, "1", "15", rec, 2)
            done0.set()
        except BaseException as e:
            errors.append(e)

    def minority_get() -> None:
        try:
            rget(ckp2b, "1", rec, 3)  # different clerk in p2
            done1.set()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=minority_put, daemon=True),
               threading.Thread(target=minority_get, daemon=True)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    assert not done0.is_set(), "Put in minority completed"
    assert not done1.is_set(), "Get in minority completed"
    assert rget(ckp1, "1", rec, 1) == "14"
    rput(ckp1, "1", "16", rec, 1)
    assert rget(ckp1, "1", rec, 1) == "16"

    # completion after heal
    cfg.connect_all()
    cfg.connect_client(ckp2a, list(range(nservers)))
    cfg.connect_client(ckp2b, list(range(nservers)))
    time.sleep(ELECTION_TIMEOUT_S)
    assert done0.wait(3.0), "Put did not complete"
    assert rget(ck, "1", rec, 0) == "15"
    for t in threads:  # stricter than the reference: the minority Get must complete too
        t.join(JOIN_DEADLINE_S)
        assert not t.is_alive(), "the minority Get did not complete after the heal"
    if errors:
        raise errors[0]
    check_history(rec, "one partition")


def test_many_partitions_one_client_4a(kv_harness):
    generic_test(kv_harness, 1, 5, False, False, True, -1, False)


def test_many_partitions_many_clients_4a(kv_harness):
    generic_test(kv_harness, 5, 5, False, False, True, -1, False)


def test_persist_one_client_4a(kv_harness):
    generic_test(kv_harness, 1, 5, False, True, False, -1, False)


def test_persist_concurrent_4a(kv_harness):
    generic_test(kv_harness, 5, 5, False, True, False, -1, False)


def test_persist_concurrent_unreliable_4a(kv_harness):
    generic_test(kv_harness, 5, 5, True, True, False, -1, False)


def test_persist_partition_4a(kv_harness):
    generic_test(kv_harness, 5, 5, False, True, True, -1, False)


def test_persist_partition_unreliable_4a(kv_harness):
    generic_test(kv_harness, 5, 5, True, True, True, -1, False)


def test_persist_partition_unreliable_linearizable_4a(kv_harness):
    generic_test(kv_harness, 15, 7, True, True, True, -1, True)
