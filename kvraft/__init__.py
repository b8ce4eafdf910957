"""kvraft: a linearizable, fault-tolerant key-value service replicated by one Raft group, on Ray.

    import kvraft

    group = kvraft.start_group(3)          # 3 replicas on the current Ray cluster (embedded if none)
    ck = group.clerk()
    ck.put("greeting", "hello")
    ck.append("greeting", ", world")
    assert ck.get("greeting") == "hello, world"
    group.stop()

``group.async_clerk()`` gives an :class:`AsyncClerk` whose ``await``-able calls are coalesced into
batches. See docs/kvraft.md for the semantics (exactly-once, linearizable reads, timeouts, errors).
"""

from actors.sessions import SessionExpiredError
from kvraft.async_clerk import AsyncClerk
from kvraft.clerk import Clerk
from kvraft.endpoints import DirectEndpoints, NetworkEndpoints, StreamEndpoints
from kvraft.errors import GroupStartError, KVRejectedError, KVTimeoutError
from kvraft.group import KVGroup, start_group
from kvraft.ops import DEFAULT_MAX_VALUE_BYTES
from kvraft.server import KVReplica, kv_replica_actor
from kvraft.statemachine import KVStateMachine

__all__ = [
    "DEFAULT_MAX_VALUE_BYTES",
    "AsyncClerk",
    "Clerk",
    "DirectEndpoints",
    "GroupStartError",
    "KVGroup",
    "KVRejectedError",
    "KVReplica",
    "KVStateMachine",
    "KVTimeoutError",
    "NetworkEndpoints",
    "SessionExpiredError",
    "StreamEndpoints",
    "kv_replica_actor",
    "start_group",
]
