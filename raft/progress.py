"""What a leader knows about each follower's log, and how it paces replication to it.

A follower's progress is in one of three states (as in etcd's ``tracker``):

- ``PROBE``: the leader does not know where the follower's log diverges. It sends one
  AppendEntries at a time (``paused`` until a reply or the next heartbeat) and backs ``next_index``
  off using the follower's conflict hints.
- ``REPLICATE``: the follower's log matches up to ``match_index``. The leader streams entries
  optimistically, advancing ``next_index`` as it sends, with at most ``max_inflight`` AppendEntries
  carrying entries unacknowledged (a sliding window; this is the pipelining).
- ``SNAPSHOT``: the entries the follower needs were compacted away; an InstallSnapshot is in flight.

Invariant: ``match_index < next_index``; ``match_index`` never decreases within a leader's term.
"""

from __future__ import annotations

from collections import deque

PROBE = "probe"
REPLICATE = "replicate"
SNAPSHOT = "snapshot"


class Progress:
    __slots__ = ("commit_sent", "inflight", "match_index", "next_index", "paused", "read_ack",
                 "recent_active", "state")

    def __init__(self, next_index: int) -> None:
        self.match_index = 0
        self.next_index = next_index
        self.state = PROBE
        self.paused = False
        #: the leader commit index carried by the last AppendEntries sent to this follower
        self.commit_sent = 0
        #: last index carried by each unacknowledged AppendEntries, oldest first (REPLICATE only)
        self.inflight: deque[int] = deque()
        #: the newest ReadIndex round this follower has echoed in a reply of the leader's term
        self.read_ack = 0
        #: whether the follower replied since the last CheckQuorum check (see raft.election)
        self.recent_active = False

    def become_probe(self) -> None:
        self.state = PROBE
        self.paused = False
        self.inflight.clear()
        self.next_index = max(self.next_index, self.match_index + 1)

    def become_replicate(self) -> None:
        self.state = REPLICATE
        self.paused = False
        self.inflight.clear()
        self.next_index = self.match_index + 1

    def become_snapshot(self) -> None:
        self.state = SNAPSHOT
        self.paused = False
        self.inflight.clear()

    def acknowledge(self, index: int) -> bool:
        """The follower's log matches up to ``index``. Returns whether ``match_index`` advanced."""
        while self.inflight and self.inflight[0] <= index:
            self.inflight.popleft()
        if index > self.match_index:
            self.match_index = index
            self.next_index = max(self.next_index, index + 1)
            return True
        return False

    def window_full(self, max_inflight: int) -> bool:
        return len(self.inflight) >= max_inflight

    def __repr__(self) -> str:
        return (f"Progress({self.state}, match={self.match_index}, next={self.next_index}, "
                f"inflight={len(self.inflight)}{', paused' if self.paused else ''})")
