"""The stream transport wired into the replicas and the clerks, without Ray (issue 14, layer 2).

Three kvraft (and controller) replicas' Python classes in ONE asyncio loop: each opens its stream
listener on 127.0.0.1, they start with ``("stream", secret, {peer: address})``, elect a leader over
their streams, and clerks reach them through :class:`kvraft.endpoints.StreamEndpoints` (asyncio, and
blocking through the process's background stream loop). Also: a replica started with another secret
is refused by its peers (the group still works without it), a peer restarted at a new address is
republished with ``add_peer``, the listener outlives crashes, the whitelist, the fault hook, pickling
of the endpoints, and the status fields. No Ray runtime is started.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import pickle
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from actors.replica import ReplicaSpec
from actors.service_protocol import NO_ANSWER
from actors.stream_auth import new_secret
from kvraft.statemachine import KVStateMachine

N = 3


def _kv_replicas(n: int = N, prefix: str = "kv") -> list[Any]:
    from kvraft.server import KVReplica

    return [KVReplica(ReplicaSpec(name=f"{prefix}-{i}", peer_id=i, peers=tuple(range(n)),
                                  state_machine=functools.partial(KVStateMachine, -1), seed=100 + i))
            for i in range(n)]


async def _open_and_start(replicas: list[Any], secrets: list[bytes]) -> list[tuple[str, int]]:
    """Open every listener first, then start each replica with the others' addresses (the group
    shell's order, as over Ray)."""
    addresses = [await r.open_stream(s, "127.0.0.1") for r, s in zip(replicas, secrets, strict=True)]
    for i, r in enumerate(replicas):
        await r.start(1, ("stream", secrets[i], {j: a for j, a in enumerate(addresses) if j != i}))
    return addresses


async def _leader(replicas: list[Any], timeout: float = 10.0) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        leaders = [i for i, r in enumerate(replicas) if r.core is not None and r.core.is_leader]
        if leaders:
            return leaders[0]
        await asyncio.sleep(0.01)
    raise AssertionError(f"no leader after {timeout} s: {[r.core and r.core.role for r in replicas]}")


async def _stop(replicas: list[Any]) -> None:
    for r in replicas:
        await r.crash()
    for r in replicas:
        await r.close_stream()


class _Handle:
    """Stands in for a replica's Ray actor handle in :class:`StreamEndpoints`' lookups:
    ``handle.stream_peers.remote()`` runs the replica's method on the running loop and returns what
    looks like an ObjectRef (``future()`` is a concurrent future)."""

    def __init__(self, replica: Any) -> None:
        self.replica = replica
        self.lookups = 0

    @property
    def stream_peers(self) -> Any:
        handle = self

        class _Method:
            def remote(self) -> Any:
                handle.lookups += 1
                fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
                task = asyncio.get_running_loop().create_task(handle.replica.stream_peers())
                task.add_done_callback(lambda t: fut.set_result(t.result()))
                return type("Ref", (), {"future": lambda self: fut})()

        return _Method()


def _run(main: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(main(), 60))


def test_three_kv_replicas_over_streams_serve_async_and_sync_clerks() -> None:
    from kvraft.async_clerk import AsyncClerk
    from kvraft.clerk import Clerk
    from kvraft.endpoints import StreamEndpoints

    secret = new_secret()

    async def main() -> None:
        replicas = _kv_replicas()
        addresses = await _open_and_start(replicas, [secret] * N)
        assert all(a[0] == "127.0.0.1" and a[1] > 0 for a in addresses)
        await _leader(replicas)
        names = tuple(r.spec.name for r in replicas)
        endpoints = StreamEndpoints(addresses, secret, names)
        ck = AsyncClerk(endpoints, attempt_timeout=1.0)
        await ck.put("a", "1", timeout=10)
        await asyncio.gather(*(ck.append("b", f"{i};") for i in range(300)))
        assert ck.calls < 60, f"{ck.calls} calls for 301 operations: the batches did not form"
        assert await ck.get("b", timeout=10) == "".join(f"{i};" for i in range(300))

        # a blocking clerk, from another thread (its calls run on the background stream loop),
        # with endpoints that went through pickle (as they do into a Ray task)
        sync_ep = pickle.loads(pickle.dumps(endpoints))
        assert sync_ep.addresses == endpoints.addresses and sync_ep.names == names

        def blocking() -> str:
            sck = Clerk(sync_ep, attempt_timeout=1.0)
            sck.put("s", "x", timeout=10)
            sck.append("s", "y", timeout=10)
            return sck.get("s", timeout=10)

        assert await asyncio.get_running_loop().run_in_executor(None, blocking) == "xy"
        assert await ck.get("s", timeout=10) == "xy"

        # the replicas' status: the transport, the listener's address and counters
        st = await replicas[0].status()
        assert st["transport"] == "stream"
        assert tuple(st["stream"]["address"]) == addresses[0]
        assert st["stream"]["authenticated"] >= 1 and st["stream"]["frames_in"] > 0, st["stream"]
        await ck.close()
        await endpoints.aclose()
        await _stop(replicas)

    _run(main)


def test_the_listener_outlives_crashes_and_a_restarted_peer_is_republished() -> None:
    from kvraft.async_clerk import AsyncClerk
    from kvraft.endpoints import StreamEndpoints

    secret = new_secret()

    async def main() -> None:
        replicas = _kv_replicas(prefix="kvr")
        addresses = await _open_and_start(replicas, [secret] * N)
        await _leader(replicas)
        handles = [_Handle(r) for r in replicas]
        ck = AsyncClerk(StreamEndpoints(addresses, secret, tuple(r.spec.name for r in replicas), handles),
                        attempt_timeout=0.5)
        await ck.put("k", "1", timeout=10)
        # crash and restart every replica: the listeners stay where they were (open_stream is idempotent)
        for r in replicas:
            await r.crash()
        for i, r in enumerate(replicas):
            assert await r.open_stream(secret) == addresses[i]
            await r.start(2, ("stream", secret, {j: a for j, a in enumerate(addresses) if j != i}))
        assert await ck.get("k", timeout=10) == "1"
        with pytest.raises(ValueError, match="another secret"):
            await replicas[0].open_stream(new_secret())

        # replica 2 "moves": a new object on the same storage, with a new listener; the others learn
        # its new address through add_peer, the clerk through new endpoints
        old = replicas[2]
        await old.crash()
        await old.close_stream()
        from kvraft.server import KVReplica

        moved = KVReplica(old.spec)
        moved.storage = old.storage  # the same (memory) storage, as a durable one on the same node
        new_address = await moved.open_stream(secret, "127.0.0.1")
        assert new_address != addresses[2]
        for r in replicas[:2]:
            await r.add_peer(2, new_address)
            assert (await r.stream_peers())[2] == new_address
        await moved.start(3, ("stream", secret, {0: addresses[0], 1: addresses[1]}))
        replicas[2] = moved
        # only replicas 1 and 2 are up: a write commits only if 2 is reached at its new address
        await replicas[0].crash()
        ck2 = AsyncClerk(StreamEndpoints([addresses[0], addresses[1], new_address], secret,
                                         tuple(r.spec.name for r in replicas)), attempt_timeout=0.5)
        await ck2.put("k", "2", timeout=15)
        assert await ck2.get("k", timeout=10) == "2"
        # the clerk made before the move finds replica 2 by asking the replicas (the old actor knows
        # nothing any more; a crashed one still knows what add_peer told it)
        probe = ((0, "k", None, 4242, 1),)
        for _ in range(200):
            if isinstance(await ck.endpoints.acall(2, probe, 0.5), tuple):
                break
            await asyncio.sleep(0.01)
        assert ck.endpoints.addresses[2] == new_address and sum(h.lookups for h in handles) >= 2
        await ck.put("k", "3", timeout=15)
        assert await ck2.get("k", timeout=10) == "3"
        await ck.close()
        await ck2.close()
        await _stop(replicas)

    _run(main)


def test_a_replica_with_the_wrong_secret_is_refused_by_its_peers() -> None:
    from kvraft.async_clerk import AsyncClerk
    from kvraft.endpoints import StreamEndpoints
    from kvraft.errors import KVTimeoutError

    secret, wrong = new_secret(), new_secret()

    async def main() -> None:
        replicas = _kv_replicas(prefix="kvw")
        addresses = await _open_and_start(replicas, [secret, secret, wrong])
        await _leader(replicas)
        names = tuple(r.spec.name for r in replicas)
        ck = AsyncClerk(StreamEndpoints(addresses, secret, names), attempt_timeout=0.5)
        await ck.put("k", "v", timeout=10)  # replicas 0 and 1 are a majority
        # heartbeats go to replica 2 and are refused, and it campaigns: both ends refuse the other
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while True:
            refused = [sum((await r.status())["stream"]["refused"].values()) for r in replicas]
            if refused[2] > 0 and refused[0] + refused[1] > 0:
                break
            assert loop.time() < deadline, f"connections refused per replica: {refused}"
            await asyncio.sleep(0.02)
        # replica 2 never got a message in: every connection to or from it failed the handshake
        assert replicas[2].core is not None and replicas[2].core.log.last_index == 0
        assert not replicas[2].core.is_leader
        assert (await replicas[2].status())["stream"]["authenticated"] == 0
        # a clerk with the wrong secret gets nowhere (never an answer from any server)
        bad = AsyncClerk(StreamEndpoints(addresses, wrong, names), attempt_timeout=0.2)
        with pytest.raises(KVTimeoutError):
            await bad.get("k", timeout=1.0)
        assert await ck.get("k", timeout=10) == "v"
        await ck.close()
        await bad.close()
        await _stop(replicas)

    _run(main)


def test_the_listener_serves_deliver_and_the_service_rpc_only() -> None:
    from shardctrler.server import CtrlerReplica
    from shardctrler.statemachine import CtrlerStateMachine

    secret = new_secret()

    async def main() -> None:
        replica = CtrlerReplica(ReplicaSpec(name="ctl-0", peer_id=0, peers=(0,),
                                            state_machine=functools.partial(CtrlerStateMachine, 10, -1)))
        first, second = await asyncio.gather(replica.open_stream(secret, "127.0.0.1"),
                                             replica.open_stream(secret, "127.0.0.1"))
        assert first == second == await replica.stream_address(), "concurrent opens make one listener"
        assert await replica._serve_stream("status", b"") is None  # not a stream RPC
        assert await replica._serve_stream("rpc", b"") is None
        assert await replica._serve_stream("ctrl", pickle.dumps(())) is None  # down: no answer
        await replica.start(1, ("stream", secret, {}))
        await _leader([replica])
        reply = pickle.loads(await replica._serve_stream("ctrl", pickle.dumps(((4, -1, 7, 1),))))
        assert reply[0] == "ok" and reply[1][0].num == 0
        assert pickle.loads(await replica._serve_stream("ctrl", b"not a pickle"))[0] == "invalid"
        with pytest.raises(ValueError, match="stream address"):
            await replica.add_peer(1, ("127.0.0.1", "not a port"))
        await _stop([replica])

    _run(main)


def test_a_controller_group_over_streams_and_the_fault_hook() -> None:
    from shardctrler.clerk import Clerk
    from shardctrler.endpoints import StreamEndpoints
    from shardctrler.server import CtrlerReplica
    from shardctrler.statemachine import CtrlerStateMachine

    secret = new_secret()

    async def main() -> None:
        replicas = [CtrlerReplica(ReplicaSpec(name=f"ctl-{i}", peer_id=i, peers=tuple(range(N)),
                                              state_machine=functools.partial(CtrlerStateMachine, 10, -1),
                                              seed=7 + i))
                    for i in range(N)]
        addresses = await _open_and_start(replicas, [secret] * N)
        leader = await _leader(replicas)
        endpoints = StreamEndpoints(addresses, secret, tuple(r.spec.name for r in replicas))
        loop = asyncio.get_running_loop()

        def blocking() -> int:
            ck = Clerk(endpoints, attempt_timeout=1.0)
            ck.join({1: ["a", "b", "c"]}, timeout=10)
            return ck.query(timeout=10).num

        assert await loop.run_in_executor(None, blocking) == 1
        # the fault hook: cut the leader off from both followers (its own transport), so it cannot
        # commit; CheckQuorum deposes it and the other two elect a new leader
        followers = [i for i in range(N) if i != leader]
        await replicas[leader].set_stream_faults({"cut": followers, "seed": 1})
        for i in followers:
            await replicas[i].set_stream_faults({"cut": [leader], "seed": 2 + i})
        deadline = loop.time() + 10
        while loop.time() < deadline:
            if any(replicas[i].core.is_leader for i in followers):
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the majority side elected no leader")

        def blocking_join() -> int:
            ck = Clerk(endpoints, attempt_timeout=0.5)
            ck.join({2: ["d", "e", "f"]}, timeout=15)
            return ck.query(timeout=10).num

        assert await loop.run_in_executor(None, blocking_join) == 2
        for r in replicas:
            await r.set_stream_faults(None)
        await _stop(replicas)

    _run(main)


def test_stream_endpoints_answer_no_answer_and_none_and_check_their_input() -> None:
    from kvraft.endpoints import StreamEndpoints

    secret = new_secret()
    with pytest.raises(ValueError, match="one per server"):
        StreamEndpoints([("127.0.0.1", 1)], secret, ("a", "b"))
    with pytest.raises(ValueError, match="stream address"):
        StreamEndpoints([("127.0.0.1", 0)], secret, ("a",))

    async def main() -> None:
        # a listener that never answers (a server whose handler waits forever) and a closed port
        from actors.stream_server import StreamServer

        never = asyncio.Event()

        async def handler(method: str, payload: bytes) -> bytes | None:
            await never.wait()
            return None

        server = StreamServer(handler, secret, host="127.0.0.1")
        silent = await server.start()
        closed = StreamServer(handler, secret, host="127.0.0.1")
        gone = await closed.start()
        await closed.close()
        ep = StreamEndpoints([silent, gone], secret, ("silent", "gone"))
        assert await ep.acall(0, (), 0.2) == NO_ANSWER
        assert await ep.acall(1, (), 0.5) is None
        await ep.aclose()
        never.set()
        await server.close()

    _run(main)
    assert threading.active_count() >= 1


def test_kv_over_unreliable_and_partitioned_streams_stays_linearizable() -> None:
    """The fault hook on every replica and every clerk (10 % of requests and replies lost, short
    delays), then the leader cut off from the others for a while, then healed: the clerks' history
    is linearizable and the service makes progress in every phase but the cut-off leader's."""
    import random

    from actors.stream_faults import StreamFaults
    from kvraft.async_clerk import AsyncClerk
    from kvraft.endpoints import StreamEndpoints
    from kvraft.errors import KVTimeoutError
    from linearizability import KVModel, Recorder, Verdict, check

    secret = new_secret()
    rec = Recorder()
    done_ops: list[int] = []

    async def main() -> None:
        replicas = _kv_replicas(prefix="kvu")
        addresses = await _open_and_start(replicas, [secret] * N)
        for i, r in enumerate(replicas):
            await r.set_stream_faults({"reliable": False, "seed": 10 + i})
        await _leader(replicas)
        names = tuple(r.spec.name for r in replicas)
        stop = asyncio.Event()

        async def client(c: int) -> None:
            rng = random.Random(c)
            ep = StreamEndpoints(addresses, secret, names, faults=StreamFaults(100 + c, reliable=False))
            ck = AsyncClerk(ep, attempt_timeout=0.3, retry_pause=0.02)
            j = 0
            while not stop.is_set():
                key, kind = f"k{rng.randrange(3)}", rng.choice(("get", "put", "append"))
                value = f"x{c}.{j};"
                with rec.operation(c, (kind, key) if kind == "get" else (kind, key, value)) as op:
                    try:
                        if kind == "get":
                            op.output = await ck.get(key, timeout=2.0)
                        elif kind == "put":
                            await ck.put(key, value, timeout=2.0)
                        else:
                            await ck.append(key, value, timeout=2.0)
                        done_ops.append(c)
                    except KVTimeoutError:
                        op.unknown()
                j += 1
            await ck.close()
            await ep.aclose()

        tasks = [asyncio.get_running_loop().create_task(client(c)) for c in range(4)]
        await asyncio.sleep(1.0)  # phase 1: unreliable
        before_cut = len(done_ops)
        leader = await _leader(replicas)
        others = [i for i in range(N) if i != leader]
        await replicas[leader].set_stream_faults({"cut": others})
        for i in others:
            await replicas[i].set_stream_faults({"cut": [leader]})
        await asyncio.sleep(1.5)  # phase 2: the old leader is cut off; the other two go on
        during_cut = len(done_ops) - before_cut
        for r in replicas:
            await r.set_stream_faults({"cut": []})
        await asyncio.sleep(1.0)  # phase 3: healed, still unreliable
        stop.set()
        await asyncio.gather(*tasks)
        print(f"operations completed: {before_cut} unreliable, {during_cut} with the leader cut off, "
              f"{len(done_ops)} in all")
        assert before_cut > 0 and during_cut > 0 and len(done_ops) > before_cut + during_cut
        await _stop(replicas)

    _run(main)
    history = rec.history()
    t = time.monotonic()
    result = check(history, KVModel(), timeout=20.0)
    print(f"{len(history)} operations: {result.verdict} in {time.monotonic() - t:.2f} s")
    assert result.verdict is Verdict.LINEARIZABLE, f"{len(history)} operations: {result.verdict}"
