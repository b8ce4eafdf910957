"""The debugging tools: the decision log's file and timestamps (:mod:`raft.trace`), ``raykv logs``
(:mod:`raykv.logview`, :mod:`raykv.logs_cli`) and ``raykv test-repeat`` (:mod:`raykv.repeat_cli`).
No Ray is started: the log is recorded from :func:`raft.trace.log` itself, and the repeated test is a
tiny pytest file written to a temporary directory."""

from __future__ import annotations

import argparse
import io
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from raft import trace
from raykv import logs_cli, logview, repeat_cli
from raykv.logview import Event, Layout, filter_events, layout, parse, plain, plan

# ------------------------------------------------------------------------------------------------
# recording a log: RAYKV_LOG_FILE and the time prefix
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def restore_trace() -> Iterator[None]:
    """Put raft.trace's module state and its logger back as they were."""
    logger = logging.getLogger("raykv.raft")
    saved = (trace._enabled, trace._handler, list(logger.handlers), logger.propagate, logger.level)
    yield
    if trace._handler is not None and trace._handler not in saved[2]:
        trace._handler.close()
    trace._enabled, trace._handler = saved[0], saved[1]
    logger.handlers[:] = saved[2]
    logger.propagate, logger.level = saved[3], saved[4]


def record(path: Path) -> None:
    """A small run of three peers, logged through raft.trace into ``path``."""
    trace.configure("all", str(path))
    trace.log(0, 1, "candidate", "elect", "election timeout: campaigning at last index 0 term 0")
    trace.log(1, 1, "follower", "term", "term 0 -> 1 on RequestVote from P0")
    trace.log(2, 1, "follower", "elect", "voted for P0")
    trace.log(0, 1, "leader", "elect", "won the election with votes [0, 1, 2]")
    trace.log(0, 1, "leader", "append", "sent 1 entries to P1")
    trace.log(0, 1, "leader", "commit", "commit index 0 -> 1")


def test_configure_with_a_file_appends_timed_lines_there_only(
        tmp_path: Path, restore_trace: None, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "raft.log"
    record(path)
    lines = path.read_text().splitlines()
    assert len(lines) == 6
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{6} raft  P1 T1   follower  term    term 0 -> 1 on "
                        r"RequestVote from P0", lines[1]), lines[1]
    assert capsys.readouterr().err == ""  # to the file instead of stderr
    # a second configure with a file replaces the first handler (no line written twice)
    other = tmp_path / "other.log"
    trace.configure("commit", str(other))
    trace.log(0, 1, "leader", "commit", "commit index 1 -> 2")
    assert len(path.read_text().splitlines()) == 6
    assert len(other.read_text().splitlines()) == 1


# ------------------------------------------------------------------------------------------------
# parsing and filtering
# ------------------------------------------------------------------------------------------------

SAMPLE = """\
13:20:01.000100 raft  P0 T1   candidate elect   election timeout: campaigning at last index 0 term 0
13:20:01.000900 raft  P1 T1   follower  term    term 0 -> 1 on RequestVote from P0
(ReplicaActor pid=4242) 13:20:01.001200 raft  P2 T1   follower  elect   voted for P0
13:20:01.002100 raft  P0 T1   leader    elect   won the election with votes [0, 1, 2]
FAILED tests/test_x.py::test_y - AssertionError: boom
13:20:02.500100 raft  P0 T1   leader    commit  commit index 0 -> 1
13:20:02.400100 raft  P1 T1   follower  append  accepted 1 entries at 1
raft  P2 T1 fol
\x1b[36m(ReplicaActor pid=4243)\x1b[0m 13:20:03.000100 raft  P2 T2   pre-candidate elect   pre-vote
raft  P1 T2   follower  snap    installed snapshot at 10
"""


def test_parse_reads_every_kind_of_line_in_order() -> None:
    events = parse(SAMPLE.splitlines())
    assert [e.raw for e in events] == SAMPLE.splitlines()  # one event per line, unchanged
    assert [e.peer for e in events] == [0, 1, 2, 0, None, 0, 1, None, 2, 1]
    assert events[0].time == 0.0
    assert events[2].time == pytest.approx(0.0011)  # Ray's prefix is skipped
    assert events[4].time == events[3].time  # a line without a time takes the one before
    assert events[6].topic == "append" and events[6].text == "accepted 1 entries at 1"
    assert events[8].role == "pre-candidate" and events[8].term == 2  # colour codes stripped
    assert events[9].topic == "snap" and events[9].time == events[8].time  # an old untimed line
    assert events[3].cell() == "T1 L elect: won the election with votes [0, 1, 2]"


def test_parse_times_cross_midnight() -> None:
    events = parse(["23:59:59.500000 raft  P0 T1   leader    commit  a",
                    "00:00:00.250000 raft  P1 T1   follower  commit  b"])
    assert events[1].time == pytest.approx(0.75)


def test_filters_by_topic_peer_and_time() -> None:
    events = parse(SAMPLE.splitlines())
    only = filter_events(events, topics=frozenset({"elect"}), other=False)
    assert [(e.peer, e.topic) for e in only] == [(0, "elect"), (2, "elect"), (0, "elect"), (2, "elect")]
    ignored = filter_events(events, ignore=frozenset({"elect", "term"}), other=False)
    assert {e.topic for e in ignored} == {"commit", "append", "snap"}
    peers = filter_events(events, peers=frozenset({1}))
    assert [e.peer for e in peers] == [1, None, 1, None, 1]  # other lines kept
    window = filter_events(events, start=1.0, end=1.9, other=False)
    assert [e.text for e in window] == ["accepted 1 entries at 1", "commit index 0 -> 1"]
    assert [e.raw for e in filter_events(events, start=1.45, end=1.9)] == [events[5].raw]
    # sorted by time, stably: P1's append (1.4) before P0's commit (1.5), which the file has after
    everything = filter_events(events)
    assert everything.index(events[6]) < everything.index(events[5])
    assert filter_events(events, sort=False) == events


def test_parse_topics_names_the_unknown_and_the_known() -> None:
    assert logview.parse_topics("elect, Commit") == frozenset({"elect", "commit"})
    with pytest.raises(ValueError, match=r"unknown topic\(s\) vote; the topics are append, commit"):
        logview.parse_topics("elect,vote")


# ------------------------------------------------------------------------------------------------
# layout
# ------------------------------------------------------------------------------------------------


def test_layout_puts_each_peer_in_its_column() -> None:
    events = parse(SAMPLE.splitlines())
    lay = plan(events, width=30)
    assert lay.peers == (("", 0), ("", 1), ("", 2)) and lay.columns == 3
    lines = plain([logview.header(lay), *layout(filter_events(events), lay)])
    tw = lay.time_width
    assert lines[0] == " " * tw + "P0".ljust(30) + "P1".ljust(30) + "P2"
    row = next(i for i, line in enumerate(lines) if "voted for P0" in line)
    assert lines[row].startswith("   0.0011 ")
    assert lines[row].index("T1 F elect: voted for") == tw + 2 * 30
    p1 = next(line for line in lines if "term 0 -> 1" in line)
    assert p1.index("T1 F term:") == tw + 30
    assert "FAILED tests/test_x.py::test_y - AssertionError: boom" in lines  # other lines as they are
    assert "raft  P2 T1 fol" in lines
    # a long cell wraps within its column; the time is on its first line only
    start = next(i for i, line in enumerate(lines) if "election timeout" in line)
    assert lines[start + 1].startswith(" " * tw) and lines[start + 1].strip()
    assert all(len(line) <= tw + 3 * 30 for line in lines if "FAILED" not in line and "(Replica" not in line)


def test_layout_with_fewer_columns_names_the_peer_in_each_cell() -> None:
    events = [e for e in parse(SAMPLE.splitlines()) if e.peer is not None]
    lay = plan(events, width=60, ncols=1)
    assert lay.columns == 1 and lay.folded()
    lines = plain(layout(events, lay))
    assert any(line.endswith("0.0011 P2 T1 F elect: voted for P0") for line in lines)
    assert Layout(peers=(("", 0), ("", 1), ("", 2), ("", 3)), ncols=2).column_of(("", 3)) == 1


def test_wrap_cuts_at_spaces_within_the_width() -> None:
    assert logview.wrap("commit index 17 -> 19", 12) == ["commit index", "17 -> 19"]
    assert logview.wrap("a " + "x" * 10 + " b", 4) == ["a", "xxxx", "xxxx", "xx b"]
    assert logview.wrap("", 5) == [""] and logview.wrap("short", 5) == ["short"]
    text = "won the election with votes [0, 1, 2] at last index 17 term 4"
    for width in range(4, 40):
        lines = logview.wrap(text, width)
        assert all(len(line) <= width for line in lines)
        assert "".join(lines).replace(" ", "") == text.replace(" ", "")  # nothing lost
        if width >= len("election"):  # no word longer than the line: cut only at spaces
            assert " ".join(lines).split() == text.split()


def test_plan_shares_the_total_width() -> None:
    events = [Event(raw="", time=0.0, peer=p, term=1, role="follower", topic="term") for p in (3, 7)]
    lay = plan(events, total_width=110)
    assert lay.peers == (("", 3), ("", 7)) and lay.width == 50


def test_labelled_groups_get_their_own_columns_and_notes_span_them(
        tmp_path: Path, restore_trace: None) -> None:
    path = tmp_path / "sharded.log"
    trace.configure("all", str(path))
    for label in ("shop-g101-0", "shop-g102-0"):
        trace.set_label(label)
        trace.log(0, 3, "leader", "commit", f"commit index 4 -> 5 in {label}")
    trace.set_label("")
    trace.note("fault", "isolate shop-g101-0")
    with path.open("a") as f:
        f.write("(ServiceReplica pid=77) 23:59:59.000000 raft  P1 T3   follower  term    Ray's prefix\n")
    events = parse(path.read_text().splitlines())
    assert [e.source for e in events] == ["shop-g101-0", "shop-g102-0", "", ""]
    assert events[2].peer is None and events[2].topic == "fault" and events[2].is_trace
    lay = plan(events, width=60)
    assert [logview.name(k) for k in lay.peers] == ["P1", "shop-g101-0", "shop-g102-0"]
    lines = plain([logview.header(lay), *layout(filter_events(events, sort=False), lay)])
    assert lines[0].split() == ["P1", "shop-g101-0", "shop-g102-0"]
    assert lines[2].index("T3 L commit: commit index 4 -> 5 in shop-g102-0") == lay.time_width + 120
    assert lines[3].endswith("note fault: isolate shop-g101-0")
    assert [e.topic for e in filter_events(events, topics=frozenset({"fault"}))] == ["fault"]
    assert [e.peer for e in filter_events(events, peers=frozenset({1}), sort=False)] == [None, 1]  # + note


# ------------------------------------------------------------------------------------------------
# the raykv logs command
# ------------------------------------------------------------------------------------------------


def logs(argv: list[str], out: io.StringIO | None = None) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="raykv logs")
    logs_cli.configure(parser)
    out = out or io.StringIO()
    code = logs_cli.run(parser.parse_args(argv), out=out)
    return code, out.getvalue()


def test_logs_command_plain_filtered_and_coloured(tmp_path: Path, restore_trace: None) -> None:
    path = tmp_path / "raft.log"
    record(path)
    with path.open("a") as f:
        f.write("not a decision \x00 line\n")
    code, text = logs([str(path), "--width", "40"])
    assert code == 0 and "\x1b[" not in text  # plain text when not a terminal
    assert "T1 L commit: commit index 0 -> 1" in text and "not a decision \x00 line" in text
    code, text = logs([str(path), "--topics", "elect", "--trace-only"])
    assert "commit index" not in text and "voted for P0" in text and "not a decision" not in text
    code, text = logs([str(path), "--ignore", "elect,term", "--peers", "0"])
    assert "voted" not in text and "T1 L append: sent 1 entries to P1" in text
    assert text.splitlines()[0].split() == ["P0"]
    code, text = logs([str(path), "--color", "always", "--topics", "commit", "--trace-only"])
    assert "\x1b[32mT1 L commit: commit index 0 -> 1" in text  # commit is green


def test_logs_command_reads_stdin_and_refuses_bad_input(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(SAMPLE.encode() + b"\xff\xfe torn\n")))
    code, text = logs(["-", "--columns", "1", "--from", "1.45"])
    assert code == 0
    assert "P0 T1 L commit: commit index 0 -> 1" in text and "torn" in text and "voted" not in text
    code, _ = logs([str(tmp_path / "missing.log")])
    assert code == 2 and "cannot read" in capsys.readouterr().err
    code, _ = logs([str(tmp_path / "missing.log"), "--from", "3", "--to", "1"])
    assert code == 2 and "--from 3.0 is after --to 1.0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        logs(["x.log", "--topics", "vote"])
    assert "unknown topic(s) vote" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# the raykv test-repeat command
# ------------------------------------------------------------------------------------------------

TINY_TEST = '''\
import os
import time

from raft import trace


def test_tiny():
    run = int(os.environ["RAYKV_REPEAT_RUN"])
    trace.log(run % 3, 1, "leader", "commit", f"run {run} commits")
    if os.environ.get("TINY_SLEEP"):
        time.sleep(float(os.environ["TINY_SLEEP"]))
    assert run % int(os.environ.get("TINY_FAIL_EVERY") or 10**9) != 0, f"run {run} fails"
'''


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A one-test file in tmp_path; pytest's plugins are not loaded in its runs (they start faster)."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "test_tiny.py"
    path.write_text(TINY_TEST)
    return path


def test_repeat_keeps_only_the_failing_runs_logs(tiny: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TINY_FAIL_EVERY", "2")  # runs 2 and 4 fail
    out = tmp_path / "kept"
    code = repeat_cli.main([str(tiny), "--runs", "4", "--workers", "2", "--out", str(out), "--", "-x"])
    captured = capsys.readouterr()
    assert code == 1, captured
    assert sorted(p.name for p in out.iterdir()) == ["run-0002.log", "run-0002.out",
                                                     "run-0004.log", "run-0004.out"]
    log = (out / "run-0004.log").read_text()
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{6} raft  P1 T1   leader    commit  run 4 commits\n", log)
    assert "AssertionError: run 2 fails" in (out / "run-0002.out").read_text()
    assert "4 runs, 2 passed, 2 failed (50%)" in captured.out
    assert "run 2 (" in captured.out and "FAILED test_tiny.py::test_tiny - AssertionError: run 2 fails" \
        in captured.out
    assert f"raykv logs {out / 'run-0002.log'}" in captured.out
    assert "2 runs at once" in captured.err  # the warning about parallel timing


def test_repeat_all_passing_keeps_nothing(tiny: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "kept"
    code = repeat_cli.main(["-k", "tiny", "--runs", "2", "--workers", "1", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured
    assert not out.exists()
    assert "2 runs, 2 passed, 0 failed" in captured.out and "no failures: no logs kept" in captured.out
    assert "runs at once" not in captured.err


def test_repeat_kills_a_run_past_its_timeout(tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TINY_SLEEP", "30")
    out = tmp_path / "kept"
    code = repeat_cli.main([str(tiny), "--runs", "1", "--timeout", "1.5", "--out", str(out)])
    assert code == 1
    assert "timed out after 1.5 s (killed)" in capsys.readouterr().out
    assert (out / "run-0001.out").exists()


def test_repeat_refuses_a_target_that_selects_nothing(tiny: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    code = repeat_cli.main([str(tiny), "-k", "no_such_test", "--runs", "3", "--out", str(tmp_path / "o")])
    assert code == 2
    assert "status 5 (no test collected)" in capsys.readouterr().err
    assert repeat_cli.main(["--runs", "3"]) == 2
    assert "give the test to repeat" in capsys.readouterr().err
    assert repeat_cli.main([str(tiny), "--log", "vote"]) == 2
    assert "unknown topic(s) vote" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "run-0001.log").write_text("an earlier repetition's log\n")
    assert repeat_cli.main([str(tiny), "--out", str(tmp_path / "full")]) == 2
    assert "is not empty: give a new --out" in capsys.readouterr().err
    assert (tmp_path / "full" / "run-0001.log").read_text() == "an earlier repetition's log\n"
