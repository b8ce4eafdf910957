"""Roles, timers and elections of one Raft peer (Figure 2 "Followers" / "Candidates", §5.2, §5.4.1).

This is a mixin of :class:`raft.node.RaftNode`; the state it reads and writes lives on the node and is
listed below. Nothing here touches a clock: time is the node's tick count.

Invariants kept here:

- election safety: a peer casts at most one vote per term, and the vote is marked for persisting
  (``_hard_state_dirty``) before the reply that carries it can leave the node (the driver persists
  every :class:`~raft.types.Ready` before sending its messages);
- the term never decreases, and a new term clears the vote;
- leader completeness (§5.4.1): a vote goes only to a candidate whose log is at least as up to date;
- a candidate becomes leader only with votes of a majority of the voters of its configuration
  (:mod:`raft.membership`) for its current term; a peer that is not a voter campaigns only while its
  removal is uncommitted.
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

    if TYPE_CHECKING:  # provided by RaftNode and Reconfiguration
        def _send(self, msg: Message) -> None: ...
        def _log(self, topic: str, text: str) -> None: ...
        def _track_members(self) -> None: ...
        def _may_campaign(self) -> bool: ...

    # -- timers ----------------------------------------------------------------------------------

    def _draw_timeout(self) -> int:
        et = self.config.election_ticks
        return self.rng.randrange(et, 2 * et)

    def _reset_election_timer(self) -> None:
        self.election_elapsed = 0
        self.randomized_timeout = self._draw_timeout()

    # -- roles -----------------------------------------------------------------------------------

    def _set_term(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.voted_for = NO_VOTE
            self._hard_state_dirty = True

    def _become_follower(self, term: int, leader: int | None) -> None:
        was = self.role
        self._set_term(term)
        self.role = FOLLOWER
        self.leader_id = leader
        self.votes = set()
        self.progress = {}
        self._heartbeat_due = False
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

    def _become_leader(self) -> None:
        self.role = LEADER
        self.leader_id = self.id
        self.heartbeat_elapsed = 0
        self.progress = {}
        self._track_members()  # a Progress per member (raft.membership)
        me = self.progress[self.id]
        me.match_index = self.log.unstable_from - 1  # what it has persisted (raft.node.ready)
        me.state = REPLICATE
        self._heartbeat_due = True  # announce leadership at once
        if trace.enabled("elect"):
            self._log("elect", f"won the election with votes {sorted(self.votes)}")

    # -- votes -----------------------------------------------------------------------------------

    def _on_request_vote(self, m: RequestVote) -> None:
        can_vote = self.voted_for in (NO_VOTE, m.src)
        up_to_date = ("vote_without_log_check" in self.faults
                      or self.log.is_up_to_date(m.last_log_index, m.last_log_term))
        granted = can_vote and up_to_date and self.role == FOLLOWER
        if granted:
            self.voted_for = m.src
            self._hard_state_dirty = True
            self._reset_election_timer()
        if trace.enabled("elect"):
            why = "" if granted else (f" (already voted for P{self.voted_for})" if not can_vote
                                      else " (its log is behind ours)")
            self._log("elect", f"{'granted' if granted else 'refused'} vote to P{m.src}{why}")
        self._send(RequestVoteReply(self.term, self.id, m.src, granted))

    def _on_request_vote_reply(self, m: RequestVoteReply) -> None:
        if self.role != CANDIDATE or not m.granted:
            return
        self.votes.add(m.src)
        if self.log.configs.current.has_quorum(self.votes):  # only voters count
            self._become_leader()
