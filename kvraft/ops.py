"""The operations of the KV service, their wire form, and the checks a clerk runs before sending.

An operation travels as a plain tuple ``(kind, key, value, client_id, seq)`` (:data:`Op`): small to
pickle, cheap to build, hashable. ``kind`` is :data:`GET`, :data:`PUT` or :data:`APPEND`; ``value`` is
``None`` for a Get. ``client_id`` names the clerk that issued it and ``seq`` numbers that clerk's
operations from 1 upwards; together they make a retried operation recognisable (see
:mod:`kvraft.statemachine`).

One Raft log entry carries a *batch*: a tuple of operations that a clerk sent in one call. The state
machine applies a batch atomically, in order, and returns one result per operation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from actors.service_protocol import INVALID as INVALID
from actors.service_protocol import OK as OK
from actors.service_protocol import TIMEOUT as TIMEOUT
from actors.service_protocol import WRONG_LEADER as WRONG_LEADER

#: operation kinds (the reference's op codes: 0 get, 1 put, 2 append)
GET, PUT, APPEND = 0, 1, 2
KIND_NAMES = {GET: "get", PUT: "put", APPEND: "append"}

#: ``(kind, key, value, client_id, seq)``
Op = tuple[int, str, "str | None", int, int]
#: what one Raft log entry of the KV service holds
Batch = tuple[Op, ...]

#: default largest value a clerk accepts, in UTF-8 bytes (configurable per clerk)
DEFAULT_MAX_VALUE_BYTES = 1 << 20
#: default largest key a clerk accepts, in UTF-8 bytes
DEFAULT_MAX_KEY_BYTES = 1 << 16

# Server replies (the first element of what ``rpc_kv`` returns): the codes every service shares
# (:mod:`actors.service_protocol`). ``("invalid", reason)``: the batch is malformed; nothing was
# proposed (or, if it reached the log anyway, nothing of it was applied).


@dataclass(frozen=True)
class Rejected:
    """What the state machine returns for a log entry that is not a well-formed batch: nothing of the
    entry is applied, on every replica alike (``apply`` is total: bad input never raises)."""

    reason: str


def batch_problem(ops: Any) -> str | None:
    """Why ``ops`` is not a well-formed :data:`Batch` (a reason a person can act on), or ``None``.

    A batch is a non-empty tuple (or list) of operations ``(kind, key, value, client_id, seq)``:
    ``kind`` one of :data:`GET`, :data:`PUT`, :data:`APPEND`; ``key`` a ``str``; ``value`` ``None``
    for a Get and a ``str`` otherwise; ``client_id`` an ``int`` >= 0; ``seq`` an ``int`` >= 1.
    Deterministic (the state machine runs it on every replica). Sizes are the clerks' business.
    """
    if not isinstance(ops, (tuple, list)):
        return f"a batch must be a tuple of operations, got {type(ops).__name__}: {ops!r:.80}"
    if not ops:
        return "a batch must hold at least one operation"
    for k, op in enumerate(ops):
        if not isinstance(op, tuple) or len(op) != 5:
            return (f"operation {k} must be a tuple (kind, key, value, client_id, seq), "
                    f"got {type(op).__name__}: {op!r:.80}")
        kind, key, value, client, seq = op
        if type(kind) is not int or kind not in KIND_NAMES:
            return f"operation {k} has unknown kind {kind!r:.40} (expected 0 get, 1 put or 2 append)"
        if not isinstance(key, str):
            return f"operation {k}: the key must be a str, got {type(key).__name__}"
        if kind == GET and value is not None:
            return f"operation {k}: a get carries no value (None), got {type(value).__name__}"
        if kind != GET and not isinstance(value, str):
            return f"operation {k}: a {KIND_NAMES[kind]}'s value must be a str, got {type(value).__name__}"
        if type(client) is not int or client < 0:
            return f"operation {k}: the client id must be an int >= 0, got {client!r:.40}"
        if type(seq) is not int or seq < 1:
            return f"operation {k}: the sequence number must be an int >= 1, got {seq!r:.40}"
    return None


def check_key(key: Any, max_key_bytes: int = DEFAULT_MAX_KEY_BYTES) -> str:
    """Return ``key`` if it is a string of acceptable size; raise ``TypeError`` / ``ValueError``."""
    if not isinstance(key, str):
        raise TypeError(f"key must be a str, got {type(key).__name__}: {key!r:.80}")
    if len(key) > max_key_bytes // 4 and len(key.encode()) > max_key_bytes:
        raise ValueError(f"key is {len(key.encode())} bytes, above the limit of {max_key_bytes} bytes")
    return key


def check_value(value: Any, max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES) -> str:
    """Return ``value`` if it is a string of at most ``max_value_bytes`` UTF-8 bytes.

    Raises ``TypeError`` for a non-string and ``ValueError`` for one that is too large. The byte
    length is only computed when the character count makes it possibly too large (cheap for small
    values).
    """
    if not isinstance(value, str):
        raise TypeError(f"value must be a str, got {type(value).__name__}: {value!r:.80}")
    if len(value) > max_value_bytes // 4 and len(value.encode()) > max_value_bytes:
        raise ValueError(
            f"value is {len(value.encode())} bytes, above the limit of {max_value_bytes} bytes "
            "(raise max_value_bytes on the clerk to allow it)"
        )
    return value
