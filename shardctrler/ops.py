"""The operations of the shard controller, their wire form, the checks both the clerk and the state
machine run on them, and the refusals the state machine answers with.

An operation travels as a plain tuple ``(kind, args, client_id, seq)`` (:data:`Op`), like kvraft's:

=========  =================================================================  ===================
kind       ``args``                                                           result when applied
=========  =================================================================  ===================
``JOIN``   ``((gid, (server, ...)), ...)``: new groups, in increasing gid      new config number
``LEAVE``  ``(gid, ...)``: groups to remove, in increasing gid                 new config number
``MOVE``   ``(shard, gid)``: put ``shard`` on ``gid``                          new config number
``QUERY``  ``num``: a config number, or ``-1`` for the latest                  a :class:`Config`
=========  =================================================================  ===================

``client_id`` names the clerk and ``seq`` numbers its operations from 1 upwards, so a resent
operation is recognised and applied at most once (see :mod:`shardctrler.statemachine`). One Raft log
entry carries a *batch*: a tuple of operations one clerk sent in one call, applied in order.

A request the controller cannot carry out is *refused*: its result is a :class:`Refusal` (a code and
a message that says what was wrong and what to do) and the configuration does not change. The shape
and type checks (:func:`normalise`) run in the clerk before anything is sent, and again in the state
machine, which must never raise on what a client sent; the checks that depend on the current
configuration (a gid already in, an unknown gid, a shard out of range, a server already in another
group) run only in the state machine.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from actors.service_protocol import INVALID as INVALID
from actors.service_protocol import OK as OK
from actors.service_protocol import TIMEOUT as TIMEOUT
from actors.service_protocol import WRONG_LEADER as WRONG_LEADER
from shardctrler.errors import RefusedError, RefusedTypeError

#: operation kinds
JOIN, LEAVE, MOVE, QUERY = 1, 2, 3, 4
KIND_NAMES = {JOIN: "join", LEAVE: "leave", MOVE: "move", QUERY: "query"}

#: ``(kind, args, client_id, seq)``
Op = tuple[int, Any, int, int]
#: what one Raft log entry of the controller holds
Batch = tuple[Op, ...]

# Server replies (the first element of what ``rpc_ctrl`` returns): the codes every service shares
# (:mod:`actors.service_protocol`). ``("invalid", reason)``: the call is not a well-formed batch (see
# :func:`batch_problem`); nothing was proposed.

# Refusal codes.
ERR_BAD_REQUEST = "bad_request"  # wrong types or shape
ERR_BAD_GID = "bad_gid"  # gid 0 or negative
ERR_NO_SERVERS = "no_servers"  # a group with no servers
ERR_GROUP_EXISTS = "group_exists"  # Join of a gid already in the configuration
ERR_UNKNOWN_GROUP = "unknown_group"  # Leave of, or Move to, a gid not in the configuration
ERR_BAD_SHARD = "bad_shard"  # a shard outside 0 .. nshards-1
ERR_SERVER_IN_USE = "server_in_use"  # a server name already serving another group
ERR_STALE = "stale"  # a resend of an operation the clerk has long stopped waiting for


@dataclass(frozen=True)
class Refusal:
    """The result of a refused operation: ``code`` (one of the ``ERR_*`` names) and ``message``."""

    code: str
    message: str


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def batch_problem(ops: Any) -> str | None:
    """Why ``ops`` is not a well-formed :data:`Batch` (a reason a person can act on), or ``None``.

    A batch is a non-empty tuple (or list) of operations ``(kind, args, client_id, seq)``: ``kind``
    one of :data:`JOIN`, :data:`LEAVE`, :data:`MOVE`, :data:`QUERY`; ``client_id`` an ``int`` >= 0;
    ``seq`` an ``int`` >= 1. The server refuses a malformed batch before proposing it. The ``args``
    are not checked here: a bad request is the state machine's to refuse (with a :class:`Refusal`
    that the dedup table remembers), and the clerks check them before sending anyway.
    """
    if not isinstance(ops, (tuple, list)):
        return f"a batch must be a tuple of operations, got {type(ops).__name__}: {ops!r:.80}"
    if not ops:
        return "a batch must hold at least one operation"
    for k, op in enumerate(ops):
        if not isinstance(op, (tuple, list)) or len(op) != 4:
            return (f"operation {k} must be a tuple (kind, args, client_id, seq), "
                    f"got {type(op).__name__}: {op!r:.80}")
        kind, _, client, seq = op
        if not _is_int(kind) or kind not in KIND_NAMES:
            return (f"operation {k} has unknown kind {kind!r:.40} (expected one of "
                    f"{', '.join(f'{c} {n}' for c, n in KIND_NAMES.items())})")
        if not _is_int(client) or client < 0:
            return f"operation {k}: the client id must be an int >= 0, got {client!r:.40}"
        if not _is_int(seq) or seq < 1:
            return f"operation {k}: the sequence number must be an int >= 1, got {seq!r:.40}"
    return None


def check_gid(gid: Any) -> int:
    if not _is_int(gid):
        raise RefusedTypeError(ERR_BAD_REQUEST,
                               f"a gid must be an int, got {type(gid).__name__}: {gid!r:.80}")
    if gid <= 0:
        raise RefusedError(ERR_BAD_GID, f"gid {gid} is not allowed: gids are ints > 0 (0 means 'no group')")
    return gid


def check_servers(gid: int, servers: Any) -> tuple[str, ...]:
    if isinstance(servers, (str, bytes)) or not isinstance(servers, (list, tuple)):
        raise RefusedTypeError(ERR_BAD_REQUEST, f"the servers of group {gid} must be a list of names, "
                                            f"got {type(servers).__name__}: {servers!r:.80}")
    if not servers:
        raise RefusedError(ERR_NO_SERVERS, f"group {gid} has no servers: give at least one server name")
    for s in servers:
        if not isinstance(s, str) or not s:
            raise RefusedTypeError(ERR_BAD_REQUEST, f"server names of group {gid} must be non-empty strings, "
                                                f"got {s!r:.80}")
    if len(set(servers)) != len(servers):
        raise RefusedError(ERR_BAD_REQUEST, f"group {gid} lists a server twice: {list(servers)!r:.200}")
    return tuple(servers)


def normalise_join(groups: Any) -> tuple[tuple[int, tuple[str, ...]], ...]:
    """``{gid: [server, ...]}`` (or the wire form, pairs) -> pairs sorted by gid."""
    if isinstance(groups, Mapping):
        items = list(groups.items())
    elif isinstance(groups, (list, tuple)) and all(isinstance(p, (list, tuple)) and len(p) == 2
                                                   for p in groups):
        items = [tuple(p) for p in groups]
    else:
        raise RefusedTypeError(ERR_BAD_REQUEST, "join takes a mapping {gid: [server, ...]}, "
                                            f"got {type(groups).__name__}: {groups!r:.80}")
    if not items:
        raise RefusedError(ERR_BAD_REQUEST, "join of no groups: give at least one {gid: [server, ...]}")
    out = [(check_gid(gid), check_servers(gid, servers)) for gid, servers in items]
    gids = [g for g, _ in out]
    if len(set(gids)) != len(gids):
        raise RefusedError(ERR_BAD_REQUEST, f"join lists a gid twice: {gids}")
    seen: dict[str, int] = {}
    for gid, servers in out:
        for s in servers:
            if s in seen:
                raise RefusedError(ERR_BAD_REQUEST, f"server {s!r} is listed for both group {seen[s]} "
                                                    f"and group {gid}")
            seen[s] = gid
    return tuple(sorted(out))


def normalise_leave(gids: Any) -> tuple[int, ...]:
    """A collection of gids (list, tuple, set, range, ...) -> the gids in increasing order."""
    if isinstance(gids, (str, bytes, Mapping)) or not isinstance(gids, Iterable):
        raise RefusedTypeError(ERR_BAD_REQUEST, "leave takes a list of gids, "
                                                f"got {type(gids).__name__}: {gids!r:.80}")
    out = [check_gid(g) for g in gids]
    if not out:
        raise RefusedError(ERR_BAD_REQUEST, "leave of no groups: give at least one gid")
    if len(set(out)) != len(out):
        raise RefusedError(ERR_BAD_REQUEST, f"leave lists a gid twice: {out}")
    return tuple(sorted(out))


def normalise_move(shard: Any, gid: Any) -> tuple[int, int]:
    if not _is_int(shard):
        raise RefusedTypeError(ERR_BAD_REQUEST, f"a shard must be an int, got {type(shard).__name__}: "
                                            f"{shard!r:.80}")
    if shard < 0:
        raise RefusedError(ERR_BAD_SHARD, f"shard {shard} is out of range: shards are numbered from 0")
    return shard, check_gid(gid)


def normalise_query(num: Any) -> int:
    if not _is_int(num):
        raise RefusedTypeError(ERR_BAD_REQUEST, f"a config number must be an int, got {type(num).__name__}: "
                                            f"{num!r:.80}")
    if num < -1:
        raise RefusedError(ERR_BAD_REQUEST, f"config number {num} is out of range: use -1 (the latest) "
                                            "or a number >= 0")
    return num


def normalise(kind: Any, args: Any) -> Any:
    """The canonical ``args`` of an operation; raises :class:`~shardctrler.errors.RefusedError` (a
    ``ValueError``, and a ``TypeError`` too for an argument of the wrong type) if it is malformed."""
    if kind == JOIN:
        return normalise_join(args)
    if kind == LEAVE:
        return normalise_leave(args)
    if kind == MOVE:
        if not isinstance(args, (list, tuple)) or len(args) != 2:
            raise RefusedTypeError(ERR_BAD_REQUEST, f"move takes (shard, gid), got {args!r:.80}")
        return normalise_move(*args)
    if kind == QUERY:
        return normalise_query(args)
    raise RefusedError(ERR_BAD_REQUEST, f"unknown operation kind {kind!r:.40}: expected one of "
                                        f"{sorted(KIND_NAMES)} ({', '.join(KIND_NAMES.values())})")


def describe(kind: int, args: Any) -> str:
    """A short human description of an operation, for error messages."""
    name = KIND_NAMES.get(kind, f"op{kind!r}")
    if kind == JOIN and isinstance(args, tuple):
        return f"join({dict(args)!r:.120})"
    return f"{name}({args!r:.120})"

