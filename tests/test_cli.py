"""The ``raykv`` package face and command line: ``__all__``, help texts, ``check`` and ``sim``
pass-through, the demo's printing (with a canned report), and one end-to-end demo on Ray."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import inspect
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import raykv
from raykv import cli
from raykv.demo import DemoEvent, DemoReport, PeerRow

GOOD_KV = (
    '{:process 0, :type :invoke, :f :put, :key "1", :value "a"}\n'
    '{:process 0, :type :ok, :f :put, :key "1", :value "a"}\n'
    '{:process 1, :type :invoke, :f :get, :key "1", :value nil}\n'
    '{:process 1, :type :ok, :f :get, :key "1", :value "a"}\n'
)
BAD_KV = GOOD_KV.replace(':value "a"', ':value "b"', 2)  # put "b", then read "a"
GARBLED_KV = GOOD_KV + '{:process 2, :type :ok, :f :get, :key "1"\n'


def raykv_subprocess(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the command line as a user would (``python -m raykv.cli``), outside any Ray runtime."""
    return subprocess.run([sys.executable, "-m", "raykv.cli", *args], capture_output=True, text=True,
                          timeout=60, check=False)


# ---------------------------------------------------------------------------------------------
# The package face
# ---------------------------------------------------------------------------------------------


def _isort_key(name: str) -> tuple[int, str]:
    """ruff's RUF022 order: CONSTANTS, then Classes, then functions, each alphabetical."""
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def test_all_is_sorted_unique_and_importable() -> None:
    names = raykv.__all__
    assert names, "raykv.__all__ is empty"
    assert len(names) == len(set(names)), f"duplicates in __all__: {sorted(names)}"
    assert names == sorted(names, key=_isort_key), "raykv.__all__ is not sorted (RUF022 order)"
    for name in names:
        assert getattr(raykv, name, None) is not None, f"raykv.{name} is in __all__ but not importable"
    namespace: dict[str, Any] = {}
    exec("from raykv import *", namespace)
    assert set(names) <= set(namespace)


def test_all_names_the_public_api() -> None:
    for name in ("RaftConfig", "RaftNode", "FaultyNetwork", "MemoryStorage", "FileStorage",
                 "RaftHarness", "run_demo", "DemoReport", "init_ray", "connect"):
        assert name in raykv.__all__, f"{name} missing from raykv.__all__"
    # nothing public is exported without being listed (submodules aside)
    public = {n for n, v in vars(raykv).items()
              if not n.startswith("_") and type(v).__name__ != "module"}
    assert public == set(raykv.__all__), f"not in __all__: {sorted(public - set(raykv.__all__))}"


def test_console_script_points_at_main() -> None:
    scripts = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="console_scripts")}
    assert scripts.get("raykv") == "raykv.cli:main"


# ---------------------------------------------------------------------------------------------
# Help and usage errors
# ---------------------------------------------------------------------------------------------


def test_top_level_help_lists_every_command() -> None:
    result = raykv_subprocess("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: raykv")
    for cmd in cli.COMMANDS:
        assert f"    {cmd.name} " in result.stdout, f"{cmd.name} missing from raykv --help"
    assert "RAY_ADDRESS" in result.stdout and "exit status" in result.stdout


def _names_itself_raykv(command: str) -> bool:
    """Whether ``raykv COMMAND --help`` says ``usage: raykv COMMAND`` (the simulator's main names
    itself ``python -m raft.sim`` unless it takes a ``prog`` argument)."""
    if command != "sim":
        return True
    sim_main = cli._find_sim_main()
    return sim_main is None or "prog" in inspect.signature(sim_main).parameters


@pytest.mark.parametrize("command", [c.name for c in cli.COMMANDS])
def test_subcommand_help(command: str) -> None:
    result = raykv_subprocess(command, "--help")
    assert result.returncode == 0, result.stderr
    prefix = f"usage: raykv {command}" if _names_itself_raykv(command) else "usage: "
    assert result.stdout.startswith(prefix), result.stdout[:200]


def test_demo_help_describes_the_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "raft", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--peers", "--commands", "--seed", "--address", "--quiet"):
        assert option in out
    assert "crashes the leader" in out


@pytest.mark.parametrize("argv", [[], ["nosuch"], ["demo", "raft", "--peers", "2"],
                                  ["demo", "raft", "--commands", "1"], ["demo", "raft", "--peers", "ten"],
                                  ["demo", "--peers", "3"]])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    assert "usage: raykv" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"raykv {importlib.metadata.version('raykv')}"


# ---------------------------------------------------------------------------------------------
# raykv check
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def histories(tmp_path: Path) -> dict[str, str]:
    made = {"good.txt": GOOD_KV, "bad.txt": BAD_KV, "garbled.txt": GARBLED_KV}
    for name, text in made.items():
        (tmp_path / name).write_text(text)
    return {name: str(tmp_path / name) for name in made}


@pytest.mark.parametrize(("name", "status", "verdict"), [
    ("good.txt", 0, "linearizable"),
    ("bad.txt", 1, "not linearizable"),
    ("garbled.txt", 2, None),
])
def test_check_exit_codes(histories: dict[str, str], name: str, status: int, verdict: str | None,
                          capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", "--format", "kv", histories[name]]) == status
    captured = capsys.readouterr()
    if verdict is None:
        assert captured.out == "" and "error:" in captured.err
    else:
        assert captured.out.startswith(f"{histories[name]}: {verdict} (")


def test_check_passes_options_through(histories: dict[str, str], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    reports = tmp_path / "reports"
    reports.mkdir()
    argv = ["check", "--format", "kv", "--whole", "--html", str(reports), histories["bad.txt"]]
    assert cli.main(argv) == 1
    assert (reports / "bad.txt.html").is_file()
    assert "report written" in capsys.readouterr().err


def test_check_as_a_subprocess(histories: dict[str, str]) -> None:
    result = raykv_subprocess("check", "--format", "kv", histories["good.txt"], histories["bad.txt"])
    assert result.returncode == 1, result.stderr
    assert [line.rsplit(" (", 1)[0] for line in result.stdout.splitlines()] == [
        f"{histories['good.txt']}: linearizable", f"{histories['bad.txt']}: not linearizable"]


def test_check_without_arguments_explains_itself(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check"]) == 2
    assert "raykv check --help" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# raykv sim
# ---------------------------------------------------------------------------------------------


def test_sim_missing_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli, "_find_sim_main", lambda: None)
    assert cli.main(["sim", "--seeds", "10"]) == 2
    assert "simulator's command line is not available" in capsys.readouterr().err
    assert cli.main(["sim", "--help"]) == 0
    assert "Not available in this installation yet" in capsys.readouterr().out


def test_sim_passes_arguments_through(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[list[str], str]] = []

    def fake_main(argv: list[str], prog: str = "") -> int:
        seen.append((argv, prog))
        return 3

    monkeypatch.setattr(cli, "_find_sim_main", lambda: fake_main)
    assert cli.main(["sim", "--seed", "7", "--", "-x", "--help"]) == 3
    assert seen == [(["--seed", "7", "--", "-x", "--help"], "raykv sim")]

    monkeypatch.setattr(cli, "_find_sim_main", lambda: lambda argv: 0)  # a main without prog
    assert cli.main(["sim"]) == 0


def test_sim_main_is_found_when_it_exists() -> None:
    """This installation has the simulator: ``raykv sim`` must find its very ``main``."""
    from raft.sim import cli as sim_cli

    assert sim_cli.__name__ == cli.SIM_MODULE
    assert cli._find_sim_main() is sim_cli.main


def test_sim_main_is_not_found_when_the_module_or_its_main_is_missing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "SIM_MODULE", "raft.no_such_simulator")
    assert cli._find_sim_main() is None
    monkeypatch.setattr(cli, "SIM_MODULE", "no_such_package.cli")  # its parent is missing too
    assert cli._find_sim_main() is None
    monkeypatch.setattr(cli, "SIM_MODULE", "raft.sim.config")  # exists, but has no main
    assert cli._find_sim_main() is None


def test_sim_usage_errors_exit_2_without_raising(monkeypatch: pytest.MonkeyPatch) -> None:
    def strict_main(argv: list[str]) -> int:
        raise SystemExit(2)  # what argparse does on a bad option

    monkeypatch.setattr(cli, "_find_sim_main", lambda: strict_main)
    assert cli.main(["sim", "--no-such-option"]) == 2


# ---------------------------------------------------------------------------------------------
# raykv demo raft, printing (a canned report; no Ray; the whole-system demo: test_system_demo_table.py)
# ---------------------------------------------------------------------------------------------


def canned_report(error: str | None = None) -> DemoReport:
    rows = [PeerRow(peer=i, role="leader" if i == 1 else "follower", term=2, commit=4, applied=4,
                    last_index=4, rpcs_received=10 * i + 1, restarted=i == 0) for i in range(3)]
    return DemoReport(
        peers=3, commands=4, seed=5, cluster="embedded Ray", events=[
            DemoEvent(0.0, "starting Ray"), DemoEvent(1.5, "peer0 elected leader of term 1")],
        leaders={1: 0, 2: 1}, max_term=3, first_leader=0, second_leader=1, restarted=0,
        failover_s=0.4, catch_up_s=0.1, caught_up=True, applied_everywhere=True,
        command_indexes=[1, 2, 3, 4], peer_rows=rows, total_rpcs=1234, total_bytes=56789,
        elapsed=3.2, ray_start_s=1.0, error=error)


def test_report_format() -> None:
    text = canned_report().format()
    lines = text.splitlines()
    assert lines[0] == "raykv demo: 3 Raft peers, 4 commands, seed 5"
    assert "   1.50s  peer0 elected leader of term 1" in lines
    header = next(line for line in lines if "RPCs received" in line)
    assert header.split() == ["peer", "role", "term", "commit", "applied", "last", "index", "RPCs",
                              "received"]
    assert any(line.split() == ["peer0*", "follower", "2", "4", "4", "4", "1"] for line in lines)
    assert "leaders seen (term: peer): 1: peer0, 2: peer1 (1 term(s) with no leader seen" in text
    assert "Network: 1,234 RPCs, 56,789 bytes" in text
    assert lines[-1].startswith("OK: 4 commands on 3 peers")
    assert "Timeline" not in canned_report().format(timeline=False)
    assert canned_report("electing: no leader").format().splitlines()[-1] == "FAILED: electing: no leader"


@pytest.mark.parametrize("quiet", [False, True])
def test_demo_command_prints_the_report(quiet: bool, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    import raykv.demo

    calls: list[dict[str, Any]] = []

    def fake_run_demo(**kwargs: Any) -> DemoReport:
        calls.append(kwargs)
        report = canned_report()
        if kwargs["on_event"] is not None:
            for ev in report.events:
                kwargs["on_event"](ev)
        return report

    monkeypatch.setattr(raykv.demo, "run_demo", fake_run_demo)
    argv = ["demo", "raft", "--peers", "3", "--commands", "4", "--seed", "5", "--address", "auto"]
    assert cli.main([*argv, "--quiet"] if quiet else argv) == 0
    out = capsys.readouterr().out
    assert calls[0]["peers"] == 3 and calls[0]["commands"] == 4 and calls[0]["seed"] == 5
    assert calls[0]["address"] == "auto" and calls[0]["progress_bar"] is not quiet
    assert out.count("peer0 elected leader of term 1") == 1, "each event is printed exactly once"
    assert "Peers at the end" in out and "OK: 4 commands" in out
    assert calls[0]["out"] is None


def test_demo_command_prints_the_picture(monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    import raykv.demo

    calls: list[dict[str, Any]] = []

    def fake_run_demo(**kwargs: Any) -> DemoReport:
        calls.append(kwargs)
        return replace(canned_report(), viz_html=f"{kwargs['out']}/viz.html",
                       decision_log=f"{kwargs['out']}/decisions.log")

    monkeypatch.setattr(raykv.demo, "run_demo", fake_run_demo)
    assert cli.main(["demo", "raft", "--quiet", "--out", "run7"]) == 0
    assert calls[0]["out"] == "run7"
    assert ("Picture of the run: run7/viz.html (open it in a browser; decision log run7/decisions.log)"
            in capsys.readouterr().out.splitlines())
    assert "No picture of the run: Ray was already running" in replace(
        canned_report(), viz_note="Ray was already running, so ...").format()


def test_demo_command_fails_with_the_reason(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    import raykv.demo

    monkeypatch.setattr(raykv.demo, "run_demo", lambda **_: canned_report("electing a new leader: none"))
    assert cli.main(["demo", "raft", "--quiet"]) == 1
    captured = capsys.readouterr()
    assert "FAILED: electing a new leader: none" in captured.out
    assert captured.err.strip() == "raykv demo raft: error: electing a new leader: none"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"peers": 2}, "peers must be between 3 and 9"),
    ({"peers": 10}, "peers must be between 3 and 9"),
    ({"commands": 1}, "commands must be at least 2"),
])
def test_run_demo_rejects_bad_arguments(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        raykv.run_demo(**kwargs)


def test_run_demo_reports_a_cluster_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    import raykv.cluster

    def refuse(*args: Any, **kwargs: Any) -> raykv.RayCluster:
        raise raykv.ClusterError("could not connect to Ray at 'nowhere:1': refused")

    monkeypatch.setattr(raykv.cluster, "init_ray", refuse)
    events: list[DemoEvent] = []
    report = raykv.run_demo(peers=3, commands=2, seed=1, address="nowhere:1", on_event=events.append)
    assert not report.ok
    assert report.error is not None
    assert report.error.endswith("could not connect to Ray at 'nowhere:1': refused")
    assert events[-1].text.startswith("FAILED while ")
    assert report.first_leader is None and report.peer_rows == []
    assert report.format().splitlines()[-1] == f"FAILED: {report.error}"


def test_connect_never_starts_ray() -> None:
    with pytest.raises(raykv.ClusterError, match="use init_ray"):
        raykv.connect("local")


# ---------------------------------------------------------------------------------------------
# The demo on Ray, end to end
# ---------------------------------------------------------------------------------------------


@pytest.mark.ray
def test_demo_end_to_end(ray_session: None) -> None:
    import ray

    events: list[DemoEvent] = []
    report = raykv.run_demo(peers=3, commands=6, seed=11, on_event=events.append)
    print(report.format())
    assert report.ok, report.error
    assert report.first_leader is not None, "no leader was elected"
    assert report.restarted is not None and report.second_leader is not None
    assert report.second_leader != report.restarted, "the crashed leader cannot lead the next term"
    assert report.leaders.get(min(report.leaders)) is not None and len(report.leaders) >= 2
    assert report.caught_up and report.catch_up_s is not None
    assert report.applied_everywhere
    assert report.command_indexes == [1, 2, 3, 4, 5, 6]
    assert [(r.commit, r.applied, r.last_index) for r in report.peer_rows] == [(6, 6, 6)] * 3
    assert [r.restarted for r in report.peer_rows] == [i == report.restarted for i in range(3)]
    assert sum(r.role == "leader" for r in report.peer_rows) == 1
    assert report.total_rpcs > 0 and report.total_bytes > 0 and report.handler_errors == 0
    assert events == report.events and [e.elapsed for e in events] == sorted(e.elapsed for e in events)
    assert report.elapsed < 30.0, f"the demo took {report.elapsed:.1f} s"
    # the session's runtime was reused, so the demo left it running; its workers were started without
    # RAYKV_LOG, so there is no picture, and the account says why
    assert ray.is_initialized()
    assert "reused" in report.cluster
    assert report.viz_html is None and report.decision_log is None
    assert report.viz_note is not None and report.viz_note.startswith("Ray was already running")


@pytest.mark.ray
def test_init_ray_reuses_the_running_runtime(ray_session: None) -> None:
    import ray

    namespace = ray.get_runtime_context().namespace
    cluster = raykv.init_ray()
    assert (cluster.mode, cluster.namespace, cluster.owned) == ("reused", namespace, False)
    assert cluster.cpus > 0 and cluster.nodes >= 1
    cluster.shutdown()
    assert ray.is_initialized(), "shutting down a reused runtime must leave it running"
    with pytest.raises(raykv.ClusterError, match="already initialised"):
        raykv.init_ray(namespace=namespace + "-other")
