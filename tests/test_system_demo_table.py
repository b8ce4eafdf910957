"""The live table of ``raykv demo`` and its account, without Ray: the rows made from a service's status
(:mod:`raykv.demo_table`), their plain and ``rich`` renderings (:mod:`raykv.demo_view`), the report's
account and verdict (:class:`raykv.SystemDemoReport`), the argument checks, and the command line with
the scenario replaced by a canned run."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console

import raykv
from raykv import cli
from raykv.demo import DemoEvent
from raykv.demo_table import GroupRow, Snapshot, build_snapshot, format_line, format_snapshot, shard_rates
from raykv.demo_view import LiveView, rich_table
from raykv.sharded_status import GroupStatus, ReplicaReplacement, ServiceStatus
from raykv.system_demo import SystemDemoReport
from shardctrler.config import Config

LABELS = {"node-aaaa": "n1", "node-bbbb": "n2", "node-cccc": "n3", "node-dddd": "n4", "node-head": "head"}


def _status() -> ServiceStatus:
    """A controller and groups 2, 3 and 4 (group 4 pulling shard 9 from group 3) in configuration 5;
    group 3's slot 1 is being replaced."""
    nodes = ("node-aaaa", "node-bbbb", "node-cccc")
    config = Config(5, (2, 2, 2, 3, 3, 3, 4, 4, 4, 4), {2: ["a"], 3: ["b"], 4: ["c"]})
    ctrler = GroupStatus(0, "demo-ctrler", ("follower", "leader", "follower"), 1, 3, -1, nodes=nodes)
    g2 = GroupStatus(2, "demo-g2", ("leader", "follower", "follower"), 0, 1, 5, owned=(0, 1, 2), nodes=nodes)
    repl = ReplicaReplacement(1, 1, 3, "node-bbbb", "node-dddd", 100.0, 101.0)
    g3 = GroupStatus(3, "demo-g3", ("follower", "unreachable", "leader"), 2, 4, 5, owned=(3, 4, 5),
                     leaving=(9,), nodes=nodes, replacements=(repl,))
    g4 = GroupStatus(4, "demo-g4", ("candidate", "follower", "follower"), None, 2, 5, owned=(6, 7, 8, 9),
                     arriving=(9,), nodes=("node-dddd", "node-aaaa", "node-bbbb"))
    return ServiceStatus("demo", "ns", 10, "hash", False, config, ctrler, (g2, g3, g4), transport="stream")


def test_shard_rates() -> None:
    assert shard_rates([0, 10, 5], [4, 10, 9], 2.0) == [2.0, 0.0, 2.0]
    assert shard_rates([3], [1], 1.0) == [0.0], "a counter never goes back: no negative rates"
    assert shard_rates([0, 0], [5, 5], 0.0) == [0.0, 0.0]
    with pytest.raises(ValueError, match="different shard counts"):
        shard_rates([0], [0, 1], 1.0)


def test_snapshot_rows_from_a_status() -> None:
    rates = [1.0] * 6 + [10.0] * 4  # shards 6-9 (group 4's) are busy
    s = build_snapshot(12.5, "after the Join", _status(), LABELS, rates, ops_total=1234)
    assert (s.config, s.ops_total, s.ops_per_s, s.phase) == (5, 1234, 46.0, "after the Join")
    ctrl, g2, g3, g4 = s.rows
    assert ctrl == GroupRow(0, "n2", 3, (3, 3))
    assert (g2.leader, g2.term, g2.replicas, g2.shards, g2.ops_per_s, g2.moving) == ("n1", 1, (3, 3),
                                                                                    (0, 1, 2), 3.0, 0)
    assert (g3.leader, g3.replicas, g3.ops_per_s, g3.moving) == ("n3", (2, 3), 3.0, 1)
    assert g3.note == "replacing P1 -> P3 on n4"
    assert (g4.leader, g4.ops_per_s, g4.moving, g4.note) == (None, 40.0, 1, "")
    assert s.moving == 2
    # no rates yet (the first reading), no controller answer: the table still draws
    bare = build_snapshot(1.0, "starting", ServiceStatus("demo", "ns", 10, "hash", False, None,
                                                         _status().ctrler, _status().groups), LABELS)
    assert bare.config is None and all(r.ops_per_s is None for r in bare.rows)
    assert not any("left" in r.note for r in bare.rows)


def test_a_group_that_left_the_configuration_is_marked() -> None:
    st = _status()
    gone = GroupStatus(1, "demo-g1", ("leader", "follower", "follower"), 0, 1, 4, nodes=st.ctrler.nodes)
    s = build_snapshot(3.0, "Leave", ServiceStatus("demo", "ns", 10, "hash", False, st.config, st.ctrler,
                                                   (gone, *st.groups)), {})
    assert s.rows[1].note == "left the configuration"
    assert s.rows[1].leader == "node-aaa", "a node without a label shows its id's first 8 characters"


def test_plain_table() -> None:
    s = build_snapshot(12.5, "after the Join", _status(), LABELS, [1.0] * 6 + [10.0] * 4, ops_total=1234)
    lines = format_snapshot(s)
    assert lines[0] == ("  12.50s  after the Join  |  configuration 5, 46 ops/s, 1,234 operations, "
                        "2 shard moves in flight")
    assert lines[1].split() == ["group", "leader", "term", "up", "shards", "ops/s", "moving"]
    assert lines[2].split() == ["controller", "n2", "3", "3/3", "-", "-", "-"]
    assert lines[3].split() == ["group", "2", "n1", "1", "3/3", "0,1,2", "3", "0"]
    assert lines[4].split() == ["group", "3", "n3", "4", "2/3", "3,4,5", "3", "1", "replacing", "P1", "->",
                                "P3", "on", "n4"]
    assert lines[5].split() == ["group", "4", "none", "2", "3/3", "6,7,8,9", "40", "1"]
    assert len({len(line) for line in lines[1:4]}) == 1, "the columns line up"
    assert format_line(s) == ("  12.50s  after the Join | 46 ops/s | ctrl n2 t3 | g2 n1 t1 3sh 3/s 0mv | "
                              "g3 n3 t4 3sh 3/s 1mv | g4 none t2 4sh 40/s 1mv")


def test_many_shards_are_counted_not_listed() -> None:
    row = GroupRow(1, "n1", 1, (3, 3), tuple(range(0, 40, 2)), 1.0)
    s = Snapshot(0.0, "x", 1, (row,))
    assert format_snapshot(s)[2].split()[5:7] == ["20", "shards"]


def _render(table: Any) -> str:
    console = Console(file=io.StringIO(), width=140, color_system=None)
    console.print(table)
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_rich_table() -> None:
    s = build_snapshot(12.5, "after the Join", _status(), LABELS, [1.0] * 6 + [10.0] * 4, ops_total=1234)
    text = _render(rich_table(s))
    assert "configuration 5, 46 ops/s" in text
    for head in ("group", "leader", "term", "up", "shards", "ops/s", "moving", "note"):
        assert head in text
    row3 = next(line for line in text.splitlines() if "group 3" in line)
    for cell in ("n3", "2/3", "3,4,5", "replacing P1 -> P3 on n4"):
        assert cell in row3
    row4 = next(line for line in text.splitlines() if "group 4" in line)
    assert "none" in row4 and "6,7,8,9" in row4 and "40" in row4


def test_live_view_plain_lines() -> None:
    out = io.StringIO()  # not a terminal: plain lines
    snap = build_snapshot(1.0, "clients running", _status(), LABELS, [0.0] * 10)
    with LiveView(file=out, plain_every=5.0) as view:
        assert not view.live_mode
        view.event(DemoEvent(0.5, "service started"))
        view.snapshot(snap)
        view.snapshot(Snapshot(3.0, "Join", 5, snap.rows))  # within 5 s of the last: not printed
        view.snapshot(Snapshot(6.5, "Join", 5, snap.rows))
    lines = out.getvalue().splitlines()
    assert lines == ["   0.50s  service started", format_line(snap),
                     format_line(Snapshot(6.5, "Join", 5, snap.rows))]


def test_live_view_on_a_terminal_draws_the_table() -> None:
    out = io.StringIO()
    snap = build_snapshot(1.0, "clients running", _status(), LABELS, [0.0] * 10)
    with LiveView(file=out, live=True) as view:
        view.event(DemoEvent(0.5, "service started"))
        view.snapshot(snap)
    text = out.getvalue()
    assert "service started" in text and "clients running" in text and "replacing" in text


# ---------------------------------------------------------------------------------------------
# The report and the arguments
# ---------------------------------------------------------------------------------------------


def canned(**changes: Any) -> SystemDemoReport:
    snap = build_snapshot(40.0, "after the replacements", _status(), LABELS, [1.0] * 10, ops_total=900)
    report = SystemDemoReport(
        seed=7, groups=3, replicas=3, clients=4, mode="cluster", cluster="a Ray cluster started here",
        events=[DemoEvent(0.0, "starting"), DemoEvent(20.0, "group 4 joined")], joined=4, left=1,
        moved_in=(3, 9), moved_out=(0, 1, 2), lost_node="n4", lost_node_id="node-dddd", node_killed=True,
        lost_replicas=[(0, 1), (2, 1)], replaced={0: 8.2, 2: 8.5}, ops=900, verdict="linearizable",
        check_s=0.03, checked_writes=57, history_path="/tmp/d/history.kv", report_html="/tmp/d/report.html",
        throughput=[(10.0, 200.0), (11.0, 280.0)], last_snapshot=snap, elapsed=50.0, ray_start_s=9.0,
        service_start_s=12.0)
    for k, v in changes.items():
        setattr(report, k, v)
    return report


def test_report_account() -> None:
    r = canned()
    assert r.ok
    lines = r.format().splitlines()
    assert lines[0] == "raykv demo: a controller and 3 groups of 3 replicas, 4 clients, seed 7"
    assert "  20.00s  group 4 joined" in lines
    assert "Groups at the end" in lines
    assert "Join: group 4 took shards 3, 9" in lines
    assert "Leave: group 1 handed over shards 0, 1, 2 and stopped" in lines
    assert ("Loss: node n4 killed (2 replicas, one per group); back at full strength after: "
            "controller 8.2 s, group 2 8.5 s") in lines
    assert "Clients: 900 operations (0 with an unknown outcome), up to 280 ops/s" in lines
    assert "HTML report: /tmp/d/report.html" in lines
    assert lines[-1].startswith("OK: 900 operations through a Join, a Leave and a lost node, linearizable")
    short = r.format(timeline=False, table=False)
    assert "Timeline" not in short and "Groups at the end" not in short


@pytest.mark.parametrize(("changes", "why"), [
    ({"verdict": "not linearizable"}, "the history is not linearizable"),
    ({"lost": ["k1: 0:3;"]}, "1 acknowledged writes lost, 0 duplicated"),
    ({"replaced": {0: 8.2}}, "a step did not happen"),
    ({"left": None}, "a step did not happen"),
    ({"error": "joining a new group: TimeoutError: no"}, "joining a new group: TimeoutError: no"),
])
def test_report_fails_with_the_reason(changes: dict[str, Any], why: str) -> None:
    r = canned(**changes)
    assert not r.ok
    assert r.format().splitlines()[-1] == f"FAILED: {why}"


def test_too_few_nodes_on_an_existing_cluster_is_said_not_failed() -> None:
    r = canned(replaced={0: 8.2}, node_killed=False, not_replaced="group 2: no live node is free")
    assert r.ok
    text = r.format()
    assert "node n4 kept, the service's replicas on it killed" in text
    assert "  not replaced: group 2: no live node is free" in text


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"nodes": 3}, "nodes must be an integer of at least 4"),
    ({"groups": 1}, "groups must be an integer of at least 2"),
    ({"replicas": 2}, "replicas must be an integer of at least 3"),
    ({"nshards": 3}, "nshards must be an integer of at least 4"),
    ({"clients": 0}, "clients must be an integer of at least 1"),
    ({"phase_s": -1.0}, "phase_s must be >= 0"),
])
def test_run_system_demo_rejects_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        raykv.run_system_demo(**kwargs)


# ---------------------------------------------------------------------------------------------
# The command line (the scenario replaced by a canned run; no Ray)
# ---------------------------------------------------------------------------------------------


def test_demo_command_runs_the_system_demo(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    import raykv.system_demo

    calls: list[dict[str, Any]] = []

    def fake(**kwargs: Any) -> SystemDemoReport:
        calls.append(kwargs)
        report = canned()
        for ev in report.events:
            kwargs["on_event"](ev)
        assert report.last_snapshot is not None
        kwargs["on_snapshot"](report.last_snapshot)
        return report

    monkeypatch.setattr(raykv.system_demo, "run_system_demo", fake)
    argv = ["demo", "--phase", "1.5", "--seed", "7", "--clients", "2", "--address", "auto", "--out", "d"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert (calls[0]["phase_s"], calls[0]["seed"], calls[0]["clients"], calls[0]["address"],
            calls[0]["out"]) == (1.5, 7, 2, "auto", "d")
    assert out.count("group 4 joined") == 1, "each event is printed once"
    assert "after the replacements | 10 ops/s" in out, "the table in one plain line"
    assert "HTML report: /tmp/d/report.html" in out and "OK: 900 operations" in out


def test_demo_command_fails_with_the_reason(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    import raykv.system_demo

    monkeypatch.setattr(raykv.system_demo, "run_system_demo",
                        lambda **_: canned(verdict="not linearizable"))
    assert cli.main(["demo", "--plain"]) == 1
    captured = capsys.readouterr()
    assert "FAILED: the history is not linearizable" in captured.out
    assert captured.err.strip() == "raykv demo: error: FAILED: the history is not linearizable"


@pytest.mark.parametrize("argv", [["demo", "--nodes", "3"], ["demo", "--phase", "-1"],
                                  ["demo", "--groups", "x"], ["demo", "raft", "--peers", "2"]])
def test_demo_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    assert "usage: raykv demo" in capsys.readouterr().err


def test_demo_help_describes_both_demos(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: raykv demo ")
    for what in ("--nodes", "--phase", "--address", "Join", "Leave", "linearizability", "raykv demo raft"):
        assert what in out
    assert cli.main(["demo", "raft", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: raykv demo raft ") and "--peers" in out and "crashes the leader" in out
