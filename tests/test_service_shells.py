"""The shared service shells of :mod:`actors` (server core, clerk core, asyncio clerk, protocol),
in process, without Ray: what every service (kvraft, the controller, the shard groups) now gets from
them alike.

* The routing rule and the option checks are one rule for every clerk (a leader hint in range and
  not the server itself, else the next server; ``attempt_timeout`` > 0, ``retry_pause`` >= 0,
  ``timeout`` > 0 or None), with the same messages.
* The server core answers the controller's direct path as kvraft's: garbage instead of a pickled
  batch is ``invalid``, never an exception; a waiter outlives neither a crash nor a lost term.
* The asyncio clerk fails only the batch a server refused as malformed: operations queued behind it
  are still sent (the controller's clerk used to fail them too).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import pickle
from typing import Any

import pytest
from test_kvraft_validation import _solo_leader

from actors.service_protocol import (
    INVALID,
    NO_ANSWER,
    OK,
    TIMEOUT,
    WRONG_LEADER,
    check_timeout,
    next_server,
    outcome,
)


def test_one_routing_rule_for_every_clerk() -> None:
    from kvraft.clerk import ClerkCore as KVCore
    from shardctrler.clerk import ClerkCore as CtrlerCore
    from shardkv.clerk import ClerkCore as ShardCore

    assert next_server(0, 3, (WRONG_LEADER, 2)) == 2
    assert next_server(2, 3, (WRONG_LEADER, 2)) == 0, "a server naming itself is not a hint"
    assert next_server(1, 3, (WRONG_LEADER, 7)) == 2, "a hint out of range is ignored"
    assert next_server(2, 3, None) == 0 and next_server(0, 3, NO_ANSWER) == 1
    assert next_server(0, 3, (TIMEOUT, None)) == 1

    class _Endpoints:
        names = ("a", "b", "c")

    for core in (KVCore(_Endpoints()), CtrlerCore(_Endpoints())):  # type: ignore[arg-type]
        assert core.route(0, (WRONG_LEADER, 2)) == 2 and core.route(2, None) == 0
        assert core.outcome(None) == outcome(None)
    shard = ShardCore(object(), ("c0",))
    assert shard.next_server(5, 0, 3, (WRONG_LEADER, 2)) == 2 and shard.next_server(5, 2, 3, None) == 0


@pytest.mark.parametrize("options,phrase", [
    ({"attempt_timeout": 0}, "attempt_timeout must be > 0"),
    ({"attempt_timeout": float("nan")}, "attempt_timeout must be > 0"),
    ({"retry_pause": -1}, "retry_pause must be >= 0"),
])
def test_every_clerk_checks_its_options_alike(options: dict[str, Any], phrase: str) -> None:
    from kvraft.clerk import Clerk as KVClerk
    from shardctrler.clerk import Clerk as CtrlerClerk
    from shardkv.clerk import ClerkCore as ShardCore

    class _Endpoints:
        names = ("a",)

    for make in (lambda: KVClerk(_Endpoints(), **options), lambda: CtrlerClerk(_Endpoints(), **options),
                 lambda: ShardCore(object(), ("c0",), **options)):
        with pytest.raises(ValueError, match=phrase):
            make()
    with pytest.raises(ValueError, match="a clerk needs at least one server"):
        KVClerk(type("E", (), {"names": ()})())
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="timeout must be > 0"):
            check_timeout(bad)
    check_timeout(None)
    check_timeout(0.1)


def test_controller_server_core_answers_garbage_and_waits_like_kvraft() -> None:
    import functools

    from shardctrler.ops import JOIN, QUERY
    from shardctrler.server import CtrlerReplica
    from shardctrler.statemachine import CtrlerStateMachine

    async def main() -> None:
        replica = await _solo_leader(CtrlerReplica, state_machine=functools.partial(CtrlerStateMachine, 10))
        reply = pickle.loads(await replica.ctrl(b"\x80\x05garbage"))
        assert reply[0] == INVALID and "not a pickled batch" in reply[1]
        reply = pickle.loads(await replica.ctrl(pickle.dumps(((JOIN, ((1, ("a",)),), 7, 1),))))
        assert reply == (OK, [1])
        assert (await replica.rpc_ctrl(((QUERY, -1, 7, 2),)))[1][0].num == 1
        stats = await replica.ctrl_stats()
        assert stats["role"] == "leader" and stats["pending"] == 0
        # a crash fails the waiter of the dead incarnation at once (wrong leader, no hint)
        waiting = asyncio.ensure_future(replica.rpc_ctrl(((QUERY, -1, 7, 3),)))
        await asyncio.sleep(0)
        await replica.crash()
        assert await asyncio.wait_for(waiting, 1.0) == (WRONG_LEADER, None)
        assert await replica.ctrl(pickle.dumps(((QUERY, -1, 7, 4),))) is None, "a down peer answers None"

    asyncio.run(main())


class _RefusesFirst:
    """Endpoints whose first call is refused as malformed and whose later calls succeed."""

    names = ("s0",)

    def __init__(self) -> None:
        self.batches: list[tuple[Any, ...]] = []

    def submit(self, server: int, ops: Any) -> Any:
        self.batches.append(ops)
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        if len(self.batches) == 1:
            fut.set_result((INVALID, "operation 0 is bad"))
        else:
            fut.set_result((OK, [3] * len(ops)))
        return type("Ref", (), {"future": lambda self: fut})()

    def unpack(self, value: Any) -> Any:
        return value


def test_async_clerk_fails_only_the_refused_batch() -> None:
    from shardctrler.async_clerk import AsyncClerk
    from shardctrler.errors import RefusedError

    endpoints = _RefusesFirst()

    async def main() -> None:
        ck = AsyncClerk(endpoints, max_batch=1)  # type: ignore[arg-type]
        first, second = await asyncio.gather(ck.move(0, 1), ck.move(1, 1), return_exceptions=True)
        assert isinstance(first, RefusedError) and first.sent and "s0 refused the call" in str(first)
        assert second == 3, "an operation queued behind a refused batch is still sent"
        await ck.close()

    asyncio.run(main())
    assert [len(b) for b in endpoints.batches] == [1, 1]
