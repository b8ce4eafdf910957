"""The state machines' reads without the log (ReadIndex), in process: what each answers, and when only
the log can answer (``NEEDS_LOG``). The Ray side is in tests/test_kvraft_reads.py and the suites."""

from __future__ import annotations

from actors.reads import NEEDS_LOG
from kvraft.ops import GET as KV_GET
from kvraft.ops import PUT as KV_PUT
from kvraft.statemachine import KVStateMachine
from shardctrler.config import Config
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
