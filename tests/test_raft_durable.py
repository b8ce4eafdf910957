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


def test_killed_process_recovers_every_acknowledged_command(ray_session, tmp_path):
    from actors.harness import RaftHarness

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

        t = threading.Thread(target=client)
        t.start()
        deadline = time.monotonic() + 30
        while len(acknowledged) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        leader = cfg.check_one_leader()
        before = len(acknowledged)
        term_before = cfg.states([leader])[0][0]
        cfg.kill_process(leader)  # SIGKILL-equivalent: volatile state and in-flight work are gone
        while len(acknowledged) < before + 10 and time.monotonic() < deadline + 30:
            time.sleep(0.05)
        cfg.replace_actor(leader)
        status = cfg.replicas[leader].status.remote()
        import ray

        st = ray.get(status)
        assert st["last_index"] >= before, f"restarted peer lost its log: {st}"
        assert st["term"] >= term_before, f"restarted peer lost its term: {st}"
        cfg.connect(leader)
        time.sleep(1.0)
        stop.set()
        t.join(timeout=60)
        assert not errors, f"client failed: {errors[0]}"
        last = cfg.one(99999, 3, True)
        for index in range(1, last + 1):
            cfg.wait(index, 3, -1)
        logs = ray.get([r.applied_log.remote() for r in cfg.replicas])
        for i, (log, errs) in enumerate(logs):
            assert not errs, f"peer {i}: {errs}"
            applied = set(log.values())
            missing = [c for c in acknowledged if c not in applied]
            assert not missing, f"peer {i} lost acknowledged commands {missing[:5]}"
        print(f"{len(acknowledged)} acknowledged commands survived the kill of peer {leader}")
        cfg.check_applied_logs()
    finally:
        cfg.kill()
