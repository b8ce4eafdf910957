"""The sharded KV's test harness on Ray, equivalent to the reference's ``shardkv/config.go``, and the
recording and checking its tests share.

``ShardKVHarness(n, unreliable, maxraftstate)`` builds, on one :class:`~actors.network.FaultyNetwork`
(no long delays, no long reordering), a controller service of 3 servers named ``ctlr-`` + 20 random
characters (a :class:`~raykv.testing.ctrler_harness.CtrlerHarness` on this network) and 3 replica
groups, gids 100, 101 and 102, of ``n`` :class:`~shardkv.server.ShardKVReplica` servers each, named
``server-{gid}-{i}``. Every server starts at once and none is joined. It offers the reference's
operations:

- clerks: ``make_client()`` (a :class:`~shardkv.clerk.Clerk` whose ends to any server are made and
  enabled on first use, the reference's ``make_end``), optionally on another controller service;
  ``make_async_client()``;
- membership: ``join(gi)``, ``leave(gi)``, ``joinm(gis)``, ``leavem(gis)`` through the harness's own
  controller clerk; ``start_ctrler_service()`` and ``ctljoin(gi, ctl)`` for a second controller;
- servers: ``shutdown_server(gi, i)`` (disable its outgoing links to its group, delete it from the
  network so calls in flight fail and no reply is delivered, crash it onto a copy of its storage),
  ``start_server(gi, i)`` (new outgoing ends, enabled at once, unlike in kvraft), and the
  ``shutdown_group`` / ``start_group`` forms;
- checks: ``check_logs()`` (Raft state ≤ 8 × maxraftstate, or no snapshot when maxraftstate < 0,
  on every server), ``total_persisted()`` (Raft state + snapshot over every server), ``shard_stats``.

The servers reach the controller and each other through the same network, by name, with ends of
their own (:class:`~shardkv.endpoints.NetworkRouter`).

Every server of every group, and every controller server, reports what it applies to the harness's
one :class:`~actors.ledger.LedgerBook` (a ledger per Raft group, named by its servers' prefix:
``server-101-``, ``ctlr-...-``), with the same checks as the other harnesses (state machine safety
with result digests, in-order apply, election safety, leader completeness, the commit rule,
persistence across restarts; see :mod:`actors.ledger`). A violation fails the next ``join`` /
``leave`` / ``query`` / ``check_logs`` and the teardown.

Planted faults (``faults``, default: those named in ``RAYKV_PLANT``; see :mod:`raykv.testing.faults`),
switched on in every server at every start: the core's (in the controller's servers too), the
controller's (:data:`~raykv.testing.faults.CTRL_FAULTS`, in its controller services), and broken
rules of the sharded KV (:data:`~raykv.testing.faults.SHARDKV_FAULTS`):

- ``skv_no_gc``: a group never asks the previous holder to delete the shards it installed, so moved
  shards are kept forever (and, since the group never settles, it never takes the next configuration);
- ``skv_keep_deleted``: a group obeys a delete (the shard stops counting as leaving) but keeps the
  shard's data in every snapshot after, so the storage of moved-away shards is never reclaimed;
- ``skv_no_dedup_move``: shards move without their dedup tables, so a retried Put or Append that the
  old owner applied is applied again by the new one;
- ``skv_serve_leaving``: a group keeps serving shards that are leaving it, so writes land on a copy
  that has been (or is being) handed over;
- ``skv_serve_arriving``: a group serves a shard as soon as the configuration gives it, before its
  data has arrived (reads see an empty shard; writes are lost when the data is installed over them);
- ``skv_wait_all``: a group serves none of the shards it gains until all of them have arrived
  (challenge 2 asks for each shard to be served as soon as it has arrived).

Every blocking call has a deadline (:data:`CALL_DEADLINE_S`); failures raise ``AssertionError``.
Synchronous; usable from several threads at once. The limits are the Raft harness's
(:mod:`raykv.testing.raft_harness`), imported, not copied.
"""

from __future__ import annotations

import functools
import io
import os
import pickle
import random
import string
import tempfile
import threading
import time
from collections.abc import Iterable
from typing import Any

import ray

from actors.ledger import LedgerBookActor, LedgerReplica
from actors.network import FaultyNetwork
from actors.replica import ReplicaSpec
from linearizability import KVModel, Recorder, Verdict, write_html
from linearizability import check as check_linearizable
from raft.sim.config import FAULTS as CORE_FAULTS
from raykv.testing.ctrler_harness import CtrlerHarness
from raykv.testing.faults import CTRL_FAULTS, SHARDKV_FAULTS, planted
from raykv.testing.raft_harness import CALL_DEADLINE_S as CALL_DEADLINE_S
from raykv.testing.raft_harness import ELECTION_TIMEOUT_S as ELECTION_TIMEOUT_S
from raykv.testing.raft_harness import (
    check_at_teardown,
    get_with_deadline,
    ledger_replica_actor,
)
from raykv.testing.service_harness import SERVICE_REPORT_WINDOW_S, raise_if_violated, verdict_or_raise
from shardctrler.config import NSHARDS
from shardkv.async_clerk import AsyncClerk
from shardkv.clerk import Clerk
from shardkv.endpoints import NetworkRouter
from shardkv.ops import WRONG_GROUP, op_problem
from shardkv.server import ShardKVReplica
from shardkv.statemachine import ARRIVING, LEAVING, SERVING, ShardKVStateMachine

#: how long a test clerk waits for one server before trying the next
CLERK_ATTEMPT_TIMEOUT_S = 1.0
#: deadline of one clerk operation in the tests (the reference retries forever)
OP_TIMEOUT_S = 30.0
#: budget of a linearizability check; "unknown" fails the test
CHECK_TIMEOUT_S = 30.0
#: how long to wait for a client thread to finish
JOIN_DEADLINE_S = 60.0
#: the reference's gids: group index gi has gid 100 + gi
GID_BASE = 100

_get = get_with_deadline

def shardkv_faults(faults: Iterable[str] | None) -> frozenset[str]:
    """The faults to plant: ``faults`` (core, controller or sharded-KV faults), or by default those in
    ``RAYKV_PLANT`` that concern the sharded KV or its controller."""
    return planted(faults, CORE_FAULTS | CTRL_FAULTS.keys() | SHARDKV_FAULTS.keys())


class NoDedupMoveStateMachine(ShardKVStateMachine):
    """Planted fault ``skv_no_dedup_move``: installs a shard's data without its dedup table."""

    def _apply_install(self, num: Any, payload: Any) -> tuple[int, ...]:
        if isinstance(payload, tuple):
            payload = tuple((p[0], p[1], {}) if isinstance(p, tuple) and len(p) == 3 else p for p in payload)
        return super()._apply_install(num, payload)


class KeepDeletedStateMachine(ShardKVStateMachine):
    """Planted fault ``skv_keep_deleted``: deleted shards' data stays in every later snapshot (as a
    second pickle after the real one, which ``restore`` reads back)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.graveyard: dict[tuple[int, int], dict[str, str]] = {}

    def _apply_delete(self, num: Any, shards: Any) -> tuple[int, ...]:
        if isinstance(shards, tuple) and num == self.config.num:
            for s in shards:
                sh = self.shards.get(s)
                if sh is not None and sh.status == LEAVING:
                    self.graveyard[(num, s)] = dict(sh.data)
        return super()._apply_delete(num, shards)

    def snapshot(self) -> bytes:
        return super().snapshot() + pickle.dumps(self.graveyard)

    def restore(self, data: bytes, index: int) -> None:
        super().restore(data, index)  # pickle.loads ignores what follows the first pickle
        f = io.BytesIO(data)
        pickle.load(f)
        self.graveyard = pickle.load(f)


class ServeLeavingStateMachine(ShardKVStateMachine):
    """Planted fault ``skv_serve_leaving``: client operations on a leaving shard are applied."""

    def _apply_op(self, op: Any) -> Any:
        leaving = [sh for sh in self.shards.values() if sh.status == LEAVING]
        for sh in leaving:
            sh.status = SERVING
        try:
            return super()._apply_op(op)
        finally:
            for sh in leaving:
                sh.status = LEAVING

    def serves(self, shard: int) -> bool:
        sh = self.shards.get(shard)
        return super().serves(shard) or (sh is not None and sh.status == LEAVING)


class ServeArrivingStateMachine(ShardKVStateMachine):
    """Planted fault ``skv_serve_arriving``: client operations on an arriving shard are applied (to
    the empty placeholder that the install later replaces)."""

    def _apply_op(self, op: Any) -> Any:
        arriving = [sh for sh in self.shards.values() if sh.status == ARRIVING]
        for sh in arriving:
            sh.status = SERVING
        try:
            return super()._apply_op(op)
        finally:
            for sh in arriving:
                sh.status = ARRIVING

    def serves(self, shard: int) -> bool:
        sh = self.shards.get(shard)
        return super().serves(shard) or (sh is not None and sh.status == ARRIVING)


class WaitAllStateMachine(ShardKVStateMachine):
    """Planted fault ``skv_wait_all``: while any shard is arriving, no client operation is applied."""

    def _waiting(self) -> bool:
        return any(sh.status == ARRIVING for sh in self.shards.values())

    def _apply_op(self, op: Any) -> Any:
        if op_problem(op, self.nshards) is None and self._waiting():
            return WRONG_GROUP
        return super()._apply_op(op)

    def serves(self, shard: int) -> bool:
        return super().serves(shard) and not self._waiting()


#: the planted faults that are state machine classes, in the order they are combined
_SM_FAULTS: dict[str, type[ShardKVStateMachine]] = {
    "skv_no_dedup_move": NoDedupMoveStateMachine,
    "skv_keep_deleted": KeepDeletedStateMachine,
    "skv_serve_leaving": ServeLeavingStateMachine,
    "skv_serve_arriving": ServeArrivingStateMachine,
    "skv_wait_all": WaitAllStateMachine,
}


def shardkv_state_machine(faults: Iterable[str]) -> type[ShardKVStateMachine]:
    """The state machine class carrying the planted faults among ``faults`` (several combine)."""
    chosen = [cls for name, cls in _SM_FAULTS.items() if name in frozenset(faults)]
    if not chosen:
        return ShardKVStateMachine
    if len(chosen) == 1:
        return chosen[0]
    return type("PlantedStateMachine", tuple(reversed(chosen)), {})


class HarnessShardKVReplica(LedgerReplica, ShardKVReplica):
    """The harness's shard group server: a :class:`ShardKVReplica` that reports to the ledger."""


class NoGCShardKVReplica(HarnessShardKVReplica):
    """Planted fault ``skv_no_gc``: never asks a previous holder to delete what was installed."""

    async def _collect(self, inc: int, num: int, peer: int, shards: tuple[int, ...]) -> None:
        return None


def randstring(n: int, rng: random.Random | None = None) -> str:
    """``n`` random letters and digits (the reference's ``randstring``)."""
    r = rng or random
    return "".join(r.choice(string.ascii_letters + string.digits) for _ in range(n))


class _Group:
    """One replica group: its servers' actors, incarnations and current outgoing ends."""

    def __init__(self, gid: int, n: int) -> None:
        self.gid = gid
        self.replicas: list[Any] = []
        self.incarnation = [0] * n
        self.alive = [False] * n
        #: ends[i][j]: the name of server i's current end to server j of the group
        self.ends: list[dict[int, str]] = [{} for _ in range(n)]


class ShardKVHarness:
    """The reference ``make_config(n, unreliable, maxraftstate)`` for the sharded KV (see the module
    docstring). ``ngroups`` groups (3 in every reference test) of ``n`` servers each."""

    def __init__(
        self,
        n: int = 3,
        unreliable: bool = False,
        maxraftstate: int = -1,
        *,
        ngroups: int = 3,
        nshards: int = NSHARDS,
        seed: int | None = None,
        tick_s: float = 0.02,
        faults: Iterable[str] | None = None,
    ) -> None:
        self.faults = shardkv_faults(faults)
        self.n = n
        self.ngroups = ngroups
        self.nshards = nshards
        self.maxraftstate = maxraftstate
        self.seed = seed if seed is not None else random.SystemRandom().randrange(2**31)
        self.rng = random.Random(self.seed)
        self.t0 = time.monotonic()
        self.lock = threading.Lock()
        self.tick_s = tick_s
        self.net = FaultyNetwork.remote(seed=self.rng.randrange(2**31))
        self.ledger = LedgerBookActor.remote()
        self.ctrlers: list[CtrlerHarness] = []
        self.ctrl = self.start_ctrler_service()
        self.mck = self.ctrl.make_client()
        actor_cls = ledger_replica_actor(NoGCShardKVReplica if "skv_no_gc" in self.faults
                                         else HarnessShardKVReplica)
        sm_cls = shardkv_state_machine(self.faults)
        self.groups: list[_Group] = []
        for gi in range(ngroups):
            g = _Group(GID_BASE + gi, n)
            extra = {"gid": g.gid, "ctrlers": self.ctrl.names, "routing": ("network", self.net),
                     "ledger": self.ledger, "ledger_group": f"server-{g.gid}-",
                     "faults": tuple(sorted(self.faults & CORE_FAULTS)),
                     "service_faults": tuple(sorted(self.faults & SHARDKV_FAULTS.keys())),
                     "report_window_s": SERVICE_REPORT_WINDOW_S}
            g.replicas = [
                actor_cls.remote(ReplicaSpec(
                    name=self.server_name(gi, i),
                    peer_id=i,
                    peers=tuple(range(n)),
                    state_machine=functools.partial(sm_cls, g.gid, nshards, "reference", maxraftstate),
                    tick_s=tick_s,
                    seed=self.rng.randrange(2**31),
                    extra=extra,
                ))
                for i in range(n)
            ]
            self.groups.append(g)
        _get([r.ping.remote() for g in self.groups for r in g.replicas])
        for gi in range(ngroups):
            self.start_group(gi)
        _get(self.net.set_reliable.remote(not unreliable))

    def _ctrler_name(self) -> str:
        return "ctlr-" + randstring(20, self.rng)

    def server_name(self, gi: int, i: int) -> str:
        return f"server-{GID_BASE + gi}-{i}"

    def names(self, gi: int) -> list[str]:
        return [self.server_name(gi, i) for i in range(self.n)]

    def gid(self, gi: int) -> int:
        return self.groups[gi].gid

    # ------------------------------------------------------------------------------------------
    # Clerks
    # ------------------------------------------------------------------------------------------

    def make_client(self, ctrl: CtrlerHarness | None = None, **options: Any) -> Clerk:
        """A sync clerk with its own ends (made on first use, enabled), on controller ``ctrl``."""
        options.setdefault("attempt_timeout", CLERK_ATTEMPT_TIMEOUT_S)
        return Clerk(NetworkRouter(self.net), (ctrl or self.ctrl).names, **options)

    def make_async_client(self, ctrl: CtrlerHarness | None = None, **options: Any) -> AsyncClerk:
        options.setdefault("attempt_timeout", CLERK_ATTEMPT_TIMEOUT_S)
        return AsyncClerk(NetworkRouter(self.net), (ctrl or self.ctrl).names, **options)

    # ------------------------------------------------------------------------------------------
    # Membership
    # ------------------------------------------------------------------------------------------

    def join(self, gi: int) -> None:
        self.joinm([gi])

    def joinm(self, gis: list[int], ctrl: CtrlerHarness | None = None) -> None:
        """Join the groups ``gis`` in one configuration change (on controller ``ctrl``)."""
        ck = self.mck if ctrl is None else ctrl.make_client()
        ck.join({self.gid(gi): self.names(gi) for gi in gis}, timeout=CALL_DEADLINE_S)
        self.check_ledger()

    def leave(self, gi: int) -> None:
        self.leavem([gi])

    def leavem(self, gis: list[int]) -> None:
        self.mck.leave([self.gid(gi) for gi in gis], timeout=CALL_DEADLINE_S)
        self.check_ledger()

    def start_ctrler_service(self) -> CtrlerHarness:
        """A controller service of 3 servers on the harness's network, reporting to its ledger, with
        the planted core and controller faults (the first one made is the harness's own)."""
        ctl = CtrlerHarness(3, network=self.net, ledger=self.ledger, name=self._ctrler_name(),
                            nshards=self.nshards, seed=self.rng.randrange(2**31), tick_s=self.tick_s,
                            faults=self.faults & (CORE_FAULTS | CTRL_FAULTS.keys()))
        self.ctrlers.append(ctl)
        return ctl

    def ctljoin(self, gi: int, ctl: CtrlerHarness) -> None:
        """Join group ``gi`` on controller service ``ctl``."""
        self.joinm([gi], ctl)

    def query(self) -> Any:
        config = self.mck.query(-1, timeout=CALL_DEADLINE_S)
        self.check_ledger()
        return config

    # ------------------------------------------------------------------------------------------
    # Servers and links
    # ------------------------------------------------------------------------------------------

    def shutdown_server(self, gi: int, i: int) -> None:
        """Disable server i's outgoing links to its group, delete it from the network (calls in
        flight fail, no reply is delivered), and crash it: its successor gets a copy of its storage.
        (Its ends to other groups and the controller die with its incarnation.)"""
        g = self.groups[gi]
        _get(self.net.enable_many.remote(list(g.ends[i].values()), False))
        _get(self.net.delete_server.remote(self.server_name(gi, i)))
        _get(g.replicas[i].crash.remote())
        g.alive[i] = False

    def start_server(self, gi: int, i: int) -> None:
        """Restart server i of group gi from (a copy of) its storage, with new outgoing ends to its
        group, enabled at once."""
        g = self.groups[gi]
        g.incarnation[i] += 1
        inc = g.incarnation[i]
        name = self.server_name(gi, i)
        ends = {j: f"{name}.{inc}->{self.server_name(gi, j)}" for j in range(self.n) if j != i}
        _get([self.net.make_end.remote(e, self.server_name(gi, j)) for j, e in ends.items()])
        _get(self.net.enable_many.remote(list(ends.values()), True))
        g.ends[i] = ends
        _get(g.replicas[i].start.remote(inc, ("network", self.net, ends)))
        _get(self.net.add_server.remote(name, g.replicas[i], inc))
        g.alive[i] = True

    def shutdown_group(self, gi: int) -> None:
        for i in range(self.n):
            self.shutdown_server(gi, i)

    def start_group(self, gi: int) -> None:
        for i in range(self.n):
            self.start_server(gi, i)

    def set_unreliable(self, unreliable: bool) -> None:
        _get(self.net.set_reliable.remote(not unreliable))

    # ------------------------------------------------------------------------------------------
    # Queries
    # ------------------------------------------------------------------------------------------

    def storage_sizes(self) -> list[list[tuple[int, int]]]:
        """Per group, per server: (Raft state bytes, snapshot bytes); and a check of the ledger, in
        the same round."""
        *sizes, failure = _get([r.storage_sizes.remote() for g in self.groups for r in g.replicas]
                               + [self.ledger.failure.remote()])
        raise_if_violated(failure)
        return [sizes[gi * self.n:(gi + 1) * self.n] for gi in range(self.ngroups)]

    def total_persisted(self) -> int:
        """Raft state + snapshot bytes, summed over every server of every group."""
        return sum(raft + snap for sizes in self.storage_sizes() for raft, snap in sizes)

    def shard_stats(self, gi: int) -> list[dict[str, Any]]:
        return _get([r.shard_stats.remote() for r in self.groups[gi].replicas])

    def shard_events(self) -> dict[str, list[tuple[str, int, tuple[int, ...], float]]]:
        """Every server's applied migration steps (see ``ShardKVReplica.shard_events``)."""
        refs = {self.server_name(gi, i): r.shard_events.remote()
                for gi, g in enumerate(self.groups) for i, r in enumerate(g.replicas)}
        values = _get(list(refs.values()))
        return dict(zip(refs, values, strict=True))

    def move_times(self) -> list[float]:
        """Seconds each shard move took, from the first server of the new owner applying the
        configuration that made the shard arrive to the first one applying its install (every clock is
        the machine's CLOCK_MONOTONIC). Moves that never completed are not counted."""
        return move_times(self.shard_events())

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def summary(self) -> str:
        st, (_, counts) = _get([self.net.stats.remote(), self.ledger.verdict.remote()])
        planted = f"  planted {','.join(sorted(self.faults))}" if self.faults else ""
        return (f"{self.elapsed():5.1f}s  groups {self.ngroups}×{self.n}  rpcs {st.get('total_count')}  "
                f"bytes {st.get('total_bytes')}  handler errors {st.get('handler_errors')}  "
                f"ledger {counts}{planted}")

    # ------------------------------------------------------------------------------------------
    # Checks and teardown
    # ------------------------------------------------------------------------------------------

    def check_ledger(self) -> None:
        """Fail with the ledger's first violation, if any (one call)."""
        raise_if_violated(_get(self.ledger.failure.remote()))

    def check_logs(self) -> None:
        """The reference's ``checklogs``: with maxraftstate >= 0 every server's Raft state is at most
        8 × maxraftstate bytes; with maxraftstate < 0 no server has a snapshot."""
        for gi, sizes in enumerate(self.storage_sizes()):
            for i, (raft, snap) in enumerate(sizes):
                name = self.server_name(gi, i)
                if self.maxraftstate >= 0:
                    assert raft <= 8 * self.maxraftstate, (
                        f"{name}: persisted Raft state of {raft} bytes > 8 × maxraftstate "
                        f"({8 * self.maxraftstate})")
                else:
                    assert snap == 0, f"{name}: snapshot of {snap} bytes, but maxraftstate is -1"

    def check_applied_logs(self) -> None:
        """The ledger's verdict on everything every server (controller's included) ever applied."""
        verdict_or_raise(self.ledger)

    def cleanup(self) -> None:
        """Check the ledger, handler errors and the time limit, then kill every actor."""
        try:
            check_at_teardown(self.ledger, self.net, self.elapsed(), "server")
        finally:
            self.kill()

    def kill(self) -> None:
        ray.kill(self.net, no_restart=True)  # first: no call in flight reports the others' deaths
        for ctl in self.ctrlers:
            ctl.kill()
        for g in self.groups:
            for r in g.replicas:
                ray.kill(r, no_restart=True)
        ray.kill(self.ledger, no_restart=True)


# ------------------------------------------------------------------------------------------------
# Recorded clerk calls and the checks of the tests
# ------------------------------------------------------------------------------------------------


def move_times(events_by_server: dict[str, list[tuple[str, int, tuple[int, ...], float]]]) -> list[float]:
    """Seconds each shard move took (sorted), from every server's applied migration steps
    (``shard_events()``, by server name; the gid is the name's second part: ``server-101-2``,
    ``shardkv-101-3fa9c2-0``): from the first server of the new owner applying the configuration that
    made the shard arrive to the first one applying its install. Moves never completed are not counted."""
    started: dict[tuple[int, int, int], float] = {}
    installed: dict[tuple[int, int, int], float] = {}
    for name, events in events_by_server.items():
        gid = int(name.split("-")[1])
        for what, num, shards, t in events:
            table = started if what == "config" else installed if what == "installed" else None
            if table is not None:
                for sh in shards:
                    key = (gid, num, sh)
                    table[key] = min(t, table.get(key, t))
    return sorted(installed[k] - started[k] for k in installed if k in started)


def rget(ck: Clerk, key: str, rec: Recorder | None, client: Any, timeout: float = OP_TIMEOUT_S) -> str:
    if rec is None:
        return ck.get(key, timeout=timeout)
    with rec.operation(client, ("get", key)) as op:
        op.output = ck.get(key, timeout=timeout)
    return op.output  # type: ignore[no-any-return]


def rput(ck: Clerk, key: str, value: str, rec: Recorder | None, client: Any) -> None:
    if rec is None:
        ck.put(key, value, timeout=OP_TIMEOUT_S)
        return
    with rec.operation(client, ("put", key, value)):
        ck.put(key, value, timeout=OP_TIMEOUT_S)


def rappend(ck: Clerk, key: str, value: str, rec: Recorder | None, client: Any) -> None:
    if rec is None:
        ck.append(key, value, timeout=OP_TIMEOUT_S)
        return
    with rec.operation(client, ("append", key, value)):
        ck.append(key, value, timeout=OP_TIMEOUT_S)


def check(ck: Clerk, key: str, value: str, rec: Recorder | None = None, client: Any = 0) -> None:
    """The reference's ``check``: Get(key) must equal ``value``."""
    v = rget(ck, key, rec, client)
    assert v == value, f"Get({key!r}): expected:\n{value!r:.300}\nreceived:\n{v!r:.300}"


def check_history(rec: Recorder, label: str) -> None:
    """The history must be linearizable, decided within :data:`CHECK_TIMEOUT_S` ("unknown" fails)."""
    history = rec.history()
    t = time.monotonic()
    result = check_linearizable(history, KVModel(), timeout=CHECK_TIMEOUT_S)
    took = time.monotonic() - t
    print(f"{label}: {len(history)} operations, {result.verdict} in {took:.2f} s")
    if result.verdict is not Verdict.LINEARIZABLE:
        fd, path = tempfile.mkstemp(prefix="shardkv-", suffix=".html")
        os.close(fd)
        write_html(result, path)
        if result.verdict is Verdict.UNKNOWN:
            raise AssertionError(f"{label}: the linearizability check gave no verdict within "
                                 f"{CHECK_TIMEOUT_S:.0f} s ({len(history)} ops); report: {path}")
        raise AssertionError(f"{label}: history is not linearizable; visualisation: {path}")


def join_threads(threads: list[threading.Thread], what: str, deadline_s: float = JOIN_DEADLINE_S) -> None:
    """Join every thread within ``deadline_s`` seconds in all, or fail."""
    deadline = time.monotonic() + deadline_s
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
        assert not t.is_alive(), f"{what} did not finish within {deadline_s:.0f} s"
