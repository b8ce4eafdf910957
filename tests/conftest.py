"""Shared fixtures: one Ray runtime per test session, and harnesses that always clean up."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--plant", default=None, metavar="FAULT[,FAULT...]",
        help="switch on deliberately broken rules in every peer the Ray harnesses start, to prove "
             "that the tests catch them (sets RAYKV_PLANT; names: raykv.testing.faults, the core's, "
             "the KV service's, the shard controller's and the sharded KV's)")


#: the environment variable the harnesses read (``raykv.testing.faults.PLANT_ENV``; not imported
#: here, so that runs without planted faults do not pay for importing raykv and Ray)
PLANT_ENV = "RAYKV_PLANT"


def pytest_configure(config: pytest.Config) -> None:
    plant = config.getoption("--plant")
    if plant is not None:
        os.environ[PLANT_ENV] = plant
    if not os.environ.get(PLANT_ENV, "").strip():
        return
    from raykv.testing.faults import planted_from_env, unknown_faults

    problem = unknown_faults(planted_from_env())
    if problem is not None:
        raise pytest.UsageError(f"--plant / {PLANT_ENV}: {problem}")


def pytest_report_header(config: pytest.Config) -> str | None:
    plant = os.environ.get(PLANT_ENV, "").strip()
    return f"planted faults ({PLANT_ENV}): {plant}" if plant else None


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
    """Factory for :class:`raykv.testing.raft_harness.RaftHarness`; checks and kills every harness it
    made."""
    from raykv.testing.raft_harness import RaftHarness

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
