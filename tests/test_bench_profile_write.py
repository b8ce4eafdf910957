"""benchmarks/profile_write.py without Ray: its hop tracer on three kvraft replicas in one event loop
over their stream listeners (every write followed through every hop, the hop durations adding up to
the write, the replicas' classes exactly as before once the tracer is removed), and the py-spy raw
profile's aggregation. No test here starts Ray."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

# appended, not prepended: benchmarks/kvraft.py must not shadow the kvraft package for later tests
sys.path.append(str(Path(__file__).resolve().parent.parent / "benchmarks"))

import profile_write as pw
from test_stream_replicas import _kv_replicas, _leader, _open_and_start, _stop

from actors.stream_auth import new_secret


def _methods() -> dict[str, Any]:
    import actors.storage
    import actors.transport
    import raft
    from kvraft.server import KVReplica

    return {"kv": KVReplica.kv, "rpc": KVReplica.rpc, "_dispatch": KVReplica._dispatch,
            "_on_applied": KVReplica._on_applied, "propose": raft.RaftNode.propose,
            "start": actors.transport.StreamTransport.start, "save": actors.storage.MemoryStorage.save}


def test_every_write_is_followed_through_every_hop_and_the_tracer_leaves_nothing_behind() -> None:
    from kvraft.async_clerk import AsyncClerk
    from kvraft.endpoints import StreamEndpoints

    before = _methods()
    writes = 30

    async def main() -> tuple[list[list[float]], list[list[Any]]]:
        replicas = _kv_replicas()
        secret = new_secret()
        addresses = await _open_and_start(replicas, [secret] * 3)
        leader = await _leader(replicas)
        ck = AsyncClerk(StreamEndpoints(addresses, secret, tuple(r.spec.name for r in replicas)),
                        attempt_timeout=2.0)
        installed: list[Any] = []
        events: list[list[Any]] = [[], [], []]
        try:
            await ck.put("warm", "v", timeout=10)
            for r in replicas:
                pw.install_trace(r)
                installed.append(r)
            calls = await pw.trace_writes(ck, writes)
        finally:
            for i in reversed(range(len(installed))):
                events[i] = pw.remove_trace(installed[i])
            await ck.close()
            await _stop(replicas)
        others = [i for i in range(3) if i != leader]
        return pw.breakdown(calls, events[leader], {i: events[i] for i in others}), events

    rows, events = asyncio.run(main())
    assert _methods() == before  # the originals are back
    assert all(not hasattr(type(e), "_pw_events") for e in events)
    # almost every write is followed end to end (one may straddle a leader's re-send)
    assert len(rows) >= writes - 2, (len(rows), events)
    for row in rows:
        hops, total = row[: len(pw.HOPS)], row[len(pw.HOPS)]
        assert all(h >= 0 for h in hops), row
        assert abs(sum(hops) - total) < 1e-6  # the hops tile the clerk's call
    summary = pw.summarise_hops(rows)
    assert summary["writes"] == len(rows)
    assert [s["hop"] for s in summary["segments"]] == list(pw.HOPS)


def test_the_raw_profile_is_aggregated_by_leaf_function_without_line_numbers() -> None:
    raw = ("thread (1): MainThread;run (asyncio/base_events.py:10);_drain (actors/replica.py:280) 6\n"
           "thread (1): MainThread;run (asyncio/base_events.py:10);_drain (actors/replica.py:301) 2\n"
           "thread (1): MainThread;select (selectors.py:468) 2\n"
           "not a stack line\n")
    total, top = pw.top_functions(raw, 5)
    assert total == 10
    assert top == [{"function": "_drain (actors/replica.py)", "share": 0.8},
                   {"function": "select (selectors.py)", "share": 0.2}]
    assert pw.top_functions("", 5) == (0, [])
