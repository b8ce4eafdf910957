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
             "that the tests catch them (sets RAYKV_PLANT; names: raft.sim.config.FAULTS and "
             "raykv.testing.kv_harness.KV_FAULTS)")


#: the environment variable the harnesses read (``actors.ledger.PLANT_ENV``; not imported here, so
#: that runs without planted faults do not pay for importing Ray)
PLANT_ENV = "RAYKV_PLANT"


def pytest_configure(config: pytest.Config) -> None:
    plant = config.getoption("--plant")
    if plant is not None:
        os.environ[PLANT_ENV] = plant
    if not os.environ.get(PLANT_ENV, "").strip():
        return
    from actors.ledger import planted_from_env
    from raft.sim.config import FAULTS
    from raykv.testing.kv_harness import KV_FAULTS

    unknown = planted_from_env() - FAULTS - KV_FAULTS
    if unknown:
        raise pytest.UsageError(f"unknown planted fault(s) {sorted(unknown)}; known: "
                                f"{sorted(FAULTS | KV_FAULTS)}")


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
    """Factory for :class:`raykv.testing.raft_harness.RaftHarness`; checks and kills every harness it made."""
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
