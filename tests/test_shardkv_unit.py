"""shardkv units without Ray: the shard group's state machine (shard statuses, configurations one at a
time, install / delete / gc_done, per-shard dedup moved with the shard, snapshots, totality), and a
property test that drives several groups through random configuration sequences with migrations."""

from __future__ import annotations

import pickle
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardctrler.config import Config, key2shard, key2shard_reference
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
)
from shardkv.statemachine import (
    ARRIVING,
    GC_PENDING,
    HELD,
    LEAVING,
    SERVING,
    ShardKVStateMachine,
    mapping_function,
)

SERVERS = {100: ("s100a", "s100b"), 101: ("s101a",), 102: ("s102a",)}


def cfg(num: int, shards: list[int], nshards: int = 10) -> Config:
    assert len(shards) == nshards
    return Config(num, tuple(shards), {g: SERVERS[g] for g in sorted(set(shards)) if g})


def op(kind: int, key: str, value: str | None, client: int, seq: int, mapping: str = "reference") -> tuple:
    return (kind, key, value, client, seq, mapping_function(mapping)(key, 10))


class Applier:
    """Feeds commands to a state machine with increasing indexes."""

    def __init__(self, sm: ShardKVStateMachine) -> None:
        self.sm = sm
        self.index = 0

    def __call__(self, command):
        self.index += 1
        return self.sm.apply(self.index, command)

    def ops(self, *ops):
        return self((CLIENT, tuple(ops)))


def test_fresh_group_serves_nothing():
    a = Applier(ShardKVStateMachine(100))
    assert a.ops(op(GET, "a", None, 1, 1)) == [WRONG_GROUP]
    assert a.sm.settled() and a.sm.config.num == 0


def test_first_config_serves_empty_shards_at_once():
    a = Applier(ShardKVStateMachine(100))
    assert a((CONFIG, cfg(1, [100] * 10))) is True
    assert a.ops(op(PUT, "k", "v", 1, 1), op(APPEND, "k", "w", 1, 2), op(GET, "k", None, 1, 3)) == [
        None, None, "vw"]
    assert a.sm.status()["shards"] == {SERVING: list(range(10))}


def test_configs_apply_only_in_order():
    a = Applier(ShardKVStateMachine(100))
    assert a((CONFIG, cfg(2, [100] * 10))) is False  # a gap
    assert a((CONFIG, cfg(1, [100] * 10))) is True
    assert a((CONFIG, cfg(1, [100] * 10))) is False  # a duplicate
    assert a.sm.config.num == 1


def move_half(a: Applier) -> Config:
    """Config 1: everything on 100; config 2: shards 5..9 to 101."""
    a((CONFIG, cfg(1, [100] * 10)))
    c2 = cfg(2, [100] * 5 + [101] * 5)
    assert a((CONFIG, c2)) is True
    return c2


def test_losing_shards_makes_them_leaving_and_frozen():
    a = Applier(ShardKVStateMachine(100))
    a((CONFIG, cfg(1, [100] * 10)))
    a.ops(op(PUT, "9", "nine", 1, 1))  # "9" -> shard 7
    move_half(Applier(ShardKVStateMachine(100)))
    assert a((CONFIG, cfg(2, [100] * 5 + [101] * 5))) is True
    st_ = a.sm.status()
    assert st_["shards"] == {SERVING: [0, 1, 2, 3, 4], LEAVING: [5, 6, 7, 8, 9]}
    assert not a.sm.settled()
    assert a.ops(op(PUT, "9", "changed", 1, 2)) == [WRONG_GROUP]
    ((s, data, table),) = a.sm.export(2, (7,))
    assert (s, data, table.seqs()) == (7, {"9": "nine"}, {1: 1})
    assert a.sm.export(1, (7,)) is None  # another configuration
    assert a.sm.export(2, (0,)) is None  # not leaving
    assert a((CONFIG, cfg(3, [100] * 10))) is False  # not settled: the next config must wait
    assert a((DELETE, 2, (5, 6, 7, 8, 9))) == (5, 6, 7, 8, 9)
    assert a.sm.status()["shards"] == {SERVING: [0, 1, 2, 3, 4]}
    assert a.sm.settled()
    assert a((DELETE, 2, (5,))) == ()  # a duplicate deletes nothing


def test_gaining_shards_arrive_install_serve_then_gc():
    b = Applier(ShardKVStateMachine(101))
    move_half(b)
    assert b.sm.status()["shards"] == {ARRIVING: [5, 6, 7, 8, 9]}
    assert b.sm.with_status(ARRIVING) == {100: [5, 6, 7, 8, 9]}
    assert b.ops(op(GET, "9", None, 2, 1)) == [WRONG_GROUP]
    # install one shard only: it is served at once while the others are still arriving (challenge 2)
    assert b((INSTALL, 2, ((7, {"9": "nine"}, {1: 1}),))) == (7,)
    assert b.ops(op(GET, "9", None, 2, 2)) == ["nine"]
    assert b.ops(op(PUT, "9", "late", 1, 1)) == [None]  # seq 1 of client 1 was applied at 100
    assert b.ops(op(GET, "9", None, 2, 3)) == ["nine"]
    assert b.ops(op(GET, "7", None, 2, 4)) == [WRONG_GROUP]  # "7" -> shard 5: still arriving
    assert b((INSTALL, 2, ((7, {"9": "bogus"}, {}),))) == ()  # a duplicate install changes nothing
    assert b.ops(op(GET, "9", None, 2, 5)) == ["nine"]
    assert b((INSTALL, 1, ((5, {}, {}),))) == ()  # for another configuration
    assert b.sm.with_status(GC_PENDING) == {100: [7]}
    assert b((GC_DONE, 2, (7,))) == (7,)
    assert b.sm.status()["shards"] == {SERVING: [7], ARRIVING: [5, 6, 8, 9]}
    assert not b.sm.settled()


def test_dedup_moves_with_the_shard():
    a = Applier(ShardKVStateMachine(100))
    b = Applier(ShardKVStateMachine(101))
    for x in (a, b):
        x((CONFIG, cfg(1, [100] * 10)))
    a.ops(op(APPEND, "9", "x", 7, 1), op(APPEND, "9", "y", 7, 2))
    for x in (a, b):
        x((CONFIG, cfg(2, [100] * 5 + [101] * 5)))
    b((INSTALL, 2, a.sm.export(2, (7,))))
    # the clerk never heard back about seq 2 and resends it to the new owner
    assert b.ops(op(APPEND, "9", "y", 7, 2)) == [None]
    assert b.ops(op(GET, "9", None, 7, 3)) == ["xy"]
    assert b.sm.duplicates == 1


def test_dedup_is_per_shard():
    a = Applier(ShardKVStateMachine(100))
    a((CONFIG, cfg(1, [100] * 10)))
    a.ops(op(PUT, "a", "1", 5, 10))
    assert a.ops(op(PUT, "b", "2", 5, 3)) == [None]  # another shard: its own table
    assert a.ops(op(GET, "b", None, 5, 11)) == ["2"]
    assert a.ops(op(PUT, "a", "old", 5, 9)) == [None]  # below shard 7's number: skipped
    assert a.ops(op(GET, "a", None, 5, 12)) == ["1"]


def test_all_groups_leave_then_a_group_takes_the_held_shards():
    """Shards on gid 0 stay with their last holder (held) and are pulled from it later."""
    a = Applier(ShardKVStateMachine(100))
    b = Applier(ShardKVStateMachine(101))
    for x in (a, b):
        x((CONFIG, cfg(1, [100] * 10)))
    a.ops(op(PUT, "0", "zero", 1, 1))  # "0" -> shard 8
    for x in (a, b):
        assert x((CONFIG, Config(2, (0,) * 10, {}))) is True
    assert a.sm.status()["shards"] == {HELD: list(range(10))}
    assert a.sm.settled()
    assert a.ops(op(GET, "0", None, 1, 2)) == [WRONG_GROUP]
    for x in (a, b):
        assert x((CONFIG, cfg(3, [101] * 10))) is True
    assert a.sm.status()["shards"] == {LEAVING: list(range(10))}
    assert b.sm.with_status(ARRIVING) == {100: list(range(10))}
    assert b.sm.addresses[100] == SERVERS[100]  # remembered although 100 is in no config now
    b((INSTALL, 3, a.sm.export(3, tuple(range(10)))))
    assert b.ops(op(GET, "0", None, 1, 2)) == ["zero"]


def test_held_shards_come_back_to_their_holder_without_a_move():
    a = Applier(ShardKVStateMachine(100))
    a((CONFIG, cfg(1, [100] * 10)))
    a.ops(op(PUT, "0", "zero", 1, 1))
    a((CONFIG, Config(2, (0,) * 10, {})))
    assert a((CONFIG, cfg(3, [100] * 10))) is True
    assert a.sm.status()["shards"] == {SERVING: list(range(10))}
    assert a.ops(op(GET, "0", None, 1, 2)) == ["zero"]


def test_bad_commands_and_ops_are_results_not_exceptions():
    a = Applier(ShardKVStateMachine(100))
    a((CONFIG, cfg(1, [100] * 10)))
    before = a.sm.snapshot()
    for bad in [(), "x", (99, 1), (CLIENT,), (CLIENT, "notatuple"), (CONFIG, "c"),
                (CONFIG, Config.initial(20)), (INSTALL, 1, "x"), (INSTALL, 1, ((99, {}, {}),)),
                (DELETE, 1, (True,)), (GC_DONE, 1, [1]), (INSTALL, 1, ((1, [], {}),))]:
        r = a(bad)
        assert isinstance(r, OpError) and r.code == ERR_BAD_COMMAND, (bad, r)
    assert a.sm.snapshot() == before
    results = a.ops((GET, "k", "v", 1, 1, 3), (PUT, 5, "v", 1, 1, 0), (9, "k", None, 1, 1, 0),
                    (PUT, "k", "v", 1, 0, 3), (PUT, "k", "v", 1, 1, 10), ("x",),
                    (PUT, "k", "v", 1, 1, 4))
    assert [r.code for r in results] == [ERR_BAD_REQUEST] * 6 + [ERR_BAD_SHARD]
    assert "reference" in results[-1].message
    assert a.sm.snapshot() == before


def test_hash_mapping_service():
    sm = ShardKVStateMachine(100, nshards=64, mapping="hash")
    a = Applier(sm)
    a((CONFIG, Config(1, (100,) * 64, {100: ("x",)})))
    keys = [f"user:{i}" for i in range(200)]
    res = a.ops(*[(PUT, k, k, 1, i + 1, key2shard(k, 64)) for i, k in enumerate(keys)])
    assert res == [None] * 200
    assert len({key2shard(k, 64) for k in keys}) > 40  # a common prefix still spreads
    key = next(k for k in keys if key2shard_reference(k, 64) != key2shard(k, 64))
    (refused,) = a.ops((PUT, key, "v", 1, 999, key2shard_reference(key, 64)))
    assert refused.code == ERR_BAD_SHARD and "'hash' mapping" in refused.message
    with pytest.raises(ValueError, match="unknown key mapping"):
        ShardKVStateMachine(100, mapping="md5")
    with pytest.raises(ValueError, match="gid"):
        ShardKVStateMachine(0)


def test_snapshot_round_trip_and_determinism():
    a = Applier(ShardKVStateMachine(100, maxraftstate=10))
    move_half(a)
    a.ops(op(PUT, "2", "two", 3, 1))
    data = a.sm.snapshot()
    b = ShardKVStateMachine(100)
    b.restore(data, a.index)
    assert b.snapshot() == data
    assert b.status() | {"applied_ops": 0} == a.sm.status() | {"applied_ops": 0}
    assert b.last_applied == a.index
    with pytest.raises(ValueError, match="format"):
        b.restore(pickle.dumps((99, None, None, None, None, None)), 1)
    assert a.sm.should_snapshot(5, 11) and not a.sm.should_snapshot(6, 11)
    assert not a.sm.should_snapshot(7, 10)


# ------------------------------------------------------------------------------------------------
# A property: several groups following random configurations, with random client traffic, migration
# and GC carried out as the servers would (in a random order), agree with one dict and never lose or
# duplicate an operation; at rest, a moved-away shard is stored nowhere but at its owner.
# ------------------------------------------------------------------------------------------------

GIDS = (100, 101, 102)


def random_config(rng: random.Random, num: int, nshards: int) -> Config:
    members = [g for g in GIDS if rng.random() < 0.6]
    if not members and rng.random() < 0.7:
        members = [rng.choice(GIDS)]
    shards = tuple(rng.choice(members) if members else 0 for _ in range(nshards))
    return Config(num, shards, {g: SERVERS[g] for g in members})


def drive(seed: int, nconfigs: int, nshards: int) -> None:
    rng = random.Random(seed)
    groups = {g: Applier(ShardKVStateMachine(g, nshards=nshards)) for g in GIDS}
    configs = [random_config(rng, n, nshards) for n in range(1, nconfigs + 1)]
    model: dict[str, str] = {}
    seq = 0
    keys = [str(i) for i in range(12)]
    for _ in range(nconfigs * 40):
        step = rng.random()
        gid = rng.choice(GIDS)
        a = groups[gid]
        sm = a.sm
        if step < 0.35:  # client op against a random group
            key = rng.choice(keys)
            seq += 1
            kind = rng.choice((GET, PUT, APPEND))
            value = None if kind == GET else f"{seq};"
            o = (kind, key, value, 1, seq, key2shard_reference(key, nshards))
            (res,) = a.ops(o)
            if res is WRONG_GROUP:
                continue
            if kind == GET:
                assert res == model.get(key, ""), (key, res, model.get(key))
            elif kind == PUT:
                model[key] = value
            else:
                model[key] = model.get(key, "") + value
            owner = sm.config.shards[o[5]]
            assert owner == gid
        elif step < 0.55:  # propose the next config when settled
            n = sm.config.num
            if n < nconfigs and sm.settled():
                assert a((CONFIG, configs[n])) is True
        elif step < 0.8:  # pull arriving shards from their holder
            for peer, shards in sm.with_status(ARRIVING).items():
                exported = groups[peer].sm.export(sm.config.num, tuple(shards))
                if exported is not None:
                    assert a((INSTALL, sm.config.num, exported)) == tuple(shards)
        else:  # tell holders to delete, then mark gc done
            for peer, shards in sm.with_status(GC_PENDING).items():
                holder = groups[peer]
                if holder.sm.config.num > sm.config.num or (
                        holder.sm.config.num == sm.config.num
                        and holder((DELETE, sm.config.num, tuple(shards)))
                        is not None):
                    assert a((GC_DONE, sm.config.num, tuple(shards))) == tuple(shards)
    # every group can always make progress to the last configuration (no deadlock)
    for _ in range(nconfigs * 10):
        for a in groups.values():
            sm = a.sm
            if sm.settled() and sm.config.num < nconfigs:
                a((CONFIG, configs[sm.config.num]))
            for peer, shards in sm.with_status(ARRIVING).items():
                exported = groups[peer].sm.export(sm.config.num, tuple(shards))
                if exported is not None:
                    a((INSTALL, sm.config.num, exported))
            for peer, shards in sm.with_status(GC_PENDING).items():
                holder = groups[peer]
                if holder.sm.config.num >= sm.config.num:
                    if holder.sm.config.num == sm.config.num:
                        holder((DELETE, sm.config.num, tuple(shards)))
                    a((GC_DONE, sm.config.num, tuple(shards)))
    last = configs[-1]
    for g, a in groups.items():
        assert a.sm.config.num == nconfigs and a.sm.settled(), (g, a.sm.status())
        for s, sh in a.sm.shards.items():
            assert last.shards[s] == g or (last.shards[s] == 0 and sh.status == HELD), (g, s, sh)
    # the data, wherever it is held, is the model's
    for key in keys:
        s = key2shard_reference(key, nshards)
        holders = [a for a in groups.values() if s in a.sm.shards]
        assert len(holders) <= 1
        held = holders[0].sm.shards[s].data.get(key, "") if holders else ""
        assert held == model.get(key, ""), key


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), nconfigs=st.integers(1, 12), nshards=st.sampled_from([1, 3, 10]))
def test_random_reconfigurations_lose_nothing(seed: int, nconfigs: int, nshards: int) -> None:
    drive(seed, nconfigs, nshards)


def test_routers_pickle_without_their_caches():
    """An unpickled NetworkRouter takes a fresh end prefix (ends are never shared between processes);
    a DirectRouter keeps its known handles and namespace but looks other names up again."""
    from shardkv.endpoints import CtrlerEndpoints, DirectRouter, NetworkRouter

    r = NetworkRouter("net-handle", prefix="p1")
    r._ends["s"] = "p1.1->s"
    r2 = pickle.loads(pickle.dumps(r))
    assert r2.network == "net-handle" and r2.prefix != "p1" and r2._ends == {}
    assert r2._new_end("s") != r._new_end("s")
    d = DirectRouter({"ctl-0": "handle0"}, "ns")
    d._handles["server-1"] = "looked-up"
    d2 = pickle.loads(pickle.dumps(d))
    assert d2._handles == {"ctl-0": "handle0"} and d2.namespace == "ns"
    d.forget("ctl-0")
    d.forget("server-1")
    # a failed call forgets any handle, known ones too: the next call looks the name up again (a lost
    # replica's replacement runs under its name); a known handle stays the fallback for the lookup
    assert d._handles == {} and d.known == {"ctl-0": "handle0"}
    with pytest.raises(ValueError, match="at least one server"):
        CtrlerEndpoints(d, ())
