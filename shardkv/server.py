"""A shard group's server: a :class:`~actors.replica.ReplicaActor` hosting a
:class:`~shardkv.statemachine.ShardKVStateMachine`, answering clerks and other groups, and following
the controller. The same RPC → proposal → answer-when-applied shape as :mod:`kvraft.server`: the
waiting is the shared server core, :class:`actors.service_server.ServiceReplica`.

RPCs (each returns ``None`` when this peer is down):

Every RPC first checks its arguments' shape and answers ``("invalid", reason)`` for malformed ones,
before anything is proposed. Over the direct transport ``kv`` arrives at the actor method of that name
as one pickled batch, ``pull`` and ``delete`` through the generic ``rpc`` entry; over the stream
transport each is a frame of its name, served by the actor methods ``kv`` (the pickled batch),
``pull`` and ``delete`` (the pickled argument tuple), answered pickled.

- ``kv(ops)``: a batch of client operations. The leader refuses at once (wrong-group results, nothing
  proposed) the operations on shards it does not serve in its applied state, proposes the rest as
  one entry, and answers ``("ok", [result, ...])`` once it is applied, where a result is a value,
  ``None`` or an :class:`~shardkv.ops.OpError` (wrong group when the shard moved before the entry was
  applied). Otherwise ``("wrong_leader", hint)`` or ``("timeout", None)``, as in kvraft.
- ``pull(num, shards)``: another group, which owns ``shards`` from configuration ``num`` on, asks for
  them. Any replica that has applied configuration ``num`` with all of them leaving answers
  ``("ok", ((shard, data, dedup), ...))``: a leaving shard's data is frozen from the configuration
  entry until it is deleted, so every replica holds the same copy. Otherwise ``("not_ready", n)``
  with this replica's configuration number.
- ``delete(num, shards)``: the new owner has installed ``shards`` (configuration ``num``). The
  leader proposes a ``DELETE`` and answers ``("ok", None)`` once it is applied; any replica already
  past ``num`` (or at ``num`` with none of them left) answers ``ok`` at once, since a group leaves
  configuration ``num`` only after its leaving shards are deleted.

Client Gets: a batch of Gets only is served with ReadIndex (:class:`actors.reads.ReadIndexServing`):
after one heartbeat round has confirmed the leadership and the leader has applied everything committed
before the batch arrived, each Get is checked against its shard's status at that point
(:meth:`~shardkv.statemachine.ShardKVStateMachine.read`: ``WRONG_GROUP`` unless owned and ready) and
read, with no log entry; a batch with a write, or a Get of a client its shard does not know or whose
session there has been idle for longer than half the TTL (the entry renews it), goes through the log.

Background work, on the actor's event loop, on the leader only (every ``poll_s``):

1. a new leader first lets a no-op of its term commit (the core appends it, ``leader_noop``; the
   server proposes one only if its core runs without that rule), so that entries of earlier terms
   commit and its applied state catches up;
2. when the group is settled, it asks the controller for configuration ``current + 1`` and proposes
   it (a :class:`shardctrler.AsyncClerk` through :class:`~shardkv.endpoints.CtrlerEndpoints`);
3. for each group it must pull shards from, it pulls them and proposes an ``INSTALL``: every shard is
   served as soon as its own install is applied, whatever happens to the others (challenge 2);
4. for each group holding copies of shards installed here, it asks for their deletion and then
   proposes ``GC_DONE`` (challenge 1: the storage of moved-away shards is reclaimed).

Each task is one attempt with deadlines; a task per peer group, so a dead group stalls only the
shards that come from it. Nothing blocks the loop: every remote call is awaited.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import time
from collections.abc import Callable, Coroutine
from typing import Any

from actors.reads import NEEDS_LOG, ReadIndexServing
from actors.replica import ReplicaSpec
from actors.service_protocol import next_server
from actors.service_server import DEFAULT_SERVER_WAIT_S, ServiceReplica, service_replica_actor
from actors.sessions import unstamp
from shardctrler.async_clerk import AsyncClerk as CtrlerAsyncClerk
from shardkv.endpoints import CtrlerEndpoints, DirectRouter, NetworkRouter, Router, StreamRouter
from shardkv.ops import (
    CLIENT,
    CONFIG,
    DELETE,
    GC_DONE,
    GET,
    INSTALL,
    INVALID,
    NOT_READY,
    OK,
    WRONG_GROUP,
    WRONG_LEADER,
    Batch,
    batch_problem,
    migration_problem,
    op_problem,
)
from shardkv.statemachine import ARRIVING, GC_PENDING, LEAVING, ShardKVStateMachine

log = logging.getLogger("raykv.shardkv")

__all__ = ["DEFAULT_PEER_TIMEOUT_S", "DEFAULT_POLL_S", "DEFAULT_SERVER_WAIT_S", "ShardKVReplica",
           "make_router", "shardkv_replica_actor"]

#: default period of the leader's background work (the reference polls the controller every 100 ms)
DEFAULT_POLL_S = 0.1
#: default deadline of one call to another group or to the controller
DEFAULT_PEER_TIMEOUT_S = 1.0


def make_router(routing: tuple, prefix: str | None) -> Router:
    """A router from its description: ``("network", network_handle)``,
    ``("direct", {name: handle}, namespace)`` or ``("stream", secret, {name: handle}, namespace)`` (the
    handles: the controller's replicas, which are no named actors); ``prefix`` names its ends or
    connections (``None``: a fresh name)."""
    if routing[0] == "network":
        return NetworkRouter(routing[1], prefix)
    if routing[0] == "direct":
        return DirectRouter(routing[1], routing[2])
    if routing[0] == "stream":
        return StreamRouter(routing[1], routing[2], routing[3], label=prefix)
    raise ValueError(f"unknown routing {routing[0]!r}: expected 'network', 'direct' or 'stream'")


class ShardKVReplica(ReadIndexServing, ServiceReplica):
    """A Raft peer of shard group ``spec.extra["gid"]``. Create it with :func:`shardkv_replica_actor`.

    ``spec.extra``: ``gid``; ``ctrlers`` (the controller's server names); ``routing`` (see
    :func:`make_router`); optional ``server_wait_s``, ``poll_s``, ``peer_timeout_s``.
    """

    #: served over the stream listener too (pickled payload in, pickled reply out; see the module docstring)
    stream_rpcs = frozenset({"kv", "pull", "delete"})
    #: the ``service`` tag of this replica's metrics (docs/ray-layer.md, "Metrics")
    metrics_service = "shardkv"

    def __init__(self, spec: ReplicaSpec) -> None:
        super().__init__(spec)
        extra = spec.extra
        self.gid = int(extra["gid"])
        self._ctrler_names = tuple(extra["ctrlers"])
        self._routing = tuple(extra["routing"])
        self._poll_s = float(extra.get("poll_s", DEFAULT_POLL_S))
        self._peer_timeout_s = float(extra.get("peer_timeout_s", DEFAULT_PEER_TIMEOUT_S))
        self._noop_term = -1
        self._jobs: dict[Any, asyncio.Task] = {}
        self._router: Router | None = None
        self._ctrl: CtrlerAsyncClerk | None = None
        #: per peer gid, the server index that answered last
        self._peer_leader: dict[int, int] = {}
        #: migration steps applied here, for status and measurements (see :meth:`shard_events`)
        self.events: list[tuple[str, int, tuple[int, ...], float]] = []

    @property
    def ssm(self) -> ShardKVStateMachine | None:
        return self.sm  # type: ignore[return-value]

    # -- life cycle ------------------------------------------------------------------------------

    async def start(self, incarnation: int, transport: tuple) -> None:
        await super().start(incarnation, transport)
        self._router = make_router(self._routing, f"{self.spec.name}.{incarnation}")
        if isinstance(self._router, StreamRouter):  # the tests' fault hook covers the migrations too
            self._router.set_faults(getattr(self, "_stream_faults", None))
        self._ctrl = None
        self._noop_term = -1
        self._jobs = {}
        self._spawn(self._background(incarnation))

    async def crash(self) -> None:
        ctrl, self._ctrl = self._ctrl, None
        router = self._router  # the next start makes a new one
        await super().crash()
        if ctrl is not None:
            await ctrl.close()
        if isinstance(router, StreamRouter):
            await router.close()

    async def set_stream_faults(self, config: dict[str, Any] | None) -> None:
        """The replica's stream fault hook (see :class:`~actors.replica.ReplicaActor`), applied to this
        server's calls to other groups and to the controller as well (their destinations are labelled
        by server name, which is what a ``cut`` of these calls names)."""
        await super().set_stream_faults(config)  # type: ignore[misc]
        if isinstance(self._router, StreamRouter):
            self._router.set_faults(getattr(self, "_stream_faults", None))

    # -- RPCs ------------------------------------------------------------------------------------

    async def rpc_kv(self, ops: Batch) -> tuple[str, Any] | None:
        """Client operations (see the module docstring)."""
        core, sm = self.core, self.ssm
        if core is None or sm is None:
            return None
        problem = batch_problem(ops)
        if problem is not None:
            return INVALID, problem
        if not core.is_leader:
            return WRONG_LEADER, core.leader_id
        if isinstance(ops, tuple) and all(isinstance(op, tuple) and op[:1] == (GET,) for op in ops):
            # Gets only: ReadIndex, each checked against its shard's status at the point it is read
            reply = await self._serve_reads(ops)
            if reply is not NEEDS_LOG:
                return reply
            core, sm = self.core, self.ssm
            if core is None or sm is None:
                return None
        # malformed operations go through, for the state machine to refuse with a clear error
        served = [i for i, op in enumerate(ops) if op_problem(op, sm.nshards) is not None or sm.serves(op[5])]
        if not served:
            return OK, [WRONG_GROUP] * len(ops)
        if len(served) == len(ops):
            return await self._propose_wait((CLIENT, ops))
        reply = await self._propose_wait((CLIENT, tuple(ops[i] for i in served)))
        if reply is None or reply[0] != OK:
            return reply
        results: list[Any] = [WRONG_GROUP] * len(ops)
        for i, r in zip(served, reply[1], strict=True):
            results[i] = r
        return OK, results

    async def kv(self, data: bytes) -> bytes | None:
        """``rpc_kv`` for clerks that call the actor directly, with the batch and the answer pickled."""
        return await self._serve_pickled(data, self.rpc_kv)

    async def rpc_pull(self, num: int, shards: tuple[int, ...]) -> tuple[str, Any] | None:
        """Copies of ``shards`` for their new owner in configuration ``num`` (any replica)."""
        sm = self.ssm
        if self.core is None or sm is None:
            return None
        problem = migration_problem(num, shards)
        if problem is not None:
            return INVALID, problem
        exported = sm.export(num, shards)
        if exported is None:
            return NOT_READY, sm.config.num
        return OK, exported

    async def pull(self, data: bytes) -> bytes | None:
        """``rpc_pull`` for callers on a stream: the argument tuple ``(num, shards)`` and the answer
        pickled."""
        return await self._serve_pickled_args(data, self.rpc_pull)

    async def delete(self, data: bytes) -> bytes | None:
        """``rpc_delete`` for callers on a stream (as :meth:`pull`)."""
        return await self._serve_pickled_args(data, self.rpc_delete)

    async def _serve_pickled_args(self, data: bytes,
                                  handler: Callable[..., Coroutine[Any, Any, Any]]) -> bytes | None:
        """``handler(*args)`` for the pickled argument tuple ``data``, with the answer pickled; ``None``
        while this peer is down; ``("invalid", reason)`` for anything but a pickled pair."""
        if self.core is None:
            return None
        try:
            args = pickle.loads(data)
        except Exception as exc:
            return pickle.dumps((INVALID, f"the request is not a pickled argument tuple ({exc!r:.120})"),
                                protocol=5)
        if not isinstance(args, tuple) or len(args) != 2:
            return pickle.dumps((INVALID, f"expected the arguments (num, shards), got {args!r:.120}"),
                                protocol=5)
        reply = await handler(*args)
        return None if reply is None else pickle.dumps(reply, protocol=5)

    async def rpc_delete(self, num: int, shards: tuple[int, ...]) -> tuple[str, Any] | None:
        """The new owner of ``shards`` (configuration ``num``) has them: delete the leaving copies."""
        core, sm = self.core, self.ssm
        if core is None or sm is None:
            return None
        problem = migration_problem(num, shards)
        if problem is not None:
            return INVALID, problem
        if sm.config.num > num or (sm.config.num == num and not any(
                s in sm.shards and sm.shards[s].status == LEAVING for s in shards)):
            return OK, None
        if sm.config.num < num:
            return NOT_READY, sm.config.num
        if not core.is_leader:
            return WRONG_LEADER, core.leader_id
        reply = await self._propose_wait((DELETE, num, shards))
        if reply is not None and reply[0] == OK:
            return OK, None
        return reply

    # -- applied entries ------------------------------------------------------------------------

    def _on_applied(self, index: int, term: int, command: Any, result: Any) -> None:
        command = unstamp(command)[2]
        if isinstance(command, tuple) and command and command[0] != CLIENT:
            self._record(command, result)
        super()._on_applied(index, term, command, result)

    # -- background work (leader only) -----------------------------------------------------------

    async def _background(self, inc: int) -> None:
        while inc == self.incarnation:
            await asyncio.sleep(self._poll_s)
            core, sm = self.core, self.ssm
            if inc != self.incarnation or core is None or sm is None or not core.is_leader:
                continue
            if core.term != self._noop_term:
                self._noop_term = core.term
                if core.log.last_term != core.term:  # the core's leader_noop already appended one
                    core.propose(self._stamped(None))
                    self._schedule_flush()
                continue  # let the applied state catch up first
            num = sm.config.num
            if sm.settled():
                self._launch(("config", num), self._next_config, inc, num)
            for peer, shards in sm.with_status(ARRIVING).items():
                self._launch(("pull", peer, num), self._pull, inc, num, peer, tuple(shards))
            for peer, shards in sm.with_status(GC_PENDING).items():
                self._launch(("gc", peer, num), self._collect, inc, num, peer, tuple(shards))

    def _launch(self, key: Any, fn: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
        """Start ``fn(*args)`` unless the job ``key`` is still running (one attempt at a time)."""
        job = self._jobs.get(key)
        if job is not None and not job.done():
            return
        self._jobs = {k: t for k, t in self._jobs.items() if not t.done()}
        task = asyncio.get_running_loop().create_task(self._guard(key, fn(*args)))
        self._jobs[key] = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guard(self, key: Any, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug: log it and let the next round try again
            log.exception("shard group %d (%s): background job %r failed", self.gid, self.spec.name, key)

    async def _ctrler(self) -> CtrlerAsyncClerk:
        if self._ctrl is None:
            assert self._router is not None
            endpoints = await CtrlerEndpoints(self._router, self._ctrler_names).aensure()
            self._ctrl = CtrlerAsyncClerk(endpoints, attempt_timeout=self._peer_timeout_s,  # type: ignore[arg-type]
                                          retry_pause=self._poll_s)
        return self._ctrl

    async def _next_config(self, inc: int, num: int) -> None:
        ctrl = await self._ctrler()
        try:
            config = await ctrl.query(num + 1, timeout=3 * self._peer_timeout_s)
        except TimeoutError:
            return
        if inc != self.incarnation or config.num != num + 1:
            return
        await self._propose_wait((CONFIG, config))

    async def _pull(self, inc: int, num: int, peer: int, shards: tuple[int, ...]) -> None:
        reply = await self._ask_group(inc, peer, "pull", (num, shards))
        if reply is None or reply[0] != OK or inc != self.incarnation:
            return
        await self._propose_wait((INSTALL, num, reply[1]))

    async def _collect(self, inc: int, num: int, peer: int, shards: tuple[int, ...]) -> None:
        reply = await self._ask_group(inc, peer, "delete", (num, shards))
        if reply is None or reply[0] != OK or inc != self.incarnation:
            return
        await self._propose_wait((GC_DONE, num, shards))

    async def _ask_group(self, inc: int, peer: int, method: str, args: tuple) -> Any:
        """Try the servers of group ``peer`` (one round, following leader hints) until one answers
        ``ok``; returns that reply, or the last reply (``None`` if no server answered)."""
        sm, router = self.ssm, self._router
        if sm is None or router is None:
            return None
        servers = sm.addresses.get(peer, ())
        if not servers:
            log.error("shard group %d: no address known for group %d", self.gid, peer)
            return None
        n = len(servers)
        i = self._peer_leader.get(peer, 0) % n
        reply: Any = None
        for _ in range(n + 1):
            if inc != self.incarnation:
                return None
            reply = await router.acall(servers[i], method, args, self._peer_timeout_s)
            if isinstance(reply, tuple) and reply[0] == OK:
                self._peer_leader[peer] = i
                return reply
            i = next_server(i, n, reply)
        return reply

    def _record(self, command: tuple, result: Any) -> None:
        """Remember when a migration step was applied here (for status and measurements)."""
        sm = self.ssm
        tag = command[0]
        if tag == CONFIG and result is True and sm is not None:
            what, num, shards = "config", sm.config.num, tuple(sorted(
                s for s, sh in sm.shards.items() if sh.status == ARRIVING))
        elif tag in (INSTALL, DELETE, GC_DONE) and isinstance(result, tuple) and result:
            what = {INSTALL: "installed", DELETE: "deleted", GC_DONE: "gc_done"}[tag]
            num, shards = command[1], result
        else:
            return
        if what in ("installed", "deleted"):  # a shard moved in (installed here) or out (deleted here)
            self.metrics.shards_moved("in" if what == "installed" else "out", len(shards))
        self.events.append((what, num, shards, time.monotonic()))
        if len(self.events) > 2000:
            del self.events[:-1000]

    # -- queries for tests and tools -------------------------------------------------------------

    async def shard_stats(self) -> dict[str, Any]:
        """The state machine's status (configuration, shards by status, resident bytes), the role,
        the term, and the Raft state and snapshot sizes."""
        sm = self.ssm
        stats: dict[str, Any] = sm.status() if sm is not None else {"gid": self.gid}
        core = self.core
        stats["role"] = core.role if core is not None else "down"
        stats["term"] = core.term if core is not None else 0
        stats["pending"] = len(self._waiters)
        stats["raft_state_size"] = self.storage.raft_state_size()
        stats["snapshot_size"] = self.storage.snapshot_size()
        return stats

    async def shard_events(self) -> list[tuple[str, int, tuple[int, ...], float]]:
        """Migration steps this replica applied, ``(what, num, shards, time.monotonic())``: ``config``
        (with the shards that became arriving), ``installed``, ``gc_done``, ``deleted``. The last
        1,000 to 2,000 are kept; a restarted replica starts a new list when it re-applies."""
        return list(self.events)


def shardkv_replica_actor(max_concurrency: int = 1000, **options: Any) -> Any:
    """The Ray actor class for :class:`ShardKVReplica`: async, no CPU reserved, no retries.

    ``options`` are passed to ``ray.remote`` (e.g. ``scheduling_strategy``, ``name``).
    """
    return service_replica_actor(ShardKVReplica, max_concurrency, **options)
