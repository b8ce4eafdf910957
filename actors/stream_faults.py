"""A seeded fault hook for the stream transport, with the shape of the reference harness's network.

A :class:`StreamFaults` object decides, for each request a :class:`~actors.stream_client.StreamClient`
sends and each reply it receives, whether the message is lost and how long it is held back. The
decisions follow labrpc (the MIT 6.5840 harness the reference suites were written against):

- ``reliable=False``: every request waits 0-26 ms before it is sent, 10 % of requests are lost
  (the call fails after that wait) and 10 % of replies are lost (the call fails when the reply
  arrives); a lost message is an ordinary failed call.
- ``long_reordering=True``: about two thirds of the replies that are not lost are held back
  200-2,200 ms (skewed towards short: 200 + uniform(0, uniform(0, 2000)) ms), so replies overtake
  each other.
- ``cut`` (labels of destinations this caller cannot reach: one side of a partition): every request
  to them fails, after 0-100 ms, or 0-7 s with ``long_delays=True`` (a call to a dead server that
  times out late).

Invariants: the object is pure and seeded — it reads no clock and no global randomness, only its own
``random.Random(seed)`` — so the same seed and the same sequence of calls give the same decisions.
It holds no reference to any connection; one object may be shared by all of a caller's clients
(their ``label`` names the destination). A call's own timeout still bounds every delay.

Nothing here imports Ray.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

#: the fields :meth:`StreamFaults.configure` accepts
FIELDS = ("reliable", "long_reordering", "long_delays", "cut")


class StreamFaults:
    """Seeded decisions: :meth:`on_request` before a request is sent, :meth:`on_reply` on its reply."""

    def __init__(self, seed: int, *, reliable: bool = True, long_reordering: bool = False,
                 long_delays: bool = False, cut: set[str] | frozenset[str] | tuple[str, ...] = ()) -> None:
        self.seed = seed
        self._rng = random.Random(seed)
        self.reliable = True
        self.long_reordering = False
        self.long_delays = False
        self.cut: set[str] = set()
        self.counts: Counter[str] = Counter()
        self.configure(reliable=reliable, long_reordering=long_reordering, long_delays=long_delays, cut=cut)

    def configure(self, **fields: Any) -> None:
        """Change some of ``reliable``, ``long_reordering``, ``long_delays`` (bools) and ``cut`` (labels)."""
        unknown = sorted(set(fields) - set(FIELDS))
        if unknown:
            raise TypeError(f"StreamFaults.configure: unknown field(s) {', '.join(unknown)}; "
                            f"the fields are {', '.join(FIELDS)}")
        for name in ("reliable", "long_reordering", "long_delays"):
            if name in fields:
                value = fields[name]
                if not isinstance(value, bool):
                    raise TypeError(f"StreamFaults.{name} must be True or False, got {value!r}")
                setattr(self, name, value)
        if "cut" in fields:
            cut = fields["cut"]
            if isinstance(cut, str) or not all(isinstance(x, str) for x in cut):
                raise TypeError(f"StreamFaults.cut is a collection of destination labels (str), got {cut!r}")
            self.cut = set(cut)

    def config(self) -> dict[str, Any]:
        """The settings as plain data (picklable; ``StreamFaults(seed, **config)`` rebuilds them)."""
        return {"reliable": self.reliable, "long_reordering": self.long_reordering,
                "long_delays": self.long_delays, "cut": sorted(self.cut)}

    def on_request(self, dest_label: str) -> tuple[bool, float]:
        """``(drop, delay_s)`` for a request to ``dest_label``: a dropped request fails after ``delay_s``,
        another is sent after ``delay_s``."""
        if dest_label in self.cut:
            self.counts["cut"] += 1
            limit_ms = 7000 if self.long_delays else 100
            return True, self._rng.randrange(limit_ms) / 1000
        if self.reliable:
            return False, 0.0
        delay = self._rng.randrange(27) / 1000
        drop = self._rng.randrange(1000) < 100
        if drop:
            self.counts["requests_dropped"] += 1
        return drop, delay

    def on_reply(self) -> tuple[bool, float]:
        """``(drop, delay_s)`` for a reply that arrived: a dropped reply fails the call now, another is
        handed over after ``delay_s``."""
        if not self.reliable and self._rng.randrange(1000) < 100:
            self.counts["replies_dropped"] += 1
            return True, 0.0
        if self.long_reordering and self._rng.randrange(900) < 600:
            self.counts["replies_held"] += 1
            return False, (200 + self._rng.randrange(1 + self._rng.randrange(2000))) / 1000
        return False, 0.0
