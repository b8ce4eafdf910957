"""The real thing behind the harness's in-actor crashes: kill a peer's process mid-traffic.

The reference-style suites model a crash inside the actor (cheap, and what the reference does). This
test proves the model honest: peers keep their state in durable :class:`FileStorage`; the leader's
actor process is killed with ``ray.kill`` while commands are flowing; a brand-new actor is started on
the same directory; and every command that was acknowledged (committed) before, during and after the
kill is still in every peer's log at the end, the restarted one included.
"""

from __future__ import annotations

import threading
import time

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.timeout(180)]


def _until(cond, deadline_s: float, what: str, poll_s: float = 0.05) -> None:
    """Poll ``cond`` until it holds; fail naming ``what`` if ``deadline_s`` passes first."""
    deadline = time.monotonic() + deadline_s
    while not cond():
        assert time.monotonic() < deadline, f"{what} (not within {deadline_s:.0f} s)"
        time.sleep(poll_s)


def test_killed_process_recovers_every_acknowledged_command(ray_session, tmp_path):
    import ray

    from raykv.testing.raft_harness import RaftHarness

    cfg = RaftHarness(3, storage_root=str(tmp_path))
    try:
        acknowledged: list[int] = []
        stop = threading.Event()
        errors: list[BaseException] = []

        def client() -> None:
            k = 0
            try:
                while not stop.is_set():
                    cfg.one(1000 + k, 2, True)
                    acknowledged.append(1000 + k)
                    k += 1
            except BaseException as e:
                errors.append(e)

        t = threading.Thread(target=client, daemon=True)
        t.start()
        _until(lambda: len(acknowledged) >= 20 or errors, 30, "20 commands acknowledged before the kill")
        assert not errors, f"client failed: {errors[0]}"
        leader = cfg.check_one_leader()
        before = len(acknowledged)
        term_before = cfg.states([leader])[0][0]
        cfg.kill_process(leader)  # SIGKILL-equivalent: volatile state and in-flight work are gone
        # The two survivors elect a leader and go on committing while the old one is dead.
        _until(lambda: len(acknowledged) >= before + 10 or errors, 30,
               f"10 more commands acknowledged while peer{leader} was dead (had {before})")
        assert not errors, f"client failed: {errors[0]}"
        cfg.replace_actor(leader)
        st = ray.get(cfg.replicas[leader].status.remote(), timeout=30)
        assert st["last_index"] >= before, f"restarted peer lost its log: {st}"
        assert st["term"] >= term_before, f"restarted peer lost its term: {st}"
        cfg.connect(leader)
        # It catches up: it applies a command acknowledged after it came back.
        after = len(acknowledged)
        _until(lambda: len(acknowledged) > after or errors, 30, "a command acknowledged after the restart")
        stop.set()
        t.join(timeout=60)
        assert not t.is_alive(), "the client did not stop"
        assert not errors, f"client failed: {errors[0]}"
        last = cfg.one(99999, 3, True)
        for index in range(1, last + 1):
            cfg.wait(index, 3, -1)
        for i in range(3):
            applied = set(cfg.applied_by(i).values())
            missing = [c for c in acknowledged if c not in applied]
            assert not missing, f"peer{i} lost acknowledged commands {missing[:5]}"
        print(f"{len(acknowledged)} acknowledged commands survived the kill of peer{leader}")
        cfg.check_applied_logs()
    finally:
        cfg.kill()


def test_a_peer_whose_storage_fails_stops_instead_of_answering(ray_session):
    """Fail-stop: after a failed write the peer neither leads, votes nor acknowledges anything."""
    import functools

    import ray

    from actors.replica import ReplicaSpec, replica_actor
    from actors.statemachine import ApplyRecorder

    # Defined here, not at module level, so that Ray ships the class itself to the actor's worker
    # (the test module is not importable there).
    class DiskFullAfter:
        """A storage whose writes start failing after ``ok_saves`` successful ones (a dying disk)."""

        def __init__(self, ok_saves: int) -> None:
            from actors.storage import MemoryStorage

            self.inner = MemoryStorage()
            self.left = ok_saves

        def save(self, hard_state, entries, snapshot) -> None:
            if self.left <= 0:
                raise OSError(28, "No space left on device")
            self.left -= 1
            self.inner.save(hard_state, entries, snapshot)

        def __getattr__(self, name: str):
            return getattr(self.inner, name)

    spec = ReplicaSpec(name="solo", peer_id=0, peers=(0,), state_machine=ApplyRecorder,
                       storage=functools.partial(DiskFullAfter, 3), election_ticks=3, heartbeat_ticks=1)
    peer = replica_actor().remote(spec)
    try:
        ray.get(peer.start.remote(1, ("direct", {})))
        _until(lambda: ray.get(peer.get_state.remote())[1], 10, "the single peer became leader")
        # Propose one command at a time; each is either applied (its save worked) or the peer stops.
        accepted = 0
        for k in range(10):
            index, _, ok = ray.get(peer.start_command.remote(k), timeout=30)
            if not ok:
                break
            accepted += 1

            def settled(index: int = index) -> bool:
                st = ray.get(peer.status.remote(), timeout=30)
                return st["role"] == "down" or st["applied"] >= index

            _until(settled, 10, f"command {k} (index {index}) neither applied nor the peer stopped")
        status = ray.get(peer.status.remote(), timeout=30)
        assert status["role"] == "down", f"a peer that cannot persist kept running: {status}"
        assert accepted < 10, "the peer kept accepting commands after its disk failed"
        assert ray.get(peer.start_command.remote("late"), timeout=30) == (-1, 0, False)
    finally:
        ray.kill(peer)
