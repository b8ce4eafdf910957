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
* The demo: :func:`run_demo` and its :class:`DemoReport` (``raykv demo`` on the command line).

The command line is ``raykv --help`` (:mod:`raykv.cli`).
"""

from actors.harness import RaftHarness
from actors.network import FaultyNetwork
from actors.replica import ReplicaSpec, replica_actor
from actors.statemachine import ApplyRecorder, StateMachine
from actors.storage import FileStorage, MemoryStorage, Storage
from kvraft import AsyncClerk, Clerk, KVGroup, KVTimeoutError, start_group
from raft import RaftConfig, RaftNode
from raykv.cluster import DEFAULT_NAMESPACE, ClusterError, RayCluster, connect, init_ray
from raykv.demo import DemoEvent, DemoReport, PeerRow, run_demo

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
    "KVGroup",
    "KVTimeoutError",
    "MemoryStorage",
    "PeerRow",
    "RaftConfig",
    "RaftHarness",
    "RaftNode",
    "RayCluster",
    "ReplicaSpec",
    "StateMachine",
    "Storage",
    "connect",
    "init_ray",
    "replica_actor",
    "run_demo",
    "start_group",
]
