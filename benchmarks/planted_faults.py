"""Do the suites catch the bugs they exist for? Plant each broken rule, run the tests meant to catch
it N times, and print a table: fault x test -> caught in k of N runs (and by which check).

    python benchmarks/planted_faults.py [--runs N] [--groups G,...] [--only FAULT,...]
                                        [--tests NAME,...] [--json FILE]

Each row is one ``pytest`` process over its group's tests with ``--count=N`` and ``--plant=FAULT``
(every peer the harnesses start or restart carries the fault; see :mod:`raykv.testing.faults`). The row
``none`` runs the same tests on the correct code: there every run must pass. A run counts as caught
when the test fails (in its body or at teardown); the check that caught it is read from the failure
message (a ledger check such as ``leader completeness``, or the test's own assertion).

Groups (the reference tests whose scenarios exercise the rule):

- core faults (``commit_old_term``, ``vote_without_log_check``, ``forget_vote``,
  ``apply_past_commit``): Rejoin3B, Backup3B, Persist1-3 3C, Figure8 3C, Figure8Unreliable 3C;
- KV service faults (``kv_no_dedup``, ``kv_local_read``): Unreliable4A, OnePartition4A,
  ManyPartitionsManyClients4A, PersistPartitionUnreliable4A;
- shard controller faults (``ctrl_not_minimal``, ``ctrl_unbalanced``, ``ctrl_nondeterministic``): the
  three controller tests, Basic, MinimalAgain, Multi;
- sharded KV faults (``skv_*``): JoinLeave5B, Concurrent1 5B, Unreliable2 5B, Challenge1Delete,
  Challenge2Unaffected, Challenge2Partial.

``--groups core,kv,ctrl,shardkv`` picks groups (default all), ``--only`` rows by fault name (``none``
included), ``--tests`` the columns by name (``join_leave_5b,...``; to keep a measurement short).

This is a measurement, not a CI test (about 30 minutes with N=3 for the core and KV groups on the
2-core machine; run it under ``/work/bin/heavy``). ``tests/test_planted_faults.py`` is its short,
deterministic form.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CORE_TESTS = [
    "tests/test_raft_3b.py::test_rejoin_3b",
    "tests/test_raft_3b.py::test_backup_3b",
    "tests/test_raft_3c.py::test_persist1_3c",
    "tests/test_raft_3c.py::test_persist2_3c",
    "tests/test_raft_3c.py::test_persist3_3c",
    "tests/test_raft_3c.py::test_figure8_3c",
    "tests/test_raft_3c.py::test_figure8_unreliable_3c",
]
KV_TESTS = [
    "tests/test_kvraft_4a.py::test_unreliable_4a",
    "tests/test_kvraft_4a.py::test_one_partition_4a",
    "tests/test_kvraft_4a.py::test_many_partitions_many_clients_4a",
    "tests/test_kvraft_4a.py::test_persist_partition_unreliable_4a",
]
CTRL_TESTS = [
    "tests/test_shardctrler_5a.py::test_basic",
    "tests/test_shardctrler_5a.py::test_minimal_again",
    "tests/test_shardctrler_5a.py::test_multi",
]
SHARDKV_TESTS = [
    "tests/test_shardkv_5.py::test_join_leave_5b",
    "tests/test_shardkv_5.py::test_concurrent1_5b",
    "tests/test_shardkv_5.py::test_unreliable2_5b",
    "tests/test_shardkv_5.py::test_challenge1_delete",
    "tests/test_shardkv_5.py::test_challenge2_unaffected",
    "tests/test_shardkv_5.py::test_challenge2_partial",
]
#: group -> (its tests, its rows: "none" is the correct code)
GROUPS: dict[str, tuple[list[str], list[str]]] = {
    "core": (CORE_TESTS, ["none", "commit_old_term", "vote_without_log_check", "forget_vote",
                          "apply_past_commit"]),
    "kv": (KV_TESTS, ["none", "kv_no_dedup", "kv_local_read"]),
    "ctrl": (CTRL_TESTS, ["none", "ctrl_not_minimal", "ctrl_unbalanced", "ctrl_nondeterministic"]),
    "shardkv": (SHARDKV_TESTS, ["none", "skv_serve_arriving", "skv_serve_leaving", "skv_wait_all",
                                "skv_no_dedup_move", "skv_no_gc", "skv_keep_deleted"]),
}
#: row -> the tests it runs ("none": the correct code, once per group)
ROWS: list[tuple[str, list[str]]] = [(fault, tests) for tests, faults in GROUPS.values() for fault in faults]

_LEDGER = re.compile(r"the ledger saw a violation: \[\s*[\d.]+s\] ([a-z -]+):")  # the check's name


def caught_by(message: str) -> str:
    """A short name for the check behind a failure message."""
    m = _LEDGER.search(message)
    if m:
        return m.group(1).strip()
    for needle, name in [
        ("handlers raised", "a peer raised"),
        ("failed to reach agreement", "no agreement"),
        ("not linearizable", "linearizability"),
        ("did not complete within", "operation timed out"),
        ("persisted state is too big", "storage not reclaimed"),
        ("non-minimal transfer", "not minimal"),
        ("changed from", "not minimal"),
        ("shards moved,", "not minimal"),
        ("unbalanced", "unbalanced"),
        ("Get(", "wrong value read"),
        ("get wrong value", "wrong value read"),
        ("duplicate element", "duplicate append"),
        ("missing element", "lost append"),
        ("in minority completed", "minority completed"),
        ("committed but no majority", "committed without majority"),
        ("took longer than", "time limit"),
        ("Timeout", "timeout"),
    ]:
        if needle in message:
            return name
    first = message.strip().splitlines()[0] if message.strip() else "?"
    return first[:60]


def short_test(nodeid: str) -> str:
    return nodeid.split("::")[-1].removeprefix("test_")


def run_row(fault: str, tests: list[str], runs: int) -> tuple[dict[str, list[str | None]], float]:
    """Run ``tests`` ``runs`` times with ``fault`` planted. Returns test -> [None (passed) or the
    check that caught it, per run] and the wall time."""
    env = dict(os.environ)
    env.pop("RAYKV_PLANT", None)
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", *tests, f"--count={runs}", "-q", "-p", "no:cacheprovider",
               f"--junitxml={xml}", "-o", "junit_family=xunit1"]
        if fault != "none":
            cmd.append(f"--plant={fault}")
        t = time.monotonic()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        took = time.monotonic() - t
        if not xml.exists():
            raise SystemExit(f"pytest wrote no report for {fault}:\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-3000:]}")
        # One entry per run ("test_x[2-3]"); a teardown error comes as a second <testcase> of the
        # same name. All failure texts of a run are read together (a ledger violation reported at
        # teardown names the check even when the test body failed first).
        texts: dict[str, list[str]] = {}
        for case in ET.parse(xml).getroot().iter("testcase"):
            bad = texts.setdefault(case.get("name", ""), [])
            bad += [(el.get("message") or "") + "\n" + (el.text or "")
                    for el in case if el.tag in ("failure", "error")]
        per_run = {name: caught_by("\n".join(bad)) if bad else None for name, bad in texts.items()}
        outcomes: dict[str, list[str | None]] = {short_test(t): [] for t in tests}
        for name, verdict in per_run.items():
            key = re.sub(r"\[.*\]$", "", name).removeprefix("test_")
            if key in outcomes:
                outcomes[key].append(verdict)
    return outcomes, took


def table(results: list[tuple[str, dict[str, list[str | None]], float]], runs: int) -> str:
    lines = []
    groups: list[list[str]] = []
    for _, outcomes, _ in results:
        cols = list(outcomes)
        if cols not in groups:
            groups.append(cols)
    for cols in groups:
        lines.append("| fault | " + " | ".join(cols) + " | time |")
        lines.append("|---" * (len(cols) + 2) + "|")
        for fault, outcomes, took in results:
            if list(outcomes) != cols:
                continue
            cells = []
            for col in cols:
                got = outcomes[col]
                bad = [v for v in got if v is not None]
                if fault == "none":
                    cell = f"{len(bad)} failed of {len(got)}"
                    if bad:
                        cell += f" ({', '.join(sorted(set(bad)))})"
                else:
                    cell = f"{len(bad)}/{len(got)}"
                    if bad:
                        kinds = Counter(bad)
                        cell += " (" + ", ".join(f"{k}" + (f" ×{n}" if n > 1 else "")
                                                 for k, n in kinds.most_common()) + ")"
                cells.append(cell)
            lines.append(f"| {fault} | " + " | ".join(cells) + f" | {took / 60:.1f} min |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="runs of each test per row (default 3)")
    ap.add_argument("--groups", default="", help=f"comma-separated groups (default: all; known: "
                                                  f"{','.join(GROUPS)})")
    ap.add_argument("--only", default="", help="comma-separated rows to run (default: all; 'none' "
                                                "runs the correct code)")
    ap.add_argument("--tests", default="", help="comma-separated test names to keep as columns "
                                                 "(default: all of each group's)")
    ap.add_argument("--json", type=Path, help="also write the raw outcomes here")
    args = ap.parse_args(argv)

    def names(text: str) -> set[str]:
        return {f.strip() for f in text.split(",") if f.strip()}

    only, groups, keep = names(args.only), names(args.groups), names(args.tests)
    known = {f for f, _ in ROWS}
    if only - known:
        ap.error(f"unknown row(s) {sorted(only - known)}; known: {sorted(known)}")
    if groups - GROUPS.keys():
        ap.error(f"unknown group(s) {sorted(groups - GROUPS.keys())}; known: {sorted(GROUPS)}")
    all_tests = {short_test(t) for tests, _ in GROUPS.values() for t in tests}
    if keep - all_tests:
        ap.error(f"unknown test(s) {sorted(keep - all_tests)}; known: {sorted(all_tests)}")
    results = []
    for group, (group_tests, faults) in GROUPS.items():
        if groups and group not in groups:
            continue
        tests = [t for t in group_tests if not keep or short_test(t) in keep]
        for fault in faults:
            if (only and fault not in only) or not tests:
                continue
            outcomes, took = run_row(fault, tests, args.runs)
            results.append((fault, outcomes, took))
            print(f"{fault:24s} {took / 60:5.1f} min  " + "  ".join(
                f"{t}={sum(v is not None for v in vs)}/{len(vs)}" for t, vs in outcomes.items()),
                flush=True)
    print()
    print(table(results, args.runs))
    if args.json:
        args.json.write_text(json.dumps([{"fault": f, "took_s": round(t, 1), "outcomes": o}
                                         for f, o, t in results], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
