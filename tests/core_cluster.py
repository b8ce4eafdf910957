"""A tiny in-process cluster of Raft cores for unit tests: instant delivery, no Ray, no clock.

Messages are delivered in FIFO order; ``isolate`` / ``heal`` cut peers off. Each peer persists into a
plain in-memory ``PersistentState`` so that ``restart`` rebuilds a core from exactly what was saved.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any

from raft import (
    Entry,
    HardState,
    Message,
    PersistentState,
    RaftConfig,
    RaftNode,
    ReadState,
    Ready,
    Snapshot,
)


class CoreCluster:
    def __init__(self, n: int, seed: int = 0, **config: Any) -> None:
        self.ids = list(range(n))
        self.config = config
        self.rng = random.Random(seed)
        self.saved: dict[int, PersistentState] = {i: PersistentState() for i in self.ids}
        self.nodes: dict[int, RaftNode] = {i: self._make(i) for i in self.ids}
        self.applied: dict[int, list[Entry]] = {i: [] for i in self.ids}
        #: ReadIndex answers and dropped reads each peer handed out (Ready.read_states / reads_dropped)
        self.reads: dict[int, list[ReadState]] = {i: [] for i in self.ids}
        self.reads_dropped: dict[int, list[Any]] = {i: [] for i in self.ids}
        self.cut: set[int] = set()
        self.queue: deque[Message] = deque()
        self.dropped: list[Message] = []

    def _make(self, i: int) -> RaftNode:
        cfg = RaftConfig(peer_id=i, peers=tuple(self.ids), **self.config)
        return RaftNode(cfg, random.Random(self.rng.random()), self.saved[i])

    def persist(self, i: int, rd: Ready) -> None:
        st = self.saved[i]
        snap, entries = st.snapshot, list(st.entries)
        if rd.snapshot is not None:
            s = rd.snapshot
            held = {e.index: e.term for e in entries}
            keep = held.get(s.index) == s.term
            entries = [e for e in entries if e.index > s.index] if keep else []
            snap = s
        if rd.entries:
            first = rd.entries[0].index
            entries = [e for e in entries if e.index < first] + list(rd.entries)
        hs: HardState = rd.hard_state or st.hard_state
        self.saved[i] = PersistentState(hs, snap, tuple(entries))

    def process(self, i: int) -> None:
        node = self.nodes[i]
        while node.has_ready():
            rd = node.ready()
            self.persist(i, rd)
            for m in rd.messages:
                self.queue.append(m)
            if rd.apply_snapshot is not None:
                self.applied[i] = [Entry(0, k, None) for k in range(1, rd.apply_snapshot.index + 1)]
            self.applied[i].extend(rd.committed_entries)
            self.reads[i].extend(rd.read_states)
            self.reads_dropped[i].extend(rd.reads_dropped)

    def deliver_all(self, limit: int = 100_000) -> None:
        for i in self.ids:
            self.process(i)
        n = 0
        while self.queue and n < limit:
            m = self.queue.popleft()
            n += 1
            if m.src in self.cut or m.dst in self.cut:
                self.dropped.append(m)
                continue
            self.nodes[m.dst].step(m)
            self.process(m.dst)

    def tick(self, times: int = 1) -> None:
        for _ in range(times):
            for i in self.ids:
                self.nodes[i].tick()
            self.deliver_all()

    def elect(self, i: int) -> None:
        """Make peer i time out and campaign."""
        node = self.nodes[i]
        while not node.is_leader:
            node.tick()
            self.deliver_all()

    def leader(self) -> int | None:
        leaders = [i for i in self.ids if self.nodes[i].is_leader and i not in self.cut]
        return max(leaders, key=lambda i: self.nodes[i].term) if leaders else None

    def restart(self, i: int) -> None:
        self.nodes[i] = self._make(i)
        snap: Snapshot = self.saved[i].snapshot
        self.applied[i] = [Entry(0, k, None) for k in range(1, snap.index + 1)]
