"""``raykv logs``: the Raft decision log laid out in one column per peer, coloured by topic (the
course's ``dslogs``). Registered in :data:`raykv.cli.COMMANDS` through :func:`commands`; the parsing,
filtering and layout are :mod:`raykv.logview` (pure)."""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
from typing import Any, TextIO

from raft.trace import TOPICS
from raykv.cli_args import int_at_least
from raykv.logview import filter_events, header, layout, parse, parse_topics, plain, plan

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

DESCRIPTION = f"""\
Lay out a Raft decision log (RAYKV_LOG) in one column per peer, coloured by topic.

Each decision goes in its peer's column, on its own row, under the time it was logged (seconds since
the first line of the file), as 'T<term> <role> <topic>: <text>' (roles: L leader, C candidate,
P pre-candidate, F follower), so a reader follows one peer down its column and sees what the others
did in between. Lines that are not decisions (a test's output, a traceback, a line cut short) are
shown as they are, across the full width; a malformed line never stops the reading. Lines are sorted
by time (stably; --no-sort keeps the file's order): several processes append to one file.

Where logs come from: RAYKV_LOG=all (or a list of topics) switches the log on in every process, Ray
workers included; RAYKV_LOG_FILE=PATH appends every process's lines to PATH instead of stderr
(raykv test-repeat does this for each run). A log read off stderr works too, Ray's '(Actor pid=N)'
prefixes included.

Topics: {", ".join(sorted(TOPICS))}.
Colours on a terminal (rich); plain text when the output is not a terminal (--color to force).
"""

EPILOG = """\
examples:
  RAYKV_LOG=all RAYKV_LOG_FILE=raft.log pytest tests/test_raft_3a.py -k initial_election
  raykv logs raft.log                               every peer, every topic
  raykv logs raft.log --topics elect,term           only elections and term changes
  raykv logs raft.log --ignore append --from 2 --to 3.5
  raykv logs raft.log --peers 0,2 --width 50        two peers, wide columns
  raykv logs raft.log --columns 1                   one column, each cell names its peer
  raykv logs - < raft.log | less -R                 from stdin
  raykv logs raft.log --color always | less -R      keep the colours through a pager
"""


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds (a number); got {text!r}") from None


def _topics(text: str) -> frozenset[str]:
    try:
        return parse_topics(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _peers(text: str) -> frozenset[int]:
    try:
        return frozenset(int(p.strip().lstrip("Pp")) for p in text.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected peer numbers separated by commas, e.g. 0,2 or P0,P2; got {text!r}") from None


def configure(p: argparse.ArgumentParser) -> None:
    p.epilog = EPILOG
    p.add_argument("file", metavar="FILE", help="the log to read, or '-' for standard input")
    p.add_argument("--topics", type=_topics, default=None, metavar="T,T",
                   help="show only these topics (default: all)")
    p.add_argument("--ignore", type=_topics, default=frozenset(), metavar="T,T",
                   help="hide these topics")
    p.add_argument("--from", dest="start", type=_float, default=None, metavar="S",
                   help="show nothing before S seconds (since the first line of the file)")
    p.add_argument("--to", dest="end", type=_float, default=None, metavar="S",
                   help="show nothing after S seconds")
    p.add_argument("--peers", type=_peers, default=None, metavar="N,N",
                   help="show only these peers' columns (default: every peer in the file)")
    p.add_argument("--width", type=int_at_least(12), default=None, metavar="W",
                   help="width of each column (default: the terminal's width shared out)")
    p.add_argument("--columns", type=int_at_least(1), default=None, metavar="N",
                   help="at most N columns; with fewer columns than peers, peers share columns "
                        "and each cell starts with its peer (default: one per peer)")
    p.add_argument("--trace-only", action="store_true",
                   help="hide the lines that are not decisions")
    p.add_argument("--no-sort", action="store_true", help="keep the file's order instead of time order")
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                   help="colour by topic: on a terminal (auto, the default), always or never")


def _read(path: str) -> list[str]:
    if path == "-":
        stream: TextIO = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace") \
            if hasattr(sys.stdin, "buffer") else sys.stdin
        return stream.read().splitlines()
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read().splitlines()


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out if out is not None else sys.stdout
    if args.start is not None and args.end is not None and args.start > args.end:
        print(f"raykv logs: --from {args.start} is after --to {args.end}: nothing would be shown",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        lines = _read(args.file)
    except OSError as e:
        print(f"raykv logs: cannot read {args.file}: {e.strerror or e}; give a log file written with "
              "RAYKV_LOG (and RAYKV_LOG_FILE), or '-' for standard input", file=sys.stderr)
        return EXIT_USAGE
    events = parse(lines)
    shown = filter_events(events, topics=args.topics, ignore=args.ignore, peers=args.peers,
                          start=args.start, end=args.end, other=not args.trace_only,
                          sort=not args.no_sort)
    colour = args.color == "always" or (args.color == "auto" and out.isatty()
                                        and not os.environ.get("NO_COLOR"))
    total = shutil.get_terminal_size(fallback=(160, 24)).columns
    columns_from = [e for e in events if e.peer is not None
                    and (args.peers is None or e.peer in args.peers)]
    lay = plan(columns_from, width=args.width, ncols=args.columns, total_width=total)
    rows = [header(lay), *layout(shown, lay)]
    try:
        if colour:
            _print_rich(rows, out)
        else:
            for line in plain(rows):
                out.write(line + "\n")
            out.flush()
    except BrokenPipeError:  # `raykv logs x | head`: the reader has gone, which is fine
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return EXIT_OK


def _print_rich(rows: list[list[tuple[str, str]]], out: TextIO) -> None:
    """Write the rows with each segment in its style: rich turns each style into its terminal codes
    once, and the lines are written directly (a rich Console per line took minutes on a long log)."""
    from rich.color import ColorSystem
    from rich.style import Style

    codes: dict[str, Style] = {}
    write = out.write
    for segs in rows:
        parts = []
        for piece, style in segs:
            if style and piece.strip():
                if style not in codes:
                    codes[style] = Style.parse(style)
                piece = codes[style].render(piece, color_system=ColorSystem.STANDARD)
            parts.append(piece)
        write("".join(parts).rstrip() + "\n")
    out.flush()


def commands(command_cls: Any) -> tuple[Any, ...]:
    """The ``logs`` entry of :data:`raykv.cli.COMMANDS`."""
    return (command_cls("logs", "lay out a Raft decision log (RAYKV_LOG) in one column per peer",
                        run, configure=configure, description=DESCRIPTION),)
