"""Membership change, one server at a time (Raft thesis §4.1), with learners.

A group's **configuration** (:class:`Membership`) is its set of *voters* (they elect leaders and make
up commit quorums) and *learners* (they receive the log, by snapshot where needed, but neither vote
nor count towards any quorum). It changes one step at a time, through the log:

- ``add_learner P``: P joins as a learner (quorums are unchanged);
- ``promote P``: the learner P becomes a voter (the leader refuses until P holds every committed
  entry: it is caught up);
- ``remove P``: the voter or learner P leaves.

Each step is a log entry whose command is a :class:`ConfChange` carrying the resulting configuration.
A peer uses the configuration of the **last configuration entry in its log, committed or not** (or of
its snapshot, or the group's bootstrap configuration, ``RaftConfig.peers``); truncating the entry
reverts it. :class:`ConfigHistory` keeps that per log, incrementally.

Invariants kept here and in the mixin :class:`Reconfiguration`:

- *single-server steps*: two consecutive configurations differ by one voter at most, so every
  majority of the old voters overlaps every majority of the new ones: whichever of the two a peer
  uses, two leaders of one term would need a common voter, who votes once per term;
- *one change in flight*: a leader appends a configuration entry only when its log holds no
  uncommitted one, and only once it has committed an entry of its own term (otherwise a configuration
  entry of an earlier, deposed leader could still commit alongside it: the bug of the original
  single-server algorithm, fixed as in the thesis' errata). Refusals raise :class:`ConfChangeRefused`
  with the reason;
- *quorums from voters only*: elections and the commit index count only voters of the peer's current
  configuration; a leader that is not a voter (it is removing itself) does not count itself and
  steps down once that change is committed;
- *a removed peer cannot disrupt*: a peer that is not a voter of its own configuration does not
  campaign, unless that configuration is not committed yet (as far as it knows) and the committed one
  lets it vote: until its removal commits it may still be needed (thesis §4.2.2: say the leader
  removed itself and lost leadership before the removal committed, and the only remaining voter's log
  is behind: only the removed peer can still be elected, with the remaining voter's vote, to commit its
  removal). A candidate counts only the votes of the voters of its configuration, its own included
  only if it is one of them. And while a peer hears from a live leader (or is the leader) it ignores
  RequestVote from peers that are not voters of its configuration, so a removed peer that missed its
  removal cannot depose the leader by bumping the term;
- *persisted*: configuration entries are log entries; a snapshot records the configuration in force
  at its index (``Snapshot.config``), so a restarted peer recovers its configuration from snapshot
  plus log.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from raft import trace
from raft.election import LEADER
from raft.progress import Progress
from raft.types import AppendEntriesReply, Entry, InstallSnapshotReply, RequestVote, RequestVoteReply

if TYPE_CHECKING:
    from raft.config import RaftConfig
    from raft.log import RaftLog
    from raft.types import Message

ADD_LEARNER = "add_learner"
PROMOTE = "promote"
REMOVE = "remove"
OPS = (ADD_LEARNER, PROMOTE, REMOVE)
_REPLIES = (AppendEntriesReply, InstallSnapshotReply, RequestVoteReply)


class ConfChangeRefused(ValueError):
    """A membership change was refused; the message says why and what to do (nothing was appended)."""


@dataclass(frozen=True, slots=True)
class Membership:
    """A configuration: who votes and who only learns. Invariant: the two sets are disjoint."""

    voters: frozenset[int]
    learners: frozenset[int] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        object.__setattr__(self, "voters", frozenset(self.voters))
        object.__setattr__(self, "learners", frozenset(self.learners))
        both = self.voters & self.learners
        if both:
            raise ValueError(f"peers {sorted(both)} cannot be both voters and learners")

    @property
    def members(self) -> frozenset[int]:
        return self.voters | self.learners

    @property
    def quorum(self) -> int:
        """Votes (or acknowledgements) that make a majority of the voters."""
        return len(self.voters) // 2 + 1

    def is_voter(self, peer: int) -> bool:
        return peer in self.voters

    def has_quorum(self, peers: Iterable[int]) -> bool:
        """Do ``peers`` include a majority of the voters (non-voters are not counted)?"""
        return len(self.voters.intersection(peers)) >= self.quorum

    def quorum_index(self, match: Mapping[int, Progress]) -> int:
        """The highest index that a majority of the voters hold, from the leader's progress.

        A voter without progress (not yet tracked) counts as holding nothing.
        """
        got = sorted((match[p].match_index if p in match else 0 for p in self.voters), reverse=True)
        return got[self.quorum - 1] if got else 0

    def apply(self, op: str, peer: int) -> Membership:
        """The configuration after ``op`` on ``peer``; :class:`ConfChangeRefused` if it makes no sense."""
        if op not in OPS:
            raise ConfChangeRefused(f"unknown membership change {op!r}: expected one of {list(OPS)}")
        if not isinstance(peer, int) or isinstance(peer, bool) or peer < 0:
            raise ConfChangeRefused(f"peer ids are non-negative ints, got {peer!r}")
        if op == ADD_LEARNER:
            if peer in self.members:
                role = "a voter" if peer in self.voters else "a learner"
                raise ConfChangeRefused(f"P{peer} is already {role} of {self}")
            return Membership(self.voters, self.learners | {peer})
        if op == PROMOTE:
            if peer not in self.learners:
                raise ConfChangeRefused(f"only a learner can be promoted; P{peer} is "
                                        f"{'a voter' if peer in self.voters else 'not a member'} "
                                        f"of {self} (add it as a learner first)")
            return Membership(self.voters | {peer}, self.learners - {peer})
        if peer not in self.members:
            raise ConfChangeRefused(f"P{peer} is not a member of {self}")
        if self.voters == {peer}:
            raise ConfChangeRefused(f"P{peer} is the last voter of {self}; add and promote another "
                                    "peer before removing it")
        return Membership(self.voters - {peer}, self.learners - {peer})

    def __str__(self) -> str:
        v = ",".join(map(str, sorted(self.voters)))
        learners = ",".join(map(str, sorted(self.learners)))
        return f"voters {{{v}}}" + (f" learners {{{learners}}}" if learners else "")


@dataclass(frozen=True, slots=True)
class ConfChange:
    """The command of a configuration entry: ``op`` on ``peer``, giving ``config``.

    Services receive it like any committed command (at its index) and should ignore it.
    """

    op: str
    peer: int
    config: Membership

    def __str__(self) -> str:
        return f"{self.op} P{self.peer} -> {self.config}"


def bootstrap(config: RaftConfig) -> Membership:
    """The group's initial configuration: every peer of ``RaftConfig.peers`` votes."""
    return Membership(frozenset(config.peers))


class ConfigHistory:
    """The configurations of one log: the one at the snapshot, then one per configuration entry.

    Invariants: ``changes`` holds ``(index, config)`` for every configuration entry after
    ``base_index`` (the snapshot index), in index order; :attr:`current` is the last of them (or
    ``base``). :class:`raft.log.RaftLog` calls the ``on_*`` methods whenever it changes, so this is
    always exactly what a scan of the log would give (the simulator's full check compares the two).
    """

    __slots__ = ("base", "base_index", "bootstrap", "changes")

    def __init__(self, bootstrap: Membership, base: Membership | None, base_index: int,
                 entries: Sequence[Entry]) -> None:
        self.bootstrap = bootstrap
        self.base = base if base is not None else bootstrap
        self.base_index = base_index
        self.changes: list[tuple[int, Membership]] = []
        self.on_append(entries)

    @property
    def current(self) -> Membership:
        return self.changes[-1][1] if self.changes else self.base

    @property
    def current_index(self) -> int:
        """Index of the entry that set the current configuration (the snapshot index for ``base``)."""
        return self.changes[-1][0] if self.changes else self.base_index

    def at(self, index: int) -> Membership:
        """The configuration in force once the log up to ``index`` is applied."""
        for i, cfg in reversed(self.changes):
            if i <= index:
                return cfg
        return self.base

    def for_snapshot(self, index: int) -> Membership | None:
        """What a snapshot at ``index`` records: the configuration there, ``None`` if the bootstrap one
        (so groups that never change membership write exactly what they wrote before)."""
        cfg = self.at(index)
        return None if cfg == self.bootstrap else cfg

    def on_append(self, entries: Iterable[Entry]) -> None:
        for e in entries:
            if type(e.command) is ConfChange:
                self.changes.append((e.index, e.command.config))

    def on_truncate(self, first: int) -> None:
        """Entries from ``first`` on were deleted: their configurations no longer count."""
        changes = self.changes
        while changes and changes[-1][0] >= first:
            changes.pop()

    def on_compact(self, index: int) -> None:
        """A snapshot now covers everything up to ``index``."""
        self.base = self.at(index)
        self.base_index = index
        self.changes = [c for c in self.changes if c[0] > index]

    def on_reset(self, config: Membership | None, index: int) -> None:
        """The whole log was replaced by a snapshot at ``index`` holding ``config``."""
        self.base = config if config is not None else self.bootstrap
        self.base_index = index
        self.changes = []


def scan(log: RaftLog, snapshot_config: Membership | None, bootstrap_config: Membership) -> Membership:
    """The current configuration of ``log`` from scratch (for checks): O(log)."""
    for e in reversed(log.entries):
        if type(e.command) is ConfChange:
            return e.command.config
    return snapshot_config if snapshot_config is not None else bootstrap_config


class Reconfiguration:
    """Mixin of :class:`raft.node.RaftNode`: proposing changes, and what the leader does about them."""

    # State owned by RaftNode.__init__ (declared here for readers and type checkers).
    config: RaftConfig
    id: int
    term: int
    log: RaftLog
    role: str
    leader_id: int | None
    progress: dict[int, Progress]
    election_elapsed: int
    faults: frozenset[str]

    if TYPE_CHECKING:  # provided by RaftNode, Election and Replication
        def _log(self, topic: str, text: str) -> None: ...
        def _become_follower(self, term: int, leader: int | None) -> None: ...
        def _maybe_commit(self) -> None: ...

    @property
    def membership(self) -> Membership:
        """This peer's current configuration (the last one in its log, committed or not)."""
        return self.log.configs.current

    def propose_conf_change(self, op: str, peer: int) -> tuple[int, int, bool]:
        """Append the configuration entry for ``op`` on ``peer`` if this peer leads.

        Returns ``(index, term, is_leader)`` like :meth:`raft.node.RaftNode.propose` (``index`` -1
        when not leader). A leader raises :class:`ConfChangeRefused` (appending nothing) when the
        change is invalid for the current configuration, while an earlier change is uncommitted, before
        it has committed an entry of its own term, or when promoting a learner that is not caught up.
        The new configuration takes effect at once, on this leader and on every peer that appends it.
        """
        if self.role != LEADER:
            return -1, self.term, False
        log = self.log
        cur = log.configs.current
        new = cur.apply(op, peer)
        pending = log.configs.current_index
        if pending > log.commit and "two_changes_in_flight" not in self.faults:
            raise ConfChangeRefused(
                f"the change at index {pending} (to {cur}) is not committed yet (commit index "
                f"{log.commit}); one change at a time: retry once it commits")
        if log.term_at(log.commit) != self.term:
            raise ConfChangeRefused(
                f"leader P{self.id} has not committed an entry of its term {self.term} yet (commit "
                f"index {log.commit}); propose a command (a no-op will do), then retry")
        if op == PROMOTE:
            pr = self.progress.get(peer)
            have = pr.match_index if pr is not None else 0
            if have < log.commit:
                raise ConfChangeRefused(
                    f"learner P{peer} is not caught up: it holds the log up to {have}, the commit "
                    f"index is {log.commit}; retry once it has caught up")
        entry = Entry(self.term, log.last_index + 1, ConfChange(op, peer, new))
        log.append(entry)
        if trace.enabled("member"):
            self._log("member", f"proposed {entry.command} at index {entry.index}")
        self._track_members()
        self._maybe_commit()  # the new voters may already make a majority for earlier entries
        return entry.index, self.term, True

    def _track_members(self) -> None:
        """Leader: keep a Progress for every member of the current configuration and of the one before
        it: a peer being removed still receives the entry that removes it, and then heartbeats that
        tell it the entry is committed, so that it knows it is out for good and stops campaigning."""
        log = self.log
        cfgs = log.configs
        want = set(cfgs.current.members) | cfgs.at(cfgs.current_index - 1).members
        want.add(self.id)
        progress = self.progress
        nxt = log.last_index + 1
        for p in want:
            if p not in progress:
                progress[p] = Progress(nxt)
        for p in [p for p in progress if p not in want]:
            del progress[p]

    def _after_commit(self, old_commit: int) -> None:
        """Leader: the commit index moved from ``old_commit``. If that committed the current
        configuration and it removed us, step down."""
        cfgs = self.log.configs
        idx = cfgs.current_index
        if not old_commit < idx <= self.log.commit:
            return
        cur = cfgs.current
        if trace.enabled("member"):
            self._log("member", f"configuration {cur} committed at index {idx}")
        if not cur.is_voter(self.id):
            if trace.enabled("member"):
                self._log("member", "stepping down: the committed configuration has no vote for us")
            self._become_follower(self.term, None)

    def _may_campaign(self) -> bool:
        """A voter of our configuration may campaign; so may a peer whose configuration removes it while
        that removal is not committed (as far as we know) and the committed configuration has it vote."""
        log = self.log
        cfgs = log.configs
        if self.id in cfgs.current.voters:
            return True
        return cfgs.current_index > log.commit and self.id in cfgs.at(log.commit).voters

    def _ignores(self, msg: Message) -> bool:
        """Drop ``msg`` before looking at its term? Ignoring a message is always safe (it could have been
        lost); this keeps a removed peer that missed its removal, whose term has grown while it
        campaigned in vain, from deposing a live leader (thesis §4.2.3):

        - a RequestVote from a peer that is not a voter of our configuration, while we have a live
          leader (we lead, or heard from the leader within the minimum election timeout);
        - a leader drops replies carrying a higher term from peers that are not members of its
          configuration (it still replicates to the peers it just removed, so they learn it).

        AppendEntries and InstallSnapshot are never dropped: their sender may lead a configuration
        that we do not know yet.
        """
        t = type(msg)
        cfg = self.log.configs.current
        if t is RequestVote:
            if msg.src in cfg.voters:
                return False
            if self.role == LEADER:
                return True
            return self.leader_id is not None and self.election_elapsed < self.config.election_ticks
        return (self.role == LEADER and msg.term > self.term and msg.src not in cfg.members
                and t in _REPLIES)
