"""The demos' picture (:mod:`raykv.demo_picture`), without Ray: the variables set only while the runtime
starts and restored after, the user's topics and file honoured, ``off`` and a runtime that was already
running giving no page with the reason, and a page drawn from a log (tests/test_system_demo_ray.py runs
the whole demo on Ray and checks its page)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from raykv.demo_picture import NOT_STARTED_HERE, DemoPicture


@pytest.fixture(autouse=True)
def no_log_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAYKV_LOG", raising=False)
    monkeypatch.delenv("RAYKV_LOG_FILE", raising=False)


def test_the_variables_are_set_only_while_ray_starts(tmp_path: Path) -> None:
    pic = DemoPicture(tmp_path / "out")
    with pic.inherit():
        assert os.environ["RAYKV_LOG"] == "all"
        assert os.environ["RAYKV_LOG_FILE"] == str((tmp_path / "out" / "decisions.log").resolve())
    assert "RAYKV_LOG" not in os.environ and "RAYKV_LOG_FILE" not in os.environ
    assert pic.log == tmp_path / "out" / "decisions.log" and pic.why_not is None


def test_the_users_topics_and_file_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYKV_LOG", "elect,msg")
    monkeypatch.setenv("RAYKV_LOG_FILE", str(tmp_path / "mine.log"))
    pic = DemoPicture(tmp_path / "out")
    with pic.inherit():
        assert os.environ["RAYKV_LOG"] == "elect,msg"
        assert os.environ["RAYKV_LOG_FILE"] == str(tmp_path / "mine.log")
    assert pic.log == tmp_path / "mine.log"
    assert os.environ["RAYKV_LOG"] == "elect,msg"
    assert os.environ["RAYKV_LOG_FILE"] == str(tmp_path / "mine.log")


def test_off_and_an_existing_runtime_give_no_page_with_the_reason(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    existing = DemoPicture(tmp_path / "a")
    existing.not_recorded()
    with existing.inherit():
        assert "RAYKV_LOG" not in os.environ
    assert existing.draw("t") is None and existing.why_not == NOT_STARTED_HERE
    assert existing.describe().startswith("No picture of the run: Ray was already running")
    monkeypatch.setenv("RAYKV_LOG", "off")
    off = DemoPicture(tmp_path / "b")
    with off.inherit():
        assert os.environ["RAYKV_LOG"] == "off" and "RAYKV_LOG_FILE" not in os.environ
    assert off.draw("t") is None and off.why_not == "RAYKV_LOG=off switches the decision log off"
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists(), "nothing written"


def test_a_page_is_drawn_from_the_log_or_the_reason_given(tmp_path: Path) -> None:
    pic = DemoPicture(tmp_path / "out")
    with pic.inherit():
        pass
    assert pic.draw("t") is None and pic.why_not is not None and "no such log file" in pic.why_not
    assert pic.log is not None
    pic.log.write_text("13:20:01.100000 raft  P0 T1   candidate elect   election timeout\n"
                       "13:20:01.200000 raft  P0 T1   leader    elect   won the election with votes [0, 1]\n"
                       "13:20:01.150000 raft  P1 T1   follower  elect   voted for P0\n")
    page = pic.draw("a tiny run")
    assert page == tmp_path / "out" / "viz.html" and page.read_text().startswith("<!DOCTYPE html>")
    assert "a tiny run" in page.read_text() and pic.describe().startswith(f"Picture of the run: {page}")
