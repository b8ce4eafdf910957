"""actors.reads.ReadWaiters in process (no Ray): the two waits of a ReadIndex read on a replica."""

from __future__ import annotations

import asyncio
import random

from raft import AppendEntriesReply, RaftConfig, RaftNode, RequestVoteReply


def leader(n: int = 3) -> RaftNode:
    """A leader of ``n`` peers that has committed its no-op (index 1)."""
    node = RaftNode(RaftConfig(peer_id=0, peers=tuple(range(n)), leader_noop=True), random.Random(0))
    while not node.is_leader:
        node.tick()
        if node.role == "candidate":
            for p in range(1, n):
                node.step(RequestVoteReply(node.term, p, 0, True))
    node.ready()
    for p in range(1, n):
        node.step(AppendEntriesReply(node.term, p, 0, True, match_index=1))
    node.ready()
    assert node.commit_index == 1
    return node


def test_a_read_is_released_once_confirmed_and_applied() -> None:
    from actors.reads import ReadWaiters

    async def main() -> None:
        core = leader()
        w = ReadWaiters()
        started = w.start(core)
        assert started is not None
        ctx, fut = started
        rd = core.ready()
        core.step(AppendEntriesReply(core.term, 1, 0, True, match_index=1, read_ctx=1))
        rd = core.ready()
        assert [s.ctx for s in rd.read_states] == [ctx]
        w.answered(rd.read_states, rd.reads_dropped, applied=0)  # not applied that far yet
        assert not fut.done()
        w.applied(1)
        assert fut.done() and fut.result() is True and len(w) == 0

    asyncio.run(main())


def test_follower_refuses_and_dropped_or_failed_reads_are_false() -> None:
    from actors.reads import ReadWaiters

    async def main() -> None:
        follower = RaftNode(RaftConfig(peer_id=1, peers=(0, 1, 2)), random.Random(1))
        w = ReadWaiters()
        assert w.start(follower) is None
        core = leader()
        a = w.start(core)
        b = w.start(core)
        assert a is not None and b is not None
        w.answered((), (a[0],), applied=5)
        assert a[1].result() is False and not b[1].done()
        w.forget(b[0])
        w.fail_all()
        c = w.start(core)
        assert c is not None
        w.fail_all()
        assert c[1].result() is False and len(w) == 0

    asyncio.run(main())
