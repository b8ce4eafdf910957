"""Raft 3C: persistence (ported from the reference suite; same scenarios and bounds)."""

from __future__ import annotations

import random
import threading
import time

import pytest

from raykv.testing.raft_harness import ELECTION_TIMEOUT_S

pytestmark = [pytest.mark.ray, pytest.mark.timeout(180)]


def test_persist1_3c(raft_harness):
    servers = 3
    cfg = raft_harness(servers)
    cfg.one(11, servers, True)
    # crash and re-start all
    for i in range(servers):
        cfg.start1(i)
    for i in range(servers):
        cfg.disconnect(i)
        cfg.connect(i)
    cfg.one(12, servers, True)

    leader1 = cfg.check_one_leader()
    cfg.disconnect(leader1)
    cfg.start1(leader1)
    cfg.connect(leader1)
    cfg.one(13, servers, True)

    leader2 = cfg.check_one_leader()
    cfg.disconnect(leader2)
    cfg.one(14, servers - 1, True)
    cfg.start1(leader2)
    cfg.connect(leader2)
    cfg.wait(4, servers, -1)  # wait for leader2 to join before killing i3

    i3 = (cfg.check_one_leader() + 1) % servers
    cfg.disconnect(i3)
    cfg.one(15, servers - 1, True)
    cfg.start1(i3)
    cfg.connect(i3)
    cfg.one(16, servers, True)


def test_persist2_3c(raft_harness):
    servers = 5
    cfg = raft_harness(servers)
    index = 1
    for _ in range(5):
        cfg.one(10 + index, servers, True)
        index += 1
        leader1 = cfg.check_one_leader()
        cfg.disconnect((leader1 + 1) % servers)
        cfg.disconnect((leader1 + 2) % servers)
        cfg.one(10 + index, servers - 2, True)
        index += 1
        cfg.disconnect((leader1 + 0) % servers)
        cfg.disconnect((leader1 + 3) % servers)
        cfg.disconnect((leader1 + 4) % servers)
        cfg.start1((leader1 + 1) % servers)
        cfg.start1((leader1 + 2) % servers)
        cfg.connect((leader1 + 1) % servers)
        cfg.connect((leader1 + 2) % servers)
        time.sleep(ELECTION_TIMEOUT_S)
        cfg.start1((leader1 + 3) % servers)
        cfg.connect((leader1 + 3) % servers)
        cfg.one(10 + index, servers - 2, True)
        index += 1
        cfg.connect((leader1 + 4) % servers)
        cfg.connect((leader1 + 0) % servers)
    cfg.one(1000, servers, True)


def test_persist3_3c(raft_harness):
    """Partitioned leader and one follower crash, leader restarts."""
    servers = 3
    cfg = raft_harness(servers)
    cfg.one(101, 3, True)
    leader = cfg.check_one_leader()
    cfg.disconnect((leader + 2) % servers)
    cfg.one(102, 2, True)
    cfg.crash1((leader + 0) % servers)
    cfg.crash1((leader + 1) % servers)
    cfg.connect((leader + 2) % servers)
    cfg.start1((leader + 0) % servers)
    cfg.connect((leader + 0) % servers)
    cfg.one(103, 2, True)
    cfg.start1((leader + 1) % servers)
    cfg.connect((leader + 1) % servers)
    cfg.one(104, servers, True)


def _start_everywhere(cfg, rng: random.Random, only_alive: bool) -> int:
    """Start a random command on every (live) peer at once; return a peer that accepted, or -1."""
    peers = [i for i in range(cfg.n) if cfg.alive[i] or not only_alive]
    answers = cfg.start_many([(i, rng.randrange(10000)) for i in peers])
    leader = -1
    for i, (_, _, ok) in zip(peers, answers, strict=True):
        if ok and (only_alive or cfg.connected[i]):
            leader = i
    return leader


def test_figure8_3c(raft_harness):
    """Figure 8 of the paper, with crashes: a leader must not commit an old term's entry by count."""
    servers = 5
    cfg = raft_harness(servers)
    rng = random.Random(cfg.seed)
    cfg.one(rng.randrange(2**31), 1, True)
    nup = servers
    for _ in range(1000):
        leader = _start_everywhere(cfg, rng, only_alive=True)
        if rng.randrange(1000) < 100:
            ms = rng.randrange(int(ELECTION_TIMEOUT_S * 1000) // 2)
        else:
            ms = rng.randrange(13)
        time.sleep(ms / 1000)
        if leader != -1:
            cfg.crash1(leader)
            nup -= 1
        if nup < 3:
            s = rng.randrange(servers)
            if not cfg.alive[s]:
                cfg.start1(s)
                cfg.connect(s)
                nup += 1
    for i in range(servers):
        if not cfg.alive[i]:
            cfg.start1(i)
            cfg.connect(i)
    cfg.one(rng.randrange(2**31), servers, True)


def test_unreliable_agree_3c(raft_harness):
    servers = 5
    cfg = raft_harness(servers, unreliable=True)
    threads = []
    errors: list[BaseException] = []

    def one(cmd: int) -> None:
        try:
            cfg.one(cmd, 1, True)
        except BaseException as e:  # surfaced in the main thread
            errors.append(e)

    for iters in range(1, 50):
        for j in range(4):
            t = threading.Thread(target=one, args=(100 * iters + j,))
            t.start()
            threads.append(t)
        cfg.one(iters, 1, True)
    cfg.set_unreliable(False)
    for t in threads:
        t.join()
    assert not errors, f"concurrent one() failed: {errors[0]}"
    cfg.one(100, servers, True)


def test_figure8_unreliable_3c(raft_harness):
    servers = 5
    cfg = raft_harness(servers, unreliable=True)
    rng = random.Random(cfg.seed)
    cfg.one(rng.randrange(10000), 1, True)
    nup = servers
    for iters in range(1000):
        if iters == 200:
            cfg.set_long_reordering(True)
        leader = _start_everywhere(cfg, rng, only_alive=False)
        if rng.randrange(1000) < 100:
            ms = rng.randrange(int(ELECTION_TIMEOUT_S * 1000) // 2)
        else:
            ms = rng.randrange(13)
        time.sleep(ms / 1000)
        if leader != -1 and rng.randrange(1000) < int(ELECTION_TIMEOUT_S * 1000) // 2:
            cfg.disconnect(leader)
            nup -= 1
        if nup < 3:
            s = rng.randrange(servers)
            if not cfg.connected[s]:
                cfg.connect(s)
                nup += 1
    for i in range(servers):
        if not cfg.connected[i]:
            cfg.connect(i)
    cfg.one(rng.randrange(10000), servers, True)


def _internal_churn(cfg, unreliable: bool) -> None:
    servers = cfg.n
    rng = random.Random(cfg.seed)
    stop = threading.Event()
    results: list[list[int]] = []
    errors: list[BaseException] = []

    def client(me: int) -> None:
        crng = random.Random(cfg.seed + me)
        values: list[int] = []
        try:
            while not stop.is_set():
                x = crng.randrange(2**31)
                index, ok = -1, False
                alive = [i for i in range(servers) if cfg.alive[i]]
                for index1, _, ok1 in cfg.start_many([(i, x) for i in alive]):
                    if ok1:
                        ok, index = True, index1
                if ok:
                    # maybe leader will commit our value, maybe not. but don't wait forever.
                    for to in (10, 20, 50, 100, 200):
                        nd, cmd = cfg.n_committed(index)
                        if nd > 0:
                            assert isinstance(cmd, int), f"wrong command type {cmd!r}"
                            if cmd == x:
                                values.append(x)
                            break
                        time.sleep(to / 1000)
                else:
                    time.sleep((79 + me * 17) / 1000)
        except BaseException as e:
            errors.append(e)
        results.append(values)

    ncli = 3
    threads = [threading.Thread(target=client, args=(i,), name=f"churn-client-{i}", daemon=True)
               for i in range(ncli)]
    for t in threads:
        t.start()
    for _ in range(20):
        if rng.randrange(1000) < 200:
            cfg.disconnect(rng.randrange(servers))
        if rng.randrange(1000) < 500:
            i = rng.randrange(servers)
            if not cfg.alive[i]:
                cfg.start1(i)
            cfg.connect(i)
        if rng.randrange(1000) < 200:
            i = rng.randrange(servers)
            if cfg.alive[i]:
                cfg.crash1(i)
        # Make crash/restart infrequent enough that the peers can often keep up, but not so
        # infrequent that everything has settled down from one change to the next.
        time.sleep(ELECTION_TIMEOUT_S * 7 / 10)
    time.sleep(ELECTION_TIMEOUT_S)
    cfg.set_unreliable(False)
    for i in range(servers):
        if not cfg.alive[i]:
            cfg.start1(i)
        cfg.connect(i)
    stop.set()
    deadline = time.monotonic() + 60
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    hung = [t.name for t in threads if t.is_alive()]
    assert not hung, f"client threads {hung} did not finish within 60 s of being told to stop"
    assert not errors, f"client failed: {errors[0]}"
    assert len(results) == ncli, f"only {len(results)} of {ncli} clients returned their values"
    time.sleep(ELECTION_TIMEOUT_S)
    last_index = cfg.one(rng.randrange(2**31), servers, True)
    really = set()
    for index in range(1, last_index + 1):
        v = cfg.wait(index, servers, -1)
        assert isinstance(v, int), "not an int"
        really.add(v)
    for values in results:
        for v1 in values:
            assert v1 in really, f"didn't find a value {v1}"


def test_reliable_churn_3c(raft_harness):
    _internal_churn(raft_harness(5), False)


def test_unreliable_churn_3c(raft_harness):
    _internal_churn(raft_harness(5, unreliable=True), True)
