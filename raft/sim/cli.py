"""``python -m raft.sim``: run a seeded simulation campaign of the Raft core, or replay one seed.

``main(argv) -> int`` is the entry point (the ``raykv sim`` console command calls it too). Exit status:
0 when every seed kept every invariant, 1 when a seed broke one (its report, the last events and the
replay command are printed), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from raft.sim.campaign import SeedResult, run_campaign, run_seed
from raft.sim.config import FAULTS, Profile, SimConfig
from raft.sim.hunting import HUNTING_PROFILES, HUNTING_SETTINGS
from raft.sim.invariants import INVARIANTS

EPILOG = """\
invariants checked after every step:
{invariants}

broken rules (--fault) and what they break:
  commit_old_term         a leader commits an earlier term's entry by counting replicas (Figure 8)
  vote_without_log_check  votes are granted without the "candidate's log is up to date" check
  forget_vote             the vote is not persisted, so a restarted peer may vote twice in a term
  apply_past_commit       an uncommitted entry is handed out for application
  read_without_quorum     a leader answers ReadIndex reads without a heartbeat round (needs --reads)
  read_before_term_commit a new leader answers reads before an entry of its term commits (--reads)
  two_changes_in_flight   a leader accepts a membership change while an earlier one is uncommitted

examples:
  python -m raft.sim --seeds 200 --ticks 5000            # the CI campaign
  python -m raft.sim --seeds 5000 --ticks 20000 --start-seed 100000 --keep-going
  python -m raft.sim --replay 17 --ticks 5000 --tail 200 # re-run seed 17, show its last 200 events
  python -m raft.sim --replay 17 --trace > seed17.txt    # ... or its whole trace
  python -m raft.sim --seeds 100 --fault forget_vote --hunt   # prove the checks catch a broken rule
  python -m raft.sim --seeds 200 --pre-vote --check-quorum --leader-noop --reads   # the services' rules
  python -m raft.sim --seeds 100 --voters 3 --profile '{{"member_p": 0.05}}'  # 2 peers join later
"""


def build_parser(prog: str = "python -m raft.sim") -> argparse.ArgumentParser:
    inv = "\n".join(f"  {name:<21} {text}" for name, text in INVARIANTS.items())
    p = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Deterministic simulation of the Raft core: N peers in one process on a seeded virtual "
            "network and clock (loss, duplication, delay, reordering, partitions, crashes that lose "
            "unpersisted state, restarts, snapshots, client proposals), with the Raft invariants "
            "checked after every step. Each seed draws its own fault profile; the same seed always "
            "gives the same run."
        ),
        epilog=EPILOG.format(invariants=inv),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--seeds", type=int, default=100, metavar="N", help="how many seeds to run (100)")
    p.add_argument("--start-seed", type=int, default=0, metavar="S",
                   help="first seed; the campaign runs S .. S+N-1 (0)")
    p.add_argument("--ticks", type=int, default=5000, metavar="T",
                   help="simulated ticks per seed (5000); a tick is one unit of time for all peers")
    p.add_argument("--nodes", type=int, default=5, metavar="K", help="peers per cluster (5)")
    p.add_argument("--voters", type=int, default=None, metavar="V",
                   help="the first V peers make up the bootstrap configuration, the others join later "
                        "through membership changes (default: all K)")
    p.add_argument("--replay", type=int, metavar="SEED",
                   help="run only this seed and print its report and trace tail")
    p.add_argument("--fault", action="append", default=[], choices=sorted(FAULTS), metavar="NAME",
                   help="switch on a deliberately broken rule in every core (repeatable): "
                        + ", ".join(sorted(FAULTS)))
    p.add_argument("--hunt", action="store_true",
                   help="with --fault: use the fault profile tuned to expose that broken rule fast "
                        "instead of drawing one per seed")
    p.add_argument("--profile", metavar="JSON",
                   help="pin the fault profile instead of drawing one per seed: a JSON object of "
                        "raft.sim.Profile fields, e.g. '{\"drop\": 0.2, \"crash_p\": 0.01}' "
                        "(unnamed fields keep their defaults)")
    p.add_argument("--tail", type=int, default=40, metavar="E",
                   help="events to show before a violation (40)")
    p.add_argument("--trace", action="store_true", help="with --replay: print the whole trace")
    p.add_argument("--keep-going", action="store_true",
                   help="do not stop at the first failing seed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--election-ticks", type=int, default=10, metavar="E",
                   help="election timeout base in ticks (10); timeouts are drawn from [E, 2E)")
    p.add_argument("--heartbeat-ticks", type=int, default=2, metavar="H", help="heartbeat interval (2)")
    p.add_argument("--pre-vote", action="store_true", help="switch PreVote on in every core")
    p.add_argument("--check-quorum", action="store_true", help="switch CheckQuorum on in every core")
    p.add_argument("--leader-noop", action="store_true",
                   help="a new leader appends a no-op entry of its term at once")
    p.add_argument("--rejoin", action="store_true",
                   help="instead of a campaign: on a calm cluster, isolate one follower for 10 election "
                        "timeouts and heal it, per seed; report the term churn (raft.sim.scenarios)")
    p.add_argument("--reads", action="store_true",
                   help="clients also ask for ReadIndex reads, checked against the committed log")
    return p


def make_config(args: argparse.Namespace, record: bool = False) -> SimConfig:
    faults = frozenset(args.fault)
    profile = None
    if args.hunt:
        if len(faults) != 1:
            raise ValueError("--hunt needs exactly one --fault")
        profile = HUNTING_PROFILES[next(iter(faults))]
    if args.profile:
        if profile is not None:
            raise ValueError("--hunt and --profile are exclusive")
        try:
            fields = json.loads(args.profile)
            profile = Profile(**fields)
        except (json.JSONDecodeError, TypeError) as e:
            raise ValueError(f"--profile: {e}") from e
    config = SimConfig(nodes=args.nodes, voters=args.voters, ticks=args.ticks,
                       faults=faults, profile=profile,
                       tail=args.tail, record=record, election_ticks=args.election_ticks,
                       heartbeat_ticks=args.heartbeat_ticks, pre_vote=args.pre_vote,
                       check_quorum=args.check_quorum, leader_noop=args.leader_noop, reads=args.reads)
    if args.hunt:  # the settings the broken rule needs to be observable (e.g. reads)
        config = config.with_(**HUNTING_SETTINGS.get(next(iter(faults)), {}))
    return config


def _replay(args: argparse.Namespace, out: object) -> int:
    config = make_config(args, record=args.trace)
    r: SeedResult
    if args.trace:
        from raft.sim.cluster import SimCluster
        from raft.sim.invariants import Violation

        cluster = SimCluster(args.replay, config)
        violation = None
        try:
            cluster.run()
        except Violation as v:
            violation = v
        print(f"seed {args.replay}: {cluster.profile.describe()}", file=out)
        print(cluster.trace.text(), file=out)
        ok = violation is None
        print(violation.report() if violation else f"seed {args.replay}: every invariant held "
              f"for {cluster.now} ticks", file=out)
        return 0 if ok else 1
    r = run_seed(args.replay, config)
    print(f"seed {r.seed}: profile {r.profile}", file=out)
    print(f"seed {r.seed}: {r.ticks} ticks in {r.wall:.2f} s; {r.stats}", file=out)
    if r.violation is not None:
        print(r.violation.report(), file=out)
        return 1
    print(f"seed {r.seed}: every invariant held (fingerprint {r.fingerprint})", file=out)
    return 0


def _rejoin(args: argparse.Namespace, config: SimConfig, out: object) -> int:
    from raft.sim.invariants import Violation
    from raft.sim.scenarios import rejoin

    results = []
    for seed in range(args.start_seed, args.start_seed + args.seeds):
        try:
            results.append(rejoin(seed, config))
        except Violation as v:
            print(v.report(), file=out)
            return 1
    churn = sorted(r.churn for r in results)
    quiet = sum(r.quiet for r in results)
    print(f"rejoin: {len(results)} seeds, pre_vote={config.pre_vote}, check_quorum={config.check_quorum}: "
          f"term unchanged and same leader in {quiet}; term churn per rejoin: median "
          f"{churn[len(churn) // 2]}, max {churn[-1]}, total {sum(churn)}; elections (isolation and rejoin) "
          f"{sum(r.elections for r in results)}", file=out)
    return 0


def main(argv: Sequence[str] | None = None, prog: str = "python -m raft.sim") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(list(argv) if argv is not None else None)
    out = sys.stdout
    try:
        if args.seeds < 1 or args.ticks < 1 or args.nodes < 1:
            raise ValueError("--seeds, --ticks and --nodes must be positive")
        config = make_config(args)
    except ValueError as e:
        parser.print_usage(sys.stderr)
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.replay is not None:
        return _replay(args, out)
    if args.rejoin:
        return _rejoin(args, config, out)
    seeds = range(args.start_seed, args.start_seed + args.seeds)
    res = run_campaign(seeds, config, progress=not args.no_progress,
                       stop_on_failure=not args.keep_going)
    for f in res.failures[:3]:
        assert f.violation is not None
        print(f.violation.report(), file=out)
        print(f"profile: {f.profile}", file=out)
        print(file=out)
    print(res.summary(), file=out)
    return 0 if res.ok else 1
