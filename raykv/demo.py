"""The Raft demo behind ``raykv demo``: elect, replicate, crash the leader, fail over, catch up.

:func:`run_demo` runs the whole scenario on Ray and returns a :class:`DemoReport` (it never raises for
a failed step: the report says which step failed and why), so a notebook can call it as well as the
command line::

    from raykv import run_demo
    report = run_demo(peers=5, commands=20, seed=7)
    print(report.format())

The scenario, on ``peers`` replica actors wired through one :class:`~actors.network.FaultyNetwork`
(built by :class:`~raykv.testing.raft_harness.RaftHarness`, the same harness as the reference Raft tests; the
network is reliable and a call to a peer that is down fails within 100 ms):

1. start (or connect to) Ray and the peers, and wait for a leader;
2. commit the first half of the commands on every peer;
3. crash the leader (it loses everything but its persisted state) and wait for a new leader;
4. commit the second half on the surviving majority;
5. restart the old leader from its storage and wait until its commit and applied indexes reach the
   others' (it learns the commands it missed from the new leader);
6. check that every peer applied every command, at the same index, in order.

Leaders are observed by polling every peer's status every 50 ms, so a leader that lasts less than
that may go unseen; two leaders in one term are reported as a failure whenever they are seen.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DemoEvent", "DemoFailure", "DemoReport", "PeerRow", "demo_header", "new_seed", "run_demo"]

#: how often the demo polls every peer's status
POLL_S = 0.05
#: the longest the demo waits for a leader, or for the restarted peer to catch up
WAIT_S = 15.0
#: the longest any single Ray call from the demo may take
CALL_S = 30.0
MIN_PEERS, MAX_PEERS = 3, 9


def new_seed() -> int:
    """A fresh random seed (what :func:`run_demo` uses when it is given none)."""
    return random.SystemRandom().randrange(2**31)


def demo_header(peers: int, commands: int, seed: int) -> str:
    """The first lines of the account: what runs, and the start of the timeline."""
    return f"raykv demo: {peers} Raft peers, {commands} commands, seed {seed}\nTimeline"


class DemoFailure(Exception):
    """A step of the demo did not reach the state it waits for (or saw an unsafe one)."""


@dataclass(frozen=True)
class DemoEvent:
    """One line of the timeline: seconds since the demo started, and what happened."""

    elapsed: float
    text: str

    def format(self) -> str:
        return f"{self.elapsed:7.2f}s  {self.text}"


@dataclass(frozen=True)
class PeerRow:
    """One peer's state at the end of the demo."""

    peer: int
    role: str
    term: int
    commit: int
    applied: int
    last_index: int
    rpcs_received: int
    restarted: bool


@dataclass
class DemoReport:
    """What :func:`run_demo` saw. ``ok`` is true when every step succeeded (``error`` is ``None``)."""

    peers: int
    commands: int
    seed: int
    cluster: str = ""
    events: list[DemoEvent] = field(default_factory=list)
    #: term -> the peer seen leading it (terms in which no leader was seen are absent)
    leaders: dict[int, int] = field(default_factory=dict)
    #: the highest term any peer reached
    max_term: int = 0
    first_leader: int | None = None
    second_leader: int | None = None
    #: the peer that was crashed and restarted (the first leader)
    restarted: int | None = None
    #: seconds from the crash until a new leader was seen
    failover_s: float | None = None
    #: seconds from the restart until the restarted peer's commit and applied indexes reached the others'
    catch_up_s: float | None = None
    caught_up: bool = False
    #: every peer applied every command, at the same index, in order
    applied_everywhere: bool = False
    #: the log index of each command, in the order they were submitted
    command_indexes: list[int] = field(default_factory=list)
    peer_rows: list[PeerRow] = field(default_factory=list)
    total_rpcs: int = 0
    total_bytes: int = 0
    handler_errors: int = 0
    #: seconds from the start of :func:`run_demo` to the end of the checks
    elapsed: float = 0.0
    #: seconds Ray took to start or connect
    ray_start_s: float = 0.0
    #: the Raft decision log of every process (``decisions.log``) and its ``raykv viz`` page
    #: (``viz.html``), when the demo started Ray itself; else ``viz_note`` says why there is none
    decision_log: str | None = None
    viz_html: str | None = None
    viz_note: str | None = None
    #: ``"step: reason"`` when a step failed
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def format(self, timeline: bool = True) -> str:
        """The human-readable account: timeline, peers table, terms and leaders, network totals."""
        lines: list[str] = []
        if timeline:
            lines.append(self.header())
            lines += [e.format() for e in self.events]
            lines.append("")
        if self.peer_rows:
            lines.append("Peers at the end")
            lines += _table(self.peer_rows)
            if any(r.restarted for r in self.peer_rows):
                lines.append("  * crashed while leader, then restarted from its storage")
            lines.append("  RPCs received: requests delivered to the peer, all incarnations (a leader mostly "
                         "sends; replies are not counted)")
            lines.append("")
        if self.max_term:
            seen = ", ".join(f"{t}: peer{p}" for t, p in sorted(self.leaders.items())) or "none"
            unseen = self.max_term - len(self.leaders)
            note = f" ({unseen} term(s) with no leader seen: split votes)" if unseen else ""
            lines.append(f"Terms: 1 to {self.max_term}; leaders seen (term: peer): {seen}{note}")
        if self.peer_rows:
            lines.append(
                f"Network: {self.total_rpcs:,} RPCs, {self.total_bytes:,} bytes of requests, "
                f"{self.handler_errors} handler errors")
        if self.viz_html:
            lines.append(f"Picture of the run: {self.viz_html} (open it in a browser; decision log "
                         f"{self.decision_log})")
        elif self.viz_note:
            lines.append(f"No picture of the run: {self.viz_note}")
        if self.ok:
            lines.append(
                f"OK: {self.commands} commands on {self.peers} peers survived a leader crash "
                f"(failover {self.failover_s:.2f} s, catch-up {self.catch_up_s:.2f} s); "
                f"{self.elapsed:.1f} s in all, {self.ray_start_s:.1f} s of it starting Ray")
        else:
            lines.append(f"FAILED: {self.error}")
        return "\n".join(lines)

    def header(self) -> str:
        return demo_header(self.peers, self.commands, self.seed)


def _table(rows: list[PeerRow]) -> list[str]:
    head = ("peer", "role", "term", "commit", "applied", "last index", "RPCs received")
    cells = [head] + [
        (f"peer{r.peer}{'*' if r.restarted else ''}", r.role, str(r.term), str(r.commit),
         str(r.applied), str(r.last_index), f"{r.rpcs_received:,}")
        for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    out = []
    for c in cells:
        left = [c[i].ljust(widths[i]) for i in range(2)]
        right = [c[i].rjust(widths[i]) for i in range(2, len(head))]
        out.append("  " + "  ".join(left + right))
    return out


def run_demo(
    peers: int = 5,
    commands: int = 20,
    seed: int | None = None,
    address: str | None = None,
    namespace: str | None = None,
    on_event: Callable[[DemoEvent], None] | None = None,
    progress_bar: bool = False,
    log_to_driver: bool = False,
    out: str | Path | None = None,
) -> DemoReport:
    """Run the demo scenario (see the module docstring) and return what happened.

    Ray: reused when it is already initialised in this process (and then left running), otherwise
    started embedded or connected to ``address`` (see :func:`raykv.cluster.init_ray`) and shut down at
    the end. When the demo starts Ray itself, every process logs its Raft decisions (``RAYKV_LOG``,
    all topics unless the variable names some) to ``out/decisions.log`` and the run's ``raykv viz``
    page is written to ``out/viz.html`` (``out`` defaults to ``raykv-demo/raft-DATE-TIME``; see
    :mod:`raykv.demo_picture`); on a runtime that was running already there is no page and
    :attr:`DemoReport.viz_note` says why. ``on_event`` is called with each timeline event as it
    happens; ``progress_bar`` shows a tqdm bar (on stderr, terminals only) while commands replicate.
    ``seed`` fixes the peers' election timeouts and the network's random choices (not the real
    timing, so runs still differ a little).

    Raises ``ValueError`` for arguments outside ``3 <= peers <= 9`` and ``commands >= 2``; every
    other failure is reported in :attr:`DemoReport.error`.
    """
    if not MIN_PEERS <= peers <= MAX_PEERS:
        raise ValueError(f"peers must be between {MIN_PEERS} and {MAX_PEERS} (got {peers}): "
                         "the demo crashes one and needs a majority of the rest")
    if commands < 2:
        raise ValueError(f"commands must be at least 2 (got {commands}): some before the crash, "
                         "some after")
    seed = seed if seed is not None else new_seed()
    report = DemoReport(peers=peers, commands=commands, seed=seed)
    out_dir = Path(out) if out is not None else Path("raykv-demo") / time.strftime("raft-%Y%m%d-%H%M%S")
    demo = _Demo(report, on_event, progress_bar, out_dir)
    demo.run(address, namespace, log_to_driver)
    return report


class _Demo:
    """The scenario's steps and the bookkeeping shared between them."""

    def __init__(self, report: DemoReport, on_event: Callable[[DemoEvent], None] | None,
                 progress_bar: bool, out: Path) -> None:
        from raykv.demo_picture import DemoPicture

        self.report = report
        self.picture = DemoPicture(out)
        self.on_event = on_event
        self.progress_bar = progress_bar
        self.t0 = time.monotonic()
        self.step = "starting"
        self.harness: Any = None
        self.crashed: set[int] = set()

    # ---- bookkeeping ----------------------------------------------------------------------------

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def event(self, text: str) -> None:
        ev = DemoEvent(self.elapsed(), text)
        self.report.events.append(ev)
        if self.on_event is not None:
            self.on_event(ev)

    def statuses(self) -> list[dict[str, Any]]:
        """Every peer's status (``role == "down"`` while crashed); records the leaders it sees."""
        import ray

        h = self.harness
        sts: list[dict[str, Any]] = ray.get([r.status.remote() for r in h.replicas], timeout=CALL_S)
        for i, st in enumerate(sts):
            if st["role"] == "down":
                continue
            self.report.max_term = max(self.report.max_term, st["term"])
            if st["role"] == "leader":
                seen = self.report.leaders.setdefault(st["term"], i)
                if seen != i:
                    raise DemoFailure(f"two leaders in term {st['term']}: peer{seen} and peer{i}")
        return sts

    def wait_leader(self, after_term: int) -> tuple[int, int]:
        """Wait for a live peer leading a term above ``after_term``, at the highest term among the
        live peers; returns ``(peer, term)``."""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            sts = self.statuses()
            live = [(i, st) for i, st in enumerate(sts) if st["role"] != "down"]
            top = max((st["term"] for _, st in live), default=0)
            for i, st in live:
                if st["role"] == "leader" and st["term"] == top and top > after_term:
                    return i, top
            time.sleep(POLL_S)
        raise DemoFailure(f"no leader above term {after_term} within {WAIT_S:.0f} s")

    def replicate(self, cmds: list[str], expected: int, label: str) -> None:
        """Commit ``cmds`` one by one (retrying across leader changes) on at least ``expected`` peers."""
        from tqdm import tqdm

        bar = tqdm(total=len(cmds), desc=label, unit="cmd", leave=False,
                   disable=None if self.progress_bar else True)
        try:
            for cmd in cmds:
                self.report.command_indexes.append(self.harness.one(cmd, expected, retry=True))
                bar.update(1)
        finally:
            bar.close()

    # ---- the scenario ---------------------------------------------------------------------------

    def run(self, address: str | None, namespace: str | None, log_to_driver: bool) -> None:
        from raykv.cluster import ClusterError, init_ray

        r = self.report
        cluster = None
        try:
            import ray

            if ray.is_initialized():
                self.step = "attaching to Ray"
                self.event("using the Ray runtime already running in this process")
                self.picture.not_recorded()
            elif (address or os.environ.get("RAY_ADDRESS") or "local") == "local":
                self.step = "starting Ray"
                self.event("starting Ray")
            else:
                self.step = "connecting to Ray"
                self.event(f"connecting to Ray at {address or os.environ['RAY_ADDRESS']}")
                self.picture.not_recorded()
            with self.picture.inherit():  # an embedded runtime's raylet, and so its workers, log
                cluster = init_ray(address, namespace, log_to_driver=log_to_driver)
            r.ray_start_s = self.elapsed()
            r.cluster = cluster.describe()
            self.event(r.cluster)
            self.scenario()
        except (ClusterError, DemoFailure, AssertionError) as e:
            r.error = f"{self.step}: {e}"
        except Exception as e:  # Ray errors: a dead actor, a call past its deadline
            r.error = f"{self.step}: {type(e).__name__}: {e}"
        finally:
            r.elapsed = self.elapsed()
            if r.error is not None:
                self.event(f"FAILED while {self.step}")
                if self.harness is not None and not r.peer_rows:
                    with contextlib.suppress(Exception):  # show the peers as the failure left them
                        self.collect()
            if self.harness is not None:
                with contextlib.suppress(Exception):  # best effort: the runtime may already be gone
                    self.harness.kill()
            if cluster is not None:
                cluster.shutdown()
            self.draw()

    def draw(self) -> None:
        """The run's picture (:mod:`raykv.demo_picture`), after the peers have stopped."""
        r = self.report
        page = self.picture.draw(f"raykv demo raft, seed {r.seed}")
        r.decision_log = str(self.picture.log) if page is not None else None
        r.viz_html = str(page) if page is not None else None
        r.viz_note = self.picture.why_not

    def scenario(self) -> None:
        import ray

        from raykv.testing.raft_harness import RaftHarness

        r = self.report
        n, half = r.peers, (r.commands + 1) // 2
        cmds = [f"cmd{i:03d}" for i in range(1, r.commands + 1)]

        self.step = "starting the peers"
        self.harness = h = RaftHarness(n, seed=r.seed)
        # a call to a crashed peer fails within 100 ms, not the reference tests' 7 s
        ray.get(h.net.set_long_delays.remote(False), timeout=CALL_S)
        self.event(f"{n} peers started behind the faulty network "
                   "(heartbeat 100 ms, election timeout 300-600 ms)")

        self.step = "electing the first leader"
        leader, term = self.wait_leader(0)
        r.first_leader = leader
        self.event(f"peer{leader} elected leader of term {term}")

        self.step = f"replicating {half} commands on all {n} peers"
        self.replicate(cmds[:half], n, "replicating")
        self.event(f"{half} commands committed and applied on all {n} peers "
                   f"(log index {r.command_indexes[0]}-{r.command_indexes[-1]})")

        self.step = f"crashing the leader peer{leader}"
        # the peer that leads now (normally still the first leader)
        leader, term = self.wait_leader(0)
        h.crash1(leader)
        self.crashed.add(leader)
        r.restarted = leader
        crashed_at = time.monotonic()
        self.event(f"crashed the leader peer{leader} (term {term}): it loses all but its "
                   "persisted term, vote and log")

        self.step = "electing a new leader"
        new, new_term = self.wait_leader(term)
        r.second_leader = new
        r.failover_s = time.monotonic() - crashed_at
        self.event(f"peer{new} elected leader of term {new_term}, {r.failover_s:.2f} s after the crash")

        self.step = f"replicating {len(cmds) - half} commands on the {n - 1} live peers"
        self.replicate(cmds[half:], n - 1, "replicating")
        self.event(f"{len(cmds) - half} more commands committed on the {n - 1} live peers "
                   f"(log index {r.command_indexes[half]}-{r.command_indexes[-1]})")

        old = leader
        self.step = f"restarting peer{old}"
        h.start1(old)
        h.connect(old)
        restarted_at = time.monotonic()
        st = self.statuses()[old]
        self.event(f"restarted peer{old} from its storage: log to index {st['last_index']}, "
                   f"commit index {st['commit']}")

        self.step = f"waiting for peer{old} to catch up"
        target = r.command_indexes[-1]
        deadline = restarted_at + WAIT_S
        while True:
            sts = self.statuses()
            others = max(s["commit"] for i, s in enumerate(sts) if i != old and s["role"] != "down")
            mine = sts[old]
            if (mine["commit"] >= max(others, target) and mine["applied"] == mine["commit"]
                    and mine["last_index"] >= target):
                break
            if time.monotonic() > deadline:
                raise DemoFailure(
                    f"peer{old} still at commit {mine['commit']}, applied {mine['applied']} after "
                    f"{WAIT_S:.0f} s; the others are at commit {others}")
            time.sleep(POLL_S)
        r.catch_up_s = time.monotonic() - restarted_at
        r.caught_up = True
        self.event(f"peer{old} caught up in {r.catch_up_s:.2f} s: commit {mine['commit']}, "
                   f"applied {mine['applied']} (the others: commit {others})")

        self.step = "checking what every peer applied"
        self.check_applied(cmds)
        r.applied_everywhere = True
        self.event(f"all {len(cmds)} commands applied at the same indexes, in order, on all {n} peers")

        self.step = "collecting statistics"
        self.collect()
        if r.handler_errors:
            raise DemoFailure(f"the network saw {r.handler_errors} handler errors (bugs in a peer)")

    def check_applied(self, cmds: list[str]) -> None:
        import ray

        h = self.harness
        h.check_applied_logs()  # same command at the same index everywhere, no applier errors
        logs = ray.get([rep.applied_log.remote() for rep in h.replicas], timeout=CALL_S)
        want = dict(zip(self.report.command_indexes, cmds, strict=True))
        if sorted(want) != list(range(1, len(cmds) + 1)):
            raise DemoFailure(f"commands landed at indexes {sorted(want)}, expected 1-{len(cmds)} in order")
        for i, (log_, _) in enumerate(logs):
            missing = [idx for idx, c in want.items() if log_.get(idx) != c]
            if missing:
                raise DemoFailure(f"peer{i} did not apply the commands at indexes {missing}")

    def collect(self) -> None:
        import ray

        r, h = self.report, self.harness
        sts = self.statuses()
        stats = ray.get(h.net.stats.remote(), timeout=CALL_S)
        r.total_rpcs = stats["total_count"]
        r.total_bytes = stats["total_bytes"]
        r.handler_errors = stats["handler_errors"]
        r.peer_rows = [
            PeerRow(peer=i, role=st["role"], term=st.get("term", 0), commit=st.get("commit", 0),
                    applied=st.get("applied", 0), last_index=st.get("last_index", 0),
                    rpcs_received=stats["counts"].get(f"peer{i}", 0), restarted=i in self.crashed)
            for i, st in enumerate(sts)
        ]
