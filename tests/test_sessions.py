"""Client sessions that expire through the log (issue 13, item 5), without Ray: log time and session
tables (:mod:`actors.sessions`), their use by the three state machines, and hypothesis properties:
replicas applying the same stamped log (with snapshots taken and restored anywhere) reach the same
session tables, and no request is ever executed twice, however long clients stay idle.
"""

from __future__ import annotations

import pickle
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.sessions import (
    STAMP,
    LogClock,
    SessionExpired,
    SessionExpiredError,
    SessionTable,
    renewal_due,
    stamp,
    ttl_ms,
    unstamp,
)
from kvraft.ops import APPEND, GET, PUT
from kvraft.statemachine import KVStateMachine
from shardctrler.config import Config
from shardctrler.ops import JOIN, MOVE, QUERY
from shardctrler.statemachine import CtrlerStateMachine
from shardkv.ops import CLIENT, CONFIG, DELETE, GC_DONE, INSTALL
from shardkv.statemachine import GC_PENDING, LEAVING, SERVING, ShardKVStateMachine

TTL = 1000  # ms


def same_state(x: bytes, y: bytes) -> bool:
    """Two snapshots hold the same state. Compared unpickled, not byte for byte: pickle shares equal
    objects by identity (a status string from the module in one, its unpickled copy in the other),
    which changes the bytes but not the state; a session table compares its entries in order."""
    return pickle.loads(x) == pickle.loads(y)


def check_order(table: SessionTable, now_ms: int) -> None:
    """The table's invariant: entries in order of last activity, none after the log clock."""
    times = [e[1] for e in table.entries.values()]
    assert times == sorted(times), times
    assert all(t <= now_ms for t in times)


# ------------------------------------------------------------------------------------------------
# actors.sessions
# ------------------------------------------------------------------------------------------------


def test_ttl_ms_converts_and_refuses_what_is_not_a_duration():
    assert ttl_ms(None) == 0 and ttl_ms(1.5) == 1500 and ttl_ms(3600) == 3_600_000 and ttl_ms(0.001) == 1
    for bad in (0, -1, float("nan"), float("inf"), 0.0001):
        with pytest.raises(ValueError, match="session_ttl"):
            ttl_ms(bad)
    for bad in ("60", True, [1]):
        with pytest.raises(TypeError, match="session_ttl"):
            ttl_ms(bad)


def test_stamp_round_trip_and_lookalikes_stay_unstamped():
    batch = ((PUT, "k", "v", 1, 1),)
    assert unstamp(stamp(batch, 1234, 500)) == (1234, 500, batch)
    assert unstamp(batch) == (None, 0, batch)
    assert unstamp(None) == (None, 0, None)
    for fake in ((STAMP, "1", 2, batch), (STAMP, 1, 2.0, batch), (STAMP, 1, 2), ["ts", 1, 2, batch]):
        assert unstamp(fake) == (None, 0, fake)


def test_log_clock_never_runs_backwards():
    c = LogClock()
    assert not c.advance(None, 7) and (c.now_ms, c.ttl_ms) == (0, 0)
    assert c.advance(100, 50) and c.now_ms == 100
    assert c.advance(40, 60) and (c.now_ms, c.ttl_ms) == (100, 60)  # a new leader's clock is behind
    assert c.advance(130, 60) and c.now_ms == 130


def test_table_keeps_activity_order_and_expires_from_the_front():
    t = SessionTable()
    for client, now in ((1, 0), (2, 10), (3, 20)):
        t.open(client, now)[0] = 1
    t.touch(1, t.get(1), 30)  # client 1 is the most recent now
    assert list(t) == [2, 3, 1]
    check_order(t, 30)
    assert t.expire(25, 10) == 1 and list(t) == [3, 1]  # 2 idle 15 > 10; 3 idle exactly 10 stays
    assert t.forgot and t.expired == 1
    assert t.expire(25, 0) == 0  # ttl 0: never
    assert t.expire(1000, 10) == 2 and len(t) == 0 and t.expired == 3


def test_refusal_rule():
    t = SessionTable()
    assert not t.refuses(5, 9)  # nothing ever forgotten: an unknown client cannot be a forgotten one
    t.open(5, 0)
    t.expire(100, 10)
    assert t.forgot
    assert t.refuses(5, 9) and t.refuses(6, 2)  # unknown, not the first request
    assert not t.refuses(6, 1)  # a client's first request opens its session
    t.open(6, 100)
    assert not t.refuses(6, 2)


def test_a_read_renews_its_session_through_the_log_after_half_the_ttl():
    assert not renewal_due(1_000, 1_500, TTL)  # idle exactly half the TTL: still read without the log
    assert renewal_due(1_000, 1_501, TTL)
    assert not renewal_due(1_000, 10**9, 0)  # ttl 0: sessions never expire, never renewed
    assert not renewal_due(1_000, 900, TTL)  # a leader clock behind the session's time
    t = SessionTable()
    t.open(1, 1_000)
    assert t.readable(1, 1_400, TTL) and not t.readable(1, 1_600, TTL)
    assert not t.readable(2, 1_000, TTL)  # unknown: the log opens or refuses it
    assert list(t) == [1] and t.get(1)[1] == 1_000, "asking changes nothing"
    clock = LogClock()
    clock.advance(2_000, TTL)
    assert clock.for_read() == (2_000, TTL)  # the log clock alone
    assert clock.for_read(5_000, 300) == (5_000, 300)  # the leader's clock is ahead; its TTL
    assert clock.for_read(1_000) == (2_000, TTL)  # ... or behind: the log clock


def test_table_pickles_copies_and_installs_under_another_clock():
    t = SessionTable()
    for client, now in ((1, 5), (2, 50), (3, 70)):
        t.open(client, now, {"r": client})[0] = client
    t.expire(56, 10)  # forgets client 1
    back = pickle.loads(pickle.dumps(t, protocol=5))
    assert back == t and list(back) == [2, 3] and back.forgot and back.expired == 1
    cp = t.copy()
    cp.get(2)[0] = 99
    assert t.get(2)[0] == 2  # independent
    inst = t.installed(60)  # the receiver's clock is behind the sender's: times above it lowered
    assert [(c, e[1]) for c, e in inst.entries.items()] == [(2, 50), (3, 60)] and inst.forgot
    check_order(inst, 60)
    old = SessionTable.from_seqs({4: 2, 5: 7}, 33)
    assert old.seqs() == {4: 2, 5: 7} and [e[1] for e in old.entries.values()] == [33, 33]
    assert not old.forgot


def test_error_pickles_with_fields_and_says_what_to_do():
    e = SessionExpiredError("kvraft", "put('k')", 77, 12, maybe_applied=False)
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is SessionExpiredError and str(back) == str(e)
    assert (back.service, back.operation, back.client_id, back.seq, back.maybe_applied) == (
        "kvraft", "put('k')", 77, 12, False)
    assert "never applied" in str(e) and "session_ttl" in str(e) and "new session" in str(e)
    assert "may have been applied" in str(SessionExpiredError("shardkv", "get('a')", 1, 2))


# ------------------------------------------------------------------------------------------------
# kvraft
# ------------------------------------------------------------------------------------------------


def kv(kind: int, key: str, value: str | None, client: int, seq: int) -> tuple:
    return (kind, key, value, client, seq)


def test_kv_idle_client_expires_and_its_next_request_is_refused():
    sm = KVStateMachine()
    sm.apply(1, stamp((kv(PUT, "a", "1", 1, 1), kv(PUT, "b", "1", 2, 1)), 1_000, TTL))
    sm.apply(2, stamp((kv(APPEND, "b", "2", 2, 2),), 1_800, TTL))
    assert sm.sessions.seqs() == {1: 1, 2: 2}
    # at 2_500 client 1 (last seen 1_000) has been idle for 1_500 > TTL; client 2 for 700
    res = sm.apply(3, stamp((kv(APPEND, "a", "x", 1, 2), kv(APPEND, "b", "3", 2, 3)), 2_500, TTL))
    assert res == [SessionExpired(1, 2), None]
    assert sm.data == {"a": "1", "b": "123"}
    assert sm.sessions.seqs() == {2: 3} and sm.sessions.forgot
    assert sm.stats()["sessions_expired"] == 1 and sm.stats()["expired_refused"] == 1
    # a resend of client 1's first request would open a new session: the clerk's job is to never
    # send one that late; a new session (new client id) starts at 1
    assert sm.apply(4, stamp((kv(GET, "a", None, 3, 1),), 2_600, TTL)) == ["1"]
    assert sm.apply(5, stamp((kv(PUT, "a", "y", 3, 2),), 2_700, TTL)) == [None]


def test_kv_any_request_keeps_a_session_alive_and_unstamped_entries_expire_nothing():
    sm = KVStateMachine()
    sm.apply(1, stamp((kv(PUT, "a", "1", 1, 1),), 0, TTL))
    for i, t in enumerate(range(900, 5_000, 900)):  # a Get, or a duplicate, every 900 ms
        op = kv(GET, "a", None, 1, 1) if i % 2 else kv(PUT, "a", "1", 1, 1)
        sm.apply(2 + i, stamp((op,), t, TTL))
    assert 1 in sm.sessions and sm.sessions.get(1)[1] == 4_500
    sm.apply(20, (kv(PUT, "z", "1", 9, 1),))  # unstamped: the clock stays, nothing expires
    sm.apply(21, None)
    assert sm.clock.now_ms == 4_500 and len(sm.sessions) == 2 and not sm.sessions.forgot
    sm.apply(22, stamp(None, 10_000, TTL))  # a stamped no-op expires both
    assert len(sm.sessions) == 0 and sm.sessions.expired == 2


def test_kv_clock_is_monotone_across_leaders_with_skewed_clocks():
    sm = KVStateMachine()
    sm.apply(1, stamp((kv(PUT, "a", "1", 1, 1),), 5_000, TTL))
    sm.apply(2, stamp((kv(PUT, "b", "1", 2, 1),), 3_000, TTL))  # the next leader's clock is 2 s behind
    assert sm.clock.now_ms == 5_000 and sm.sessions.get(2)[1] == 5_000
    check_order(sm.sessions, sm.clock.now_ms)


def test_kv_snapshot_carries_times_order_and_clock_and_reads_the_old_format():
    sm = KVStateMachine()
    sm.apply(1, stamp((kv(PUT, "a", "1", 1, 1), kv(PUT, "b", "1", 2, 1)), 100, TTL))
    sm.apply(2, stamp((kv(PUT, "a", "2", 1, 2),), 400, TTL))
    other = KVStateMachine()
    other.restore(sm.snapshot(), 2)
    assert other.snapshot() == sm.snapshot() and list(other.sessions) == [2, 1]
    assert (other.clock.now_ms, other.clock.ttl_ms) == (400, TTL)
    old = KVStateMachine()
    old.restore(pickle.dumps(({"a": "1"}, {1: 4, 2: 1})), 9)
    assert old.sessions.seqs() == {1: 4, 2: 1} and old.clock.now_ms == 0
    assert old.apply(10, (kv(PUT, "a", "dup", 1, 4),)) == [None] and old.data == {"a": "1"}


# ------------------------------------------------------------------------------------------------
# shardctrler
# ------------------------------------------------------------------------------------------------


def test_ctrler_expired_client_is_refused_and_nothing_changes():
    sm = CtrlerStateMachine()
    join = (JOIN, {1: ["a"]}, 1, 1)
    assert sm.apply(1, stamp((join,), 0, TTL)) == [1]
    assert sm.apply(2, stamp((join,), 500, TTL)) == [1]  # a resend: answered from the table
    assert sm.apply(3, stamp(((QUERY, -1, 2, 1),), 1_400, TTL))[0].num == 1  # client 2 appears
    # client 1 was last seen at 500: at 1_600 it has expired; its resent Move is refused
    assert sm.apply(4, stamp(((MOVE, (0, 1), 1, 2),), 1_600, TTL)) == [SessionExpired(1, 2)]
    assert sm.latest().num == 1 and sm.stats()["expired_refused"] == 1
    assert 1 not in sm.sessions and 2 in sm.sessions
    copy = CtrlerStateMachine()
    copy.restore(sm.snapshot(), 4)
    assert copy.snapshot() == sm.snapshot() and copy.clock == sm.clock


def test_ctrler_reads_a_snapshot_written_before_sessions_expired():
    sm = CtrlerStateMachine()
    sm.apply(1, ((JOIN, {1: ["a"]}, 7, 1),))
    nshards, configs, table, _, _ = pickle.loads(sm.snapshot())
    old = pickle.dumps((nshards, configs, {7: (1, {1: 1})}))
    copy = CtrlerStateMachine()
    copy.restore(old, 1)
    assert copy.apply(2, ((JOIN, {1: ["a"]}, 7, 1),)) == [1]  # still answered from the table
    assert copy.sessions.seqs() == table.seqs()


# ------------------------------------------------------------------------------------------------
# shardkv
# ------------------------------------------------------------------------------------------------


def cfg(num: int, owners: list[int]) -> Config:
    return Config(num, tuple(owners), {g: (f"s{g}",) for g in sorted(set(owners)) if g})


def skv(kind: int, key: str, value: str | None, client: int, seq: int) -> tuple:
    return (kind, key, value, client, seq, ord(key[0]) % 10)  # the reference mapping


def test_shardkv_expiry_is_per_served_shard_and_leaving_tables_are_frozen():
    a = ShardKVStateMachine(100)
    a.apply(1, stamp((CONFIG, cfg(1, [100] * 10)), 0, TTL))
    a.apply(2, stamp((CLIENT, (skv(PUT, "9", "x", 1, 1), skv(PUT, "2", "y", 1, 1))), 100, TTL))
    a.apply(3, stamp((CONFIG, cfg(2, [100] * 5 + [101] * 5)), 200, TTL))  # "9" (shard 7) leaves, "2" stays
    exported = a.export(2, (7,))
    a.apply(4, stamp(None, 5_000, TTL))
    assert a.shards[7].status == LEAVING and 1 in a.shards[7].dedup  # frozen: not expired
    assert 1 not in a.shards[0].dedup and a.shards[0].dedup.forgot  # served shard 0: expired
    again = a.export(2, (7,))
    assert [(s, d, t.seqs(), t.forgot) for s, d, t in again] == [
        (s, d, t.seqs(), t.forgot) for s, d, t in exported]
    assert a.apply(5, stamp((CLIENT, (skv(PUT, "2", "z", 1, 2),)), 5_100, TTL)) == [SessionExpired(1, 2)]
    assert a.status()["expired_refused"] == 1 and a.shards[0].data == {"2": "y"}


def test_shardkv_table_moves_with_times_clamped_and_its_memory_of_forgetting():
    a, b = ShardKVStateMachine(100), ShardKVStateMachine(101)
    for sm in (a, b):
        sm.apply(1, stamp((CONFIG, cfg(1, [100] * 10)), 0, TTL))
    # keys "9" and "C" are both in shard 7
    a.apply(2, stamp((CLIENT, (skv(PUT, "9", "x", 1, 1), skv(PUT, "C", "q", 2, 1))), 100, TTL))
    a.apply(3, stamp((CLIENT, (skv(GET, "9", None, 1, 2),)), 800, TTL))
    a.apply(4, stamp((CLIENT, (skv(APPEND, "9", "y", 1, 3),)), 1_500, TTL))  # forgets client 2 there
    assert a.shards[7].dedup.forgot and a.shards[7].dedup.seqs() == {1: 3}
    a.apply(5, stamp((CONFIG, cfg(2, [100] * 5 + [101] * 5)), 1_600, TTL))
    b.apply(2, stamp((CONFIG, cfg(2, [100] * 5 + [101] * 5)), 1_000, TTL))
    # b's clock is behind a's: the installed time 1_500 is lowered to b's 1_200
    b.apply(3, stamp((INSTALL, 2, a.export(2, (7,))), 1_200, TTL))
    sh = b.shards[7]
    assert sh.status == GC_PENDING and sh.dedup.forgot and sh.dedup.get(1)[1] == 1_200
    check_order(sh.dedup, b.clock.now_ms)
    res = b.apply(4, stamp((CLIENT, (skv(APPEND, "9", "y", 1, 3), skv(APPEND, "C", "r", 2, 2))), 1_300, TTL))
    assert res == [None, SessionExpired(2, 2)]  # a duplicate of client 1; client 2 forgotten at a
    assert sh.data == {"9": "xy", "C": "q"} and b.duplicates == 1
    # the old payload form (a plain {client: seq}) still installs, every client active now
    c = ShardKVStateMachine(101)
    for i, cmd in enumerate(((CONFIG, cfg(1, [100] * 10)), (CONFIG, cfg(2, [100] * 5 + [101] * 5)))):
        c.apply(i + 1, stamp(cmd, 2_000, TTL))
    c.apply(3, (INSTALL, 2, ((7, {"9": "xy"}, {1: 2}),)))
    assert c.shards[7].dedup.seqs() == {1: 2} and c.shards[7].dedup.get(1)[1] == 2_000
    assert c.shards[7].status == GC_PENDING


def test_shardkv_snapshot_carries_tables_and_clock_and_reads_format_1():
    a = ShardKVStateMachine(100)
    a.apply(1, stamp((CONFIG, cfg(1, [100] * 10)), 10, TTL))
    a.apply(2, stamp((CLIENT, (skv(PUT, "9", "x", 1, 1),)), 20, TTL))
    b = ShardKVStateMachine(100)
    b.restore(a.snapshot(), 2)
    assert b.snapshot() == a.snapshot() and b.clock.now_ms == 20
    _, config, prev, holders, addresses, shards, _, _ = pickle.loads(a.snapshot())
    old_shards = {s: (st_, d, t.seqs(), p) for s, (st_, d, t, p) in shards.items()}
    c = ShardKVStateMachine(100)
    c.restore(pickle.dumps((1, config, prev, holders, addresses, old_shards)), 2)
    assert c.shards[7].dedup.seqs() == {1: 1} and c.clock.now_ms == 0


# ------------------------------------------------------------------------------------------------
# Properties: replicas agree; nothing is executed twice
# ------------------------------------------------------------------------------------------------


@st.composite
def stamped_kv_logs(draw: Any) -> tuple[int, list[Any]]:
    """A log of stamped kvraft batches from a few clerks that go idle, resend old batches, restart with
    new ids, under leaders whose clocks disagree. Each Append carries a unique token (an Append's dedup
path is a Put's; only appends keep every execution visible in the data). Like the
    clerks, no copy of a session's first request is placed later than half the TTL (in log time)
    after its first copy."""
    ttl = draw(st.integers(5, 60))
    n_clients = draw(st.integers(1, 4))
    ids = list(range(1, n_clients + 1))
    next_id = n_clients + 1
    seqs = {c: 0 for c in ids}
    sent: dict[int, list[tuple[tuple, int]]] = {c: [] for c in ids}  # batches, log time of first copy
    log: list[Any] = []
    now = stamp_t = 0
    for _ in range(draw(st.integers(1, 40))):
        action = draw(st.sampled_from(["new", "new", "resend", "old", "idle", "restart", "noop"]))
        stamp_t = max(0, stamp_t + draw(st.integers(-ttl, 2 * ttl)))  # a skewed leader's clock
        ci = draw(st.integers(0, len(ids) - 1))
        c = ids[ci]
        batch: tuple | None = None
        if action == "new":
            ops = []
            for _ in range(draw(st.integers(1, 3))):
                seqs[c] += 1
                kind = draw(st.sampled_from([GET, APPEND, APPEND]))  # appends keep every token
                key = draw(st.sampled_from("ab"))
                ops.append(kv(kind, key, None if kind == GET else f"{c}.{seqs[c]};", c, seqs[c]))
            batch = tuple(ops)
        elif action in ("resend", "old") and sent[c]:
            k = len(sent[c]) - 1 if action == "resend" else draw(st.integers(0, len(sent[c]) - 1))
            batch = sent[c][k][0]
        elif action == "restart":
            ids[ci] = next_id
            seqs[next_id], sent[next_id] = 0, []
            next_id += 1
        elif action == "noop":
            log.append(stamp(None, stamp_t, ttl))
            now = max(now, stamp_t)
        elif action == "idle":
            stamp_t += draw(st.integers(ttl, 3 * ttl))
        if batch is None:
            continue
        stamped = draw(st.integers(0, 9)) > 0  # a few entries come unstamped (an older leader)
        entry_now = max(now, stamp_t) if stamped else now  # the log time it is applied at
        first = next((t for b, t in sent[c] if b == batch), None)
        if batch[0][4] == 1 and first is not None and entry_now - first > ttl // 2:
            continue  # the clerk never resends a session's first request this late
        if first is None:
            sent[c].append((batch, entry_now))
        log.append(stamp(batch, stamp_t, ttl) if stamped else batch)
        now = entry_now
    return ttl, log


def tokens(data: dict[str, str]) -> list[str]:
    return [t for v in data.values() for t in v.split(";") if t]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stamped_kv_logs(), st.lists(st.integers(0, 40), max_size=3))
def test_kv_replicas_agree_and_nothing_is_executed_twice(case: tuple[int, list[Any]], cuts: list[int]):
    _, log = case
    a = KVStateMachine()
    results_a = []
    for i, e in enumerate(log):
        results_a.append(a.apply(i + 1, e))
        check_order(a.sessions, a.clock.now_ms)
    # replica b snapshots and restores itself at the cut points
    b = KVStateMachine()
    results_b = []
    for i, e in enumerate(log):
        if i in cuts:
            fresh = KVStateMachine()
            fresh.restore(b.snapshot(), i)
            b = fresh
        results_b.append(b.apply(i + 1, e))
    assert results_b == results_a
    assert same_state(b.snapshot(), a.snapshot())
    assert list(b.sessions.entries.items()) == list(a.sessions.entries.items())
    # nothing executed twice, and expiry only ever refuses: what a never-forgetting table executes
    # (unstamped entries: its clock never moves) is a superset
    seen = tokens(a.data)
    assert len(seen) == len(set(seen)), f"a request was executed twice: {sorted(seen)}"
    never = KVStateMachine()
    for i, e in enumerate(log):
        never.apply(i + 1, unstamp(e)[2])
    assert set(seen) <= set(tokens(never.data))
    for r in (r for rs in results_a if isinstance(rs, list) for r in rs):
        if isinstance(r, SessionExpired):
            assert r.seq > 1


@st.composite
def stamped_ctrler_logs(draw: Any) -> tuple[int, list[Any]]:
    """Controller logs: a group joined once, then clients that Move shards (every Move makes a new
    configuration when executed), resend, idle and restart; skewed stamps; first requests never
    resent later than half the TTL after their first copy."""
    ttl = draw(st.integers(5, 60))
    log: list[Any] = [stamp(((JOIN, {1: ["a"], 2: ["b"]}, 999, 1),), 0, ttl)]
    seqs: dict[int, int] = {}
    sent: dict[int, list[tuple[tuple, int]]] = {}
    now = stamp_t = 0
    for _ in range(draw(st.integers(1, 30))):
        c = draw(st.integers(1, 3))
        seqs.setdefault(c, 0)
        sent.setdefault(c, [])
        stamp_t = max(0, stamp_t + draw(st.integers(-ttl, 2 * ttl)))
        action = draw(st.sampled_from(["new", "new", "old", "idle", "query"]))
        if action == "idle":
            stamp_t += draw(st.integers(ttl, 3 * ttl))
            continue
        if action == "old" and sent[c]:
            batch = sent[c][draw(st.integers(0, len(sent[c]) - 1))][0]
        else:
            ops = []
            for _ in range(draw(st.integers(1, 2))):
                seqs[c] += 1
                ops.append((QUERY, -1, c, seqs[c]) if action == "query" else
                           (MOVE, (draw(st.integers(0, 9)), draw(st.sampled_from([1, 2]))), c, seqs[c]))
            batch = tuple(ops)
        entry_now = max(now, stamp_t)
        first = next((t for b, t in sent[c] if b == batch), None)
        if batch[0][3] == 1 and first is not None and entry_now - first > ttl // 2:
            continue
        if first is None:
            sent[c].append((batch, entry_now))
        log.append(stamp(batch, stamp_t, ttl))
        now = entry_now
    return ttl, log


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stamped_ctrler_logs(), st.lists(st.integers(0, 30), max_size=2))
def test_ctrler_replicas_agree_and_no_write_is_executed_twice(case: tuple[int, list[Any]], cuts: list[int]):
    _, log = case
    a = CtrlerStateMachine()
    executed: list[tuple[int, int]] = []
    for i, e in enumerate(log):
        before = a.latest().num
        results = a.apply(i + 1, e)
        check_order(a.sessions, a.clock.now_ms)
        for op, r in zip(unstamp(e)[2], results, strict=True):
            if op[0] == MOVE and isinstance(r, int) and r > before:
                executed.append((op[2], op[3]))  # a fresh config number: this copy was executed
    assert len(executed) == len(set(executed)), executed
    assert a.latest().num == 1 + len(executed)
    b = CtrlerStateMachine()
    for i, e in enumerate(log):
        if i in cuts:
            fresh = CtrlerStateMachine()
            fresh.restore(b.snapshot(), i)
            b = fresh
        b.apply(i + 1, e)
    assert same_state(b.snapshot(), a.snapshot())
    assert list(b.sessions.entries.items()) == list(a.sessions.entries.items())


class _Group:
    """One shard group's replica and the stamped log it applied (for replay by another replica)."""

    def __init__(self, gid: int, skew: int) -> None:
        self.sm = ShardKVStateMachine(gid)
        self.skew = skew
        self.log: list[Any] = []

    def __call__(self, command: Any, t: int, ttl: int) -> Any:
        entry = stamp(command, max(0, t + self.skew), ttl)
        self.log.append(entry)
        return self.sm.apply(len(self.log), entry)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(20, 80), st.integers(0, 2**32), st.integers(5, 80),
       st.lists(st.integers(0, 200), max_size=2))
def test_shardkv_replicas_agree_and_nothing_is_executed_twice_across_moves(ttl: int, seed: int, steps: int,
                                                                           cuts: list[int]):
    """Two groups trade shards back and forth (config, pull/INSTALL, DELETE, GC_DONE) while clerks
    append unique tokens, resend old operations, go idle and restart; each group stamps with its own
    skewed clock (|skew| <= ttl/8). Clerks number operations per shard and never resend a shard's
    first operation more than ttl/4 after its first copy (so skew and clamping cannot expire it)."""
    rng = random.Random(seed)
    groups = {gid: _Group(gid, rng.randint(-ttl // 8, ttl // 8)) for gid in (100, 101)}
    keys = ["0", "1", "2", "5"]  # shards 8, 9, 0, 3
    t, num = 0, 1
    owners = [100] * 10
    for g in groups.values():
        g((CONFIG, cfg(1, owners)), t, ttl)
    client_ids = [1, 2]
    next_id = 3
    seqs: dict[tuple[int, int], int] = {}
    sent: dict[tuple[int, int], list[tuple[tuple, int]]] = {}  # (client, shard) -> ops, time of first copy

    def settle_step() -> None:
        for gid, g in groups.items():
            other = groups[201 - gid]
            for _peer, shards in g.sm.with_status("arriving").items():
                exported = other.sm.export(g.sm.config.num, tuple(shards))
                if exported is not None:
                    g((INSTALL, g.sm.config.num, exported), t, ttl)
            for _peer, shards in g.sm.with_status(GC_PENDING).items():
                other((DELETE, g.sm.config.num, tuple(shards)), t, ttl)
                g((GC_DONE, g.sm.config.num, tuple(shards)), t, ttl)

    for _ in range(steps):
        t += rng.randint(0, ttl // 3)
        action = rng.choice(["op", "op", "resend", "resend", "move", "settle", "settle", "idle", "restart"])
        if action == "idle":
            t += rng.randint(ttl, 2 * ttl)
        elif action == "restart":
            client_ids[rng.randrange(len(client_ids))] = next_id
            next_id += 1
        elif action == "settle":
            settle_step()
        elif action == "move" and all(g.sm.settled() for g in groups.values()):
            num += 1
            owners = [rng.choice([100, 101]) for _ in range(10)]
            for g in groups.values():
                assert g((CONFIG, cfg(num, owners)), t, ttl) is True
        elif action in ("op", "resend"):
            c = rng.choice(client_ids)
            key = rng.choice(keys)
            shard = ord(key) % 10
            k = (c, shard)
            if action == "resend" and sent.get(k):
                op_, first = rng.choice(sent[k])
                if op_[4] == 1 and t - first > ttl // 4:
                    continue
            else:
                seqs[k] = seqs.get(k, 0) + 1
                kind = rng.choice([GET, APPEND, APPEND])
                op_ = skv(kind, key, None if kind == GET else f"{c}.{shard}.{seqs[k]};", c, seqs[k])
                sent.setdefault(k, []).append((op_, t))
            for g in groups.values():
                if g.sm.serves(shard):
                    g((CLIENT, (op_,)), t, ttl)
    for _ in range(3):
        settle_step()
    seen = [tok for g in groups.values() for sh in g.sm.shards.values() if sh.status in (SERVING, GC_PENDING)
            for v in sh.data.values() for tok in v.split(";") if tok]
    assert len(seen) == len(set(seen)), f"executed twice: {sorted(seen)}"
    for g in groups.values():
        for sh in g.sm.shards.values():
            check_order(sh.dedup, g.sm.clock.now_ms)
        replica = ShardKVStateMachine(g.sm.gid)
        for i, e in enumerate(g.log):
            if i in cuts:
                fresh = ShardKVStateMachine(g.sm.gid)
                fresh.restore(replica.snapshot(), i)
                replica = fresh
            replica.apply(i + 1, e)
        assert same_state(replica.snapshot(), g.sm.snapshot())
        assert list(replica.shards) == list(g.sm.shards)
