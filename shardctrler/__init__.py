"""shardctrler: the shard controller, a Raft-replicated service that keeps the numbered
configurations of a sharded KV store (which replica group serves which shard), on Ray.

    import shardctrler

    ctrler = shardctrler.start_group(3)               # 3 replicas; 10 shards unless nshards=...
    ck = ctrler.clerk()
    ck.join({1: ["s1a", "s1b", "s1c"], 2: ["s2a", "s2b", "s2c"]})
    config = ck.query()                               # the latest Config
    assert config.shards_of(1) and config.shards_of(2)
    ctrler.stop()

The same shape as :mod:`kvraft`: ``statemachine.py`` (pure: configurations, rebalancing, exactly
once), ``server.py`` (the replica actor's RPC), ``clerk.py`` and ``async_clerk.py``, ``errors.py``,
``ops.py``, ``endpoints.py``, ``group.py``; plus ``config.py``, the :class:`Config` type and the
key-to-shard functions that the sharded KV imports too. See docs/shardctrler.md.
"""

from typing import Any

from actors.sessions import SessionExpiredError
from shardctrler.config import NSHARDS, Config, key2shard, key2shard_reference
from shardctrler.errors import CtrlerTimeoutError, RefusedError, RefusedTypeError
from shardctrler.ops import Refusal
from shardctrler.statemachine import CtrlerStateMachine, rebalance

# The parts that touch Ray are imported on first use, so that the pure parts (``config``, ``ops``,
# ``statemachine``), which the sharded KV's state machine imports, load without Ray.
_LAZY = {
    "AsyncClerk": "shardctrler.async_clerk",
    "Clerk": "shardctrler.clerk",
    "CtrlerGroup": "shardctrler.group",
    "CtrlerReplica": "shardctrler.server",
    "DirectEndpoints": "shardctrler.endpoints",
    "NetworkEndpoints": "shardctrler.endpoints",
    "StreamEndpoints": "shardctrler.endpoints",
    "ctrler_replica_actor": "shardctrler.server",
    "start_group": "shardctrler.group",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'shardctrler' has no attribute {name!r}")


__all__ = [
    "NSHARDS",
    "AsyncClerk",
    "Clerk",
    "Config",
    "CtrlerGroup",
    "CtrlerReplica",
    "CtrlerStateMachine",
    "CtrlerTimeoutError",
    "DirectEndpoints",
    "NetworkEndpoints",
    "Refusal",
    "RefusedError",
    "RefusedTypeError",
    "SessionExpiredError",
    "StreamEndpoints",
    "ctrler_replica_actor",
    "key2shard",
    "key2shard_reference",
    "rebalance",
    "start_group",
]
