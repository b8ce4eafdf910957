"""Raft 3B: log replication (ported from the reference suite; same scenarios and bounds)."""

from __future__ import annotations

import random
import string
import threading
import time

import pytest

from raykv.testing.raft_harness import ELECTION_TIMEOUT_S

pytestmark = [pytest.mark.ray, pytest.mark.timeout(180)]


def randstring(rng: random.Random, n: int) -> str:
    return "".join(rng.choices(string.ascii_letters + string.digits, k=n))


def test_basic_agree_3b(raft_harness):
    servers = 3
    cfg = raft_harness(servers)
    for index in range(1, 4):
        nd, _ = cfg.n_committed(index)
        assert nd == 0, "some have committed before Start()"
        xindex = cfg.one(index * 100, servers, False)
        assert xindex == index, f"got index {xindex} but expected {index}"


def test_rpc_bytes_3b(raft_harness):
    """Each command is sent to each peer just once: bytes <= servers x payload + 50,000."""
    servers = 3
    cfg = raft_harness(servers)
    rng = random.Random(cfg.seed)
    cfg.one(99, servers, False)
    bytes0 = cfg.bytes_total()
    sent = 0
    for index in range(2, 12):
        cmd = randstring(rng, 5000)
        xindex = cfg.one(cmd, servers, False)
        assert xindex == index, f"got index {xindex} but expected {index}"
        sent += len(cmd)
    got = cfg.bytes_total() - bytes0
    expected = servers * sent
    print(f"bytes: got {got}, payload {sent}, bound {expected + 50000}")
    assert got <= expected + 50000, f"too many RPC bytes; got {got}, expected {expected}"


def test_follower_failure_3b(raft_harness):
    servers = 3
    cfg = raft_harness(servers)
    cfg.one(101, servers, False)
    # disconnect one follower from the network.
    leader1 = cfg.check_one_leader()
    cfg.disconnect((leader1 + 1) % servers)
    # the leader and remaining follower should be able to agree despite the disconnected follower.
    cfg.one(102, servers - 1, False)
    time.sleep(ELECTION_TIMEOUT_S)
    cfg.one(103, servers - 1, False)
    # disconnect the remaining follower
    leader2 = cfg.check_one_leader()
    cfg.disconnect((leader2 + 1) % servers)
    cfg.disconnect((leader2 + 2) % servers)
    # submit a command.
    index, _, ok = cfg.start(leader2, 104)
    assert ok, "leader rejected Start()"
    assert index == 4, f"expected index 4, got {index}"
    time.sleep(2 * ELECTION_TIMEOUT_S)
    # check that command 104 did not commit.
    n, _ = cfg.n_committed(index)
    assert n == 0, f"{n} committed but no majority"


def test_leader_failure_3b(raft_harness):
    servers = 3
    cfg = raft_harness(servers)
    cfg.one(101, servers, False)
    # disconnect the first leader.
    leader1 = cfg.check_one_leader()
    cfg.disconnect(leader1)
    # the remaining followers should elect a new leader.
    cfg.one(102, servers - 1, False)
    time.sleep(ELECTION_TIMEOUT_S)
    cfg.one(103, servers - 1, False)
    # disconnect the new leader.
    leader2 = cfg.check_one_leader()
    cfg.disconnect(leader2)
    # submit a command to each server.
    for i in range(servers):
        cfg.start(i, 104)
    time.sleep(2 * ELECTION_TIMEOUT_S)
    # check that command 104 did not commit.
    n, _ = cfg.n_committed(4)
    assert n == 0, f"{n} committed but no majority"


def test_fail_agree_3b(raft_harness):
    """A follower reconnects after missing entries and catches up."""
    servers = 3
    cfg = raft_harness(servers)
    cfg.one(101, servers, False)
    # disconnect one follower from the network.
    leader = cfg.check_one_leader()
    cfg.disconnect((leader + 1) % servers)
    # the leader and remaining follower should be able to agree despite the disconnected follower.
    cfg.one(102, servers - 1, False)
    cfg.one(103, servers - 1, False)
    time.sleep(ELECTION_TIMEOUT_S)
    cfg.one(104, servers - 1, False)
    cfg.one(105, servers - 1, False)
    # re-connect
    cfg.connect((leader + 1) % servers)
    # the full set of servers should preserve previous agreements, and be able to agree on new ones.
    cfg.one(106, servers, True)
    time.sleep(ELECTION_TIMEOUT_S)
    cfg.one(107, servers, True)


def test_fail_no_agree_3b(raft_harness):
    """No agreement if too many followers disconnect."""
    servers = 5
    cfg = raft_harness(servers)
    cfg.one(10, servers, False)
    # 3 of 5 followers disconnect
    leader = cfg.check_one_leader()
    cfg.disconnect((leader + 1) % servers)
    cfg.disconnect((leader + 2) % servers)
    cfg.disconnect((leader + 3) % servers)
    index, _, ok = cfg.start(leader, 20)
    assert ok, "leader rejected Start()"
    assert index == 2, f"expected index 2, got {index}"
    time.sleep(2 * ELECTION_TIMEOUT_S)
    n, _ = cfg.n_committed(index)
    assert n == 0, f"{n} committed but no majority"
    # repair
    cfg.connect((leader + 1) % servers)
    cfg.connect((leader + 2) % servers)
    cfg.connect((leader + 3) % servers)
    # the disconnected majority may have chosen a leader from among their own ranks, forgetting
    # index 2.
    leader2 = cfg.check_one_leader()
    index2, _, ok2 = cfg.start(leader2, 30)
    assert ok2, "leader2 rejected Start()"
    assert 2 <= index2 <= 3, f"unexpected index {index2}"
    cfg.one(1000, servers, True)


def test_concurrent_starts_3b(raft_harness):
    servers = 3
    cfg = raft_harness(servers)
    success = False
    for attempt in range(5):
        if attempt > 0:
            time.sleep(3)  # give solution some time to settle
        leader = cfg.check_one_leader()
        _, term, ok = cfg.start(leader, 1)
        if not ok:
            continue  # leader moved on really quickly
        iters = 5
        indexes: list[int] = []
        lock = threading.Lock()

        def starter(ii: int, term: int = term, leader: int = leader,
                    indexes: list[int] = indexes, lock: threading.Lock = lock) -> None:
            i, term1, ok1 = cfg.start(leader, 100 + ii)
            if term1 != term or not ok1:
                return
            with lock:
                indexes.append(i)

        threads = [threading.Thread(target=starter, args=(ii,)) for ii in range(iters)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if any(t != term for t, _ in cfg.states(list(range(servers)))):
            continue  # term changed -- can't expect low RPC counts
        failed = False
        cmds = []
        for index in indexes:
            cmd = cfg.wait(index, servers, term)
            if cmd == -1:
                failed = True  # peers have moved on to later terms
                break
            assert isinstance(cmd, int), f"value {cmd!r} is not an int"
            cmds.append(cmd)
        if failed:
            continue
        for ii in range(iters):
            assert 100 + ii in cmds, f"cmd {100 + ii} missing in {cmds}"
        success = True
        break
    assert success, "term changed too often"


def test_rejoin_3b(raft_harness):
    """A partitioned leader rejoins and its uncommitted entries are replaced."""
    servers = 3
    cfg = raft_harness(servers)
    cfg.one(101, servers, True)
    # leader network failure
    leader1 = cfg.check_one_leader()
    cfg.disconnect(leader1)
    # make old leader try to agree on some entries
    cfg.start(leader1, 102)
    cfg.start(leader1, 103)
    cfg.start(leader1, 104)
    # new leader commits, also for index=2
    cfg.one(103, 2, True)
    # new leader network failure
    leader2 = cfg.check_one_leader()
    cfg.disconnect(leader2)
    # old leader connected again
    cfg.connect(leader1)
    cfg.one(104, 2, True)
    # all together now
    cfg.connect(leader2)
    cfg.one(105, servers, True)


def test_backup_3b(raft_harness):
    """A leader backs up quickly over incorrect follower logs (fast backtracking)."""
    servers = 5
    cfg = raft_harness(servers)
    rng = random.Random(cfg.seed)
    cfg.one(rng.randrange(2**31), servers, True)
    # put leader and one follower in a partition
    leader1 = cfg.check_one_leader()
    cfg.disconnect((leader1 + 2) % servers)
    cfg.disconnect((leader1 + 3) % servers)
    cfg.disconnect((leader1 + 4) % servers)
    # submit lots of commands that won't commit
    for _ in range(50):
        cfg.start(leader1, rng.randrange(2**31))
    time.sleep(ELECTION_TIMEOUT_S / 2)
    cfg.disconnect((leader1 + 0) % servers)
    cfg.disconnect((leader1 + 1) % servers)
    # allow other partition to recover
    cfg.connect((leader1 + 2) % servers)
    cfg.connect((leader1 + 3) % servers)
    cfg.connect((leader1 + 4) % servers)
    # lots of successful commands to new group.
    for _ in range(50):
        cfg.one(rng.randrange(2**31), 3, True)
    # now another partitioned leader and one follower
    leader2 = cfg.check_one_leader()
    other = (leader1 + 2) % servers
    if leader2 == other:
        other = (leader2 + 1) % servers
    cfg.disconnect(other)
    # lots more commands that won't commit
    for _ in range(50):
        cfg.start(leader2, rng.randrange(2**31))
    time.sleep(ELECTION_TIMEOUT_S / 2)
    # bring original leader back to life,
    for i in range(servers):
        cfg.disconnect(i)
    cfg.connect((leader1 + 0) % servers)
    cfg.connect((leader1 + 1) % servers)
    cfg.connect(other)
    # lots of successful commands to new group.
    for _ in range(50):
        cfg.one(rng.randrange(2**31), 3, True)
    # now everyone
    for i in range(servers):
        cfg.connect(i)
    cfg.one(rng.randrange(2**31), servers, True)


def test_count_3b(raft_harness):
    """RPC counts: election <= 30, 11 commands <= (10+1+3) x 3, 1 s idle <= 3 x 20."""
    servers = 3
    cfg = raft_harness(servers)
    rng = random.Random(cfg.seed)

    def rpcs() -> int:
        return sum(cfg.rpc_count(j) for j in range(servers))

    leader = cfg.check_one_leader()
    total1 = rpcs()
    print(f"RPCs to elect the first leader: {total1}")
    assert 1 <= total1 <= 30, f"too many or few RPCs ({total1}) to elect initial leader"

    success = False
    total2 = 0
    iters = 10
    for attempt in range(5):
        if attempt > 0:
            time.sleep(3)  # give solution some time to settle
        leader = cfg.check_one_leader()
        total1 = rpcs()
        starti, term, ok = cfg.start(leader, 1)
        if not ok:
            continue  # leader moved on really quickly
        cmds = []
        moved_on = False
        for i in range(1, iters + 2):
            x = rng.randrange(2**31)
            cmds.append(x)
            index1, term1, ok = cfg.start(leader, x)
            if term1 != term or not ok:
                moved_on = True  # term changed while starting
                break
            assert starti + i == index1, "Start() failed"
        if moved_on:
            continue
        for i in range(1, iters + 1):
            cmd = cfg.wait(starti + i, servers, term)
            if cmd == -1:
                moved_on = True  # term changed -- try again
                break
            assert cmd == cmds[i - 1], f"wrong value {cmd} committed for index {starti + i}"
        if moved_on:
            continue
        if any(t != term for t, _ in cfg.states(list(range(servers)))):
            continue  # term changed -- can't expect low RPC counts
        total2 = rpcs()
        print(f"RPCs for {iters + 1} commands: {total2 - total1} (bound {(iters + 1 + 3) * 3})")
        assert total2 - total1 <= (iters + 1 + 3) * 3, (
            f"too many RPCs ({total2 - total1}) for {iters} entries")
        success = True
        break
    assert success, "term changed too often"

    time.sleep(ELECTION_TIMEOUT_S)
    total3 = rpcs()
    print(f"RPCs in 1 s of idleness: {total3 - total2} (bound {3 * 20})")
    assert total3 - total2 <= 3 * 20, f"too many RPCs ({total3 - total2}) for 1 second of idleness"
