"""``raykv start``, ``raykv status`` and ``raykv stop``: a sharded KV service on a Ray cluster, from the
shell. Registered in :data:`raykv.cli.COMMANDS`; each ``run_*`` takes the parsed arguments and returns
the exit status (0 ok, 1 failed: the message on stderr says why and what to do)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

EXIT_OK, EXIT_FAILED = 0, 1

ADDRESS_HELP = ("Ray cluster: 'auto' (the one started on this machine with 'ray start --head'), HOST:PORT "
                "or ray://HOST:PORT (default: $RAY_ADDRESS, else auto)")

START_DESCRIPTION = """\
Start a sharded key-value service on a running Ray cluster, as detached actors that outlive this
command: a shard controller and G shard groups (gids 1..G), each a Raft group of R replicas.

Each group's replicas are placed on distinct nodes when the cluster has at least R nodes with CPUs
(a STRICT_SPREAD placement group); otherwise they share nodes and a warning says so (--placement
strict refuses instead). Durable storage is a directory on each replica's own node.

Replicas and clients talk over authenticated TCP streams (--transport stream, the default): each
replica listens on its node's address, and a connection is accepted only once it proves it holds the
service's secret, which is made here and handed out only through Ray (the service's registry keeps it
for the clients of other drivers). --transport direct uses Ray actor calls instead. On both, a group
replaces the replicas a lost node took with it.

The service is registered under --name in the Ray namespace: use it from any driver with
  kv = raykv.attach_sharded(NAME, address="auto", namespace=NAMESPACE); ck = kv.clerk()
watch it with 'raykv status --name NAME' and stop it with 'raykv stop --name NAME'.

The Ray cluster must outlive this command: start it first, e.g. 'ray start --head'.
Exit status: 0 when the service runs, 1 when it could not be started (nothing is left running).
"""

STATUS_DESCRIPTION = """\
Show a running sharded service: the latest configuration, the controller's leader, and per shard
group its leader, term, replicas up, configuration, shards served, arriving and leaving, and on how
many distinct nodes its replicas run. Without --name, list the services on the cluster.
Exit status: 0, or 1 when the service (or the cluster) cannot be found.
"""

STOP_DESCRIPTION = """\
Stop a running sharded service: kill its actors, release its placement groups and delete its storage
directories on every node (unless --keep-data). Any driver may stop a service it did not start.
Exit status: 0 when stopped, 1 when the service (or the cluster) cannot be found.
"""


def _positive(hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer; got {text!r}") from None
        if not 1 <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be between 1 and {hi}; got {value}")
        return value

    return parse


def session_ttl_seconds(text: str) -> float:
    """``--session-ttl``: a positive, finite number of seconds (at least a millisecond)."""
    from actors.sessions import ttl_ms

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, e.g. 3600; got {text!r}") from None
    try:
        ttl_ms(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive, finite number of seconds (at least 0.001); "
                                         f"got {text!r}") from None
    return value


def _common(p: argparse.ArgumentParser, name_required: bool) -> None:
    p.add_argument("--name", required=name_required, default=None, metavar="NAME",
                   help="the service's name" + ("" if name_required else " (default: list the services)"))
    p.add_argument("--address", default=None, metavar="ADDR", help=ADDRESS_HELP)
    p.add_argument("--namespace", default=None, metavar="NS",
                   help="Ray namespace of the service (default: raykv)")


def configure_start(p: argparse.ArgumentParser) -> None:
    from actors.sessions import DEFAULT_SESSION_TTL_S
    from raykv.sharded import MAX_GROUPS, MAX_REPLICAS

    p.add_argument("--name", default=None, metavar="NAME",
                   help="the service's name: letters, digits, '_', '.', '-' (default: generated)")
    p.add_argument("--groups", type=_positive(MAX_GROUPS), default=3, metavar="G",
                   help="shard groups to start (default: 3)")
    p.add_argument("--replicas", type=_positive(MAX_REPLICAS), default=3, metavar="R",
                   help="replicas per group, and of the controller (default: 3)")
    p.add_argument("--shards", type=_positive(1 << 16), default=10, metavar="N",
                   help="number of shards (default: 10)")
    p.add_argument("--mapping", choices=("hash", "reference"), default="hash",
                   help="key to shard: a stable hash of the whole key, or the first byte (default: hash)")
    p.add_argument("--storage", choices=("durable", "memory"), default="durable",
                   help="durable files on each replica's node, or memory only (default: durable)")
    p.add_argument("--data-root", default=None, metavar="DIR",
                   help="directory for durable storage on every node (default: the node's temp dir)")
    p.add_argument("--placement", choices=("spread", "strict", "pack"), default="spread",
                   help="distinct nodes per group when possible / or fail / never (default: spread)")
    p.add_argument("--transport", choices=("stream", "direct"), default="stream",
                   help="how replicas and clients talk: authenticated TCP streams, or Ray actor calls "
                        "(default: stream)")
    p.add_argument("--session-ttl", type=session_ttl_seconds, default=DEFAULT_SESSION_TTL_S,
                   metavar="SECONDS",
                   help="forget a client's session (its exactly-once record) after this many seconds "
                        "without a request from it, in the controller and every shard group; the "
                        "client's next write is then refused with SessionExpiredError; a client that "
                        f"only reads keeps its session (default: {DEFAULT_SESSION_TTL_S:g} s)")
    p.add_argument("--address", default=None, metavar="ADDR", help=ADDRESS_HELP)
    p.add_argument("--namespace", default=None, metavar="NS",
                   help="Ray namespace to register the service in (default: raykv)")


def configure_status(p: argparse.ArgumentParser) -> None:
    _common(p, name_required=False)


def configure_stop(p: argparse.ArgumentParser) -> None:
    _common(p, name_required=True)
    p.add_argument("--keep-data", action="store_true", help="leave the storage directories in place")


def _address(args: argparse.Namespace) -> str:
    return str(args.address or os.environ.get("RAY_ADDRESS") or "auto")


def _guard(command: str, fn: Callable[[], int]) -> int:
    """Run ``fn``; a service, cluster or input error becomes one line on stderr and exit status 1."""
    from raykv.cluster import ClusterError
    from raykv.sharded import ServiceError

    try:
        return fn()
    except (ServiceError, ClusterError, ValueError, TypeError, TimeoutError) as exc:
        print(f"raykv {command}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED


def run_start(args: argparse.Namespace) -> int:
    def go() -> int:
        import raykv.sharded as sharded
        from raykv.cluster import init_ray

        cluster = init_ray(_address(args), args.namespace)
        if cluster.mode == "embedded":
            cluster.shutdown()
            raise sharded.ServiceError("'raykv start' needs a Ray cluster that outlives it; start one with "
                                       "'ray start --head' and pass --address auto (or its address)")
        t0 = time.monotonic()
        kv = sharded.start(args.name, groups=args.groups, replicas=args.replicas, nshards=args.shards,
                           mapping=args.mapping, storage=args.storage, data_root=args.data_root,
                           detached=True, placement=args.placement, session_ttl=args.session_ttl,
                           transport=args.transport)
        print(f"started {kv!r} in {time.monotonic() - t0:.1f} s on {cluster.describe()}")
        print(kv.status().format())
        print(f"\nuse it:   kv = raykv.attach_sharded({kv.name!r}, address=..., namespace={kv.namespace!r})")
        print(f"stop it:  raykv stop --name {kv.name} --namespace {kv.namespace}")
        return EXIT_OK

    return _guard("start", go)


def run_status(args: argparse.Namespace) -> int:
    def go() -> int:
        import raykv.sharded as sharded
        from raykv.cluster import init_ray

        init_ray(_address(args), args.namespace)
        if args.name is None:
            services = sharded.list_services(args.namespace, all_namespaces=args.namespace is None)
            if not services:
                print("no sharded service runs on this cluster")
            for ns, name in services:
                print(f"{name}  (namespace {ns!r})")
            return EXIT_OK
        kv = sharded.attach(args.name, namespace=args.namespace)
        print(kv.status().format())
        return EXIT_OK

    return _guard("status", go)


def run_stop(args: argparse.Namespace) -> int:
    def go() -> int:
        import raykv.sharded as sharded
        from raykv.cluster import init_ray

        init_ray(_address(args), args.namespace)
        kv = sharded.attach(args.name, namespace=args.namespace)
        left = kv.stop(keep_data=args.keep_data)
        print(f"stopped service {kv.name!r} (namespace {kv.namespace!r})")
        for what in left:
            print(f"not removed: {what}")
        return EXIT_OK

    return _guard("stop", go)


def commands(command_cls: Any) -> tuple[Any, ...]:
    """The three :class:`raykv.cli.Command` entries."""
    return (
        command_cls("start", "start a sharded KV service on a Ray cluster (detached; see --help)",
                    run_start, configure=configure_start, description=START_DESCRIPTION),
        command_cls("status", "show a running sharded KV service, or list them", run_status,
                    configure=configure_status, description=STATUS_DESCRIPTION),
        command_cls("stop", "stop a running sharded KV service", run_stop, configure=configure_stop,
                    description=STOP_DESCRIPTION),
    )
