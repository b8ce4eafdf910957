"""benchmarks/compare.py and benchmarks/peers/pysyncobj_kv.py: the command line, the ratios to raykv,
the targets, the table and the plot (pure); a 3-process PySyncObj KV started, written, read, stopped
and cleaned up (no Ray); then the benchmark in its quickest mode on the session's Ray, raykv and
PySyncObj. etcd is left out of that run (its 3-member cluster costs seconds to start; the etcd
driver is exercised by tests/test_bench_transports.py and by the benchmark's real run)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

# appended, not prepended: benchmarks/kvraft.py must not shadow the kvraft package for later tests
sys.path.append(str(Path(__file__).resolve().parent.parent / "benchmarks"))

import compare


def test_defaults_are_every_system_both_operations_at_1_10_100_clients() -> None:
    a = compare.parse_args([])
    assert (a.systems, a.ops, a.clients) == (["raykv", "pysyncobj", "etcd"], ["write", "read"], [1, 10, 100])
    assert (a.duration, a.warmup, a.no_etcd, a.etcd, a.pysyncobj_batch) == (3.0, 0.5, False, None, False)
    a = compare.parse_args(["--systems", "etcd", "raykv", "--ops", "read", "--clients", "10", "1", "10",
                            "--quick", "--no-etcd"])
    assert (a.systems, a.ops, a.clients, a.duration, a.warmup) == (["raykv"], ["read"], [1, 10], 1.0, 0.3)


@pytest.mark.parametrize(("argv", "message"), [
    (["--systems", "zookeeper"], "unknown system(s) zookeeper: choose from raykv, pysyncobj, etcd"),
    (["--ops", "cas"], "unknown operation(s) cas: choose from write, read"),
    (["--clients", "0"], "--clients must all be at least 1"),
    (["--duration", "-1"], "need --duration > 0"),
    (["--etcd", "/x", "--no-etcd"], "not allowed with argument"),
])
def test_bad_arguments_are_usage_errors_that_say_what_is_allowed(
        argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        compare.parse_args(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def _r(system: str, op: str, clients: int, ops: float, p50: float) -> dict[str, Any]:
    return {"system": system, "op": op, "clients": clients, "count": int(ops), "ops_per_s": ops,
            "p50_ms": p50, "p99_ms": 4 * p50}


def test_every_figure_is_also_a_ratio_to_raykvs_at_the_same_operation_and_clients() -> None:
    rows = compare.with_ratios([
        _r("etcd", "read", 1, 500.0, 2.0), _r("pysyncobj", "write", 1, 300.0, 3.0),
        _r("raykv", "write", 1, 600.0, 1.5), _r("etcd", "write", 1, 150.0, 6.0),
        _r("raykv", "read", 1, 1000.0, 1.0), _r("pysyncobj", "write", 10, 900.0, 9.0),
    ])
    got = [(r["op"], r["clients"], r["system"], r["ops_vs_raykv"], r["p50_vs_raykv"], r["p99_vs_raykv"])
           for r in rows]
    assert got == [
        ("write", 1, "raykv", 1.0, 1.0, 1.0), ("write", 1, "pysyncobj", 0.5, 2.0, 2.0),
        ("write", 1, "etcd", 0.25, 4.0, 4.0), ("write", 10, "pysyncobj", None, None, None),
        ("read", 1, "raykv", 1.0, 1.0, 1.0), ("read", 1, "etcd", 0.5, 2.0, 2.0),
    ]
    table = compare.format_table(rows)
    assert "| write | 1 | etcd | 150 | 6.00 ms | 24.00 ms | 0.25× | 4.00× | 4.00× |" in table
    assert "| write | 10 | pysyncobj | 900 | 9.00 ms | 36.00 ms | — | — | — |" in table


def test_targets_are_4x_etcds_writes_at_every_client_count_and_30000_at_100() -> None:
    rows = compare.with_ratios([
        _r("raykv", "write", 1, 600.0, 1.5), _r("etcd", "write", 1, 150.0, 6.0),
        _r("raykv", "write", 100, 25000.0, 4.0), _r("etcd", "write", 100, 5000.0, 20.0),
        _r("raykv", "read", 100, 90000.0, 1.0), _r("etcd", "read", 100, 1000.0, 9.0),
    ])
    assert compare.check_targets(rows) == [
        {"target": "1 clients: writes/s >= 4x etcd's", "value": 4.0, "unit": "×", "met": True},
        {"target": "100 clients: writes/s >= 4x etcd's", "value": 5.0, "unit": "×", "met": True},
        {"target": "100 clients: >= 30,000 writes/s", "value": 25000.0, "unit": "ops/s", "met": False},
    ]


def test_plot_draws_a_png(tmp_path: Path) -> None:
    rows = compare.with_ratios([_r("raykv", "write", 1, 600.0, 1.5), _r("etcd", "read", 10, 150.0, 6.0),
                                _r("pysyncobj", "write", 10, 300.0, 3.0)])
    compare.plot(rows, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pysyncobj_kv_replicates_concurrent_puts_and_reads_and_leaves_nothing_behind() -> None:
    pytest.importorskip("pysyncobj", reason="PySyncObj is a benchmark dependency, not a test one: "
                        "pip install -e '.[bench]' to run this")
    from peers.pysyncobj_kv import PySyncObjClient, PySyncObjCluster

    cluster = PySyncObjCluster(3)
    with cluster:
        root = cluster.root
        assert root is not None and root.is_dir()
        pids = [p.pid for p in cluster._procs]
        leader = cluster.leader_front()
        followers = [f for f in cluster.fronts if f != leader]

        async def main() -> tuple[list[bytes], bytes, list[tuple[bool, bool]]]:
            async with PySyncObjClient(leader) as client:
                await asyncio.gather(*(client.put(f"k{i}".encode(), f"v{i}".encode() * i) for i in range(20)))
                got = await asyncio.gather(*(client.get(f"k{i}".encode()) for i in range(20)))
                missing = await client.get(b"never-written")
            states = []
            for f in followers:  # a follower knows it is not the leader
                async with PySyncObjClient(f) as c:
                    states.append(await c.status())
            return got, missing, states

        got, missing, states = asyncio.run(main())
        assert got == [f"v{i}".encode() * i for i in range(20)]
        assert missing == b""
        assert [leader_flag for leader_flag, _ in states] == [False, False]
        assert any(p.name.endswith(".journal") for p in root.iterdir())  # the log is on disk
    assert not root.exists()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_quickest_run_sets_pysyncobj_against_raykv(ray_session: None, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "compare.json"
    code = compare.main(["--quick", "--no-etcd", "--clients", "1", "4", "--duration", "0.5",
                         "--warmup", "0.2", "--json", str(out), "--plot", str(tmp_path / "c.png")])
    printed = capsys.readouterr().out
    assert code == 0, printed
    data = json.loads(out.read_text())
    assert data["failed"] == {}
    assert data["skipped"]["etcd"] == "--no-etcd"
    systems = ["raykv"]
    try:
        import pysyncobj  # noqa: F401
        systems.append("pysyncobj")
    except ImportError:
        assert "pip install -e '.[bench]'" in data["skipped"]["pysyncobj"]
    got = {(r["system"], r["op"], r["clients"]) for r in data["results"]}
    assert got == {(s, op, n) for s in systems for op in ("write", "read") for n in (1, 4)}
    for r in data["results"]:
        assert r["count"] > 0 and r["p50_ms"] <= r["p99_ms"], printed
        if r["system"] == "raykv":
            assert (r["ops_vs_raykv"], r["p50_vs_raykv"], r["p99_vs_raykv"]) == (1.0, 1.0, 1.0)
        else:
            assert r["ops_vs_raykv"] > 0
    assert data["config"]["raykv_transport"] == "stream"
    assert "| op | clients | system |" in printed and (tmp_path / "c.png").stat().st_size > 0
