"""benchmarks/kvraft.py: the command line, the floor ratios, the target, the table and the plot (pure),
then the benchmark itself in its quickest mode on the session's Ray (a small grid: 2 transports, 2
client counts, reads and writes, the sequential rows and the floor)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "kvraft.py"
# loaded under another name: ``kvraft`` is the package, and must stay so for every later test
_spec = importlib.util.spec_from_file_location("bench_kvraft", BENCH)
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
sys.modules["bench_kvraft"] = bench
_spec.loader.exec_module(bench)


def test_defaults_are_the_issue_grid_and_quick_shrinks_only_what_was_not_given() -> None:
    a = bench.parse_args([])
    assert (a.clients, a.replicas, a.transports, a.ops) == (
        [1, 4, 16, 64, 256], [3, 5], ["direct", "network", "stream"], ["write", "read"])
    assert (a.duration, a.warmup, a.storage, a.quick) == (1.5, 0.3, "durable", False)
    a = bench.parse_args(["--quick"])
    assert (a.clients, a.replicas, a.duration, a.warmup) == ([1, 16, 256], [3], 0.5, 0.1)
    a = bench.parse_args(["--quick", "--clients", "8", "2", "8", "--replicas", "5", "--duration", "2",
                          "--transports", "stream", "direct", "--ops", "read"])
    assert (a.clients, a.replicas, a.duration, a.warmup) == ([2, 8], [5], 2.0, 0.1)
    assert (a.transports, a.ops) == (["direct", "stream"], ["read"])


@pytest.mark.parametrize(("argv", "message"), [
    (["--transports", "carrier-pigeon"], "unknown transport(s) carrier-pigeon: choose from direct, network"),
    (["--ops", "scan"], "unknown operation(s) scan: choose from write, read"),
    (["--clients", "0"], "--clients must all be at least 1"),
    (["--replicas", "0", "3"], "--replicas must all be at least 1"),
    (["--duration", "0"], "need --duration > 0"),
    (["--storage", "tape"], "invalid choice: 'tape'"),
])
def test_bad_arguments_are_usage_errors_that_say_what_is_allowed(
        argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        bench.parse_args(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def _r(transport: str | None, op: str, clerk: str, clients: int, p50: float, replicas: int | None = 3,
       system: str = "raykv") -> dict[str, Any]:
    return {"system": system, "replicas": replicas, "transport": transport, "op": op, "clerk": clerk,
            "clients": clients, "count": 100, "ops_per_s": 1000.0 / p50, "p50_ms": p50, "p99_ms": 2 * p50}


def _rows() -> list[dict[str, Any]]:
    return bench.with_floor([
        _r("stream", "read", "async", 16, 1.5), _r("direct", "write", "async", 16, 8.0),
        _r("direct", "write", "sync", 1, 6.0), _r(None, "round trip", "async", 16, 16.0, None, "ray-rtt"),
        _r("direct", "write", "async", 1, 8.0, replicas=5), _r("direct", "write", "sync", 1, 7.0, replicas=5),
        _r(None, "round trip", "async", 1, 2.0, None, "ray-rtt"), _r("network", "write", "async", 1, 12.0),
    ], raw_rtt_ms=2.0)


def test_every_p50_is_set_against_its_floor_and_rows_are_ordered() -> None:
    rows = _rows()
    got = [(r["system"], r["op"], r["replicas"], r["transport"], r["clerk"], r["clients"], r["p50_vs_floor"])
           for r in rows]
    assert got == [
        ("ray-rtt", "round trip", None, None, "async", 1, None),
        ("ray-rtt", "round trip", None, None, "async", 16, None),
        ("raykv", "write", 3, "direct", "sync", 1, 3.0),       # sync: ÷ the ray.get round trip
        ("raykv", "write", 3, "direct", "async", 16, 0.5),     # async: ÷ the awaited floor at 16
        ("raykv", "write", 3, "network", "async", 1, 6.0),
        ("raykv", "write", 5, "direct", "sync", 1, 3.5),
        ("raykv", "write", 5, "direct", "async", 1, 4.0),
        ("raykv", "read", 3, "stream", "async", 16, 0.094),
    ]
    table = bench.format_table(rows)
    assert "| (floor) | — | ray-rtt | await | 16 | 62 | 16.00 ms | 32.00 ms | — |" in table
    assert "| write | 3 | direct | sync | 1 | 167 | 6.00 ms | 12.00 ms | 3.00× |" in table


def test_the_target_is_the_sequential_direct_write_of_the_smallest_group() -> None:
    [t] = bench.check_targets(_rows(), 2.0)
    assert t == {"target": "sequential write p50, direct, 3 replicas <= 3x the raw Ray round trip",
                 "p50_ms": 6.0, "raw_rtt_ms": 2.0, "value": 3.0, "unit": "×", "met": True}
    [t] = bench.check_targets(_rows(), 1.9)
    assert t["value"] == 3.158 and not t["met"]
    assert bench.check_targets([r for r in _rows() if r["clerk"] != "sync"], 2.0) == []


def test_plot_draws_a_png(tmp_path: Path) -> None:
    bench.plot(_rows(), tmp_path / "k.png", 2.0)
    assert (tmp_path / "k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_quickest_run_measures_the_whole_small_grid_and_the_floor(
        ray_session: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "kvraft.json"
    code = bench.main(["--quick", "--clients", "1", "8", "--transports", "direct", "stream",
                       "--duration", "0.3", "--warmup", "0.05", "--json", str(out),
                       "--plot", str(tmp_path / "k.png")])
    printed = capsys.readouterr().out
    assert code == 0, printed
    data = json.loads(out.read_text())
    assert data["failed"] == {}
    assert data["raw_ray_rtt_ms"] > 0
    got = {(r["system"], r["transport"], r["op"], r["clerk"], r["clients"]) for r in data["results"]}
    grid = {("raykv", t, op, "async", n)
            for t in ("direct", "stream") for op in ("write", "read") for n in (1, 8)}
    sequential = {("raykv", "direct", op, "sync", 1) for op in ("write", "read")}
    floor = {("ray-rtt", None, "round trip", "async", n) for n in (1, 8)}
    assert got == grid | sequential | floor
    assert all(r["count"] > 0 and r["p50_ms"] <= r["p99_ms"] for r in data["results"])
    [target] = data["targets"]
    assert target["raw_rtt_ms"] == pytest.approx(data["raw_ray_rtt_ms"], abs=1e-3)
    assert "sequential write p50, direct, 3 replicas" in printed
    assert (tmp_path / "k.png").stat().st_size > 0
