"""Start a kvraft group on the current Ray cluster, hand out clerks, stop it.

    import kvraft
    group = kvraft.start_group(3)          # starts an embedded Ray runtime if none is running
    ck = group.clerk()
    ck.put("k", "v")
    group.stop()

Replicas talk to each other directly (``transport="direct"``, the default) or through a reliable
:class:`~actors.network.FaultyNetwork` actor (``transport="network"``, to measure what the tests'
network costs), and persist to durable :class:`~actors.storage.FileStorage` in ``data_dir`` (a fresh
temporary directory by default) unless ``storage="memory"``. They are spread over the cluster's nodes
when it has several (``scheduling_strategy="SPREAD"``).

Creating versus restarting. A ``data_dir`` that does not exist or is empty makes a new group: each
replica's directory is created with an identity (group name, replica number, group size). Any other
``data_dir`` restarts the group stored there: each replica must find its own directory with the
matching identity, and a replica whose directory is missing, damaged or foreign does not start (it is
never silently started empty). The group starts if a majority of its replicas start; the others are
reported by :meth:`KVGroup.status` with the reason, and in a warning on the ``raykv.kvraft`` logger.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayError, RayTaskError

from actors.network import FaultyNetwork
from actors.replica import ReplicaSpec
from actors.storage import FileStorage, MemoryStorage, StorageError
from kvraft.async_clerk import AsyncClerk
from kvraft.clerk import Clerk
from kvraft.endpoints import DirectEndpoints, NetworkEndpoints
from kvraft.errors import GroupStartError
from kvraft.server import kv_replica_actor
from kvraft.statemachine import KVStateMachine

log = logging.getLogger("raykv.kvraft")


class KVGroup:
    """A running group of KV replicas. Use :func:`start_group` to make one.

    Attributes: ``n``, ``name``, ``replicas`` (actor handles, index = peer id), ``data_dir`` (durable
    storage, or ``None`` for memory storage), ``failed_at_start`` (peer id -> why that replica did not
    start; empty when all did).
    """

    def __init__(self, name: str, replicas: list[Any], data_dir: Path | None, owns_dir: bool,
                 clerk_options: dict[str, Any], network: Any = None,
                 failed_at_start: dict[int, str] | None = None) -> None:
        self.name = name
        self.failed_at_start = dict(failed_at_start or {})
        self.network = network
        self._clerks = itertools.count()
        self.n = len(replicas)
        self.replicas = replicas
        self.data_dir = data_dir
        self._owns_dir = owns_dir
        self._clerk_options = clerk_options
        self._stopped = False

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f"{self.name}-{i}" for i in range(self.n))

    @property
    def endpoints(self) -> DirectEndpoints | NetworkEndpoints:
        """Endpoints for a new clerk: the replicas' handles, or fresh enabled ends on the network."""
        if self.network is None:
            return DirectEndpoints(tuple(self.replicas), self.names)
        k = next(self._clerks)
        ends = tuple(f"clerk{k}->{name}" for name in self.names)
        ray.get([self.network.make_end.remote(e, name) for e, name in zip(ends, self.names, strict=True)],
                timeout=30)
        ray.get(self.network.enable_many.remote(list(ends), True), timeout=30)
        return NetworkEndpoints(self.network, ends, self.names)

    def clerk(self, **options: Any) -> Clerk:
        """A synchronous clerk; ``options`` as for :class:`~kvraft.Clerk` (e.g. ``attempt_timeout``)."""
        return Clerk(self.endpoints, **(self._clerk_options | options))

    def async_clerk(self, **options: Any) -> AsyncClerk:
        """An asyncio clerk (use it from one event loop); options as for :class:`~kvraft.AsyncClerk`."""
        return AsyncClerk(self.endpoints, **(self._clerk_options | options))

    def leader(self, timeout: float = 10.0) -> int:
        """The peer id of the current leader, waiting up to ``timeout`` seconds for one."""
        deadline = time.monotonic() + timeout
        while True:
            states = ray.get([r.get_state.remote() for r in self.replicas], timeout=timeout)
            leaders = [i for i, (_, is_leader) in enumerate(states) if is_leader]
            if leaders:
                return max(leaders, key=lambda i: states[i][0])
            if time.monotonic() > deadline:
                raise TimeoutError(f"no leader in group {self.name!r} after {timeout:g} s")
            time.sleep(0.05)

    def status(self) -> list[dict[str, Any]]:
        """One dict per replica (index = peer id), with at least these keys:

        ``replica`` (peer id), ``name``, ``alive`` (its Raft runs), ``damaged`` (its storage could not
        be opened, read or written: missing, corrupt or foreign directory, failing disk), ``reason``
        (why it is not alive: the storage error with the file, offset and advice; ``None`` when it
        is alive or was merely crashed), ``leader`` (it is the leader it knows of), ``term``; then
        the Raft core's status (``role``, ``commit``, ``applied``, ``last_index``, ...) and storage
        sizes. A replica whose actor cannot be reached is reported with ``role="unreachable"``.
        """
        refs = [r.status.remote() for r in self.replicas]
        out = []
        for i, ref in enumerate(refs):
            try:
                st = ray.get(ref, timeout=30)
            except RayError as exc:
                st = {"role": "unreachable", "failure": f"its actor cannot be reached ({exc})"}
            failure = st.get("failure")
            row: dict[str, Any] = {
                "replica": i,
                "name": self.names[i],
                "alive": st["role"] not in ("down", "unreachable"),
                "damaged": bool(st.get("storage_failed")),
                "reason": failure,
                "leader": st["role"] == "leader",
                "term": st.get("term", 0),
            }
            out.append(row | {k: v for k, v in st.items() if k not in row})
        return out

    def stop(self) -> None:
        """Kill the replicas; a temporary data directory made by :func:`start_group` is removed."""
        if self._stopped:
            return
        self._stopped = True
        for r in self.replicas:
            ray.kill(r, no_restart=True)
        if self.network is not None:
            ray.kill(self.network, no_restart=True)
        if self._owns_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> KVGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_group(
    n: int = 3,
    *,
    storage: str = "durable",
    transport: str = "direct",
    data_dir: str | os.PathLike[str] | None = None,
    maxraftstate: int = -1,
    name: str | None = None,
    tick_s: float = 0.02,
    wait_for_leader: bool = True,
    **clerk_options: Any,
) -> KVGroup:
    """Start ``n`` KV replicas on the current Ray cluster (``ray.init()`` first if none is running).

    ``storage``: ``"durable"`` (FileStorage under ``data_dir``, one subdirectory per replica; a new
    temporary directory if ``data_dir`` is None, removed by :meth:`KVGroup.stop`) or ``"memory"``.
    A missing or empty ``data_dir`` creates a new group there; any other restarts the group stored in
    it (``name`` defaults to the stored one; ``n`` must match). Replicas that cannot start (missing,
    damaged or foreign storage) are left down and reported by :meth:`KVGroup.status`; if they are
    too many for a majority, the group is torn down and :class:`~kvraft.errors.GroupStartError`
    names each one with the reason.
    ``transport``: ``"direct"`` (replica to replica, clerk to replica) or ``"network"`` (every call
    through one reliable FaultyNetwork actor, as in the tests). ``maxraftstate``: snapshot when a
    replica's persisted Raft state exceeds this many bytes (-1: never). ``clerk_options`` become the
    defaults of the group's clerks. With ``wait_for_leader`` the call returns once a leader is elected.
    """
    if n < 1:
        raise ValueError(f"a group needs at least one replica, got n={n}")
    if storage not in ("durable", "memory"):
        raise ValueError(f"storage must be 'durable' or 'memory', got {storage!r}")
    if transport not in ("direct", "network"):
        raise ValueError(f"transport must be 'direct' or 'network', got {transport!r}")
    if not ray.is_initialized():
        ray.init(include_dashboard=False, logging_level="WARNING")
    owns_dir = False
    base: Path | None = None
    fresh = True
    check_name = True  # whether each replica's stored group name must be ``name``
    if storage == "durable" and data_dir is not None:
        base = Path(data_dir)
        fresh = not base.exists() or not any(base.iterdir())
        if not fresh and name is None:
            name = _stored_group_name(base, n)
            check_name = name is not None
    name = name or f"kv-{uuid.uuid4().hex[:8]}"
    if storage == "durable" and data_dir is None:
        base, owns_dir = Path(tempfile.mkdtemp(prefix=f"raykv-{name}-")), True
    actor_cls = kv_replica_actor(scheduling_strategy="SPREAD")
    replicas = []
    for i in range(n):
        store: Any = MemoryStorage
        if base is not None:
            identity: dict[str, Any] = {"replica": i, "replicas": n}
            if check_name:
                identity["group"] = name
            store = functools.partial(FileStorage, str(base / f"replica{i}"), new=fresh, identity=identity,
                                      lock_timeout=5.0)
        replicas.append(actor_cls.remote(ReplicaSpec(
            name=f"{name}-{i}",
            peer_id=i,
            peers=tuple(range(n)),
            state_machine=functools.partial(KVStateMachine, maxraftstate),
            storage=store,
            tick_s=tick_s,
            seed=uuid.uuid4().int % 2**31,
        )))
    network = None
    if transport == "direct":
        handles = dict(enumerate(replicas))
        failed = _started([r.start.remote(1, ("direct", {j: h for j, h in handles.items() if j != i}))
                           for i, r in enumerate(replicas)])
    else:
        network = FaultyNetwork.remote(seed=0)
        ends = {i: {j: f"{name}-{i}->{name}-{j}" for j in range(n) if j != i} for i in range(n)}
        all_ends = [e for i in range(n) for e in ends[i].values()]
        ray.get([network.make_end.remote(e, f"{name}-{j}") for i in range(n) for j, e in ends[i].items()],
                timeout=60)
        ray.get(network.enable_many.remote(all_ends, True), timeout=60)
        failed = _started([r.start.remote(1, ("network", network, ends[i])) for i, r in enumerate(replicas)])
        ray.get([network.add_server.remote(f"{name}-{i}", r, 1) for i, r in enumerate(replicas)],
                timeout=60)
    group = KVGroup(name, replicas, base, owns_dir, clerk_options, network, failed)
    if len(failed) > n - (n // 2 + 1):
        group.stop()
        raise GroupStartError(name, n, failed)
    for i, why in sorted(failed.items()):
        log.warning("group %s: replica %d did not start; the group runs on %d of %d replicas (see "
                    "KVGroup.status()): %s", name, i, n - len(failed), n, why)
    if wait_for_leader:
        group.leader()
    return group


def _started(refs: list[Any]) -> dict[int, str]:
    """Wait for every replica's ``start``; returns peer id -> why it failed, for those that did."""
    failed: dict[int, str] = {}
    for i, ref in enumerate(refs):
        try:
            ray.get(ref, timeout=60)
        except RayTaskError as exc:  # the replica raised (e.g. a StorageError): report the cause
            cause = exc.cause if exc.cause is not None else exc
            failed[i] = f"{type(cause).__name__}: {cause}"
        except RayError as exc:
            failed[i] = f"{type(exc).__name__}: {exc}"
    return failed


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
