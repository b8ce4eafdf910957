"""``raykv demo``: the command line of :mod:`raykv.system_demo` (``raykv demo raft`` is the Raft-only
demo of :mod:`raykv.demo`, dispatched by :mod:`raykv.cli`). :func:`main` takes the arguments after
``demo`` and returns the exit status."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from raykv.cli_args import int_at_least, seconds_between

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

DESCRIPTION = """\
Watch the whole system at work: a sharded key-value service on a multi-node Ray cluster, with clients,
a group joining, a group leaving and a node lost, checked for linearizability at the end.

Starts a Ray cluster here (ray.cluster_utils.Cluster: a head node and --nodes worker nodes), or uses the
one at --address, and then:
  1. starts a controller and --groups shard groups of 3 replicas, each group on distinct nodes;
  2. starts --clients clients that get, put and append, every operation recorded;
  3. Join: a new group starts and joins; shards move to it;
  4. Leave: group 1 leaves; its shards move to the others and it stops;
  5. loses a node (the worker holding the most replicas is killed); each group's leader replaces its
     lost replica on a free node, by itself; on an existing cluster (--address) no node is killed:
     the service's own replicas on that node are killed instead;
  6. stops the clients, reads every key once more, checks the whole history for linearizability and
     looks up every acknowledged write.
The clients run --phase seconds between the steps. A live table (group, leader's node, term, replicas
up, shards, operations per second, moves in flight) is redrawn while it runs, on a terminal; anywhere
else plain lines are printed. It ends with the verdict and the path of the checker's HTML report,
and on a cluster started here with the path of the run's picture: every process logs its Raft
decisions (RAYKV_LOG topics: all, unless the variable names others) to --out/decisions.log, drawn by
'raykv viz' into --out/viz.html (on an existing cluster the workers do not have the variables: no page).
Exit status: 0 when every step happened and the history is linearizable with no write lost, 1 otherwise.

The Raft-only demo (a leader crash, failover and catch-up) is 'raykv demo raft' (see its --help).
"""

EPILOG = """\
examples:
  raykv demo                          4 worker nodes, 3 groups, 4 clients, on a cluster started here
  raykv demo --phase 2 --seed 7       shorter phases; the seed fixes the clients' choices
  raykv demo --address auto           on the cluster of 'ray start --head' (replicas killed, not a node)
  raykv demo raft --peers 3 --seed 7  the Raft-only demo
"""


def build_parser(prog: str = "raykv demo") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int_at_least(4), default=4, metavar="N",
                   help="worker nodes of the cluster started here, at least 4: 3 for a group's replicas "
                        "and one free for the lost node's replicas (default: 4; ignored with --address)")
    p.add_argument("--groups", type=int_at_least(2), default=3, metavar="N",
                   help="shard groups at the start (default: 3)")
    p.add_argument("--clients", type=int_at_least(1), default=4, metavar="N",
                   help="client threads (default: 4)")
    p.add_argument("--phase", type=seconds_between(0, 600), default=4.0, metavar="SECONDS",
                   help="how long the clients run between the steps (default: 4)")
    p.add_argument("--seed", type=int, default=None, metavar="N",
                   help="seed of the clients' choices (default: random)")
    p.add_argument("--address", default=None, metavar="ADDR",
                   help="an existing Ray cluster: 'auto' (the one on this machine), HOST:PORT or "
                        "ray://HOST:PORT (default: $RAY_ADDRESS, else a cluster started here)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="where to write history.kv, report.html, decisions.log and viz.html "
                        "(default: raykv-demo/DATE-TIME)")
    p.add_argument("--plain", action="store_true",
                   help="plain lines even on a terminal (no live table)")
    p.add_argument("--verbose", action="store_true", help="show the actors' logs (Ray's log_to_driver)")
    return p


def main(argv: Sequence[str], prog: str = "raykv demo") -> int:
    from raykv.demo import new_seed
    from raykv.demo_view import LiveView
    from raykv.system_demo import run_system_demo, system_demo_header

    try:
        args = build_parser(prog).parse_args(list(argv))
    except SystemExit as e:  # --help exits 0, usage errors 2
        return int(e.code or 0) if not isinstance(e.code, str) else EXIT_USAGE
    seed = args.seed if args.seed is not None else new_seed()
    if not args.verbose:  # the stream clients' notes on connections to replicas that died or stopped
        logging.getLogger("raykv.stream").setLevel(logging.ERROR)
    view = LiveView(live=False if args.plain else None)
    print(system_demo_header(args.groups, 3, args.clients, seed), flush=True)
    with view:
        report = run_system_demo(nodes=args.nodes, groups=args.groups, clients=args.clients,
                                 phase_s=args.phase, seed=seed, address=args.address, out=args.out,
                                 log_to_driver=args.verbose, **view.callbacks())
    print()
    # on a terminal the live table stays on the screen: no need to print it again
    print(report.format(timeline=False, table=not view.live_mode), flush=True)
    if not report.ok:
        print(f"{prog}: error: {report.error or report.format().splitlines()[-1]}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
