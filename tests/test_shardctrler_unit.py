"""shardctrler units without a Ray runtime: configurations, key to shard, the state machine (every
operation, every refusal, exactly once, snapshots, determinism), rebalancing as hypothesis
properties (balance and minimal movement over any shard count), the clerks' checks, and three
controller replicas in-process."""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import pickle
import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raykv.testing.ctrler_harness import fewest_moves
from shardctrler.config import Config, key2shard, key2shard_reference
from shardctrler.errors import RefusedError, RefusedTypeError
from shardctrler.ops import (
    ERR_BAD_GID,
    ERR_BAD_REQUEST,
    ERR_BAD_SHARD,
    ERR_GROUP_EXISTS,
    ERR_NO_SERVERS,
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
from shardctrler.statemachine import CtrlerStateMachine, rebalance


class Client:
    """Builds wire operations for one client id, numbering them like a clerk."""

    def __init__(self, cid: int = 1) -> None:
        self.cid, self.seq = cid, 0

    def op(self, kind: int, args):
        self.seq += 1
        return (kind, args, self.cid, self.seq)

    def join(self, groups: dict):
        return self.op(JOIN, tuple(sorted((g, tuple(s)) for g, s in groups.items())))

    def leave(self, *gids: int):
        return self.op(LEAVE, tuple(gids))

    def move(self, shard: int, gid: int):
        return self.op(MOVE, (shard, gid))

    def query(self, num: int = -1):
        return self.op(QUERY, num)


def run(sm: CtrlerStateMachine, *ops):
    """Apply ``ops`` as one entry; returns the results."""
    return sm.apply(sm.last_applied + 1, tuple(ops))


def one(sm: CtrlerStateMachine, op):
    return run(sm, op)[0]


def servers(gid: int, k: int = 3) -> list[str]:
    return [f"s{gid}-{i}" for i in range(k)]


# ------------------------------------------------------------------------------------------------
# Config and key to shard
# ------------------------------------------------------------------------------------------------


def test_config_zero_and_helpers():
    c0 = Config.initial()
    assert c0.num == 0 and c0.shards == (0,) * 10 and dict(c0.groups) == {} and c0.nshards == 10
    c = Config(3, (2, 1, 2), {2: ["b"], 1: ("a", "z")})
    assert list(c.groups) == [1, 2], "groups are ordered by gid"
    assert c.groups[1] == ("a", "z") and c.servers(2) == ("b",) and c.servers(9) == ()
    assert c.shards_of(2) == (0, 2) and c.counts() == {1: 1, 2: 2}
    with pytest.raises(TypeError):
        c.groups[3] = ("x",)  # read-only
    assert pickle.loads(pickle.dumps(c)) == c
    assert hash(pickle.loads(pickle.dumps(c))) == hash(c)
    assert c == Config(3, (2, 1, 2), {1: ["a", "z"], 2: ["b"]})
    assert c != Config(3, (2, 1, 2), {1: ["z", "a"], 2: ["b"]}), "server order matters"
    assert "shards=[2, 1, 2]" in repr(c)


@pytest.mark.parametrize("args,match", [
    ((-1, (0,), {}), "config number"),
    ((0, (), {}), "at least one shard"),
    ((1, (1,), {0: ["a"]}), "gid must be an int > 0"),
    ((1, (1,), {1: []}), "non-empty list of server names"),
    ((1, (1,), {1: ["a", "a"]}), "lists a server twice"),
    ((1, (2,), {1: ["a"]}), "not a group"),
    ((1, (0, 1), {1: ["a"]}), "unassigned although"),
])
def test_config_refuses_malformed(args, match):
    with pytest.raises(ValueError, match=match):
        Config(*args)


def test_key2shard_reference_matches_the_catalogue():
    assert [key2shard_reference(str(i)) for i in range(10)] == [8, 9, 0, 1, 2, 3, 4, 5, 6, 7]
    assert {key2shard_reference(str(i)) for i in range(10, 20)} == {9}
    assert {key2shard_reference(str(i)) for i in range(20, 30)} == {0}
    assert key2shard_reference("") == 0
    assert key2shard_reference("é") == 0xC3 % 10  # the first UTF-8 byte, as Go's key[0]
    assert key2shard_reference("a", 64) == ord("a") % 64
    with pytest.raises(TypeError):
        key2shard_reference(b"0")
    with pytest.raises(ValueError):
        key2shard_reference("0", 0)


def test_key2shard_is_stable_across_processes_and_hash_seeds():
    keys = ["", "a", "user:1", "user:2", "ключ", "\ud800"]
    here = [key2shard(k, 64) for k in keys]
    code = ("import sys; from shardctrler.config import key2shard; "
            f"print([key2shard(k, 64) for k in {keys!r}])")
    for seed in ("0", "12345"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env=os.environ | {"PYTHONHASHSEED": seed}).stdout
        assert out.strip() == str(here)
    # pinned: a change of hash function would re-shard every stored key
    assert [key2shard(k, 10) for k in ("", "a", "user:1", "user:2")] == [6, 3, 8, 2]
    assert [key2shard(k, 64) for k in ("", "a", "user:1", "user:2")] == [52, 47, 18, 50]
    assert key2shard("user:1", 1) == 0
    with pytest.raises(TypeError):
        key2shard(1, 10)
    with pytest.raises(TypeError):
        key2shard("k", True)


def test_pure_modules_load_without_ray():
    """The sharded KV's pure state machine imports shardctrler.config: that must not pull in Ray."""
    code = ("import sys, shardctrler, shardctrler.config, shardctrler.statemachine, shardctrler.ops; "
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("nshards", [10, 64, 1000])
def test_key2shard_spreads_keys_with_a_common_prefix(nshards):
    """As uniform as random: Pearson's chi-square over the shard counts stays within 4 standard
    deviations of its mean (nshards - 1) for keys that differ only in a numeric suffix."""
    n = 50 * nshards
    counts = Counter(key2shard(f"user:{i}", nshards) for i in range(n))
    mean = n / nshards
    chi2 = sum((counts[s] - mean) ** 2 / mean for s in range(nshards))
    df = nshards - 1
    assert chi2 < df + 4 * (2 * df) ** 0.5, (chi2, df)
    assert len(counts) == nshards
    # the reference mapping puts them all on one shard
    assert len({key2shard_reference(f"user:{i}", nshards) for i in range(100)}) == 1


# ------------------------------------------------------------------------------------------------
# The state machine: every operation
# ------------------------------------------------------------------------------------------------


def test_join_leave_move_query():
    sm, c = CtrlerStateMachine(), Client()
    assert one(sm, c.query()) == Config.initial()
    assert one(sm, c.join({1: ["x", "y", "z"]})) == 1
    c1 = one(sm, c.query())
    assert c1.num == 1 and set(c1.shards) == {1} and c1.groups[1] == ("x", "y", "z")
    assert one(sm, c.join({2: ["a", "b", "c"], 3: ["d"]})) == 2
    c2 = one(sm, c.query())
    assert sorted(c2.counts().values()) == [3, 3, 4]
    assert one(sm, c.move(0, 3)) == 3
    c3 = one(sm, c.query())
    assert c3.shards[0] == 3 and c3.shards[1:] == c2.shards[1:]
    assert one(sm, c.leave(1, 3)) == 4
    c4 = one(sm, c.query())
    assert set(c4.shards) == {2} and list(c4.groups) == [2]
    assert one(sm, c.leave(2)) == 5
    assert one(sm, c.query()) == Config(5, (0,) * 10, {})
    # historical and future queries
    assert [one(sm, c.query(i)) for i in range(4)] == [Config.initial(), c1, c2, c3]
    assert one(sm, c.query(99)).num == 5, "a number above the latest answers the latest (reference)"
    # a move to the group already holding the shard still makes a configuration (reference)
    one(sm, c.join({7: ["q"]}))
    assert one(sm, c.move(4, 7)) == 7 and one(sm, c.query()).num == 7


def test_noop_entry_is_ignored():
    sm = CtrlerStateMachine()
    assert sm.apply(1, None) is None and sm.last_applied == 1 and len(sm.configs) == 1


BAD_REQUESTS = [
    # (setup joins, operation kind, args, refusal code)
    ({}, JOIN, ((1, ()),), ERR_NO_SERVERS),
    ({}, JOIN, ((0, ("a",)),), ERR_BAD_GID),
    ({}, JOIN, ((-4, ("a",)),), ERR_BAD_GID),
    ({}, JOIN, ((True, ("a",)),), ERR_BAD_REQUEST),
    ({}, JOIN, (("1", ("a",)),), ERR_BAD_REQUEST),
    ({}, JOIN, ((1, "abc"),), ERR_BAD_REQUEST),
    ({}, JOIN, ((1, ("a", "a")),), ERR_BAD_REQUEST),
    ({}, JOIN, ((1, ("a", "")),), ERR_BAD_REQUEST),
    ({}, JOIN, ((1, ("a",)), (2, ("a",))), ERR_BAD_REQUEST),
    ({}, JOIN, ((1, ("a",)), (1, ("b",))), ERR_BAD_REQUEST),
    ({}, JOIN, (), ERR_BAD_REQUEST),
    ({}, JOIN, "1:a", ERR_BAD_REQUEST),
    ({1: ["a"]}, JOIN, ((1, ("b",)),), ERR_GROUP_EXISTS),
    ({1: ["a"]}, JOIN, ((2, ("b",)), (1, ("c",))), ERR_GROUP_EXISTS),
    ({1: ["a"]}, JOIN, ((2, ("a",)),), ERR_SERVER_IN_USE),
    ({1: ["a"]}, LEAVE, (2,), ERR_UNKNOWN_GROUP),
    ({1: ["a"]}, LEAVE, (1, 2), ERR_UNKNOWN_GROUP),
    ({1: ["a"]}, LEAVE, (0,), ERR_BAD_GID),
    ({1: ["a"]}, LEAVE, (1, 1), ERR_BAD_REQUEST),
    ({1: ["a"]}, LEAVE, (), ERR_BAD_REQUEST),
    ({1: ["a"]}, LEAVE, 1, ERR_BAD_REQUEST),
    ({1: ["a"]}, LEAVE, "1", ERR_BAD_REQUEST),
    ({1: ["a"]}, MOVE, (10, 1), ERR_BAD_SHARD),
    ({1: ["a"]}, MOVE, (-1, 1), ERR_BAD_SHARD),
    ({1: ["a"]}, MOVE, (0, 2), ERR_UNKNOWN_GROUP),
    ({}, MOVE, (0, 1), ERR_UNKNOWN_GROUP),
    ({1: ["a"]}, MOVE, (0, 0), ERR_BAD_GID),
    ({1: ["a"]}, MOVE, ("0", 1), ERR_BAD_REQUEST),
    ({1: ["a"]}, MOVE, (0,), ERR_BAD_REQUEST),
    ({1: ["a"]}, MOVE, (1.0, 1), ERR_BAD_REQUEST),
    ({}, QUERY, -2, ERR_BAD_REQUEST),
    ({}, QUERY, "latest", ERR_BAD_REQUEST),
    ({}, QUERY, None, ERR_BAD_REQUEST),
    ({}, 99, (), ERR_BAD_REQUEST),
]


@pytest.mark.parametrize("setup,kind,args,code", BAD_REQUESTS)
def test_bad_request_is_refused_and_changes_nothing(setup, kind, args, code):
    sm, c = CtrlerStateMachine(), Client()
    if setup:
        assert one(sm, c.join(setup)) == 1
    before = list(sm.configs)
    result = one(sm, c.op(kind, args))
    assert isinstance(result, Refusal) and result.code == code, result
    assert len(result.message) > 20, "the message says what was wrong"
    assert sm.configs == before
    # and the clerk-side check agrees where it can decide alone (state-dependent codes it cannot)
    if code in (ERR_BAD_REQUEST, ERR_BAD_GID, ERR_NO_SERVERS) and kind != 99:
        with pytest.raises(RefusedError) as e:
            normalise(kind, args)
        assert e.value.code == code and not e.value.sent


def test_refusal_messages_name_the_problem():
    sm, c = CtrlerStateMachine(), Client()
    one(sm, c.join({1: ["x"]}))
    assert "already in config 1" in one(sm, c.join({1: ["y"]})).message
    assert "not in config 1 (groups: [1])" in one(sm, c.leave(5)).message
    assert "numbered 0 .. 9" in one(sm, c.move(10, 1)).message
    assert "already serves group 1" in one(sm, c.join({2: ["x"]})).message


def test_garbage_entries_never_raise():
    sm = CtrlerStateMachine()
    for entry in ((None,), ("x",), ((1, 2, 3),), ((JOIN, {}, "c", 1),), ((JOIN, {}, 1, 0),),
                  ((JOIN, object(), 1, 1),)):
        results = sm.apply(sm.last_applied + 1, entry)
        assert all(isinstance(r, Refusal) for r in results), results
    assert isinstance(sm.apply(sm.last_applied + 1, "not a batch")[0], Refusal)
    assert len(sm.configs) == 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.one_of(
    st.none(), st.integers(-3, 12), st.text(max_size=3), st.lists(st.integers(-2, 5), max_size=3),
    st.tuples(st.integers(-2, 12), st.integers(-2, 5)),
    st.lists(st.tuples(st.integers(-1, 5), st.lists(st.sampled_from(["a", "b", "", 3]), max_size=3)),
             max_size=3),
    st.dictionaries(st.integers(-1, 5), st.lists(st.sampled_from(["a", "b", "c"]), max_size=3), max_size=3),
)), max_size=12))
def test_arbitrary_requests_never_break_the_invariants(requests):
    sm, c = CtrlerStateMachine(), Client()
    for kind, args in requests:
        before = list(sm.configs)
        result = one(sm, c.op(kind, args))
        if isinstance(result, Refusal):
            assert sm.configs == before
        elif kind == QUERY:
            assert isinstance(result, Config)
        else:
            assert result == before[-1].num + 1 and len(sm.configs) == len(before) + 1


@pytest.mark.parametrize("ops,reason", [
    ("x", "must be a tuple of operations"),
    ((), "at least one operation"),
    (((JOIN, (), 1),), "operation 0 must be a tuple (kind, args, client_id, seq)"),
    (((QUERY, -1, 1, 1), (9, -1, 1, 2)), "operation 1 has unknown kind 9"),
    (((QUERY, -1, -1, 1),), "client id must be an int >= 0"),
    (((QUERY, -1, 1, 0),), "sequence number must be an int >= 1"),
    (((QUERY, -1, 1, True),), "sequence number must be an int >= 1"),
])
def test_batch_problem_names_what_is_wrong(ops, reason):
    from shardctrler.ops import batch_problem

    assert reason in batch_problem(ops)
    assert batch_problem(((JOIN, "not even checked here", 1, 1), (QUERY, -1, 1, 2))) is None


def test_clerk_raises_at_once_on_an_invalid_answer():
    from shardctrler.async_clerk import AsyncClerk

    class Invalid(_FakeGroup):
        def submit(self, server, ops):
            import concurrent.futures

            self.calls.append(ops)
            fut = concurrent.futures.Future()
            fut.set_result(("invalid", "a batch must hold at least one operation"))
            return _FakeRef(fut)

    group = Invalid()

    async def main():
        ck = AsyncClerk(group, attempt_timeout=1.0)
        ck.leader = 2
        with pytest.raises(RefusedError, match="s2 refused the call: a batch must hold") as e:
            await asyncio.wait_for(ck.query(), 5)
        assert e.value.sent and e.value.code == ERR_BAD_REQUEST
        ck.leader = 0
        with pytest.raises(RefusedError, match="s0 refused the call"):
            await asyncio.wait_for(ck.query(), 5)

    asyncio.run(main())
    assert len(group.calls) == 2, "no retries after an invalid answer"


# ------------------------------------------------------------------------------------------------
# Exactly once
# ------------------------------------------------------------------------------------------------


def test_resent_join_gets_its_first_answer_not_group_exists():
    sm, c = CtrlerStateMachine(), Client()
    op = c.join({1: ["x"]})
    assert one(sm, op) == 1
    assert one(sm, op) == 1, "a resend is answered as the first copy was"
    assert len(sm.configs) == 2 and sm.duplicates == 1


def test_resent_refusal_gets_the_same_refusal():
    sm, c = CtrlerStateMachine(), Client()
    bad = c.leave(9)
    first = one(sm, bad)
    other = Client(2)
    one(sm, other.join({9: ["z"]}))  # meanwhile group 9 exists
    assert one(sm, bad) == first, "the resend is not re-evaluated against the new configuration"
    assert len(sm.configs) == 2


def test_resent_batch_and_its_subsets_reuse_results():
    sm, c = CtrlerStateMachine(), Client()
    batch = (c.join({1: ["a"]}), c.join({1: ["b"]}), c.join({2: ["c"]}), c.query())
    first = run(sm, *batch)
    assert first[:3] == [1, first[1], 2] and first[1].code == ERR_GROUP_EXISTS
    assert first[3].num == 2
    again = run(sm, *batch)
    assert again == first
    assert run(sm, batch[1], batch[2]) == first[1:3]  # a later copy without a timed-out caller
    assert len(sm.configs) == 3


def test_late_copy_of_an_older_batch_is_stale():
    sm, c = CtrlerStateMachine(), Client()
    old = c.join({1: ["a"]})
    one(sm, old)
    one(sm, c.join({2: ["b"]}))
    result = one(sm, old)
    assert isinstance(result, Refusal) and result.code == ERR_STALE
    assert len(sm.configs) == 3


def test_duplicate_query_reads_again_and_clients_are_independent():
    sm, a, b = CtrlerStateMachine(), Client(1), Client(2)
    q = a.query()
    assert one(sm, q).num == 0
    one(sm, b.join({1: ["x"]}))
    assert one(sm, q).num == 1, "a duplicate query is a fresh read"
    assert one(sm, a.join({2: ["y"]})) == 2
    assert sm.sessions[1][0] == 2 and sm.sessions[2][0] == 1


# ------------------------------------------------------------------------------------------------
# Snapshots and determinism
# ------------------------------------------------------------------------------------------------


def test_snapshot_round_trip_keeps_configs_and_dedup_table():
    sm, c = CtrlerStateMachine(nshards=12, maxraftstate=100), Client()
    join = c.join({1: ["a"], 2: ["b"]})
    run(sm, join, c.move(3, 1))
    data = sm.snapshot()
    copy = CtrlerStateMachine(nshards=12)
    copy.restore(data, sm.last_applied)
    assert copy.configs == sm.configs and copy.sessions == sm.sessions
    assert copy.last_applied == sm.last_applied
    assert one(copy, join) == 1, "the restored dedup table still recognises the resend"
    assert copy.snapshot() == sm.snapshot()
    with pytest.raises(ValueError, match="nshards=10"):
        CtrlerStateMachine().restore(data, 5)


def test_should_snapshot_threshold_and_repeat_guard():
    sm = CtrlerStateMachine(maxraftstate=100)
    assert not sm.should_snapshot(1, 100)
    assert sm.should_snapshot(2, 101)
    assert not sm.should_snapshot(3, 101)
    assert sm.should_snapshot(4, 150)
    assert not CtrlerStateMachine().should_snapshot(1, 10**9)


def test_replicas_agree_deterministically():
    """The same entries give byte-identical snapshots, whatever order a client listed its groups in."""
    def history(order):
        sm, c = CtrlerStateMachine(nshards=16), Client()
        groups = {g: servers(g) for g in order}
        run(sm, c.op(JOIN, tuple((g, tuple(s)) for g, s in groups.items())))
        run(sm, c.leave(3, 5), c.move(5, 7), c.join({99: ["z"]}))
        return sm.snapshot()

    base = history([5, 3, 9, 1, 7])
    assert history([1, 3, 5, 7, 9]) == base
    assert history([9, 7, 5, 3, 1]) == base
    assert CtrlerStateMachine().snapshot() == CtrlerStateMachine().snapshot()


# ------------------------------------------------------------------------------------------------
# Rebalancing: balance and minimal movement as properties
# ------------------------------------------------------------------------------------------------


def is_balanced(cfg: Config) -> bool:
    """Every shard on a group of ``cfg`` (on 0 only when there are none), max - min <= 1."""
    if not cfg.groups:
        return set(cfg.shards) == {0}
    if any(g not in cfg.groups for g in cfg.shards):
        return False
    counts = cfg.counts().values()
    return max(counts) - min(counts) <= 1


def brute_force_fewest_moves(shards: tuple[int, ...], gids: list[int]) -> int:
    best = len(shards)
    for assignment in itertools.product(gids, repeat=len(shards)):
        counts = Counter(assignment)
        if max(counts[g] for g in gids) - min(counts[g] for g in gids) <= 1:
            best = min(best, sum(a != b for a, b in zip(assignment, shards, strict=True)))
    return best


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 6), st.lists(st.integers(0, 5), min_size=1, max_size=6), st.data())
def test_fewest_moves_formula_matches_brute_force(n, gid_pool, data):
    gids = sorted(set(g for g in gid_pool if g > 0)) or [1]
    shards = tuple(data.draw(st.lists(st.integers(0, 6), min_size=n, max_size=n)))
    assert fewest_moves(shards, set(gids)) == brute_force_fewest_moves(shards, gids)
    out = rebalance(shards, gids)
    assert sum(a != b for a, b in zip(out, shards, strict=True)) == brute_force_fewest_moves(shards, gids)


def draw_operation(data, prev: Config, nshards: int) -> tuple[str, tuple]:
    """Mostly requests that can succeed (new gids to join, present gids to leave, a present gid and
    an in-range shard to move), sometimes ones that must be refused."""
    present = sorted(prev.groups)
    valid = data.draw(st.integers(0, 9)) > 0
    name = data.draw(st.sampled_from(["join", "join", "leave", "move"] if present else ["join", "move"]))
    if name == "join":
        pool = [g for g in range(1, 41) if (g not in prev.groups) == valid] or list(range(1, 41))
        return name, tuple(data.draw(st.lists(st.sampled_from(pool), min_size=1, max_size=4, unique=True)))
    if name == "leave":
        gids = data.draw(st.lists(st.sampled_from(present), min_size=1, max_size=4, unique=True))
        if not valid:
            gids.append(data.draw(st.integers(41, 60)))  # never joined
        return name, tuple(gids)
    shard = data.draw(st.integers(0, nshards - 1) if valid else st.integers(0, nshards + 5))
    gid = data.draw(st.sampled_from(present) if valid and present else st.integers(1, 40))
    return name, (shard, gid)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 64), st.integers(0, 30), st.data())
def test_rebalancing_keeps_balance_and_moves_the_fewest_shards(nshards, steps, data):
    sm, c = CtrlerStateMachine(nshards=nshards), Client()
    joined_or_left_since_move = True  # config 0 counts as balanced
    for _ in range(steps):
        prev = sm.configs[-1]
        name, args = draw_operation(data, prev, nshards)
        if name == "join":
            op = c.join({g: [f"{g}{x}" for x in "abc"] for g in args})
        elif name == "leave":
            op = c.leave(*args)
        else:
            op = c.move(*args)
        result = one(sm, op)
        cur = sm.configs[-1]
        if isinstance(result, Refusal):
            assert cur is prev, f"{name}{args} was refused ({result.code}) but changed the config"
            # refused exactly when it must be
            if name == "join":
                assert any(g in prev.groups for g in args)
            elif name == "leave":
                assert any(g not in prev.groups for g in args)
            else:
                assert args[0] >= nshards or args[1] not in prev.groups
            continue
        assert result == prev.num + 1 == cur.num
        moved = [s for s in range(nshards) if prev.shards[s] != cur.shards[s]]
        if name == "move":
            shard, gid = args
            assert cur.shards[shard] == gid and moved in ([], [shard])
            assert dict(cur.groups) == dict(prev.groups)
            joined_or_left_since_move = is_balanced(cur)
            continue
        assert is_balanced(cur), cur
        assert len(moved) == fewest_moves(prev.shards, set(cur.groups)), (prev, cur)
        if joined_or_left_since_move:
            if name == "join":
                assert all(cur.shards[s] in args for s in moved), "a join only moves shards to new groups"
            else:
                assert all(prev.shards[s] in args for s in moved), "a leave only moves departed shards"
                assert len(moved) == sum(1 for g in prev.shards if g in args)
        if len(cur.groups) > nshards:
            assert sorted(cur.counts().values()) == [0] * (len(cur.groups) - nshards) + [1] * nshards
        joined_or_left_since_move = True


def test_rebalance_is_independent_of_argument_order_and_deterministic():
    shards = (3, 3, 3, 3, 1, 0, 7, 7, 9, 9, 9)
    out = rebalance(shards, [1, 3, 7, 12])
    assert rebalance(shards, [12, 7, 3, 1]) == out == rebalance(shards, {1, 3, 7, 12})
    assert rebalance(shards, []) == (0,) * len(shards)
    # the largest holders keep the larger quotas; ties go to the smaller gid
    assert Counter(out) == {3: 3, 1: 3, 7: 3, 12: 2}
    assert Counter(rebalance((0,) * 4, [5, 2, 9, 1, 7])) == {1: 1, 2: 1, 5: 1, 7: 1}


def test_minimal_again_scenario_moves_at_most_nshards_over_three_plus_one():
    sm, c = CtrlerStateMachine(), Client()
    one(sm, c.join({1: ["x", "y", "z"]}))
    one(sm, c.join({2: ["a", "b", "c"]}))
    c1 = sm.latest()
    one(sm, c.join({3: ["d", "e", "f"]}))
    c2 = sm.latest()
    one(sm, c.leave(1))
    c3 = sm.latest()
    joined = sum(a != b for a, b in zip(c1.shards, c2.shards, strict=True))
    left = sum(a != b for a, b in zip(c2.shards, c3.shards, strict=True))
    assert joined == 3 and left == c2.counts()[1] <= 10 // 3 + 1


# ------------------------------------------------------------------------------------------------
# Clerks without Ray: checks before sending, routing, batching
# ------------------------------------------------------------------------------------------------


class _FakeRef:
    def __init__(self, fut):
        self._fut = fut

    def future(self):
        return self._fut


class _FakeGroup:
    """Three 'servers' sharing one state machine; only ``leader`` accepts; drops the first replies."""

    names = ("s0", "s1", "s2")

    def __init__(self, leader: int = 2, drop_first: int = 0) -> None:
        self.sm = CtrlerStateMachine()
        self.leader, self.drop_first = leader, drop_first
        self.calls: list[tuple] = []

    def submit(self, server, ops):
        import concurrent.futures

        fut = concurrent.futures.Future()
        self.calls.append(ops)
        if server != self.leader:
            fut.set_result(("wrong_leader", self.leader))
        else:
            reply = ("ok", self.sm.apply(self.sm.last_applied + 1, ops))
            if self.drop_first > 0:  # applied, but the reply is lost
                self.drop_first -= 1
                reply = None
            fut.set_result(reply)
        return _FakeRef(fut)

    def unpack(self, value):
        return value


def test_async_clerk_batches_checks_and_reports_refusals():
    from shardctrler.async_clerk import AsyncClerk

    group = _FakeGroup(leader=1, drop_first=2)

    async def main():
        ck = AsyncClerk(group, attempt_timeout=1.0, retry_pause=0.001)
        with pytest.raises(RefusedTypeError):
            await ck.join({1: "abc"})
        with pytest.raises(RefusedError) as e:
            await ck.leave([])
        assert not e.value.sent and ck.seq == 0, "refused before numbering"
        nums = await asyncio.gather(*(ck.join({g: [f"{g}a"]}) for g in range(1, 41)))
        assert sorted(nums) == list(range(1, 41))
        with pytest.raises(RefusedError) as e:
            await ck.join({3: ["new"]})
        assert e.value.sent and e.value.code == ERR_GROUP_EXISTS and "join(" in str(e.value)
        cfg = await ck.query()
        await ck.close()
        return ck, cfg

    ck, cfg = asyncio.run(main())
    assert len(cfg.groups) == 40 and cfg.num == 40 and is_balanced(cfg)
    assert ck.calls < 20, f"{ck.calls} calls for 42 operations: not batched"
    assert group.sm.duplicates > 0, "lost replies were resent and recognised"


def test_clerk_refuses_bad_input_before_sending():
    from shardctrler.clerk import Clerk

    class FakeClerk(Clerk):
        def _call(self, server, ops, wait):  # the fake's answer, without ray.get
            return self.endpoints.submit(server, ops).future().result()

    group = _FakeGroup()
    ck = FakeClerk(group)
    for call in (lambda: ck.join([1, 2]), lambda: ck.join({"1": ["a"]}), lambda: ck.leave(3),
                 lambda: ck.move("0", 1), lambda: ck.query("latest"), lambda: ck.join({1: "a"})):
        with pytest.raises(TypeError):
            call()
    for call, code in ((lambda: ck.join({0: ["a"]}), ERR_BAD_GID), (lambda: ck.join({1: []}), ERR_NO_SERVERS),
                       (lambda: ck.move(-1, 1), ERR_BAD_SHARD), (lambda: ck.query(-5), ERR_BAD_REQUEST)):
        with pytest.raises(RefusedError) as e:
            call()
        assert e.value.code == code and not e.value.sent
    with pytest.raises(ValueError, match="timeout must be > 0"):
        ck.query(timeout=0)
    assert group.calls == [] and ck.seq == 0
    assert ck.join({1: ["a"]}) == 1 and ck.leave({1}) == 2 and ck.query(1).num == 1


# ------------------------------------------------------------------------------------------------
# Three controller replicas in-process (the actor class without Ray), driven by the asyncio clerk
# ------------------------------------------------------------------------------------------------


class _Method:
    def __init__(self, fn):
        self.fn = fn

    def remote(self, *args):
        return self.fn(*args)


class _Handle:
    def __init__(self, replica):
        self.rpc = _Method(replica.rpc)


class _TaskRef:
    def __init__(self, coro):
        self.task = asyncio.ensure_future(coro)

    def future(self):
        import concurrent.futures

        fut = concurrent.futures.Future()

        def done(task):
            if not fut.done():
                fut.set_result(task.result())

        self.task.add_done_callback(done)
        return fut


class _InProcessEndpoints:
    def __init__(self, replicas):
        self.replicas = replicas
        self.names = tuple(f"s{i}" for i in range(len(replicas)))

    def submit(self, server, ops):
        return _TaskRef(self.replicas[server].rpc(None, "ctrl", (ops,)))

    def unpack(self, value):
        return value


def test_ctrler_replicas_in_process_snapshot_restart_and_dedup():
    from actors.replica import ReplicaSpec
    from shardctrler.async_clerk import AsyncClerk
    from shardctrler.server import CtrlerReplica

    n = 3

    async def main():
        replicas = [CtrlerReplica(ReplicaSpec(
            name=f"s{i}", peer_id=i, peers=tuple(range(n)),
            state_machine=functools.partial(CtrlerStateMachine, 20, 2000), seed=i)) for i in range(n)]
        handles = {i: _Handle(r) for i, r in enumerate(replicas)}

        def peers(i):
            return ("direct", {j: h for j, h in handles.items() if j != i})

        for i, r in enumerate(replicas):
            await r.start(1, peers(i))
        ck = AsyncClerk(_InProcessEndpoints(replicas), attempt_timeout=1.0)
        for g in range(1, 31):  # single-op entries: enough to pass maxraftstate several times
            assert await ck.join({g: servers(g)}, timeout=10) == g
        await asyncio.gather(*(ck.leave([g], timeout=10) for g in range(1, 11)))
        statuses = [await r.status() for r in replicas]
        assert all(s["snapshot_index"] > 0 for s in statuses), statuses
        leader = next(r for r in replicas if r.core.is_leader)
        reply = await leader.rpc(None, "ctrl", ("junk",))
        assert reply == ("invalid", "a batch must be a tuple of operations, got str: 'junk'")
        reply = await leader.rpc(None, "ctrl", (((JOIN, ((5, ("x",)),), ck.client_id, 0),),))
        assert reply[0] == "invalid" and "sequence number must be an int >= 1" in reply[1]
        # resend the last join under the same client id and number: it gets its first answer; a
        # copy of the clerk's first operation is stale
        assert await ck.join({99: servers(99)}, timeout=10) == 41
        last = (JOIN, ((99, tuple(servers(99))),), ck.client_id, ck.seq)
        assert await leader.rpc(None, "ctrl", ((last,),)) == ("ok", [41])
        first = (JOIN, ((1, tuple(servers(1))),), ck.client_id, 1)
        reply = await leader.rpc(None, "ctrl", ((first,),))
        assert reply[0] == "ok" and reply[1][0].code == ERR_STALE
        for r in replicas:
            await r.crash()
        for i, r in enumerate(replicas):
            await r.start(2, peers(i))
        cfg = await ck.query(timeout=10)
        assert cfg.num == 41 and sorted(cfg.groups) == [*range(11, 31), 99] and is_balanced(cfg)
        assert [c.num for c in [await ck.query(i, timeout=10) for i in (0, 17, 40)]] == [0, 17, 40]
        leader = next(r for r in replicas if r.core.is_leader)
        # the dedup table survived the restart: it holds the last join's number (the Queries after it
        # were answered by ReadIndex, which records nothing)
        assert leader.sm.sessions[ck.client_id][0] == last[3]
        await ck.close()
        for r in replicas:
            await r.crash()

    asyncio.run(main())
