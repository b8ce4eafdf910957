"""The controller's state machine: numbered configurations, Join / Leave / Move / Query, exactly once.

State: ``configs`` (config 0 .. latest; only ever appended), the *dedup table* ``sessions`` (a
:class:`~actors.sessions.SessionTable`: client id -> ``[highest seq applied, log time of its last
request, {seq: result} of its writes in its last batch]``) and the log clock ``clock``.

Rebalancing (:func:`rebalance`, after every Join and Leave). With ``n`` shards and ``k`` groups, every
group ends with ``n // k`` or ``n // k + 1`` shards (so no group has more than one shard above
another; with more groups than shards the extra groups get none). The ``n % k`` larger quotas go to
the groups that hold the most shards now (ties: smaller gid first); a group keeps every shard it may
keep; a group above its quota gives up its highest-numbered shards; the shards given up and those of
departed groups (or of gid 0) go, lowest shard first, to the groups below their quota, smallest gid
first. This moves the fewest shards any balanced result can: ``n - sum(min(count, base)) -
min(n % k, #groups holding more than base)``. From a balanced configuration a Join therefore only
moves shards to the new groups, and a Leave only moves the departed groups' shards. Everything is
ordered by gid or shard number, never by dict or set order, so every replica computes the same.
Move assigns one shard and does not rebalance (as in the reference): balance returns at the next
Join or Leave.

Exactly once. As in kvraft, a clerk's operations reach the log in ``seq`` order (one batch
outstanding at a time, resent until a leader answers), so an operation whose ``seq`` is at or below
its client's entry is a duplicate and changes nothing. Unlike a kvraft write, a controller write has
a result that cannot be recomputed (a resent Join must not be answered "group already in" because
its first copy succeeded), so the table keeps the results of the client's last batch: a later copy
of that batch gets the same answers. A client's older results are dropped when its next batch is
applied; by then the clerk has stopped waiting for them (it sends a batch only after the previous
one was answered), and any copy of an older batch that commits late gets :data:`ERR_STALE`. Queries
are not remembered: a duplicate Query reads again, inside the call that waits for it. The server
answers a batch of Queries of known clients without the log (ReadIndex, :meth:`read`), leaving the
table as it is: through the log a Query would only record its number, refresh the session and drop
the results of the client's previous batch, none of which changes an answer (a late copy of that batch
then gets its remembered results instead of :data:`ERR_STALE`; the clerk no longer waits for either).

Sessions expire through the log, as in kvraft (:mod:`actors.sessions`): a stamped entry advances the
log clock and forgets every client idle for longer than the TTL before its batch is applied; an
operation of a client the table does not know is refused with a
:class:`~actors.sessions.SessionExpired` result unless it is the client's first (``seq == 1``) or the
table has never forgotten anybody.

Invariants: ``apply`` is deterministic and never raises on what a client sent (bad requests become
:class:`~shardctrler.ops.Refusal` results and leave the configurations unchanged); a batch is applied
atomically; ``snapshot()`` / ``restore()`` round-trip the whole state, dedup table included.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import Any

from actors.sessions import LogClock, SessionExpired, SessionTable, unstamp
from actors.statemachine import NEEDS_LOG
from shardctrler.config import NSHARDS, Config, _check_nshards
from shardctrler.errors import RefusedError
from shardctrler.ops import (
    ERR_BAD_REQUEST,
    ERR_BAD_SHARD,
    ERR_GROUP_EXISTS,
    ERR_SERVER_IN_USE,
    ERR_STALE,
    ERR_UNKNOWN_GROUP,
    JOIN,
    LEAVE,
    MOVE,
    QUERY,
    Refusal,
    normalise,
)

_PICKLE_PROTOCOL = 5


def rebalance(shards: Sequence[int], gids: Sequence[int]) -> tuple[int, ...]:
    """Assign every shard to one of ``gids`` (all shards to 0 if there are none), balanced, moving as
    few shards as possible from ``shards`` (the current assignment; gids not in ``gids`` are
    departed). Deterministic: depends only on the values of its arguments, not on their order."""
    n = len(shards)
    groups = sorted(set(gids))
    if not groups:
        return (0,) * n
    held: dict[int, list[int]] = {g: [] for g in groups}
    free: list[int] = []
    for s, g in enumerate(shards):
        held.get(g, free).append(s)
    base, extra = divmod(n, len(groups))
    by_size = sorted(groups, key=lambda g: (-len(held[g]), g))
    quota = {g: base + (1 if i < extra else 0) for i, g in enumerate(by_size)}
    for g in groups:
        excess = len(held[g]) - quota[g]
        if excess > 0:
            free.extend(held[g][-excess:])
            del held[g][-excess:]
    free.sort()
    out = list(shards)
    it = iter(free)
    for g in groups:
        for _ in range(quota[g] - len(held[g])):
            out[next(it)] = g
    return tuple(out)


class CtrlerStateMachine:
    """The replicated shard controller (implements :class:`actors.statemachine.StateMachine`).

    ``nshards``: the number of shards (default 10, the reference's; any count >= 1).
    ``maxraftstate``: ask Raft for a snapshot when the persisted Raft state exceeds this many bytes;
    ``-1`` (the default, as in the reference) never snapshots.
    """

    def __init__(self, nshards: int = NSHARDS, maxraftstate: int = -1) -> None:
        self.nshards = _check_nshards(nshards)
        self.maxraftstate = maxraftstate
        self.configs: list[Config] = [Config.initial(nshards)]
        self.sessions = SessionTable()
        self.clock = LogClock()
        self.last_applied = 0
        self.applied_ops = 0
        self.duplicates = 0
        self.refused = 0
        self.expired_refused = 0  # operations refused because their session had expired
        self._asked_at_size = -1

    # -- StateMachine protocol -------------------------------------------------------------------

    def apply(self, index: int, command: Any) -> list[Any] | None:
        """Apply one log entry (a :data:`~shardctrler.ops.Batch`, or ``None`` for a no-op; either may be
        stamped with the log time, see :mod:`actors.sessions`).

        Returns one result per operation: the new config number for a Join, Leave or Move, a
        :class:`Config` for a Query, a :class:`~shardctrler.ops.Refusal`, or
        :class:`~actors.sessions.SessionExpired` for an operation of an expired session.
        """
        self.last_applied = index
        time_ms, ttl, command = unstamp(command)
        if self.clock.advance(time_ms, ttl):
            self.sessions.expire(self.clock.now_ms, ttl)
        if command is None:
            return None
        if not isinstance(command, (tuple, list)):
            return [Refusal(ERR_BAD_REQUEST, f"a log entry must be a tuple of operations, got "
                                             f"{type(command).__name__}")]
        return self.apply_batch(command)

    def apply_batch(self, batch: Sequence[Any]) -> list[Any]:
        results: list[Any] = []
        fresh: set[int] = set()  # clients whose batch results were reset by this entry
        for op in batch:
            results.append(self._apply_op(op, fresh))
        self.applied_ops += len(batch)
        return results

    def _apply_op(self, op: Any, fresh: set[int]) -> Any:
        if not isinstance(op, (tuple, list)) or len(op) != 4:
            self.refused += 1
            return Refusal(ERR_BAD_REQUEST, f"an operation is (kind, args, client_id, seq), got {op!r:.120}")
        kind, raw, client, seq = op
        if not isinstance(client, int) or not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            self.refused += 1
            return Refusal(ERR_BAD_REQUEST, f"client id and seq must be ints (seq >= 1), got {client!r:.40}, "
                                            f"{seq!r:.40}")
        sessions = self.sessions
        session = sessions.get(client)
        if session is None:
            if sessions.refuses(client, seq):
                self.expired_refused += 1
                return SessionExpired(client, seq)
            last, done = 0, {}
        else:
            sessions.touch(client, session, self.clock.now_ms)
            last, done = session[0], session[2]
        if seq <= last and kind != QUERY:
            self.duplicates += 1
            return done.get(seq, Refusal(ERR_STALE, f"operation {seq} of client {client} was superseded by "
                                                    f"its operation {last}"))
        try:
            args = normalise(kind, raw)
        except RefusedError as e:
            result: Any = Refusal(e.code, str(e))
        else:
            result = self._query(args) if kind == QUERY else self._write(kind, args)
        if isinstance(result, Refusal):
            self.refused += 1
        if seq > last:
            if client not in fresh:
                fresh.add(client)
                done = {}
            if kind != QUERY:
                done[seq] = result
            if session is None:
                session = sessions.open(client, self.clock.now_ms, done)
            session[0], session[2] = seq, done
        return result

    def _query(self, num: int) -> Config:
        if num == -1 or num >= len(self.configs):
            return self.configs[-1]
        return self.configs[num]

    def _write(self, kind: int, args: Any) -> int | Refusal:
        cur = self.configs[-1]
        groups = dict(cur.groups)
        if kind == JOIN:
            owner = {s: g for g, servers in groups.items() for s in servers}
            for gid, servers in args:
                if gid in groups:
                    return Refusal(ERR_GROUP_EXISTS,
                                   f"group {gid} is already in config {cur.num} with servers "
                                   f"{list(groups[gid])}: leave it first, or use another gid")
                for s in servers:
                    if s in owner:
                        return Refusal(ERR_SERVER_IN_USE, f"server {s!r} already serves group {owner[s]} in "
                                                          f"config {cur.num}: a server belongs to one group")
            groups.update(args)
            shards = rebalance(cur.shards, list(groups))
        elif kind == LEAVE:
            for gid in args:
                if gid not in groups:
                    return Refusal(ERR_UNKNOWN_GROUP, f"cannot leave group {gid}: it is not in config "
                                                      f"{cur.num} (groups: {sorted(groups)})")
            for gid in args:
                del groups[gid]
            shards = rebalance(cur.shards, list(groups))
        elif kind == MOVE:
            shard, gid = args
            if shard >= cur.nshards:
                return Refusal(ERR_BAD_SHARD, f"shard {shard} is out of range: there are {cur.nshards} "
                                              f"shards, numbered 0 .. {cur.nshards - 1}")
            if gid not in groups:
                return Refusal(ERR_UNKNOWN_GROUP, f"cannot move shard {shard} to group {gid}: it is not in "
                                                  f"config {cur.num} (groups: {sorted(groups)})")
            shards = (*cur.shards[:shard], gid, *cur.shards[shard + 1:])
        else:  # normalise() accepts no other kind
            raise AssertionError(f"unreachable: kind {kind!r}")
        self.configs.append(Config(cur.num + 1, shards, groups))
        return cur.num + 1

    def snapshot(self) -> bytes:
        """The whole state after the last applied entry: configurations, dedup table (with times) and
        log clock."""
        return pickle.dumps((self.nshards, self.configs, self.sessions, self.clock.now_ms, self.clock.ttl_ms),
                            protocol=_PICKLE_PROTOCOL)

    def restore(self, data: bytes, index: int) -> None:
        """Replace the whole state with a snapshot covering the log up to ``index`` (also one written
        before sessions expired, whose table was ``{client: (seq, results)}``)."""
        state = pickle.loads(data)
        nshards, configs, sessions = state[:3]
        if isinstance(sessions, dict):
            sessions = SessionTable((c, [seq, 0, done]) for c, (seq, done) in sessions.items())
        clock = LogClock(*state[3:5]) if len(state) == 5 else LogClock()
        if nshards != self.nshards:
            raise ValueError(f"snapshot at index {index} is of a controller with {nshards} shards, but this "
                             f"replica was started with nshards={self.nshards}: start it with the same "
                             "nshards as the rest of its group")
        self.configs, self.sessions, self.clock = configs, sessions, clock
        self.last_applied = index

    def should_snapshot(self, applied_index: int, raft_state_size: int) -> bool:
        """Snapshot when the persisted Raft state is above ``maxraftstate`` bytes (asked once per size)."""
        if self.maxraftstate < 0 or raft_state_size <= self.maxraftstate:
            return False
        if raft_state_size == self._asked_at_size:
            return False
        self._asked_at_size = raft_state_size
        return True

    # -- queries ---------------------------------------------------------------------------------

    def latest(self) -> Config:
        return self.configs[-1]

    def read(self, op: Any, now_ms: int = 0, ttl: int | None = None) -> Any:
        """What the Query ``op`` returns if served now without the log (ReadIndex; nothing changes):
        the configuration ``num`` if it exists, else the latest (``num == -1`` or above the latest:
        what applying the Query now would answer); or :data:`~actors.reads.NEEDS_LOG` if only the log
        can answer it: not a well-formed Query (the log refuses it with a clear
        :class:`~shardctrler.ops.Refusal`), a client the table does not know (the log opens its
        session, or refuses it as expired), or a session idle for longer than half the TTL (the log
        refreshes it: :func:`~actors.sessions.renewal_due`). ``now_ms`` and ``ttl``: the reading
        leader's clock and the TTL it stamps (see :meth:`~actors.sessions.LogClock.for_read`)."""
        if not isinstance(op, (tuple, list)) or len(op) != 4 or op[0] != QUERY:
            return NEEDS_LOG
        _, raw, client, seq = op
        if (type(client) is not int or type(seq) is not int or seq < 1
                or not self.sessions.readable(client, *self.clock.for_read(now_ms, ttl))):
            return NEEDS_LOG
        try:
            num = normalise(QUERY, raw)
        except RefusedError:
            return NEEDS_LOG
        return self._query(num)

    def stats(self) -> dict[str, int]:
        return {
            "configs": len(self.configs),
            "latest": self.configs[-1].num,
            "groups": len(self.configs[-1].groups),
            "clients": len(self.sessions),
            "sessions_expired": self.sessions.expired,
            "expired_refused": self.expired_refused,
            "log_time_ms": self.clock.now_ms,
            "last_applied": self.last_applied,
            "applied_ops": self.applied_ops,
            "duplicates": self.duplicates,
            "refused": self.refused,
        }
