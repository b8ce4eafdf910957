"""A replica's metrics as plain data: counters and histograms that the actor shell feeds from what the
core already hands it (each :class:`raft.Ready`, the applied results) and that ``status()`` reads.

Pure: no Ray, no clock, no randomness. The shell passes the time in (``now``, seconds of a monotonic
clock) where a latency is measured; :mod:`actors.metrics_ray` mirrors these figures into
``ray.util.metrics`` for Ray's dashboard and Prometheus. What is counted (per replica):

- ``ops_applied``: operations this replica applied (a batch entry counts its operations, any other
  non-empty entry one; re-applying after a restart counts again), ``entries_applied``: log entries;
- ``elections_started``: terms this replica campaigned in (it voted for itself in a new term; a
  PreVote round that does not win starts no election), ``leader_changes``: times it became leader
  (summed over a group: the group's leader changes);
- ``shards_in`` / ``shards_out``: shards installed here (moved in) / deleted here once their new owner
  had them (moved out) (shard groups only);
- ``snapshots_taken`` / ``snapshots_installed``; ``snapshot_bytes`` (a histogram of the sizes of both,
  bytes) and ``last_snapshot_bytes``;
- ``commit_latency`` (a histogram, seconds, at the leader): from the ``Ready`` that carried an entry to
  the leader's log (the turn of the event loop it was proposed in) to the ``Ready`` that hands it to the
  leader's state machine committed; one sample per leader ``Ready`` that appended entries (a batch of
  proposals), not one per operation, so that the hot path stays cheap.

Invariants: counters never decrease; a histogram's ``count`` is the sum of its buckets' counts and
its ``sum`` the sum of its buckets' sums; a commit-latency sample is only taken for entries this peer
appended as leader in its current term of leadership (losing or regaining leadership forgets the
entries in flight: a later commit of that index may be another leader's entry).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from typing import Any

#: commit latency buckets, seconds (upper bounds; one more bucket above the last)
LATENCY_BOUNDS_S: tuple[float, ...] = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0,
                                       2.0, 5.0)
#: snapshot size buckets, bytes
SNAPSHOT_BOUNDS_B: tuple[float, ...] = (1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9)

#: the counters of :class:`ReplicaMetrics`, in the order status and the exporter list them
COUNTERS: tuple[str, ...] = ("ops_applied", "entries_applied", "elections_started", "leader_changes",
                             "shards_in", "shards_out", "snapshots_taken", "snapshots_installed")
#: the histograms of :class:`ReplicaMetrics`
HISTOGRAMS: tuple[str, ...] = ("commit_latency", "snapshot_bytes")

_LEADER, _CANDIDATE = "leader", "candidate"


class Histogram:
    """Bucketed observations: ``counts[i]`` / ``sums[i]`` of the values ``v`` with
    ``bounds[i-1] < v <= bounds[i]`` (the last bucket: above every bound), as Prometheus counts them."""

    __slots__ = ("bounds", "counts", "sums")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        if not bounds or any(b <= 0 for b in bounds) or list(bounds) != sorted(set(bounds)):
            raise ValueError(f"histogram bounds must be positive and strictly increasing, got {bounds!r}")
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(bounds) + 1)
        self.sums = [0.0] * (len(bounds) + 1)

    def observe(self, value: float) -> None:
        i = bisect_left(self.bounds, value)
        self.counts[i] += 1
        self.sums[i] += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    @property
    def sum(self) -> float:
        return sum(self.sums)

    def quantile(self, q: float) -> float | None:
        """An estimate of the ``q`` quantile (0 < q <= 1): see :func:`quantile`."""
        return quantile(self.bounds, self.counts, q)

    def summary(self) -> dict[str, Any]:
        """See :func:`summary`."""
        return summary(self.bounds, self.counts, self.sum)


def quantile(bounds: tuple[float, ...], counts: list[int], q: float) -> float | None:
    """An estimate of the ``q`` quantile (0 < q <= 1) of bucket ``counts`` over ``bounds``: linear
    within the bucket that holds it, as Prometheus' ``histogram_quantile`` does (the top bucket
    answers its lower bound); ``None`` with no observations."""
    if not 0 < q <= 1:
        raise ValueError(f"a quantile is in (0, 1], got {q!r}")
    total = sum(counts)
    if total == 0:
        return None
    rank, seen = q * total, 0
    for i, c in enumerate(counts):
        if c and seen + c >= rank:
            if i == len(bounds):
                return bounds[-1]
            lo = bounds[i - 1] if i > 0 else 0.0
            return lo + (bounds[i] - lo) * (rank - seen) / c
        seen += c
    return bounds[-1]  # pragma: no cover - rank <= total always stops above


def summary(bounds: tuple[float, ...], counts: list[int], total: float) -> dict[str, Any]:
    """``count``, ``sum``, ``mean``, ``p50``, ``p99`` (``None`` when empty) and ``buckets`` (upper bound
    -> count in that bucket, ``inf`` for the last), as plain data."""
    n = sum(counts)
    return {"count": n, "sum": total, "mean": total / n if n else None,
            "p50": quantile(bounds, counts, 0.5), "p99": quantile(bounds, counts, 0.99),
            "buckets": dict(zip((*bounds, float("inf")), counts, strict=True))}


def merged(summaries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """One summary of the observations of several (over the same bounds); ``None`` for none."""
    if not summaries:
        return None
    bounds = tuple(b for b in summaries[0]["buckets"] if b != float("inf"))
    counts = [sum(s["buckets"].get(b, 0) for s in summaries) for b in (*bounds, float("inf"))]
    return summary(bounds, counts, sum(s["sum"] for s in summaries))


class ReplicaMetrics:
    """One replica's counters and histograms (see the module docstring), fed by the actor shell.

    The shell calls :meth:`role` after each drain with the core's term and role, :meth:`appended` /
    :meth:`committed` for the leader's entries, :meth:`applied` once per ``Ready``, and the snapshot and
    shard methods when those happen; :meth:`reset_role` when a core is (re)built from storage.
    """

    def __init__(self) -> None:
        self.ops_applied = 0
        self.entries_applied = 0
        self.elections_started = 0
        self.leader_changes = 0
        self.shards_in = 0
        self.shards_out = 0
        self.snapshots_taken = 0
        self.snapshots_installed = 0
        self.commit_latency = Histogram(LATENCY_BOUNDS_S)
        self.snapshot_bytes = Histogram(SNAPSHOT_BOUNDS_B)
        #: the size of the latest snapshot this replica took or installed (0: none yet)
        self.last_snapshot_bytes = 0
        #: the term and role seen last (the shell compares with them: two attribute reads per drain)
        self.term = 0
        self.last_role = "follower"
        #: (last index of a leader Ready's entries, when it was drained), oldest first
        self._inflight: deque[tuple[int, float]] = deque()

    # -- events -----------------------------------------------------------------------------------

    def reset_role(self, term: int, role: str) -> None:
        """A core was (re)built, from storage, in ``term`` and ``role``: nothing is counted for it."""
        self.term, self.last_role = term, role
        self._inflight.clear()

    def role(self, term: int, role: str, voted_self: bool) -> None:
        """The core is now in ``term`` and ``role`` (``voted_self``: its vote in ``term`` is its own);
        counts an election when the term grew and this peer voted for itself (it campaigned), a leader
        change when it became leader."""
        if term > self.term and voted_self:
            self.elections_started += 1
        if role == _LEADER and (self.last_role != _LEADER or term != self.term):
            self.leader_changes += 1
        if role != _LEADER or term != self.term:
            self._inflight.clear()
        self.term, self.last_role = term, role

    def appended(self, last_index: int, now: float) -> None:
        """The leader persisted entries up to ``last_index`` at ``now`` (one leader ``Ready``)."""
        self._inflight.append((last_index, now))

    @property
    def waiting(self) -> bool:
        """Whether a leader's entries wait for their commit (the shell reads the clock only then)."""
        return bool(self._inflight)

    def committed(self, last_index: int, now: float) -> None:
        """Entries up to ``last_index`` were committed and handed to the state machine at ``now``: one
        commit-latency sample per leader ``Ready`` they were appended in."""
        inflight = self._inflight
        while inflight and inflight[0][0] <= last_index:
            self.commit_latency.observe(now - inflight.popleft()[1])

    def applied(self, entries: int, ops: int) -> None:
        self.entries_applied += entries
        self.ops_applied += ops

    def snapshot_taken(self, size: int) -> None:
        self.snapshots_taken += 1
        self.snapshot_bytes.observe(size)
        self.last_snapshot_bytes = size

    def snapshot_installed(self, size: int) -> None:
        self.snapshots_installed += 1
        self.snapshot_bytes.observe(size)
        self.last_snapshot_bytes = size

    def shards_moved(self, direction: str, n: int) -> None:
        """``n`` shards moved ``"in"`` (installed here) or ``"out"`` (deleted here for their new owner)."""
        if direction == "in":
            self.shards_in += n
        elif direction == "out":
            self.shards_out += n
        else:
            raise ValueError(f"a shard moves 'in' or 'out', got {direction!r}")

    # -- reading ----------------------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in COUNTERS}

    def summary(self) -> dict[str, Any]:
        """Every counter, ``last_snapshot_bytes``, and each histogram's :meth:`Histogram.summary`
        (plain, picklable data)."""
        return (self.counters() | {"last_snapshot_bytes": self.last_snapshot_bytes}
                | {name: getattr(self, name).summary() for name in HISTOGRAMS})


def ops_in(result: Any, command: Any) -> int:
    """How many operations an applied entry held: the length of a batch's result list, else one for
    any command (``None``, an empty entry such as the leader's no-op, holds none)."""
    if type(result) is list:
        return len(result)
    return 0 if command is None else 1


def aggregate(replicas: list[dict[str, Any] | None], leader: int | None = None) -> dict[str, Any]:
    """A group's figures from its replicas' :meth:`ReplicaMetrics.summary` (``None``: no answer).

    ``ops_applied``, ``entries_applied``, ``shards_in``, ``shards_out``: the group's state machine's,
    i.e. the largest any replica counted (they all apply the same log); ``elections_started``,
    ``leader_changes``, ``snapshots_taken``, ``snapshots_installed``: summed over the replicas;
    ``commit_latency``: the leader's summary (``leader`` = its index; else that of the replica with the
    most samples); ``snapshot_bytes``: every replica's snapshot sizes merged; ``last_snapshot_bytes``:
    the largest of the replicas' latest snapshot sizes; ``replicas``: how many answered."""
    live = [r for r in replicas if r]
    out: dict[str, Any] = {"replicas": len(live)}
    for name in ("ops_applied", "entries_applied", "shards_in", "shards_out"):
        out[name] = max((int(r.get(name, 0)) for r in live), default=0)
    for name in ("elections_started", "leader_changes", "snapshots_taken", "snapshots_installed"):
        out[name] = sum(int(r.get(name, 0)) for r in live)
    lead = replicas[leader] if leader is not None and 0 <= leader < len(replicas) else None
    if not lead and live:
        lead = max(live, key=lambda r: int(r["commit_latency"]["count"]))
    empty = ReplicaMetrics().summary()
    out["commit_latency"] = (lead or empty)["commit_latency"]
    out["snapshot_bytes"] = merged([r["snapshot_bytes"] for r in live]) or empty["snapshot_bytes"]
    out["last_snapshot_bytes"] = max((int(r.get("last_snapshot_bytes", 0)) for r in live), default=0)
    return out
