"""The sharded KV's harness on the stream transport (issue 14): the scenarios of the sharded reference
tests (``tests/test_shardkv_5.py``) run against a service started through the public API on its default
transport, with the stream transport's seeded fault hook standing in for the faulty network actor.

:class:`StreamShardKVHarness` builds a controller group (``shardctrler.start_group(3,
transport="stream")``) and ``ngroups`` shard groups (``shardkv.start_group(100 + gi, ctrler)``, gids 100,
101, 102, none joined), one secret for the whole service, and offers what the reference scenarios use of
:class:`~raykv.testing.shardkv_harness.ShardKVHarness` (``seed``, ``gid``, ``names``, ``make_client``,
``join`` / ``leave`` / ``joinm`` / ``leavem``, ``query``, ``shutdown_server`` / ``start_server`` and
their group forms, ``set_unreliable``, ``check_logs``, ``total_persisted``, ``move_times``, ``elapsed``,
``summary``, ``cleanup``), with the same meaning:

- **clerks** are :class:`~shardkv.clerk.Clerk` s on the service's
  :class:`~shardkv.stream_router.StreamRouter` (``shardkv.router_for``: servers found by name through
  Ray), each with a seeded :class:`~actors.stream_faults.StreamFaults` of its own; the harness's
  controller clerk (joins, leaves, queries) is the controller group's clerk on its stream endpoints with
  one too;
- **unreliable delivery**: every replica's fault hook (controller and shard groups: Raft traffic, and a
  shard replica's calls to the controller and to other groups) and every clerk's: labrpc's 10 % of
  requests and 10 % of replies lost, requests held 0-26 ms; :meth:`set_unreliable` switches them all;
- **partitions** (:meth:`partition`, :meth:`connect_all`): the ``cut`` sets of one group's replicas
  (:mod:`raykv.testing.stream_cuts`; Raft traffic inside the group; clerks and other groups still
  reach every server, as in the reference); group index :data:`CTRL` is the controller;
- **crashes** (:meth:`shutdown_server`, :meth:`start_server`): the reference harness's path: the
  server cut off from its group and its Raft peer crashed inside its actor (a memory storage copied as
  the successor's); started again from that storage, its links back at once (as the sharded reference
  harness's new ends); the actor, its listener and its published address survive;
- **a replica restarted as a new actor** (:meth:`restart_actor`, durable storage only):
  ``ShardGroup.restart_replica``: a new actor under the same name with a new listener address,
  republished to its group; clerks and other groups find it again by its name through Ray.

What it does not have: the ledger of the reference harness (the groups' replicas are plain
:class:`~shardkv.server.ShardKVReplica` actors) and a second controller service; every history is still
checked for linearizability by the tests. Teardown checks that no replica's stream handler raised and
the reference's time limit. Synchronous; usable from several threads at once.
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from actors.stream_faults import StreamFaults
from raykv.testing.raft_harness import CALL_DEADLINE_S, TEST_TIME_LIMIT_S, get_with_deadline
from raykv.testing.service_harness import CLERK_ATTEMPT_TIMEOUT_S
from raykv.testing.shardkv_harness import GID_BASE, move_times
from raykv.testing.stream_cuts import isolate, no_cuts, partition_cuts
from shardctrler.config import NSHARDS

#: the group index of the controller in :meth:`StreamShardKVHarness.partition` and friends
CTRL = -1

_get = get_with_deadline


class _Members:
    """One Raft group's replicas as the harness sees them: its partition, isolated (crashed) servers,
    incarnations. ``group`` is the running :class:`~actors.service_group.ServiceGroup`."""

    def __init__(self, group: Any) -> None:
        self.group = group
        self.n: int = group.n
        self.partition = no_cuts(self.n)
        self.isolated: set[int] = set()
        self.incarnation = [1] * self.n

    def cuts(self) -> list[set[int]]:
        """The partition's cut sets with every isolated server cut off both ways."""
        cuts = [set(c) for c in self.partition]
        for i in sorted(self.isolated):
            cuts = isolate(cuts, i)
        return cuts


class StreamShardKVHarness:
    """The reference ``make_config(n, unreliable, maxraftstate)`` for the sharded KV on the stream
    transport (see the module docstring). ``storage``: ``"memory"`` (as the reference harness) or
    ``"durable"`` (needed by :meth:`restart_actor`)."""

    def __init__(
        self,
        n: int = 3,
        unreliable: bool = False,
        maxraftstate: int = -1,
        *,
        ngroups: int = 3,
        nshards: int = NSHARDS,
        seed: int | None = None,
        tick_s: float = 0.02,
        storage: str = "memory",
    ) -> None:
        import shardctrler
        import shardkv

        self.n = n
        self.ngroups = ngroups
        self.maxraftstate = maxraftstate
        self.unreliable = unreliable
        self.seed = seed if seed is not None else random.SystemRandom().randrange(2**31)
        self.rng = random.Random(self.seed)
        self.lock = threading.Lock()
        self.t0 = time.monotonic()
        self.ctrler = shardctrler.start_group(3, nshards=nshards, storage=storage, transport="stream",
                                              tick_s=tick_s, attempt_timeout=CLERK_ATTEMPT_TIMEOUT_S)
        self.groups: list[Any] = []
        self._faults: list[StreamFaults] = []  # every clerk's hook (set_unreliable switches them)
        self._routers: list[Any] = []
        self._mck_endpoints: Any = None
        try:
            with ThreadPoolExecutor(ngroups) as pool:  # the groups start at once (each waits for a leader)
                futures = [pool.submit(shardkv.start_group, GID_BASE + gi, self.ctrler, n, storage=storage,
                                       maxraftstate=maxraftstate, tick_s=tick_s) for gi in range(ngroups)]
                errors = []
                for f in futures:
                    try:
                        self.groups.append(f.result())
                    except BaseException as exc:  # the others are stopped below
                        errors.append(exc)
                if errors:
                    raise errors[0]
            self.members = {CTRL: _Members(self.ctrler)}
            self.members.update({gi: _Members(g) for gi, g in enumerate(self.groups)})
            _get([r.set_stream_faults.remote({"reliable": not unreliable, "seed": self._seed()})
                  for m in self.members.values() for r in m.group.replicas])
            self._mck_endpoints = self.ctrler.endpoints
            self._mck_endpoints.set_faults(self._new_faults())
            self.mck = shardctrler.Clerk(self._mck_endpoints, attempt_timeout=CLERK_ATTEMPT_TIMEOUT_S)
        except BaseException:
            self.kill()
            raise

    def _seed(self) -> int:
        with self.lock:
            return self.rng.randrange(2**31)

    def _new_faults(self) -> StreamFaults:
        faults = StreamFaults(self._seed(), reliable=not self.unreliable)
        with self.lock:
            self._faults.append(faults)
        return faults

    def gid(self, gi: int) -> int:
        return self.groups[gi].gid  # type: ignore[no-any-return]

    def names(self, gi: int) -> list[str]:
        return list(self.groups[gi].names)

    # ------------------------------------------------------------------------------------------
    # Clerks
    # ------------------------------------------------------------------------------------------

    def make_client(self, ctrl: Any = None, **options: Any) -> Any:
        """A sync clerk on a stream router of its own with its own seeded fault hook (unreliable as the
        harness). Only the harness's controller service exists on streams: ``ctrl`` must be ``None``."""
        from shardkv.clerk import Clerk
        from shardkv.group import router_for

        if ctrl is not None:
            raise ValueError("the stream harness has one controller service; a second one (Rejection's "
                             "ctljoin) runs on the network harness only")
        options.setdefault("attempt_timeout", CLERK_ATTEMPT_TIMEOUT_S)
        router = router_for(self.ctrler)
        router.set_faults(self._new_faults())
        with self.lock:
            self._routers.append(router)
        return Clerk(router, self.ctrler.names, **options)

    # ------------------------------------------------------------------------------------------
    # Membership
    # ------------------------------------------------------------------------------------------

    def join(self, gi: int) -> None:
        self.joinm([gi])

    def joinm(self, gis: list[int]) -> None:
        """Join the groups ``gis`` in one configuration change."""
        self.mck.join({self.gid(gi): self.names(gi) for gi in gis}, timeout=CALL_DEADLINE_S)

    def leave(self, gi: int) -> None:
        self.leavem([gi])

    def leavem(self, gis: list[int]) -> None:
        self.mck.leave([self.gid(gi) for gi in gis], timeout=CALL_DEADLINE_S)

    def query(self) -> Any:
        return self.mck.query(-1, timeout=CALL_DEADLINE_S)

    # ------------------------------------------------------------------------------------------
    # Servers and links
    # ------------------------------------------------------------------------------------------

    def _apply_cuts(self, gi: int) -> None:
        m = self.members[gi]
        cuts = m.cuts()
        _get([r.set_stream_faults.remote({"cut": sorted(cuts[i])}) for i, r in enumerate(m.group.replicas)])

    def partition(self, gi: int, p1: list[int], p2: list[int]) -> None:
        """Inside group ``gi`` (:data:`CTRL`: the controller), links between servers on the same side on,
        across sides off; crashed servers stay cut off."""
        self.members[gi].partition = partition_cuts(self.members[gi].n, p1, p2)
        self._apply_cuts(gi)

    def connect_all(self, gi: int | None = None) -> None:
        """End the partition of group ``gi`` (default: of every group and the controller)."""
        for g in (self.members if gi is None else [gi]):
            self.members[g].partition = no_cuts(self.members[g].n)
            self._apply_cuts(g)

    def shutdown_server(self, gi: int, i: int) -> None:
        """Cut server ``i`` of group ``gi`` off from its group both ways, then crash its Raft peer (its
        actor and listener stay; calls to it fail at once)."""
        m = self.members[gi]
        m.isolated.add(i)
        self._apply_cuts(gi)
        _get(m.group.replicas[i].crash.remote())

    def start_server(self, gi: int, i: int) -> None:
        """Start server ``i`` of group ``gi`` again from its storage, on the same listener, its links to
        its group back at once."""
        m = self.members[gi]
        m.incarnation[i] += 1
        peers = {j: a for j, a in enumerate(m.group.addresses) if j != i}
        _get(m.group.replicas[i].start.remote(m.incarnation[i], ("stream", m.group.secret, peers)))
        m.isolated.discard(i)
        self._apply_cuts(gi)

    def shutdown_group(self, gi: int) -> None:
        for i in range(self.n):
            self.shutdown_server(gi, i)

    def start_group(self, gi: int) -> None:
        for i in range(self.n):
            self.start_server(gi, i)

    def restart_actor(self, gi: int, i: int) -> None:
        """Kill server ``i`` of group ``gi``'s actor and start a new one under its name on its storage
        (``restart_replica``: a new listener address, republished to its group; clerks and other groups
        find it by name), then give it the harness's fault hook (the new actor runs without faults
        between its start and that call). Durable storage only."""
        m = self.members[gi]
        m.group.restart_replica(i, timeout=CALL_DEADLINE_S)
        m.isolated.discard(i)
        cuts = m.cuts()
        _get(m.group.replicas[i].set_stream_faults.remote(
            {"reliable": not self.unreliable, "seed": self._seed(), "cut": sorted(cuts[i])}))

    def set_unreliable(self, unreliable: bool) -> None:
        """Every replica's and every clerk's streams unreliable (or reliable) from now on."""
        self.unreliable = unreliable
        _get([r.set_stream_faults.remote({"reliable": not unreliable})
              for m in self.members.values() for r in m.group.replicas])
        with self.lock:
            hooks = list(self._faults)
        for faults in hooks:
            faults.configure(reliable=not unreliable)

    # ------------------------------------------------------------------------------------------
    # Queries and checks
    # ------------------------------------------------------------------------------------------

    def leader(self, gi: int) -> int | None:
        """The server of group ``gi`` whose Raft claims to lead (the highest term), or ``None``."""
        states = _get([r.get_state.remote() for r in self.members[gi].group.replicas])
        leaders = [i for i, (_, is_leader) in enumerate(states) if is_leader]
        return max(leaders, key=lambda i: states[i][0]) if leaders else None

    def storage_sizes(self) -> list[list[tuple[int, int]]]:
        """Per shard group, per server: (Raft state bytes, snapshot bytes)."""
        sizes = _get([r.storage_sizes.remote() for g in self.groups for r in g.replicas])
        return [sizes[gi * self.n:(gi + 1) * self.n] for gi in range(self.ngroups)]

    def total_persisted(self) -> int:
        """Raft state + snapshot bytes, summed over every server of every shard group."""
        return sum(raft + snap for sizes in self.storage_sizes() for raft, snap in sizes)

    def check_logs(self) -> None:
        """The reference's ``checklogs``: with maxraftstate >= 0 every server's Raft state is at most
        8 × maxraftstate bytes; with maxraftstate < 0 no server has a snapshot."""
        for gi, sizes in enumerate(self.storage_sizes()):
            for i, (raft, snap) in enumerate(sizes):
                name = self.groups[gi].names[i]
                if self.maxraftstate >= 0:
                    assert raft <= 8 * self.maxraftstate, (
                        f"{name}: persisted Raft state of {raft} bytes > 8 × maxraftstate "
                        f"({8 * self.maxraftstate})")
                else:
                    assert snap == 0, f"{name}: snapshot of {snap} bytes, but maxraftstate is -1"

    def move_times(self) -> list[float]:
        """Seconds each shard move took (see :func:`raykv.testing.shardkv_harness.move_times`)."""
        refs = {name: r.shard_events.remote() for g in self.groups
                for name, r in zip(g.names, g.replicas, strict=True)}
        return move_times(dict(zip(refs, _get(list(refs.values())), strict=True)))

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def stream_stats(self) -> dict[str, dict[str, Any]]:
        """Every replica's listener statistics (``status()["stream"]``), by server name."""
        replicas = [(name, r) for m in self.members.values()
                    for name, r in zip(m.group.names, m.group.replicas, strict=True)]
        stats = _get([r.status.remote() for _, r in replicas])
        return {name: st.get("stream") or {} for (name, _), st in zip(replicas, stats, strict=True)}

    def summary(self) -> str:
        stats = self.stream_stats().values()
        frames = sum(s.get("frames_in", 0) for s in stats)
        errors = sum(s.get("handler_errors", 0) for s in stats)
        with self.lock:
            dropped = sum(f.counts["requests_dropped"] + f.counts["replies_dropped"] for f in self._faults)
        return (f"{self.elapsed():5.1f}s  groups {self.ngroups}×{self.n} + controller on streams  "
                f"frames in {frames}  clerk messages lost {dropped}  handler errors {errors}")

    def cleanup(self) -> None:
        """Check that no stream handler raised and the reference's time limit, then stop everything."""
        try:
            bad = {name: s["handler_errors"] for name, s in self.stream_stats().items()
                   if s.get("handler_errors")}
            assert not bad, f"stream handlers raised (server: count): {bad}; see the replicas' logs"
            elapsed = self.elapsed()
            assert elapsed <= TEST_TIME_LIMIT_S, (
                f"test took longer than {TEST_TIME_LIMIT_S:.0f} seconds ({elapsed:.1f} s)")
        finally:
            self.kill()

    def kill(self) -> None:
        """Close the clerks' connections and stop every group and the controller."""
        from actors.stream_loop import run_blocking

        with self.lock:
            closers = [router.close for router in self._routers]
            self._routers = []
        if self._mck_endpoints is not None:
            closers.append(self._mck_endpoints.aclose)
        for close in closers:
            try:
                run_blocking(close, 5.0)
            except Exception as exc:  # never in the way of stopping the groups
                print(f"closing a clerk's connections failed: {exc!r}")
        for g in self.groups:
            g.stop()
        self.ctrler.stop()
