"""Session expiry on Ray (issue 13, item 5), through the public API with a short ``session_ttl``:
a clerk idle past the TTL gets ``SessionExpiredError`` for a write (kvraft, shardkv) and goes on in a
new session, its reads go on silently, and the dedup table stays bounded however many short-lived
clerks come and go (and every replica agrees on it). The idle periods are what is being tested (real
time must pass for the log's clock to move), not a way to wait for something.
"""

from __future__ import annotations

import time

import pytest
import ray

import kvraft
import shardctrler
from actors.sessions import SessionExpiredError

pytestmark = pytest.mark.ray

TTL_S = 1.0


def _kv_stats(group: kvraft.KVGroup) -> list[dict]:
    return ray.get([r.kv_stats.remote() for r in group.replicas], timeout=30)


def test_kv_clerk_idle_past_the_ttl_gets_the_error_then_goes_on(ray_session):
    with kvraft.start_group(3, storage="memory", session_ttl=TTL_S) as group:
        ck = group.clerk()
        assert ck.session_ttl == TTL_S  # the group hands its TTL to its clerks
        ck.put("k", "a", timeout=30)
        old = ck.client_id
        time.sleep(2.5 * TTL_S)
        with pytest.raises(SessionExpiredError) as err:
            ck.append("k", "b", timeout=30)
        e = err.value
        assert (e.service, e.client_id, e.seq) == ("kvraft", old, 2) and "session_ttl" in str(e)
        assert ck.get("k", timeout=30) == "a", "the refused append was not applied"
        ck.append("k", "b", timeout=30)
        time.sleep(2.5 * TTL_S)
        # a read after the TTL never fails: its session has been idle for more than half the TTL, so
        # the leader sends it through the log (docs/kvraft.md, "Read strategy"), which refuses it as
        # expired, and the clerk resends it in a new session without a word
        assert ck.get("k", timeout=30) == "ab"
        assert ck.sessions_renewed == 2


def test_kv_clerk_that_only_reads_for_three_ttls_then_writes_gets_no_error(ray_session):
    with kvraft.start_group(3, storage="memory", session_ttl=TTL_S) as group:
        ck = group.clerk()
        ck.put("k", "a", timeout=30)
        leader = group.leader()
        before = _kv_stats(group)[leader]["last_applied"]
        reads, end = 0, time.monotonic() + 3 * TTL_S
        while time.monotonic() < end:  # reading is the subject: nobody writes meanwhile
            assert ck.get("k", timeout=30) == "a"
            reads += 1
        ck.append("k", "b", timeout=30)  # the reads kept the session alive: no SessionExpiredError
        assert ck.sessions_renewed == 0 and ck.get("k", timeout=30) == "ab"
        stats = _kv_stats(group)[leader]
        # ReadIndex stays the common case: a reading session costs about one log entry per half TTL
        # (6 in 3 TTLs, one more at the edges), plus the append
        assert stats["last_applied"] - before <= 9 and stats["expired_refused"] == 0, (stats, before, reads)
        assert reads > 30, reads


def test_kv_dedup_table_stays_bounded_with_many_short_lived_clerks(ray_session):
    with kvraft.start_group(3, storage="memory", session_ttl=TTL_S) as group:
        sizes = []
        for wave in range(3):
            start = time.monotonic()
            for i in range(40):
                group.clerk().append("log", f"{wave}.{i};", timeout=30)  # a clerk used once
            assert time.monotonic() - start < TTL_S * 10
            time.sleep(1.5 * TTL_S)
            probe = group.clerk()
            probe.get("log", timeout=30)  # a stamped entry: the wave's sessions expire before it
            leader = group.leader()
            deadline = time.monotonic() + 10
            while True:  # every replica applies the probe's entry; then all agree on the table
                stats = _kv_stats(group)
                if len({s["last_applied"] for s in stats}) == 1 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            sizes.append([s["clients"] for s in stats])
            assert stats[leader]["clients"] == 1, f"wave {wave}: only the probe's session is left"
        assert all(len(set(s)) == 1 for s in sizes), f"replicas disagree on the table: {sizes}"
        assert min(s["sessions_expired"] for s in _kv_stats(group)) >= 120
        value = group.clerk().get("log", timeout=30)
        assert sorted(value.split(";")[:-1]) == sorted(f"{w}.{i}" for w in range(3) for i in range(40))


def test_shardkv_clerk_idle_past_the_ttl_gets_the_error_then_goes_on(ray_session):
    import shardkv.group

    ctrler = shardctrler.start_group(3, storage="memory", session_ttl=TTL_S)
    group = None
    try:
        group = shardkv.group.start_group(100, ctrler, 3, storage="memory", session_ttl=TTL_S, join=True)
        ck = shardkv.group.make_clerk(ctrler, session_ttl=TTL_S)
        ck.put("a", "1", timeout=30)
        ck.put("b", "2", timeout=30)
        time.sleep(2.5 * TTL_S)
        with pytest.raises(SessionExpiredError) as err:
            ck.append("a", "x", timeout=30)
        assert err.value.service == "shardkv" and err.value.seq == 2
        assert ck.get("b", timeout=30) == "2"  # a read on another expired shard: no error
        assert ck.get("a", timeout=30) == "1"
        ck.append("a", "x", timeout=30)
        assert ck.get("a", timeout=30) == "1x"
        st = group.status()
        assert max(s.get("expired_refused", 0) for s in st) >= 1, st
    finally:
        if group is not None:
            group.stop()
        ctrler.stop()


def test_shardkv_clerk_that_only_reads_for_three_ttls_then_writes_gets_no_error(ray_session):
    import shardkv.group

    ctrler = shardctrler.start_group(3, storage="memory", session_ttl=TTL_S)
    group = None
    try:
        group = shardkv.group.start_group(100, ctrler, 3, storage="memory", session_ttl=TTL_S, join=True)
        ck = shardkv.group.make_clerk(ctrler, session_ttl=TTL_S)
        ck.put("a", "1", timeout=30)
        reads, end = 0, time.monotonic() + 3 * TTL_S
        while time.monotonic() < end:  # reading is the subject: nobody writes meanwhile
            assert ck.get("a", timeout=30) == "1"
            reads += 1
        ck.append("a", "x", timeout=30)  # the reads kept the shard's session alive: no error
        assert ck.get("a", timeout=30) == "1x" and reads > 30
        assert max(s.get("expired_refused", 0) for s in group.status()) == 0
    finally:
        if group is not None:
            group.stop()
        ctrler.stop()
