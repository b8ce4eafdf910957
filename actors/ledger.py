"""The test harnesses' ledger: everything every peer ever applied, checked as it arrives.

The reference tester checks each applied command at the moment it is applied against every peer's
record of that index (``checkLogs``). Our peers live in other processes, are crashed and restarted in
place, restore snapshots and are killed outright, so their own memory cannot hold that record. Each
peer the harnesses start (a :class:`LedgerReplica`) reports to one :class:`ApplyLedger` actor
instead: each record is made in the same synchronous step in which the peer acts, and the records go
out in one ``report`` call after that turn of its event loop (after the replies it produced, so
reporting adds nothing to their latency), at most one call per window (the Raft harness: every
turn; the KV harness: 50 ms), in order: Ray runs the calls of one caller to a synchronous actor in
the order they were made.
Nothing in the ledger is ever overwritten or reset, so a crash, a restart, a snapshot restore or a
killed process cannot erase evidence.

What the ledger checks, each record against everything received before it (the first violation is
kept and fails the test; later ones are listed after it):

``state machine safety``
    Every record of an index, from every peer and every incarnation (a peer's own earlier ones
    included), holds the same entry: the same command and, for applied entries, the same term; a
    service's results (a digest) must agree too, since the same entry applied to the same state
    gives the same result. A snapshot that a peer restores counts as applying each command it holds.
``in-order apply``
    Within one incarnation of a peer, applied indexes follow each other with no gap, starting after
    the snapshot it restarted from (or restored since).
``election safety``
    No two peers lead the same term.
``commit rule``
    A leader's commit index lands only on an entry of its own term (Figure 2: a leader commits an
    earlier term's entries only by committing one of its own after them; Figure 8 of the paper shows
    the history that committing them by counting replicas can destroy). The replica applies in the
    same step in which its commit index moves, so an entry that a leader applies at its commit
    index is the one its commit index moved to.
``leader completeness``
    When a peer becomes leader of term ``T`` its log holds every entry that a peer applied while in a
    term below ``T`` (such an entry was committed before ``T``), at the same index with the same term.
``persistence``
    A peer restarted in place comes back with the term it had when it crashed (or a later one), the
    same vote if its term is unchanged, and a log reaching at least its commit index.

A peer killed with ``ray.kill`` loses only the reports it had not yet sent (those of its last window
at most); everything it reported before is kept.

One harness may run several Raft groups (the sharded KV's: a controller and three shard groups);
its peers report to one :class:`LedgerBook` actor, which keeps an :class:`ApplyLedger` per group
(keyed by the group's peer-name prefix, such as ``server-101-``) and the violations of all of them
in the order it saw them.

Planted faults: a peer switches on the core faults in ``spec.extra["faults"]`` at every start;
which ones is the harness's choice (see :mod:`raykv.testing.faults`).
"""

from __future__ import annotations

import asyncio
import hashlib
import pickle
import time
from typing import Any

import ray

from actors.replica import ReplicaActor, ReplicaSpec
from raft import NO_VOTE

#: How many violations the ledger keeps after the first (the first is the one that matters).
MAX_FAILURES = 20

#: By default a peer sends its reports at most once per this many seconds (the first at once);
#: ``spec.extra["report_window_s"]`` overrides it.
REPORT_WINDOW_S = 0.02


#: results up to this many pickled bytes travel to the ledger whole (to be shown on a mismatch)
SHOWN_RESULT_BYTES = 200


def result_digest(result: Any) -> tuple[bytes | None, Any]:
    """A short, process-independent digest of a service's result (``None`` for ``None``), and the
    result itself if it is small (else ``None``), to be shown should results differ."""
    if result is None:
        return None, None
    data = pickle.dumps(result, protocol=5)
    return hashlib.blake2b(data, digest_size=8).digest(), (result if len(data) <= SHOWN_RESULT_BYTES
                                                           else None)


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def _shown(result: Any) -> str:
    return "(a result too large to show)" if result is None else _short(result)


class ApplyLedger:
    """The record of one Raft group and its checks (see the module docstring). Harnesses keep one per
    group in a :class:`LedgerBook` actor; the plain class is usable in-process for unit tests.

    ``prefix`` names peers in messages: ``peer`` gives ``peer3 (incarnation 2)``.
    """

    def __init__(self, prefix: str = "peer") -> None:
        self.prefix = prefix
        self.t0 = time.monotonic()
        # index -> the first record of that index: (command, entry term or None, result digest or
        # None, the result if small, peer, incarnation, how) -- every later record must agree with it.
        self.first: dict[int, tuple[Any, int | None, bytes | None, Any, int, int, str]] = {}
        # index -> every record of it: (peer, incarnation, entry term or None, applier's term)
        self.records: dict[int, list[tuple[int, int, int | None, int | None]]] = {}
        # index -> the lowest term any peer was in when it applied it (bounds the commit term)
        self.min_seen_term: dict[int, int] = {}
        self.peers_at: dict[int, set[int]] = {}
        self.next_index: dict[tuple[int, int], int] = {}  # (peer, incarnation) -> next to apply
        self.leaders: dict[int, tuple[int, int]] = {}  # term -> (peer, incarnation)
        self.crashed: dict[int, tuple[int, int, int, int, int]] = {}  # peer -> its state at a crash
        self.failures: list[str] = []
        self.counts = {"applied": 0, "restored": 0, "starts": 0, "crashes": 0, "elections": 0}

    # -- reports ----------------------------------------------------------------------------------

    def report(self, records: list[tuple]) -> None:
        """Take a peer's records, in the order it produced them, and check each one."""
        for rec in records:
            kind = rec[0]
            if kind == "apply":
                self._apply(*rec[1:])
            elif kind == "snapshot":
                self._snapshot(*rec[1:])
            elif kind == "start":
                self._start(*rec[1:])
            elif kind == "crash":
                self._crash(*rec[1:])
            elif kind == "lead":
                self._lead(*rec[1:])
            else:
                self._fail(f"ledger protocol: unknown record kind {kind!r} in {_short(rec)}")

    def _name(self, peer: int, inc: int) -> str:
        return f"{self.prefix}{peer} (incarnation {inc})"

    def _fail(self, message: str) -> None:
        if len(self.failures) <= MAX_FAILURES:
            self.failures.append(f"[{time.monotonic() - self.t0:6.1f}s] {message}")

    def _record(self, peer: int, inc: int, index: int, command: Any, term: int | None,
                digest: bytes | None, result: Any, seen_term: int | None, how: str) -> None:
        first = self.first.get(index)
        if first is None:
            self.first[index] = (command, term, digest, result, peer, inc, how)
        else:
            c0, t0, d0, r0, p0, i0, how0 = first
            who0 = "it" if p0 == peer else f"{self.prefix}{p0}"
            if c0 != command or (term is not None and t0 is not None and term != t0):
                self._fail(
                    f"state machine safety: {self._name(peer, inc)} {how} {_short(command)} (term "
                    f"{term}) at index {index}, but {who0} had {how0} {_short(c0)} (term {t0}) there "
                    f"(incarnation {i0})")
            elif digest is not None and d0 is not None and digest != d0:
                self._fail(
                    f"diverged state: {self._name(peer, inc)} applied index {index} "
                    f"({_short(command)}) with result {_shown(result)}, but {who0} got {_shown(r0)} "
                    f"(incarnation {i0}): their states had diverged")
            elif d0 is None and digest is not None:
                self.first[index] = (c0, t0 if t0 is not None else term, digest, result, p0, i0, how0)
        self.records.setdefault(index, []).append((peer, inc, term, seen_term))
        self.peers_at.setdefault(index, set()).add(peer)
        if seen_term is not None and seen_term < self.min_seen_term.get(index, seen_term + 1):
            self.min_seen_term[index] = seen_term

    def _apply(self, peer: int, inc: int, index: int, term: int, command: Any, digest: bytes | None,
               result: Any, seen_term: int, leader_commit: bool) -> None:
        """``leader_commit``: the peer applied this entry as leader, at its commit index."""
        self.counts["applied"] += 1
        if leader_commit and term != seen_term:
            self._fail(f"commit rule: {self._name(peer, inc)}, leader of term {seen_term}, moved its "
                       f"commit index to {index}, an entry of term {term} (a leader may commit only "
                       f"entries of its own term by counting replicas)")
        key = (peer, inc)
        expected = self.next_index.get(key)
        if expected is not None and index != expected:
            self._fail(f"in-order apply: {self._name(peer, inc)} applied index {index}, "
                       f"expected {expected}")
        self.next_index[key] = index + 1
        self._record(peer, inc, index, command, term, digest, result, seen_term, "applied")

    def _snapshot(self, peer: int, inc: int, index: int, term: int | None,
                  commands: dict[int, Any] | None) -> None:
        """A peer restored a snapshot covering 1..index (``commands``: what it holds, if known)."""
        self.counts["restored"] += 1
        key = (peer, inc)
        expected = self.next_index.get(key)
        if expected is not None and index < expected - 1:
            self._fail(f"in-order apply: {self._name(peer, inc)} restored a snapshot at index {index} "
                       f"after applying up to {expected - 1}")
        self.next_index[key] = index + 1
        self._snapshot_commands(peer, inc, index, term, commands)

    def _snapshot_commands(self, peer: int, inc: int, index: int, term: int | None,
                           commands: dict[int, Any] | None) -> None:
        if commands is None:
            return
        missing = [i for i in range(1, index + 1) if i not in commands]
        if missing:
            self._fail(f"snapshot contents: {self._name(peer, inc)} restored a snapshot at index "
                       f"{index} that lacks indexes {missing[:5]}")
        for i, command in sorted(commands.items()):
            if i <= index:
                self._record(peer, inc, i, command, term if i == index else None, None, None, None,
                             "restored from a snapshot")

    def _start(self, peer: int, inc: int, term: int, voted_for: int, last_index: int,
               snap_index: int, snap_term: int, commands: dict[int, Any] | None) -> None:
        self.counts["starts"] += 1
        before = self.crashed.pop(peer, None)
        if before is not None:
            t0, v0, commit0, _, inc0 = before
            name = self._name(peer, inc)
            if term < t0:
                self._fail(f"persistence: {name} restarted at term {term}, but it was at term {t0} "
                           f"when it crashed (incarnation {inc0})")
            elif term == t0 and v0 != NO_VOTE and voted_for != v0:
                self._fail(f"persistence: {name} restarted in term {term} having voted for "
                           f"{voted_for if voted_for != NO_VOTE else 'nobody'}, but it had voted for "
                           f"{self.prefix}{v0} in that term before it crashed (incarnation {inc0})")
            if last_index < commit0:
                self._fail(f"persistence: {name} restarted with its log ending at {last_index}, but "
                           f"it had committed up to {commit0} before it crashed (incarnation {inc0})")
        self.next_index[(peer, inc)] = snap_index + 1
        self._snapshot_commands(peer, inc, snap_index, snap_term, commands)

    def _crash(self, peer: int, inc: int, term: int, voted_for: int, commit: int,
               last_index: int) -> None:
        self.counts["crashes"] += 1
        self.crashed[peer] = (term, voted_for, commit, last_index, inc)

    def _lead(self, peer: int, inc: int, term: int, snap_index: int, snap_term: int,
              runs: list[tuple[int, int]], last_index: int) -> None:
        """``runs``: the leader's log after its snapshot as (first index, term) of each run of
        entries of one term, in order; ``last_index``: its last index."""
        self.counts["elections"] += 1
        other = self.leaders.get(term)
        if other is not None and other[0] != peer:
            self._fail(f"election safety: {self._name(peer, inc)} and {self._name(*other)} both "
                       f"led term {term}")
        self.leaders.setdefault(term, (peer, inc))
        # Leader completeness against every index applied by a peer that was in a term below ``term``.
        k = 0
        top = max(self.first, default=0)
        for index in range(max(snap_index, 1), top + 1):
            seen = self.min_seen_term.get(index)
            if seen is None or seen >= term:
                continue
            entry_term = self.first[index][1]
            if entry_term is None:
                continue
            if index == snap_index:
                mine: int | None = snap_term
            elif index > last_index or not runs:
                mine = None
            else:
                while k + 1 < len(runs) and runs[k + 1][0] <= index:
                    k += 1
                mine = runs[k][1]
            if mine != entry_term:
                has = "no entry" if mine is None else f"an entry of term {mine}"
                self._fail(f"leader completeness: {self._name(peer, inc)} became leader of term "
                           f"{term} with {has} at index {index}, where a peer in term {seen} had "
                           f"already applied the entry of term {entry_term}")
                break

    # -- queries ----------------------------------------------------------------------------------

    def failure(self) -> str | None:
        """The first violation, or ``None``."""
        return self.failures[0] if self.failures else None

    def committed(self, index: int) -> tuple[int, Any, str | None]:
        """``(how many peers ever applied index, its command, the first violation or None)``."""
        peers = self.peers_at.get(index)
        first = self.first.get(index)
        return (len(peers) if peers else 0, first[0] if first else None, self.failure())

    def applied_by(self, peer: int) -> dict[int, Any]:
        """Every index ``peer`` ever applied (or restored), with its command."""
        return {i: self.first[i][0] for i, peers in self.peers_at.items() if peer in peers}

    def verdict(self) -> tuple[list[str], dict[str, int]]:
        """Every violation kept (the first is the one that failed the test), and the counts."""
        counts = dict(self.counts, indexes=len(self.first))
        return list(self.failures), counts


class LedgerBook:
    """The ledgers of one harness: an :class:`ApplyLedger` per Raft group, keyed by the group's
    peer-name prefix (``peer``, ``server``, ``ctlr-...-``, ``server-101-``), made on the group's first
    report. Use it as the Ray actor :data:`LedgerBookActor`, one per harness.

    Violations of every group are kept in the order the book saw them (the first fails the test);
    each names its peers with their group's prefix, so it says which group it is about.
    """

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.ledgers: dict[str, ApplyLedger] = {}
        self.failures: list[str] = []

    def ledger(self, group: str) -> ApplyLedger:
        led = self.ledgers.get(group)
        if led is None:
            led = self.ledgers[group] = ApplyLedger(group)
            led.t0 = self.t0  # one clock for every group's messages
        return led

    def report(self, records: list[tuple], group: str = "peer") -> None:
        """A peer of ``group`` reports ``records`` (see :meth:`ApplyLedger.report`)."""
        led = self.ledger(group)
        seen = len(led.failures)
        led.report(records)
        if len(self.failures) <= MAX_FAILURES:
            self.failures.extend(led.failures[seen:])

    def failure(self) -> str | None:
        """The first violation in any group, or ``None``."""
        return self.failures[0] if self.failures else None

    def committed(self, index: int, group: str = "peer") -> tuple[int, Any, str | None]:
        """``group``'s :meth:`ApplyLedger.committed`, with the first violation in any group."""
        count, command, _ = self.ledger(group).committed(index)
        return count, command, self.failure()

    def applied_by(self, peer: int, group: str = "peer") -> dict[int, Any]:
        return self.ledger(group).applied_by(peer)

    def verdict(self) -> tuple[list[str], dict[str, int]]:
        """Every violation kept, in order, and the counts summed over the groups (``groups``: how
        many reported)."""
        counts: dict[str, int] = {"groups": len(self.ledgers)}
        for led in self.ledgers.values():
            for k, v in led.verdict()[1].items():
                counts[k] = counts.get(k, 0) + v
        return list(self.failures), counts


#: The book as a Ray actor. Synchronous, one call at a time: the calls of one peer run in the order
#: it made them, which the in-order check relies on.
LedgerBookActor = ray.remote(num_cpus=0, max_concurrency=1, max_restarts=0)(LedgerBook)


def _log_runs(core: Any) -> tuple[list[tuple[int, int]], int]:
    """The core's log after its snapshot as (first index, term) runs, and its last index."""
    runs: list[tuple[int, int]] = []
    last_term = None
    for e in core.log.entries:
        if e.term != last_term:
            runs.append((e.index, e.term))
            last_term = e.term
    return runs, core.log.last_index


class LedgerReplica(ReplicaActor):
    """A replica that reports to the :class:`LedgerBook` in ``spec.extra["ledger"]``, as a peer of
    the group ``spec.extra["ledger_group"]`` (default ``peer``), and switches on the core faults in
    ``spec.extra["faults"]`` at every start, before the restarted core takes a step.
    Combine it with a service replica by putting it first: ``class X(LedgerReplica, KVReplica)``.

    Reports are collected while ``Ready`` batches are drained and sent in one call after the current
    turn of the event loop, at most once per ``spec.extra["report_window_s"]`` (default
    :data:`REPORT_WINDOW_S`; a crash or a start sends at once, after what is pending). A
    restored snapshot is reported with the commands it holds when the state machine keeps them (the
    Raft recorder's ``log``).
    """

    def __init__(self, spec: ReplicaSpec) -> None:
        super().__init__(spec)
        self._ledger = spec.extra.get("ledger")
        self._ledger_group = str(spec.extra.get("ledger_group", "peer"))
        self._ledger_pending: list[tuple] = []
        self._ledger_flush_scheduled = False
        self._ledger_last_flush = float("-inf")
        self._ledger_window = float(spec.extra.get("report_window_s", REPORT_WINDOW_S))
        self._lead_term = -1

    async def start(self, incarnation: int, transport: tuple) -> None:
        await super().start(incarnation, transport)
        core = self.core
        assert core is not None
        core.faults = frozenset(self.spec.extra.get("faults", ()))
        self._ledger_pending = []
        self._lead_term = -1
        snap = core.snapshot_data
        commands = self._sm_commands() if snap.index > 0 else None
        self._ledger_send([("start", self.spec.peer_id, self.incarnation, core.term,
                            core.voted_for, core.last_index, snap.index, snap.term, commands)])

    async def crash(self) -> None:
        core = self.core
        if core is not None:
            self._ledger_flush()
            self._ledger_send([("crash", self.spec.peer_id, self.incarnation, core.term,
                                core.voted_for, core.commit_index, core.last_index)])
        await super().crash()

    def _ledger_result(self, result: Any) -> Any:
        """What the ledger compares across replicas at an applied index: the entry's result (a
        service may add the state it leaves, see ``HarnessCtrlerReplica``)."""
        return result

    def _on_applied(self, index: int, term: int, command: Any, result: Any) -> None:
        core = self.core
        digest, shown = result_digest(self._ledger_result(result))
        self._ledger_pending.append((
            "apply", self.spec.peer_id, self.incarnation, index, term, command, digest, shown,
            core.term if core is not None else term,
            core is not None and core.is_leader and index == core.commit_index))
        super()._on_applied(index, term, command, result)

    def _on_snapshot_restored(self, index: int) -> None:
        core = self.core
        snap = core.snapshot_data if core is not None else None
        term = snap.term if snap is not None and snap.index == index else None
        self._ledger_pending.append(("snapshot", self.spec.peer_id, self.incarnation, index, term,
                                     self._sm_commands()))
        super()._on_snapshot_restored(index)

    def _drain(self, reply_to: int | None = None) -> list:
        replies = super()._drain(reply_to)
        core = self.core
        if core is not None and core.is_leader and core.term != self._lead_term:
            self._lead_term = core.term
            runs, last = _log_runs(core)
            self._ledger_pending.append((
                "lead", self.spec.peer_id, self.incarnation, core.term,
                core.log.snapshot_index, core.log.snapshot_term, runs, last))
        if self._ledger_pending and not self._ledger_flush_scheduled:
            # Sent after this turn of the event loop (after the replies and answers this step
            # produced: reporting is off their path), and at most once per window: one Ray call
            # costs both sides about 0.5 ms of CPU, which at one call per applied entry and peer
            # slows a sequential KV client by a fifth on two cores.
            self._ledger_flush_scheduled = True
            loop = asyncio.get_running_loop()
            wait = self._ledger_last_flush + self._ledger_window - loop.time()
            if wait > 0:
                loop.call_later(wait, self._ledger_flush)
            else:
                loop.call_soon(self._ledger_flush)
        return replies

    def _sm_commands(self) -> dict[int, Any] | None:
        log = getattr(self.sm, "log", None)
        return dict(log) if isinstance(log, dict) else None

    def _ledger_flush(self) -> None:
        self._ledger_flush_scheduled = False
        if self._ledger_pending:
            pending, self._ledger_pending = self._ledger_pending, []
            self._ledger_send(pending)
            self._ledger_last_flush = asyncio.get_running_loop().time()

    def _ledger_send(self, records: list[tuple]) -> None:
        if self._ledger is not None:
            self._ledger.report.remote(records, self._ledger_group)
