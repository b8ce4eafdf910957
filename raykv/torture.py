"""``raykv torture``: fault campaigns against a real sharded service, as Jepsen runs them.

One *campaign*: start a sharded service (:func:`raykv.start_sharded` with ``transport="network"``, so
every RPC crosses the :class:`~actors.network.FaultyNetwork` actor) on the Ray cluster, run client
threads that record every operation (:class:`linearizability.Recorder`), carry out a seeded nemesis
schedule (:mod:`raykv.nemesis`) for ``seconds`` seconds, heal everything, stop the clients, wait for the
service to settle, read every key once (the final reads, recorded too), then decide: the history must
be linearizable (a definite verdict: UNKNOWN fails) and every acknowledged write must be found
(:mod:`raykv.torture_check`). A campaign's files (schedule, history, log, HTML report) are kept in its
directory when it fails or the nemesis hit an error, and removed otherwise (``keep_all`` keeps them).

:func:`run_torture` runs N campaigns on one cluster: a ``ray.cluster_utils.Cluster`` of a CPU-less head
and ``setup.nodes`` worker nodes that it starts itself, an existing cluster (``address``), or, with
``setup.nodes == 0`` and Ray already initialised, the current runtime (the test suite's short form).

How each fault is carried out (:class:`Nemesis`): *isolate* disables the replica's Raft links to its
peers and deletes it from the network (every call to it fails, calls in flight are cut); healing
registers it again under the same incarnation and enables its links. (What it sends itself to other
groups or the controller still gets through: a one-way cut, which an asynchronous network allows.)
*crash* is the reference harness's ``shutdown_server``: links off, deleted from the network, the
replica drops all volatile state; the heal restarts it from its durable storage with a new
incarnation and new links. *join*, *leave* and *move* are :meth:`ShardedKV.add_group`,
:meth:`~ShardedKV.remove_group` and :meth:`~ShardedKV.move`. *node-loss* kills a worker node of the
cluster the tool started (never the node holding the network actor).
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayError

from linearizability import UNKNOWN, KVModel, Recorder, Verdict, check, write_html
from raft import trace
from raykv.nemesis import Event, Schedule
from raykv.torture_check import key_for_shards, lost_writes, token, write_kv_history

__all__ = ["CampaignResult", "Nemesis", "TortureCluster", "run_campaign", "run_torture"]

log = logging.getLogger("raykv.torture")

#: deadline of one client operation (a timed-out operation is recorded with an unknown outcome)
OP_TIMEOUT_S = 10.0
#: budget of the linearizability check of one campaign; UNKNOWN fails the campaign
CHECK_TIMEOUT_S = 120.0
#: how long the service may take to settle, and a final read to complete, after the nemesis
RECOVER_TIMEOUT_S = 60.0
#: deadline of one nemesis call to the network or a replica
CALL_S = 15.0


@dataclass
class CampaignResult:
    """What one campaign found. ``ok``: linearizable (definite), no lost or duplicated write, and
    the service recovered. ``directory`` holds its files when they were kept."""

    index: int
    total: int
    seed: int
    ops: int = 0
    unknown: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    verdict: str = "not checked"
    violations: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    checked_writes: int = 0
    nemesis_errors: list[str] = field(default_factory=list)
    failure: str | None = None
    directory: str | None = None
    took_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.failure is None and self.verdict == str(Verdict.LINEARIZABLE) and not self.lost \
            and not self.duplicated

    def line(self) -> str:
        faults = sum(self.faults.values())
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items()))
        status = "ok" if self.ok else f"FAILED: {self.failure or self.verdict}"
        errs = f", {len(self.nemesis_errors)} nemesis errors" if self.nemesis_errors else ""
        return (f"campaign {self.index}/{self.total} seed {self.seed}: {self.ops} ops "
                f"({self.unknown} unknown), {faults} faults ({kinds or 'none'}){errs}, {self.verdict}, "
                f"{self.violations} violations, {len(self.lost)} lost writes"
                f"{f', {len(self.duplicated)} duplicated' if self.duplicated else ''} "
                f"[{self.took_s:.0f} s] {status}")


# ------------------------------------------------------------------------------------------------
# The cluster
# ------------------------------------------------------------------------------------------------


class TortureCluster:
    """Where the campaigns run: a ``Cluster`` started here (``nodes`` workers), an existing one
    (``address``), or the current Ray runtime (``nodes == 0``, Ray initialised)."""

    def __init__(self, nodes: int, address: str | None = None) -> None:
        self.nodes = nodes
        self.cluster: Any = None
        self.workers: list[Any] = []
        self._shutdown_ray = False
        if address is not None:
            from raykv.cluster import init_ray

            init_ray(address, "raykv-torture")
            self._shutdown_ray = True
        elif nodes > 0:
            from ray.cluster_utils import Cluster

            if ray.is_initialized():
                raise RuntimeError("Ray is already initialised in this process; call ray.shutdown() "
                                   "first, or run with nodes=0 to use it")
            self.cluster = Cluster(initialize_head=True, head_node_args=self._node_args(0))
            self.workers = [self.cluster.add_node(**self._node_args(1)) for _ in range(nodes)]
            self.cluster.wait_for_nodes(timeout=120)
            # the actors' logs stay in the Ray session's log directory (named in each campaign.log)
            ray.init(address=self.cluster.address, namespace="raykv-torture", logging_level="WARNING",
                     log_to_driver=False)
            self._shutdown_ray = True
        elif not ray.is_initialized():
            raise RuntimeError("nodes=0 needs a running Ray runtime (ray.init() first), or give an address")

    @staticmethod
    def _node_args(cpus: int) -> dict[str, Any]:
        return {"num_cpus": cpus, "object_store_memory": 80 * 1024 * 1024, "include_dashboard": False}

    @property
    def owned(self) -> bool:
        return self.cluster is not None

    def kill_worker(self, index: int) -> str:
        """Kill worker ``index`` for good; returns its node id."""
        worker = self.workers[index]
        self.cluster.remove_node(worker, allow_graceful=False)
        return str(worker.node_id)

    def restore(self) -> int:
        """Replace the worker nodes that were killed (between campaigns); returns how many."""
        if not self.owned:
            return 0
        alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
        added = 0
        for i, w in enumerate(self.workers):
            if w.node_id not in alive:
                self.workers[i] = self.cluster.add_node(**self._node_args(1))
                added += 1
        if added:
            self.cluster.wait_for_nodes(timeout=120)
        return added

    def shutdown(self) -> None:
        if self._shutdown_ray:
            ray.shutdown()
        if self.cluster is not None:
            self.cluster.shutdown()


# ------------------------------------------------------------------------------------------------
# The clients
# ------------------------------------------------------------------------------------------------


class Clients:
    """``n`` threads, each with its own clerk, doing random operations until stopped. Keys alternate
    between *set* keys (appends and gets only) and *mixed* keys (gets, puts, appends); every value
    written is a unique token. Every operation is recorded; one that raises (a timeout) is recorded
    with an unknown outcome and counted in ``errors``."""

    def __init__(self, kv: Any, keys: list[str], rec: Recorder, seed: int, n: int, op_timeout: float) -> None:
        self.rec, self.keys, self.op_timeout = rec, keys, op_timeout
        self.set_keys = set(keys[0::2])
        self.done = threading.Event()
        self.errors: dict[str, int] = {}
        self._lock = threading.Lock()
        rng = random.Random(seed)
        self.threads = [threading.Thread(target=self._run, args=(i, kv.clerk(), rng.randrange(2**31)),
                                         name=f"torture-client-{i}", daemon=True) for i in range(n)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def _run(self, i: int, ck: Any, seed: int) -> None:
        rng = random.Random(seed)
        n = 0
        while not self.done.is_set():
            key = rng.choice(self.keys)
            r = rng.random()
            value = token(i, n)
            n += 1
            try:
                if r < (0.25 if key in self.set_keys else 0.4):
                    with self.rec.operation(i, ("get", key)) as op:
                        op.output = ck.get(key, timeout=self.op_timeout)
                elif key in self.set_keys or r < 0.7:
                    with self.rec.operation(i, ("append", key, value)):
                        ck.append(key, value, timeout=self.op_timeout)
                else:
                    with self.rec.operation(i, ("put", key, value)):
                        ck.put(key, value, timeout=self.op_timeout)
            except Exception as exc:  # recorded as unknown by the recorder
                with self._lock:
                    name = type(exc).__name__
                    self.errors[name] = self.errors.get(name, 0) + 1

    def stop(self) -> bool:
        """Stop and join the threads; False if one did not finish its last operation in time."""
        self.done.set()
        deadline = time.monotonic() + self.op_timeout + 20
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self.threads)


# ------------------------------------------------------------------------------------------------
# The nemesis
# ------------------------------------------------------------------------------------------------


class Nemesis:
    """Carries out a schedule's events against the service ``kv`` (network transport). Every action
    and every error goes to ``note`` (the campaign log); errors are kept in ``errors``."""

    def __init__(self, kv: Any, cluster: TortureCluster, note: Callable[[str], None]) -> None:
        self.kv = kv
        self.net = kv.info.network
        if self.net is None:
            raise ValueError("the nemesis needs a service started with transport='network'")
        self.cluster = cluster
        self.note = note
        self.errors: list[str] = []
        self.incarnation: dict[str, int] = {}
        self.ends: dict[str, dict[int, str]] = {}  # server -> {peer index: its current Raft end}
        self.active: dict[int, tuple[str, Any]] = {}  # event id -> how to heal it
        #: faults carried out, by kind (an event skipped or failed is not counted)
        self.done: dict[str, int] = {}
        #: the worker nodes this nemesis killed (their replicas are gone for good)
        self.lost_nodes: set[str] = set()

    def _get(self, ref: Any) -> Any:
        return ray.get(ref, timeout=CALL_S)

    def _replica(self, gid: int, i: int) -> tuple[str, Any, list[str]]:
        g = self.kv.info.ctrler if gid == 0 else self.kv.info.group(gid)
        if g is None:
            raise LookupError(f"group {gid} is not in the service")
        return g.names[i], g.replicas[i], list(g.names)

    def _node_of(self, gid: int, i: int) -> str | None:
        """The node replica ``i`` of group ``gid`` was placed on (None if the layout does not say)."""
        g = self.kv.info.ctrler if gid == 0 else self.kv.info.group(gid)
        nodes = getattr(g, "nodes", None) or ()
        return str(nodes[i]) if i < len(nodes) and nodes[i] is not None else None

    def _ends(self, name: str, names: list[str]) -> dict[int, str]:
        if name not in self.ends:  # as the group was started: "{server}->{peer}"
            self.ends[name] = {j: f"{name}->{peer}" for j, peer in enumerate(names) if peer != name}
        return self.ends[name]

    def _inc(self, name: str) -> int:
        if name not in self.incarnation:
            self.incarnation.update(self._get(self.net.stats.remote())["servers"])
        return self.incarnation[name]

    def _leader(self, gid: int) -> int | None:
        g = self.kv.info.ctrler if gid == 0 else self.kv.info.group(gid)
        best: tuple[int, int] | None = None
        for i, r in enumerate(g.replicas if g is not None else ()):
            with suppress(RayError, GetTimeoutError):
                term, leading = ray.get(r.get_state.remote(), timeout=5)
                if leading and (best is None or term > best[0]):
                    best = (term, i)
        return None if best is None else best[1]

    def apply(self, ev: Event) -> None:
        """Carry out one event; an error is noted and kept, never raised."""
        try:
            if self._apply(ev) is not False and ev.kind != "heal":
                self.done[ev.kind] = self.done.get(ev.kind, 0) + 1
        except Exception as exc:
            msg = f"{ev.describe()}: {type(exc).__name__}: {str(exc)[:300]}"
            self.errors.append(msg)
            self.note(f"ERROR {msg}")

    def _apply(self, ev: Event) -> bool | None:
        """Carry out ``ev``; False when it was skipped."""
        kind = ev.kind
        if kind == "heal":
            self._heal(ev.of)  # type: ignore[arg-type]
        elif kind == "unreliable":
            self._get(self.net.set_reliable.remote(False))
            self.active[ev.id] = ("unreliable", None)
        elif kind in ("isolate", "isolate-leader", "crash"):
            i = ev.replica if kind != "isolate-leader" else self._leader(ev.gid)  # type: ignore[arg-type]
            if i is None:
                self.note(f"{ev.describe()}: no leader at this moment; nothing isolated")
                return False
            name, handle, names = self._replica(ev.gid, i)  # type: ignore[arg-type]
            if self._node_of(ev.gid, i) in self.lost_nodes:  # type: ignore[arg-type]
                self.note(f"{ev.describe()}: {name} was on a node lost earlier; skipped")
                return False
            ends = self._ends(name, names)
            inc = self._inc(name)
            self._get(self.net.enable_many.remote(list(ends.values()), False))
            self._get(self.net.delete_server.remote(name))
            if kind == "crash":
                self._get(handle.crash.remote())
            self.active[ev.id] = ("restart" if kind == "crash" else "reconnect", (name, handle, names, inc))
            self.note(f"{ev.describe()}: {name} {'crashed' if kind == 'crash' else 'cut off'}")
            return None
        elif kind == "join":
            self.kv.add_group(ev.gid, timeout=30)
        elif kind == "leave":
            self.kv.remove_group(ev.gid, timeout=30)
        elif kind == "move":
            num = self.kv.move(ev.shard, ev.gid, timeout=10)
            self.note(f"{ev.describe()}: configuration {num}")
            return None
        elif kind == "node-loss":
            return self._lose_node(ev)
        else:
            raise ValueError(f"unknown event kind {kind!r}")
        self.note(f"{ev.describe()}: done")
        return None

    def _lose_node(self, ev: Event) -> bool:
        if not self.cluster.owned or ev.node is None or ev.node >= len(self.cluster.workers):
            self.note(f"{ev.describe()}: no such worker node of a cluster started here; skipped")
            return False
        from actors.placement import nodes_of

        (net_node,) = nodes_of([self.net])
        if self.cluster.workers[ev.node].node_id == net_node:
            self.note(f"{ev.describe()}: the network actor runs there; skipped")
            return False
        node_id = self.cluster.kill_worker(ev.node)
        self.lost_nodes.add(node_id)
        self.note(f"{ev.describe()}: node {node_id[:12]} killed")
        return True

    def _heal(self, of: int) -> None:
        what, data = self.active.pop(of, ("", None))
        if what == "unreliable":
            self._get(self.net.set_reliable.remote(True))
            self.note(f"heal #{of}: network reliable again")
        elif what == "reconnect":
            name, handle, names, inc = data
            self._get(self.net.add_server.remote(name, handle, inc))
            self._get(self.net.enable_many.remote(list(self._ends(name, names).values()), True))
            self.note(f"heal #{of}: {name} reconnected")
        elif what == "restart":
            name, handle, names, inc = data
            inc += 1
            ends = {j: f"{name}.{inc}->{peer}" for j, peer in enumerate(names) if peer != name}
            self._get([self.net.make_end.remote(e, names[j]) for j, e in ends.items()])
            self._get(self.net.enable_many.remote(list(ends.values()), True))
            self.ends[name] = ends
            self.incarnation[name] = inc
            self._get(handle.start.remote(inc, ("network", self.net, ends)))
            self._get(self.net.add_server.remote(name, handle, inc))
            self.note(f"heal #{of}: {name} restarted from its storage (incarnation {inc})")

    def heal_all(self) -> None:
        for of in list(self.active):
            try:
                self._heal(of)
            except Exception as exc:
                self.errors.append(f"heal #{of}: {type(exc).__name__}: {exc}")
                self.note(f"ERROR heal #{of}: {exc}")


# ------------------------------------------------------------------------------------------------
# One campaign
# ------------------------------------------------------------------------------------------------


def run_campaign(schedule: Schedule, cluster: TortureCluster, directory: Path, *, index: int = 1,
                 total: int = 1, op_timeout: float = OP_TIMEOUT_S, check_timeout: float = CHECK_TIMEOUT_S,
                 keep_all: bool = False) -> CampaignResult:
    """Run one campaign of ``schedule`` (see the module docstring); its files go to ``directory``."""
    from raykv.sharded import start

    directory.mkdir(parents=True, exist_ok=True)
    schedule.save(directory / "schedule.json")
    res = CampaignResult(index, total, schedule.seed)
    t_start = time.monotonic()
    logfile = (directory / "campaign.log").open("w")
    handler = logging.FileHandler(directory / "raykv.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.getLogger("raykv").addHandler(handler)
    t0 = time.monotonic()

    def note(text: str) -> None:
        logfile.write(f"{time.monotonic() - t0:8.3f}  {text}\n")
        logfile.flush()

    setup = schedule.setup
    note(f"schedule seed {schedule.seed}: {schedule.seconds:g} s, faults {', '.join(schedule.faults)}, "
         f"{len(schedule.events)} events; setup {asdict(setup)}")
    with suppress(Exception):  # where the actors' own logs are (no public API names it)
        note(f"Ray session logs: {ray._private.worker._global_node.get_logs_dir_path()}")
    kv = None
    clients: Clients | None = None
    rec = Recorder()
    try:
        kv = start(f"torture-{schedule.seed}-{index}", groups=setup.groups, replicas=setup.replicas,
                   nshards=setup.nshards, mapping="hash", storage="durable", transport="network")
        note(f"service {kv.name} started in {time.monotonic() - t0:.1f} s")
        def fault(text: str) -> None:  # the nemesis's actions also go to the decision log (raykv viz)
            note(text)
            trace.note("fault", text)

        nem = Nemesis(kv, cluster, fault)
        keys = key_for_shards(setup.nshards, setup.keys_per_shard)
        clients = Clients(kv, keys, rec, schedule.seed, setup.clients, op_timeout)
        t0 = time.monotonic()
        clients.start()
        note("clients started; the schedule's times count from here")
        for ev in schedule.events:
            time.sleep(max(0.0, t0 + ev.at - time.monotonic()))  # the schedule's clock, not a sync
            nem.apply(ev)
        time.sleep(max(0.0, t0 + schedule.seconds - time.monotonic()))
        nem.heal_all()
        res.nemesis_errors, res.faults = list(nem.errors), dict(nem.done)
        if not clients.stop():
            res.failure = "a client did not finish its last operation in time"
        note(f"clients stopped; errors by type: {clients.errors or 'none'}")
        try:
            kv.wait_settled(timeout=RECOVER_TIMEOUT_S)
        except TimeoutError as exc:
            res.failure = res.failure or f"the service did not settle within {RECOVER_TIMEOUT_S:g} s"
            note(f"not settled: {exc}")
        try:
            note(f"status after the campaign:\n{kv.status().format()}")
        except Exception as exc:
            note(f"status could not be read: {type(exc).__name__}: {exc}")
        finals: dict[str, str] = {}
        ck = kv.clerk()
        for key in keys:
            try:
                with rec.operation("final", ("get", key)) as op:
                    op.output = finals[key] = ck.get(key, timeout=RECOVER_TIMEOUT_S)
            except Exception as exc:
                res.failure = res.failure or f"the final read of {key!r} failed: {type(exc).__name__}: {exc}"
                break
        history = rec.history()
        clients_ops = [op for op in history if op.client != "final"]
        res.ops = len(clients_ops)
        res.unknown = sum(op.output is UNKNOWN for op in clients_ops)
        write_kv_history(history, directory / "history.kv")
        t_check = time.monotonic()
        result = check(history, KVModel(), timeout=check_timeout)
        res.verdict = str(result.verdict)
        if result.verdict is Verdict.NOT_LINEARIZABLE:
            everything = check(history, KVModel(), timeout=check_timeout, all_partitions=True)
            res.violations = max(1, sum(p.verdict is Verdict.NOT_LINEARIZABLE
                                        for p in everything.partitions))
        if result.verdict is not Verdict.LINEARIZABLE:
            write_html(result, directory / "report.html")
        note(f"{len(history)} operations (final reads included): {result.verdict} in "
             f"{time.monotonic() - t_check:.2f} s")
        lw = lost_writes(history, finals)
        res.lost, res.duplicated, res.checked_writes = lw.lost, lw.duplicated, lw.checked
        note(f"lost writes: {len(lw.lost)} of {lw.checked} that had to be visible; duplicated: "
             f"{len(lw.duplicated)}")
        for line in lw.lost + lw.duplicated:
            note(f"  {line}")
    except Exception as exc:
        res.failure = res.failure or f"{type(exc).__name__}: {exc}"
        note(f"ERROR {res.failure}")
        log.exception("campaign %d (seed %d) failed", index, schedule.seed)
    finally:
        if clients is not None:
            clients.done.set()
        if kv is not None:
            root = kv.info.data_root
            with suppress(Exception):
                kv.stop()
            if root is not None and cluster.owned:  # a killed node's directory (same machine)
                shutil.rmtree(root, ignore_errors=True)
        logging.getLogger("raykv").removeHandler(handler)
        handler.close()
        res.took_s = time.monotonic() - t_start
        note(res.line())
        logfile.close()
    (directory / "verdict.json").write_text(json.dumps(asdict(res), indent=1) + "\n")
    if res.ok and not res.nemesis_errors and not keep_all:
        shutil.rmtree(directory, ignore_errors=True)
    else:
        res.directory = str(directory)
    return res


# ------------------------------------------------------------------------------------------------
# Many campaigns
# ------------------------------------------------------------------------------------------------


def campaign_seeds(seed: int, campaigns: int) -> list[int]:
    """The seed of each campaign of a run with ``seed`` (a pure function of both)."""
    rng = random.Random(seed)
    return [rng.randrange(2**31) for _ in range(campaigns)]


def run_torture(schedules: list[Schedule], out: Path, *, address: str | None = None,
                op_timeout: float = OP_TIMEOUT_S, check_timeout: float = CHECK_TIMEOUT_S,
                keep_all: bool = False, progress: bool = True,
                report: Callable[[str], None] = print) -> list[CampaignResult]:
    """Run the campaigns ``schedules`` one after the other on one cluster (see the module docstring;
    the cluster's shape is the first schedule's ``setup.nodes``), report one line per campaign, and
    return the results. A failed campaign's line is followed by the command that replays it."""
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    cluster = TortureCluster(schedules[0].setup.nodes if address is None else 0, address)
    results: list[CampaignResult] = []
    bar = tqdm(total=len(schedules), unit="campaign", desc="torture", disable=not progress)
    try:
        for i, sched in enumerate(schedules, 1):
            if cluster.restore():
                report(f"(worker nodes lost in campaign {i - 1} were replaced)")
            d = out / f"campaign-{i:03d}-seed-{sched.seed}"
            res = run_campaign(sched, cluster, d, index=i, total=len(schedules), op_timeout=op_timeout,
                               check_timeout=check_timeout, keep_all=keep_all)
            results.append(res)
            write = bar.write if progress else report
            write(res.line())
            if res.directory is not None:
                write(f"  kept {res.directory}/ (schedule.json, history.kv, campaign.log, raykv.log"
                      f"{', report.html' if res.verdict != str(Verdict.LINEARIZABLE) else ''})")
            if not res.ok:
                write(f"  replay: raykv torture --replay {res.directory}/schedule.json")
            bar.update(1)
    finally:
        bar.close()
        cluster.shutdown()
        (out / "summary.json").write_text(json.dumps([asdict(r) for r in results], indent=1) + "\n")
    return results
