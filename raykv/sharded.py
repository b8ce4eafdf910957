"""The sharded key-value service on a Ray cluster: start it, change it, use it, watch it, stop it.

    import raykv

    kv = raykv.start_sharded(groups=3, replicas=3)   # a controller and 3 groups of 3 replicas
    ck = kv.clerk()
    ck.put("user:42", "Ada")
    kv.add_group()                                   # a 4th group: shards move to it
    print(kv.status().format())
    kv.stop()

A service is a controller group (:mod:`shardctrler`) and shard groups (:mod:`shardkv`) of
``replicas`` replicas each, placed by :mod:`actors.placement` (each group's replicas on distinct nodes
when the cluster has enough), plus a small *registry* actor named ``raykv-sharded:<name>`` in the
service's Ray namespace that holds the service's description (:class:`ServiceInfo`: the replicas'
handles, names, nodes, storage directories and placements). Any driver on the cluster can
:func:`attach` to a running service by its name, through the registry, and do everything the starting
driver can. With ``detached=True`` every actor of the service (the registry included) is a detached
actor: the service outlives the driver that started it, as a Ray Serve application does, until someone
stops it (:meth:`ShardedKV.stop`, or ``raykv stop --name NAME``).

Bad input (an unknown group, a shard out of range, a wrong type, an unknown service name, a name
already taken) raises ``TypeError`` / ``ValueError`` / :class:`ServiceNotFoundError` /
:class:`ServiceExistsError` with what was wrong, before anything is changed. Changes to one service
(adding, removing groups) are meant to come from one driver at a time; the registry refuses a change
made against an out-of-date description (:class:`ServiceError`).
"""

from __future__ import annotations

import functools
import random
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayError

from actors.placement import (
    STRATEGIES,
    GroupPlacement,
    node_local_dir,
    nodes_of,
    place_group,
    remove_dirs,
)
from actors.replacer import ReplaceOptions
from actors.sessions import DEFAULT_SESSION_TTL_S, ttl_ms
from actors.storage import FileStorage, MemoryStorage
from raykv.cluster import ClusterError, init_ray
from raykv.sharded_status import GroupStatus, ReplicaReplacement, ServiceStatus, group_status
from shardctrler.config import Config, _check_nshards

__all__ = [
    "REGISTRY_PREFIX",
    "ClusterError",
    "GroupInfo",
    "GroupStatus",
    "ReplicaReplacement",
    "ServiceError",
    "ServiceExistsError",
    "ServiceInfo",
    "ServiceNotFoundError",
    "ServiceStatus",
    "ShardedKV",
    "attach",
    "list_services",
    "running",
    "start",
]

#: the registry actor of service ``name`` is ``REGISTRY_PREFIX + name``
REGISTRY_PREFIX = "raykv-sharded:"
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,47}")
MAPPINGS = ("hash", "reference")
MAX_REPLICAS = 15
MAX_GROUPS = 100
#: the transports a service can use (the first is the default)
TRANSPORTS = ("stream", "direct", "network")


class ServiceError(RuntimeError):
    """The service could not be started, reached or changed (the message says why and what to do)."""


class ServiceNotFoundError(ServiceError, LookupError):
    """No service of that name runs in that namespace."""


class ServiceExistsError(ServiceError):
    """A service of that name already runs in that namespace."""


@dataclass(frozen=True)
class GroupInfo:
    """One replica group of a service: the controller (``gid=0``) or shard group ``gid``.

    The group has one *slot* per replica: slot ``i`` is the server named ``names[i]``. ``replicas``
    are the slots' actor handles, ``names`` the servers' names as the configurations carry them,
    ``nodes`` where each slot's replica runs, ``data_dir`` the storage directory (on each replica's own
    node; ``None`` for memory storage). ``peers``: the Raft peer id in each slot (empty: the slot
    numbers, as at the start). When a lost replica is replaced (actors/replacer.py) its slot gets the
    new replica, under the same name, on another node, with a new peer id; ``replacements`` lists
    every replacement, oldest first (:class:`ReplicaReplacement`).
    """

    gid: int
    name: str
    replicas: tuple[Any, ...]
    names: tuple[str, ...]
    nodes: tuple[str | None, ...]
    data_dir: str | None
    placement: GroupPlacement
    peers: tuple[int, ...] = ()
    replacements: tuple[ReplicaReplacement, ...] = ()


@dataclass(frozen=True)
class ServiceInfo:
    """What the registry holds: everything another driver needs to use or stop the service.
    ``version`` grows by one with every change."""

    name: str
    namespace: str
    nshards: int
    mapping: str
    replicas: int
    storage: str
    detached: bool
    data_root: str | None
    placement: str
    ctrler: GroupInfo
    groups: tuple[GroupInfo, ...]
    version: int = 0
    #: the FaultyNetwork actor every RPC goes through (``transport="network"``), else ``None``
    network: Any = None
    #: seconds a client may stay idle before the servers forget its session (``None``: never)
    session_ttl: float | None = DEFAULT_SESSION_TTL_S
    #: how servers and clerks talk: ``"stream"`` (authenticated TCP streams), ``"direct"`` (Ray actor
    #: calls) or ``"network"`` (through ``network``)
    transport: str = "direct"
    #: the service's one stream secret (``transport="stream"``; controller and every group share it):
    #: made when the service starts, handed out only through Ray (this description, kept by the registry)
    secret: bytes | None = field(default=None, repr=False)

    def group(self, gid: int) -> GroupInfo | None:
        return next((g for g in self.groups if g.gid == gid), None)

    @property
    def gids(self) -> tuple[int, ...]:
        return tuple(sorted(g.gid for g in self.groups))


@dataclass
class _Slots:
    """The registry's own record of a group's slots, kept apart from the drivers' description (so a
    replacement, made by the service itself, never conflicts with a driver's compare-and-set)."""

    peers: list[int]
    replicas: list[Any]
    nodes: list[str | None]
    next_peer: int
    done: list[ReplicaReplacement] = field(default_factory=list)
    current: ReplicaReplacement | None = None
    #: what the slot of the replacement in progress held before: (peer, handle, node)
    before: tuple[int, Any, str | None] | None = None


class ServiceRegistry:
    """The registry actor: holds one :class:`ServiceInfo`; changes are compare-and-set on ``version``.

    It is also the *directory* of the groups' replacements of lost replicas (the protocol of
    :mod:`actors.replacer`): the group's leader asks it for the group's slots, has it create the
    replacement (so the replacement's owner is this registry, which lives as long as the service, and
    not the leader, whose death would take the replacement with it) and tells it when the
    replacement is done. Its slot records override the drivers' description in :meth:`get`, and
    replacements do not change ``version``.
    """

    def __init__(self) -> None:
        self.info: ServiceInfo | None = None
        self.slots: dict[int, _Slots] = {}
        self.is_stopping = False

    def get(self) -> ServiceInfo | None:
        if self.info is None:
            return None
        info = self.info
        return replace(info, ctrler=self._merged(info.ctrler),
                       groups=tuple(self._merged(g) for g in info.groups))

    def _merged(self, g: GroupInfo) -> GroupInfo:
        sl = self.slots.get(g.gid)
        if sl is None:
            return g
        return replace(g, replicas=tuple(sl.replicas), nodes=tuple(sl.nodes), peers=tuple(sl.peers),
                       replacements=tuple(sl.done) + ((sl.current,) if sl.current is not None else ()))

    def _group(self, gid: int) -> GroupInfo | None:
        if self.info is None or self.is_stopping:
            return None
        return self.info.ctrler if gid == 0 else self.info.group(gid)

    def _slots(self, g: GroupInfo) -> _Slots:
        sl = self.slots.get(g.gid)
        if sl is None:
            peers = list(g.peers) if g.peers else list(range(len(g.replicas)))
            sl = self.slots[g.gid] = _Slots(peers, list(g.replicas), list(g.nodes), max(peers) + 1)
        return sl

    def stopping(self) -> ServiceInfo | None:
        """The service is being stopped: no more replacements. Returns the description to stop."""
        self.is_stopping = True
        return self.get()

    # -- the directory of actors/replacer.py ------------------------------------------------------

    def replacement_view(self, gid: int) -> dict[str, Any] | None:
        g = self._group(gid)
        if g is None:
            return None
        sl = self._slots(g)
        load: dict[str, int] = {}
        info = self.get()
        assert info is not None
        for other in (info.ctrler, *info.groups):
            for node in other.nodes:
                if node is not None:
                    load[node] = load.get(node, 0) + 1
        cur = sl.current
        return {"target": len(g.names),
                "slots": {p: (i, sl.nodes[i], sl.replicas[i]) for i, p in enumerate(sl.peers)},
                "in_progress": None if cur is None else (cur.slot, cur.old_peer, cur.new_peer, cur.new_node),
                "load": load}

    def spawn_replacement(self, gid: int, old: int, slot: int, node: str, cls: Any, template: Any,
                          detected: float) -> tuple[int, Any] | str:
        g = self._group(gid)
        if g is None:
            return "the group is gone or the service is stopping"
        sl = self._slots(g)
        cur = sl.current
        if cur is not None:
            if cur.old_peer == old and cur.slot == slot:  # asked again (the leader lost the answer)
                return cur.new_peer, sl.replicas[slot]
            return f"P{cur.new_peer} is already replacing P{cur.old_peer}"
        if not 0 <= slot < len(sl.peers) or sl.peers[slot] != old:
            return f"slot {slot} does not hold P{old} (slots hold {sl.peers})"
        info = self.info
        assert info is not None
        new = sl.next_peer
        storage: Any = MemoryStorage
        if info.storage == "durable" and g.data_dir is not None:
            storage = functools.partial(FileStorage, f"{g.data_dir}/replica{slot}-p{new}", new=True,
                                        lock_timeout=5.0)
        me = ray.get_runtime_context().current_actor
        spec = replace(template, name=g.names[slot], peer_id=new, join=True, storage=storage,
                       seed=random.randrange(2**31),
                       extra=dict(template.extra) | {"replace": ReplaceOptions(me, gid)})
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        opts: dict[str, Any] = {"name": g.names[slot], "namespace": info.namespace,
                                "scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=False)}
        if info.detached:
            opts["lifetime"] = "detached"
        try:
            handle = ray.remote(num_cpus=0, max_concurrency=1000, max_restarts=0,
                                max_task_retries=0)(cls).options(**opts).remote(spec)
        except ValueError as exc:  # the dead replica still holds its name: killing it releases it
            with suppress(Exception):
                ray.kill(sl.replicas[slot], no_restart=True)
            return f"cannot create {g.names[slot]} yet (the name is released once Ray has let the " \
                   f"dead replica go): {exc}"
        sl.before = (old, sl.replicas[slot], sl.nodes[slot])
        sl.current = ReplicaReplacement(slot, old, new, sl.nodes[slot], node, detected, time.time())
        sl.peers[slot], sl.replicas[slot], sl.nodes[slot] = new, handle, node
        sl.next_peer += 1
        return new, handle

    def abandon_replacement(self, gid: int, new: int) -> None:
        g = self._group(gid)
        sl = self.slots.get(gid)
        if g is None or sl is None or sl.current is None or sl.current.new_peer != new:
            return
        cur = sl.current
        with suppress(Exception):
            ray.kill(sl.replicas[cur.slot], no_restart=True)
        assert sl.before is not None
        sl.peers[cur.slot], sl.replicas[cur.slot], sl.nodes[cur.slot] = sl.before
        sl.done.append(replace(cur, finished=time.time(), outcome="abandoned"))
        sl.current = sl.before = None

    def finish_replacement(self, gid: int, old: int, new: int) -> None:
        sl = self.slots.get(gid)
        if sl is None or sl.current is None or (sl.current.old_peer, sl.current.new_peer) != (old, new):
            return
        sl.done.append(replace(sl.current, finished=time.time(), outcome="done"))
        sl.current = sl.before = None

    def node_id(self) -> str:
        """The Ray node this registry runs on (the head node whenever the cluster has one)."""
        return str(ray.get_runtime_context().get_node_id())

    def put(self, info: ServiceInfo, expected_version: int | None) -> bool:
        current = None if self.info is None else self.info.version
        if current != expected_version:
            return False
        self.info = info
        keep = {0, *info.gids}
        self.slots = {gid: sl for gid, sl in self.slots.items() if gid in keep}
        return True


_Registry = ray.remote(num_cpus=0, max_restarts=0, max_concurrency=1)(ServiceRegistry)


# ------------------------------------------------------------------------------------------------
# Input checks
# ------------------------------------------------------------------------------------------------


def _int_in(what: str, value: Any, lo: int, hi: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be an int, got {type(value).__name__} {value!r:.60}")
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise ValueError(f"{what} must be {bound}, got {value}")
    return value


def _check_name(name: Any) -> str:
    if not isinstance(name, str):
        raise TypeError(f"a service name must be a str, got {type(name).__name__} {name!r:.60}")
    if not _NAME_RE.fullmatch(name):
        raise ValueError(f"bad service name {name!r:.60}: use 1 to 48 letters, digits, '_', '.' or '-', "
                         "starting with a letter or digit")
    return name


def _choice(what: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{what} must be one of {', '.join(map(repr, allowed))}; got {value!r:.60}")
    return str(value)


# ------------------------------------------------------------------------------------------------
# Starting, attaching, listing
# ------------------------------------------------------------------------------------------------


def start(
    name: str | None = None,
    *,
    groups: int = 3,
    replicas: int = 3,
    nshards: int = 10,
    mapping: str = "hash",
    storage: str = "durable",
    data_root: str | None = None,
    detached: bool = False,
    placement: str = "spread",
    address: str | None = None,
    namespace: str | None = None,
    transport: str = "stream",
    session_ttl: float | None = DEFAULT_SESSION_TTL_S,
) -> ShardedKV:
    """Start a sharded KV service on the current Ray cluster (an embedded one if none is running;
    ``address`` to connect to one, as :func:`raykv.init_ray`): a controller of ``replicas`` replicas
    and ``groups`` shard groups (gids 1..groups) of ``replicas`` replicas each, joined in one
    configuration, serving ``nshards`` shards.

    ``mapping``: ``"hash"`` (a stable hash of the whole key: real use) or ``"reference"`` (first byte
    mod nshards). ``storage``: ``"durable"`` (each replica's directory on its own node, under
    ``data_root`` if given, else the node's temporary directory) or ``"memory"``. ``placement``:
    ``"spread"`` (distinct nodes when the cluster has enough, else packed with a warning), ``"strict"``
    (fail instead of packing) or ``"pack"``. ``detached``: every actor outlives this driver (needs a
    cluster that outlives it too: started with ``ray start``, not embedded here). ``transport``:
    ``"stream"`` (the default: replicas, clerks and groups talk over authenticated TCP streams, one
    secret for the whole service, made at start and handed out only through Ray; Ray finds, places,
    starts and stops the actors), ``"direct"`` (Ray actor calls) or ``"network"`` (every RPC, clerks'
    included, through one :class:`~actors.network.FaultyNetwork` actor, ``info.network``, so that
    faults can be injected: ``raykv torture``; not with ``detached``). Lost replicas are replaced
    (actors/replacer.py) on the stream and direct transports. ``session_ttl``: seconds a client may
    stay idle before the servers forget its session (:mod:`actors.sessions`; default an hour;
    ``None``: never); the service's clerks get it too.
    """
    name = _check_name(name) if name is not None else f"sharded-{uuid.uuid4().hex[:6]}"
    _int_in("groups", groups, 1, MAX_GROUPS)
    _int_in("replicas", replicas, 1, MAX_REPLICAS)
    _check_nshards(nshards)
    _choice("mapping", mapping, MAPPINGS)
    _choice("storage", storage, ("durable", "memory"))
    _choice("placement", placement, STRATEGIES)
    if not isinstance(detached, bool):
        raise TypeError(f"detached must be a bool, got {detached!r:.60}")
    _choice("transport", transport, TRANSPORTS)
    ttl_ms(session_ttl)
    if detached and transport == "network":
        raise ValueError("transport='network' is for fault injection (raykv torture): its network actor "
                         "lives with this driver, so it cannot be combined with detached=True")
    if data_root is not None and not isinstance(data_root, str | Path):
        raise TypeError(f"data_root must be a path, got {type(data_root).__name__}")
    cluster = init_ray(address, namespace)
    if detached and cluster.mode == "embedded":
        cluster.shutdown()
        raise ServiceError("a detached service must run on a Ray cluster that outlives this process; "
                           "start one with 'ray start --head' and pass address='auto' (or its address)")
    ns = ray.get_runtime_context().namespace
    registry = _create_registry(name, ns, detached)
    root: str | None = None
    if storage == "durable":
        root = node_local_dir(name) if data_root is None else str(Path(data_root) / f"{name}-"
                                                                       f"{uuid.uuid4().hex[:8]}")
    made: list[GroupInfo] = []
    network: Any = None
    try:
        # the controller's start makes the service's one stream secret; every shard group gets it
        ctrler, network, secret = _start_ctrler(name, replicas, nshards, storage, root, detached, placement,
                                                transport, session_ttl)
        made.append(ctrler)
        for gid in range(1, groups + 1):
            made.append(_start_shard_group(name, gid, ctrler, nshards, replicas, mapping, storage, root,
                                           detached, placement, network, session_ttl, secret))
        info = ServiceInfo(name, ns, nshards, mapping, replicas, storage, detached, root, placement,
                           ctrler, tuple(made[1:]), version=1, network=network, session_ttl=session_ttl,
                           transport=transport, secret=secret)
        kv = ShardedKV(info, registry)
        kv._ctrler_clerk(refresh=False).join({g.gid: list(g.names) for g in made[1:]}, timeout=60)
        if not ray.get(registry.put.remote(info, None), timeout=30):
            raise ServiceError(f"the registry of service {name!r} was changed while it started")
        if transport in REPLACING_TRANSPORTS:
            _enable_replacement(registry, made)
    except BaseException:
        if network is not None:
            ray.kill(network, no_restart=True)
        for g in reversed(made):
            _stop_group(g, keep_data=False)
        if root is not None:
            remove_dirs({(node, root) for g in made for node in g.nodes})
        ray.kill(registry, no_restart=True)
        raise
    return kv


def _create_registry(name: str, namespace: str, detached: bool) -> Any:
    try:
        ray.get_actor(REGISTRY_PREFIX + name, namespace=namespace)
    except ValueError:
        pass
    else:
        raise ServiceExistsError(f"a sharded service named {name!r} already runs in namespace "
                                 f"{namespace!r}; attach to it, stop it, or choose another name")
    opts: dict[str, Any] = {"name": REGISTRY_PREFIX + name, "namespace": namespace}
    if detached:
        opts["lifetime"] = "detached"
    head = _head_node()
    if head is not None:  # on the head node, which lives as long as the cluster (a hard affinity: a
        # registry that a soft one let spill onto a worker node would die with that node)
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(head, soft=False)
    try:
        registry = _Registry.options(**opts).remote()
        ray.get(registry.get.remote(), timeout=60)
    except ValueError as exc:  # the name was taken between the check and the creation
        raise ServiceExistsError(f"a sharded service named {name!r} already runs in namespace "
                                 f"{namespace!r}: {exc}") from exc
    return registry


#: the transports on which a service's groups replace their lost replicas (on the network transport
#: every replica is wired to the network actor's ends, which nobody makes for a replacement)
REPLACING_TRANSPORTS = ("stream", "direct")


def _enable_replacement(registry: Any, groups: list[GroupInfo]) -> None:
    """Have every replica of ``groups`` replace its group's lost replicas while it leads, with the
    registry as the directory (actors/replacer.py); the stream and direct transports only
    (:data:`REPLACING_TRANSPORTS`)."""
    refs = [r.enable_replacement.remote(ReplaceOptions(registry, g.gid)) for g in groups for r in g.replicas]
    ray.get(refs, timeout=30)


def _head_node() -> str | None:
    for node in ray.nodes():
        if node.get("Alive") and "node:__internal_head__" in node.get("Resources", {}):
            return str(node["NodeID"])
    return None


def _start_ctrler(service: str, n: int, nshards: int, storage: str, root: str | None, detached: bool,
                  strategy: str, transport: str = "direct",
                  session_ttl: float | None = DEFAULT_SESSION_TTL_S) -> tuple[GroupInfo, Any, bytes | None]:
    """The controller group; its network actor (network transport) and the service's stream secret
    (stream transport: made by the group's start, :func:`actors.stream_auth.new_secret`)."""
    import shardctrler

    name = f"{service}-ctrler"
    placement = place_group(n, name=name, strategy=strategy, detached=detached)
    data_dir = None if root is None else f"{root}/ctrler"
    try:
        group = shardctrler.start_group(n, nshards=nshards, storage=storage, data_dir=data_dir, name=name,
                                        placement=placement, transport=transport, session_ttl=session_ttl)
    except BaseException:
        placement.release()
        raise
    return GroupInfo(0, name, tuple(group.replicas), tuple(group.names), tuple(group.nodes), data_dir,
                     placement), group.network, group.secret


def _start_shard_group(service: str, gid: int, ctrler: GroupInfo, nshards: int, n: int, mapping: str,
                       storage: str, root: str | None, detached: bool, strategy: str,
                       network: Any = None, session_ttl: float | None = DEFAULT_SESSION_TTL_S,
                       secret: bytes | None = None) -> GroupInfo:
    import shardkv.group

    name = f"{service}-g{gid}"
    placement = place_group(n, name=name, strategy=strategy, detached=detached)
    data_dir = None if root is None else f"{root}/g{gid}"
    try:
        view = _CtrlerView(ctrler, nshards, network, secret)
        group = shardkv.group.start_group(gid, view, n, storage=storage, data_dir=data_dir, mapping=mapping,
                                          name=name, placement=placement, session_ttl=session_ttl)
    except BaseException:
        placement.release()
        raise
    replicas = tuple(group.replicas)
    return GroupInfo(gid, name, replicas, tuple(group.names), tuple(nodes_of(replicas)), data_dir, placement)


@dataclass(frozen=True)
class _CtrlerView:
    """What :func:`shardkv.group.start_group` needs of a controller group: its servers, and how they are
    reached (``network``: the network transport's actor; ``secret``: the stream transport's secret;
    neither: direct)."""

    info: GroupInfo
    nshards: int
    network: Any = None
    secret: bytes | None = field(default=None, repr=False)

    @property
    def names(self) -> tuple[str, ...]:
        return self.info.names

    @property
    def replicas(self) -> tuple[Any, ...]:
        return self.info.replicas


def attach(name: str, *, address: str | None = None, namespace: str | None = None) -> ShardedKV:
    """The running service ``name``, found through its registry in ``namespace`` (default: this
    driver's namespace once connected; ``address`` as for :func:`raykv.init_ray`)."""
    _check_name(name)
    init_ray(address, None)
    ns = namespace if namespace is not None else ray.get_runtime_context().namespace
    try:
        registry = ray.get_actor(REGISTRY_PREFIX + name, namespace=ns)
    except ValueError:
        others = [f"{s} (namespace {n!r})" for n, s in list_services(all_namespaces=True)]
        known = f"; running services: {', '.join(others)}" if others else "; no service runs on this cluster"
        raise ServiceNotFoundError(f"no sharded service named {name!r} in namespace {ns!r}{known}") from None
    info = ray.get(registry.get.remote(), timeout=30)
    if info is None:
        raise ServiceNotFoundError(f"service {name!r} in namespace {ns!r} is still starting or failed to "
                                   "start; try again in a few seconds")
    return ShardedKV(info, registry)


def list_services(namespace: str | None = None, *, all_namespaces: bool = False) -> list[tuple[str, str]]:
    """``(namespace, name)`` of the services running in ``namespace`` (default: this driver's), or in
    every namespace. Ray must be initialised."""
    ns = namespace if namespace is not None else ray.get_runtime_context().namespace
    out = []
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["name"].startswith(REGISTRY_PREFIX) and (all_namespaces or actor["namespace"] == ns):
            out.append((actor["namespace"], actor["name"][len(REGISTRY_PREFIX):]))
    return sorted(out)


def _stop_group(g: GroupInfo, keep_data: bool, namespace: str | None = None) -> list[str]:
    """Kill a group's replicas (and whatever runs under its servers' names: a replacement started
    since ``g`` was read), release its placement, remove its storage unless ``keep_data``.
    Returns what could not be removed."""
    for r in g.replicas:
        with suppress(RayError, ValueError):  # already gone
            ray.kill(r, no_restart=True)
    if namespace is not None:
        for name in g.names:
            with suppress(RayError, ValueError):  # no actor of that name
                ray.kill(ray.get_actor(name, namespace=namespace), no_restart=True)
    g.placement.release()
    if keep_data or g.data_dir is None:
        return []
    return remove_dirs({(node, g.data_dir) for node in g.nodes})


# ------------------------------------------------------------------------------------------------
# The service
# ------------------------------------------------------------------------------------------------


class ShardedKV:
    """A running sharded KV service (from :func:`start` or :func:`attach`). Use it from one thread.

    Attributes: ``name``, ``namespace``, ``nshards``, ``mapping``, ``gids`` (the shard groups),
    ``info`` (the registry's :class:`ServiceInfo` as last read).
    """

    def __init__(self, info: ServiceInfo, registry: Any) -> None:
        self.info = info
        self._registry = registry
        self._stopped = False
        #: the router of this handle's administrative calls (stream transport), made on first use
        self._admin_router: Any = None

    # -- what it is ------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def namespace(self) -> str:
        return self.info.namespace

    @property
    def nshards(self) -> int:
        return self.info.nshards

    @property
    def mapping(self) -> str:
        return self.info.mapping

    @property
    def gids(self) -> tuple[int, ...]:
        return self.info.gids

    @property
    def transport(self) -> str:
        """``"stream"``, ``"direct"`` or ``"network"``: how its servers and clerks talk."""
        return self.info.transport

    def __repr__(self) -> str:
        return (f"ShardedKV({self.name!r}, namespace={self.namespace!r}, groups={list(self.gids)}, "
                f"replicas={self.info.replicas}, nshards={self.nshards}, mapping={self.mapping!r}, "
                f"transport={self.transport!r}{', detached' if self.info.detached else ''})")

    # -- clients ---------------------------------------------------------------------------------

    def _router(self) -> Any:
        """A new router for a clerk: over the service's streams, straight to the actors, or through
        its network actor, as the service was started."""
        from shardkv.endpoints import DirectRouter, NetworkRouter, StreamRouter

        if self.info.network is not None:
            return NetworkRouter(self.info.network)
        c = self.info.ctrler
        known = dict(zip(c.names, c.replicas, strict=True))
        if self.info.transport == "stream":
            if self.info.secret is None:
                raise ServiceError(f"service {self.name!r} runs on streams but its description has no "
                                   "secret (a registry from an older raykv?): stop and start it again")
            return StreamRouter(self.info.secret, known, self.namespace)
        return DirectRouter(known, self.namespace)

    def clerk(self, **options: Any) -> Any:
        """A synchronous :class:`shardkv.clerk.Clerk` (``get``, ``put``, ``append``, each with
        ``timeout=``); ``options`` as for it (``attempt_timeout``, ``retry_pause``, ...). One per
        thread."""
        from shardkv.clerk import Clerk

        self._refresh()
        return Clerk(self._router(), self.info.ctrler.names, mapping=self.mapping,
                     **({"session_ttl": self.info.session_ttl} | options))

    def async_clerk(self, **options: Any) -> Any:
        """An asyncio :class:`shardkv.async_clerk.AsyncClerk` that batches concurrent calls per group;
        use it from one event loop, ``await ck.close()`` when done."""
        from shardkv.async_clerk import AsyncClerk

        self._refresh()
        return AsyncClerk(self._router(), self.info.ctrler.names, mapping=self.mapping,
                          **({"session_ttl": self.info.session_ttl} | options))

    def _ctrler_clerk(self, refresh: bool = True) -> Any:
        """A controller clerk for one administrative call: a fresh one (a new session) each time, so a
        handle left idle for longer than the session TTL never finds its session forgotten; with the
        controller's replicas as the registry knows them now (a lost one may have been replaced). On
        the stream transport it calls over the service's streams (through one router kept by this
        handle, whose connections are shared by the process's routers), else straight to the actors."""
        from shardctrler.clerk import Clerk as CtrlerClerk
        from shardctrler.endpoints import DirectEndpoints
        from shardkv.endpoints import CtrlerEndpoints

        if refresh:
            self._refresh()
        c = self.info.ctrler
        endpoints: Any
        if self.info.transport == "stream":
            if self._admin_router is None:
                self._admin_router = self._router()
            else:  # the controller's replicas as known now (a replacement is found by its name anyway)
                self._admin_router.known = dict(zip(c.names, c.replicas, strict=True))
            endpoints = CtrlerEndpoints(self._admin_router, c.names)
        else:
            endpoints = DirectEndpoints(c.replicas, c.names)
        return CtrlerClerk(endpoints, session_ttl=self.info.session_ttl)

    # -- configuration ---------------------------------------------------------------------------

    def config(self, num: int = -1, *, timeout: float = 30.0) -> Config:
        """Configuration ``num`` (the latest for -1): which group serves each shard."""
        _int_in("num", num, -1)
        self._check_running()
        return self._ctrler_clerk().query(num, timeout=timeout)

    def move(self, shard: int, gid: int, *, timeout: float = 30.0) -> int:
        """Give ``shard`` to group ``gid``; returns the new configuration's number. The shard moves in
        the background (:meth:`wait_settled` waits for it)."""
        _int_in("shard", shard, 0, self.nshards - 1)
        self._refresh()
        self._known_gid(gid)
        return int(self._ctrler_clerk().move(shard, gid, timeout=timeout))

    def add_group(self, gid: int | None = None, *, timeout: float = 60.0) -> int:
        """Start a new shard group (``gid``: the next free one by default) of the service's replica
        count and join it: shards move to it in the background. Returns its gid."""
        self._refresh()
        if gid is None:
            gid = max(self.gids, default=0) + 1
        _int_in("gid", gid, 1)
        if gid in self.gids:
            raise ValueError(f"group {gid} is already in service {self.name!r} (groups: {list(self.gids)})")
        info = self.info
        g = _start_shard_group(info.name, gid, info.ctrler, info.nshards, info.replicas, info.mapping,
                               info.storage, info.data_root, info.detached, info.placement, info.network,
                               info.session_ttl, info.secret)
        try:
            self._commit(replace(info, groups=(*info.groups, g), version=info.version + 1))
            if info.transport in REPLACING_TRANSPORTS:
                _enable_replacement(self._registry, [g])
        except BaseException:
            _stop_group(g, keep_data=False)
            raise
        try:
            self._ctrler_clerk().join({gid: list(g.names)}, timeout=timeout)
        except TimeoutError as exc:  # the join may still happen: the group must keep running
            raise ServiceError(f"group {gid} runs and is registered, but its join did not complete within "
                               f"{timeout:g} s ({exc}); see status(), and remove_group({gid}) once it is "
                               "in the configuration if it is not wanted") from exc
        except BaseException:  # refused (the controller knows that gid already): nothing was joined
            _stop_group(g, keep_data=False)
            self._commit(replace(self.info, groups=tuple(x for x in self.info.groups if x.gid != gid),
                                 version=self.info.version + 1), quiet=True)
            raise
        return gid

    def remove_group(self, gid: int, *, timeout: float = 120.0) -> None:
        """Make group ``gid`` leave, wait until its shards have moved to the other groups and it holds
        nothing, then stop it. The last group cannot be removed (its data would have nowhere to go).

        It is stopped only once every other group has finished the configuration it left in (each is
        past it, or in it and settled): a group that pulled a shard from it confirms the deletion with
        it before moving on, and a leaving group stopped before that confirmation came back (a reply
        lost on an unreliable network) would hold the puller in that configuration for good."""
        _int_in("gid", gid, 1)
        self._refresh()
        self._known_gid(gid)
        if len(self.gids) == 1:
            raise ValueError(f"group {gid} is the last group of service {self.name!r}: its shards would "
                             "have nowhere to go; add another group first, or stop the service")
        deadline = time.monotonic() + timeout
        num = int(self._ctrler_clerk().leave([gid], timeout=timeout))
        g = self.info.group(gid)
        assert g is not None
        while True:
            st = group_status(g, self._remaining(deadline))
            if st.config >= num and not (st.owned or st.arriving or st.leaving or st.held):
                break
            if time.monotonic() > deadline:
                raise ServiceError(f"group {gid} left in configuration {num}, but after {timeout:g} s it "
                                   f"still holds shards (config {st.config}, serving {list(st.owned)}, "
                                   f"leaving {list(st.leaving)}); it keeps running: call remove_group "
                                   "again to wait longer")
            time.sleep(0.1)
        while True:  # the others have confirmed every deletion they asked of it (see the docstring)
            behind = [o.gid for o in (group_status(x, self._remaining(deadline))
                                      for x in self.info.groups if x.gid != gid)
                      if not (o.config > num or (o.config == num and o.settled))]
            if not behind:
                break
            if time.monotonic() > deadline:
                raise ServiceError(f"group {gid} left in configuration {num} and holds nothing, but after "
                                   f"{timeout:g} s groups {behind} have not finished that configuration "
                                   "(they may still have to confirm a deletion with it); it keeps "
                                   "running: call remove_group again to wait longer")
            time.sleep(0.1)
        self._commit(replace(self.info, groups=tuple(x for x in self.info.groups if x.gid != gid),
                             version=self.info.version + 1))
        _stop_group(g, keep_data=False, namespace=self.namespace)

    # -- watching --------------------------------------------------------------------------------

    def status(self, *, timeout: float = 10.0) -> ServiceStatus:
        """Per group: leader, term, replicas up, shards owned, arriving and leaving, nodes (and on the
        stream transport each replica's stream address); plus the controller's leader and the latest
        configuration (``None`` if it could not be read)."""
        self._refresh()
        try:
            config: Config | None = self._ctrler_clerk().query(-1, timeout=timeout)
        except TimeoutError:
            config = None
        stream = self.info.transport == "stream"
        ctrler = group_status(self.info.ctrler, timeout, ctrler=True, stream=stream)
        groups = tuple(group_status(g, timeout, stream=stream) for g in self.info.groups)
        return ServiceStatus(self.name, self.namespace, self.nshards, self.mapping, self.info.detached,
                             config, ctrler, groups, transport=self.info.transport)

    def wait_settled(self, *, timeout: float = 60.0) -> Config:
        """Wait until every group has taken the latest configuration and no shard is moving; returns
        that configuration."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.status(timeout=self._remaining(deadline))
            if st.settled:
                assert st.config is not None
                return st.config
            if time.monotonic() > deadline:
                raise TimeoutError(f"service {self.name!r} did not settle within {timeout:g} s:\n"
                                   f"{st.format()}")
            time.sleep(0.1)

    # -- stopping --------------------------------------------------------------------------------

    def stop(self, *, keep_data: bool = False) -> list[str]:
        """Kill every actor of the service (any driver may do it) and remove its storage unless
        ``keep_data``. Returns the directories that could not be removed (on nodes that are gone)."""
        if self._stopped:
            return []
        with suppress(RayError, GetTimeoutError):  # no more replacements; the latest description
            info = ray.get(self._registry.stopping.remote(), timeout=30)
            if info is not None:
                self.info = info
        self._refresh(missing_ok=True)
        self._stopped = True
        left: list[str] = []
        if self.info.network is not None:  # first: no call in flight reports the replicas' deaths
            with suppress(RayError, ValueError):
                ray.kill(self.info.network, no_restart=True)
        everything = (*self.info.groups, self.info.ctrler)
        for g in everything:
            left += _stop_group(g, keep_data, self.namespace)
        if not keep_data and self.info.data_root is not None:  # the service's root on each node
            left += remove_dirs({(node, self.info.data_root) for g in everything for node in g.nodes})
        with suppress(RayError, ValueError):
            ray.kill(self._registry, no_restart=True)
        return left

    def __enter__(self) -> ShardedKV:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals -------------------------------------------------------------------------------

    def _check_running(self) -> None:
        if self._stopped:
            raise ServiceError(f"service {self.name!r} was stopped")

    def _known_gid(self, gid: Any) -> int:
        _int_in("gid", gid, 1)
        if gid not in self.gids:
            raise ValueError(f"no group {gid} in service {self.name!r} (groups: {list(self.gids)})")
        return int(gid)

    @staticmethod
    def _remaining(deadline: float) -> float:
        return max(1.0, deadline - time.monotonic())

    def _refresh(self, missing_ok: bool = False) -> None:
        """Re-read the description from the registry (another driver may have changed the service)."""
        self._check_running()
        deadline = time.monotonic() + 30
        while True:
            try:
                info = ray.get(self._registry.get.remote(), timeout=self._remaining(deadline))
                break
            except (RayError, GetTimeoutError) as exc:
                # ActorUnavailableError is Ray's "try again" (a refused connection while the cluster
                # reacts to a lost node, say); anything else, or 30 s of it, is final
                if isinstance(exc, ActorUnavailableError) and time.monotonic() < deadline:
                    time.sleep(0.5)
                    continue
                if missing_ok:
                    return
                raise ServiceNotFoundError(f"the registry of service {self.name!r} cannot be reached (was "
                                           f"the service stopped?): {exc}") from exc
        if info is not None:
            self.info = info

    def _commit(self, info: ServiceInfo, quiet: bool = False) -> None:
        ok = ray.get(self._registry.put.remote(info, self.info.version), timeout=30)
        if not ok and not quiet:
            raise ServiceError(f"service {self.name!r} was changed by another driver meanwhile; "
                               "nothing was changed here: try again")
        if ok:
            self.info = info


@contextmanager
def running(name: str | None = None, **options: Any) -> Iterator[ShardedKV]:
    """``with running(...) as kv:`` starts a service (as :func:`start`) and stops it on the way out."""
    kv = start(name, **options)
    try:
        yield kv
    finally:
        kv.stop()

