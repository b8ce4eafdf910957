"""benchmarks/sharded_scale.py and benchmarks/reconfig_timeline.py without Ray: the command lines, the
series and phases of the timeline, the scale figures and their prediction, the tables and the plots, and
the process-tree CPU accounting of benchmarks/sharded_load.py. No test here starts Ray."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

# appended, not prepended: benchmarks/kvraft.py must not shadow the kvraft package for later tests
sys.path.append(str(Path(__file__).resolve().parent.parent / "benchmarks"))

import reconfig_timeline as rt
import sharded_scale as ss
from sharded_load import Op, keys_by_shard, percentile, tree_cpu_s, tree_delta_s

PNG = b"\x89PNG\r\n\x1a\n"


def test_scale_defaults_and_quick_mode() -> None:
    a = ss.parse_args([])
    assert (a.groups, a.nodes, a.callers, a.duration, a.warmup, a.storage) == ([1, 2, 4], 3, 16, 5.0, 1.0,
                                                                              "durable")
    q = ss.parse_args(["--quick", "--groups", "4", "1", "4"])
    assert (q.groups, q.callers, q.duration, q.warmup) == ([1, 4], 8, 1.0, 0.5)


def test_timeline_defaults_and_quick_mode() -> None:
    a = rt.parse_args([])
    assert (a.nodes, a.groups, a.callers, a.phase, a.interval, a.retry_pause) == (4, 2, 32, 5.0, 0.5, None)
    q = rt.parse_args(["--quick"])
    assert (q.callers, q.phase, q.interval) == (16, 1.0, 0.25)


@pytest.mark.parametrize(("module", "argv", "message"), [
    (ss, ["--groups", "0", "2"], "--groups must be between 1 and 12"),
    (ss, ["--groups", "13"], "--groups must be between 1 and 12"),
    (ss, ["--callers", "0"], "--nodes and --callers must be at least 1"),
    (ss, ["--duration", "0"], "need --duration > 0"),
    (rt, ["--nodes", "3"], "--nodes must be at least 4"),
    (rt, ["--groups", "12"], "--groups must be between 1 and 11"),
    (rt, ["--interval", "0"], "--interval > 0"),
    (rt, ["--retry-pause", "-1"], "--retry-pause must be >= 0"),
])
def test_bad_arguments_are_usage_errors_that_say_what_is_allowed(
        module: Any, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        module.parse_args(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_keys_by_shard_gives_each_shard_its_own_keys() -> None:
    from shardctrler.config import key2shard

    ks = keys_by_shard(12, 3)
    assert [len(k) for k in ks] == [3] * 12
    assert all(key2shard(k, 12) == s for s, keys in enumerate(ks) for k in keys)
    assert percentile([], 0.5) is None
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0 and percentile([1.0, 2.0], 0.99) == 2.0


def _ops(ends: list[float], latency: float = 0.01) -> list[Op]:
    return [Op(t, latency, 0) for t in ends]


def test_intervals_put_every_operation_in_exactly_one_interval() -> None:
    ops = [*_ops([100.0, 100.1, 100.49, 100.5, 101.2, 99.9, 101.3]), Op(100.2, 0.5, 0)]
    series = rt.intervals(ops, 100.0, 101.25, 0.5)
    assert [iv["t"] for iv in series] == [0.0, 0.5, 1.0]
    assert [iv["ops"] for iv in series] == [4, 1, 1]        # 99.9 and 101.3 are outside the run
    assert series[0]["ops_per_s"] == 8.0 and series[2]["ops_per_s"] == 4.0  # the last one is 0.25 s
    assert series[0]["max_ms"] == 500.0 and series[0]["p50_ms"] == 10.0
    empty = rt.intervals([], 0.0, 1.0, 0.5)
    assert [iv["ops"] for iv in empty] == [0, 0] and empty[0]["p50_ms"] is None


def test_phases_run_between_consecutive_events_with_their_worst_full_interval() -> None:
    ops = _ops([0.1 * i for i in range(40)])                # 10 ops/s for 4 s
    events = [{"t": 1.0, "label": "join g3"}, {"t": 2.5, "label": "g3 joined"}]
    series = rt.intervals(ops, 0.0, 4.0, 0.5)
    ph = rt.phases(ops, events, 0.0, 4.0, series, 0.5)
    assert [p["name"] for p in ph] == ["start → join g3", "join g3 → g3 joined", "g3 joined → end"]
    assert [(p["start"], p["end"], p["ops"]) for p in ph] == [(0.0, 1.0, 10), (1.0, 2.5, 15), (2.5, 4.0, 15)]
    assert all(p["ops_per_s"] == pytest.approx(10.0) for p in ph)
    assert ph[0]["worst_interval_ops_per_s"] == pytest.approx(10.0)
    table = rt.format_tables(events, ph)
    assert "| 1.00 | join g3 |" in table and "| join g3 → g3 joined | 1.00 | 2.50 | 10 | 10 |" in table


def test_timeline_plot_draws_a_png(tmp_path: Path) -> None:
    ops = _ops([0.05 * i for i in range(80)])
    series = rt.intervals(ops, 0.0, 4.0, 0.5)
    rt.plot(series, [{"t": 1.0, "label": "join g3"}, {"t": 3.0, "label": "node lost"}], 0.5,
            tmp_path / "t.png", "title")
    assert (tmp_path / "t.png").read_bytes()[:8] == PNG


def _row(groups: int, per: list[float], group_us: float, cluster_cores: float) -> dict[str, Any]:
    total = sum(per)
    return {"groups": groups, "nodes": 3, "cores": 2, "callers": 16 * groups, "ops_per_s": total,
            "per_group": [{"gid": i + 1, "ops_per_s": x} for i, x in enumerate(per)],
            "p50_ms": 5.0, "p99_ms": 20.0, "group_cpu_us_per_op": group_us, "cluster_cores": cluster_cores,
            "cluster_cpu_us_per_op": cluster_cores / total * 1e6, "machine_cores": 1.9,
            "machine_cpu_us_per_op": 1.9 / total * 1e6}


def test_group_figures_and_the_prediction_from_the_first_count() -> None:
    g = ss.group_figures(2, [6, 7], [0.004, 0.002, 0.003, 0.010, 0.001], 2.0, 0.002)
    assert (g["ops"], g["ops_per_s"], g["p50_ms"], g["p99_ms"], g["cores"]) == (5, 2.5, 3.0, 10.0, 0.001)
    assert g["cpu_us_per_op"] == pytest.approx(400.0)
    assert ss.group_figures(1, [], [], 1.0, 0.1)["cpu_us_per_op"] is None
    rows = [_row(1, [1000.0], 400.0, 1.8), _row(2, [700.0, 700.0], 420.0, 1.9)]
    p = ss.prediction(rows, 2)
    assert p["per_group_ops_per_s"] == 1000.0 and p["cpu_us_per_op"] == pytest.approx(1800.0)
    assert p["max_ops_per_s_here"] == pytest.approx(2 / 0.0018)
    assert [(x["groups"], x["ops_per_s"]) for x in p["linear"]] == [(1, 1000.0), (2, 2000.0)]
    assert p["linear"][1]["cores_needed"] == pytest.approx(3.6)
    assert p["linear"][1]["cores_needed_at_own_cost"] == pytest.approx(2000 * 1.9 / 1400)
    note = ss.format_prediction(p)
    assert "cannot grow much" in note
    assert "1 group(s): 1,000 ops/s on 1.8 cores, 2 group(s): 2,000 ops/s on 3.6 cores (2.7 at the CPU per " \
        "op measured with 2)." in note
    table = ss.format_table(rows)
    assert "| 2 | 3 | 2 | 32 | 1,400 | 700 / 700 | 5.00 ms | 20.00 ms | 420 µs | 1.90 | 1,357 µs | 1.90 |" \
        in table


def test_scale_plot_draws_a_png(tmp_path: Path) -> None:
    rows = [_row(1, [1000.0], 400.0, 1.8), _row(2, [700.0, 700.0], 420.0, 1.9)]
    ss.plot(rows, ss.prediction(rows, 2), tmp_path / "s.png")
    assert (tmp_path / "s.png").read_bytes()[:8] == PNG


def test_tree_cpu_counts_this_process_and_its_children() -> None:
    before = tree_cpu_s()
    if before is None:
        pytest.skip("no /proc here")
    child = subprocess.Popen([sys.executable, "-c", "import time\nt = time.process_time()\n"
                              "while time.process_time() - t < 0.3: pass\ntime.sleep(5)"])
    try:
        deadline = time.monotonic() + 10
        while True:  # poll until the child has burnt its CPU (it then sleeps)
            after = tree_cpu_s()
            assert after is not None
            if after.get(child.pid, 0.0) >= 0.25 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert os.getpid() in after and child.pid in after and child.pid not in before
        assert after[child.pid] >= 0.25
        delta = tree_delta_s(before, after)
        assert delta is not None and delta >= after[child.pid]
        assert tree_delta_s(None, after) is None
    finally:
        child.kill()
        child.wait()
