"""``raykv test-repeat``: run one test many times in parallel, keep the logs of the failures only,
print a summary (the course's ``dstest``). Registered in :data:`raykv.cli.COMMANDS` through
:func:`commands`.

Each run is ``python -m pytest TARGET [-k EXPR] -q -p no:cacheprovider [PYTEST_ARGS]`` in a process
group of its own, with ``RAYKV_LOG`` (the topics) and ``RAYKV_LOG_FILE`` (its own file: every
process of the run, Ray workers included, appends its decision lines there) and ``RAYKV_REPEAT_RUN``
(the run's number, 1-based, for a test that wants to seed from it). Its output goes to a second file.
Invariants: a run's two files are deleted when it passes and moved to the output directory when it
fails (exit status 1), times out or errors (any other status but 0); the output directory holds
nothing else, and is removed when nothing was kept. pytest's status 4 (usage error) or 5 (no test
collected) stops the repetition at once: the command line is wrong, and every run would say so.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raykv.cli_args import int_at_least

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
PYTEST_USAGE, PYTEST_NO_TESTS = 4, 5
RUN_ENV = "RAYKV_REPEAT_RUN"

DESCRIPTION = """\
Run one test many times, in parallel, and keep the logs of the failing runs only.

TARGET is what pytest takes: a node id (tests/test_raft_3a.py::test_initial_election_3a), a file,
or a directory; -k EXPR selects tests by name within it (as pytest -k). Each run is a separate
'python -m pytest' with the Raft decision log switched on (RAYKV_LOG=TOPICS) and written to a file
of its own (RAYKV_LOG_FILE; every process of the run appends to it, Ray workers included), and
pytest's output to another; RAYKV_REPEAT_RUN holds the run's number (1..N). When a run passes its
files are deleted; when it fails, times out or errors they are kept in the output directory as
run-NNNN.log (read it with 'raykv logs') and run-NNNN.out. A progress bar counts runs and failures
(on a terminal); then a summary: passed and failed counts, run durations (min, median, max), the
wall time, and each kept run with the line that says why it failed.

Parallel runs compete for the CPU: a Ray test whose timing bounds hold alone can fail when several
run at once (each run starts its own Ray runtime). The default is one worker per two cores; confirm a
failure seen with --workers > 1 by repeating it with --workers 1.

Exit status: 0 when every run passed, 1 when one failed, 2 for usage errors (including a TARGET or
-k that selects no test).
"""

EPILOG = """\
examples:
  raykv test-repeat tests/test_raft_3a.py::test_initial_election_3a --runs 20
  raykv test-repeat tests/test_raft_3c.py -k figure8 --runs 50 --workers 2 --log elect,commit
  raykv test-repeat tests/test_raft_core.py --runs 100 --workers 4 --out /tmp/repeats
  raykv test-repeat tests/test_kvraft_4a.py -k speed --runs 5 -- -x --timeout 120
  raykv logs test-repeat-runs/20261203-141500/run-0007.log --topics elect,term
"""


def _default_workers() -> int:
    return max(1, (os.cpu_count() or 2) // 2)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds (a number); got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds; got {text}")
    return value


def configure(p: argparse.ArgumentParser) -> None:
    p.epilog = EPILOG
    p.add_argument("target", metavar="TARGET", nargs="?", default=None,
                   help="pytest node id, file or directory (default: the tests pytest finds itself; "
                        "then give -k)")
    p.add_argument("-k", dest="expr", default=None, metavar="EXPR",
                   help="pytest -k expression selecting the test(s) to repeat")
    p.add_argument("--runs", type=int_at_least(1), default=10, metavar="N",
                   help="how many runs (default: 10)")
    p.add_argument("--workers", type=int_at_least(1), default=None, metavar="W",
                   help=f"runs at once (default: one per two cores, here {_default_workers()})")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="where failing runs' logs are kept (default: test-repeat-runs/DATE-TIME)")
    p.add_argument("--log", default="all", metavar="TOPICS",
                   help="RAYKV_LOG topics for each run, e.g. elect,commit (default: all)")
    p.add_argument("--timeout", type=_seconds, default=600.0, metavar="S",
                   help="a run still going after S seconds is killed and counted as failed "
                        "(default: 600)")


@dataclass(frozen=True)
class RunResult:
    """One run: its number, pytest's exit status (None when killed at the timeout), how long it took,
    the line that says why it failed (empty when it passed) and the files kept (none when it passed)."""

    number: int
    status: int | None
    seconds: float
    reason: str
    kept: tuple[Path, ...]

    @property
    def passed(self) -> bool:
        return self.status == 0


def pytest_command(target: str | None, expr: str | None, extra: list[str]) -> list[str]:
    """The command line of one run."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    if target:
        cmd.append(target)
    if expr:
        cmd += ["-k", expr]
    return cmd + extra


def _why(out_path: Path, status: int | None, timeout: float) -> str:
    """The line of pytest's output that says why the run failed (its FAILED/ERROR line, else its last
    non-blank line)."""
    if status is None:
        return f"timed out after {timeout:g} s (killed)"
    try:
        lines = out_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return f"pytest exit status {status}"
    found = [line for line in lines if line.startswith(("FAILED ", "ERROR "))]
    if not found:
        found = [line.strip() for line in lines if line.strip()][-1:] or [f"pytest exit status {status}"]
    return found[0] if len(found[0]) <= 200 else found[0][:197] + "..."


class Repeater:
    """Runs the repetition; :meth:`run_one` is called from worker threads."""

    def __init__(self, cmd: list[str], runs: int, out_dir: Path, topics: str, timeout: float) -> None:
        self.cmd, self.runs, self.out_dir, self.topics, self.timeout = cmd, runs, out_dir, topics, timeout
        self.work = out_dir / ".running"
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()
        self.stopping = False
        #: wall time of the whole repetition (set by :func:`_drive`)
        self.wall = 0.0

    def run_one(self, number: int) -> RunResult:
        name = f"run-{number:04d}"
        log_path, out_path = self.work / f"{name}.log", self.work / f"{name}.out"
        env = dict(os.environ, RAYKV_LOG=self.topics, RAYKV_LOG_FILE=str(log_path.resolve()),
                   **{RUN_ENV: str(number)})
        env.setdefault("RAY_DEDUP_LOGS", "0")  # Ray would fold similar lines of several workers into one
        env.setdefault("COLUMNS", "240")  # pytest cuts its summary lines (the failure's reason) to the width
        log_path.touch()
        started = time.monotonic()
        with out_path.open("wb") as out:
            proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
            with self._lock:
                self._procs[number] = proc
            try:
                status: int | None = proc.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                self._kill(proc)
                status = None
            finally:
                with self._lock:
                    self._procs.pop(number, None)
        seconds = time.monotonic() - started
        if status == 0 or self.stopping:  # passed, or killed by Ctrl-C: nothing to keep
            log_path.unlink(missing_ok=True)
            out_path.unlink(missing_ok=True)
            return RunResult(number, status, seconds, "" if status == 0 else "interrupted", ())
        reason = _why(out_path, status, self.timeout)
        kept = []
        for path in (log_path, out_path):
            dest = self.out_dir / path.name
            shutil.move(str(path), dest)
            kept.append(dest)
        return RunResult(number, status, seconds, reason, tuple(kept))

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        """End the run's process group (pytest and whatever it started: a Ray runtime)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def kill_all(self) -> None:
        self.stopping = True
        with self._lock:
            procs = list(self._procs.values())
        for proc in procs:
            self._kill(proc)


def summarize(results: list[RunResult], wall: float, out_dir: Path, describe: str) -> list[str]:
    """The summary lines printed at the end."""
    passed = sum(r.passed for r in results)
    failed = len(results) - passed
    lines = [f"{describe}: {len(results)} runs, {passed} passed, {failed} failed"
             + (f" ({100 * failed / len(results):.0f}%)" if results else "") + f", in {wall:.1f} s"]
    if results:
        secs = [r.seconds for r in results]
        lines.append(f"run time: min {min(secs):.1f} s, median {statistics.median(secs):.1f} s, "
                     f"max {max(secs):.1f} s")
    failures = sorted((r for r in results if not r.passed), key=lambda r: r.number)
    if failures:
        lines.append(f"kept the logs of the {failed} failing run(s) in {out_dir}:")
        for r in failures:
            lines.append(f"  run {r.number} ({r.seconds:.1f} s): {r.reason}")
            lines.extend(f"    {p}" for p in r.kept)
        lines.append(f"read one with: raykv logs {failures[0].kept[0]}")
    else:
        lines.append("no failures: no logs kept")
    return lines


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="raykv test-repeat", description=DESCRIPTION,
                                usage="raykv test-repeat [TARGET] [-k EXPR] [options] [-- PYTEST_ARGS]",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    configure(p)
    return p


def main(argv: list[str]) -> int:
    """``raykv test-repeat ARGS``: everything after the first ``--`` goes to each pytest run (which is
    why this command parses its own arguments: argparse would take them as its own)."""
    argv = list(argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help exits 0, a usage error 2
        return int(e.code or 0) if not isinstance(e.code, str) else EXIT_USAGE
    args.pytest_args = extra
    return run(args)


def run(args: argparse.Namespace) -> int:
    extra = list(getattr(args, "pytest_args", []))
    if args.target is None and args.expr is None:
        print("raykv test-repeat: give the test to repeat: a pytest node id "
              "(tests/test_x.py::test_y) or -k EXPR (see --help)", file=sys.stderr)
        return EXIT_USAGE
    workers = args.workers or _default_workers()
    workers = min(workers, args.runs)
    out_dir: Path = args.out or Path("test-repeat-runs") / time.strftime("%Y%m%d-%H%M%S")
    try:
        if args.log.strip().lower() not in {"all", "1", "*"}:
            from raykv.logview import parse_topics

            if not parse_topics(args.log):
                raise ValueError("no topic given; give 'all' or topics such as elect,commit")
        if out_dir.exists() and any(out_dir.iterdir()):
            print(f"raykv test-repeat: {out_dir} is not empty: give a new --out (kept logs are never "
                  "overwritten)", file=sys.stderr)
            return EXIT_USAGE
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / ".running").mkdir(exist_ok=True)
    except ValueError as e:
        print(f"raykv test-repeat: --log: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:
        print(f"raykv test-repeat: cannot create the output directory {out_dir}: {e}", file=sys.stderr)
        return EXIT_USAGE
    cmd = pytest_command(args.target, args.expr, extra)
    describe = " ".join(x for x in (args.target, f"-k {args.expr!r}" if args.expr else None) if x)
    if workers > 1:
        print(f"raykv test-repeat: {workers} runs at once on {os.cpu_count()} cores; a Ray test can "
              "fail on timing when runs compete for the CPU: confirm failures with --workers 1",
              file=sys.stderr)
    rep = Repeater(cmd, args.runs, out_dir, args.log, args.timeout)
    results, usage_error = _drive(rep, args.runs, workers)
    shutil.rmtree(rep.work, ignore_errors=True)
    if usage_error is not None:
        print(f"raykv test-repeat: pytest stopped with status {usage_error.status} "
              f"({'no test collected' if usage_error.status == PYTEST_NO_TESTS else 'usage error'}) "
              f"for: {' '.join(cmd[1:])}\n  {usage_error.reason}\n  check TARGET and -k; its output "
              f"is in {usage_error.kept[-1]}", file=sys.stderr)
        return EXIT_USAGE
    if not any(out_dir.iterdir()):
        out_dir.rmdir()
    for line in summarize(results, rep.wall, out_dir, describe):
        print(line)
    return EXIT_OK if all(r.passed for r in results) and len(results) == args.runs else EXIT_FAILED


def _drive(rep: Repeater, runs: int, workers: int) -> tuple[list[RunResult], RunResult | None]:
    """Run the repetition with a progress bar; stop early on a pytest usage error or Ctrl-C."""
    from tqdm import tqdm

    results: list[RunResult] = []
    usage_error: RunResult | None = None
    started = time.monotonic()
    bar = tqdm(total=runs, unit="run", disable=None, file=sys.stderr, dynamic_ncols=True)
    pool = ThreadPoolExecutor(max_workers=workers)
    pending: set[Future[RunResult]] = set()
    next_run = 1
    try:
        while next_run <= runs or pending:
            while next_run <= runs and len(pending) < workers and usage_error is None:
                pending.add(pool.submit(rep.run_one, next_run))
                next_run += 1
            if not pending:
                break
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                res = fut.result()
                if res.status in (PYTEST_USAGE, PYTEST_NO_TESTS):
                    usage_error = usage_error or res
                    continue
                results.append(res)
                bar.update(1)
                bar.set_postfix(failed=sum(not r.passed for r in results))
            if usage_error is not None:
                next_run = runs + 1
    except KeyboardInterrupt:
        rep.kill_all()
        print("raykv test-repeat: interrupted; the summary covers the finished runs", file=sys.stderr)
    finally:
        pool.shutdown(wait=True)
        bar.close()
        rep.wall = time.monotonic() - started
    return results, usage_error


def commands(command_cls: Any) -> tuple[Any, ...]:
    """The ``test-repeat`` entry of :data:`raykv.cli.COMMANDS`."""
    return (command_cls("test-repeat", "run one test many times in parallel, keep the failures' logs",
                        main, passthrough=True, description=DESCRIPTION),)
