"""A virtual network with a virtual clock: seeded loss, duplication, delay, reordering, partitions.

Messages are put in per-tick buckets: a message sent at tick ``t`` with delay ``d`` (``d >= 1``) is
handed out at tick ``t + d``, after every message already due at that tick, so random delays reorder
messages and a message sent while delivering never arrives in the same tick. Within a bucket the order
is the order of sending, so the whole schedule is a function of the seed.

Reachability is a matrix ``reach[src][dst]``; a partition flips entries to ``False`` (it may be
asymmetric, and need not be transitive) and is checked when a message is *delivered*, so messages in
flight across a new partition are lost, as on a real network. Crashed receivers are checked by the
cluster, not here.

Invariants: ``now`` never decreases; no bucket older than ``now`` is left behind (the cluster drains
each tick's bucket in that tick); every sent message is counted exactly once as lost or queued (a
duplicate is counted as an extra queued message).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from raft.sim.config import Profile
from raft.sim.trace import Event
from raft.types import Message


class VirtualNetwork:
    __slots__ = (
        "buckets", "delay_max", "drop", "dup", "emit", "long_delay_max", "long_delay_p", "n", "now",
        "reach", "rng", "stats",
    )

    def __init__(self, n: int, rng: random.Random, emit: Callable[[Event], None]) -> None:
        self.n = n
        self.rng = rng
        self.emit = emit
        self.now = 0
        self.buckets: dict[int, list[Message]] = {}
        self.reach: list[list[bool]] = [[True] * n for _ in range(n)]
        self.drop = 0.0
        self.dup = 0.0
        self.delay_max = 1
        self.long_delay_p = 0.0
        self.long_delay_max = 1
        self.stats = {"sent": 0, "lost": 0, "duplicated": 0, "cut": 0}

    def configure(self, drop: float, dup: float, delay_max: int, long_delay_p: float = 0.0,
                  long_delay_max: int = 1) -> None:
        """Change the fault rates for messages sent from now on (messages in flight keep theirs)."""
        self.drop, self.dup, self.delay_max = drop, dup, max(1, delay_max)
        self.long_delay_p, self.long_delay_max = long_delay_p, max(1, long_delay_max)

    def apply_profile(self, p: Profile) -> None:
        self.configure(p.drop, p.dup, p.delay_max, p.long_delay_p, p.long_delay_max)

    def calm(self, delay_max: int) -> None:
        """A healthy network: nothing lost or duplicated, every message within ``delay_max`` ticks."""
        self.configure(0.0, 0.0, delay_max)
        self.heal()

    # -- sending ---------------------------------------------------------------------------------

    def _delay(self) -> int:
        r = self.rng.random
        if self.long_delay_p and r() < self.long_delay_p:
            return 1 + int(r() * self.long_delay_max)
        return 1 + int(r() * self.delay_max)

    def send(self, m: Message) -> None:
        self.stats["sent"] += 1
        r = self.rng.random
        if self.drop and r() < self.drop:
            self.stats["lost"] += 1
            self.emit((self.now, "drop", m.src, m))
            return
        buckets = self.buckets
        due = self.now + self._delay()
        b = buckets.get(due)
        if b is None:
            buckets[due] = [m]
        else:
            b.append(m)
        if self.dup and r() < self.dup:
            self.stats["duplicated"] += 1
            self.emit((self.now, "dup", m.src, m))
            due = self.now + self._delay()
            b = buckets.get(due)
            if b is None:
                buckets[due] = [m]
            else:
                b.append(m)

    def take(self, tick: int) -> list[Message]:
        """Hand out (and forget) the messages due at ``tick``; partitions are the caller's check."""
        return self.buckets.pop(tick, [])

    def in_flight(self) -> int:
        return sum(len(b) for b in self.buckets.values())

    # -- partitions ------------------------------------------------------------------------------

    @property
    def partitioned(self) -> bool:
        return not all(all(row) for row in self.reach)

    def heal(self) -> None:
        for row in self.reach:
            for j in range(self.n):
                row[j] = True

    def split(self, groups: list[int]) -> None:
        """Peers talk only within their group (``groups[i]`` is peer ``i``'s group)."""
        for i in range(self.n):
            for j in range(self.n):
                self.reach[i][j] = groups[i] == groups[j]

    def cut_link(self, src: int, dst: int) -> None:
        self.reach[src][dst] = False

    def describe(self) -> str:
        """E.g. ``{0,1,2} | {3} | {4}`` for symmetric splits, else the list of one-way cuts."""
        n = self.n
        symmetric = all(self.reach[i][j] == self.reach[j][i] for i in range(n) for j in range(n))
        if symmetric:
            seen: set[int] = set()
            parts = []
            transitive = True
            for i in range(n):
                if i in seen:
                    continue
                group = {j for j in range(n) if self.reach[i][j]}
                for a in group:
                    if {j for j in range(n) if self.reach[a][j]} != group:
                        transitive = False
                seen |= group
                parts.append("{" + ",".join(map(str, sorted(group))) + "}")
            if transitive:
                return " | ".join(parts)
        cuts = [f"{i}->{j}" for i in range(n) for j in range(n) if i != j and not self.reach[i][j]]
        return "cut " + " ".join(cuts)
