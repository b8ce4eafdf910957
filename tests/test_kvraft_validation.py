"""A server does not trust its callers (issue 10, finding 6), without Ray.

* Every batch is checked before it is proposed: a malformed one gets ``("invalid", reason)`` and
  nothing reaches the log.
* The state machine's ``apply`` is total: a malformed entry that reaches the log anyway yields a
  ``Rejected`` result and changes nothing, the same on every replica, and the entries behind it are
  applied as usual.
* A replica whose state machine raises anyway stops (fail-stop) instead of skipping entries.
* Clerks turn ``invalid`` into ``KVRejectedError`` at once instead of retrying.
"""

from __future__ import annotations

import asyncio
import pickle
from typing import Any

import pytest

from actors.replica import ReplicaActor, ReplicaSpec
from kvraft.errors import KVRejectedError
from kvraft.ops import APPEND, GET, INVALID, OK, PUT, Rejected, batch_problem
from kvraft.server import KVReplica
from kvraft.statemachine import KVStateMachine

GOOD = ((PUT, "k", "v", 1, 1), (APPEND, "k", "w", 1, 2), (GET, "k", None, 1, 3))

#: malformed batches and a phrase each one's reason must contain
BAD: list[tuple[Any, str]] = [
    ("not a batch", "must be a tuple of operations"),
    (42, "must be a tuple of operations"),
    ((), "at least one operation"),
    (((PUT, "k", "v", 1),), "must be a tuple (kind, key, value, client_id, seq)"),
    (([PUT, "k", "v", 1, 1],), "must be a tuple"),
    (((9, "k", "v", 1, 1),), "unknown kind 9"),
    (((True, "k", "v", 1, 1),), "unknown kind True"),
    ((("put", "k", "v", 1, 1),), "unknown kind 'put'"),
    (((PUT, 7, "v", 1, 1),), "the key must be a str"),
    (((PUT, ["k"], "v", 1, 1),), "the key must be a str"),
    (((PUT, "k", None, 1, 1),), "value must be a str"),
    (((APPEND, "k", b"v", 1, 1),), "value must be a str"),
    (((GET, "k", "v", 1, 1),), "a get carries no value"),
    (((PUT, "k", "v", "me", 1),), "client id must be an int"),
    (((PUT, "k", "v", -1, 1),), "client id must be an int >= 0"),
    (((PUT, "k", "v", 1, 0),), "sequence number must be an int >= 1"),
    (((PUT, "k", "v", 1, 1.5),), "sequence number must be an int"),
    (((PUT, "k", "v", 1, 1), (PUT, "k", "v", 1, None)), "operation 1"),
]


@pytest.mark.parametrize(("batch", "phrase"), BAD)
def test_batch_problem_names_what_is_wrong(batch: Any, phrase: str) -> None:
    problem = batch_problem(batch)
    assert problem is not None and phrase in problem, problem


def test_well_formed_batches_pass() -> None:
    assert batch_problem(GOOD) is None
    assert batch_problem(list(GOOD)) is None
    assert batch_problem(((GET, "", None, 0, 1),)) is None


def test_apply_is_total_and_skips_nothing() -> None:
    """Every malformed entry, interleaved with good ones: no exception, nothing of the bad ones
    applied, every good one applied, and two replicas end in the same state."""
    replicas = [KVStateMachine(), KVStateMachine()]
    for sm in replicas:
        index = 0
        for k, (bad, _) in enumerate(BAD):
            index += 1
            result = sm.apply(index, bad)
            assert isinstance(result, Rejected), (bad, result)
            index += 1
            assert sm.apply(index, ((APPEND, "log", f"{k};", 5, k + 1),)) == [None]
        assert sm.last_applied == index
        assert sm.get("log") == "".join(f"{k};" for k in range(len(BAD)))
        assert sm.sessions.seqs() == {5: len(BAD)}
        assert sm.stats()["rejected"] == len(BAD)
    assert replicas[0].snapshot() == replicas[1].snapshot()


def test_a_rejected_batch_is_all_or_nothing() -> None:
    sm = KVStateMachine()
    result = sm.apply(1, ((PUT, "a", "1", 1, 1), (PUT, "b", 2, 1, 2)))
    assert isinstance(result, Rejected) and "operation 1" in result.reason
    assert sm.data == {} and sm.sessions.seqs() == {}  # the good first operation was not applied either


# --------------------------------------------------------------------------------------------------
# The server, in process: one KVReplica (the actor class without Ray), its own leader
# --------------------------------------------------------------------------------------------------


async def _solo_leader(cls: type = KVReplica, **spec: Any) -> Any:
    replica = cls(ReplicaSpec(name="solo", peer_id=0, peers=(0,), election_ticks=3, heartbeat_ticks=1,
                              tick_s=0.005, **spec))
    await replica.start(1, ("direct", {}))
    for _ in range(400):
        if replica.core is not None and replica.core.is_leader:
            return replica
        await asyncio.sleep(0.005)
    raise AssertionError("a single replica did not become leader")


def test_server_refuses_malformed_batches_before_proposing() -> None:
    async def main() -> None:
        replica = await _solo_leader(state_machine=KVStateMachine)
        before = replica.core.status()["last_index"]
        for bad, phrase in BAD:
            reply = await replica.rpc(None, "kv", (bad,))
            assert reply[0] == INVALID and phrase in reply[1], (bad, reply)
        assert replica.core.status()["last_index"] == before, "a malformed batch was proposed"
        # garbage instead of a pickled batch, on the direct path
        reply = pickle.loads(await replica.kv(b"\x80\x05garbage"))
        assert reply[0] == INVALID and "not a pickled batch" in reply[1]
        assert pickle.loads(await replica.kv(pickle.dumps(GOOD))) == (OK, [None, None, "vw"])
        assert replica.sm.stats()["rejected"] == 0
        await replica.crash()

    asyncio.run(main())


def test_server_answers_invalid_for_a_malformed_entry_in_the_log() -> None:
    """If a malformed entry reaches the log anyway (proposed around the check), every replica
    rejects it alike, the proposer's caller gets "invalid", and later entries still apply."""
    async def main() -> None:
        replica = await _solo_leader(state_machine=KVStateMachine)
        fut = asyncio.ensure_future(replica.rpc_kv(GOOD))
        await asyncio.sleep(0)
        index, _, ok = await replica.start_command(((9, "k", "v", 1, 7),))  # bypasses the check
        assert ok
        assert await fut == (OK, [None, None, "vw"])
        for _ in range(200):
            if replica.sm.last_applied >= index:
                break
            await asyncio.sleep(0.005)
        assert replica.sm.stats()["rejected"] == 1
        assert await replica.rpc_kv(((APPEND, "k", "!", 1, 4),)) == (OK, [None])
        assert replica.sm.get("k") == "vw!"
        await replica.crash()

    asyncio.run(main())


class _ExplodingSM(KVStateMachine):
    """A state machine that is not total (the bug of finding 6)."""

    def apply(self, index: int, command: Any) -> Any:
        if command == "boom":
            raise ValueError("boom")
        return super().apply(index, command)


def test_a_replica_whose_apply_raises_stops_instead_of_skipping() -> None:
    async def down(replica: Any) -> dict[str, Any]:
        for _ in range(400):
            if replica.core is None:
                break
            await asyncio.sleep(0.005)
        return await replica.status()

    async def main() -> None:
        replica = await _solo_leader(ReplicaActor, state_machine=_ExplodingSM)
        await replica.start_command("boom")
        await replica.start_command(GOOD)
        status = await down(replica)
        assert status["role"] == "down", status
        assert "apply of entry 1 failed" in status["failure"] and "boom" in status["failure"]
        # Restarted, it replays its log and stops at the same entry again: it never skips it.
        await replica.start(2, ("direct", {}))
        for _ in range(400):  # a new leader commits its old entries with the first entry of its term
            if replica.core is not None and replica.core.is_leader:
                await replica.start_command(None)
                break
            await asyncio.sleep(0.005)
        status = await down(replica)
        assert status["role"] == "down" and "apply of entry 1 failed" in status["failure"], status
        assert replica.sm is None or replica.sm.get("k") == ""  # the entry behind it was not applied

    asyncio.run(main())


# --------------------------------------------------------------------------------------------------
# Clerks: "invalid" is an error at once, not a reason to retry
# --------------------------------------------------------------------------------------------------


class _Refusing:
    names = ("s0", "s1")

    def __init__(self) -> None:
        self.calls = 0

    def submit(self, server: int, ops: Any) -> Any:
        import concurrent.futures

        self.calls += 1
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        fut.set_result((INVALID, "operation 0 has unknown kind 9"))
        return type("Ref", (), {"future": lambda self: fut})()

    def unpack(self, value: Any) -> Any:
        return value


def test_sync_clerk_raises_rejected_at_once() -> None:
    from kvraft.clerk import Clerk

    endpoints = _Refusing()

    class Direct(Clerk):
        def _call(self, server: int, ops: Any, wait: float) -> Any:
            return endpoints.unpack(endpoints.submit(server, ops).future().result())

    ck = Direct(endpoints)  # type: ignore[arg-type]
    with pytest.raises(KVRejectedError, match="unknown kind 9") as info:
        ck.put("k", "v")
    assert isinstance(info.value, ValueError) and info.value.server in endpoints.names
    assert endpoints.calls == 1


def test_async_clerk_fails_the_batch_with_rejected() -> None:
    from kvraft.async_clerk import AsyncClerk

    endpoints = _Refusing()

    async def main() -> None:
        ck = AsyncClerk(endpoints, attempt_timeout=1.0)  # type: ignore[arg-type]
        results = await asyncio.gather(ck.put("a", "1"), ck.append("b", "2"), return_exceptions=True)
        assert all(isinstance(r, KVRejectedError) for r in results), results
        await ck.close()

    asyncio.run(main())
    assert endpoints.calls == 1
