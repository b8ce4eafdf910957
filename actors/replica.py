"""The replica actor: one Raft peer, hosting a Raft core and one state machine, driven by asyncio.

The actor is a thin shell around the pure core (:class:`raft.RaftNode`). Every event goes through the
same three steps, all on the actor's event loop, with no ``await`` in between (so the core never sees
two events at once and needs no lock):

1. feed the core (a tick, messages from a peer, a proposal);
2. drain its :class:`raft.Ready`: persist (one ``Storage.save``, one fsync), then send — one Ray call
   per destination carrying every message for it — then apply committed entries and snapshots;
3. when a peer's request arrives, the replies the core produced for that peer are not sent separately:
   they are the return value of the call (exactly as an RPC reply), after they have been persisted.

Crashes are modelled inside the actor (a new Ray actor costs about 0.3 s, a restart about 1 s, and
the Figure 8 tests crash peers hundreds of times). :meth:`ReplicaActor.crash` drops every bit of
volatile state (the core, the state machine, pending sends and waiters), hands the storage over as a
*copy* (what the dead incarnation might still write cannot reach its successor), and bumps the
*incarnation*: every task and every incoming call carries the incarnation it belongs to, and anything
from a dead incarnation is ignored. :meth:`ReplicaActor.start` rebuilds the core from storage.

The stream transport (docs/transports.md). :meth:`ReplicaActor.open_stream` opens the replica's
listener (an authenticated :class:`~actors.stream_server.StreamServer` on its node's address) and
returns the address, which the group's shell hands to the other replicas and the clerks through Ray.
The listener belongs to the actor, not to an incarnation: it outlives :meth:`~ReplicaActor.crash` and
:meth:`~ReplicaActor.start` (a crashed replica answers nothing over it, as over Ray) and goes with the
actor's process. It serves a whitelist only: ``"deliver"`` (Raft messages between replicas) and the
service's clerk RPCs (:attr:`ReplicaActor.stream_rpcs`), each a pickled bytes payload in and out;
anything else is answered with no answer and logged.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import random
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, ClassVar

import ray

from actors.metrics import ReplicaMetrics
from actors.replacer import Replacer
from actors.statemachine import StateMachine
from actors.storage import MemoryStorage, Storage, StorageError
from actors.transport import DirectTransport, NetworkTransport, StreamTransport, Transport, check_address
from raft import (
    AppendEntries,
    AppendEntriesReply,
    InstallSnapshotReply,
    Message,
    RaftConfig,
    RaftNode,
    Ready,
    RequestVoteReply,
    trace,
)
from raft.membership import ConfChange

log = logging.getLogger("raykv.replica")

_REPLY_TYPES = (AppendEntriesReply, RequestVoteReply, InstallSnapshotReply)

#: how often (seconds) a replica mirrors its metrics into ``ray.util.metrics`` (actors/metrics_ray.py)
METRICS_EXPORT_S = 1.0


@dataclass(frozen=True)
class ReplicaSpec:
    """Everything needed to build (and rebuild) one replica. Picklable: it travels to the actor.

    ``tick_s`` is the real length of one core tick; with the defaults a leader sends a heartbeat every
    ``heartbeat_ticks * tick_s`` = 100 ms (the reference tester allows about 10 per second) and an
    election timeout is drawn from ``[election_ticks, 2 * election_ticks) * tick_s`` = 300–600 ms.

    ``pre_vote``, ``check_quorum`` and ``leader_noop`` are the core's switches (:class:`raft.RaftConfig`).
    ``None`` (the default) leaves each to the replica class: a bare :class:`ReplicaActor` runs the
    reference configuration (:data:`REFERENCE_RULES`, all off, as the reference Raft tests expect), a
    service's replica the services' (:data:`SERVICE_RULES`, all on; see
    :class:`actors.service_server.ServiceReplica`).
    """

    name: str
    peer_id: int
    peers: tuple[int, ...]
    state_machine: Callable[[], StateMachine]
    storage: Callable[[], Storage] = MemoryStorage
    tick_s: float = 0.02
    election_ticks: int = 15
    heartbeat_ticks: int = 5
    max_entries_per_append: int = 512
    max_inflight_appends: int = 16
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    #: this replica joins an existing group (``peers`` is the group's bootstrap configuration, without
    #: it): it starts passive and takes part once the leader adds it (see raft.membership)
    join: bool = False
    pre_vote: bool | None = None
    check_quorum: bool | None = None
    leader_noop: bool | None = None

    def raft_config(self, defaults: dict[str, bool] | None = None) -> RaftConfig:
        """The core's configuration; the switches left ``None`` take ``defaults`` (else all off)."""
        rules = dict(REFERENCE_RULES) | (defaults or {})
        for name in REFERENCE_RULES:
            value = getattr(self, name)
            if value is not None:
                rules[name] = value
        return RaftConfig(
            join=self.join,
            peer_id=self.peer_id,
            peers=self.peers,
            election_ticks=self.election_ticks,
            heartbeat_ticks=self.heartbeat_ticks,
            max_entries_per_append=self.max_entries_per_append,
            max_inflight_appends=self.max_inflight_appends,
            **rules,
        )


#: The core's switches as the reference 6.5840 Raft tests expect them: all off.
REFERENCE_RULES: dict[str, bool] = {"pre_vote": False, "check_quorum": False, "leader_noop": False}

#: The core's switches every service's replicas run with: PreVote, so a replica cut off and back does
#: not depose a healthy leader; CheckQuorum, so a leader cut off into a minority steps down and its
#: clerks move on; the leader's no-op, so a new leader commits its predecessors' entries (and can serve
#: ReadIndex reads) at once. See docs/raft.md.
SERVICE_RULES: dict[str, bool] = {"pre_vote": True, "check_quorum": True, "leader_noop": True}


class ReplicaActor:
    """One Raft peer. Create it with :func:`replica_actor` (the Ray actor class)."""

    #: the core's switches for those the spec leaves ``None`` (see :class:`ReplicaSpec`)
    default_rules: dict[str, bool] = REFERENCE_RULES
    #: the clerk RPCs served over the stream listener besides ``"deliver"``: each names an async method
    #: of the replica taking the pickled batch (bytes) and returning the pickled reply, or ``None``
    stream_rpcs: ClassVar[frozenset[str]] = frozenset()
    #: the ``service`` tag of this replica's metrics (see :meth:`metrics_tags`)
    metrics_service: ClassVar[str] = "raft"

    def __init__(self, spec: ReplicaSpec) -> None:
        spec.raft_config(self.default_rules)  # validate early: a bad one fails at creation, not start
        self.spec = spec
        if ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None:
            trace.set_label(spec.name)  # this actor's process, in the RAYKV_LOG_FILE lines (raykv viz)
        #: opened by the first :meth:`start` (so a damaged or missing directory is reported by start and
        #: status, and the actor lives on to say so, instead of failing to be created)
        self.storage: Storage | None = None
        #: why this replica is down although it was started (its storage could not be opened, read or
        #: written, or its state machine failed); None while it runs. Shown by :meth:`status`.
        self.failure: str | None = None
        #: whether that failure is the storage's (it could not be opened, read or written)
        self.storage_failed = False
        self.incarnation = 0
        self.core: RaftNode | None = None
        self.sm: StateMachine | None = None
        self.transport: Transport | None = None
        self._tasks: set[asyncio.Task] = set()
        self._rng = random.Random(spec.seed)
        self._flush_scheduled = False
        #: how to reach peers that joined after this replica was built: peer -> endpoint (an actor
        #: handle for the direct transport, an end name for the network one); kept across restarts
        self._joined_peers: dict[int, Any] = {}
        #: replaces the group's lost replicas while this replica leads (only with
        #: ``spec.extra["replace"]``; see actors/replacer.py)
        self._replacer: Any = None
        #: the transport's kind of the last :meth:`start` ("network", "direct", "stream"), for status
        self.transport_kind: str | None = None
        #: the stream listener (:meth:`open_stream`), its secret, and the fault hook of this replica's
        #: stream transport (:meth:`set_stream_faults`); all outlive crashes
        self._stream_server: Any = None
        self._stream_secret: bytes | None = None
        self._stream_faults: Any = None
        #: held while the listener is being opened (concurrent open_stream calls open one listener)
        self._stream_opening = asyncio.Lock()
        #: counters and histograms fed from each Ready (actors/metrics.py); they outlive crashes, as a
        #: process's counters do; mirrored into Ray's metrics by ``_exporter`` (actors/metrics_ray.py)
        self.metrics = ReplicaMetrics()
        self._exporter: Any = None

    # ------------------------------------------------------------------------------------------
    # Life cycle
    # ------------------------------------------------------------------------------------------

    async def start(self, incarnation: int, transport: tuple) -> None:
        """Rebuild the core and the state machine from storage and start ticking.

        ``transport`` is ``("network", network_handle, {peer: end_name})``,
        ``("direct", {peer: actor_handle})`` or ``("stream", secret, {peer: (host, port)})`` (the
        addresses the peers' :meth:`open_stream` returned; this replica's own listener is opened with
        ``secret`` if it is not open yet). If the storage cannot be opened or read (missing, damaged:
        a :class:`~actors.storage.StorageError`), the replica stays down, :meth:`status` reports the
        reason, and the error is raised to the caller (its type and fields survive Ray).
        """
        if self.core is not None:
            await self.crash()
        self.incarnation = incarnation
        kind = transport[0]
        if kind == "network":
            self.transport = NetworkTransport(transport[1], transport[2])
        elif kind == "direct":
            self.transport = DirectTransport(transport[1])
        elif kind == "stream":
            secret, addresses = transport[1], transport[2]
            await self.open_stream(secret)  # idempotent; refuses a secret other than the listener's
            self.transport = StreamTransport({p: check_address(a) for p, a in addresses.items()}, secret,
                                             faults=self._stream_faults, label=self.spec.name)
        else:
            raise ValueError(f"unknown transport {kind!r}: expected 'network', 'direct' or 'stream'")
        self.transport_kind = kind
        for peer, endpoint in self._joined_peers.items():
            self.transport.add_peer(peer, endpoint)
        try:
            if self.storage is None:
                self.storage = self.spec.storage()
            state = self.storage.load()
        except StorageError as exc:
            self.failure = f"{type(exc).__name__}: {exc}"
            self.storage_failed = True
            self.transport = None
            log.error("replica %s cannot start: %s", self.spec.name, exc)
            raise
        self.failure, self.storage_failed = None, False
        self.core = RaftNode(self.spec.raft_config(self.default_rules), random.Random(self._rng.random()),
                             state)
        if self.sm is not None and getattr(self.sm, "survives_restart", False):
            self.sm.reset()  # type: ignore[attr-defined]
        else:
            self.sm = self.spec.state_machine()
        if state.snapshot.index > 0:
            self.sm.restore(state.snapshot.data, state.snapshot.index)
        self.metrics.reset_role(self.core.term, self.core.role)
        self._spawn(self._ticker(incarnation))
        self._spawn(self._export_metrics(incarnation))
        replace_options = self.spec.extra.get("replace")
        if replace_options is not None and self._replacer is None:
            self._replacer = Replacer(self, replace_options)
        if self._replacer is not None:  # this group replaces its lost replicas (actors/replacer.py)
            self._spawn(self._replacer.run(incarnation))

    async def crash(self) -> None:
        """Lose all volatile state, as a process crash would; storage keeps what was saved."""
        self._crash_now()

    def _crash_now(self) -> None:
        self.incarnation += 1
        if self.core is not None and trace.enabled("persist"):  # the decision log shows the crash
            trace.log(self.core.id, self.core.term, "crashed", "persist", "crashed: volatile state lost")
        self.core = None
        old, self.transport = self.transport, None
        if isinstance(old, StreamTransport):  # its connections die with the incarnation
            asyncio.get_running_loop().create_task(old.close())
        for t in list(self._tasks):
            t.cancel()
        self._tasks.clear()
        if isinstance(self.storage, MemoryStorage):
            self.storage = self.storage.copy()
        if self.sm is not None and not getattr(self.sm, "survives_restart", False):
            self.sm = None

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ticker(self, inc: int) -> None:
        tick_s = self.spec.tick_s
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while inc == self.incarnation:
            next_at += tick_s
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            if inc != self.incarnation or self.core is None:
                return
            self.core.tick()
            self._drain()

    # ------------------------------------------------------------------------------------------
    # The Ready loop
    # ------------------------------------------------------------------------------------------

    def _schedule_flush(self) -> None:
        """Drain soon, after the other events already queued on the loop (this is the batching)."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.core is not None:
            self._drain()

    def _drain(self, reply_to: int | None = None) -> list[Message]:
        """Carry out every Ready the core has: persist, send, apply. Returns replies for ``reply_to``."""
        core, sm = self.core, self.sm
        assert core is not None and sm is not None and self.storage is not None
        replies: list[Message] = []
        inc = self.incarnation
        m = self.metrics
        if core.term != m.term or core.role != m.last_role:  # elections and leader changes
            m.role(core.term, core.role, core.voted_for == core.id)
        while core.has_ready():
            rd = core.ready()
            if rd.entries and core.is_leader:  # a commit-latency sample starts (one per Ready)
                m.appended(rd.entries[-1].index, time.perf_counter())
            # A leader's AppendEntries go out before its own write (Raft thesis §10.2.1): the fsync
            # overlaps their flight. Safe because no reply can be stepped before this loop, which
            # never yields, has returned, and so before the leader's own entries are durable.
            early = (rd.hard_state is None and core.is_leader and bool(rd.messages)
                     and all(type(m) is AppendEntries for m in rd.messages))
            if early:
                self._dispatch(inc, rd.messages, reply_to, replies)
            if rd.hard_state is not None or rd.entries or rd.snapshot is not None:
                try:
                    self.storage.save(rd.hard_state, rd.entries, rd.snapshot)
                except Exception as exc:
                    # Fail-stop: a peer that cannot persist must not answer, vote or count itself
                    # towards a commit. It stays down until it is restarted from its storage.
                    log.exception("replica %s: storage write failed; the peer stops (restart it "
                                  "once the disk is healthy)", self.spec.name)
                    self._crash_now()
                    self.failure = f"storage write failed: {exc!r}"
                    self.storage_failed = True
                    return []
            if rd.messages and not early:
                self._dispatch(inc, rd.messages, reply_to, replies)
            if rd.apply_snapshot is not None:
                sm.restore(rd.apply_snapshot.data, rd.apply_snapshot.index)
                self._on_snapshot_restored(rd.apply_snapshot.index)
                m.snapshot_installed(len(rd.apply_snapshot.data))
            ops = 0
            for e in rd.committed_entries:
                command = e.command
                if type(command) is ConfChange:
                    # The group's configuration changed (the core already acts on it); the service
                    # sees a no-op at this index.
                    log.info("replica %s: configuration entry %d committed: %s", self.spec.name,
                             e.index, command)
                    command = None
                try:
                    result = sm.apply(e.index, command)
                except Exception as exc:
                    # Fail-stop: skipping a committed entry would make this replica diverge from
                    # the others. A service's apply must be total (bad input -> an error result);
                    # this is the last line of defence against one that is not.
                    log.exception("replica %s: the state machine failed to apply entry %d; the peer "
                                  "stops", self.spec.name, e.index)
                    self._crash_now()
                    self.failure = f"apply of entry {e.index} failed: {exc!r}"
                    return []
                self._on_applied(e.index, e.term, command, result)
                ops += len(result) if type(result) is list else command is not None
                if sm.should_snapshot(e.index, self.storage.raft_state_size()):
                    data = sm.snapshot()
                    core.snapshot(e.index, data)
                    m.snapshot_taken(len(data))
            if rd.committed_entries:
                m.applied(len(rd.committed_entries), ops)
                if m.waiting:
                    m.committed(rd.committed_entries[-1].index, time.perf_counter())
            self._after_apply(rd, core.log.applied)
        return replies

    def _dispatch(self, inc: int, messages: tuple[Message, ...], reply_to: int | None,
                  replies: list[Message]) -> None:
        """Put ``messages`` on the wire now, one call per destination; replies to ``reply_to``'s
        request are collected in ``replies`` instead (they are the return value of its call)."""
        assert self.transport is not None
        outgoing: dict[int, list[Message]] = defaultdict(list)
        for m in messages:
            if m.dst == reply_to and isinstance(m, _REPLY_TYPES):
                replies.append(m)
            else:
                outgoing[m.dst].append(m)
        for dst, msgs in outgoing.items():
            # Pickled here, not by Ray: one bytes argument costs Ray far less than dataclasses.
            pending = self.transport.start(dst, "deliver", (pickle.dumps(msgs, protocol=5),), len(msgs))
            self._spawn(self._receive(inc, pending))

    async def _receive(self, inc: int, pending: Coroutine[Any, Any, tuple[bool, Any]]) -> None:
        ok, replies = await pending
        if not ok or inc != self.incarnation or self.core is None:
            return
        for r in pickle.loads(replies) if isinstance(replies, bytes) else replies:
            self.core.step(r)
        self._schedule_flush()

    # Hooks for services that wait on applied entries (kvraft and friends override these).
    def _on_applied(self, index: int, term: int, command: Any, result: Any) -> None:
        pass

    def _on_snapshot_restored(self, index: int) -> None:
        pass

    def _after_apply(self, rd: Ready, applied: int) -> None:
        """Step 4 of a Ready: the state machine has applied everything up to ``applied``; a service
        that serves ReadIndex reads takes ``rd.read_states`` / ``rd.reads_dropped`` here."""

    # ------------------------------------------------------------------------------------------
    # Remote API
    # ------------------------------------------------------------------------------------------

    async def rpc(self, incarnation: int | None, method: str, args: tuple) -> Any:
        """Entry point for every call from the network (or directly from a peer or a clerk).

        Returns ``None`` (a failed call) when this peer is down or ``incarnation`` names a dead one.
        """
        if self.core is None or (incarnation is not None and incarnation != self.incarnation):
            return None
        if method == "deliver":
            (msgs,) = args
            pickled = isinstance(msgs, bytes)
            if pickled:  # from a peer's _send: answer in kind
                msgs = pickle.loads(msgs)
            core = self.core
            for m in msgs:
                core.step(m)
            replies = self._drain(reply_to=msgs[0].src if msgs else None)
            return pickle.dumps(replies, protocol=5) if pickled else replies
        handler = getattr(self, "rpc_" + method, None)
        if handler is None:
            raise ValueError(f"replica {self.spec.name} has no RPC method {method!r}")
        return await handler(*args)

    async def start_command(self, command: Any) -> tuple[int, int, bool]:
        """Raft's ``Start``: propose ``command`` if leader; returns ``(index, term, is_leader)`` at once."""
        if self.core is None:
            return -1, 0, False
        result = self.core.propose(command)
        if result[2]:
            self._schedule_flush()
        return result

    async def change_membership(self, op: str, peer: int) -> tuple[int, int, bool]:
        """Propose a membership change (``add_learner`` / ``promote`` / ``remove``, see
        :mod:`raft.membership`) if leader: ``(index, term, is_leader)`` at once, like
        :meth:`start_command`. A leader that must refuse raises
        :class:`~raft.membership.ConfChangeRefused` saying why (one change at a time, not caught up,
        no entry of its term committed yet, ...). Tell every replica how to reach a new peer
        (:meth:`add_peer`) before adding it."""
        if self.core is None:
            return -1, 0, False
        result = self.core.propose_conf_change(op, peer)
        if result[2]:
            self._schedule_flush()
        return result

    async def enable_replacement(self, options: Any) -> None:
        """From now on (and across restarts), replace the group's lost replicas while this replica
        leads: ``options`` is an :class:`actors.replacer.ReplaceOptions` (the group's directory). The
        same as starting with ``spec.extra["replace"]``; idempotent."""
        if self._replacer is not None:
            return
        self._replacer = Replacer(self, options)
        if self.core is not None:
            self._spawn(self._replacer.run(self.incarnation))

    async def add_peer(self, peer: int, endpoint: Any) -> None:
        """How to reach ``peer`` from now on (and after restarts): an actor handle for the direct
        transport, the name of this replica's end to it for the network transport, its listener's
        ``(host, port)`` for the stream transport (a peer that joined, or one restarted as a new actor
        with a new address)."""
        if self.transport_kind == "stream":
            endpoint = check_address(endpoint)
        self._joined_peers[peer] = endpoint
        if self.transport is not None:
            self.transport.add_peer(peer, endpoint)

    async def get_state(self) -> tuple[int, bool]:
        """Raft's ``GetState``: ``(term, is_leader)``; ``(0, False)`` while crashed."""
        if self.core is None:
            return 0, False
        return self.core.term, self.core.is_leader

    async def status(self) -> dict[str, Any]:
        """The core's status plus storage sizes, for dashboards and tests; ``failure`` says why a
        started replica is down (``None`` while it runs, or after an ordinary crash), and
        ``storage_failed`` whether that is its storage's fault."""
        st: dict[str, Any] = self.core.status() if self.core is not None else {"role": "down"}
        st["name"] = self.spec.name
        st["incarnation"] = self.incarnation
        st["failure"] = self.failure
        st["storage_failed"] = self.storage_failed
        st["raft_state_size"], st["snapshot_size"] = await self.storage_sizes()
        st["transport"] = self.transport_kind
        server = self._stream_server
        st["stream"] = None if server is None else {"address": server.address, **server.stats()}
        if self._replacer is not None:
            st["replacing"] = self._replacer.last
        self._flush_metrics()
        st["metrics"] = self.metrics.summary()
        return st

    # ------------------------------------------------------------------------------------------
    # Metrics (actors/metrics.py; mirrored into ray.util.metrics by actors/metrics_ray.py)
    # ------------------------------------------------------------------------------------------

    def metrics_tags(self) -> dict[str, str]:
        """The tags of this replica's Ray metrics: ``service`` (:attr:`metrics_service`), ``group`` (the
        group's name: ``spec.extra["group"]``, else the replica's name without its ``-<slot>``
        suffix) and ``replica`` (its name)."""
        name = self.spec.name
        head, _, slot = name.rpartition("-")
        group = self.spec.extra.get("group") or (head if head and slot.isdigit() else name)
        return {"service": self.metrics_service, "group": str(group), "replica": name}

    async def _export_metrics(self, inc: int) -> None:
        while inc == self.incarnation:
            await asyncio.sleep(METRICS_EXPORT_S)
            self._flush_metrics()

    def _flush_metrics(self) -> None:
        """Send what changed to Ray's metrics (made on first use, inside a Ray runtime only); a
        failure is logged once and switches the export off, never the replica."""
        if self._exporter is False:
            return
        try:
            if self._exporter is None:
                if not ray.is_initialized():
                    return
                from actors.metrics_ray import RayExporter

                self._exporter = RayExporter(self.metrics_tags())
            self._exporter.flush(self.metrics)
        except Exception:
            log.exception("replica %s: exporting metrics to Ray failed; the export is off (status() "
                          "still has them)", self.spec.name)
            self._exporter = False

    async def metrics_report(self) -> dict[str, Any]:
        """This replica's metrics after a flush to Ray: ``tags``, ``figures``
        (:meth:`ReplicaMetrics.summary`) and ``exported`` (what the Ray metrics received, see
        :meth:`actors.metrics_ray.RayExporter.exported`; ``None`` outside a Ray runtime)."""
        self._flush_metrics()
        exporter = self._exporter or None
        return {"tags": self.metrics_tags(), "figures": self.metrics.summary(),
                "exported": exporter.exported() if exporter is not None else None}

    async def storage_sizes(self) -> tuple[int, int]:
        """``(raft_state_size, snapshot_size)``; ``(0, 0)`` while the storage is not open or readable."""
        if self.storage is None:
            return 0, 0
        try:
            return self.storage.raft_state_size(), self.storage.snapshot_size()
        except StorageError:
            return 0, 0

    async def applied_at(self, index: int) -> tuple[bool, Any, int]:
        """Test recorder query: ``(applied?, command, number of recorder errors)``."""
        sm = self.sm
        log_ = getattr(sm, "log", None)
        errors = len(getattr(sm, "errors", ()))
        if log_ is None or index not in log_:
            return False, None, errors
        return True, log_[index], errors

    async def applied_log(self) -> tuple[dict[int, Any], list[str]]:
        """Test recorder query: everything this peer ever applied, and the recorder's errors."""
        return dict(getattr(self.sm, "log", {})), list(getattr(self.sm, "errors", []))

    async def set_faults(self, faults: list[str]) -> None:
        """Test-only: switch on deliberately broken rules in the core (see ``RaftNode.faults``)."""
        if self.core is not None:
            self.core.faults = frozenset(faults)

    async def ping(self) -> bool:
        return True

    # ------------------------------------------------------------------------------------------
    # The stream listener (see the module docstring and docs/transports.md)
    # ------------------------------------------------------------------------------------------

    async def open_stream(self, secret: bytes, host: str | None = None) -> tuple[str, int]:
        """Open this replica's stream listener, accepting only connections that prove they hold
        ``secret`` (the service's, handed out through Ray), and return its ``(host, port)``.

        ``host``: where to listen; by default the address of this replica's node as Ray knows it
        (``127.0.0.1`` without a Ray runtime). Idempotent: while the actor lives, the listener and its
        address stay the same (across :meth:`crash` and :meth:`start`); asking again with another
        secret is refused with ``ValueError``."""
        from actors.stream_auth import check_secret
        from actors.stream_server import StreamServer

        secret = check_secret(secret)
        async with self._stream_opening:
            if self._stream_server is not None:
                if secret != self._stream_secret:
                    raise ValueError(f"replica {self.spec.name}: its stream listener is open with another "
                                     "secret (a service has one secret, kept by the listener while it lives)")
                return self._stream_server.address  # type: ignore[no-any-return]
            server = StreamServer(self._serve_stream, secret, host=host or _node_ip(), label=self.spec.name)
            address = await server.start()
            self._stream_server, self._stream_secret = server, secret
            return address

    async def stream_address(self) -> tuple[str, int] | None:
        """Where this replica's stream listener is (``None`` while none is open)."""
        return None if self._stream_server is None else self._stream_server.address

    async def stream_peers(self) -> dict[int, tuple[str, int]]:
        """Every stream address this replica knows, its own included: ``{peer id: (host, port)}``
        (a clerk whose calls to a server fail asks this, through Ray, to find a moved server)."""
        known: dict[int, tuple[str, int]] = {}
        if isinstance(self.transport, StreamTransport):
            known.update(self.transport.addresses())
        elif self.transport_kind == "stream":
            known.update({p: a for p, a in self._joined_peers.items() if isinstance(a, tuple)})
        if self._stream_server is not None:
            known[self.spec.peer_id] = self._stream_server.address
        return known

    async def close_stream(self) -> None:
        """Close the listener (the actor's end does the same); a later :meth:`open_stream` opens a new one."""
        server, self._stream_server, self._stream_secret = self._stream_server, None, None
        if server is not None:
            await server.close()

    async def set_stream_faults(self, config: dict[str, Any] | None) -> None:
        """Test-only fault hook of this replica's stream transport: ``None`` switches it off; a dict
        sets ``seed`` (a new seeded generator; default: the spec's seed) and any of
        :class:`~actors.stream_faults.StreamFaults`'s fields (``reliable``, ``long_reordering``,
        ``long_delays``, ``cut``: the peer ids this replica cannot reach). Kept across restarts."""
        if config is None:
            self._stream_faults = None
        else:
            from actors.stream_faults import StreamFaults

            fields = dict(config)
            seed = fields.pop("seed", None)
            if "cut" in fields:
                fields["cut"] = {str(p) for p in fields["cut"]}
            if self._stream_faults is None or seed is not None:
                self._stream_faults = StreamFaults(self.spec.seed if seed is None else int(seed))
            self._stream_faults.configure(**fields)
        if isinstance(self.transport, StreamTransport):
            self.transport.set_faults(self._stream_faults)

    async def _serve_stream(self, method: str, payload: bytes) -> bytes | None:
        """The listener's handler: ``"deliver"`` and :attr:`stream_rpcs` only; ``None`` is no answer."""
        if method == "deliver":
            return await self.rpc(None, "deliver", (payload,))  # type: ignore[no-any-return]
        if method in self.stream_rpcs:
            return await getattr(self, method)(payload)  # type: ignore[no-any-return]
        log.warning("replica %s: stream call of %r refused: not a stream RPC of this replica (it serves "
                    "'deliver' and %s)", self.spec.name, method, sorted(self.stream_rpcs) or "nothing else")
        return None

    async def node_id(self) -> str:
        """The Ray node this replica runs on (a leader replacing lost replicas probes its members with
        it: an answer means alive, Ray's ``ActorDiedError`` dead)."""
        return str(ray.get_runtime_context().get_node_id())


def _node_ip() -> str:
    """This process's node address as Ray knows it, or ``127.0.0.1`` without a Ray runtime."""
    if ray.is_initialized():
        return str(ray.util.get_node_ip_address())
    return "127.0.0.1"


def replica_actor(max_concurrency: int = 1000) -> Any:
    """The Ray actor class for :class:`ReplicaActor`: async, no CPU reserved, no retries."""
    return ray.remote(num_cpus=0, max_concurrency=max_concurrency, max_restarts=0,
                      max_task_retries=0)(ReplicaActor)
