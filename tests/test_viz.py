"""``raykv viz``: the timeline built from decision logs (pure), the page written from it, and the page in
a real headless browser (Debian's chromium driven by Selenium; skipped, saying why, only when no
chromium or chromedriver is installed).

The recorded run is a real Raft run without Ray: five :class:`raft.RaftNode` cores in the deterministic
simulator (:mod:`raft.sim`) on a lossy network with crashes, their decision log written by
:mod:`raft.trace` to a file exactly as Ray workers write it (``RAYKV_LOG=all`` + ``RAYKV_LOG_FILE``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.append(str(Path(__file__).resolve().parent.parent / "benchmarks"))

import viz_render

from raft import trace
from raft.sim import Profile, SimCluster, SimConfig
from raykv import viz_cli
from raykv.viz import build, render_html, write_viz
from raykv.viz.model import Timeline


@pytest.fixture(scope="module")
def sim_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The decision log of a 600-tick simulated run of five peers (drops, crashes, snapshots)."""
    path = tmp_path_factory.mktemp("viz") / "sim.log"
    logger = logging.getLogger("raykv.raft")
    saved = (trace._enabled, trace._handler, list(logger.handlers), logger.propagate, logger.level)
    try:
        trace.configure("all", str(path))
        SimCluster(3, SimConfig(ticks=600, nodes=5, profile=Profile(drop=0.05, crash_p=0.01,
                                                                   partition_p=0.01))).run()
    finally:
        if trace._handler is not None and trace._handler not in saved[2]:
            trace._handler.close()
        trace._enabled, trace._handler = saved[0], saved[1]
        logger.handlers[:] = saved[2]
        logger.propagate, logger.level = saved[3], saved[4]
    return path


@pytest.fixture(scope="module")
def sim_timeline(sim_log: Path) -> Timeline:
    return build([("sim", sim_log.read_text().splitlines())])


def test_the_simulated_run_becomes_lanes_terms_logs_and_paired_messages(sim_timeline: Timeline) -> None:
    tl = sim_timeline
    assert tl.unit == "s"
    assert [lane["name"] for lane in tl.lanes] == ["P0", "P1", "P2", "P3", "P4"]
    assert len(tl.terms) >= 2 and tl.leaders, "the run elects leaders in several terms"
    for states in tl.states:  # each lane's series is in time order and names real roles
        assert [s[0] for s in states] == sorted(s[0] for s in states)
        assert {s[2] for s in states} <= {"follower", "candidate", "pre-candidate", "leader", "crashed"}
    assert any(row[2] > 0 for logs in tl.logs for row in logs), "entries are committed"
    assert any(row[3] > 0 for logs in tl.logs for row in logs), "logs are compacted (snapshots)"
    received = [m for m in tl.msgs if m[2] is not None]
    assert len(received) > 100
    assert all(m[2] >= m[0] and m[1] != m[3] for m in received), "a receipt follows its send, elsewhere"
    assert {m[4] for m in tl.msgs} >= {"AE", "AER", "RV", "RVR"}
    kinds = {e[2] for e in tl.events}
    assert {"campaign", "elected", "vote", "snapshot", "crash", "restart"} <= kinds
    assert any(e[1] == -1 and e[3].startswith("partition") for e in tl.events), "partitions are run-wide"
    assert any(s[2] == "crashed" for states in tl.states for s in states)


def test_labels_group_the_peers_of_each_replica_group_and_notes_are_run_wide() -> None:
    lines = [
        "(shop-g101-0) 23:59:59.500000 raft  P0 T1   leader    msg     "
        "send AE P0->P1 T1 prev=0/0 n=1 commit=0 ; last=1",
        "(shop-g101-1) 23:59:59.600000 raft  P1 T1   follower  msg     "
        "recv AE P0->P1 T1 prev=0/0 n=1 commit=0 ; last=0",
        "(shop-g102-1) 23:59:59.700000 raft  P1 T4   leader    elect   won the election with votes [0, 1]",
        "23:59:59.800000 note  fault   crash shop-g101-1",
        "(shop-g101-1) 23:59:59.900000 raft  P1 T1   crashed   persist crashed: volatile state lost",
        "some other output the parser skips",
        "(ServiceReplica pid=77) 00:00:00.100000 raft  P0 T2   leader    commit  commit index 0 -> 1",
    ]
    tl = build([("decisions", lines)])
    names = [lane["name"] for lane in tl.lanes]
    assert names == ["decisions P0", "shop-g101 P0", "shop-g101 P1", "shop-g102 P1"]
    (msg,) = tl.msgs
    assert msg[1] == names.index("shop-g101 P0") and msg[3] == names.index("shop-g101 P1")
    assert msg[2] - msg[0] == pytest.approx(0.1)
    assert [e[2] for e in tl.events if e[1] == -1] == ["fault"]
    assert tl.states[names.index("shop-g101 P1")][-1][2] == "crashed"
    # the line after midnight comes last, 0.6 s after the first
    assert tl.end == pytest.approx(0.6)
    assert tl.logs[0] == [[pytest.approx(0.6), 0, 1, 0]]


def test_no_decision_line_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="RAYKV_LOG=all"):
        build([("empty", ["nothing here"])])
    with pytest.raises(FileNotFoundError, match="no such log file"):
        write_viz([tmp_path / "missing.log"], tmp_path / "x.html")
    (tmp_path / "d").mkdir()
    with pytest.raises(FileNotFoundError, match=r"without \*\.log files"):
        write_viz([tmp_path / "d"], tmp_path / "x.html")


def test_the_page_is_self_contained(sim_timeline: Timeline) -> None:
    page = render_html(sim_timeline, title="a </script> title")
    assert "__VIZ_" not in page
    assert "http://" not in page and "https://" not in page, "no network access, no CDN"
    assert page.count("</script>") == 1 + 1  # the data block and the code, nothing smuggled in
    assert "a &lt;/script&gt; title" in page


def test_command_writes_the_page_and_refuses_bad_input(sim_log: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    viz_cli.configure(parser)
    out = tmp_path / "page.html"
    assert viz_cli.run(parser.parse_args([str(sim_log.parent), "-o", str(out)])) == 0
    assert out.stat().st_size > 10_000 and "wrote" in capsys.readouterr().out
    assert viz_cli.run(parser.parse_args([str(tmp_path / "nope.log")])) == 2
    assert "no such log file" in capsys.readouterr().err
    (tmp_path / "other.log").write_text("not a decision\n")
    assert viz_cli.run(parser.parse_args([str(tmp_path / "other.log")])) == 1


# ------------------------------------------------------------------------------------------------
# In a real browser
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not (os.path.exists(viz_render.CHROMIUM) and os.path.exists(viz_render.CHROMEDRIVER)):
        pytest.skip(f"no browser: the page test needs Debian's chromium and chromium-driver "
                    f"({viz_render.CHROMIUM}, {viz_render.CHROMEDRIVER}); install them with "
                    "'apt-get install chromium chromium-driver'")
    # selenium is in the test extra: where chromium is installed, missing selenium fails, never skips
    driver = viz_render.chromium_driver()  # /usr/bin/chromium and chromedriver named; SE_OFFLINE
    try:
        yield driver
    finally:
        driver.quit()


def test_the_page_in_a_headless_browser(browser: object, sim_log: Path, sim_timeline: Timeline,
                                        tmp_path: Path) -> None:
    from PIL import Image
    from selenium.webdriver.common.by import By

    d: object = browser
    page = write_viz([sim_log], tmp_path / "sim.html")
    d.get(page.resolve().as_uri())  # type: ignore[attr-defined]
    assert d.execute_script("return document.body.dataset.ready") == "1"  # type: ignore[attr-defined]
    errors = [e for e in d.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]  # type: ignore[attr-defined]
    assert not errors, f"the page logged to the console: {errors}"
    tl = sim_timeline
    summary = d.find_element(By.ID, "summary").text  # type: ignore[attr-defined]
    assert f"5 peers, terms {tl.terms[0]}–{tl.terms[-1]}" in summary

    def table() -> list[list[str]]:
        rows = d.find_elements(By.CSS_SELECTOR, "#peers tr")[1:]  # type: ignore[attr-defined]
        return [[c.text for c in r.find_elements(By.TAG_NAME, "td")[:3]] for r in rows]

    # at the end of the run (the scrubber starts there): each peer's last role and term
    lanes_states = list(zip(tl.lanes, tl.states, strict=True))
    assert table() == [[lane["name"], st[-1][2], f"T{st[-1][1]}"] for lane, st in lanes_states]
    # the scrubber steps back in time: at 40 % of the run the table shows the state then
    d.execute_script("const s = document.getElementById('scrub'); s.value = 4000;"  # type: ignore[attr-defined]
                     "s.dispatchEvent(new Event('input'));")
    t = tl.end * 0.4
    want = []
    for lane, st in lanes_states:
        at = [s for s in st if s[0] <= t]
        want.append([lane["name"], at[-1][2], f"T{at[-1][1]}"] if at else [lane["name"], "?", "T0"])
    assert table() == want
    shot = tmp_path / "shot.png"
    assert d.save_screenshot(str(shot))  # type: ignore[attr-defined]
    with Image.open(shot) as img:
        colours = img.convert("RGB").getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 200, f"the screenshot looks blank: {len(colours)} distinct colours"
    assert not d.get_log("browser")  # type: ignore[attr-defined]
    # benchmarks/viz_render.py's measurement works on it (the figure in docs/logs.md)
    m = viz_render.measure(d, page)
    assert 0 < m["render_ms"] < 20_000 and 0 <= m["step_ms"] < 5_000, m

