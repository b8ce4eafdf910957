"""``raykv torture``: the command line of :mod:`raykv.torture`. Registered in :data:`raykv.cli.COMMANDS`
through :func:`commands`; :func:`run` takes the parsed arguments and returns the exit status."""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from raykv.cli_args import int_at_least, seconds_between

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

DESCRIPTION = """\
Fault campaigns against a real sharded KV service, as Jepsen runs them.

Each campaign starts a sharded service (a controller and --groups groups of --replicas replicas, every
RPC through the faulty network actor) on a multi-node Ray cluster that this command starts itself
(ray.cluster_utils.Cluster: a head node without CPUs and --nodes worker nodes, each group's replicas
on distinct nodes) or on an existing cluster (--address). --clients client threads then read, write
and append random keys for --seconds seconds, recording every operation, while a nemesis follows a
seeded schedule of faults. At the end the nemesis heals everything, the clients stop, the service
must settle, every key is read once more, and the campaign is judged:
  - the whole history must be linearizable, to a definite verdict (no time-out);
  - every acknowledged write must be found in the final values (none lost, none applied twice).
One line per campaign: its seed, operations (and how many had an unknown outcome), faults injected,
the verdict, violations (keys not linearizable) and lost writes.

Faults (--faults, comma separated; 'default' = all but node-loss, 'all' = every one):
  isolate         cut one replica (of a group or the controller) off from its peers and callers
  isolate-leader  the same for the replica leading that group at the moment
  crash           crash one replica (all but its durable storage is lost), restart it later
  unreliable      the network drops 10% of requests and replies and delays the rest
  join            start a new group and join it: shards move to it
  leave           make a group leave: its shards move away, then it stops
  move            move one shard to another group
  node-loss       kill a worker node of the cluster started here, for good. OFF by default: a group
                  keeps serving after losing a minority of its replicas, but nothing replaces lost
                  replicas on the network transport, so at most one node per campaign (groups of 3)
                  is lost, no replica is isolated or crashed after it, and only on a cluster
                  started here with --nodes >= --replicas.
Timed faults (the first four) hold for 1-4 s, one at a time, and are always healed before the last
second; a join, leave or move happens every 1.5-4 s besides.

Failures: a campaign that fails (or whose nemesis hit an error) keeps its directory under --out:
schedule.json (the seed, setup and every event), history.kv (re-check it with
'raykv check --format kv history.kv'), campaign.log (what the nemesis did, when, and the service's
status at the end), raykv.log, report.html (when not linearizable), verdict.json. The line after a
failed campaign is the exact command that replays its schedule:
  raykv torture --replay DIR/schedule.json
The same --seed (with the same options) gives the same schedules; the clients' timing is real, so a
replay repeats the faults, not the exact interleaving.

Exit status: 0 when every campaign passed, 1 when one failed, 2 for usage errors.
"""

EPILOG = """\
examples:
  raykv torture --campaigns 5 --seconds 20 --seed 7
  raykv torture --faults isolate,crash --groups 3 --clients 8
  raykv torture --campaigns 2 --seconds 10 --seed 7 --dry-run     print the schedules only
  raykv torture --faults default,node-loss --nodes 3
  raykv torture --replay torture-runs/20261203-0300/campaign-002-seed-123/schedule.json
"""


def configure(p: argparse.ArgumentParser) -> None:
    p.epilog = EPILOG
    p.add_argument("--campaigns", type=int_at_least(1), default=5, metavar="N",
                   help="number of campaigns (default: 5)")
    p.add_argument("--seconds", type=seconds_between(2, 86_400), default=20.0, metavar="T",
                   help="length of each campaign's fault phase, in seconds (default: 20)")
    p.add_argument("--seed", type=int, default=None, metavar="S",
                   help="seed of the whole run; each campaign's seed and schedule follow from it "
                        "(default: random, printed)")
    p.add_argument("--faults", default="default", metavar="LIST",
                   help="comma-separated faults the nemesis may inject (see above; default: 'default')")
    p.add_argument("--groups", type=int_at_least(1), default=2, metavar="G",
                   help="shard groups at the start of each campaign (default: 2)")
    p.add_argument("--max-groups", type=int_at_least(1), default=4, metavar="G",
                   help="most groups that joins may reach (default: 4)")
    p.add_argument("--replicas", type=int_at_least(1), default=3, metavar="R",
                   help="replicas per group, the controller's included (default: 3)")
    p.add_argument("--clients", type=int_at_least(1), default=4, metavar="C",
                   help="client threads, each with its own clerk (default: 4)")
    p.add_argument("--nodes", type=int_at_least(1), default=3, metavar="N",
                   help="worker nodes of the cluster started here (default: 3)")
    p.add_argument("--address", default=None, metavar="ADDR",
                   help="run on this existing Ray cluster instead ('auto', HOST:PORT, ray://HOST:PORT)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="where failed campaigns are kept (default: torture-runs/DATE-TIME)")
    p.add_argument("--keep-all", action="store_true",
                   help="keep every campaign's directory, not only failures")
    p.add_argument("--op-timeout", type=float, default=10.0, metavar="S",
                   help="deadline of one client operation; a timed-out one has an unknown outcome "
                        "(default: 10)")
    p.add_argument("--check-timeout", type=float, default=120.0, metavar="S",
                   help="budget of each linearizability check; running out fails the campaign (default: 120)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--dry-run", action="store_true",
                   help="print each campaign's schedule and exit, without starting anything")
    p.add_argument("--replay", default=None, metavar="SCHEDULE",
                   help="run the one campaign described by this schedule.json (from a kept campaign); "
                        "--campaigns, --seconds, --seed, --faults and the setup options are ignored")


def _faults_arg(faults: tuple[str, ...]) -> str:
    from raykv.nemesis import DEFAULT_FAULTS, FAULTS

    return {DEFAULT_FAULTS: "default", FAULTS: "all"}.get(faults, ",".join(faults))


def _schedules(args: argparse.Namespace) -> tuple[list[Any], str]:
    from raykv.nemesis import Schedule, Setup, generate, parse_faults
    from raykv.torture import campaign_seeds

    if args.replay is not None:
        sched = Schedule.load(args.replay)
        if sched.setup.nodes == 0 and args.address is None:  # recorded on an existing runtime
            sched = replace(sched, setup=replace(sched.setup, nodes=args.nodes))
        return [sched], f"raykv torture --replay {args.replay}"
    faults = parse_faults(args.faults)
    if "node-loss" in faults:
        if args.address is not None:
            raise ValueError("node-loss needs a cluster started by this command (no --address): it kills "
                             "one of its worker nodes")
        if args.nodes < args.replicas:
            raise ValueError(f"node-loss needs --nodes >= --replicas ({args.replicas}), so that each group "
                             "has one replica per node and losing a node costs it one replica")
    setup = Setup(groups=args.groups, replicas=args.replicas, clients=args.clients,
                  nodes=0 if args.address is not None else args.nodes,
                  max_groups=max(args.max_groups, args.groups))
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    scheds = [generate(s, args.seconds, faults, setup) for s in campaign_seeds(seed, args.campaigns)]
    command = (f"raykv torture --campaigns {args.campaigns} --seconds {args.seconds:g} --seed {seed} "
               f"--faults {_faults_arg(faults)} --groups {args.groups} --max-groups {setup.max_groups} "
               f"--replicas {args.replicas} --clients {args.clients}"
               + (f" --address {args.address}" if args.address else f" --nodes {args.nodes}"))
    return scheds, command


def run(args: argparse.Namespace) -> int:
    from raykv.nemesis import ScheduleError
    from raykv.torture import run_torture

    try:
        scheds, command = _schedules(args)
    except (ScheduleError, ValueError) as exc:
        print(f"raykv torture: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.dry_run:
        print(f"same run: {command}")
        for i, sched in enumerate(scheds, 1):
            print(f"campaign {i} seed {sched.seed}: {sched.seconds:g} s, {sched.injected} faults "
                  f"({', '.join(f'{k} {v}' for k, v in sorted(sched.counts().items()))})")
            for ev in sched.events:
                print(f"  {ev.describe()}")
        return EXIT_OK
    out = Path(args.out) if args.out else Path("torture-runs") / time.strftime("%Y%m%d-%H%M%S")
    s = scheds[0]
    print(f"raykv torture: {len(scheds)} campaign(s) of {s.seconds:g} s; faults {', '.join(s.faults)}; "
          f"{s.setup.groups} groups of {s.setup.replicas}, {s.setup.clients} clients, "
          + (f"cluster {args.address}" if args.address and not args.replay else
             f"{s.setup.nodes} worker nodes") + f"; output {out}/", flush=True)
    print(f"same run again: {command}", flush=True)
    decisions = _decision_log(out)
    t = time.monotonic()
    try:
        results = run_torture(scheds, out, address=args.address, op_timeout=args.op_timeout,
                              check_timeout=args.check_timeout, keep_all=args.keep_all,
                              progress=not args.no_progress)
    except Exception as exc:  # the cluster could not be started or reached
        print(f"raykv torture: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        _picture(decisions, out)
    failed = [r for r in results if not r.ok]
    print(f"{len(results)} campaigns in {time.monotonic() - t:.0f} s: {len(results) - len(failed)} passed, "
          f"{len(failed)} failed; {sum(r.ops for r in results)} operations, "
          f"{sum(sum(r.faults.values()) for r in results)} faults injected, "
          f"{sum(r.violations for r in results)} violations, "
          f"{sum(len(r.lost) for r in results)} lost writes, "
          f"{sum(len(r.nemesis_errors) for r in results)} nemesis errors", flush=True)
    for r in failed:
        print(f"failed: campaign {r.index} seed {r.seed}: {r.failure or r.verdict}; "
              f"replay: raykv torture --replay {r.directory}/schedule.json")
    return EXIT_FAILED if failed else EXIT_OK


def _decision_log(out: Path) -> Path | None:
    """With ``RAYKV_LOG`` set, the file every process of the run appends its Raft decisions to: the
    user's ``RAYKV_LOG_FILE``, else ``OUT/decisions.log`` (set in the environment before the cluster
    starts, so its workers inherit it). None when ``RAYKV_LOG`` is off."""
    from raft import trace

    spec = os.environ.get("RAYKV_LOG", "")
    if not trace._parse(spec):
        return None
    if not os.environ.get(trace.FILE_ENV):
        out.mkdir(parents=True, exist_ok=True)
        os.environ[trace.FILE_ENV] = str(out / "decisions.log")
    path = Path(os.environ[trace.FILE_ENV])
    trace.configure(spec, str(path))  # the driver's own lines (the nemesis's faults) go there too
    return path


def _picture(decisions: Path | None, out: Path) -> None:
    """Print where the picture of the run is (``raykv viz``), or how to get one."""
    if decisions is None:
        print("a picture of the run: set RAYKV_LOG=all (its decision log) and see 'raykv viz --help'")
        return
    from raykv.viz import write_viz

    try:
        page = write_viz([decisions], out / "viz.html", title=f"raykv torture {out.name}")
    except (OSError, ValueError) as exc:
        print(f"no picture of the run: {exc}")
        return
    print(f"decision log {decisions}; the run's picture: {page} (open it in a browser)", flush=True)


def commands(command_cls: Any) -> tuple[Any, ...]:
    """The ``torture`` entry of :data:`raykv.cli.COMMANDS`."""
    return (command_cls("torture", "fault campaigns against a real sharded service, checked like Jepsen",
                        run, configure=configure, description=DESCRIPTION),)
