"""``raykv viz``: the command line of :mod:`raykv.viz`. Registered in :data:`raykv.cli.COMMANDS` through
:func:`commands`; :func:`run` takes the parsed arguments and returns the exit status."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

DESCRIPTION = """\
A picture of a real run: one self-contained HTML page from Raft decision logs.

Reads the decision log a run wrote with RAYKV_LOG=all (every process's lines in one file with
RAYKV_LOG_FILE=PATH; Ray worker logs and a driver's output with Ray's '(Actor pid=N)' prefixes work
too; a directory stands for its *.log files) and writes one HTML page that needs nothing else (its
script, style and data are inline; open it offline in any browser):
  - a lane per peer (per group and peer when the log holds several Raft groups), coloured by role
    over time (follower, pre-candidate, candidate, leader, crashed), the term written at each change;
  - each peer's log in its lane: last index, commit index and snapshot (compaction) index;
  - messages as arrows from send to receipt (the 'msg' topic; heartbeats on demand; a cross marks
    a message never received), elections won, campaigns, crashes, restarts and snapshots as marks,
    and run-wide notes (the faults the torture nemesis injects: isolate, crash, partitions healed,
    groups joining and leaving, shards moved) as dashed lines across every lane;
  - a scrubber to step through time, a window to zoom in around it, a play button, and the state of
    every peer and the decisions up to the cursor.
Exit status: 0 when the page was written; 1 when the logs hold no decision line; 2 for usage errors
(a missing file).
"""

EPILOG = """\
examples:
  RAYKV_LOG=all RAYKV_LOG_FILE=run.log raykv demo && raykv viz run.log -o run.html
  RAYKV_LOG=all raykv torture --campaigns 1 --seconds 20     prints the page of the run
  raykv viz torture-runs/20261203-1400/decisions.log -o torture.html
  raykv viz /tmp/ray/session_latest/logs/ -o ray-workers.html     (worker-*.err are not *.log: name them)
"""


def configure(p: argparse.ArgumentParser) -> None:
    p.epilog = EPILOG
    p.add_argument("logs", nargs="+", metavar="LOG", help="decision log files, or directories of *.log files")
    p.add_argument("-o", "--output", default="raykv-viz.html", metavar="PAGE",
                   help="the HTML page to write (default: raykv-viz.html)")
    p.add_argument("--title", default=None, help="the page's title (default: the logs' names)")


def run(args: argparse.Namespace) -> int:
    from raykv.viz import write_viz

    t = time.monotonic()
    try:
        out = write_viz(args.logs, args.output, title=args.title)
    except FileNotFoundError as exc:
        print(f"raykv viz: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as exc:
        print(f"raykv viz: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    size = Path(out).stat().st_size
    print(f"wrote {out} ({size / 1e6:.1f} MB in {time.monotonic() - t:.1f} s); open it in a browser")
    return EXIT_OK


def commands(command_cls: Any) -> tuple[Any, ...]:
    """The ``viz`` entry of :data:`raykv.cli.COMMANDS`."""
    return (command_cls("viz", "a picture of a real run: an HTML page from Raft decision logs",
                        run, configure=configure, description=DESCRIPTION),)
