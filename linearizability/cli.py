"""Command line: ``python -m linearizability check --format jepsen|kv FILE...``.

:func:`main` takes the arguments after the program name and returns the exit status, so other
commands (``raykv check``) can call it: ``main(["check", "--format", "kv", "log.txt"])``; the
leading ``check`` may be left out.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from .budget import parse_size
from .checker import CheckResult, PartitionResult, check
from .models import KVModel, Model, RegisterModel
from .parsers import FORMATS, HistoryFormatError, parse_file
from .report import write_html
from .search import Verdict

__all__ = ["EXIT_NOT_LINEARIZABLE", "EXIT_OK", "EXIT_UNKNOWN", "build_parser", "explain", "main"]

EXIT_OK = 0
EXIT_NOT_LINEARIZABLE = 1
EXIT_UNKNOWN = 2

MODELS: dict[str, type[Model]] = {"jepsen": RegisterModel, "kv": KVModel}

DESCRIPTION = """\
Check whether recorded histories of concurrent operations are linearizable.

Prints one line per file: 'FILE: linearizable|not linearizable|unknown (N.NNs)'.
On stderr, for each key (partition) that is not linearizable or unknown, a line
'FILE: key K ...' says which operation could not be linearized, after how many, in
which state, or which budget ran out.  A file that cannot be read or parsed gets no
verdict line; a message on stderr says which line is wrong and what was expected there.

The check stops at the first key found not linearizable (the keys are checked in
turns, smallest first), unless --all-partitions is given.
"""

EPILOG = """\
formats:
  jepsen  Jepsen logs of a single register (read, write, cas), one event per line:
            INFO  jepsen.util - 3  :invoke  :cas  [4 0]
            INFO  jepsen.util - 3  :ok      :cas  [4 0]
          ':fail :cas' is a refused cas, ':fail :read :timed-out' a read of unknown
          value, ':info' an outcome unknown until the end.  Other lines are ignored.
  kv      key-value logs (get, put, append on strings), one Clojure map per line:
            {:process 0, :type :invoke, :f :append, :key "4", :value "x 0 1 y"}
            {:process 0, :type :ok, :f :append, :key "4", :value "x 0 1 y"}
          Checked per key (keys are independent) unless --whole is given.
  A call with no return by the end of the file has an unknown outcome.

exit status:
  0  every file is linearizable
  1  some file is not linearizable (and none is unknown or unreadable)
  2  some file is unknown (--timeout or --memory-limit ran out) or could not be read
     or parsed

examples:
  python -m linearizability check --format kv --timeout 10 --html reports/ c10-bad.txt
  python -m linearizability check --format kv --all-partitions --timeout 5 \
      --memory-limit 1G c10-bad.txt        # every failing key, 5 s and 1 GB each
"""


def build_parser(prog: str = "python -m linearizability") -> argparse.ArgumentParser:
    """The argument parser of the ``check`` command."""
    parser = argparse.ArgumentParser(
        prog=f"{prog} check",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--format", required=True, choices=sorted(FORMATS), help="the file format (see below)"
    )
    parser.add_argument(
        "--whole",
        action="store_true",
        help="check kv files as one unpartitioned history (slower; same answer)",
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="give up on a file after this many seconds and answer 'unknown' (default: no limit)",
    )
    parser.add_argument(
        "--memory-limit",
        type=_size,
        default=None,
        metavar="SIZE",
        help="answer 'unknown' rather than let the check grow the process by more than SIZE, "
        "e.g. 800M or 2G (default: half of this machine's memory, at most 3/4 of what is free)",
    )
    parser.add_argument(
        "--all-partitions",
        action="store_true",
        help="check every key to the end, each under its own --timeout and --memory-limit, "
        "instead of stopping at the first key that is not linearizable",
    )
    parser.add_argument(
        "--html",
        type=Path,
        default=None,
        metavar="DIR",
        help="write an HTML report to DIR/FILENAME.html for every file that is not linearizable (or unknown)",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="history files to check")
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds; got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds; got {text!r}")
    return value


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _where(part: PartitionResult) -> str:
    return "the history" if part.key is None else f"key {part.key!r}"


def explain(result: CheckResult) -> list[str]:
    """Lines that say why a result is not LINEARIZABLE: for each partition that is not
    linearizable, the operation where every attempt failed, how far the search got and the
    model state there; for each unknown partition, the budget that ran out; and how many
    partitions were left unchecked once the verdict was known."""
    model = result.model
    lines = []
    for part in result.partitions:
        if part.verdict is Verdict.NOT_LINEARIZABLE:
            line = f"{_where(part)} is not linearizable"
            if part.failed is not None:
                op = part.operations[part.failed]
                ret = "never" if op.unknown or op.ret is None else f"{op.ret:g}"
                line += (
                    f": {model.describe_operation(op.input, op.output)} by client {op.client} "
                    f"(called at {op.call:g}, returned {ret}) could not be linearized after "
                    f"{len(part.order)} of its {len(part.operations)} operations; state there: "
                    f"{model.describe_state(part.state)}"
                )
                why = model.explain_failure(part.operations, part.failed)
                if why:
                    line += f"; {why}"
            lines.append(line)
        elif part.verdict is Verdict.UNKNOWN and not part.skipped:
            lines.append(
                f"{_where(part)} is unknown: {part.reason or 'no verdict'} "
                f"(after {part.explored:,} configurations, {part.elapsed:.2f}s)"
            )
    skipped = result.skipped
    if skipped:
        lines.append(
            f"stopped at the first key found not linearizable; {len(skipped)} other "
            f"key{'s' if len(skipped) > 1 else ''} not checked to the end (--all-partitions checks all)"
        )
    return lines


def _report_path(directory: Path, file: str, used: set[Path]) -> Path:
    base = Path(file).name or "history"
    path = directory / f"{base}.html"
    n = 2
    while path in used:
        path = directory / f"{base}.{n}.html"
        n += 1
    used.add(path)
    return path


def main(
    argv: Sequence[str] | None = None,
    prog: str = "python -m linearizability",
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run the command line on ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "check":
        args_list = args_list[1:]
    elif not args_list:
        print(
            f"usage: {prog} check --format jepsen|kv [--whole] [--timeout SECONDS] "
            f"[--memory-limit SIZE] [--all-partitions] [--html DIR] FILE...\n"
            f"(try '{prog} check --help')",
            file=err,
        )
        return EXIT_UNKNOWN
    parser = build_parser(prog)
    try:
        args = parser.parse_args(args_list)
    except SystemExit as e:  # argparse exits 0 for --help and 2 for usage errors
        return int(e.code or 0)

    status = EXIT_OK
    used: set[Path] = set()
    for file in args.files:
        start = time.monotonic()
        try:
            history = parse_file(file, args.format)
        except HistoryFormatError as e:
            print(f"error: {e}", file=err)
            status = EXIT_UNKNOWN
            continue
        model = MODELS[args.format]()
        if args.timeout is None or args.all_partitions:
            budget = args.timeout
        else:
            budget = max(args.timeout - (time.monotonic() - start), 0.0)
        result = check(
            history,
            model,
            partitioned=not args.whole,
            timeout=budget,
            memory_limit=args.memory_limit,
            all_partitions=args.all_partitions,
        )
        elapsed = time.monotonic() - start
        print(f"{file}: {result.verdict} ({elapsed:.2f}s)", file=out, flush=True)
        for line in explain(result):
            print(f"{file}: {line}", file=err, flush=True)
        if result.verdict is Verdict.NOT_LINEARIZABLE:
            status = max(status, EXIT_NOT_LINEARIZABLE)
        elif result.verdict is Verdict.UNKNOWN:
            status = EXIT_UNKNOWN
        if args.html is not None and result.verdict is not Verdict.LINEARIZABLE:
            try:
                path = write_html(result, _report_path(args.html, file, used), title=file)
            except OSError as e:
                print(f"error: cannot write the report for {file} into {args.html}: {e.strerror}", file=err)
                status = EXIT_UNKNOWN
            else:
                print(f"{file}: report written to {path}", file=err)
    return status
