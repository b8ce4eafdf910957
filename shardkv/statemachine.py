"""The state machine of one shard group: per-shard data and dedup tables, the configuration the group
is in, and the status of every shard it holds. Pure and deterministic (no Ray, no asyncio, no clock).

**Shards.** The group holds a :class:`Shard` for every shard it serves or still has data for. Its
``status`` is one of:

- ``serving``: owned in the current configuration and present; client operations are applied;
- ``arriving``: owned in the current configuration, but its data is still at ``peer`` (the group that
  held it before); operations are refused with wrong-group until it is installed;
- ``gc_pending``: arrived and installed, served like ``serving``, but ``peer`` has not yet confirmed
  that it deleted its copy;
- ``leaving``: no longer owned; its data is frozen and kept for ``peer`` (the new owner) to pull,
  until ``peer`` says it may be deleted (a ``DELETE`` command);
- ``held``: the current configuration assigns the shard to no group (every group has left), and this
  group held it last: it keeps the data, frozen, until a configuration gives the shard to a group.

A shard the group neither owns nor holds has no entry. Every status change is the effect of a log
command (``CONFIG``, ``INSTALL``, ``DELETE``, ``GC_DONE``), so every replica of the group agrees.

**Configurations.** The group takes configurations one at a time, in order: a ``CONFIG`` command is
applied only if its number is the current one + 1, and the server proposes one only when the group
is *settled* (no shard arriving, leaving or gc_pending), so that each shard's move finishes before
the next begins. Applying configuration ``c`` (previous configuration ``p``), for each shard ``s``,
where ``holder[s]`` is the last group that owned ``s`` in any configuration up to ``p``:

- owned in ``c``: ``serving`` if this group holds it (or no group ever did: a fresh, empty shard),
  else ``arriving`` from ``holder[s]``;
- not owned in ``c`` but held here: ``leaving`` towards ``c.shards[s]``, or ``held`` if that is 0.

Every group applies every configuration, so every group computes the same ``holder`` sequence; the
servers of a holder that has left the configuration are remembered in ``addresses``.

**Exactly once across moves.** Each shard has its own dedup table (client id -> highest ``seq``
applied on that shard), and it moves with the shard's data. A clerk sends its operations on one shard
in ``seq`` order, one at a time (the sync clerk) or with at most one call in flight per shard (the
asyncio clerk), so once ``seq`` is applied on a shard no lower ``seq`` of that client is applied there
later: an old copy still in the previous owner's log is applied there before the configuration that
takes the shard away (and then travels in the table), or is refused with wrong-group after it. A
duplicate Get reads again, as in kvraft (the entry is applied inside the waiting call), so the tables
keep numbers only, no results.

**Sessions expire through the log, shard by shard.** Each shard's table is a
:class:`~actors.sessions.SessionTable` (client id -> highest ``seq`` and the log time of the client's
last request on that shard). A stamped entry (see :mod:`actors.sessions`) advances the group's log
clock and then expires the tables of the shards the group *serves* (``serving``, ``gc_pending``); the
tables of ``leaving`` and ``held`` shards are frozen like their data (so every replica exports the same
copy) and expire again once a group serves them. A table moves with its shard, times included: the
receiving group lowers every time above its own log clock to it and keeps the table ordered
(:meth:`~actors.sessions.SessionTable.installed`), all inside the ``INSTALL`` entry, so the expiry stays
a decision of each group's log, the same on every replica of that group. Whether the table has ever
forgotten a session (``forgot``) travels with it, so the refusal rule survives the move: an operation of
a client the shard's table does not know is refused with :class:`~actors.sessions.SessionExpired`
unless it is the client's first on that shard (``seq == 1``: the clerks number operations per shard) or
the table has never forgotten anybody. (Clocks of different groups differ only by their skew: a table
arriving from a group whose clock is behind makes its sessions look idle for longer than they were,
which can only expire them early, never make a duplicate.)

Invariants: :meth:`apply` never raises on anything in the log (a bad command or operation gets an
:class:`~shardkv.ops.OpError` result and changes nothing); the same snapshot and the same entries give
the same state and results on every replica; :meth:`snapshot` / :meth:`restore` round-trip all of it.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from actors.sessions import LogClock, SessionExpired, SessionTable, unstamp
from actors.statemachine import NEEDS_LOG
from shardctrler.config import NSHARDS, Config, key2shard, key2shard_reference
from shardkv.ops import (
    APPEND,
    CLIENT,
    CONFIG,
    DELETE,
    ERR_BAD_COMMAND,
    ERR_BAD_REQUEST,
    ERR_BAD_SHARD,
    GC_DONE,
    GET,
    INSTALL,
    PUT,
    WRONG_GROUP,
    OpError,
    op_problem,
)

_PICKLE_PROTOCOL = 5
_SNAPSHOT_VERSION = 2  # 2: session tables with times, and the log clock

SERVING, ARRIVING, GC_PENDING, LEAVING, HELD = "serving", "arriving", "gc_pending", "leaving", "held"
#: statuses whose shards answer client operations
READY = frozenset({SERVING, GC_PENDING})
#: statuses that block the next configuration
UNSETTLED = frozenset({ARRIVING, GC_PENDING, LEAVING})

#: the key -> shard mappings a service may use (both from :mod:`shardctrler.config`)
MAPPINGS: dict[str, Callable[[str, int], int]] = {"reference": key2shard_reference, "hash": key2shard}


def mapping_function(mapping: str) -> Callable[[str, int], int]:
    """The key -> shard function named ``mapping`` ("reference" or "hash"), or ``ValueError``."""
    try:
        return MAPPINGS[mapping]
    except (KeyError, TypeError):
        raise ValueError(f"unknown key mapping {mapping!r}: use 'reference' (first byte mod nshards, "
                         "the ported tests) or 'hash' (stable hash of the whole key)") from None


@dataclass(slots=True)
class Shard:
    """One shard held by the group: ``status`` (see the module docstring), ``data`` (key -> value),
    ``dedup`` (the shard's session table: client id -> highest seq applied on this shard and the log
    time of its last request there) and ``peer`` (the gid the shard comes from while arriving /
    gc_pending, or goes to while leaving; 0 otherwise)."""

    status: str
    data: dict[str, str] = field(default_factory=dict)
    dedup: SessionTable = field(default_factory=SessionTable)
    peer: int = 0

    def resident_bytes(self) -> int:
        """UTF-8 bytes of keys and values (what a moved-away shard costs until it is deleted)."""
        return sum(len(k.encode()) + len(v.encode()) for k, v in self.data.items())


class ShardKVStateMachine:
    """The replicated state of shard group ``gid`` (implements :class:`actors.statemachine.StateMachine`).

    ``nshards``: the service's shard count (every configuration must have it); ``mapping``: the key ->
    shard function, "reference" or "hash"; ``maxraftstate``: snapshot when the persisted Raft state
    exceeds this many bytes (negative: never).
    """

    def __init__(self, gid: int, nshards: int = NSHARDS, mapping: str = "reference",
                 maxraftstate: int = -1) -> None:
        if not isinstance(gid, int) or isinstance(gid, bool) or gid <= 0:
            raise ValueError(f"gid must be an int > 0, got {gid!r:.40}")
        self.gid = gid
        self.key2shard = mapping_function(mapping)
        self.mapping = mapping
        self.maxraftstate = maxraftstate
        self.config = Config.initial(nshards)
        self.prev = self.config
        self.shards: dict[int, Shard] = {}
        #: per shard, the last group that owned it in any configuration so far (0: never owned)
        self.holders: list[int] = [0] * nshards
        #: the servers of every group that holds a shard (so a group that left can still be reached)
        self.addresses: dict[int, tuple[str, ...]] = {}
        self.clock = LogClock()
        self.last_applied = 0
        self.applied_ops = 0
        self.duplicates = 0
        self.expired_refused = 0  # operations refused because their session had expired
        self._asked_at_size = -1

    @property
    def nshards(self) -> int:
        return self.config.nshards

    # -- StateMachine protocol -------------------------------------------------------------------

    def apply(self, index: int, command: Any) -> Any:
        """Apply one log entry (see :mod:`shardkv.ops` for the forms; any may be stamped with the log
        time, see :mod:`actors.sessions`). Never raises."""
        self.last_applied = index
        time_ms, ttl, command = unstamp(command)
        if self.clock.advance(time_ms, ttl):
            now = self.clock.now_ms
            for sh in self.shards.values():
                if sh.status in READY:
                    sh.dedup.expire(now, ttl)
        if command is None:
            return None
        if not isinstance(command, tuple) or not command:
            return OpError(ERR_BAD_COMMAND, f"a command is a non-empty tuple, got {command!r:.120}")
        tag = command[0]
        try:
            if tag == CLIENT and len(command) == 2:
                return self._apply_client(command[1])
            if tag == CONFIG and len(command) == 2:
                return self._apply_config(command[1])
            if tag in (INSTALL, DELETE, GC_DONE) and len(command) == 3:
                return {INSTALL: self._apply_install, DELETE: self._apply_delete,
                        GC_DONE: self._apply_gc_done}[tag](command[1], command[2])
        except _BadCommand as e:
            return OpError(ERR_BAD_COMMAND, str(e))
        return OpError(ERR_BAD_COMMAND, f"unknown command {command!r:.120}")

    def snapshot(self) -> bytes:
        shards = {s: (sh.status, sh.data, sh.dedup, sh.peer) for s, sh in self.shards.items()}
        return pickle.dumps((_SNAPSHOT_VERSION, self.config, self.prev, self.holders, self.addresses,
                             shards, self.clock.now_ms, self.clock.ttl_ms), protocol=_PICKLE_PROTOCOL)

    def restore(self, data: bytes, index: int) -> None:
        """Replace the whole state with a snapshot (also one of format 1, written before sessions
        expired: its tables become sessions active at time 0)."""
        state = pickle.loads(data)
        version = state[0]
        if version == 1:
            config, prev, holders, addresses, shards = state[1:]
            shards = {s: (st, d, SessionTable.from_seqs(dd, 0), p) for s, (st, d, dd, p) in shards.items()}
            clock = LogClock()
        elif version == _SNAPSHOT_VERSION:
            config, prev, holders, addresses, shards, now_ms, ttl = state[1:]
            clock = LogClock(now_ms, ttl)
        else:
            raise ValueError(f"snapshot format {version} is not {_SNAPSHOT_VERSION}: written by another "
                             "version of shardkv")
        self.config, self.prev, self.holders, self.addresses = config, prev, holders, addresses
        self.shards = {s: Shard(*v) for s, v in shards.items()}
        self.clock = clock
        self.last_applied = index

    def should_snapshot(self, applied_index: int, raft_state_size: int) -> bool:
        """Snapshot when the persisted Raft state is above ``maxraftstate`` bytes (asked once per
        stale size, as in kvraft)."""
        if self.maxraftstate < 0 or raft_state_size <= self.maxraftstate:
            return False
        if raft_state_size == self._asked_at_size:
            return False
        self._asked_at_size = raft_state_size
        return True

    # -- client operations -----------------------------------------------------------------------

    def _apply_client(self, batch: Any) -> list[Any]:
        if not isinstance(batch, tuple):
            raise _BadCommand(f"a client batch is a tuple of operations, got {type(batch).__name__}")
        results: list[Any] = []
        for op in batch:
            results.append(self._apply_op(op))
        return results

    def _apply_op(self, op: Any) -> Any:
        problem = op_problem(op, self.nshards)
        if problem is not None:
            return OpError(ERR_BAD_REQUEST, problem)
        kind, key, value, client, seq, shard = op
        actual = self.key2shard(key, self.nshards)
        if actual != shard:
            return OpError(ERR_BAD_SHARD, f"key {key!r:.60} is in shard {actual} under the service's "
                                          f"{self.mapping!r} mapping, but the clerk sent it for shard "
                                          f"{shard}: give the clerk the service's mapping")
        sh = self.shards.get(shard)
        if sh is None or sh.status not in READY:
            return WRONG_GROUP
        table, now = sh.dedup, self.clock.now_ms
        session = table.get(client)
        if session is None:
            if table.refuses(client, seq):
                self.expired_refused += 1
                return SessionExpired(client, seq)
            session = table.open(client, now)
        else:
            table.touch(client, session, now)
        self.applied_ops += 1
        if kind == GET:
            if seq > session[0]:
                session[0] = seq
            return sh.data.get(key, "")
        if seq <= session[0]:
            self.duplicates += 1
            return None
        session[0] = seq
        if kind == PUT:
            sh.data[key] = value
        elif kind == APPEND:
            sh.data[key] = sh.data.get(key, "") + value
        return None

    # -- configuration changes -------------------------------------------------------------------

    def settled(self) -> bool:
        """No shard is arriving, leaving or waiting for its old copy to be deleted: the group may
        take the next configuration."""
        return all(sh.status not in UNSETTLED for sh in self.shards.values())

    def _apply_config(self, config: Any) -> bool:
        """Take ``config`` if it is the next one and the group is settled; ``False`` otherwise (a
        duplicate or early proposal: the server retries once the group is settled)."""
        if not isinstance(config, Config):
            raise _BadCommand(f"CONFIG needs a shardctrler Config, got {type(config).__name__}")
        if config.nshards != self.nshards:
            raise _BadCommand(f"config {config.num} has {config.nshards} shards; this service has "
                              f"{self.nshards}")
        if config.num != self.config.num + 1 or not self.settled():
            return False
        me = self.gid
        for s, new_owner in enumerate(config.shards):
            holder = self.holders[s]
            sh = self.shards.get(s)
            if new_owner == me:
                if sh is not None:  # serving already, or held while no group owned it
                    sh.status, sh.peer = SERVING, 0
                elif holder == 0:  # never owned by anyone: starts empty
                    self.shards[s] = Shard(SERVING)
                else:
                    self.shards[s] = Shard(ARRIVING, peer=holder)
            elif sh is not None:  # held here, owned elsewhere now (or by no group)
                sh.status, sh.peer = (LEAVING, new_owner) if new_owner else (HELD, 0)
            if new_owner:
                self.holders[s] = new_owner
        for gid, servers in config.groups.items():
            self.addresses[gid] = servers
        live = set(self.holders) | {sh.peer for sh in self.shards.values()}
        self.addresses = {g: a for g, a in self.addresses.items() if g in live or g in config.groups}
        self.prev, self.config = self.config, config
        return True

    # -- migration and garbage collection -------------------------------------------------------

    def _shard_list(self, shards: Any) -> list[int]:
        if not isinstance(shards, tuple) or not all(
                isinstance(s, int) and not isinstance(s, bool) and 0 <= s < self.nshards for s in shards):
            raise _BadCommand(f"expected a tuple of shard numbers in 0..{self.nshards - 1}, "
                              f"got {shards!r:.120}")
        return list(shards)

    def _apply_install(self, num: Any, payload: Any) -> tuple[int, ...]:
        """Install pulled shards for configuration ``num``: each one still arriving becomes
        ``gc_pending`` (and is served at once), its session table brought under this group's clock
        (:meth:`~actors.sessions.SessionTable.installed`). Returns the shards installed (a late
        duplicate installs nothing). A table may also come in the old form ``{client: seq}``."""
        if not isinstance(payload, tuple) or not all(
                isinstance(p, tuple) and len(p) == 3 and isinstance(p[1], dict)
                and isinstance(p[2], (dict, SessionTable)) for p in payload):
            raise _BadCommand(f"INSTALL carries ((shard, data, dedup), ...), got {payload!r:.120}")
        self._shard_list(tuple(p[0] for p in payload))
        if num != self.config.num:
            return ()
        done = []
        now = self.clock.now_ms
        for s, data, dedup in payload:
            sh = self.shards.get(s)
            if sh is not None and sh.status == ARRIVING:
                table = (dedup.installed(now) if isinstance(dedup, SessionTable)
                         else SessionTable.from_seqs(dedup, now))
                sh.data, sh.dedup, sh.status = dict(data), table, GC_PENDING
                done.append(s)
        return tuple(done)

    def _apply_delete(self, num: Any, shards: Any) -> tuple[int, ...]:
        """The new owner has installed these shards (for configuration ``num``): drop the leaving
        copies. Returns the shards deleted."""
        done = []
        for s in self._shard_list(shards):
            sh = self.shards.get(s)
            if num == self.config.num and sh is not None and sh.status == LEAVING:
                del self.shards[s]
                done.append(s)
        return tuple(done)

    def _apply_gc_done(self, num: Any, shards: Any) -> tuple[int, ...]:
        """The previous holder has deleted these shards: they become plain ``serving``."""
        done = []
        for s in self._shard_list(shards):
            sh = self.shards.get(s)
            if num == self.config.num and sh is not None and sh.status == GC_PENDING:
                sh.status, sh.peer = SERVING, 0
                done.append(s)
        return tuple(done)

    # -- queries for the server ------------------------------------------------------------------

    def read(self, op: Any, now_ms: int = 0, ttl: int | None = None) -> Any:
        """What the Get ``op`` returns if served now without the log (ReadIndex; nothing changes):
        the value, or ``WRONG_GROUP`` if the key's shard is not owned and ready here at this point; or
        :data:`~actors.reads.NEEDS_LOG` if only the log can answer it (not a well-formed Get for its
        shard, a client the shard's dedup table does not know: the log opens or refuses it, or a
        session on that shard idle for longer than half the TTL: the log refreshes it, see
        :func:`~actors.sessions.renewal_due`). ``now_ms`` and ``ttl``: the reading leader's clock and
        the TTL it stamps (see :meth:`~actors.sessions.LogClock.for_read`)."""
        if op_problem(op, self.nshards) is not None or op[0] != GET:
            return NEEDS_LOG
        _, key, _, client, _, shard = op
        if self.key2shard(key, self.nshards) != shard:
            return NEEDS_LOG
        sh = self.shards.get(shard)
        if sh is None or sh.status not in READY:
            return WRONG_GROUP
        if not sh.dedup.readable(client, *self.clock.for_read(now_ms, ttl)):
            return NEEDS_LOG
        return sh.data.get(key, "")

    def serves(self, shard: int) -> bool:
        """Whether client operations on ``shard`` would be applied now."""
        sh = self.shards.get(shard)
        return sh is not None and sh.status in READY

    def with_status(self, status: str) -> dict[int, list[int]]:
        """peer gid -> the shards in ``status`` that involve it, in increasing order."""
        out: dict[int, list[int]] = {}
        for s in sorted(self.shards):
            sh = self.shards[s]
            if sh.status == status:
                out.setdefault(sh.peer, []).append(s)
        return out

    def export(self, num: int, shards: tuple[int, ...]) -> tuple[tuple[int, dict[str, str], SessionTable],
                                                                 ...] | None:
        """Copies of the data and dedup tables of ``shards`` for a group pulling them in configuration
        ``num``; ``None`` unless this group is in ``num`` with every one of them leaving (their data is
        then frozen: no operation, install or configuration changes it until it is deleted)."""
        if num != self.config.num:
            return None
        out = []
        for s in shards:
            sh = self.shards.get(s)
            if sh is None or sh.status != LEAVING:
                return None
            out.append((s, dict(sh.data), sh.dedup.copy()))
        return tuple(out)

    def status(self) -> dict[str, Any]:
        """Plain-data summary: configuration numbers, shards by status, resident bytes by status."""
        by_status: dict[str, list[int]] = {}
        resident: dict[str, int] = {}
        for s in sorted(self.shards):
            sh = self.shards[s]
            by_status.setdefault(sh.status, []).append(s)
            resident[sh.status] = resident.get(sh.status, 0) + sh.resident_bytes()
        return {
            "gid": self.gid,
            "config": self.config.num,
            "prev_config": self.prev.num,
            "settled": self.settled(),
            "shards": by_status,
            "resident_bytes": resident,
            "keys": sum(len(sh.data) for sh in self.shards.values()),
            "last_applied": self.last_applied,
            "applied_ops": self.applied_ops,
            "duplicates": self.duplicates,
            "sessions": sum(len(sh.dedup) for sh in self.shards.values()),
            "sessions_expired": sum(sh.dedup.expired for sh in self.shards.values()),
            "expired_refused": self.expired_refused,
            "log_time_ms": self.clock.now_ms,
        }


class _BadCommand(Exception):
    """A malformed log command (turned into an ``OpError`` result by :meth:`apply`)."""
