"""Every history in the shared data gets its known verdict (Jepsen per file; KV per key and whole).

The data lives beside the repository in ``<repo>/../shared/data/linearizability``; set
RAYKV_SHARED_DATA to the ``shared/data`` folder (or to the ``linearizability`` folder itself) to
use another copy.  If it is missing these tests fail: they never skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from linearizability import KVModel, RegisterModel, Verdict, check, parse_file


def shared_data_dir() -> Path:
    """The folder with jepsen/ and kv/ (see the module docstring)."""
    env = os.environ.get("RAYKV_SHARED_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    return root if (root / "jepsen").is_dir() else root / "linearizability"


DATA = shared_data_dir()
MISSING = (
    f"shared linearizability data not found at {DATA} (expected jepsen/verdicts.txt and kv/*.txt "
    "there); check out shared/ beside the repository or set RAYKV_SHARED_DATA to its data folder"
)


def _jepsen_cases() -> list[object]:
    verdicts = DATA / "jepsen" / "verdicts.txt"
    if not verdicts.is_file():
        return [pytest.param(None, None, id="shared-data-missing")]
    cases = []
    for line in verdicts.read_text().splitlines():
        if line.strip():
            name, verdict = line.split()
            cases.append(pytest.param(name, verdict == "true", id=name))
    return cases


def _kv_cases() -> list[object]:
    files = sorted((DATA / "kv").glob("c*-*.txt")) if (DATA / "kv").is_dir() else []
    if not files:
        return [pytest.param(None, id="shared-data-missing")]
    return [pytest.param(f.name, id=f.name) for f in files]


def test_shared_data_present() -> None:
    assert (DATA / "jepsen" / "verdicts.txt").is_file(), MISSING
    logs = sorted((DATA / "jepsen").glob("*.log"))
    listed = {
        line.split()[0] for line in (DATA / "jepsen" / "verdicts.txt").read_text().split("\n") if line.strip()
    }
    assert {p.name for p in logs} == listed, "every Jepsen log needs a verdict in verdicts.txt"
    assert len(_kv_cases()) >= 4, MISSING


@pytest.mark.parametrize(("name", "expected"), _jepsen_cases())
def test_jepsen_verdict(name: str | None, expected: bool | None) -> None:
    if name is None:
        pytest.fail(MISSING)
    result = check(parse_file(DATA / "jepsen" / name, "jepsen"), RegisterModel())
    assert result.verdict is (Verdict.LINEARIZABLE if expected else Verdict.NOT_LINEARIZABLE)


@pytest.mark.parametrize("name", _kv_cases())
@pytest.mark.parametrize("partitioned", [True, False], ids=["per-key", "whole"])
def test_kv_verdict(name: str | None, partitioned: bool) -> None:
    if name is None:
        pytest.fail(MISSING)
    history = parse_file(DATA / "kv" / name, "kv")
    result = check(history, KVModel(), partitioned=partitioned)
    expected = Verdict.LINEARIZABLE if name.endswith("-ok.txt") else Verdict.NOT_LINEARIZABLE
    assert result.verdict is expected
    assert len(result.partitions) == (len({op.input[1] for op in history}) if partitioned else 1)


def test_linearization_of_a_linearizable_log_is_valid() -> None:
    """The order returned for a linearizable history replays on the model."""
    name = next((c.values[0] for c in _jepsen_cases() if c.values[1]), None)  # type: ignore[attr-defined]
    if name is None:
        pytest.fail(MISSING)
    history = parse_file(DATA / "jepsen" / name, "jepsen")
    part = check(history, RegisterModel()).partitions[0]
    assert sorted(part.order) == list(range(len(history)))
    model = RegisterModel()
    state = model.init()
    for i in part.order:
        ok, state = model.step(state, history[i].input, history[i].output)
        assert ok


def test_shared_data_dir_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "data" / "linearizability" / "jepsen").mkdir(parents=True)
    monkeypatch.setenv("RAYKV_SHARED_DATA", str(tmp_path / "data"))
    assert shared_data_dir() == tmp_path / "data" / "linearizability"
    monkeypatch.setenv("RAYKV_SHARED_DATA", str(tmp_path / "data" / "linearizability"))
    assert shared_data_dir() == tmp_path / "data" / "linearizability"
