"""The state machines' reads without the log (ReadIndex), in process: what each answers, and when only
the log can answer (``NEEDS_LOG``). The Ray side is in tests/test_kvraft_reads.py and the suites."""

from __future__ import annotations

from actors.reads import NEEDS_LOG
from actors.sessions import stamp
from kvraft.ops import GET as KV_GET
from kvraft.ops import PUT as KV_PUT
from kvraft.statemachine import KVStateMachine
from shardctrler.config import Config
from shardctrler.ops import JOIN, MOVE, QUERY, Refusal
from shardctrler.statemachine import CtrlerStateMachine
from shardkv.ops import CLIENT, CONFIG, GET, PUT, WRONG_GROUP
from shardkv.statemachine import ShardKVStateMachine, mapping_function


def test_kv_read_needs_the_log_for_unknown_clients_and_non_gets():
    sm = KVStateMachine()
    sm.apply(1, ((KV_PUT, "a", "1", 7, 1),))
    assert sm.read((KV_GET, "a", None, 7, 2)) == "1"
    assert sm.read((KV_GET, "missing", None, 7, 3)) == ""
    assert sm.read((KV_GET, "a", None, 8, 1)) is NEEDS_LOG  # no session yet: the log opens it
    assert sm.read((KV_PUT, "a", "2", 7, 4)) is NEEDS_LOG
    assert sm.read(("junk",)) is NEEDS_LOG
    assert sm.sessions.seqs() == {7: 1}, "a read changes nothing"


def test_shardkv_read_checks_the_shard_at_the_point_it_is_read():
    sm = ShardKVStateMachine(100)
    shard_of = mapping_function("reference")
    key = "k"
    s = shard_of(key, 10)
    other = [g if i != s else 101 for i, g in enumerate([100] * 10)]
    servers = {100: ("a",), 101: ("b",)}
    sm.apply(1, (CONFIG, Config(1, (100,) * 10, {100: ("a",)})))
    sm.apply(2, (CLIENT, ((PUT, key, "v", 5, 1, s),)))
    assert sm.read((GET, key, None, 5, 2, s)) == "v"
    assert sm.read((GET, key, None, 6, 1, s)) is NEEDS_LOG  # unknown client
    assert sm.read((GET, key, None, 5, 2, (s + 1) % 10)) is NEEDS_LOG  # the wrong shard for the key
    sm.apply(3, (CONFIG, Config(2, tuple(other), servers)))  # the key's shard leaves this group
    assert sm.read((GET, key, None, 5, 3, s)) == WRONG_GROUP


def test_kv_read_of_a_session_idle_for_half_the_ttl_goes_through_the_log_and_renews_it():
    ttl = 1_000
    sm = KVStateMachine()
    sm.apply(1, stamp(((KV_PUT, "a", "1", 7, 1),), 10_000, ttl))
    assert sm.read((KV_GET, "a", None, 7, 2)) == "1"  # by the log clock alone: just active
    assert sm.read((KV_GET, "a", None, 7, 2), 10_500, ttl) == "1"  # idle half the TTL: still ReadIndex
    # idle for more than half the TTL by the leader's clock, though the log clock stands still (nobody
    # wrote since): only the log can answer, and its entry renews the session
    assert sm.read((KV_GET, "a", None, 7, 2), 10_501, ttl) is NEEDS_LOG
    assert sm.read((KV_GET, "a", None, 7, 2), 10_501, 0) == "1"  # ttl 0: sessions never expire
    sm.apply(2, stamp(((KV_PUT, "b", "2", 8, 1),), 10_600, ttl))  # another client moves the log clock
    assert sm.read((KV_GET, "a", None, 7, 2)) is NEEDS_LOG  # by the log clock alone, too
    assert sm.apply(3, stamp(((KV_GET, "a", None, 7, 2),), 10_700, ttl)) == ["1"]  # through the log
    assert sm.sessions.get(7)[1] == 10_700 and list(sm.sessions) == [8, 7]
    assert sm.read((KV_GET, "a", None, 7, 3), 11_100, ttl) == "1"  # renewed: ReadIndex again
    # a reader whose reads renew its session every half TTL never expires, however long it reads,
    # and its write after that is applied, not refused
    t, index = 10_700, 3
    for _ in range(20):
        t += 300
        if sm.read((KV_GET, "a", None, 7, 3), t, ttl) is NEEDS_LOG:
            index += 1
            assert sm.apply(index, stamp(((KV_GET, "a", None, 7, 3),), t, ttl)) == ["1"]
    assert index - 3 <= 10, "at most one log entry per half TTL"
    index += 1
    assert sm.apply(index, stamp(((KV_PUT, "a", "2", 7, 4),), t + 300, ttl)) == [None]
    assert sm.data["a"] == "2" and sm.expired_refused == 0 and sm.sessions.forgot  # client 8 expired


def test_shardkv_read_renews_a_session_idle_for_half_the_ttl_on_its_shard():
    ttl = 1_000
    sm = ShardKVStateMachine(100)
    shard_of = mapping_function("reference")
    s = shard_of("k", 10)
    sm.apply(1, stamp((CONFIG, Config(1, (100,) * 10, {100: ("a",)})), 10_000, ttl))
    sm.apply(2, stamp((CLIENT, ((PUT, "k", "v", 5, 1, s),)), 10_000, ttl))
    assert sm.read((GET, "k", None, 5, 2, s), 10_500, ttl) == "v"
    assert sm.read((GET, "k", None, 5, 2, s), 10_501, ttl) is NEEDS_LOG
    assert sm.apply(3, stamp((CLIENT, ((GET, "k", None, 5, 2, s),)), 10_501, ttl)) == ["v"]
    assert sm.shards[s].dedup.get(5)[1] == 10_501
    assert sm.read((GET, "k", None, 5, 3, s), 11_000, ttl) == "v"
    sm.apply(4, stamp((CONFIG, Config(2, (0,) * 10, {})), 11_100, ttl))  # the shard is held, not served
    assert sm.read((GET, "k", None, 5, 3, s), 50_000, ttl) == WRONG_GROUP  # ownership checked first


def test_ctrler_read_answers_queries_of_known_clients_from_the_state():
    ttl = 1_000
    sm = CtrlerStateMachine(10)
    sm.apply(1, stamp(((JOIN, {1: ["a"]}, 7, 1),), 10_000, ttl))
    sm.apply(2, stamp(((JOIN, {2: ["b"]}, 7, 2),), 10_000, ttl))
    table = sm.sessions.copy()
    assert sm.read((QUERY, -1, 7, 3)) == sm.configs[2]  # the latest
    assert sm.read((QUERY, 1, 7, 3)) == sm.configs[1]
    assert sm.read((QUERY, 0, 7, 2)) == sm.configs[0]  # a duplicate reads again, as through the log
    assert sm.read([QUERY, 2, 7, 3]) == sm.configs[2]  # a list is an operation too
    assert sm.sessions == table and sm.applied_ops == 2, "reads change nothing"
    # a configuration that does not exist yet: what applying the Query now answers, the latest
    assert sm.read((QUERY, 9, 7, 3), 10_100, ttl) == sm.configs[2] == sm.apply(
        3, stamp(((QUERY, 9, 7, 3),), 10_100, ttl))[0]
    for op in ((QUERY, -1, 8, 1),  # unknown client: the log opens its session
               (QUERY, -2, 7, 4), (QUERY, "1", 7, 4), (QUERY, True, 7, 4),  # refused through the log
               (QUERY, -1, 7, 0), (QUERY, -1, "7", 4), (MOVE, (0, 1), 7, 4), (QUERY, -1, 7), "junk"):
        assert sm.read(op) is NEEDS_LOG, op
    assert sm.read((QUERY, -1, 7, 4), 10_600, ttl) == sm.configs[2]
    assert sm.read((QUERY, -1, 7, 4), 10_601, ttl) is NEEDS_LOG  # idle > TTL/2: renewed through the log
    assert isinstance(sm.apply(4, stamp(((QUERY, -2, 7, 4),), 10_700, ttl))[0], Refusal)
    assert sm.sessions.get(7)[1] == 10_700 and sm.read((QUERY, -1, 7, 5), 11_000, ttl) == sm.configs[2]
