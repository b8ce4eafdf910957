"""kvraft 4B: the KV service with snapshots, maxraftstate 1,000 bytes (ported from the reference
suite; same scenarios and bounds, every history checked, every blocking step with a deadline)."""

from __future__ import annotations

import time

import pytest
from kvraft_generic import check_history, generic_test, generic_test_speed, harness_factory, rget, rput

from linearizability import Recorder
from raykv.testing.kv_harness import ELECTION_TIMEOUT_S

pytestmark = [pytest.mark.ray, pytest.mark.timeout(240)]

MAXRAFTSTATE = 1000
MAXSNAPSHOTSTATE = 500


@pytest.fixture
def kv_harness(ray_session):
    yield from harness_factory()


def test_snapshot_rpc_4b(kv_harness):
    """A lagging server can catch up only through InstallSnapshot."""
    nservers = 3
    cfg = kv_harness(nservers, False, MAXRAFTSTATE)
    rec = Recorder()
    ck = cfg.make_client()
    rput(ck, "a", "A", rec, 0)
    assert rget(ck, "a", rec, 0) == "A"

    # a bunch of puts into the majority partition.
    cfg.partition([0, 1], [2])
    ck1 = cfg.make_client([0, 1])
    for i in range(50):
        rput(ck1, str(i), str(i), rec, 1)
    time.sleep(ELECTION_TIMEOUT_S)
    rput(ck1, "b", "B", rec, 1)

    # check that the majority partition has thrown away most of its log entries.
    sz = cfg.log_size()
    assert sz <= 8 * MAXRAFTSTATE, f"logs were not trimmed ({sz} > 8*{MAXRAFTSTATE})"

    # now make group that requires participation of lagging server, so that it has to catch up.
    cfg.partition([0, 2], [1])
    ck2 = cfg.make_client([0, 2])
    rput(ck2, "c", "C", rec, 2)
    rput(ck2, "d", "D", rec, 2)
    assert rget(ck2, "a", rec, 2) == "A"
    assert rget(ck2, "b", rec, 2) == "B"
    assert rget(ck2, "1", rec, 2) == "1"
    assert rget(ck2, "49", rec, 2) == "49"

    # now everybody
    cfg.partition([0, 1, 2], [])
    rput(ck, "e", "E", rec, 0)
    assert rget(ck, "c", rec, 0) == "C"
    assert rget(ck, "e", rec, 0) == "E"
    assert rget(ck, "1", rec, 0) == "1"
    check_history(rec, "snapshot rpc")


def test_snapshot_size_4b(kv_harness):
    """Logs are trimmed and snapshots stay small."""
    nservers = 3
    cfg = kv_harness(nservers, False, MAXRAFTSTATE)
    rec = Recorder()
    ck = cfg.make_client()
    for _ in range(200):
        rput(ck, "x", "0", rec, 0)
        assert rget(ck, "x", rec, 0) == "0"
        rput(ck, "x", "1", rec, 0)
        assert rget(ck, "x", rec, 0) == "1"
    # check that servers have thrown away most of their log entries
    sz = cfg.log_size()
    assert sz <= 8 * MAXRAFTSTATE, f"logs were not trimmed ({sz} > 8*{MAXRAFTSTATE})"
    # check that the snapshots are not unreasonably large
    ssz = cfg.snapshot_size()
    assert ssz <= MAXSNAPSHOTSTATE, f"snapshot too large ({ssz} > {MAXSNAPSHOTSTATE})"
    check_history(rec, "snapshot size")


def test_speed_4b(kv_harness):
    generic_test_speed(kv_harness, MAXRAFTSTATE)


def test_snapshot_recover_4b(kv_harness):
    generic_test(kv_harness, 1, 5, False, True, False, MAXRAFTSTATE, False)


def test_snapshot_recover_many_clients_4b(kv_harness):
    generic_test(kv_harness, 20, 5, False, True, False, MAXRAFTSTATE, False)


def test_snapshot_unreliable_4b(kv_harness):
    generic_test(kv_harness, 5, 5, True, False, False, MAXRAFTSTATE, False)


def test_snapshot_unreliable_recover_4b(kv_harness):
    generic_test(kv_harness, 5, 5, True, True, False, MAXRAFTSTATE, False)


def test_snapshot_unreliable_recover_concurrent_partition_4b(kv_harness):
    generic_test(kv_harness, 5, 5, True, True, True, MAXRAFTSTATE, False)


def test_snapshot_unreliable_recover_concurrent_partition_linearizable_4b(kv_harness):
    generic_test(kv_harness, 15, 7, True, True, True, MAXRAFTSTATE, True)
