"""The asyncio sharded clerk's routing while a shard moves, against in-process fake servers (pure:
plain asyncio, no Ray): a moving shard's operations wait for the new configuration on their own, the
group's other shards carry on, the controller is not hammered, and exactly-once/order hold."""

from __future__ import annotations

import asyncio
from typing import Any

from shardctrler.config import Config
from shardkv.async_clerk import AsyncClerk
from shardkv.ops import GET, OK, WRONG_GROUP, Op

# mapping "reference": a key's first byte mod 4
SHARD0_KEYS = ("d", "h", "l")  # 100, 104, 108
SHARD1_KEY = "a"  # 97

BEFORE = Config(1, (1, 1, 1, 1), {1: ("a1",)})
AFTER = Config(2, (2, 1, 1, 1), {1: ("a1",), 2: ("b1",)})


class FakeService:
    """Two one-server groups: ``a1`` (gid 1) serves every shard but 0 (already given away); ``b1``
    (gid 2) serves shard 0 once ``installed`` is set. Each shard has a dedup table of last number per
    client (as the servers' per-shard session tables); ``applied`` records what took effect, in order."""

    def __init__(self) -> None:
        self.installed = asyncio.Event()
        self.applied: dict[int, list[tuple[str, int]]] = {}
        self.last: dict[tuple[int, int], int] = {}
        self.calls: list[tuple[str, tuple[int, ...]]] = []
        self.queries = 0

    def serves(self, name: str, shard: int) -> bool:
        if name == "a1":
            return shard != 0
        return shard == 0 and self.installed.is_set()

    async def acall(self, name: str, method: str, args: tuple[Any, ...], timeout: float) -> Any:
        assert method == "kv"
        ops: tuple[Op, ...] = args[0]
        self.calls.append((name, tuple(op[5] for op in ops)))
        await asyncio.sleep(0)  # a round trip: other tasks run meanwhile
        results: list[Any] = []
        for kind, key, _value, client, seq, shard in ops:
            if not self.serves(name, shard):
                results.append(WRONG_GROUP)
                continue
            if seq > self.last.get((shard, client), 0):
                self.last[(shard, client)] = seq
                self.applied.setdefault(shard, []).append((key, seq))
            results.append("" if kind == GET else None)
        return (OK, results)

    async def query(self, num: int, timeout: float | None = None) -> Config:
        self.queries += 1
        await asyncio.sleep(0)
        return AFTER

    async def close(self) -> None:
        pass


def make_clerk(service: FakeService, retry_pause: float) -> AsyncClerk:
    clerk = AsyncClerk(service, ("ctrl",), retry_pause=retry_pause, attempt_timeout=1.0)
    clerk.config = BEFORE
    clerk._ctrl = service  # type: ignore[assignment]  # the fake controller
    return clerk


def test_a_moving_shard_does_not_hold_up_its_groups_other_shards() -> None:
    async def main() -> None:
        service = FakeService()
        clerk = make_clerk(service, retry_pause=3600.0)  # a paused group would hang this test
        moving = asyncio.ensure_future(clerk.put(SHARD0_KEYS[0], "x"))
        for i in range(20):  # one after another, each through group 1's sender
            await asyncio.wait_for(clerk.put(SHARD1_KEY, str(i)), 5.0)
        assert not moving.done()
        assert clerk.config is AFTER  # asked at once, without waiting out the pause
        assert [seq for _, seq in service.applied[1]] == list(range(1, 21))
        assert 0 not in service.applied
        moving.cancel()
        await clerk.close()

    asyncio.run(main())


def test_moving_shard_completes_once_installed_in_order_with_bounded_queries() -> None:
    pause = 0.05

    async def main() -> None:
        service = FakeService()
        clerk = make_clerk(service, retry_pause=pause)
        loop = asyncio.get_running_loop()
        start = loop.time()
        moving = [asyncio.ensure_future(clerk.put(k, "v")) for k in SHARD0_KEYS]
        others = [await clerk.put(SHARD1_KEY, str(i)) for i in range(5)]
        assert others == [None] * 5 and not any(f.done() for f in moving)
        loop.call_later(0.3, service.installed.set)  # the move takes 0.3 s
        await asyncio.wait_for(asyncio.gather(*moving), 5.0)
        elapsed = loop.time() - start
        # every key once, in the order of its numbers (one shard session), none lost
        assert service.applied[0] == [(k, i + 1) for i, k in enumerate(SHARD0_KEYS)]
        # backed off per shard: about one controller query and one resend per pause, no tight loop
        assert service.queries <= elapsed / pause + 3
        to_b = [c for c in service.calls if c[0] == "b1"]
        assert 1 <= len(to_b) <= elapsed / pause + 3
        assert all(shards == (0, 0, 0) for _, shards in to_b)  # parked together, resent as one batch
        await clerk.close()

    asyncio.run(main())
