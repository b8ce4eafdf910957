"""benchmarks/transports.py and benchmarks/peers without Ray: the command line, the ratios to etcd and
the targets, the load driver, the TCP echo floor, and (when an etcd binary is installed) a one-member
etcd cluster started, written to and cleaned up. No test here starts Ray."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest

# appended, not prepended: benchmarks/kvraft.py must not shadow the kvraft package for later tests
sys.path.append(str(Path(__file__).resolve().parent.parent / "benchmarks"))

import transports
from peers.etcd import EtcdCluster, EtcdUnavailable, Member, find_etcd, free_ports, member_args
from peers.load import Measurement, drive
from peers.tcp_echo import EchoClient, echo_server_process

AVAILABLE = ("direct", "network")


def test_defaults_measure_every_available_transport_at_1_10_100_writers() -> None:
    a = transports.parse_args([], AVAILABLE)
    assert a.transports == ["direct", "network"]
    assert a.writers == [1, 10, 100]
    assert (a.duration, a.warmup, a.no_etcd, a.etcd, a.json, a.plot) == (3.0, 0.5, False, None, None, None)
    a = transports.parse_args(["--transports", "stream", "direct", "stream", "--writers", "10", "1", "10",
                               "--quick"], ("direct", "network", "stream"))
    assert a.transports == ["stream", "direct"]
    assert a.writers == [1, 10]
    assert (a.duration, a.warmup) == (1.0, 0.3)


@pytest.mark.parametrize(("argv", "message"), [
    (["--transports", "stream"], "unknown transport(s) stream: this checkout has direct, network"),
    (["--writers", "0", "10"], "--writers must all be at least 1"),
    (["--duration", "0"], "need --duration > 0"),
    (["--warmup", "-1"], "--warmup >= 0"),
    (["--etcd", "/x", "--no-etcd"], "not allowed with argument"),
])
def test_bad_arguments_are_usage_errors_that_say_what_is_allowed(
        argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        transports.parse_args(argv, AVAILABLE)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def _r(system: str, kind: str, writers: int, ops: float, p50: float) -> dict[str, Any]:
    return {"system": system, "kind": kind, "writers": writers, "count": int(ops), "ops_per_s": ops,
            "p50_ms": p50, "p99_ms": 2 * p50}


def test_ratios_are_to_etcd_at_the_same_writer_count_and_rows_are_ordered() -> None:
    rows = transports.with_ratios([
        _r("tcp-rtt", "floor", 1, 8000.0, 0.12), _r("etcd", "etcd", 10, 4000.0, 2.5),
        _r("raykv/direct", "raykv", 10, 2000.0, 5.0), _r("etcd", "etcd", 1, 1000.0, 1.0),
        _r("raykv/direct", "raykv", 1, 250.0, 4.0), _r("raykv/stream", "raykv", 100, 9000.0, 11.0),
    ])
    assert [(r["writers"], r["system"]) for r in rows] == [
        (1, "raykv/direct"), (1, "etcd"), (1, "tcp-rtt"), (10, "raykv/direct"), (10, "etcd"),
        (100, "raykv/stream")]
    ratios = [(r["ops_vs_etcd"], r["p50_vs_etcd"]) for r in rows]
    assert ratios == [(0.25, 4.0), (1.0, 1.0), (8.0, 0.12), (0.5, 2.0), (1.0, 1.0), (None, None)]
    table = transports.format_table(rows)
    assert "| 1 | raykv/direct | 250 | 4.00 ms | 8.00 ms | 0.25× | 4.00× |" in table
    assert "| 100 | raykv/stream | 9,000 | 11.00 ms | 22.00 ms | n/a | n/a |" in table


def test_targets_are_issue_14s() -> None:
    rows = transports.with_ratios([
        _r("etcd", "etcd", 1, 1000.0, 1.0), _r("etcd", "etcd", 10, 4000.0, 2.5),
        _r("etcd", "etcd", 100, 7000.0, 12.0),
        _r("raykv/stream", "raykv", 1, 1000.0, 0.9), _r("raykv/stream", "raykv", 10, 4000.0, 2.0),
        _r("raykv/stream", "raykv", 100, 31000.0, 3.0), _r("tcp-rtt", "floor", 100, 90000.0, 1.0),
    ])
    got = {t["target"]: (t["value"], t["unit"], t["met"]) for t in transports.check_targets(rows)}
    assert got == {
        "1 writers: faster than etcd": (1.0, "×", False),       # equal is not faster
        "10 writers: ops/s >= 1x etcd's": (1.0, "×", True),
        "100 writers: ops/s >= 4x etcd's": (4.429, "×", True),
        "100 writers: >= 30,000 ops/s": (31000.0, "ops/s", True),
    }
    alone = transports.with_ratios([_r("raykv/direct", "raykv", 100, 18000.0, 5.0)])
    no_etcd = transports.check_targets(alone)
    assert no_etcd == [{"system": "raykv/direct", "target": "100 writers: >= 30,000 ops/s", "value": 18000.0,
                        "unit": "ops/s", "met": False}]


def test_plot_draws_a_png(tmp_path: Path) -> None:
    rows = transports.with_ratios([
        _r("etcd", "etcd", 1, 1000.0, 1.0), _r("raykv/direct", "raykv", 1, 250.0, 4.0),
        _r("raykv/direct", "raykv", 10, 2000.0, 5.0), _r("tcp-rtt", "floor", 1, 8000.0, 0.12)])
    transports.plot(rows, tmp_path / "t.png")
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_drive_counts_only_operations_started_in_the_window() -> None:
    calls: list[float] = []

    async def main() -> Measurement:
        loop = asyncio.get_running_loop()

        async def op(c: int) -> None:
            calls.append(loop.time())
            await asyncio.sleep(0.002)

        return await drive(op, 3, 0.05, 0.1)

    m = asyncio.run(main())
    assert m.writers == 3 and m.duration_s == 0.1
    assert 0 < m.count < len(calls)                 # the warm-up's operations are not counted
    assert m.ops_per_s == m.count / 0.1
    assert 2.0 <= m.p50_ms <= m.p99_ms


def test_drive_fails_when_an_operation_fails_and_refuses_bad_settings() -> None:
    async def op(c: int) -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        asyncio.run(drive(op, 2, 0.0, 0.05))
    with pytest.raises(ValueError, match="writers must be at least 1"):
        asyncio.run(drive(op, 0, 0.0, 0.05))
    with pytest.raises(ValueError, match="duration_s > 0"):
        asyncio.run(drive(op, 1, 0.0, 0.0))


def test_tcp_echo_floor_answers_concurrent_calls_each_with_its_own_payload() -> None:
    async def main() -> list[bytes]:
        async with echo_server_process() as address, EchoClient(address) as client:
            return await asyncio.gather(*(client.call(f"payload-{i}".encode() * i) for i in range(20)))

    assert asyncio.run(main()) == [f"payload-{i}".encode() * i for i in range(20)]


def test_etcd_members_get_distinct_ports_and_the_whole_initial_cluster(tmp_path: Path) -> None:
    ports = free_ports(6)
    assert len(set(ports)) == 6
    members = [Member(f"m{i}", ports[2 * i], ports[2 * i + 1], tmp_path / f"m{i}") for i in range(3)]
    args = member_args(members[1], members, "tok")
    flag = dict(zip(args[::2], args[1::2], strict=True))
    assert flag["--name"] == "m1" and flag["--initial-cluster-token"] == "tok"
    assert flag["--listen-client-urls"] == f"http://127.0.0.1:{ports[2]}"
    assert flag["--listen-peer-urls"] == f"http://127.0.0.1:{ports[3]}"
    peers = [f"m{i}=http://127.0.0.1:{ports[2 * i + 1]}" for i in range(3)]
    assert flag["--initial-cluster"] == ",".join(peers)
    assert "--unsafe-no-fsync" not in args


def test_a_missing_etcd_binary_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(EtcdUnavailable, match="apt-get install -y etcd-server"):
        find_etcd(tmp_path / "etcd")


def test_one_member_etcd_cluster_serves_puts_and_leaves_nothing_behind() -> None:
    try:
        find_etcd()
    except EtcdUnavailable as e:
        pytest.skip(f"etcd is not installed here ({e})")
    pytest.importorskip("aetcd", reason="the etcd comparison's client is a benchmark dependency, not a test "
                        "one: pip install -e '.[bench]' (and apt-get install -y etcd-server) to run this")
    from peers.etcd import etcd_writer

    cluster = EtcdCluster(members=1)
    with cluster:
        root = cluster.root
        assert root is not None and root.is_dir()
        pids = [p.pid for p in cluster._procs]
        leader = cluster.leader_endpoint()
        assert leader == cluster.endpoints()[0]

        async def main() -> bytes:
            import aetcd

            async with etcd_writer(leader, b"v" * 16) as op:
                for c in range(3):
                    await op(c)
            client = aetcd.Client(host=leader[0], port=leader[1])
            try:
                got = await client.get(b"k2")
            finally:
                await client.close()
            return got.value

        assert asyncio.run(main()) == b"v" * 16
    assert not root.exists()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
