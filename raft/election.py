"""Roles, timers and elections of one Raft peer (Figure 2 "Followers" / "Candidates", §5.2, §5.4.1),
with PreVote (thesis §9.6) and CheckQuorum (thesis §6.2) when the configuration asks for them.

This is a mixin of :class:`raft.node.RaftNode`; the state it reads and writes lives on the node and is
listed below. Nothing here touches a clock: time is the node's tick count.

Invariants kept here:

- election safety: a peer casts at most one vote per term, and the vote is marked for persisting
  (``_hard_state_dirty``) before the reply that carries it can leave the node (the driver persists
  every :class:`~raft.types.Ready` before sending its messages);
- the term never decreases, and a new term clears the vote;
- leader completeness (§5.4.1): a vote (or pre-vote) goes only to a candidate whose log is at least as
  up to date;
- a candidate becomes leader only with votes of a majority of the voters of its configuration
  (:mod:`raft.membership`) for its current term (pre-votes likewise); a peer that is not a voter
  campaigns only while its removal is uncommitted.

PreVote (``config.pre_vote``). When its election timer fires, a follower becomes a *pre-candidate*:
it asks every peer "would you vote for me in term T+1?" (a RequestVote with ``pre_vote``) without
changing its term or vote. A peer says yes only if the candidate's log is up to date and it has not
heard from a leader for an election timeout (a leader always says no); answering changes nothing on
either side. Only with a majority of yeses does the pre-candidate start a real election. Invariant:
a peer raises its term by campaigning only after a majority has recently lost touch with any leader,
so a peer cut off from the others (or a minority) never raises its term, and when it comes back it
cannot depose a leader that a majority still follows.

CheckQuorum (``config.check_quorum``). A leader counts the followers that replied to it since the last
check; every ``election_ticks`` it checks that, with itself, they form a majority, and steps down if
not. Invariant: a peer that leads for longer than two election timeouts has heard from a majority
within the last one, so a leader cut off into a minority steps down within two election timeouts (and
clerks stuck on it move on). Its companion, the *lease*: a peer that has heard from a leader within
``election_ticks`` (or leads itself) ignores RequestVotes of higher terms entirely (neither adopts the
term nor answers), so a peer that is not cut off from the leader cannot disrupt it.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from raft import trace
from raft.progress import REPLICATE, Progress
from raft.types import NO_VOTE, RequestVote, RequestVoteReply

if TYPE_CHECKING:
    from raft.config import RaftConfig
    from raft.log import RaftLog
    from raft.types import Message

FOLLOWER = "follower"
PRE_CANDIDATE = "pre-candidate"
CANDIDATE = "candidate"
LEADER = "leader"


class Election:
    """Mixin: the election half of :class:`raft.node.RaftNode`."""

    # State owned by RaftNode.__init__ (declared here for readers and type checkers).
    config: RaftConfig
    id: int
    rng: random.Random
    term: int
    voted_for: int
    log: RaftLog
    role: str
    leader_id: int | None
    votes: set[int]
    progress: dict[int, Progress]
    election_elapsed: int
    heartbeat_elapsed: int
    randomized_timeout: int
    faults: frozenset[str]
    _hard_state_dirty: bool
    _heartbeat_due: bool
    _commit_changed: bool
    _commit_notify_due: bool

    if TYPE_CHECKING:  # provided by RaftNode, Reads and Reconfiguration
        def _send(self, msg: Message) -> None: ...
        def _log(self, topic: str, text: str) -> None: ...
        def propose(self, command: object) -> tuple[int, int, bool]: ...
        def _abandon_reads(self) -> None: ...
        def _track_members(self) -> None: ...
        def _may_campaign(self) -> bool: ...

    # -- timers ----------------------------------------------------------------------------------

    def _draw_timeout(self) -> int:
        et = self.config.election_ticks
        return self.rng.randrange(et, 2 * et)

    def _reset_election_timer(self) -> None:
        self.election_elapsed = 0
        self.randomized_timeout = self._draw_timeout()

    def _tick_election(self) -> None:
        """A tick for a follower or (pre-)candidate: campaign when the election timer fires."""
        self.election_elapsed += 1
        if self.election_elapsed >= self.randomized_timeout:
            if self.config.pre_vote:
                self._pre_campaign()
            else:
                self._campaign()

    def _tick_check_quorum(self) -> None:
        """A leader's tick under CheckQuorum: every ``election_ticks``, step down unless a majority
        (itself included) has replied since the previous check."""
        self.election_elapsed += 1
        if self.election_elapsed < self.config.election_ticks:
            return
        self.election_elapsed = 0
        active = set()
        for peer, pr in self.progress.items():
            if peer == self.id or pr.recent_active:
                active.add(peer)
            pr.recent_active = False
        cfg = self.log.configs.current
        if not cfg.has_quorum(active):  # only voters count (raft.membership)
            if trace.enabled("elect"):
                self._log("elect", f"check quorum: only {sorted(active & cfg.voters)} of the voters "
                          f"{sorted(cfg.voters)} heard from in {self.config.election_ticks} ticks; "
                          "stepping down")
            self._become_follower(self.term, None)

    def in_lease(self) -> bool:
        """CheckQuorum's lease: has this peer heard from a leader (or led) within ``election_ticks``?"""
        return (self.config.check_quorum and self.leader_id is not None
                and self.election_elapsed < self.config.election_ticks)

    # -- roles -----------------------------------------------------------------------------------

    def _set_term(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.voted_for = NO_VOTE
            self._hard_state_dirty = True

    def _become_follower(self, term: int, leader: int | None) -> None:
        was = self.role
        if was == LEADER:
            self._abandon_reads()
        self._set_term(term)
        self.role = FOLLOWER
        self.leader_id = leader
        self.votes = set()
        self.progress = {}
        self._heartbeat_due = False
        self._commit_changed = False  # leader-only flags: a follower has nothing to flush
        self._commit_notify_due = False
        self._reset_election_timer()
        if was != FOLLOWER and trace.enabled("elect"):
            self._log("elect", f"{was} -> follower")

    def _campaign(self) -> None:
        if not self._may_campaign():
            self._reset_election_timer()  # a learner, a joining or a removed peer (raft.membership)
            return
        cfg = self.log.configs.current
        self._set_term(self.term + 1)
        self.role = CANDIDATE
        self.leader_id = None
        self.voted_for = self.id
        self._hard_state_dirty = True
        self.votes = {self.id}
        self._reset_election_timer()
        if trace.enabled("elect"):
            self._log("elect", f"election timeout: campaigning at last index "
                      f"{self.log.last_index} term {self.log.last_term}")
        if cfg.has_quorum(self.votes):  # only voters count, ourselves included only if we are one
            self._become_leader()
            return
        for peer in sorted(cfg.voters):
            if peer != self.id:
                self._send(RequestVote(self.term, self.id, peer,
                                       self.log.last_index, self.log.last_term))

    def _pre_campaign(self) -> None:
        """PreVote: ask for votes for term + 1 without changing the term or the vote."""
        if not self._may_campaign():
            self._reset_election_timer()  # a learner, a joining or a removed peer (raft.membership)
            return
        cfg = self.log.configs.current
        self.role = PRE_CANDIDATE
        self.leader_id = None
        self.votes = {self.id}
        self._reset_election_timer()
        if trace.enabled("elect"):
            self._log("elect", f"election timeout: asking for pre-votes for term {self.term + 1} at "
                      f"last index {self.log.last_index} term {self.log.last_term}")
        if cfg.has_quorum(self.votes):
            self._campaign()
            return
        for peer in sorted(cfg.voters):
            if peer != self.id:
                self._send(RequestVote(self.term + 1, self.id, peer, self.log.last_index,
                                       self.log.last_term, pre_vote=True))

    def _become_leader(self) -> None:
        self.role = LEADER
        self.leader_id = self.id
        self.heartbeat_elapsed = 0
        self.election_elapsed = 0  # CheckQuorum's first check comes one election timeout from now
        self.progress = {}
        self._track_members()  # a Progress per member (raft.membership)
        me = self.progress[self.id]
        me.match_index = self.log.unstable_from - 1  # what it has persisted (raft.node.ready)
        me.state = REPLICATE
        self._heartbeat_due = True  # announce leadership at once
        if trace.enabled("elect"):
            self._log("elect", f"won the election with votes {sorted(self.votes)}")
        if self.config.leader_noop:
            self.propose(None)  # an entry of this term, so earlier ones (and reads) can commit

    # -- votes -----------------------------------------------------------------------------------

    def _on_request_vote(self, m: RequestVote) -> None:
        up_to_date = ("vote_without_log_check" in self.faults
                      or self.log.is_up_to_date(m.last_log_index, m.last_log_term))
        if m.pre_vote:
            self._on_pre_vote(m, up_to_date)
            return
        can_vote = self.voted_for in (NO_VOTE, m.src)
        granted = can_vote and up_to_date and self.role in (FOLLOWER, PRE_CANDIDATE)
        if granted:
            if self.role == PRE_CANDIDATE:
                self._become_follower(self.term, None)
            self.voted_for = m.src
            self._hard_state_dirty = True
            self._reset_election_timer()
        if trace.enabled("elect"):
            why = "" if granted else (f" (already voted for P{self.voted_for})" if not can_vote
                                      else " (its log is behind ours)")
            self._log("elect", f"{'granted' if granted else 'refused'} vote to P{m.src}{why}")
        self._send(RequestVoteReply(self.term, self.id, m.src, granted))

    def _on_pre_vote(self, m: RequestVote, up_to_date: bool) -> None:
        """Answer a pre-vote for term ``m.term``; nothing changes here whatever the answer."""
        heard_from_leader = self.role == LEADER or (
            self.leader_id is not None and self.election_elapsed < self.config.election_ticks)
        granted = m.term > self.term and up_to_date and not heard_from_leader
        if trace.enabled("elect"):
            why = "" if granted else (" (we follow a live leader)" if heard_from_leader
                                      else " (its log is behind ours)" if not up_to_date
                                      else f" (we are already in term {self.term})")
            self._log("elect", f"{'granted' if granted else 'refused'} pre-vote for term {m.term} "
                      f"to P{m.src}{why}")
        self._send(RequestVoteReply(m.term if granted else self.term, self.id, m.src, granted,
                                    pre_vote=True))

    def _on_request_vote_reply(self, m: RequestVoteReply) -> None:
        if m.pre_vote:
            if self.role == PRE_CANDIDATE and m.granted and m.term == self.term + 1:
                self.votes.add(m.src)
                if self.log.configs.current.has_quorum(self.votes):  # only voters count
                    self._campaign()
            return
        if self.role != CANDIDATE or not m.granted:
            return
        self.votes.add(m.src)
        if self.log.configs.current.has_quorum(self.votes):  # only voters count
            self._become_leader()
