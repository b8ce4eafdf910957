"""shardkv: the sharded key-value service. Replica groups (each a Raft group) serve shards of the key
space, follow the shard controller's configurations one at a time, move shards between each other
(pull, install, delete the old copy) and keep serving every shard that is not moving.

    import shardctrler, shardkv

    ctrler = shardctrler.start_group(3)
    g1 = shardkv.start_group(1, ctrler, join=True)
    ck = shardkv.make_clerk(ctrler)
    ck.put("k", "v")
    g2 = shardkv.start_group(2, ctrler, join=True)   # half the shards move to group 2
    assert ck.get("k") == "v"
    g1.stop(); g2.stop(); ctrler.stop()

The same shape as :mod:`kvraft` and :mod:`shardctrler`: ``statemachine.py`` (pure: shards, their
statuses, configurations, migration and garbage collection), ``server.py`` (the replica actor's RPCs
and the leader's background work), ``clerk.py`` and ``async_clerk.py``, ``errors.py``, ``ops.py``,
``endpoints.py`` and ``stream_router.py`` (reaching servers by name), ``group.py``. See docs/sharded-kv.md.
"""

from typing import Any

from actors.sessions import SessionExpiredError
from shardkv.errors import ShardKVRequestError, ShardKVTimeoutError
from shardkv.ops import OpError
from shardkv.statemachine import ShardKVStateMachine

# The parts that touch Ray are imported on first use, so that the pure parts load without Ray.
_LAZY = {
    "AsyncClerk": "shardkv.async_clerk",
    "Clerk": "shardkv.clerk",
    "DirectRouter": "shardkv.endpoints",
    "NetworkRouter": "shardkv.endpoints",
    "ShardGroup": "shardkv.group",
    "ShardKVReplica": "shardkv.server",
    "StreamRouter": "shardkv.stream_router",
    "make_async_clerk": "shardkv.group",
    "make_clerk": "shardkv.group",
    "shardkv_replica_actor": "shardkv.server",
    "start_group": "shardkv.group",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'shardkv' has no attribute {name!r}")


__all__ = [
    "AsyncClerk",
    "Clerk",
    "DirectRouter",
    "NetworkRouter",
    "OpError",
    "SessionExpiredError",
    "ShardGroup",
    "ShardKVReplica",
    "ShardKVRequestError",
    "ShardKVStateMachine",
    "ShardKVTimeoutError",
    "StreamRouter",
    "make_async_clerk",
    "make_clerk",
    "shardkv_replica_actor",
    "start_group",
]
