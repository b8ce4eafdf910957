"""Raft 3D: log compaction (ported from the reference suite; same scenarios and bounds)."""

from __future__ import annotations

import random

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.timeout(180)]

MAXLOGSIZE = 2000
SNAPSHOT_INTERVAL = 10


def _snapcommon(raft_harness, disconnect: bool, reliable: bool, crash: bool) -> None:
    iters = 30
    servers = 3
    cfg = raft_harness(servers, unreliable=not reliable, snapshot=True)
    rng = random.Random(cfg.seed)
    cfg.one(rng.randrange(2**31), servers, True)
    leader1 = cfg.check_one_leader()
    for i in range(iters):
        victim = (leader1 + 1) % servers
        sender = leader1
        if i % 3 == 1:
            sender = (leader1 + 1) % servers
            victim = leader1
        if disconnect:
            cfg.disconnect(victim)
            cfg.one(rng.randrange(2**31), servers - 1, True)
        if crash:
            cfg.crash1(victim)
            cfg.one(rng.randrange(2**31), servers - 1, True)
        # perhaps send enough to get a snapshot
        nn = SNAPSHOT_INTERVAL // 2 + rng.randrange(SNAPSHOT_INTERVAL)
        for _ in range(nn):
            cfg.start(sender, rng.randrange(2**31))
        # let applier threads catch up with the Start()'s
        if not disconnect and not crash:
            # make sure all followers have caught up, so that an InstallSnapshot RPC isn't required
            # for TestSnapshotBasic3D().
            cfg.one(rng.randrange(2**31), servers, True)
        else:
            cfg.one(rng.randrange(2**31), servers - 1, True)
        size = cfg.log_size()
        assert size < MAXLOGSIZE, f"log size too large: {size} bytes (limit {MAXLOGSIZE})"
        if disconnect:
            # reconnect a follower, who maybe behind and needs to receive a snapshot to catch up.
            cfg.connect(victim)
            cfg.one(rng.randrange(2**31), servers, True)
            leader1 = cfg.check_one_leader()
        if crash:
            cfg.start1(victim)
            cfg.connect(victim)
            cfg.one(rng.randrange(2**31), servers, True)
            leader1 = cfg.check_one_leader()


def test_snapshot_basic_3d(raft_harness):
    _snapcommon(raft_harness, False, True, False)


def test_snapshot_install_3d(raft_harness):
    _snapcommon(raft_harness, True, True, False)


def test_snapshot_install_unreliable_3d(raft_harness):
    _snapcommon(raft_harness, True, False, False)


def test_snapshot_install_crash_3d(raft_harness):
    _snapcommon(raft_harness, False, True, True)


def test_snapshot_install_uncrash_3d(raft_harness):
    _snapcommon(raft_harness, False, False, True)


def test_snapshot_all_crash_3d(raft_harness):
    """Crash and restart all servers: the next index after restart is greater than before."""
    servers = 3
    iters = 5
    cfg = raft_harness(servers, snapshot=True)
    rng = random.Random(cfg.seed)
    cfg.one(rng.randrange(2**31), servers, True)
    for _ in range(iters):
        # perhaps enough to get a snapshot
        nn = SNAPSHOT_INTERVAL // 2 + rng.randrange(SNAPSHOT_INTERVAL)
        for _ in range(nn):
            cfg.one(rng.randrange(2**31), servers, True)
        index1 = cfg.one(rng.randrange(2**31), servers, True)
        cfg.crash_and_restart_all()  # crash all, revive all
        index2 = cfg.one(rng.randrange(2**31), servers, True)
        assert index2 >= index1 + 1, f"index decreased from {index1} to {index2}"


def test_snapshot_init_3d(raft_harness):
    """Do servers correctly initialize their in-memory copy of the snapshot, making sure that
    future writes to persistent state don't lose state?"""
    servers = 3
    cfg = raft_harness(servers, snapshot=True)
    rng = random.Random(cfg.seed)
    cfg.one(rng.randrange(2**31), servers, True)
    # enough ops to make a snapshot
    for _ in range(SNAPSHOT_INTERVAL + 1):
        cfg.one(rng.randrange(2**31), servers, True)
    cfg.crash_and_restart_all()  # crash all, revive all
    # a single op, to get something to be written back to persistent storage.
    cfg.one(rng.randrange(2**31), servers, True)
    cfg.crash_and_restart_all()  # crash all, revive all
    # do another op to trigger potential bug
    cfg.one(rng.randrange(2**31), servers, True)
