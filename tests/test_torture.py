"""``raykv torture``'s short form on Ray: one campaign of 15 s against a real sharded service (a controller
and 2 groups of 3 replicas, every RPC through the faulty network, durable storage), on the test
session's Ray runtime, with a fixed schedule that isolates replicas (one of them a leader), crashes
and restarts one, joins and removes groups and moves a shard. The history must be linearizable to a
definite verdict and every acknowledged write must be found at the end."""

from __future__ import annotations

from pathlib import Path

import pytest

from raykv.nemesis import Setup, generate
from raykv.torture import run_torture

pytestmark = pytest.mark.ray

#: a schedule with isolate, isolate-leader, crash, join, leave and move in 15 s
SEED = 17


def test_one_campaign_is_linearizable_and_loses_nothing(ray_session: None, tmp_path: Path) -> None:
    sched = generate(SEED, 15, "default", Setup(groups=2, replicas=3, clients=3, nodes=0))
    assert {"isolate", "isolate-leader", "crash", "join", "leave", "move"} <= set(sched.counts())
    lines: list[str] = []
    (res,) = run_torture([sched], tmp_path, progress=False, report=lines.append)
    print(res.line(), *lines, sep="\n")
    if res.directory is not None:
        print((Path(res.directory) / "campaign.log").read_text())
    assert res.verdict == "linearizable", res.failure or res.verdict
    assert not res.lost and not res.duplicated
    assert res.failure is None and res.ok
    assert res.ops > 100 and res.checked_writes > 0
    assert sum(res.faults.values()) == sched.injected >= 6
