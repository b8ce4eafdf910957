"""The account of the whole-system demo (:mod:`raykv.system_demo`): :class:`SystemDemoReport`, what
:func:`raykv.run_system_demo` saw, and how it reads (:meth:`SystemDemoReport.format`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from raykv.demo import DemoEvent
from raykv.demo_table import Snapshot

__all__ = ["SystemDemoReport", "gname", "shard_list", "system_demo_header"]

@dataclass
class SystemDemoReport:
    """What :func:`run_system_demo` saw. ``ok``: every step happened, the history is linearizable (a
    definite verdict), no acknowledged write was lost or applied twice, and ``error`` is ``None``."""

    seed: int
    groups: int
    replicas: int
    clients: int
    #: ``"cluster"`` (a multi-node cluster started here) or ``"existing"`` (one that was running)
    mode: str = ""
    cluster: str = ""
    service: str = ""
    events: list[DemoEvent] = field(default_factory=list)
    #: the group that joined, and the group that left
    joined: int | None = None
    left: int | None = None
    #: shards that moved to the joining group, and away from the leaving one
    moved_in: tuple[int, ...] = ()
    moved_out: tuple[int, ...] = ()
    #: the node lost (or whose replicas were killed): its label and id
    lost_node: str | None = None
    lost_node_id: str | None = None
    #: True when a whole node was killed; False when only the service's replicas on it were
    node_killed: bool = False
    #: ``(gid, slot)`` of every replica lost with it (gid 0: the controller)
    lost_replicas: list[tuple[int, int]] = field(default_factory=list)
    #: gid -> seconds from the loss until the group was back at full strength on live nodes
    replaced: dict[int, float] = field(default_factory=dict)
    #: gid -> ``(old node label, new node label)`` of each replacement
    replaced_on: dict[int, tuple[str, str]] = field(default_factory=dict)
    #: why the lost replicas could not all be replaced (an existing cluster with too few nodes), if so
    not_replaced: str | None = None
    ops: int = 0
    #: client operations whose outcome is unknown (they raised, e.g. timed out)
    unknown: int = 0
    verdict: str = "not checked"
    check_s: float = 0.0
    checked_writes: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    history_path: str | None = None
    report_html: str | None = None
    #: the Raft decision log of every process (``decisions.log``) and its ``raykv viz`` page
    #: (``viz.html``), when the demo started Ray itself; else ``viz_note`` says why there is none
    decision_log: str | None = None
    viz_html: str | None = None
    viz_note: str | None = None
    #: total client operations per second, sampled by the status poller: ``(elapsed, ops/s)``
    throughput: list[tuple[float, float]] = field(default_factory=list)
    #: the last table the poller made
    last_snapshot: Snapshot | None = None
    elapsed: float = 0.0
    ray_start_s: float = 0.0
    service_start_s: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return (self.error is None and self.verdict == "linearizable" and not self.lost
                and not self.duplicated and self.joined is not None and self.left is not None
                and self.lost_node is not None
                and (self.not_replaced is not None
                     or len(self.replaced) == len({g for g, _ in self.lost_replicas})))

    def header(self) -> str:
        return system_demo_header(self.groups, self.replicas, self.clients, self.seed)

    def format(self, timeline: bool = True, table: bool = True) -> str:
        """The account: the timeline and the last table (each optional), what happened, the verdict and
        where the files are."""
        lines: list[str] = []
        if timeline:
            lines += [self.header(), *(e.format() for e in self.events), ""]
        if table and self.last_snapshot is not None:
            from raykv.demo_table import format_snapshot

            lines += ["Groups at the end", *format_snapshot(self.last_snapshot), ""]
        if self.joined is not None:
            lines.append(f"Join: group {self.joined} took shards {shard_list(self.moved_in)}")
        if self.left is not None:
            lines.append(f"Leave: group {self.left} handed over shards {shard_list(self.moved_out)} "
                         "and stopped")
        if self.lost_node is not None:
            what = "killed" if self.node_killed else "kept, the service's replicas on it killed"
            per = ", ".join(f"{gname(g)} {s:.1f} s" for g, s in sorted(self.replaced.items()))
            lines.append(f"Loss: node {self.lost_node} {what} ({len(self.lost_replicas)} replicas, one per "
                         f"group); back at full strength after: {per or 'not yet'}")
            if self.not_replaced:
                lines.append(f"  not replaced: {self.not_replaced}")
        if self.ops:
            peak = max((r for _, r in self.throughput), default=0.0)
            lines.append(f"Clients: {self.ops:,} operations ({self.unknown} with an unknown outcome), "
                         f"up to {peak:.0f} ops/s")
        if self.verdict != "not checked":
            lines.append(f"Linearizability: {self.verdict} (checked in {self.check_s:.2f} s); "
                         f"{self.checked_writes} acknowledged writes looked up: {len(self.lost)} lost, "
                         f"{len(self.duplicated)} duplicated")
        if self.report_html:
            lines.append(f"HTML report: {self.report_html}")
        if self.history_path:
            lines.append(f"History: {self.history_path} (raykv check --format kv {self.history_path})")
        if self.viz_html:
            lines.append(f"Picture of the run: {self.viz_html} (open it in a browser; decision log "
                         f"{self.decision_log})")
        elif self.viz_note:
            lines.append(f"No picture of the run: {self.viz_note}")
        if self.ok:
            lines.append(f"OK: {self.ops:,} operations through a Join, a Leave and a lost "
                         f"{'node' if self.node_killed else 'set of replicas'}, linearizable; "
                         f"{self.elapsed:.1f} s in all ({self.ray_start_s:.1f} s starting Ray, "
                         f"{self.service_start_s:.1f} s starting the service)")
        else:
            lines.append(f"FAILED: {self.error or self._why()}")
        return "\n".join(lines)

    def _why(self) -> str:
        if self.verdict != "linearizable":
            return f"the history is {self.verdict}"
        if self.lost or self.duplicated:
            return f"{len(self.lost)} acknowledged writes lost, {len(self.duplicated)} duplicated"
        if self.not_replaced:
            return f"lost replicas not replaced: {self.not_replaced}"
        return "a step did not happen"


def gname(gid: int) -> str:
    return "controller" if gid == 0 else f"group {gid}"


def shard_list(xs: tuple[int, ...]) -> str:
    return ", ".join(map(str, xs)) if xs else "none"


def system_demo_header(groups: int, replicas: int, clients: int, seed: int) -> str:
    """The first lines of the account."""
    return (f"raykv demo: a controller and {groups} groups of {replicas} replicas, {clients} clients, "
            f"seed {seed}\nTimeline")
