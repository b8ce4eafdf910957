"""Placement of a replica group's peers on the nodes of a Ray cluster, and storage that lives there.

    placement = place_group(3, name="kv-1")             # before creating the replicas
    replicas = [actor_cls.options(**placement.options(i)).remote(spec(i)) for i in range(3)]
    ...
    placement.release()                                 # after killing them

**Distinct nodes.** When the cluster has at least ``n`` alive nodes that can host a bundle,
:func:`place_group` reserves a ``STRICT_SPREAD`` placement group of ``n`` tiny bundles
(:data:`BUNDLE_CPU` CPU each; Ray refuses bundles of zero resources, and an actor that asks for no
resources may be scheduled outside its bundle) and replica ``i`` is created in bundle ``i``: every
replica on its own node, so losing one node loses at most one replica of the group. With fewer nodes
(a laptop's single-node runtime, or a cluster smaller than the group) the replicas are *packed*:
Ray's ``SPREAD`` strategy, best effort, and a WARNING on the ``raykv.placement`` logger says that a
node failure may take down more than one replica (once per process for a single-node runtime, where
that is expected; every time on a multi-node cluster). ``strategy="strict"`` raises
:class:`PlacementError` instead of packing; ``strategy="pack"`` packs without a word (tests).

**Storage on the replica's node.** Nodes share no disk. A replica's durable storage is a directory
on the node where it runs, created there by the replica itself (``FileStorage(path, new=True)``
makes the directory and its parents when the actor opens its storage). :func:`node_local_dir` names
such a path without creating anything on the driver; :func:`nodes_of` says where each actor actually
runs; :func:`remove_dirs` deletes directories on the nodes that hold them.

Invariants: the placement never changes after :func:`place_group` returns (``options(i)`` is a pure
function of ``i``); :meth:`GroupPlacement.release` is idempotent and only removes what
:func:`place_group` reserved. Everything here blocks on Ray: call it from a driver, never from inside
an async actor.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayError
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import (
    NodeAffinitySchedulingStrategy,
    PlacementGroupSchedulingStrategy,
)

log = logging.getLogger("raykv.placement")

#: CPU reserved per replica in a spread placement group (replica actors otherwise reserve none)
BUNDLE_CPU = 0.01
#: how long :func:`place_group` waits for a placement group to be reserved before packing instead
DEFAULT_READY_TIMEOUT_S = 30.0
#: the strategies :func:`place_group` accepts
STRATEGIES = ("spread", "strict", "pack")

SPREAD, PACKED = "spread", "packed"

_warned_single_node = False


class PlacementError(RuntimeError):
    """``strategy="strict"`` and the cluster cannot put every replica on its own node."""


@dataclass
class GroupPlacement:
    """Where the ``n`` replicas of group ``name`` go. Picklable (it can be kept by another actor).

    ``mode``: ``"spread"`` (one replica per node, guaranteed by ``placement_group``) or ``"packed"``
    (best effort; ``reason`` says why). ``lifetime``: ``"detached"`` for replicas that outlive the
    driver (the placement group is then detached too), else ``None``.
    """

    name: str
    n: int
    mode: str
    reason: str = ""
    lifetime: str | None = None
    placement_group: PlacementGroup | None = None
    released: bool = field(default=False, compare=False)

    def options(self, i: int) -> dict[str, Any]:
        """The keyword arguments of ``ActorClass.options(...)`` for replica ``i``."""
        if not 0 <= i < self.n:
            raise IndexError(f"replica {i} is not in group {self.name!r} of {self.n} replicas")
        opts: dict[str, Any] = {}
        if self.placement_group is not None:
            opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                self.placement_group, placement_group_bundle_index=i)
            opts["num_cpus"] = BUNDLE_CPU
        else:
            opts["scheduling_strategy"] = "SPREAD"
        if self.lifetime is not None:
            opts["lifetime"] = self.lifetime
        return opts

    @property
    def spread(self) -> bool:
        """Whether every replica is guaranteed its own node."""
        return self.mode == SPREAD

    def describe(self) -> str:
        if self.mode == SPREAD:
            return f"{self.n} replicas on {self.n} distinct nodes"
        return f"{self.n} replicas packed ({self.reason})"

    def release(self) -> None:
        """Give back the reserved placement group (after the replicas are killed). Idempotent."""
        if self.released:
            return
        self.released = True
        if self.placement_group is not None:
            try:
                remove_placement_group(self.placement_group)
            except Exception as exc:  # already removed, or the cluster is gone: nothing to give back
                log.debug("placement group of %s not removed: %s", self.name, exc)


def alive_nodes(min_cpu: float = 0.0) -> list[str]:
    """Node ids of the cluster's alive nodes with at least ``min_cpu`` CPUs in total."""
    return [n["NodeID"] for n in ray.nodes()
            if n.get("Alive") and float(n.get("Resources", {}).get("CPU", 0.0)) >= min_cpu]


def place_group(
    n: int,
    *,
    name: str,
    strategy: str = "spread",
    detached: bool = False,
    ready_timeout: float = DEFAULT_READY_TIMEOUT_S,
) -> GroupPlacement:
    """Decide where the ``n`` replicas of group ``name`` go, on the current Ray cluster (see the module
    docstring). ``detached``: the replicas and their placement group outlive this driver."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"a group needs at least one replica, got n={n!r}")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}; got {strategy!r}")
    lifetime = "detached" if detached else None
    if strategy == "pack":
        return GroupPlacement(name, n, PACKED, "asked to pack", lifetime)
    if n == 1:
        return GroupPlacement(name, n, SPREAD, "", lifetime)
    nodes = alive_nodes(BUNDLE_CPU)
    if len(nodes) < n:
        why = (f"the cluster has {len(nodes)} alive node{'s' if len(nodes) != 1 else ''} with CPUs "
               f"for {n} replicas")
        return _packed(name, n, why, strategy, lifetime, single=len(nodes) <= 1)
    pg = placement_group([{"CPU": BUNDLE_CPU}] * n, strategy="STRICT_SPREAD",
                         name=f"raykv-{name}-{uuid.uuid4().hex[:6]}", lifetime=lifetime)
    try:
        ray.get(pg.ready(), timeout=ready_timeout)
    except (GetTimeoutError, RayError) as exc:
        remove_placement_group(pg)
        why = (f"no {n} distinct nodes had {BUNDLE_CPU} CPU free within {ready_timeout:g} s "
               f"({type(exc).__name__})")
        return _packed(name, n, why, strategy, lifetime, single=False)
    return GroupPlacement(name, n, SPREAD, "", lifetime, pg)


def _packed(name: str, n: int, why: str, strategy: str, lifetime: str | None,
            single: bool) -> GroupPlacement:
    global _warned_single_node
    if strategy == "strict":
        raise PlacementError(f"group {name!r} cannot put its {n} replicas on distinct nodes: {why}. "
                             "Add nodes, use fewer replicas, or allow packing (strategy='spread').")
    if not single or not _warned_single_node:
        log.warning("group %s: %s, so its replicas share nodes; losing one node may take down more "
                    "than one replica (a majority of a group loses its availability). Add nodes for "
                    "node-failure tolerance.", name, why)
        _warned_single_node = _warned_single_node or single
    return GroupPlacement(name, n, PACKED, why, lifetime)


# ------------------------------------------------------------------------------------------------
# Where actors run, and storage on their nodes
# ------------------------------------------------------------------------------------------------


def _node_id(_self: Any) -> str:
    return str(ray.get_runtime_context().get_node_id())


def nodes_of(actors: Sequence[Any], timeout: float = 30.0) -> list[str | None]:
    """The node id where each actor runs, asked of the actor itself; ``None`` for one that cannot be
    reached (dead, or its node is gone)."""
    refs = [a.__ray_call__.remote(_node_id) for a in actors]
    out: list[str | None] = []
    for ref in refs:
        try:
            out.append(ray.get(ref, timeout=timeout))
        except (GetTimeoutError, RayError):
            out.append(None)
    return out


def node_local_dir(*parts: str) -> str:
    """A fresh path for storage created on whichever node uses it: ``<tmp>/raykv/<parts...>-<random>``,
    where ``<tmp>`` is this driver's temporary directory (``/tmp`` on Linux). Nothing is created."""
    if not parts:
        raise ValueError("node_local_dir needs at least one name")
    *head, last = parts
    return os.path.join(tempfile.gettempdir(), "raykv", *head, f"{last}-{uuid.uuid4().hex[:8]}")


def _rmtree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


_rmtree_task = ray.remote(num_cpus=0, max_retries=0)(_rmtree)


def remove_dirs(dirs: Iterable[tuple[str | None, str]], timeout: float = 30.0) -> list[str]:
    """Delete each ``(node_id, path)`` on that node (a zero-CPU task pinned there; locally when it is
    this driver's node). Directories on nodes that are gone are skipped. Returns the paths that could
    not be removed, as ``"path on node"`` strings (empty when all were)."""
    here = _driver_node()
    alive = set(alive_nodes())
    refs: list[tuple[str, Any]] = []
    left: list[str] = []
    for node, path in dirs:
        if node is None or node == here:
            _rmtree(path)
        elif node in alive:
            strategy = NodeAffinitySchedulingStrategy(node, soft=False)
            refs.append((f"{path} on {node[:12]}", _rmtree_task.options(scheduling_strategy=strategy)
                         .remote(path)))
        else:
            left.append(f"{path} on {node[:12]} (node gone)")
    for what, ref in refs:
        try:
            ray.get(ref, timeout=timeout)
        except (GetTimeoutError, RayError) as exc:
            left.append(f"{what} ({type(exc).__name__})")
    return left


def _driver_node() -> str | None:
    try:
        return str(ray.get_runtime_context().get_node_id())
    except Exception:  # a Ray Client driver has no node of its own
        return None
