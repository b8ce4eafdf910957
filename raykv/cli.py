"""The ``raykv`` command line: one program, one subcommand per tool.

:func:`main` takes the arguments after the program name and returns the exit status, so tests and
other programs can call it in-process. Each subcommand is a :class:`Command` in :data:`COMMANDS`;
a new one (a KV benchmark, a shard-controller console) is one more entry. A command either declares
its options on an argparse subparser (``configure``) or parses its own arguments (``passthrough``:
everything after its name is handed over untouched, ``--help`` included), which is how ``check``
and ``sim`` reuse the command lines of :mod:`linearizability.cli` and the simulator.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from raykv.logs_cli import commands as logs_commands
from raykv.repeat_cli import commands as repeat_commands
from raykv.sharded_cli import commands as sharded_commands
from raykv.torture_cli import commands as torture_commands
from raykv.viz_cli import commands as viz_commands

__all__ = ["COMMANDS", "Command", "build_parser", "main"]

PROG = "raykv"

DESCRIPTION = """\
raykv: Raft, a fault-tolerant key-value store and a sharded key-value store, on Ray.

Run 'raykv COMMAND --help' for the options of one command.
"""

EPILOG = """\
examples:
  raykv demo                          the whole system: a sharded service on a multi-node cluster,
                                      a Join, a Leave, a lost node, a live table, a linearizability verdict
  raykv demo --address auto           the same on the Ray cluster started with 'ray start --head'
  raykv demo raft                     Raft alone: 5 peers, 20 commands, a leader crash, on embedded Ray
  raykv demo raft --peers 3 --seed 7  a smaller Raft cluster, election timeouts fixed by the seed
  raykv check --format kv history.txt check a recorded key-value history for linearizability
  raykv sim --help                    the deterministic Raft simulator's options
  raykv start --name shop --groups 3  a sharded KV service on the Ray cluster ('ray start --head')
  raykv status --name shop            its configuration, leaders and moving shards
  raykv stop --name shop              stop it and delete its storage
  raykv torture --campaigns 5         fault campaigns against a sharded service, checked like Jepsen
  raykv logs raft.log --topics elect  the Raft decision log in one column per peer
  raykv test-repeat TEST --runs 20    repeat one test, keep the failing runs' logs
  raykv viz run.log -o run.html       a picture of a run: one HTML page from its decision log

environment:
  RAY_ADDRESS   the Ray cluster to use when --address is not given (default: start an embedded one)
  RAYKV_LOG     Raft trace topics to log, e.g. 'all' or 'elect,commit' (see raft/trace.py)
  RAYKV_LOG_FILE  append those lines to this file instead of stderr (read it with 'raykv logs')

exit status: 0 on success; 1 when a command's check fails; 2 for usage errors
(each command's --help says more).
"""

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, one line of help, and how to run it."""

    name: str
    help: str
    #: run the command: receives the parsed namespace, or (``passthrough``) the raw argument list
    run: Callable[..., int]
    #: add the command's options to its subparser (not used by passthrough commands)
    configure: Callable[[argparse.ArgumentParser], None] | None = None
    #: the command parses its own arguments: everything after its name goes to ``run`` untouched
    passthrough: bool = False
    description: str = ""


# ---------------------------------------------------------------------------------------------
# raykv demo
# ---------------------------------------------------------------------------------------------

DEMO_DESCRIPTION = """\
Watch Raft keep a replicated log through a leader crash, on Ray.

Starts an embedded Ray runtime (or connects to --address), starts N Raft peers as Ray actors behind
the faulty network actor, and then:
  1. waits for a leader to be elected;
  2. commits the first half of the commands on every peer;
  3. crashes the leader and waits for the others to elect a new one;
  4. commits the second half on the surviving majority;
  5. restarts the old leader from its storage and waits for it to catch up;
  6. checks that every peer applied every command, at the same index, in order.

Prints a timeline as it goes, then a table of the peers (term, role, commit index, last log index,
RPCs received), the terms and leaders seen, and the network's RPC and byte counts. When it starts
Ray itself, every process logs its Raft decisions to --out/decisions.log (RAYKV_LOG topics: all,
unless the variable names others) and the end prints the path of the run's picture, --out/viz.html
(see 'raykv viz --help'); on a Ray runtime that was already running there is no picture.
Exit status: 0 when every step succeeded, 1 when one failed (the message says which and why).
"""


def _int_between(lo: int, hi: int | None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer; got {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
            raise argparse.ArgumentTypeError(f"must be {bound}; got {value}")
        return value

    return parse


def _configure_demo(p: argparse.ArgumentParser) -> None:
    from raykv.demo import MAX_PEERS, MIN_PEERS

    p.add_argument("--peers", type=_int_between(MIN_PEERS, MAX_PEERS), default=5, metavar="N",
                   help=f"number of Raft peers, {MIN_PEERS} to {MAX_PEERS} (default: 5)")
    p.add_argument("--commands", type=_int_between(2, None), default=20, metavar="N",
                   help="commands to replicate, half before the crash and half after (default: 20)")
    p.add_argument("--seed", type=int, default=None, metavar="N",
                   help="seed for election timeouts and network randomness (default: random)")
    p.add_argument("--address", default=None, metavar="ADDR",
                   help="Ray cluster to use: 'auto' (the one on this machine), HOST:PORT, "
                        "ray://HOST:PORT, or 'local' for an embedded one (default: $RAY_ADDRESS, "
                        "else local)")
    p.add_argument("--namespace", default=None, metavar="NAME",
                   help="Ray namespace for the demo's actors (default: raykv)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="where the run's decision log and its picture (viz.html) go, when the demo "
                        "starts Ray itself (default: raykv-demo/raft-DATE-TIME)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress while running; print only the final account")
    p.add_argument("--verbose", action="store_true",
                   help="show the actors' logs (Ray's log_to_driver)")


def _run_demo_command(argv: list[str]) -> int:
    """``raykv demo ...``: the whole-system demo (:mod:`raykv.system_demo_cli`), or with ``raft`` first
    the Raft-only demo (its options parsed here, by :func:`_configure_demo`)."""
    if argv and argv[0] == "raft":
        p = argparse.ArgumentParser(prog=f"{PROG} demo raft", description=DEMO_DESCRIPTION,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        _configure_demo(p)
        try:
            args = p.parse_args(argv[1:])
        except SystemExit as e:  # --help exits 0, usage errors 2
            return int(e.code or 0) if not isinstance(e.code, str) else EXIT_USAGE
        return _run_demo(args)
    from raykv.system_demo_cli import main as system_demo_main

    return system_demo_main(argv, prog=f"{PROG} demo")


def _run_demo(args: argparse.Namespace) -> int:
    from raykv.demo import DemoEvent, demo_header, new_seed, run_demo

    def show(ev: DemoEvent) -> None:
        print(ev.format(), flush=True)

    live = not args.quiet
    seed = args.seed if args.seed is not None else new_seed()
    if live:
        print(demo_header(args.peers, args.commands, seed), flush=True)
    report = run_demo(
        peers=args.peers,
        commands=args.commands,
        seed=seed,
        address=args.address,
        namespace=args.namespace,
        on_event=show if live else None,
        progress_bar=live,
        log_to_driver=args.verbose,
        out=args.out,
    )
    if live:
        print()
    print(report.format(timeline=not live), flush=True)
    if not report.ok:
        print(f"{PROG} demo raft: error: {report.error}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# raykv check / raykv sim (passthrough)
# ---------------------------------------------------------------------------------------------


def _run_check(argv: list[str]) -> int:
    from linearizability.cli import main as check_main

    # linearizability.cli names its parser f"{prog} check"; with no arguments it prints a short usage
    return check_main(["check", *argv] if argv else [], prog=PROG)


SIM_DESCRIPTION = """\
The deterministic Raft simulator (raft.sim): many in-process Raft nodes on a seeded virtual network
that drops, duplicates, delays, reorders and partitions messages and crashes nodes, with the Raft
invariants checked after every step. The same seed gives the same run.
"""

#: the module holding the simulator's ``main(argv) -> int`` (``raft/sim/__main__.py`` calls it too)
SIM_MODULE = "raft.sim.cli"


def _find_sim_main() -> Callable[..., int] | None:
    """The simulator's ``main(argv) -> int``, imported lazily; ``None`` when there is none (yet)."""
    try:
        spec = importlib.util.find_spec(SIM_MODULE)
    except ModuleNotFoundError:  # raft.sim itself is missing
        return None
    if spec is None:
        return None
    main_fn = getattr(importlib.import_module(SIM_MODULE), "main", None)
    return main_fn if callable(main_fn) else None


def _run_sim(argv: list[str]) -> int:
    sim_main = _find_sim_main()
    if sim_main is None:
        where = f"{SIM_MODULE}.main"
        if argv and argv[0] in ("-h", "--help"):
            print(f"usage: {PROG} sim [ARGS...]\n\n{SIM_DESCRIPTION}\n"
                  f"Not available in this installation yet: no {where} was found.")
            return EXIT_OK
        print(f"{PROG} sim: error: the simulator's command line is not available in this installation "
              f"(no {where} was found)", file=sys.stderr)
        return EXIT_USAGE
    try:
        takes_prog = "prog" in inspect.signature(sim_main).parameters
    except (TypeError, ValueError):
        takes_prog = False
    try:
        if takes_prog:
            return int(sim_main(argv, prog=f"{PROG} sim") or 0)
        return int(sim_main(argv) or 0)
    except SystemExit as e:  # argparse inside the simulator: 0 for --help, 2 for usage errors
        return e.code if isinstance(e.code, int) else (0 if e.code is None else EXIT_USAGE)


# ---------------------------------------------------------------------------------------------
# The program
# ---------------------------------------------------------------------------------------------

COMMANDS: tuple[Command, ...] = (
    Command("demo", "the whole system on a multi-node Ray cluster, live ('demo raft': Raft alone)",
            _run_demo_command, passthrough=True),
    Command("check", "check recorded histories for linearizability (see 'raykv check --help')",
            _run_check, passthrough=True),
    Command("sim", "run the deterministic Raft simulator (see 'raykv sim --help')",
            _run_sim, passthrough=True, description=SIM_DESCRIPTION),
    *sharded_commands(Command),
    *torture_commands(Command),
    *logs_commands(Command),
    *repeat_commands(Command),
    *viz_commands(Command),
)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("raykv")
    except PackageNotFoundError:
        return "unknown (not installed)"


class _TopHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """argparse (3.11) measures the command names two columns short of the indent it prints them at,
    so a name of ten characters or more (``test-repeat``) had its help pushed to the next line."""

    def add_argument(self, action: argparse.Action) -> None:
        super().add_argument(action)
        names = [len(self._format_action_invocation(a)) for a in self._iter_indented_subactions(action)]
        if names and action.help is not argparse.SUPPRESS:
            indent = self._current_indent + self._indent_increment
            self._action_max_length = max(self._action_max_length, max(names) + indent)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser, with one subparser per command (for ``--help`` and dispatch)."""
    parser = argparse.ArgumentParser(
        prog=PROG, description=DESCRIPTION, epilog=EPILOG, formatter_class=_TopHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.description or cmd.help,
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           add_help=not cmd.passthrough)
        if cmd.passthrough:
            p.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        elif cmd.configure is not None:
            cmd.configure(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``raykv`` on ``argv`` (default ``sys.argv[1:]``) and return the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    by_name = {c.name: c for c in COMMANDS}
    # passthrough commands see their arguments untouched (argparse would eat '--help' and '--')
    if args_list and args_list[0] in by_name and by_name[args_list[0]].passthrough:
        return by_name[args_list[0]].run(args_list[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as e:  # --help / --version exit 0, usage errors 2
        return int(e.code or 0) if not isinstance(e.code, str) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return by_name[args.command].run(args)
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
