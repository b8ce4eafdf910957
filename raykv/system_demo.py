"""The whole-system demo behind ``raykv demo``: a sharded KV service on a multi-node Ray cluster, with
clients, a Join, a Leave and a lost node, checked for linearizability at the end.

:func:`run_system_demo` runs the scenario and returns a :class:`SystemDemoReport` (it never raises for
a failed step: the report says which step failed and why), so a notebook can call it as well as the
command line::

    from raykv import run_system_demo
    report = run_system_demo(seed=7)
    print(report.format())

The scenario:

1. **a cluster**: a ``ray.cluster_utils.Cluster`` started here (a head node without CPUs, where the
   service's registry runs, and ``nodes`` worker nodes of one CPU each; Ray declares a silent node dead
   after about 2 s), or the existing cluster at ``address`` (or the Ray runtime already initialised in
   this process);
2. **a service**: :func:`raykv.start_sharded` with a controller and ``groups`` groups of ``replicas``
   replicas (stream transport, durable storage), each group's replicas spread over distinct nodes;
3. **clients**: ``clients`` threads, each with its own clerk, get, put and append on two keys per
   shard, every operation recorded (:class:`linearizability.Recorder`), every value a unique token;
4. **a Join**: a new group is started and joins; shards move to it;
5. **a Leave**: group 1 leaves; its shards move away and it stops;
6. **a lost node**: on a cluster started here, the worker node holding the most replicas is killed
   (each group loses at most one replica, since each group's replicas are on distinct nodes); every
   group's leader replaces its lost replica on a free live node by itself (actors/replacer.py) and the
   demo waits until every group is back at full strength. On an existing cluster (``address``, or a
   runtime already running here) nodes belong to someone else: the demo kills *the service's own
   replicas* on the node holding the most of them instead (one per group at most, so every group keeps
   its majority), which Ray reports dead just the same, and the groups replace them the same way
   (a replacement needs a live node free of the group's other replicas: on a cluster with fewer nodes
   than ``replicas`` the group keeps serving on its majority and the demo says so);
7. **the verdict**: the clients stop, every key is read once more, and the whole history is checked
   (:func:`linearizability.check`, a definite verdict required) and every acknowledged write looked up
   (:func:`raykv.torture_check.lost_writes`); the history (``history.kv``, re-checkable with
   ``raykv check --format kv``) and the checker's HTML report (``report.html``) are written to ``out``;
8. **the picture**: on a cluster started here every process logs its Raft decisions to
   ``out/decisions.log`` (``RAYKV_LOG``: all topics unless the variable names some), and the run's
   ``raykv viz`` page is written to ``out/viz.html`` (:mod:`raykv.demo_picture`; an existing cluster's
   workers do not have the variables, so there is no page and the report says why).

Between the steps the clients run for ``phase_s`` seconds. Every ``poll_s`` seconds a background thread
reads the service's status and hands a :class:`~raykv.demo_table.Snapshot` (one row per group: leader,
term, shards, operations per second, moves in flight) to ``on_snapshot``; every step is a
:class:`~raykv.demo.DemoEvent` handed to ``on_event``.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

from raykv.demo import DemoEvent, DemoFailure, new_seed
from raykv.demo_picture import DemoPicture
from raykv.demo_table import Snapshot, build_snapshot, node_label, shard_rates
from raykv.system_demo_report import SystemDemoReport, gname, shard_list, system_demo_header

__all__ = ["SystemDemoReport", "run_system_demo", "system_demo_header"]

#: Ray declares a silent node dead after about 2 s (4 missed health checks, 500 ms apart)
FAST_NODE_DEATH: dict[str, Any] = {"health_check_initial_delay_ms": 1000, "health_check_period_ms": 500,
                                   "health_check_failure_threshold": 4}
#: what every node of a cluster started here gets (a small object store, no dashboard)
NODE_ARGS: dict[str, Any] = {"object_store_memory": 80 * 1024 * 1024, "include_dashboard": False}
#: deadline of one client operation (one that times out is recorded with an unknown outcome)
OP_TIMEOUT_S = 20.0
#: the longest the demo waits for shards to move, or for the groups to be back at full strength
SETTLE_S = 60.0
#: budget of the linearizability check
CHECK_S = 60.0
#: keys per shard the clients use
KEYS_PER_SHARD = 2


def run_system_demo(
    *,
    nodes: int = 4,
    groups: int = 3,
    replicas: int = 3,
    nshards: int = 10,
    clients: int = 4,
    phase_s: float = 4.0,
    seed: int | None = None,
    address: str | None = None,
    namespace: str | None = None,
    out: str | Path | None = None,
    poll_s: float = 1.0,
    on_event: Callable[[DemoEvent], None] | None = None,
    on_snapshot: Callable[[Snapshot], None] | None = None,
    log_to_driver: bool = False,
) -> SystemDemoReport:
    """Run the scenario of the module docstring and return what happened.

    Ray: with neither ``address`` nor ``$RAY_ADDRESS`` and no runtime in this process, a cluster of a
    head node and ``nodes`` worker nodes is started here and shut down at the end; otherwise the
    existing cluster is used (and left running) and no node is killed (see the module docstring).
    ``out``: the directory for ``history.kv``, ``report.html``, ``decisions.log`` and ``viz.html`` (default
    ``raykv-demo/DATE-TIME`` under the current directory). ``seed`` fixes the clients' choices.

    Raises ``ValueError`` for arguments out of range; every other failure is in
    :attr:`SystemDemoReport.error`.
    """
    for what, value, lo in (("nodes", nodes, replicas + 1), ("groups", groups, 2), ("replicas", replicas, 3),
                            ("nshards", nshards, groups + 1), ("clients", clients, 1)):
        if not isinstance(value, int) or value < lo:
            why = {"nodes": "a lost node's replicas need a free node to go to",
                   "groups": "one group leaves and its shards need somewhere to go",
                   "replicas": "a group must keep a majority when it loses a replica",
                   "nshards": "every group, the joining one too, should serve a shard",
                   "clients": "someone has to write"}[what]
            raise ValueError(f"{what} must be an integer of at least {lo} (got {value!r}): {why}")
    if phase_s < 0 or poll_s <= 0:
        raise ValueError(f"phase_s must be >= 0 and poll_s > 0 (got {phase_s}, {poll_s})")
    seed = seed if seed is not None else new_seed()
    report = SystemDemoReport(seed=seed, groups=groups, replicas=replicas, clients=clients)
    out_dir = Path(out) if out is not None else Path("raykv-demo") / time.strftime("%Y%m%d-%H%M%S")
    demo = _SystemDemo(report, nodes, nshards, phase_s, poll_s, out_dir, on_event, on_snapshot)
    demo.run(address, namespace, log_to_driver)
    return report


# ------------------------------------------------------------------------------------------------
# The clients and the status poller
# ------------------------------------------------------------------------------------------------


class _Clients:
    """``n`` threads, each with its own clerk, doing random gets, puts and appends until stopped;
    every operation recorded; ``per_shard[s]``: operations completed on shard ``s``."""

    def __init__(self, kv: Any, keys: list[str], nshards: int, rec: Any, seed: int, n: int) -> None:
        from shardctrler.config import key2shard

        self.rec, self.keys = rec, keys
        self.shard_of = {k: key2shard(k, nshards) for k in keys}
        self.per_shard = [0] * nshards
        self.failed = 0
        self.done = threading.Event()
        self._lock = threading.Lock()
        rng = random.Random(seed)
        self.threads = [threading.Thread(target=self._run, args=(i, kv.clerk(), rng.randrange(2**31)),
                                         name=f"demo-client-{i}", daemon=True) for i in range(n)]
        for t in self.threads:
            t.start()

    def _run(self, i: int, ck: Any, seed: int) -> None:
        from raykv.torture_check import token

        rng = random.Random(seed)
        n = 0
        while not self.done.is_set():
            key = rng.choice(self.keys)
            r, value = rng.random(), token(i, n)
            n += 1
            try:
                if r < 0.4:
                    with self.rec.operation(i, ("get", key)) as op:
                        op.output = ck.get(key, timeout=OP_TIMEOUT_S)
                elif r < 0.6:
                    with self.rec.operation(i, ("put", key, value)):
                        ck.put(key, value, timeout=OP_TIMEOUT_S)
                else:
                    with self.rec.operation(i, ("append", key, value)):
                        ck.append(key, value, timeout=OP_TIMEOUT_S)
            except Exception:  # recorded with an unknown outcome by the recorder
                with self._lock:
                    self.failed += 1
                continue
            with self._lock:
                self.per_shard[self.shard_of[key]] += 1

    def counts(self) -> list[int]:
        with self._lock:
            return list(self.per_shard)

    def stop(self) -> bool:
        """Stop and join the threads; False if one did not finish its last operation in time."""
        self.done.set()
        deadline = time.monotonic() + OP_TIMEOUT_S + 10
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self.threads)


class _Poller(threading.Thread):
    """Reads the service's status every ``every`` seconds (through a handle of its own) and makes a
    :class:`Snapshot` of it; ``phase`` and ``clients`` are set by the scenario as it goes."""

    def __init__(self, demo: _SystemDemo, kv: Any, every: float) -> None:
        super().__init__(name="demo-status", daemon=True)
        self.demo, self.kv, self.every = demo, kv, every
        self.stopped = threading.Event()
        self.clients: _Clients | None = None
        self.status: Any = None
        self._prev: tuple[float, list[int]] | None = None

    def run(self) -> None:
        while not self.stopped.is_set():
            t = time.monotonic()
            with suppress(Exception):  # a status that cannot be read now is skipped, not fatal
                self.poll()
            self.stopped.wait(max(0.05, self.every - (time.monotonic() - t)))

    def poll(self) -> Snapshot:
        st = self.kv.status(timeout=5)
        self.status = st
        rates = None
        total = 0
        if self.clients is not None:
            now, counts = time.monotonic(), self.clients.counts()
            total = sum(counts)
            if self._prev is not None:
                rates = shard_rates(self._prev[1], counts, now - self._prev[0])
            self._prev = (now, counts)
        d = self.demo
        snap = build_snapshot(d.elapsed(), d.phase, st, d.labels, rates, total)
        if rates is not None:
            d.report.throughput.append((snap.elapsed, snap.ops_per_s))
        d.report.last_snapshot = snap
        if d.on_snapshot is not None:
            d.on_snapshot(snap)
        return snap


# ------------------------------------------------------------------------------------------------
# The scenario
# ------------------------------------------------------------------------------------------------


class _SystemDemo:
    def __init__(self, report: SystemDemoReport, nodes: int, nshards: int, phase_s: float, poll_s: float,
                 out: Path, on_event: Callable[[DemoEvent], None] | None,
                 on_snapshot: Callable[[Snapshot], None] | None) -> None:
        self.report, self.nodes, self.nshards = report, nodes, nshards
        self.phase_s, self.poll_s, self.out = phase_s, poll_s, out
        self.on_event, self.on_snapshot = on_event, on_snapshot
        self.t0 = time.monotonic()
        self.step = "starting"
        self.phase = "starting"
        self.cluster: Any = None  # a ray.cluster_utils.Cluster started here
        self.workers: list[Any] = []
        self.labels: dict[str, str] = {}
        self.kv: Any = None
        self.poller: _Poller | None = None
        self.clients: _Clients | None = None
        self.rec: Any = None
        self.picture = DemoPicture(out)

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def event(self, text: str) -> None:
        ev = DemoEvent(self.elapsed(), text)
        self.report.events.append(ev)
        if self.on_event is not None:
            self.on_event(ev)

    def begin(self, step: str, phase: str | None = None) -> None:
        self.step = step
        self.phase = phase or step

    # ---- the run ------------------------------------------------------------------------------

    def run(self, address: str | None, namespace: str | None, log_to_driver: bool) -> None:
        r = self.report
        shutdown_ray = False
        try:
            shutdown_ray = self.start_ray(address, namespace, log_to_driver)
            self.scenario()
        except (DemoFailure, AssertionError) as e:
            r.error = f"{self.step}: {e}"
        except Exception as e:  # Ray errors, a service that cannot start, a call past its deadline
            r.error = f"{self.step}: {type(e).__name__}: {e}"
        finally:
            if r.error is not None:
                self.event(f"FAILED while {self.step}")
            self.teardown(shutdown_ray)
            self.draw()
            r.elapsed = self.elapsed()

    def draw(self) -> None:
        """The run's picture (:mod:`raykv.demo_picture`), after Ray has stopped."""
        r = self.report
        page = self.picture.draw(f"raykv demo, seed {r.seed}")
        r.decision_log = str(self.picture.log) if page is not None else None
        r.viz_html = str(page) if page is not None else None
        r.viz_note = self.picture.why_not
        if page is not None:
            self.event(f"the run's picture: {page}")

    def start_ray(self, address: str | None, namespace: str | None, log_to_driver: bool) -> bool:
        """Start or join Ray; returns whether this demo must shut it down at the end."""
        import ray

        r = self.report
        target = address or os.environ.get("RAY_ADDRESS")
        if ray.is_initialized():
            self.begin("attaching to Ray")
            r.mode, r.cluster = "existing", "the Ray runtime already running in this process"
            self.picture.not_recorded()
            owned = False
        elif target is None or target == "local":
            from ray.cluster_utils import Cluster

            self.begin(f"starting a Ray cluster of a head node and {self.nodes} worker nodes", "starting Ray")
            self.event(f"starting a Ray cluster: a head node (the service's registry) and {self.nodes} "
                       "worker nodes of 1 CPU")
            with self.picture.inherit():  # every node's raylet, and so every worker, logs its decisions
                self.cluster = Cluster(initialize_head=True, head_node_args={
                    "num_cpus": 0, "_system_config": FAST_NODE_DEATH, **NODE_ARGS})
                self.workers = [self.cluster.add_node(num_cpus=1, **NODE_ARGS) for _ in range(self.nodes)]
            self.cluster.wait_for_nodes(timeout=120)
            ray.init(address=self.cluster.address, namespace=namespace or "raykv-demo",
                     logging_level="WARNING", log_to_driver=log_to_driver)
            r.mode = "cluster"
            r.cluster = f"a Ray cluster started here: a head node and {self.nodes} worker nodes"
            self.labels = {self.cluster.head_node.node_id: "head"}
            self.labels |= {w.node_id: f"n{i}" for i, w in enumerate(self.workers, 1)}
            owned = True
        else:
            from raykv.cluster import init_ray

            self.begin(f"connecting to Ray at {target}", "connecting to Ray")
            self.picture.not_recorded()
            r.mode, r.cluster = "existing", init_ray(address, namespace or "raykv-demo",
                                                     log_to_driver=log_to_driver).describe()
            owned = True
        if not self.labels:  # an existing cluster: n1, n2, ... in Ray's order of its alive nodes
            alive = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
            self.labels = {node: f"n{i}" for i, node in enumerate(alive, 1)}
        r.ray_start_s = self.elapsed()
        self.event(f"Ray ready: {r.cluster}")
        return owned

    def scenario(self) -> None:
        import raykv
        from linearizability import Recorder
        from raykv.torture_check import key_for_shards

        r = self.report
        self.begin("starting the service")
        t = time.monotonic()
        name = f"demo-{r.seed % 10**6:06d}-{os.getpid() % 10**4}"
        self.kv = kv = raykv.start_sharded(name, groups=r.groups, replicas=r.replicas, nshards=self.nshards,
                                           transport="stream", storage="durable")
        r.service, r.service_start_s = name, time.monotonic() - t
        info = kv.info
        where = "; ".join(f"{gname(g.gid)} on {', '.join(node_label(n, self.labels) for n in g.nodes)}"
                          for g in (info.ctrler, *info.groups))
        self.event(f"service {name!r} started in {r.service_start_s:.1f} s: {where}")
        self.poller = _Poller(self, raykv.attach_sharded(name), self.poll_s)
        self.poller.start()

        self.begin("starting the clients", "clients running")
        self.rec = Recorder()
        keys = key_for_shards(self.nshards, KEYS_PER_SHARD)
        self.clients = _Clients(kv, keys, self.nshards, self.rec, r.seed, r.clients)
        self.poller.clients = self.clients
        self.event(f"{r.clients} clients writing and reading {len(keys)} keys ({KEYS_PER_SHARD} per shard)")
        self.run_clients(self.phase_s)

        self.begin("joining a new group", "Join")
        before = kv.config()
        gid = kv.add_group()
        r.joined = gid
        g = kv.info.group(gid)
        self.event(f"group {gid} started on {', '.join(node_label(n, self.labels) for n in g.nodes)} and "
                   "joined: shards move to it")
        cfg = kv.wait_settled(timeout=SETTLE_S)
        r.moved_in = tuple(s for s, owner in enumerate(cfg.shards) if owner == gid)
        self.event(f"configuration {cfg.num}: group {gid} serves shards {shard_list(r.moved_in)} "
                   f"(moved from groups {sorted({before.shards[s] for s in r.moved_in})})")
        self.begin("clients running after the Join", "after the Join")
        self.run_clients(self.phase_s)

        self.begin("making group 1 leave", "Leave")
        before = kv.config()
        r.moved_out = tuple(s for s, owner in enumerate(before.shards) if owner == 1)
        self.event(f"group 1 leaves: its shards {shard_list(r.moved_out)} move to the other groups")
        kv.remove_group(1, timeout=SETTLE_S)
        cfg = kv.wait_settled(timeout=SETTLE_S)
        r.left = 1
        to = sorted({cfg.shards[s] for s in r.moved_out})
        self.event(f"configuration {cfg.num}: group 1 handed its shards to groups {to} and stopped")
        self.begin("clients running after the Leave", "after the Leave")
        self.run_clients(self.phase_s)

        self.lose_node()
        self.begin("clients running after the replacements", "after the replacements")
        self.run_clients(self.phase_s)

        self.verdict()

    def run_clients(self, seconds: float) -> None:
        """Let the clients run ``seconds`` seconds (the length of a phase, not a synchronisation), and
        at least until they completed a few more operations (the service serves)."""
        assert self.clients is not None
        start = sum(self.clients.counts())
        deadline = time.monotonic() + seconds
        give_up = deadline + OP_TIMEOUT_S
        while time.monotonic() < deadline or sum(self.clients.counts()) < start + 5:
            if time.monotonic() > give_up:
                raise DemoFailure(f"the clients completed {sum(self.clients.counts()) - start} operations in "
                                  f"{seconds + OP_TIMEOUT_S:.0f} s")
            time.sleep(0.1)

    # ---- the lost node ------------------------------------------------------------------------

    def lose_node(self) -> None:
        import ray

        from actors.placement import BUNDLE_CPU, alive_nodes

        r, kv = self.report, self.kv
        kv._refresh()
        groups = (kv.info.ctrler, *kv.info.groups)
        held: dict[str, list[tuple[int, int]]] = {}
        for g in groups:
            for slot, node in enumerate(g.nodes):
                if node is not None:
                    held.setdefault(node, []).append((g.gid, slot))
        candidates = [w.node_id for w in self.workers] if self.cluster is not None else list(held)
        victim = max(candidates, key=lambda n: (len({gid for gid, _ in held.get(n, [])}),
                                                -list(self.labels).index(n) if n in self.labels else 0))
        one_per_group: dict[int, int] = {}
        for gid, slot in held.get(victim, []):
            one_per_group.setdefault(gid, slot)
        r.lost_node, r.lost_node_id = node_label(victim, self.labels), victim
        r.lost_replicas = sorted(one_per_group.items())
        hit = ", ".join(f"{gname(gid)} slot {slot}" for gid, slot in r.lost_replicas)
        t_loss = time.monotonic()
        if self.cluster is not None:
            self.begin(f"killing node {r.lost_node}", "node lost")
            worker = next(w for w in self.workers if w.node_id == victim)
            self.cluster.remove_node(worker, allow_graceful=False)
            r.node_killed = True
            self.event(f"node {r.lost_node} killed, with its replicas: {hit}; Ray will declare it dead in "
                       "about 2 s, then each group's leader replaces its lost replica")
        else:
            self.begin(f"killing the service's replicas on node {r.lost_node}", "replicas lost")
            for gid, slot in r.lost_replicas:
                g = kv.info.ctrler if gid == 0 else kv.info.group(gid)
                with suppress(Exception):
                    ray.kill(g.replicas[slot], no_restart=True)
            self.event(f"killed the service's replicas on node {r.lost_node} (an existing cluster: the node "
                       f"itself is left alone): {hit}; each group's leader replaces its lost replica")
        self.begin("waiting for the lost replicas to be replaced", "replacing")
        # the nodes a replacement may go to (as actors/replacer.py picks them: alive, with CPUs)
        live = set(alive_nodes(BUNDLE_CPU)) - ({victim} if r.node_killed else set())
        lost_gids = {gid for gid, _ in r.lost_replicas}
        others = {gid: {x for i, x in enumerate(self._group(gid).nodes) if i != slot}
                  for gid, slot in r.lost_replicas}  # where the group's other replicas run
        free = {gid: [n for n in live if n not in others[gid]] for gid in lost_gids}
        stuck = sorted(gid for gid, nodes in free.items() if not nodes)
        deadline = time.monotonic() + SETTLE_S
        while True:
            st = kv.status(timeout=5)
            for g in (st.ctrler, *st.groups):
                if g.gid not in lost_gids or g.gid in r.replaced:
                    continue
                done = [x for x in g.replacements if x.outcome == "done" and x.old_node == victim]
                if done and g.full_strength and all(x.outcome != "in progress" for x in g.replacements) \
                        and set(g.nodes) <= live:
                    r.replaced[g.gid] = time.monotonic() - t_loss
                    x, new = done[-1], node_label(done[-1].new_node, self.labels)
                    r.replaced_on[g.gid] = (r.lost_node, new)
                    self.event(f"{gname(g.gid)} back at {r.replicas} of {r.replicas}: P{x.old_peer} "
                               f"replaced by P{x.new_peer} on node {new}, {r.replaced[g.gid]:.1f} s after "
                               "the loss")
            waiting = lost_gids - set(r.replaced)
            if not waiting:
                break
            if waiting <= set(stuck):
                names = ", ".join(gname(g) for g in sorted(waiting))
                r.not_replaced = (f"{names}: no live node is free of the group's other replicas (the cluster "
                                  "has too few nodes); serving on a majority")
                self.event(f"not replaced: {r.not_replaced}")
                break
            if time.monotonic() > deadline:
                raise DemoFailure(f"{', '.join(gname(g) for g in sorted(waiting))} not back at full "
                                  f"strength {SETTLE_S:.0f} s after the loss")
            time.sleep(0.2)

    def _group(self, gid: int) -> Any:
        info = self.kv.info
        return info.ctrler if gid == 0 else info.group(gid)

    # ---- the verdict ----------------------------------------------------------------------------

    def verdict(self) -> None:
        from linearizability import UNKNOWN, KVModel, check, write_html
        from raykv.torture_check import lost_writes, write_kv_history

        r = self.report
        assert self.clients is not None
        if self.poller is not None:  # the last table is the one taken while the clients ran
            self.poller.stopped.set()
            self.poller.join(10)
        self.begin("stopping the clients", "checking")
        if not self.clients.stop():
            raise DemoFailure("a client did not finish its last operation in time")
        self.begin("reading every key once more", "checking")
        ck = self.kv.clerk()
        finals: dict[str, str] = {}
        for key in self.clients.keys:
            with self.rec.operation("final", ("get", key)) as op:
                op.output = finals[key] = ck.get(key, timeout=OP_TIMEOUT_S)
        history = self.rec.history()
        ops = [op for op in history if op.client != "final"]
        r.ops, r.unknown = len(ops), sum(op.output is UNKNOWN for op in ops)
        self.begin("checking the history", "checking")
        self.event(f"clients stopped after {r.ops:,} operations; every key read once more; checking")
        self.out.mkdir(parents=True, exist_ok=True)
        r.history_path = str(self.out / "history.kv")
        write_kv_history(history, r.history_path)
        t = time.monotonic()
        result = check(history, KVModel(), timeout=CHECK_S)
        r.check_s = time.monotonic() - t
        r.verdict = str(result.verdict)
        r.report_html = str(write_html(result, self.out / "report.html",
                                       title=f"raykv demo, seed {r.seed}: {len(history)} operations"))
        lw = lost_writes(history, finals)
        r.checked_writes, r.lost, r.duplicated = lw.checked, lw.lost, lw.duplicated
        self.event(f"{len(history):,} operations (final reads included): {r.verdict} in {r.check_s:.2f} s; "
                   f"{len(lw.lost)} of {lw.checked} acknowledged writes lost; report {r.report_html}")

    # ---- the end --------------------------------------------------------------------------------

    def teardown(self, shutdown_ray: bool) -> None:
        import shutil

        import ray

        if self.clients is not None:
            self.clients.done.set()
        if self.poller is not None:
            self.poller.stopped.set()
            self.poller.join(10)
        if self.kv is not None:
            root = self.kv.info.data_root
            with suppress(Exception):
                self.kv.stop()
            if root is not None and self.cluster is not None:  # a killed node's part (same disk)
                shutil.rmtree(root, ignore_errors=True)
        if shutdown_ray:
            with suppress(Exception):
                ray.shutdown()
        if self.cluster is not None:
            with suppress(Exception):
                self.cluster.shutdown()
