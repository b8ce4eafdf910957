"""raykv: Raft, a fault-tolerant key-value store and a sharded key-value store, on Ray.

The public face of the project. It holds no logic: it re-exports, under :data:`__all__`, what a
program, a notebook or a test needs to start or join a Ray cluster and run Raft peers on it.

* Ray: :func:`init_ray` (embedded runtime, or connect to ``address``), :func:`connect`,
  :class:`RayCluster`, :class:`ClusterError`, :data:`DEFAULT_NAMESPACE`.
* The Raft core (pure Python): :class:`RaftNode`, :class:`RaftConfig`.
* The Ray layer: :data:`FaultyNetwork` (the labrpc-like network actor), :class:`ReplicaSpec` and
  :func:`replica_actor` (one Raft peer as an async actor), :class:`StateMachine` and
  :class:`ApplyRecorder`, the storages :class:`MemoryStorage` and :class:`FileStorage`, and
  :class:`RaftHarness` (n peers behind the network, as the reference tests build them).
* The key-value service: :func:`start_group` (a kvraft group of N replicas) and its
  :class:`KVGroup`, the clerks :class:`Clerk` and :class:`AsyncClerk`, :class:`KVTimeoutError`.
* The sharded key-value service on a Ray cluster (:mod:`raykv.sharded`): :func:`start_sharded`
  (a controller and G groups of R replicas; detached, under a name, if asked), :func:`attach_sharded`
  (another driver finds it by name), :func:`list_sharded`, the service :class:`ShardedKV` (clerks,
  join and remove groups, move shards, configuration, :class:`ServiceStatus` / :class:`GroupStatus`,
  stop) and its errors :class:`ServiceError`, :class:`ServiceExistsError`,
  :class:`ServiceNotFoundError`; placement of a group's replicas on distinct nodes
  (:func:`place_group`, :class:`GroupPlacement`, :class:`PlacementError`).
* The demos: :func:`run_system_demo` and its :class:`SystemDemoReport` (the whole system on a
  multi-node cluster: ``raykv demo``), :func:`run_demo` and its :class:`DemoReport` (Raft alone:
  ``raykv demo raft``).

The command line is ``raykv --help`` (:mod:`raykv.cli`).
"""

from actors.network import FaultyNetwork
from actors.placement import GroupPlacement, PlacementError, place_group
from actors.replica import ReplicaSpec, replica_actor
from actors.sessions import SessionExpiredError
from actors.statemachine import ApplyRecorder, StateMachine
from actors.storage import FileStorage, MemoryStorage, Storage
from kvraft import AsyncClerk, Clerk, KVGroup, KVTimeoutError, start_group
from raft import RaftConfig, RaftNode
from raykv.cluster import DEFAULT_NAMESPACE, ClusterError, RayCluster, connect, init_ray
from raykv.demo import DemoEvent, DemoReport, PeerRow, run_demo
from raykv.sharded import (
    ServiceError,
    ServiceExistsError,
    ServiceNotFoundError,
    ShardedKV,
)
from raykv.sharded import attach as attach_sharded
from raykv.sharded import list_services as list_sharded
from raykv.sharded import start as start_sharded
from raykv.sharded_status import GroupStatus, ServiceStatus
from raykv.system_demo import SystemDemoReport, run_system_demo
from raykv.testing.raft_harness import RaftHarness

__all__ = [
    "DEFAULT_NAMESPACE",
    "ApplyRecorder",
    "AsyncClerk",
    "Clerk",
    "ClusterError",
    "DemoEvent",
    "DemoReport",
    "FaultyNetwork",
    "FileStorage",
    "GroupPlacement",
    "GroupStatus",
    "KVGroup",
    "KVTimeoutError",
    "MemoryStorage",
    "PeerRow",
    "PlacementError",
    "RaftConfig",
    "RaftHarness",
    "RaftNode",
    "RayCluster",
    "ReplicaSpec",
    "ServiceError",
    "ServiceExistsError",
    "ServiceNotFoundError",
    "ServiceStatus",
    "SessionExpiredError",
    "ShardedKV",
    "StateMachine",
    "Storage",
    "SystemDemoReport",
    "attach_sharded",
    "connect",
    "init_ray",
    "list_sharded",
    "place_group",
    "replica_actor",
    "run_demo",
    "run_system_demo",
    "start_group",
    "start_sharded",
]
