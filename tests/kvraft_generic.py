"""Shared machinery of the kvraft suites: the harness fixture body, the reference's GenericTest and
GenericTestSpeed, the append-tag checks, and the linearizability check of recorded histories.

Stricter than the reference where it is lax:

- every clerk call has a deadline (:data:`OP_TIMEOUT_S`), so a lost operation fails the test instead
  of hanging it; every thread is joined with a deadline;
- every history is checked (not only those of the "linearizable" tests), and the check must reach a
  definite verdict within :data:`CHECK_TIMEOUT_S`: "unknown" fails, where the reference accepts it.
"""

from __future__ import annotations

import os
import random
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from kvraft.clerk import Clerk
from linearizability import KVModel, Recorder, Verdict, check, write_html
from raykv.testing.kv_harness import ELECTION_TIMEOUT_S, KVHarness

#: deadline of one clerk operation in the tests (the reference retries forever)
OP_TIMEOUT_S = 30.0
#: budget of the linearizability check; an "unknown" verdict fails the test
CHECK_TIMEOUT_S = 30.0
#: how long to wait for a client or partitioner thread to finish
JOIN_DEADLINE_S = 60.0
#: the reference's GenericTestSpeed bound: 1,000 ops at 3 per 100 ms heartbeat interval
SPEED_OPS = 1000
SPEED_BOUND_S = SPEED_OPS * 0.1 / 3


def harness_factory(harness: Callable[..., Any] = KVHarness,
                    label: str = "kv harness") -> Iterator[Callable[..., Any]]:
    """The body of the ``kv_harness`` fixture: make harnesses (``KVHarness``, or another class with its
    constructor, e.g. the stream transport's), then check and kill them all."""
    made: list[Any] = []

    def make(n: int, unreliable: bool = False, maxraftstate: int = -1) -> Any:
        h = harness(n, unreliable=unreliable, maxraftstate=maxraftstate)
        made.append(h)
        return h

    yield make
    failures = []
    for h in made:
        try:
            print(f"{label} seed {h.seed}: {h.summary()}")
            h.cleanup()
        except AssertionError as e:
            failures.append(str(e))
    if failures:
        raise AssertionError("; ".join(failures))


# ------------------------------------------------------------------------------------------------
# Recorded clerk calls
# ------------------------------------------------------------------------------------------------


def rget(ck: Clerk, key: str, rec: Recorder | None, client: Any) -> str:
    if rec is None:
        return ck.get(key, timeout=OP_TIMEOUT_S)
    with rec.operation(client, ("get", key)) as op:
        op.output = ck.get(key, timeout=OP_TIMEOUT_S)
    return op.output


def rput(ck: Clerk, key: str, value: str, rec: Recorder | None, client: Any) -> None:
    if rec is None:
        ck.put(key, value, timeout=OP_TIMEOUT_S)
        return
    with rec.operation(client, ("put", key, value)):
        ck.put(key, value, timeout=OP_TIMEOUT_S)


def rappend(ck: Clerk, key: str, value: str, rec: Recorder | None, client: Any) -> None:
    if rec is None:
        ck.append(key, value, timeout=OP_TIMEOUT_S)
        return
    with rec.operation(client, ("append", key, value)):
        ck.append(key, value, timeout=OP_TIMEOUT_S)


def check_history(rec: Recorder, label: str) -> None:
    """The whole history must be linearizable, decided within :data:`CHECK_TIMEOUT_S`."""
    history = rec.history()
    t = time.monotonic()
    result = check(history, KVModel(), timeout=CHECK_TIMEOUT_S)
    took = time.monotonic() - t
    print(f"{label}: {len(history)} operations, {result.verdict} in {took:.2f} s")
    if result.verdict is not Verdict.LINEARIZABLE:
        fd, path = tempfile.mkstemp(prefix="kvraft-", suffix=".html")
        os.close(fd)
        write_html(result, path)
        if result.verdict is Verdict.UNKNOWN:
            raise AssertionError(f"{label}: the linearizability check gave no verdict within "
                                 f"{CHECK_TIMEOUT_S:.0f} s ({len(history)} ops); report: {path}")
        raise AssertionError(f"{label}: history is not linearizable; visualisation: {path}")


def check_clnt_appends(clnt: int, v: str, count: int) -> None:
    """Every tag ``x clnt j y`` for j < count is in ``v`` once, in order."""
    lastoff = -1
    for j in range(count):
        wanted = f"x {clnt} {j} y"
        off = v.find(wanted)
        assert off >= 0, f"{clnt} missing element {wanted!r} in Append result {v!r:.300}"
        off1 = v.rfind(wanted)
        assert off1 == off, f"duplicate element {wanted!r} in Append result"
        assert off > lastoff, f"wrong order for element {wanted!r} in Append result"
        lastoff = off


def check_concurrent_appends(v: str, counts: list[int]) -> None:
    for i, count in enumerate(counts):
        check_clnt_appends(i, v, count)


def _join(threads: list[threading.Thread], what: str) -> None:
    deadline = time.monotonic() + JOIN_DEADLINE_S
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
        assert not t.is_alive(), f"{what} did not finish within {JOIN_DEADLINE_S:.0f} s"


# ------------------------------------------------------------------------------------------------
# GenericTest
# ------------------------------------------------------------------------------------------------


class _Run:
    """What one iteration's threads share."""

    def __init__(self, nclients: int) -> None:
        self.nclients = nclients
        self.done_clients = threading.Event()
        self.done_partitioner = threading.Event()
        self.counts = [0] * nclients
        self.errors: list[BaseException] = []


def _client(run: _Run, cfg: KVHarness, rec: Recorder, cli: int, randomkeys: bool, seed: int) -> None:
    """One GenericTest client: 50% appends, (random keys: 5% puts), otherwise gets."""
    crng = random.Random(seed)
    myck = cfg.make_client()
    j = 0
    try:
        last = ""
        if not randomkeys:
            rput(myck, str(cli), last, rec, cli + 1)
        while not run.done_clients.is_set():
            key = str(crng.randrange(run.nclients)) if randomkeys else str(cli)
            nv = f"x {cli} {j} y"
            if crng.randrange(1000) < 500:
                rappend(myck, key, nv, rec, cli + 1)
                if not randomkeys:
                    last += nv
                j += 1
            elif randomkeys and crng.randrange(1000) < 100:
                rput(myck, key, nv, rec, cli + 1)
                j += 1
            else:
                v = rget(myck, key, rec, cli + 1)
                if not randomkeys and v != last:
                    raise AssertionError(f"get wrong value, key {key!r}, wanted:\n{last!r}\n, got\n{v!r}")
    except BaseException as e:  # reported by the main thread
        run.errors.append(e)
    finally:
        run.counts[cli] = j
        cfg.delete_client(myck)


def _partitioner(run: _Run, cfg: KVHarness, seed: int) -> None:
    """Every 1-1.2 s, put every server on a random side (a side may be empty). As in the reference,
    each partition is slept out in full, the last one too: being told to stop does not cut it short."""
    prng = random.Random(seed)
    try:
        while not run.done_partitioner.is_set():
            sides: list[list[int]] = [[], []]
            for i in range(cfg.n):
                sides[prng.randrange(2)].append(i)
            cfg.partition(sides[0], sides[1])
            time.sleep(ELECTION_TIMEOUT_S + prng.randrange(200) / 1000)
    except BaseException as e:
        run.errors.append(e)


def generic_test(
    make: Callable[..., KVHarness],
    nclients: int,
    nservers: int,
    unreliable: bool,
    crash: bool,
    partitions: bool,
    maxraftstate: int,
    randomkeys: bool,
    iterations: int = 3,
    run_s: float = 5.0,
) -> KVHarness:
    """The reference GenericTest (catalogue, Part 3), every history checked."""
    cfg = make(nservers, unreliable, maxraftstate)
    rng = random.Random(cfg.seed)
    rec = Recorder()
    ck = cfg.make_client()
    label = (f"generic(clients={nclients}, servers={nservers}, unreliable={unreliable}, crash={crash}, "
             f"partitions={partitions}, maxraftstate={maxraftstate}, randomkeys={randomkeys})")
    for it in range(iterations):
        run = _Run(nclients)
        threads = [threading.Thread(target=_client, args=(run, cfg, rec, cli, randomkeys,
                                                          rng.randrange(2**31)),
                                    daemon=True, name=f"kv-client-{cli}") for cli in range(nclients)]
        for t in threads:
            t.start()
        part_thread = None
        if partitions:
            time.sleep(1.0)  # allow the clients to perform some operations without interruption
            part_thread = threading.Thread(target=_partitioner, args=(run, cfg, rng.randrange(2**31)),
                                           daemon=True)
            part_thread.start()
        time.sleep(run_s)
        run.done_clients.set()
        run.done_partitioner.set()
        if part_thread is not None:
            _join([part_thread], "the partitioner")
            cfg.connect_all()
            # wait for a while so that we have a new term
            time.sleep(ELECTION_TIMEOUT_S)
        if crash:
            for i in range(nservers):
                cfg.shutdown_server(i)
            # wait for a while so that we have a new term
            time.sleep(ELECTION_TIMEOUT_S)
            for i in range(nservers):
                cfg.start_server(i)
            cfg.connect_all()
        _join(threads, "the clients")
        if run.errors:
            raise run.errors[0]
        for i in range(nclients):
            v = rget(ck, str(i), rec, 0)
            if not randomkeys:
                check_clnt_appends(i, v, run.counts[i])
        if maxraftstate > 0:
            # Check maximum after the servers have processed all client requests and had time to
            # checkpoint.
            sz = cfg.log_size()
            assert sz <= 8 * maxraftstate, f"logs were not trimmed ({sz} > 8*{maxraftstate})"
        if maxraftstate < 0:
            # Check that snapshots are not used
            ssz = cfg.snapshot_size()
            assert ssz == 0, f"snapshot too large ({ssz}), should not be used when maxraftstate = -1"
        print(f"iteration {it}: appends per client {run.counts}, {cfg.elapsed():.1f} s")
    check_history(rec, label)
    return cfg


def generic_test_speed(make: Callable[..., KVHarness], maxraftstate: int) -> float:
    """The reference GenericTestSpeed: 1,000 sequential appends within 33.3 s. Returns the time."""
    cfg = make(3, False, maxraftstate)
    rec = Recorder()
    ck = cfg.make_client()
    # wait until first op completes, so we know a leader is elected and KV servers are ready to
    # process client requests
    rget(ck, "x", rec, 0)
    start = time.monotonic()
    for i in range(SPEED_OPS):
        rappend(ck, "x", f"x 0 {i} y", rec, 0)
    dur = time.monotonic() - start
    v = rget(ck, "x", rec, 0)
    check_clnt_appends(0, v, SPEED_OPS)
    print(f"{SPEED_OPS} appends in {dur:.2f} s ({dur / SPEED_OPS * 1000:.2f} ms/op); "
          f"bound {SPEED_BOUND_S:.1f} s")
    assert dur <= SPEED_BOUND_S, (
        f"operations completed too slowly: {dur / SPEED_OPS * 1000:.1f} ms/op > "
        f"{SPEED_BOUND_S / SPEED_OPS * 1000:.1f} ms/op")
    check_history(rec, "speed")
    return dur
