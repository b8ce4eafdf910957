"""A Raft test harness on Ray, equivalent to the reference tester's ``config.go``.

It builds ``n`` replica actors hosting :class:`~actors.statemachine.ApplyRecorder`, wires them through
one :class:`~actors.network.FaultyNetwork` actor, and offers the reference's operations:
``crash1`` / ``start1`` (in-actor crash, fresh copy of storage, new client ends), ``connect`` /
``disconnect``, ``check_one_leader``, ``check_terms``, ``check_no_leader``, ``n_committed``, ``wait``,
``one``, ``log_size`` and the RPC counters. Every failure raises ``AssertionError`` with a message
naming what was expected.

The tester's record of what was applied is a :class:`~actors.ledger.LedgerBook` actor: every peer
reports each entry it applies (and each snapshot it restores, each restart, crash and election) as
it happens, and the ledger checks each report against everything before it (see :mod:`actors.ledger`
for the checks). ``n_committed`` asks the ledger; any violation it has seen fails the next harness
query and the test's teardown. ``faults`` (default: the core faults named in ``RAYKV_PLANT``; see
:mod:`raykv.testing.faults`) are switched on in every peer at every start, for proving that the tests
catch them.

The limits and helpers here (:data:`CALL_DEADLINE_S`, :func:`get_with_deadline`,
:func:`ledger_replica_actor`) are shared by every harness in :mod:`raykv.testing`.

The harness is synchronous (it is driven from a test's thread); it only ever blocks on ``ray.get``
with a deadline, never inside an actor. It can be used from several threads at once (the churn and
concurrent-start tests do).
"""

from __future__ import annotations

import functools
import os
import random
import threading
import time
from collections.abc import Iterable
from typing import Any

import ray

from actors.ledger import LedgerBookActor, LedgerReplica
from actors.network import FaultyNetwork
from actors.replica import ReplicaSpec
from actors.statemachine import ApplyRecorder
from actors.storage import FileStorage, MemoryStorage
from raft.sim.config import FAULTS
from raykv.testing.faults import planted

#: "elections should complete within one second" (the reference's RaftElectionTimeout)
ELECTION_TIMEOUT_S = 1.0
#: the reference's limit on the real time of every Raft test
TEST_TIME_LIMIT_S = 120.0
#: how long any single Ray call from the harness may take before the test fails instead of hanging
CALL_DEADLINE_S = 30.0


def get_with_deadline(refs: Any) -> Any:
    """``ray.get`` that fails the test after :data:`CALL_DEADLINE_S` instead of hanging it."""
    return ray.get(refs, timeout=CALL_DEADLINE_S)


_get = get_with_deadline


def core_faults(faults: Iterable[str] | None) -> frozenset[str]:
    """The core faults to plant: ``faults`` (each must be a core fault), or by default those named in
    ``RAYKV_PLANT`` (names meant for a service harness are left to it)."""
    return planted(faults, FAULTS)


def ledger_replica_actor(cls: type = LedgerReplica, max_concurrency: int = 1000) -> Any:
    """The Ray actor class for a ledger-reporting replica: async, no CPU reserved, no retries."""
    return ray.remote(num_cpus=0, max_concurrency=max_concurrency, max_restarts=0,
                      max_task_retries=0)(cls)


def raise_if_violated(failure: str | None) -> None:
    """Fail the test with the ledger's first violation, if it has one."""
    if failure is not None:
        raise AssertionError(f"the ledger saw a violation: {failure}")


def verdict_or_raise(ledger: Any) -> dict[str, int]:
    """The ledger's verdict: its counts, or an AssertionError naming the first violation (and a few of
    those after it)."""
    failures, counts = _get(ledger.verdict.remote())
    if failures:
        more = f" (and {len(failures) - 1} more: {'; '.join(failures[1:4])})" if len(failures) > 1 else ""
        raise AssertionError(f"the ledger saw a violation: {failures[0]}{more}")
    return counts


def check_at_teardown(ledger: Any, net: Any, elapsed_s: float, who: str) -> None:
    """What every harness checks before it kills its actors: the ledger's verdict, no exception in
    any ``who`` handler (the network counts them), and the reference's time limit."""
    verdict_or_raise(ledger)
    st = _get(net.stats.remote())
    assert st["handler_errors"] == 0, (
        f"{st['handler_errors']} {who} handlers raised (see the ERROR log of raykv.network)")
    assert elapsed_s <= TEST_TIME_LIMIT_S, (
        f"test took longer than {TEST_TIME_LIMIT_S:.0f} seconds ({elapsed_s:.1f} s)")


class RaftHarness:
    """``n`` Raft peers behind a faulty network; the reference ``make_config(n, unreliable, snapshot)``."""

    def __init__(
        self,
        n: int,
        unreliable: bool = False,
        snapshot: bool = False,
        seed: int | None = None,
        tick_s: float = 0.02,
        storage_root: str | None = None,
        faults: Iterable[str] | None = None,
    ) -> None:
        """``storage_root``: keep each peer's state in durable :class:`FileStorage` under
        ``storage_root/peer{i}`` instead of memory (needed to survive :meth:`kill_process`).
        ``faults``: broken core rules to switch on in every peer (see :func:`core_faults`)."""
        self.n = n
        self.faults = core_faults(faults)
        self.seed = seed if seed is not None else random.SystemRandom().randrange(2**31)
        self.rng = random.Random(self.seed)
        self.t0 = time.monotonic()
        self.lock = threading.Lock()
        self.net = FaultyNetwork.remote(seed=self.rng.randrange(2**31))
        self.ledger = LedgerBookActor.remote()
        _get([self.net.set_long_delays.remote(True), self.ledger.failure.remote()])
        self.actor_cls = ledger_replica_actor()
        if storage_root is not None:  # create each peer's storage; its actors open what is there
            for i in range(n):
                FileStorage(os.path.join(storage_root, f"peer{i}"), new=True).close()
        self.specs = [
            ReplicaSpec(
                name=f"peer{i}",
                peer_id=i,
                peers=tuple(range(n)),
                state_machine=functools.partial(ApplyRecorder, 10 if snapshot else None),
                storage=(MemoryStorage if storage_root is None else functools.partial(
                    FileStorage, os.path.join(storage_root, f"peer{i}"), lock_timeout=10.0)),
                tick_s=tick_s,
                seed=self.rng.randrange(2**31),
                # every turn: one() polls the ledger for what was applied, so it must be fresh
                extra={"ledger": self.ledger, "ledger_group": "peer",
                       "faults": tuple(sorted(self.faults)), "report_window_s": 0.0},
            )
            for i in range(n)
        ]
        self.replicas = [self.actor_cls.remote(spec) for spec in self.specs]
        _get([r.ping.remote() for r in self.replicas])
        self.incarnation = [0] * n
        self.connected = [False] * n
        self.alive = [False] * n
        self.process_dead = [False] * n  # its actor process was killed (kill_process)
        # ends[i][j]: the name of peer i's current end to peer j
        self.ends: list[dict[int, str]] = [{} for _ in range(n)]
        for i in range(n):
            self.start1(i)
        for i in range(n):
            self.connect(i)
        if unreliable:
            _get(self.net.set_reliable.remote(False))

    # ------------------------------------------------------------------------------------------
    # Peers and links: crash, restart, connectivity
    # ------------------------------------------------------------------------------------------

    def crash1(self, i: int) -> None:
        """Disconnect peer i, remove it from the network, and kill its Raft (storage survives)."""
        self.disconnect(i)
        _get(self.net.delete_server.remote(f"peer{i}"))
        _get(self.replicas[i].crash.remote())
        self.alive[i] = False

    def start1(self, i: int) -> None:
        """Restart peer i from a copy of its storage, with new ends (not connected: call connect)."""
        self.crash1(i)
        self.incarnation[i] += 1
        inc = self.incarnation[i]
        ends = {j: f"p{i}.{inc}->p{j}" for j in range(self.n) if j != i}
        refs = [self.net.make_end.remote(e, f"peer{j}") for j, e in ends.items()]
        _get(refs)
        self.ends[i] = ends
        _get(self.replicas[i].start.remote(inc, ("network", self.net, ends)))
        _get(self.net.add_server.remote(f"peer{i}", self.replicas[i], inc))
        self.alive[i] = True

    def _live_processes(self) -> list[int]:
        return [i for i in range(self.n) if not self.process_dead[i]]

    def crash_and_restart_all(self) -> None:
        """Crash every peer, then restart and reconnect each from its storage (3D's "crash all")."""
        for i in range(self.n):
            self.crash1(i)
        for i in range(self.n):
            self.start1(i)
            self.connect(i)

    def kill_process(self, i: int) -> None:
        """Really crash peer i: kill its Ray actor's process (only durable storage survives this)."""
        self.disconnect(i)
        _get(self.net.delete_server.remote(f"peer{i}"))
        self.process_dead[i] = True
        ray.kill(self.replicas[i], no_restart=True)
        self.alive[i] = False

    def replace_actor(self, i: int) -> None:
        """Start a brand-new actor for peer i on the same storage (not connected: call connect)."""
        self.replicas[i] = self.actor_cls.remote(self.specs[i])
        _get(self.replicas[i].ping.remote())
        self.process_dead[i] = False
        self.start1(i)

    def _links(self, i: int) -> list[str]:
        """Ends between peer i and every connected peer, in both directions."""
        out = []
        for j in range(self.n):
            if j != i and self.connected[j]:
                out.append(self.ends[i][j])
                out.append(self.ends[j][i])
        return out

    def connect(self, i: int) -> None:
        self.connected[i] = True
        _get(self.net.enable_many.remote(self._links(i), True))

    def disconnect(self, i: int) -> None:
        self.connected[i] = False
        links = [self.ends[i][j] for j in self.ends[i]] + [
            self.ends[j][i] for j in range(self.n) if j != i and i in self.ends[j]
        ]
        _get(self.net.enable_many.remote(links, False))

    def set_unreliable(self, unreliable: bool) -> None:
        _get(self.net.set_reliable.remote(not unreliable))

    def set_long_reordering(self, on: bool) -> None:
        _get(self.net.set_long_reordering.remote(on))

    # ------------------------------------------------------------------------------------------
    # Queries
    # ------------------------------------------------------------------------------------------

    def states(self, peers: list[int]) -> list[tuple[int, bool]]:
        """``(term, is_leader)`` of each of ``peers`` (and a check of the ledger, in the same round)."""
        *answers, failure = _get([self.replicas[i].get_state.remote() for i in peers]
                                 + [self.ledger.failure.remote()])
        raise_if_violated(failure)
        return answers

    def check_one_leader(self) -> int:
        """Wait (up to 10 × ~0.5 s) for exactly one leader among connected peers; return it."""
        for _ in range(10):
            time.sleep(0.45 + self.rng.random() * 0.1)
            peers = [i for i in range(self.n) if self.connected[i]]
            leaders: dict[int, list[int]] = {}
            for i, (term, is_leader) in zip(peers, self.states(peers), strict=True):
                if is_leader:
                    leaders.setdefault(term, []).append(i)
            for term, ls in leaders.items():
                assert len(ls) <= 1, f"term {term} has {len(ls)} (>1) leaders: {ls}"
            if leaders:
                return leaders[max(leaders)][0]
        raise AssertionError("expected one leader, got none")

    def check_terms(self) -> int:
        """All connected peers agree on the term; return it."""
        peers = [i for i in range(self.n) if self.connected[i]]
        terms = {t for t, _ in self.states(peers)}
        assert len(terms) == 1, f"servers disagree on term: {sorted(terms)}"
        return terms.pop()

    def check_no_leader(self) -> None:
        peers = [i for i in range(self.n) if self.connected[i]]
        for i, (_, is_leader) in zip(peers, self.states(peers), strict=True):
            assert not is_leader, f"expected no leader among connected servers, but {i} claims to be leader"

    def n_committed(self, index: int) -> tuple[int, Any]:
        """How many peers have applied ``index`` (ever, crashed or killed ones included, as the
        reference counts), and the command. Any violation the ledger has seen fails the test."""
        count, cmd, failure = _get(self.ledger.committed.remote(index))
        raise_if_violated(failure)
        return count, cmd

    def applied_by(self, i: int) -> dict[int, Any]:
        """Everything peer ``i`` ever applied (or restored from a snapshot): index -> command."""
        return _get(self.ledger.applied_by.remote(i))

    def wait(self, index: int, n: int, start_term: int) -> Any:
        """Wait for at least ``n`` peers to apply ``index``; -1 if the term moved past ``start_term``."""
        to = 0.01
        for _ in range(30):
            nd, _ = self.n_committed(index)
            if nd >= n:
                break
            time.sleep(to)
            if to < 1.0:
                to *= 2
            if start_term > -1:
                for t, _ in self.states(self._live_processes()):
                    if t > start_term:
                        return -1  # someone has moved on; can no longer guarantee that we'll "win"
        nd, cmd = self.n_committed(index)
        assert nd >= n, f"only {nd} decided for index {index}; wanted {n}"
        return cmd

    def one(self, cmd: Any, expected_servers: int, retry: bool) -> int:
        """Get ``cmd`` committed by at least ``expected_servers`` peers (the reference ``one``)."""
        t0 = time.monotonic()
        starts = 0
        while time.monotonic() - t0 < 10.0 and self.elapsed() < TEST_TIME_LIMIT_S:
            index = -1
            for _ in range(self.n):
                starts = (starts + 1) % self.n
                if self.connected[starts]:
                    i1, _, ok = _get(self.replicas[starts].start_command.remote(cmd))
                    if ok:
                        index = i1
                        break
            if index != -1:
                t1 = time.monotonic()
                while time.monotonic() - t1 < 2.0:
                    nd, cmd1 = self.n_committed(index)
                    if nd > 0 and nd >= expected_servers and cmd1 == cmd:
                        took = time.monotonic() - t0
                        if took > 2.0:
                            print(f"[harness {self.elapsed():6.1f}s] one() took {took:.1f}s "
                                  f"(index {index})")
                        return index
                    time.sleep(0.02)
                if not retry:
                    raise AssertionError(f"one({cmd!r}) failed to reach agreement")
            else:
                time.sleep(0.05)
        raise AssertionError(f"one({cmd!r}) failed to reach agreement")

    def start(self, i: int, cmd: Any) -> tuple[int, int, bool]:
        return _get(self.replicas[i].start_command.remote(cmd))

    def start_many(self, starts: list[tuple[int, Any]]) -> list[tuple[int, int, bool]]:
        """Start several commands at once (one round of concurrent calls, with a ledger check)."""
        *answers, failure = _get([self.replicas[i].start_command.remote(cmd) for i, cmd in starts]
                                 + [self.ledger.failure.remote()])
        raise_if_violated(failure)
        return answers

    def log_size(self) -> int:
        """The largest persisted Raft state (bytes) among the peers."""
        return max(s for s, _ in _get([r.storage_sizes.remote() for r in self.replicas]))

    def rpc_total(self) -> int:
        return _get(self.net.get_total_count.remote())

    def rpc_count(self, i: int) -> int:
        return _get(self.net.get_count.remote(f"peer{i}"))

    def bytes_total(self) -> int:
        return _get(self.net.get_total_bytes.remote())

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    # ------------------------------------------------------------------------------------------
    # Checks and teardown
    # ------------------------------------------------------------------------------------------

    def check_applied_logs(self) -> None:
        """The ledger's verdict on everything every peer ever applied (see :mod:`actors.ledger`):
        the first violation, naming both peers by id, the index, both commands and their terms."""
        verdict_or_raise(self.ledger)

    def cleanup(self) -> None:
        """Check the ledger, the peers' handlers and the time limit, then kill every actor."""
        try:
            check_at_teardown(self.ledger, self.net, self.elapsed(), "peer")
        finally:
            self.kill()

    def kill(self) -> None:
        ray.kill(self.net, no_restart=True)  # first, so that it does not report the peers' deaths
        for r in self.replicas:
            ray.kill(r, no_restart=True)
        ray.kill(self.ledger, no_restart=True)

    def summary(self) -> str:
        st, (_, counts) = _get([self.net.stats.remote(), self.ledger.verdict.remote()])
        planted = f"  planted {','.join(sorted(self.faults))}" if self.faults else ""
        return (f"{self.elapsed():5.1f}s  peers {self.n}  rpcs {st.get('total_count')}  "
                f"bytes {st.get('total_bytes')}  ledger {counts}{planted}")
