"""The operations of the sharded KV service, the commands in a group's log, and their results.

**Client operations** travel as plain tuples ``(kind, key, value, client_id, seq, shard)``
(:data:`Op`), kvraft's operation plus the shard the clerk computed for the key (the kinds, replies
and input checks are kvraft's, written again here so that services do not import each other). ``kind`` is
:data:`GET`, :data:`PUT` or :data:`APPEND` (kvraft's codes); ``value`` is ``None`` for a Get;
``client_id`` and ``seq`` make a resent operation recognisable (see :mod:`shardkv.statemachine`).
The servers recompute the shard with the service's key mapping and refuse an operation whose shard
disagrees (:data:`ERR_BAD_SHARD`): a clerk set up with another mapping would otherwise retry forever.

**Log commands** of a shard group (each one Raft entry):

============================================  ======================================================
``(CLIENT, (op, ...))``                        a batch of client operations from one call
``(CONFIG, config)``                           take the next configuration (``num`` = current + 1)
``(INSTALL, num, ((shard, data, dedup), ..))`` shards pulled from their previous holder, for ``num``
``(DELETE, num, (shard, ...))``                the new owner has them: drop these leaving shards
``(GC_DONE, num, (shard, ...))``               the previous holder deleted them: stop telling it
``None``                                       a new leader's no-op (commits its predecessors' entries)
============================================  ======================================================

**Results.** A client batch yields one result per operation: the value for a Get, ``None`` for a Put
or an Append, or an :class:`OpError` (wrong group, bad request); an operation refused with an
``OpError`` had no effect. A malformed command yields an :class:`OpError`, never an exception.

**Server replies** (the first element of what an RPC returns), as in kvraft: :data:`OK`,
:data:`WRONG_LEADER`, :data:`TIMEOUT`, :data:`INVALID` (malformed arguments, nothing proposed), plus
:data:`NOT_READY` for a pull or a delete that the other group cannot answer yet (it has not reached
the configuration the caller names).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from actors.service_protocol import INVALID as INVALID
from actors.service_protocol import OK as OK
from actors.service_protocol import TIMEOUT as TIMEOUT
from actors.service_protocol import WRONG_LEADER as WRONG_LEADER

__all__ = [
    "APPEND",
    "CLIENT",
    "CONFIG",
    "DEFAULT_MAX_KEY_BYTES",
    "DEFAULT_MAX_VALUE_BYTES",
    "DELETE",
    "ERR_BAD_COMMAND",
    "ERR_BAD_REQUEST",
    "ERR_BAD_SHARD",
    "ERR_WRONG_GROUP",
    "GC_DONE",
    "GET",
    "INSTALL",
    "KIND_NAMES",
    "NOT_READY",
    "OK",
    "PUT",
    "TIMEOUT",
    "WRONG_GROUP",
    "WRONG_LEADER",
    "Batch",
    "Op",
    "OpError",
    "check_key",
    "check_value",
]

#: operation kinds (the reference's op codes: 0 get, 1 put, 2 append; kvraft's too)
GET, PUT, APPEND = 0, 1, 2
KIND_NAMES = {GET: "get", PUT: "put", APPEND: "append"}

#: default largest value a clerk accepts, in UTF-8 bytes (configurable per clerk)
DEFAULT_MAX_VALUE_BYTES = 1 << 20
#: default largest key a clerk accepts, in UTF-8 bytes
DEFAULT_MAX_KEY_BYTES = 1 << 16

# Server replies (the first element of what an RPC returns): the codes every service shares
# (:mod:`actors.service_protocol`), plus ``NOT_READY`` below.

#: log command tags (small ints: they are pickled into every entry)
CLIENT, CONFIG, INSTALL, DELETE, GC_DONE = 1, 2, 3, 4, 5
COMMAND_NAMES = {CLIENT: "client", CONFIG: "config", INSTALL: "install", DELETE: "delete",
                 GC_DONE: "gc_done"}

#: ``(kind, key, value, client_id, seq, shard)``
Op = tuple[int, str, "str | None", int, int, int]
#: the operations of one client call (one log entry)
Batch = tuple[Op, ...]

#: reply of a pull or delete RPC that the other group cannot answer yet
NOT_READY = "not_ready"

# OpError codes.
ERR_WRONG_GROUP = "wrong_group"  # this group does not serve the shard now (not owned, or not arrived)
ERR_BAD_REQUEST = "bad_request"  # the operation is malformed (types, shape, shard out of range)
ERR_BAD_SHARD = "bad_shard"  # the clerk's shard for the key differs from the service's mapping
ERR_BAD_COMMAND = "bad_command"  # a log command that is not one of the forms above


@dataclass(frozen=True, slots=True)
class OpError:
    """The result of an operation or command that had no effect: ``code`` (an ``ERR_*`` name) and a
    ``message`` that says what was wrong."""

    code: str
    message: str


#: the (shared, so cheaply pickled) result of an operation on a shard the group does not serve
WRONG_GROUP = OpError(ERR_WRONG_GROUP, "this group does not serve the key's shard now; "
                                       "refresh the configuration and retry")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def op_problem(op: Any, nshards: int) -> str | None:
    """Why ``op`` is not a well-formed client operation for ``nshards`` shards, or ``None``."""
    if not isinstance(op, tuple) or len(op) != 6:
        return f"an operation is a 6-tuple (kind, key, value, client_id, seq, shard), got {op!r:.120}"
    kind, key, value, client, seq, shard = op
    if kind not in KIND_NAMES:
        return f"unknown operation kind {kind!r:.40}: expected {GET} (get), {PUT} (put) or {APPEND} (append)"
    if not isinstance(key, str):
        return f"key must be a str, got {type(key).__name__}"
    if kind == GET:
        if value is not None:
            return "a get carries no value"
    elif not isinstance(value, str):
        return f"value must be a str, got {type(value).__name__}"
    if not _is_int(client):
        return f"client_id must be an int, got {type(client).__name__}"
    if not _is_int(seq) or seq < 1:
        return f"seq must be an int >= 1, got {seq!r:.40}"
    if not _is_int(shard) or not 0 <= shard < nshards:
        return f"shard must be an int in 0..{nshards - 1}, got {shard!r:.40}"
    return None


def check_key(key: Any, max_key_bytes: int = DEFAULT_MAX_KEY_BYTES) -> str:
    """Return ``key`` if it is a string of at most ``max_key_bytes`` UTF-8 bytes; raise
    ``TypeError`` / ``ValueError`` (before anything is sent)."""
    if not isinstance(key, str):
        raise TypeError(f"key must be a str, got {type(key).__name__}: {key!r:.80}")
    if len(key) > max_key_bytes // 4 and len(key.encode()) > max_key_bytes:
        raise ValueError(f"key is {len(key.encode())} bytes, above the limit of {max_key_bytes} bytes "
                         "(raise max_key_bytes on the clerk to allow it)")
    return key


def check_value(value: Any, max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES) -> str:
    """Return ``value`` if it is a string of at most ``max_value_bytes`` UTF-8 bytes; raise
    ``TypeError`` / ``ValueError`` (the byte length is computed only when the character count makes
    it possibly too large)."""
    if not isinstance(value, str):
        raise TypeError(f"value must be a str, got {type(value).__name__}: {value!r:.80}")
    if len(value) > max_value_bytes // 4 and len(value.encode()) > max_value_bytes:
        raise ValueError(f"value is {len(value.encode())} bytes, above the limit of {max_value_bytes} "
                         "bytes (raise max_value_bytes on the clerk to allow it)")
    return value


def batch_problem(ops: Any) -> str | None:
    """Why ``ops`` is not a batch (a non-empty tuple), or ``None``. The operations themselves are
    checked one by one by the state machine, which refuses a malformed one with an :class:`OpError`."""
    if not isinstance(ops, tuple) or not ops:
        return f"kv takes a non-empty tuple of operations, got {type(ops).__name__}: {ops!r:.80}"
    return None


def migration_problem(num: Any, shards: Any) -> str | None:
    """Why ``(num, shards)`` are not the arguments of a pull or delete, or ``None``."""
    if not _is_int(num) or num < 0:
        return f"a configuration number must be an int >= 0, got {num!r:.40}"
    if not isinstance(shards, tuple) or not shards or not all(_is_int(s) and s >= 0 for s in shards):
        return f"shards must be a non-empty tuple of shard numbers, got {shards!r:.80}"
    return None


def describe(kind: int, key: str) -> str:
    """A short description of a client operation, for error messages."""
    return f"{KIND_NAMES.get(kind, kind)}({key!r:.60})"
