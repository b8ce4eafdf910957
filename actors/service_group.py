"""Start a group of replicas of a service on the current Ray cluster, watch it, stop it: the part of
``kvraft.start_group``, ``shardctrler.start_group`` and ``shardkv.start_group`` that does not depend on
the service.

:func:`start_replicas` does the work a service's ``start_group`` hands it:

- **Placement** (:mod:`actors.placement`): each replica on its own node (a ``STRICT_SPREAD``
  placement group) when the cluster has enough nodes, packed with a logged warning when not, or
  where a given :class:`~actors.placement.GroupPlacement` says.
- **Storage**: ``"memory"``, or ``"durable"``: a :class:`~actors.storage.FileStorage` per replica
  under ``data_dir/replica<i>``, created on the replica's own node by the replica itself. Without a
  ``data_dir``, a fresh node-local directory is made (and removed by :meth:`ServiceGroup.stop` on
  every node that holds part of it). A ``data_dir`` that does not exist or is empty makes a new
  group; any other is reopened (the group restarts with its state). With ``identity=True`` each
  replica's directory records (and on restart must match) the group's name, the replica's number and
  the group's size, so a missing, damaged or foreign directory is refused, never started empty.
- **Transport**: ``"stream"`` (authenticated asyncio streams between the replicas and from the clerks:
  every replica's listener is opened first (``open_stream``, on its node's address), the addresses
  are collected through Ray, then every replica starts with the others'; one secret per service,
  :func:`actors.stream_auth.new_secret`, handed out only through Ray), ``"direct"`` (Ray actor calls,
  replica to replica) or ``"network"`` (every call through a reliable
  :class:`~actors.network.FaultyNetwork` actor: a new one owned by the group, or a given one).
- **Starting**: every replica's ``start``; with ``tolerate=True`` a minority of replicas that
  cannot start are left down and reported (``failed``), and too many for a majority tear the group
  down and raise the service's error; with ``tolerate=False`` any failure tears it down and is raised.

:class:`ServiceGroup` is the running group (names, leader, per-replica status, stop, context
manager, :meth:`ServiceGroup.restart_replica`: a replica killed and started again as a new actor on
its storage, its new stream address republished to the others); :class:`ClerkGroup` adds the clerks of
a single-group service (endpoints, ``clerk()``, ``async_clerk()``). Everything here blocks on Ray:
call it from a driver, never from an async actor.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import ray
from ray.exceptions import RayError, RayTaskError

from actors.metrics import aggregate
from actors.network import FaultyNetwork
from actors.placement import GroupPlacement, node_local_dir, nodes_of, place_group, remove_dirs
from actors.replica import ReplicaSpec
from actors.storage import FileStorage, MemoryStorage, StorageError
from actors.stream_auth import new_secret

#: a service's synchronous and asyncio clerk types (for :class:`ClerkGroup`)
SyncClerkT = TypeVar("SyncClerkT")
AsyncClerkT = TypeVar("AsyncClerkT")

STORAGES = ("durable", "memory")
TRANSPORTS = ("stream", "direct", "network")

#: how long a replica's ``start`` (opening its storage, rebuilding its state) may take
START_TIMEOUT_S = 60.0


def check_group_options(n: Any, storage: str, transport: str | None = None) -> None:
    """Raise ``ValueError`` for a group size, storage or transport that no group can take."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"a group needs at least one replica, got n={n!r}")
    if storage not in STORAGES:
        raise ValueError(f"storage must be 'durable' or 'memory', got {storage!r}")
    if transport is not None and transport not in TRANSPORTS:
        raise ValueError(f"transport must be 'stream', 'direct' or 'network', got {transport!r}")


def ensure_ray() -> None:
    """Start an embedded Ray runtime if none is running (a laptop's ``start_group`` just works)."""
    if not ray.is_initialized():
        ray.init(include_dashboard=False, logging_level="WARNING")


@dataclass
class StartedReplicas:
    """What :func:`start_replicas` made: everything a :class:`ServiceGroup` is built from."""

    name: str
    replicas: list[Any]
    data_dir: Path | None
    owns_dir: bool
    placement: GroupPlacement
    network: Any = None
    owns_network: bool = False
    nodes: list[str | None] = field(default_factory=list)
    #: peer id -> why that replica did not start (only with ``tolerate=True``)
    failed: dict[int, str] = field(default_factory=dict)
    #: "stream", "direct" or "network"
    transport: str = "direct"
    #: the service's stream secret (``transport="stream"``), else ``None``
    secret: bytes | None = None
    #: each replica's stream listener address, index = peer id (``transport="stream"``), else empty
    addresses: list[tuple[str, int]] = field(default_factory=list)
    #: ``respawn(i)``: a new actor for replica ``i`` on its existing storage (see restart_replica)
    respawn: Callable[[int], Any] | None = None


def start_replicas(
    n: int,
    *,
    name: str | None,
    default_name: Callable[[], str] = lambda: f"group-{uuid.uuid4().hex[:8]}",
    actor_cls: Callable[[int], Any],
    state_machine: Callable[[], Any],
    storage: str = "durable",
    data_dir: str | os.PathLike[str] | None = None,
    transport: str = "direct",
    network: Any = None,
    placement: GroupPlacement | None = None,
    tick_s: float = 0.02,
    extra: dict[str, Any] | None = None,
    identity: bool = False,
    tolerate: bool = False,
    start_error: Callable[[str, int, dict[int, str]], Exception] | None = None,
    secret: bytes | None = None,
) -> StartedReplicas:
    """Create and start the ``n`` replicas of a group (see the module docstring).

    ``name``: the group's (replica ``i`` is ``f"{name}-{i}"``); ``None`` takes the name stored in an
    existing ``data_dir`` (with ``identity``), else ``default_name()``. ``actor_cls(i)``: the Ray actor
    class of replica ``i``; ``state_machine``: a factory of the state machine every replica hosts;
    ``extra``: the service's entries of :attr:`~actors.replica.ReplicaSpec.extra`. ``network``: an
    existing network actor to use with ``transport="network"`` (else a new one is made). With
    ``tolerate``, ``start_error(name, n, failed)`` is raised when no majority could start.
    ``secret``: the service's stream secret with ``transport="stream"`` (a service of many groups
    passes its one secret to each); ``None`` makes a new one (:func:`actors.stream_auth.new_secret`).
    """
    check_group_options(n, storage, transport)
    ensure_ray()
    base: Path | None = None
    owns_dir = False
    fresh = True  # a new group creates its replicas' storage; an existing data_dir is reopened
    check_name = True  # whether each replica's stored group name must be ``name``
    if storage == "durable" and data_dir is not None:
        base = Path(data_dir)
        fresh = not base.exists() or not any(base.iterdir())
        if identity and not fresh and name is None:
            name = _stored_group_name(base, n)
            check_name = name is not None
    name = name or default_name()
    if storage == "durable" and data_dir is None:  # created on each replica's node by the replica
        base, owns_dir = Path(node_local_dir(name)), True
    if placement is None:  # each replica on its own node when the cluster has enough
        placement = place_group(n, name=name)
    elif placement.n != n:
        raise ValueError(f"the placement is for {placement.n} replicas, not {n}")
    group_name, group_placement = name, placement

    def spawn(i: int, new: bool) -> Any:
        """A new actor for replica ``i``; ``new``: it creates its storage (else reopens it)."""
        store: Any = MemoryStorage
        if base is not None:
            ident: dict[str, Any] | None = None
            if identity:
                ident = {"replica": i, "replicas": n} | ({"group": group_name} if check_name else {})
            store = functools.partial(FileStorage, str(base / f"replica{i}"), new=new, lock_timeout=5.0,
                                      **({"identity": ident} if ident is not None else {}))
        return actor_cls(i).options(**group_placement.options(i)).remote(ReplicaSpec(
            name=f"{group_name}-{i}",
            peer_id=i,
            peers=tuple(range(n)),
            state_machine=state_machine,
            storage=store,
            tick_s=tick_s,
            seed=uuid.uuid4().int % 2**31,
            extra=dict(extra or {}),
        ))

    replicas = [spawn(i, fresh) for i in range(n)]
    owns_network = False
    if transport == "network" and network is None:
        network, owns_network = FaultyNetwork.remote(seed=0), True
    if transport == "stream" and secret is None:
        secret = new_secret()
    started = StartedReplicas(name, replicas, base, owns_dir, placement,
                              network if transport == "network" else None, owns_network,
                              transport=transport, secret=secret if transport == "stream" else None,
                              respawn=lambda i: spawn(i, False))
    try:
        if transport == "stream":
            assert secret is not None
            started.addresses = _open_streams(replicas, secret)
            refs = _stream_start_refs(replicas, secret, started.addresses)
        else:
            refs = _start_refs(name, replicas, network if transport == "network" else None)
        if tolerate:
            started.failed = _started(refs)
        else:
            ray.get(refs, timeout=START_TIMEOUT_S)
    except BaseException:
        _teardown(started)
        raise
    if len(started.failed) > n - (n // 2 + 1):
        _teardown(started)
        raise (start_error or _default_start_error)(name, n, started.failed)
    started.nodes = nodes_of(replicas)
    return started


def _open_streams(replicas: list[Any], secret: bytes) -> list[tuple[str, int]]:
    """Open every replica's stream listener (on its node's address); their addresses, in peer-id order."""
    addresses = ray.get([r.open_stream.remote(secret) for r in replicas], timeout=START_TIMEOUT_S)
    return [(str(host), int(port)) for host, port in addresses]


def _stream_start_refs(replicas: list[Any], secret: bytes, addresses: list[tuple[str, int]]) -> list[Any]:
    """Start every replica on the stream transport with the others' addresses; the refs of the starts."""
    return [r.start.remote(1, ("stream", secret, {j: a for j, a in enumerate(addresses) if j != i}))
            for i, r in enumerate(replicas)]


def _start_refs(name: str, replicas: list[Any], network: Any) -> list[Any]:
    """Wire the replicas to each other (directly, or through ``network``) and start them; returns
    the refs of their ``start`` calls, in peer-id order."""
    n = len(replicas)
    if network is None:
        handles = dict(enumerate(replicas))
        return [r.start.remote(1, ("direct", {j: h for j, h in handles.items() if j != i}))
                for i, r in enumerate(replicas)]
    ends = {i: {j: f"{name}-{i}->{name}-{j}" for j in range(n) if j != i} for i in range(n)}
    ray.get([network.make_end.remote(e, f"{name}-{j}") for i in range(n) for j, e in ends[i].items()],
            timeout=START_TIMEOUT_S)
    ray.get(network.enable_many.remote([e for i in range(n) for e in ends[i].values()], True),
            timeout=START_TIMEOUT_S)
    refs = [r.start.remote(1, ("network", network, ends[i])) for i, r in enumerate(replicas)]
    ray.get([network.add_server.remote(f"{name}-{i}", r, 1) for i, r in enumerate(replicas)],
            timeout=START_TIMEOUT_S)
    return refs


def _started(refs: list[Any]) -> dict[int, str]:
    """Wait for every replica's ``start``; returns peer id -> why it failed, for those that did."""
    failed: dict[int, str] = {}
    for i, ref in enumerate(refs):
        try:
            ray.get(ref, timeout=START_TIMEOUT_S)
        except RayTaskError as exc:  # the replica raised (e.g. a StorageError): report the cause
            cause = exc.cause if exc.cause is not None else exc
            failed[i] = f"{type(cause).__name__}: {cause}"
        except RayError as exc:
            failed[i] = f"{type(exc).__name__}: {exc}"
    return failed


def _default_start_error(name: str, n: int, failed: dict[int, str]) -> Exception:
    lines = "; ".join(f"replica {i}: {why}" for i, why in sorted(failed.items()))
    return RuntimeError(f"group {name!r}: {len(failed)} of {n} replicas could not start ({lines})")


def _teardown(started: StartedReplicas) -> None:
    """Undo a start that failed: kill the replicas and the group's own network, release the
    placement, remove a directory the start made."""
    for r in started.replicas:
        ray.kill(r, no_restart=True)
    if started.owns_network and started.network is not None:
        ray.kill(started.network, no_restart=True)
    started.placement.release()
    if started.owns_dir and started.data_dir is not None:
        remove_dirs({(node, str(started.data_dir)) for node in nodes_of(started.replicas, timeout=5.0)}
                    | {(None, str(started.data_dir))})


def _stored_group_name(base: Path, n: int) -> str | None:
    """The group name recorded in the replicas' identity files under ``base`` (the most common one),
    or ``None`` if none can be read (then the name is not checked)."""
    names: list[str] = []
    for i in range(n):
        try:
            found = FileStorage.read_identity(base / f"replica{i}")
        except (OSError, StorageError):
            continue
        if found is not None and isinstance(found.get("group"), str):
            names.append(found["group"])
    return max(set(names), key=names.count) if names else None


class ServiceGroup:
    """A running group of a service's replicas, made from :func:`start_replicas`.

    Attributes: ``name``, ``n``, ``replicas`` (actor handles, index = peer id), ``data_dir`` (durable
    storage, on each replica's own node, or ``None`` for memory storage), ``transport``
    (``"stream"``, ``"direct"`` or ``"network"``), ``network`` (the network actor with
    ``transport="network"``, else ``None``), ``secret`` (the service's stream secret with
    ``transport="stream"``, else ``None``; keep it inside Ray: it admits anyone to the service),
    ``addresses`` (each replica's stream listener, index = peer id; empty without streams),
    ``placement`` (where the replicas went: :class:`~actors.placement.GroupPlacement`), ``nodes``
    (the node id each replica ran on when the group started), ``failed_at_start`` (peer id -> why
    that replica did not start; empty when all did). :meth:`stop` is idempotent.
    """

    #: how :meth:`leader`'s timeout names the group (``{name}`` is replaced)
    label: ClassVar[str] = "group {name!r}"

    def __init__(self, started: StartedReplicas) -> None:
        self.name = started.name
        self.replicas = started.replicas
        self.n = len(started.replicas)
        self.data_dir = started.data_dir
        self._owns_dir = started.owns_dir
        self.network = started.network
        self._owns_network = started.owns_network
        self.placement = started.placement
        self.nodes = list(started.nodes) if started.nodes else [None] * self.n
        self.failed_at_start = dict(started.failed)
        self.transport = started.transport
        self.secret = started.secret
        self.addresses = list(started.addresses)
        self._respawn = started.respawn
        self._stopped = False

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f"{self.name}-{i}" for i in range(self.n))

    def describe(self) -> str:
        return self.label.format(name=self.name)

    def leader(self, timeout: float = 10.0) -> int:
        """The peer id of the current leader, waiting up to ``timeout`` seconds for one."""
        deadline = time.monotonic() + timeout
        while True:
            states = ray.get([r.get_state.remote() for r in self.replicas], timeout=timeout)
            leaders = [i for i, (_, is_leader) in enumerate(states) if is_leader]
            if leaders:
                return max(leaders, key=lambda i: states[i][0])
            if time.monotonic() > deadline:
                raise TimeoutError(f"no leader in {self.describe()} after {timeout:g} s")
            time.sleep(0.05)

    def status(self) -> list[dict[str, Any]]:
        """One dict per replica (index = peer id), with at least these keys:

        ``replica`` (peer id), ``name``, ``alive`` (its Raft runs), ``damaged`` (its storage could not
        be opened, read or written: missing, corrupt or foreign directory, failing disk), ``reason``
        (why it is not alive: the storage error with the file, offset and advice; ``None`` when it
        is alive or was merely crashed), ``leader`` (it is the leader it knows of), ``term``; then
        the Raft core's status (``role``, ``commit``, ``applied``, ``last_index``, ...) and storage
        sizes, and ``metrics`` (its counters and histograms: :meth:`actors.metrics.ReplicaMetrics.summary`;
        the group's figures: :meth:`metrics`). A replica whose actor cannot be reached is reported
        with ``role="unreachable"``.
        """
        refs = [r.status.remote() for r in self.replicas]
        out = []
        for i, ref in enumerate(refs):
            try:
                st = ray.get(ref, timeout=30)
            except RayError as exc:
                st = {"role": "unreachable", "failure": f"its actor cannot be reached ({exc})"}
            row: dict[str, Any] = {
                "replica": i,
                "name": self.names[i],
                "alive": st["role"] not in ("down", "unreachable"),
                "damaged": bool(st.get("storage_failed")),
                "reason": st.get("failure"),
                "leader": st["role"] == "leader",
                "term": st.get("term", 0),
            }
            out.append(row | {k: v for k, v in st.items() if k not in row})
        return out

    def metrics(self) -> dict[str, Any]:
        """The group's figures from every replica's ``status()["metrics"]`` (docs/ray-layer.md,
        "Metrics"; :func:`actors.metrics.aggregate`): ``ops_applied``, ``commit_latency`` (the
        leader's: ``count``, ``p50``, ``p99``, ``mean`` in seconds, ``buckets``), ``elections_started``,
        ``leader_changes``, ``shards_in`` / ``shards_out``, snapshot counts and sizes; each replica's own
        figures are in :meth:`status`."""
        rows = self.status()
        leaders = [i for i, r in enumerate(rows) if r.get("role") == "leader"]
        leader = max(leaders, key=lambda i: rows[i].get("term", 0)) if leaders else None
        return aggregate([r.get("metrics") for r in rows], leader)

    def restart_replica(self, i: int, timeout: float = START_TIMEOUT_S) -> None:
        """Kill replica ``i``'s actor (if it still runs) and start a new one in its place, on its
        storage (durable storage only: a memory replica would come back empty, which Raft forbids),
        with the same placement. With streams, the new actor's listener address is republished to
        the other replicas (``add_peer``; kept across their restarts) and to new clerks (this
        group's ``addresses``); existing stream clerks given the replicas' handles find it through
        the replicas (:mod:`actors.stream_endpoints`). With direct calls, the new actor's handle is
        republished. Not for the network transport (its servers are wired into the network actor)."""
        if self._stopped:
            raise RuntimeError(f"{self.describe()} is stopped")
        if not 0 <= i < self.n:
            raise IndexError(f"replica {i} is not in {self.describe()} of {self.n} replicas")
        if self.data_dir is None:
            raise ValueError(f"{self.describe()} keeps its state in memory: a replica restarted as a new "
                             "actor would come back empty; start the group with storage='durable'")
        if self.transport == "network" or self._respawn is None:
            raise ValueError(f"{self.describe()} runs on the {self.transport!r} transport; restart_replica "
                             "needs 'stream' or 'direct'")
        ray.kill(self.replicas[i], no_restart=True)
        new = self._respawn_when_free(i, timeout)
        others = [j for j in range(self.n) if j != i]
        if self.transport == "stream":
            assert self.secret is not None
            address = tuple(ray.get(new.open_stream.remote(self.secret), timeout=timeout))
            endpoint: Any = address
            start_with: dict[int, Any] = {j: self.addresses[j] for j in others}
        else:
            endpoint, start_with = new, {j: self.replicas[j] for j in others}
        self._republish(i, endpoint, others, timeout)
        ray.get(new.start.remote(1, (self.transport, self.secret, start_with) if self.transport == "stream"
                                 else ("direct", start_with)), timeout=timeout)
        self.replicas[i] = new
        if self.transport == "stream":
            self.addresses[i] = endpoint
        self.nodes[i] = nodes_of([new])[0]

    def _respawn_when_free(self, i: int, timeout: float) -> Any:
        """The new actor of replica ``i``; a named one is retried while Ray still holds the name of
        the actor just killed (the name is released once that actor is dead)."""
        assert self._respawn is not None
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self._respawn(i)
            except ValueError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _republish(self, i: int, endpoint: Any, others: list[int], timeout: float) -> None:
        """Tell every other replica how to reach replica ``i`` now (one that cannot be reached is
        skipped: it learns it when it is itself restarted through this group)."""
        refs = [self.replicas[j].add_peer.remote(i, endpoint) for j in others]
        for ref in refs:
            with contextlib.suppress(RayError):
                ray.get(ref, timeout=timeout)

    def stop(self) -> None:
        """Kill the replicas (and the group's own network) and release their placement; a temporary
        data directory made by the start is removed on every node that holds part of it."""
        if self._stopped:
            return
        self._stopped = True
        for r in self.replicas:
            ray.kill(r, no_restart=True)
        if self._owns_network and self.network is not None:
            ray.kill(self.network, no_restart=True)
        if self.placement is not None:
            self.placement.release()
        if self._owns_dir and self.data_dir is not None:
            remove_dirs({(node, str(self.data_dir)) for node in self.nodes})

    def __enter__(self) -> ServiceGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ClerkGroup(ServiceGroup, Generic[SyncClerkT, AsyncClerkT]):
    """A :class:`ServiceGroup` of a single-group service that hands out its own clerks: the service
    sets the endpoint and clerk classes (and names the clerk types as the parameters, so that
    ``clerk()`` and ``async_clerk()`` are typed); ``clerk_options`` are the defaults of every clerk."""

    direct_endpoints: ClassVar[Any] = None
    network_endpoints: ClassVar[Any] = None
    stream_endpoints: ClassVar[Any] = None
    clerk_class: ClassVar[Any] = None
    async_clerk_class: ClassVar[Any] = None

    def __init__(self, started: StartedReplicas, clerk_options: dict[str, Any] | None = None) -> None:
        super().__init__(started)
        self._clerk_options = dict(clerk_options or {})
        self._clerks = itertools.count()

    @property
    def endpoints(self) -> Any:
        """Endpoints for a new clerk: the replicas' stream addresses with the service's secret (and
        their handles, to find a replica that moved), the replicas' handles, or fresh enabled ends on
        the network. Picklable: pass them to another actor to build a clerk there (through Ray only:
        stream endpoints carry the secret)."""
        if self.secret is not None:
            return self.stream_endpoints(tuple(self.addresses), self.secret, self.names, tuple(self.replicas))
        if self.network is None:
            return self.direct_endpoints(tuple(self.replicas), self.names)
        k = next(self._clerks)
        ends = tuple(f"clerk{k}->{name}" for name in self.names)
        ray.get([self.network.make_end.remote(e, name) for e, name in zip(ends, self.names, strict=True)],
                timeout=30)
        ray.get(self.network.enable_many.remote(list(ends), True), timeout=30)
        return self.network_endpoints(self.network, ends, self.names)

    def clerk(self, **options: Any) -> SyncClerkT:
        """A synchronous clerk; ``options`` (as for the service's ``Clerk``, e.g. ``attempt_timeout``)
        override the group's clerk defaults."""
        return self.clerk_class(self.endpoints, **(self._clerk_options | options))  # type: ignore[no-any-return]

    def async_clerk(self, **options: Any) -> AsyncClerkT:
        """An asyncio clerk (use it from one event loop); ``options`` as for :meth:`clerk` (and
        ``max_batch``)."""
        return self.async_clerk_class(self.endpoints, **(self._clerk_options | options))  # type: ignore[no-any-return]


def warn_failed(log: logging.Logger, group: ServiceGroup, status_hint: str) -> None:
    """Log a warning for every replica of ``group`` that did not start."""
    n, failed = group.n, group.failed_at_start
    for i, why in sorted(failed.items()):
        log.warning("group %s: replica %d did not start; the group runs on %d of %d replicas (see "
                    "%s): %s", group.name, i, n - len(failed), n, status_hint, why)
