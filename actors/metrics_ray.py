"""Mirror a replica's :class:`~actors.metrics.ReplicaMetrics` into ``ray.util.metrics``, so the figures
show in Ray's dashboard and its Prometheus export (see docs/ray-layer.md, "Metrics").

The replica's hot path only updates the pure accumulator; :meth:`RayExporter.flush` (called by the
replica about once a second, and by its ``status()``) sends what changed since the last flush: one
``Counter.inc(delta)`` per counter that grew, and for each histogram bucket that gained ``d``
observations, ``d`` calls of ``Histogram.observe`` with the mean of those observations (which lies in
that bucket), so Prometheus' bucket counts, ``_count`` and ``_sum`` are exactly the accumulator's. A
Ray metric call costs about 5 µs here, hence never one per operation.

Every metric carries the tags ``service`` (``kvraft``, ``shardctrler``, ``shardkv``, or ``raft`` for a
bare Raft peer), ``group`` (the replica group's name) and ``replica`` (the replica's name); Ray adds
its own (``WorkerId``, ``NodeAddress``, ...). Prometheus sees each name with Ray's ``ray_`` prefix, and
counters also with ``_total``: ``raykv_operations_applied`` is scraped as
``ray_raykv_operations_applied_total``.

Invariant: after a flush, the totals sent to each Ray metric (:meth:`RayExporter.exported`) equal the
accumulator's figures.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

from actors.metrics import COUNTERS, HISTOGRAMS, ReplicaMetrics, summary

#: accumulator field -> (Ray metric name, description); the unit is in the name or the description
METRICS: dict[str, tuple[str, str]] = {
    "ops_applied": ("raykv_operations_applied", "Operations applied to the replica's state machine"),
    "entries_applied": ("raykv_entries_applied", "Raft log entries applied by the replica"),
    "elections_started": ("raykv_elections_started",
                          "Elections the replica started (terms it campaigned in)"),
    "leader_changes": ("raykv_leader_changes", "Times the replica became leader"),
    "shards_in": ("raykv_shards_moved_in", "Shards moved into the replica's group (installed here)"),
    "shards_out": ("raykv_shards_moved_out",
                   "Shards moved out of the replica's group (deleted here once the new owner had them)"),
    "snapshots_taken": ("raykv_snapshots_taken", "Snapshots the replica took"),
    "snapshots_installed": ("raykv_snapshots_installed", "Snapshots the replica installed from its leader"),
    "commit_latency": ("raykv_commit_latency_seconds",
                       "Seconds from a leader's append of a batch of entries to their commit, at the leader"),
    "snapshot_bytes": ("raykv_snapshot_bytes", "Sizes of the snapshots the replica took or installed, bytes"),
}

TAG_KEYS = ("service", "group", "replica")


class RayExporter:
    """The Ray metrics of one replica, tagged ``tags`` (``service``, ``group``, ``replica``).

    ``metrics_module``: where ``Counter`` and ``Histogram`` come from (default ``ray.util.metrics``;
    a test may pass stand-ins with the same calls)."""

    def __init__(self, tags: dict[str, str], metrics_module: ModuleType | Any = None) -> None:
        if set(tags) != set(TAG_KEYS) or not all(isinstance(v, str) for v in tags.values()):
            raise ValueError(f"the exporter's tags are {TAG_KEYS} with str values, got {tags!r}")
        if metrics_module is None:
            from ray.util import metrics as metrics_module
        self.tags = dict(tags)
        probe = ReplicaMetrics()
        self.counters = {name: metrics_module.Counter(METRICS[name][0], METRICS[name][1],
                                                      tag_keys=TAG_KEYS).set_default_tags(self.tags)
                         for name in COUNTERS}
        self.histograms = {name: metrics_module.Histogram(METRICS[name][0], METRICS[name][1],
                                                          boundaries=list(getattr(probe, name).bounds),
                                                          tag_keys=TAG_KEYS).set_default_tags(self.tags)
                           for name in HISTOGRAMS}
        #: what has been sent: counter totals, and per histogram its bucket counts and its sum
        self._sent: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._sent_counts = {name: [0] * len(getattr(probe, name).counts) for name in HISTOGRAMS}
        self._sent_sums = {name: [0.0] * len(getattr(probe, name).sums) for name in HISTOGRAMS}
        self.calls = 0

    def flush(self, m: ReplicaMetrics) -> int:
        """Send what changed in ``m`` since the last flush; returns the number of Ray metric calls."""
        calls = 0
        for name in COUNTERS:
            value = getattr(m, name)
            delta = value - self._sent[name]
            if delta > 0:
                self.counters[name].inc(delta)
                self._sent[name] = value
                calls += 1
        for name in HISTOGRAMS:
            h = getattr(m, name)
            sent_counts, sent_sums = self._sent_counts[name], self._sent_sums[name]
            metric = self.histograms[name]
            for i, count in enumerate(h.counts):
                d = count - sent_counts[i]
                if d <= 0:
                    continue
                mean = (h.sums[i] - sent_sums[i]) / d
                if i < len(h.bounds):  # keep float rounding from moving the mean out of its bucket
                    mean = min(mean, h.bounds[i])
                if i > 0:
                    mean = max(mean, math.nextafter(h.bounds[i - 1], math.inf))
                for _ in range(d):
                    metric.observe(mean)
                sent_counts[i], sent_sums[i] = count, h.sums[i]
                calls += d
        self.calls += calls
        return calls

    def exported(self) -> dict[str, Any]:
        """What the Ray metrics have received so far: each counter's total and each histogram's
        summary (the shape of :meth:`ReplicaMetrics.summary`), plus ``calls`` (Ray metric calls made)."""
        probe = ReplicaMetrics()
        out: dict[str, Any] = dict(self._sent)
        for name in HISTOGRAMS:
            out[name] = summary(getattr(probe, name).bounds, list(self._sent_counts[name]),
                                sum(self._sent_sums[name]))
        out["calls"] = self.calls
        return out
