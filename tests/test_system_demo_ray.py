"""``raykv demo`` end to end on Ray, in a short configuration: :func:`raykv.run_system_demo` starts its
own multi-node cluster (a head node and 4 worker nodes), a controller and 2 groups of 3 replicas, 2
clients; a group joins, group 1 leaves, the worker node holding the most replicas is killed and every
group replaces its lost replica; the history must be linearizable and the HTML report written, and the
run's decision log and its ``raykv viz`` page written next to them.

The demo starts a cluster of its own, so the test session's runtime (tests/conftest.py) is stopped for
the length of the test and started again afterwards.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import ray

import raykv
from raykv.demo import DemoEvent
from raykv.demo_table import Snapshot

pytestmark = [pytest.mark.ray, pytest.mark.timeout(180)]


def test_the_whole_system_demo(tmp_path: Path) -> None:
    had_session = ray.is_initialized()
    if had_session:
        ray.shutdown()
    events: list[DemoEvent] = []
    snapshots: list[Snapshot] = []
    t0 = time.monotonic()
    try:
        report = raykv.run_system_demo(groups=2, clients=2, phase_s=0.5, poll_s=0.5, seed=5,
                                       out=tmp_path / "demo", on_event=events.append,
                                       on_snapshot=snapshots.append)
        took = time.monotonic() - t0
        print(report.format())
        print(f"run_system_demo took {took:.1f} s")
        assert not ray.is_initialized(), "the demo shuts down the cluster it started"
    finally:
        if had_session:  # the session's runtime, as tests/conftest.py makes it
            ray.init(address="local", num_cpus=int(os.environ.get("RAYKV_TEST_CPUS", "2")),
                     include_dashboard=False, logging_level="WARNING", log_to_driver=True,
                     namespace="raykv-tests")
    assert report.ok, report.format()
    assert report.mode == "cluster" and report.node_killed
    # the events happened, in order
    assert report.joined == 3 and report.moved_in, "group 3 joined and took shards"
    assert report.left == 1 and report.moved_out, "group 1 left and handed its shards over"
    texts = [e.text for e in events]
    order = [next(i for i, t in enumerate(texts) if what in t)
             for what in ("service 'demo-", "group 3 started", "group 1 leaves", "killed, with its replicas",
                          "back at 3 of 3", "linearizable in")]
    assert order == sorted(order), texts
    assert events == report.events
    # the lost node held a replica of every group (9 replicas on 4 nodes, each group on distinct nodes),
    # and every group replaced its own, on a live node other than the lost one
    assert {gid for gid, _ in report.lost_replicas} == {0, 2, 3}, report.lost_replicas
    assert set(report.replaced) == {0, 2, 3} and report.not_replaced is None
    assert all(old == report.lost_node and new not in (report.lost_node, "head")
               for old, new in report.replaced_on.values()), report.replaced_on
    # the verdict and the files
    assert report.verdict == "linearizable" and not report.lost and not report.duplicated
    assert report.ops > 0 and report.checked_writes > 0
    assert report.report_html is not None and report.history_path is not None
    html = Path(report.report_html).read_text()
    assert html.startswith("<!DOCTYPE html>") and "linearizable" in html
    assert Path(report.history_path).read_text().count(":invoke") >= report.ops
    # the live table: snapshots while it ran, the last one without group 1 and with clients' throughput
    assert snapshots and report.last_snapshot is snapshots[-1]
    assert [r.gid for r in report.last_snapshot.rows] == [0, 2, 3]
    assert all(r.leader is not None and r.replicas == (3, 3) for r in report.last_snapshot.rows)
    assert max(rate for _, rate in report.throughput) > 0
    assert took < 90, f"the short demo took {took:.1f} s"
    check_the_picture(report, tmp_path / "demo")


def check_the_picture(report: raykv.SystemDemoReport, out: Path) -> None:
    """Every process logged its decisions next to the history, and the page drawn from them is one
    self-contained HTML file with a lane per replica of every group that ever ran."""
    from raykv.viz import build

    assert "RAYKV_LOG" not in os.environ and "RAYKV_LOG_FILE" not in os.environ, "the driver's env restored"
    assert report.viz_html == str(out / "viz.html") and report.decision_log == str(out / "decisions.log")
    assert report.viz_note is None and f"Picture of the run: {report.viz_html}" in report.format()
    log = Path(report.decision_log).read_text()
    timeline = build([("decisions", log.splitlines())])
    lanes: dict[str, list[str]] = {}
    for lane in timeline.lanes:
        lanes.setdefault(lane["group"], []).append(lane["name"])
    # the controller and groups 1, 2 and 3, three replicas each at least (replacements are new peers)
    assert len(lanes) == 4 and all(len(names) >= 3 for names in lanes.values()), lanes
    assert timeline.leaders and timeline.msgs, "elections and messages were logged"
    html = Path(report.viz_html).read_text()
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert "src=\"http" not in html and "href=\"http" not in html, "no CDN: the page stands alone"
    assert all(name in html for names in lanes.values() for name in names)
