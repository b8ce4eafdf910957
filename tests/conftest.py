"""Shared fixtures: one Ray runtime per test session, and harnesses that always clean up."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """Start an embedded Ray runtime once for every test that needs one."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=int(os.environ.get("RAYKV_TEST_CPUS", "2")),
            include_dashboard=False,
            logging_level="WARNING",
            log_to_driver=True,
            namespace="raykv-tests",
        )
    yield
    ray.shutdown()


@pytest.fixture
def raft_harness(ray_session: None) -> Iterator[Callable[..., Any]]:
    """Factory for :class:`actors.harness.RaftHarness`; checks and kills every harness it made."""
    from actors.harness import RaftHarness

    made: list[RaftHarness] = []

    def make(n: int, unreliable: bool = False, snapshot: bool = False) -> RaftHarness:
        h = RaftHarness(n, unreliable=unreliable, snapshot=snapshot)
        made.append(h)
        return h

    yield make
    failures = []
    for h in made:
        try:
            print(f"harness seed {h.seed}: {h.summary()}")
            h.cleanup()
        except AssertionError as e:  # report after killing everything
            failures.append(str(e))
    if failures:
        pytest.fail("; ".join(failures))
