"""Membership change through replica actors (Ray): a replica started empty joins a running group.

Three replicas (direct transport, memory storage, the Raft suites' recorder snapshotting every 10
entries) elect a leader and commit commands; a fourth replica is started with ``join=True`` and an
empty log, every replica learns how to reach it (``add_peer``), and the leader adds it as a learner:
it catches up (by snapshot), is promoted once caught up, and a bootstrap replica is then removed and
killed; the group of three that is left keeps committing, and every replica applied the same commands.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import pytest
import ray

from actors.replica import ReplicaSpec, replica_actor
from actors.statemachine import ApplyRecorder
from raft.membership import ADD_LEARNER, PROMOTE, REMOVE, ConfChangeRefused

pytestmark = [pytest.mark.ray, pytest.mark.timeout(120)]


def _until(what: str, cond: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _spec(i: int, join: bool = False) -> ReplicaSpec:
    return ReplicaSpec(name=f"m{i}", peer_id=i, peers=(0, 1, 2), join=join, seed=i,
                       state_machine=functools.partial(ApplyRecorder, snapshot_interval=10))


def test_a_replica_started_empty_joins_is_promoted_and_a_bootstrap_one_is_removed(
        ray_session: None) -> None:
    cls = replica_actor()
    reps: dict[int, Any] = {i: cls.remote(_spec(i)) for i in range(3)}
    handles = dict(reps)
    ray.get([r.start.remote(1, ("direct", handles)) for r in reps.values()])
    try:
        def leader() -> int | None:
            states = ray.get([reps[i].get_state.remote() for i in sorted(reps)])
            leads = [(t, i) for i, (t, is_l) in zip(sorted(reps), states, strict=True) if is_l]
            return max(leads)[1] if leads else None

        def submit(cmd: Any) -> int:
            def attempt() -> int | None:
                lead = leader()
                if lead is None:
                    return None
                idx, _, ok = ray.get(reps[lead].start_command.remote(cmd))
                return idx if ok else None
            idx = _until(f"a leader to accept {cmd!r}", attempt)
            _until(f"{cmd!r} applied everywhere",
                   lambda: all(ray.get(reps[i].applied_at.remote(idx))[0] for i in reps))
            return idx

        def change(op: str, peer: int) -> int:
            def attempt() -> int | None:
                lead = leader()
                if lead is None:
                    return None
                try:
                    idx, _, ok = ray.get(reps[lead].change_membership.remote(op, peer))
                except ConfChangeRefused:
                    return None  # retried: not caught up yet, or the previous change not committed
                return idx if ok else None
            return _until(f"{op} P{peer} accepted", attempt)

        for k in range(25):
            submit(("before", k))
        # A fourth replica, started empty, joins; every replica learns how to reach it.
        reps[3] = cls.remote(_spec(3, join=True))
        handles[3] = reps[3]
        ray.get(reps[3].start.remote(1, ("direct", handles)))
        ray.get([reps[i].add_peer.remote(3, reps[3]) for i in range(3)])
        assert ray.get(reps[3].get_state.remote()) == (0, False)
        change(ADD_LEARNER, 3)
        idx = submit(("with a learner", 0))  # replica 3 applied it too (submit waits for all four)
        st = ray.get(reps[3].status.remote())
        assert st["learners"] == [3] and st["snapshot_index"] > 0, st  # caught up by snapshot
        change(PROMOTE, 3)
        _until("P3 a voter everywhere",
               lambda: all(ray.get(reps[i].status.remote())["voters"] == [0, 1, 2, 3] for i in reps))
        # Remove bootstrap replica 0 (perhaps the leader: it steps down once the removal commits).
        change(REMOVE, 0)
        _until("P0 removed everywhere",
               lambda: all(ray.get(reps[i].status.remote())["voters"] == [1, 2, 3] for i in (1, 2, 3)))
        gone = reps.pop(0)
        ray.kill(gone)
        for k in range(10):
            idx = submit(("after", k))
        logs = [ray.get(reps[i].applied_log.remote())[0] for i in sorted(reps)]
        assert all(lg.get(idx) == ("after", 9) for lg in logs)
        for i in range(1, idx + 1):
            assert len({repr(lg.get(i)) for lg in logs if i in lg}) == 1, f"peers disagree at {i}"
    finally:
        for r in reps.values():
            ray.kill(r)
