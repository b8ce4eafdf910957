"""The Raft invariants, checked incrementally after every step of a simulated run.

Every step (a tick, a delivered message, a proposal) is followed by the driver carrying out the
peer's :class:`raft.types.Ready`; :meth:`Invariants.on_ready` looks at the peer right then. Because
the core hands out every changed log entry in ``Ready.entries`` and every commit advance is visible
in ``log.commit``, each check touches only what changed in that step, never whole logs:

``election-safety``
    At most one leader per term. A map term -> leader, updated when a peer becomes leader. O(1).
``leader-append-only``
    A leader never overwrites or deletes entries of its own log during its term: every entry it hands
    out for persisting lies beyond the last index it had at the previous step, its last index never
    shrinks, and the entry object at that index stays the same. O(1).
``log-matching``
    If two logs hold an entry with the same index and term, the logs are identical up to it. Checked
    over the whole history, not only current logs: the first time any peer holds entry ``(i, t)`` we
    record its command and the term of the entry before it; every later copy anywhere must agree on
    both. By induction down to the (committed, hence shared) snapshot boundary this is exactly the
    log-matching property. O(new entries).
``leader-completeness``
    An entry committed in term ``T`` is in the log of the leader of every term after ``T``. The
    checker keeps the committed log (from every peer's commit index as it advances; the term in which
    an index was first seen committed is its *commit term*). When a peer becomes leader of term ``U``
    it must hold the highest committed entry whose commit term is below ``U`` (or have it inside its
    snapshot); with log matching that covers the whole committed prefix. When an index is newly
    committed, every current leader of a later term must hold it. O(1) amortised.
``state-machine-safety``
    No two peers commit or apply different commands at the same index: every commit advance must agree
    with the committed log, every applied entry must be the committed entry at the next index. O(new).
``applied-state``
    A peer's service state equals the replay of the committed commands up to its applied index: the
    service keeps a hash chain over what it applied (or restored from a snapshot), the checker keeps
    the same chain over the committed log, and they must be equal after every apply, every snapshot
    installation and every restart. O(1).
``commit-progress``
    A leader commits every entry of its own term that a majority of the voters of its configuration
    has acknowledged (the leader's commit rule of Figure 2). The checker counts the successful
    AppendEntries / InstallSnapshot replies of the leader's term actually delivered to it (a follower
    replies only after persisting, so an
    acknowledged index is durable) and, after the leader has processed one, requires its commit index
    to cover the highest index of its term acknowledged by a majority. Unlike the liveness windows
    this needs no calm network. O(peers) per delivered reply.
``membership``
    A peer that is not a voter of its own configuration (a learner, a joining or a removed peer) never
    becomes a candidate or a leader, unless its removal is not committed yet as far as it knows (it may
    still be needed to commit it, thesis §4.2.2); a peer's configuration is always the one its log and
    snapshot say (the last configuration entry, committed or not: checked from scratch by the full
    check).
``removed-cannot-disrupt``
    A leader is never deposed by a RequestVote from a peer that is not a voter of its configuration
    (a removed peer that missed its removal keeps campaigning; it must not bump the leader's term).
``liveness``
    Checked by :class:`raft.sim.cluster.SimCluster` (see its docstring and
    :meth:`raft.sim.config.SimConfig.liveness_bound`).

:meth:`Invariants.full_check` re-derives all of the safety properties from scratch from the current
peers (O(peers x log)); the simulator's paranoid mode runs it after every step to cross-check the
incremental checks, and every run ends with it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from raft.membership import ConfChange, Membership, scan
from raft.node import CANDIDATE, LEADER, PRE_CANDIDATE, RaftNode
from raft.sim.service import CounterService, fold
from raft.sim.trace import Event
from raft.types import Entry, Ready, RequestVote

#: The invariants and one line on what each means (used in reports and ``--help``).
INVARIANTS: dict[str, str] = {
    "election-safety": "at most one leader per term",
    "leader-append-only": "a leader never overwrites or deletes entries in its own log",
    "log-matching": "two logs holding an entry with the same index and term are identical up to it",
    "leader-completeness": "an entry committed in term T is in the log of every leader of a later term",
    "state-machine-safety": "no two peers commit or apply different commands at the same index",
    "applied-state": "a peer's service state equals the replay of the committed commands",
    "commit-progress": "a leader commits every entry of its term that a majority of its voters has "
                       "acknowledged",
    "membership": "a non-voter never campaigns or leads (unless its removal is still uncommitted); a "
                  "peer's configuration is the last one in its log (or snapshot)",
    "removed-cannot-disrupt": "a RequestVote from a peer outside the leader's voters never deposes it",
    "no-exception": "neither the core nor the simulator raises (the core's assertions are checks too)",
    "liveness": "once the network is healed and calm and all peers are up, a new command commits "
                "within the liveness bound",
    "read-index": "a ReadIndex read is answered at an index covering every entry committed before it "
                  "was requested (with SimConfig.reads)",
    "read-leadership": "a read is answered only by the peer and term it was requested in, never once a "
                       "later term had elected a leader (with SimConfig.reads)",
}


class Violation(Exception):
    """An invariant was broken. ``seed``, ``tail`` and ``replay`` are filled in by the simulator."""

    def __init__(self, invariant: str, detail: str, tick: int) -> None:
        super().__init__(f"{invariant} violated at tick {tick}: {detail}")
        self.invariant = invariant
        self.detail = detail
        self.tick = tick
        self.seed: int | None = None
        self.tail: str = ""
        self.replay: str = ""

    def __reduce__(self) -> tuple[Any, ...]:  # picklable with every field (seed, tail, replay too)
        return (type(self), (self.invariant, self.detail, self.tick), self.__dict__)

    def report(self) -> str:
        """The multi-line report a person reads: what broke, the last events, how to replay."""
        lines = [f"seed {self.seed}: {self.invariant} violated at tick {self.tick}",
                 f"  {INVARIANTS.get(self.invariant, '')}",
                 f"  {self.detail}"]
        if self.tail:
            lines.append(f"last {self.tail.count(chr(10)) + 1} events:")
            lines.extend("  " + ln for ln in self.tail.splitlines())
        if self.replay:
            lines.append(f"replay: {self.replay}")
        return "\n".join(lines)


def _show(e: Entry | None) -> str:
    return "nothing" if e is None else f"(index {e.index}, term {e.term}, command {e.command!r})"


def _same(a: Entry, b: Entry) -> bool:
    return a is b or (a.term == b.term and a.command == b.command)


class Invariants:
    """Incremental checker. ``nodes`` is the simulator's live list of cores (``None`` = crashed)."""

    def __init__(self, nodes: list[RaftNode | None], emit: Callable[[Event], None],
                 bootstrap: Membership | None = None) -> None:
        n = len(nodes)
        self.nodes = nodes
        self.emit = emit
        self.now = 0
        self.leader_of: dict[int, int] = {}
        self.fresh_leader: tuple[int, int] | None = None  # (peer, term) elected by the last Ready
        #: the highest term that has had a leader so far
        self.newest_leader_term = 0
        self.role: list[str] = ["follower"] * n
        self.term: list[int] = [0] * n
        # leader-append-only: the term the mark was taken in (-1: none), last index, entry there
        self.mark_term: list[int] = [-1] * n
        self.mark_last: list[int] = [0] * n
        self.mark_entry: list[Entry | None] = [None] * n
        # log-matching: (index, term) -> (entry, term of the entry before it)
        self.seen: dict[tuple[int, int], tuple[Entry, int]] = {}
        # the committed log; position 0 is the empty prefix
        self.committed: list[Entry] = [Entry(0, 0, None)]
        self.commit_term: list[int] = [0]
        self.digests: list[int] = [0]
        self.seen_commit: list[int] = [0] * n
        self.elections = 0
        # commit-progress: per leader, the term counted and the highest index each peer acknowledged
        self.ack_term: list[int] = [-1] * n
        self.acked: list[list[int]] = [[0] * n for _ in range(n)]
        # membership: the group's bootstrap configuration, and the last one in the committed log
        self.bootstrap = bootstrap if bootstrap is not None else Membership(frozenset(range(n)))
        self.committed_config = self.bootstrap

    def fail(self, invariant: str, detail: str) -> None:
        raise Violation(invariant, detail, self.now)

    # -- peers coming and going --------------------------------------------------------------

    def on_lost_ready(self, n: int) -> None:
        """Peer ``n`` crashed before persisting its last Ready. If that Ready made it leader (a
        one-voter configuration elects at once, before the term and vote are durable), the leadership
        never existed outside its memory: nothing was persisted, sent or applied. Forget it, so that the
        term may still be won (durably) by someone else."""
        if self.fresh_leader is not None and self.fresh_leader[0] == n:
            term = self.fresh_leader[1]
            if self.leader_of.get(term) == n:
                del self.leader_of[term]
                self.newest_leader_term = max(self.leader_of, default=0)
        self.fresh_leader = None

    def on_crash(self, n: int) -> None:
        self.role[n] = "down"
        self.mark_term[n] = -1

    def on_restart(self, n: int, node: RaftNode, svc: CounterService) -> None:
        self.role[n] = node.role
        self.term[n] = node.term
        self.mark_term[n] = -1
        self.seen_commit[n] = node.log.commit
        self.check_service(n, svc, "restart")

    # -- after every Ready -------------------------------------------------------------------

    def on_ready(self, n: int, node: RaftNode, rd: Ready) -> None:
        self.fresh_leader = None
        role = node.role
        term = node.term
        log = node.log
        if role != self.role[n] or term != self.term[n]:
            self.emit((self.now, "role", n, f"{role} in term {term} (last index {log.last_index}, "
                                            f"term {log.last_term}, commit {log.commit})"))
            self.role[n] = role
            self.term[n] = term
            if role in (PRE_CANDIDATE, CANDIDATE, LEADER) and not self._may_campaign(n, node):
                self.fail("membership", f"P{n} became {role} in term {term} but is not a voter of its "
                                        f"configuration ({node.membership}) nor one whose removal is "
                                        f"uncommitted")
            if role == LEADER:
                self._new_leader(n, node)
                self.fresh_leader = (n, term)
        entries = rd.entries
        if role == LEADER and self.mark_term[n] == term:
            self._check_append_only(n, node, entries)
        if entries:
            self._check_entries(n, node, entries)
        if role == LEADER:
            last = log.last_index
            self.mark_term[n] = term
            self.mark_last[n] = last
            self.mark_entry[n] = log.entry(last) if last > log.snapshot_index else None
        if log.commit > self.seen_commit[n]:
            self._observe_commit(n, node)

    @staticmethod
    def _may_campaign(n: int, node: RaftNode) -> bool:
        """Voters may campaign, and so may a peer removed by a configuration it does not know committed
        (as long as the configuration it knows committed has it vote): thesis §4.2.2."""
        log = node.log
        cfgs = log.configs
        if n in cfgs.current.voters:
            return True
        return cfgs.current_index > log.commit and n in cfgs.at(log.commit).voters

    def _new_leader(self, n: int, node: RaftNode) -> None:
        term = node.term
        self.elections += 1
        other = self.leader_of.get(term)
        if other is not None and other != n:
            self.fail("election-safety", f"P{n} became leader of term {term}, which P{other} already led")
        self.leader_of[term] = n
        self.newest_leader_term = max(self.newest_leader_term, term)
        # The highest committed entry whose commit term is below this term must be in the new log.
        ct = self.commit_term
        i = len(ct) - 1
        while i > 0 and ct[i] >= term:
            i -= 1
        self._require(n, node, i, f"became leader of term {term}")

    def _require(self, n: int, node: RaftNode, i: int, when: str) -> None:
        log = node.log
        if i <= log.snapshot_index:
            return
        want = self.committed[i]
        have = log.entry(i) if i <= log.last_index else None
        if have is None or have.term != want.term:
            self.fail("leader-completeness",
                      f"P{n} {when} but lacks committed entry {_show(want)}, committed in term "
                      f"{self.commit_term[i]}; it holds {_show(have)} (its log ends at "
                      f"{log.last_index}, term {log.last_term})")

    def _check_append_only(self, n: int, node: RaftNode, entries: Sequence[Entry]) -> None:
        ml = self.mark_last[n]
        log = node.log
        if entries and entries[0].index <= ml:
            self.fail("leader-append-only",
                      f"leader P{n} (term {node.term}) rewrote its log from index {entries[0].index} "
                      f"while it held entries up to {ml}")
        if log.last_index < ml:
            self.fail("leader-append-only",
                      f"leader P{n} (term {node.term}) shrank its log from {ml} to {log.last_index}")
        me = self.mark_entry[n]
        if me is not None and ml > log.snapshot_index and log.entry(ml) is not me:
            self.fail("leader-append-only",
                      f"leader P{n} (term {node.term}) replaced {_show(me)} by {_show(log.entry(ml))}")

    def _check_entries(self, n: int, node: RaftNode, entries: Sequence[Entry]) -> None:
        seen = self.seen
        prev_term = node.log.term_at(entries[0].index - 1)
        for e in entries:
            key = (e.index, e.term)
            rec = seen.get(key)
            if rec is None:
                seen[key] = (e, prev_term)  # type: ignore[assignment]
            elif rec[0] is not e and (rec[0].command != e.command or rec[1] != prev_term):
                if rec[0].command != e.command:
                    what = f"command {e.command!r}, but another log had {rec[0].command!r}"
                else:
                    what = f"the entry before it has term {prev_term}, in another log {rec[1]}"
                self.fail("log-matching", f"P{n} holds entry (index {e.index}, term {e.term}) with {what}")
            elif rec[1] != prev_term:
                self.fail("log-matching",
                          f"P{n} holds entry (index {e.index}, term {e.term}) after an entry of term "
                          f"{prev_term}; in another log it follows term {rec[1]}")
            prev_term = e.term

    def _observe_commit(self, n: int, node: RaftNode) -> None:
        log = node.log
        old = self.seen_commit[n]
        new = log.commit
        self.seen_commit[n] = new
        term = node.term
        committed = self.committed
        ct = self.commit_term
        grew = False
        for i in range(old + 1, new + 1):
            if i <= log.snapshot_index:
                if i >= len(committed):
                    self.fail("state-machine-safety",
                              f"P{n} holds a snapshot through {log.snapshot_index} but no peer was seen "
                              f"committing index {i}")
                continue
            e = log.entry(i)
            if i < len(committed):
                r = committed[i]
                if not _same(r, e):
                    self.fail("state-machine-safety",
                              f"P{n} (term {term}) commits {_show(e)} but {_show(r)} was committed at "
                              f"that index in term {ct[i]}")
                if term < ct[i]:
                    ct[i] = term
            else:
                committed.append(e)
                ct.append(term)
                self.digests.append(fold(self.digests[-1], e.command))
                if type(e.command) is ConfChange:
                    self.committed_config = e.command.config
                grew = True
        self.emit((self.now, "commit", n, f"{old} -> {new}"))
        if grew:
            # Every current leader of a later term must hold the newest committed entry.
            top = len(committed) - 1
            for m, other in enumerate(self.nodes):
                if other is not None and m != n and other.role == LEADER and other.term > ct[top]:
                    self._require(m, other, top, f"leads term {other.term}")

    def on_ack(self, n: int, node: RaftNode, src: int, term: int, match: int) -> None:
        """Leader ``n`` has processed (and carried out the Ready of) a success reply from ``src``."""
        if node.role != LEADER or term != node.term:
            return
        acked = self.acked[n]
        if self.ack_term[n] != term:
            self.ack_term[n] = term
            acked[:] = [0] * len(acked)
        if match <= acked[src]:
            return
        acked[src] = match
        log = node.log
        acked[n] = log.last_index
        cfg = node.membership  # only its voters count (the leader too only if it is one)
        q = sorted((acked[v] for v in cfg.voters), reverse=True)[cfg.quorum - 1]
        if q > log.commit and q > log.snapshot_index and log.term_at(q) == term:
            self.fail("commit-progress",
                      f"leader P{n} (term {term}) has acknowledgements up to index {q} (an entry of its "
                      f"term) from a majority {sorted(v for v in cfg.voters if acked[v] >= q)} of its "
                      f"{cfg} but its commit index is {log.commit}")

    def on_leader_message(self, n: int, node: RaftNode, m: Any, was_leader_term: int) -> None:
        """Peer ``n`` led term ``was_leader_term`` and has just processed ``m`` (a RequestVote or a
        reply): a RequestVote from a non-voter, or a reply from a non-member, must not depose it."""
        if node.role == LEADER:
            return
        cfg = node.membership
        outsider = m.src not in (cfg.voters if type(m) is RequestVote else cfg.members)
        if outsider:
            self.fail("removed-cannot-disrupt",
                      f"leader P{n} of term {was_leader_term} was deposed (now term {node.term}) by "
                      f"{type(m).__name__} from P{m.src}, which is not a "
                      f"{'voter' if type(m) is RequestVote else 'member'} of its {cfg}")

    # -- applying ------------------------------------------------------------------------------

    def apply(self, n: int, svc: CounterService, entries: Sequence[Entry]) -> None:
        """Apply ``entries`` to ``svc``, checking each against the committed log, then the state."""
        committed = self.committed
        top = len(committed)
        applied = svc.applied
        for e in entries:
            i = e.index
            if i != applied + 1:
                self.fail("applied-state", f"P{n} applies index {i} right after {applied}")
            if i >= top:
                self.fail("state-machine-safety",
                          f"P{n} applies {_show(e)}, which no peer has committed (committed log ends "
                          f"at {top - 1})")
            r = committed[i]
            if r is not e and (r.term != e.term or r.command != e.command):
                self.fail("state-machine-safety",
                          f"P{n} applies {_show(e)} but {_show(r)} is the committed entry there")
            applied = i
        svc.apply_all(entries)
        if svc.digest != self.digests[svc.applied]:
            self.fail("applied-state", f"P{n}'s service state at index {svc.applied} differs from the "
                                       f"replay of the committed commands")

    def check_service(self, n: int, svc: CounterService, when: str) -> None:
        i = svc.applied
        if i >= len(self.digests):
            self.fail("applied-state", f"P{n}'s service ({when}) is at index {i}, beyond the "
                                       f"committed log ({len(self.digests) - 1})")
        if svc.digest != self.digests[i]:
            self.fail("applied-state", f"P{n}'s service state after {when} (index {i}) differs from "
                                       f"the replay of the committed commands")

    # -- from scratch ----------------------------------------------------------------------------

    def full_check(self, services: Sequence[CounterService | None]) -> None:
        """Re-derive the safety invariants from the current peers alone: O(peers x log)."""
        committed = self.committed
        leaders: dict[int, int] = {}
        chain: dict[tuple[int, int], tuple[Any, int]] = {}
        for n, node in enumerate(self.nodes):
            if node is None:
                continue
            log = node.log
            if node.role == LEADER:
                if node.term in leaders and leaders[node.term] != n:
                    self.fail("election-safety", f"P{n} and P{leaders[node.term]} both lead term "
                                                 f"{node.term}")
                leaders[node.term] = n
                ct = self.commit_term
                for i in range(log.snapshot_index + 1, len(committed)):
                    if ct[i] < node.term:
                        self._require(n, node, i, f"leads term {node.term}")
            prev = log.snapshot_term
            for k, e in enumerate(log.entries):
                if e.index != log.snapshot_index + 1 + k:
                    self.fail("log-matching", f"P{n}'s log is not contiguous at position {k}")
                if e.term < prev:
                    self.fail("log-matching", f"P{n}'s log has term {e.term} after term {prev}")
                key = (e.index, e.term)
                rec = chain.get(key)
                if rec is None:
                    chain[key] = (e.command, prev)
                elif rec != (e.command, prev):
                    self.fail("log-matching", f"two logs hold (index {e.index}, term {e.term}) with "
                                              f"different commands or predecessors")
                if e.index <= log.commit and (e.index >= len(committed)
                                              or not _same(committed[e.index], e)):
                    self.fail("state-machine-safety",
                              f"P{n} has committed {_show(e)}, the committed log disagrees")
                prev = e.term
            if log.commit >= len(committed):
                self.fail("state-machine-safety", f"P{n}'s commit index {log.commit} is beyond the "
                                                  f"committed log the checker saw")
            want = scan(log, node.snapshot_data.config, self.bootstrap)
            if node.membership != want:
                self.fail("membership", f"P{n} uses {node.membership} but its log and snapshot say {want}")
            svc = services[n]
            if svc is not None:
                self.check_service(n, svc, "full check")
