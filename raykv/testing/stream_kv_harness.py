"""The kvraft harness on the stream transport (issue 14): the generic tests of ``tests/kvraft_generic.py``
run unchanged against a group started by ``kvraft.start_group(transport="stream")``, with the stream
transport's seeded fault hook standing in for the faulty network actor.

:class:`StreamKVHarness` offers what ``generic_test`` uses of :class:`~raykv.testing.kv_harness.KVHarness`
(``n``, ``seed``, ``make_client``, ``delete_client``, ``partition``, ``connect_all``, ``shutdown_server``,
``start_server``, ``log_size``, ``snapshot_size``, ``elapsed``, ``summary``, ``cleanup``), with the
same meaning:

- **unreliable delivery**: every replica's fault hook (``set_stream_faults({"reliable": False})``, each
  seeded from the harness's seed) and every clerk's (a seeded
  :class:`~actors.stream_faults.StreamFaults` on its :class:`~kvraft.endpoints.StreamEndpoints`): labrpc's
  10 % of requests and 10 % of replies lost, requests held 0-26 ms;
- **partitions**: the ``cut`` sets of the replicas' hooks, built by :mod:`raykv.testing.stream_cuts`
  (server-to-server links only: clerks still reach every server, as in the reference);
- **crashes**: the reference harness's path: ``shutdown_server(i)`` cuts server ``i`` off both ways and
  crashes its Raft peer inside its actor (``crash()``: volatile state lost, a memory storage copied as
  the successor's); ``start_server(i)`` starts it again from that storage (``start(incarnation,
  ("stream", secret, peers))``), still cut off until :meth:`connect_all`. The actor, and so its listener
  and its published address, survive (see ``ReplicaActor.open_stream``); a replica restarted as a new
  actor (``KVGroup.restart_replica``) is :meth:`restart_actor`.

What it does not have: the ledger of the reference harness (``kvraft.start_group`` starts plain
``KVReplica`` actors); every history is still checked for linearizability by the tests. Teardown checks
that no replica's stream handler raised and the reference's time limit. Synchronous; usable from
several threads at once (the generic test's clients make and delete clerks concurrently).
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import ray

from actors.stream_faults import StreamFaults
from raykv.testing.raft_harness import CALL_DEADLINE_S, TEST_TIME_LIMIT_S
from raykv.testing.service_harness import CLERK_ATTEMPT_TIMEOUT_S
from raykv.testing.stream_cuts import clerk_cut, isolate, no_cuts, partition_cuts


def _get(refs: Any) -> Any:
    return ray.get(refs, timeout=CALL_DEADLINE_S)


class StreamKVHarness:
    """``n`` KV servers of one group on the stream transport, faults through its hook (module docstring)."""

    def __init__(
        self,
        n: int,
        unreliable: bool = False,
        maxraftstate: int = -1,
        seed: int | None = None,
        tick_s: float = 0.02,
        storage: str = "memory",
    ) -> None:
        """``storage``: ``"memory"`` (as the reference harness) or ``"durable"`` (needed by
        :meth:`restart_actor`)."""
        import kvraft

        self.n = n
        self.unreliable = unreliable
        self.maxraftstate = maxraftstate
        self.seed = seed if seed is not None else random.SystemRandom().randrange(2**31)
        self.rng = random.Random(self.seed)
        self.lock = threading.Lock()
        self.t0 = time.monotonic()
        self.group = kvraft.start_group(n, transport="stream", storage=storage, maxraftstate=maxraftstate,
                                        tick_s=tick_s, attempt_timeout=CLERK_ATTEMPT_TIMEOUT_S)
        self.cuts = no_cuts(n)
        self.alive = [True] * n
        self.incarnation = [1] * n
        self.clients: dict[int, tuple[Any, StreamFaults]] = {}  # id(clerk) -> (clerk, its fault hook)
        try:
            _get([r.set_stream_faults.remote(self._replica_config(i, seed=True))
                  for i, r in enumerate(self.group.replicas)])
        except BaseException:
            self.group.stop()
            raise

    def _replica_config(self, i: int, seed: bool = False) -> dict[str, Any]:
        config: dict[str, Any] = {"reliable": not self.unreliable, "cut": sorted(self.cuts[i])}
        if seed:
            with self.lock:
                config["seed"] = self.rng.randrange(2**31)
        return config

    @property
    def names(self) -> tuple[str, ...]:
        return self.group.names  # type: ignore[no-any-return]

    # ------------------------------------------------------------------------------------------
    # Clerks
    # ------------------------------------------------------------------------------------------

    def endpoints(self, to: list[int] | None = None) -> Any:
        """Fresh stream endpoints (the group's addresses, secret and handles) with their own seeded
        fault hook: unreliable as the harness, cut from every server not in ``to`` (default: none)."""
        with self.lock:
            fseed = self.rng.randrange(2**31)
        ep = self.group.endpoints
        ep.set_faults(StreamFaults(fseed, reliable=not self.unreliable, cut=clerk_cut(self.names, to)))
        return ep

    def make_client(self, to: list[int] | None = None, **options: Any) -> Any:
        """A synchronous clerk on fresh endpoints; only the servers in ``to`` (default all) reachable."""
        from kvraft.clerk import Clerk

        options.setdefault("attempt_timeout", CLERK_ATTEMPT_TIMEOUT_S)
        ep = self.endpoints(to)
        ck = Clerk(ep, **options)
        with self.lock:
            self.clients[id(ck)] = (ck, ep.faults)
        return ck

    def connect_client(self, ck: Any, to: list[int]) -> None:
        """The clerk reaches the servers in ``to`` as well."""
        faults = self.clients[id(ck)][1]
        faults.configure(cut=faults.cut - {self.names[i] for i in to})

    def disconnect_client(self, ck: Any, frm: list[int]) -> None:
        """The clerk no longer reaches the servers in ``frm``."""
        faults = self.clients[id(ck)][1]
        faults.configure(cut=faults.cut | {self.names[i] for i in frm})

    def delete_client(self, ck: Any) -> None:
        """Forget the clerk and close its connections."""
        from actors.stream_loop import run_blocking

        with self.lock:
            entry = self.clients.pop(id(ck), None)
        if entry is not None:
            run_blocking(lambda: entry[0].endpoints.aclose(), CALL_DEADLINE_S)

    # ------------------------------------------------------------------------------------------
    # Servers and links
    # ------------------------------------------------------------------------------------------

    def _apply_cuts(self, cuts: list[set[int]]) -> None:
        self.cuts = cuts
        replicas = self.group.replicas
        _get([r.set_stream_faults.remote({"cut": sorted(cuts[i])}) for i, r in enumerate(replicas)])

    def partition(self, p1: list[int], p2: list[int]) -> None:
        """Links between servers on the same side on, across sides off (clerks are not touched)."""
        self._apply_cuts(partition_cuts(self.n, p1, p2))

    def connect_all(self) -> None:
        """Every server reaches every other."""
        self._apply_cuts(no_cuts(self.n))

    def shutdown_server(self, i: int) -> None:
        """Cut server ``i`` off both ways, then crash its Raft peer (its actor and listener stay)."""
        self._apply_cuts(isolate(self.cuts, i))
        _get(self.group.replicas[i].crash.remote())
        self.alive[i] = False

    def start_server(self, i: int) -> None:
        """Start server ``i`` again from its storage, on the same listener; it stays cut off until
        :meth:`connect_all` (as the reference's new, disabled ends)."""
        self._apply_cuts(isolate(self.cuts, i))
        self.incarnation[i] += 1
        peers = {j: a for j, a in enumerate(self.group.addresses) if j != i}
        _get(self.group.replicas[i].start.remote(self.incarnation[i], ("stream", self.group.secret, peers)))
        self.alive[i] = True

    def restart_actor(self, i: int) -> None:
        """Kill server ``i``'s actor and start a new one on its storage (``KVGroup.restart_replica``:
        a new listener address, republished to the other replicas; clerks find it through them), then
        give it the harness's fault hook (unreliable as the harness, its current cuts: the new actor runs
        without faults between its start and that call). Durable storage only."""
        self.group.restart_replica(i, timeout=CALL_DEADLINE_S)
        _get(self.group.replicas[i].set_stream_faults.remote(self._replica_config(i, seed=True)))
        self.alive[i] = True

    # ------------------------------------------------------------------------------------------
    # Queries, checks, teardown
    # ------------------------------------------------------------------------------------------

    def leader(self) -> tuple[bool, int]:
        """The first live server whose Raft claims to lead, as ``(True, i)``; ``(False, 0)`` if none."""
        states = _get([r.get_state.remote() for r in self.group.replicas])
        for i, (_, is_leader) in enumerate(states):
            if is_leader and self.alive[i]:
                return True, i
        return False, 0

    def log_size(self) -> int:
        """The largest persisted Raft state (bytes) among the servers."""
        return max(s for s, _ in _get([r.storage_sizes.remote() for r in self.group.replicas]))

    def snapshot_size(self) -> int:
        """The largest snapshot (bytes) among the servers."""
        return max(s for _, s in _get([r.storage_sizes.remote() for r in self.group.replicas]))

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def stream_stats(self) -> list[dict[str, Any]]:
        """Each replica's listener statistics (``status()["stream"]``)."""
        return [st.get("stream") or {} for st in _get([r.status.remote() for r in self.group.replicas])]

    def summary(self) -> str:
        stats = self.stream_stats()
        frames = sum(s.get("frames_in", 0) for s in stats)
        refused = sum(sum(s.get("refused", {}).values()) for s in stats)
        errors = sum(s.get("handler_errors", 0) for s in stats)
        return (f"{self.elapsed():5.1f}s  servers {self.n} on streams  frames in {frames}  "
                f"refused {refused}  handler errors {errors}")

    def cleanup(self) -> None:
        """Check that no stream handler raised and the reference's time limit, then stop the group."""
        try:
            errors = [(i, s.get("handler_errors", 0)) for i, s in enumerate(self.stream_stats())]
            bad = [(i, e) for i, e in errors if e]
            assert not bad, f"stream handlers raised (replica, count): {bad}; see the replicas' logs"
            elapsed = self.elapsed()
            assert elapsed <= TEST_TIME_LIMIT_S, (
                f"test took longer than {TEST_TIME_LIMIT_S:.0f} seconds ({elapsed:.1f} s)")
        finally:
            with self.lock:
                clerks = [ck for ck, _ in self.clients.values()]
            for ck in clerks:
                self.delete_client(ck)
            self.group.stop()
