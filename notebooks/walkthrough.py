"""Helpers for ``raft_walkthrough.ipynb``: the experiment logic, so that the notebook stays readable.

Everything here is plain Python on top of the project's public APIs (``raft``, ``raft.sim``,
``linearizability``); only :func:`plot_demo_rpcs` and :func:`plot_campaign` import matplotlib. The
notebook imports this module from its own directory (Jupyter starts kernels there).

- :class:`HandCluster`: three (or more) Raft cores driven by hand — you decide when time passes and
  when messages arrive, and every :class:`raft.Ready` is printed as text before it is carried out.
- :func:`campaign_rows`, :func:`plot_campaign`: a small simulator campaign as one row per seed, and a
  picture of it.
- :func:`storyline`: the few events of a failing simulated run that tell its story.
- :func:`plot_demo_rpcs`: the RPCs each peer of the Ray demo received.
- :func:`record_kv_history`, :func:`format_history`, :func:`stale_read`: a tiny concurrent history,
  as text, and the same history with one read made stale.
- :func:`show`: display a matplotlib figure as a PNG whatever the backend (``MPLBACKEND=Agg`` in CI).
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from linearizability import Operation, Recorder
from raft import Entry, HardState, Message, PersistentState, RaftConfig, RaftNode, Ready
from raft.sim import SeedResult, SimCluster, SimConfig
from raft.sim.trace import Event, format_event, format_message

# --------------------------------------------------------------------------------------------------
# Pictures
# --------------------------------------------------------------------------------------------------


def show(fig: Any) -> None:
    """Display ``fig`` as a PNG image and close it.

    Works with every backend, including ``MPLBACKEND=Agg`` (CI, where the notebook's inline backend
    is not active and ``plt.show()`` would show nothing), and never shows a figure twice.
    """
    import io

    import matplotlib.pyplot as plt
    from IPython.display import Image, display

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    display(Image(data=buf.getvalue(), format="png"))


# --------------------------------------------------------------------------------------------------
# 1. The pure core, stepped by hand
# --------------------------------------------------------------------------------------------------


def format_ready(peer: int, rd: Ready) -> str:
    """A :class:`raft.Ready` as text, in the order the driver carries it out: persist, send, apply."""
    lines = [f"P{peer} Ready"]
    if rd.snapshot is not None:
        lines.append(f"  persist  snapshot through index {rd.snapshot.index} (term {rd.snapshot.term})")
    if rd.entries:
        first, last = rd.entries[0].index, rd.entries[-1].index
        cmds = ", ".join(f"{e.index}:{e.command!r}" for e in rd.entries)
        lines.append(f"  persist  entries [{first}..{last}] of term {rd.entries[-1].term}: {cmds}")
    if rd.hard_state is not None:
        hs = rd.hard_state
        vote = f"P{hs.voted_for}" if hs.voted_for >= 0 else "nobody"
        lines.append(f"  persist  hard state: term {hs.term}, voted for {vote}")
    lines.extend(f"  send     {format_message(m)}" for m in rd.messages)
    if rd.apply_snapshot is not None:
        lines.append(f"  apply    snapshot through index {rd.apply_snapshot.index}")
    lines.extend(f"  apply    {e.index}:{e.command!r}" for e in rd.committed_entries)
    return "\n".join(lines)


class HandCluster:
    """``n`` :class:`raft.RaftNode` cores and a driver that does only what it is told.

    Nothing happens on its own: :meth:`tick` advances every peer's clock by one tick,
    :meth:`deliver` hands every message in flight to its receiver, :meth:`propose` gives a command
    to a peer, :meth:`crash` and :meth:`restart` stop a peer and bring it back from what it persisted
    (messages to a crashed peer are lost). After each of these, every peer that has work is asked
    for its :class:`raft.Ready`, which is carried out exactly as the contract says (persist into a
    :class:`raft.PersistentState`, then put the messages in flight, then apply the committed
    entries) and returned as text.
    """

    def __init__(self, n: int = 3, seed: int = 1, election_ticks: int = 10, heartbeat_ticks: int = 3):
        rng = random.Random(seed)
        self.ids = list(range(n))
        self.saved = {i: PersistentState() for i in self.ids}
        self.nodes = {
            i: RaftNode(RaftConfig(peer_id=i, peers=tuple(self.ids), election_ticks=election_ticks,
                                   heartbeat_ticks=heartbeat_ticks), random.Random(rng.random()))
            for i in self.ids
        }
        self.applied: dict[int, list[Entry]] = {i: [] for i in self.ids}
        self.in_flight: list[Message] = []
        self.down: set[int] = set()
        self.now = 0
        self._seed = rng
        self._config = {"election_ticks": election_ticks, "heartbeat_ticks": heartbeat_ticks}

    # -- what a driver does with a Ready ---------------------------------------------------------

    def _persist(self, i: int, rd: Ready) -> None:
        st = self.saved[i]
        snap, entries = st.snapshot, list(st.entries)
        if rd.snapshot is not None:  # (never happens in the walkthrough; kept for completeness)
            held = {e.index: e.term for e in entries}
            keep = held.get(rd.snapshot.index) == rd.snapshot.term
            entries = [e for e in entries if e.index > rd.snapshot.index] if keep else []
            snap = rd.snapshot
        if rd.entries:
            first = rd.entries[0].index
            entries = [e for e in entries if e.index < first] + list(rd.entries)
        hs: HardState = rd.hard_state or st.hard_state
        self.saved[i] = PersistentState(hs, snap, tuple(entries))

    def process(self) -> str:
        """Carry out every pending Ready (persist, then send, then apply); return them as text."""
        out = []
        for i in self.ids:
            node = self.nodes[i]
            while i not in self.down and node.has_ready():
                rd = node.ready()
                self._persist(i, rd)                 # 1. persist (before anything leaves the peer)
                self.in_flight.extend(rd.messages)   # 2. send
                self.applied[i].extend(rd.committed_entries)  # 3. apply
                out.append(format_ready(i, rd))
        return "\n".join(out)

    # -- the three kinds of input -----------------------------------------------------------------

    def tick(self, times: int = 1) -> str:
        """Let ``times`` ticks pass on every peer, processing Readies after each tick."""
        out = []
        for _ in range(times):
            self.now += 1
            for i, node in self.nodes.items():
                if i not in self.down:
                    node.tick()
            text = self.process()
            if text:
                out.append(f"-- tick {self.now}\n{text}")
        return "\n".join(out)

    def tick_until_ready(self, limit: int = 100) -> tuple[int, str]:
        """Tick until some peer has something to do (an election timeout fired); ``(ticks, text)``."""
        for n in range(1, limit + 1):
            text = self.tick()
            if text:
                return n, text
        raise RuntimeError(f"nothing happened in {limit} ticks")

    def deliver(self) -> str:
        """Deliver every message now in flight (in the order sent), then process the Readies."""
        batch, self.in_flight = self.in_flight, []
        out = []
        for m in batch:
            if m.dst in self.down:
                out.append(f"lost     {format_message(m)}  (P{m.dst} is down)")
                continue
            out.append(f"deliver  {format_message(m)}")
            self.nodes[m.dst].step(m)
        text = self.process()
        return "\n".join(out + ([text] if text else []))

    def propose(self, peer: int, *commands: Any) -> list[tuple[int, int, bool]]:
        """Give ``commands`` to ``peer``; returns its ``(index, term, is_leader)`` for each."""
        return [self.nodes[peer].propose(c) for c in commands]

    def crash(self, peer: int) -> None:
        """Stop ``peer``: it loses everything it did not persist (its core and its applied state)."""
        self.down.add(peer)
        self.in_flight = [m for m in self.in_flight if m.src != peer]  # not sent yet: never will be

    def restart(self, peer: int) -> None:
        """Bring ``peer`` back as a new core built from its persisted state alone."""
        cfg = RaftConfig(peer_id=peer, peers=tuple(self.ids), **self._config)
        self.nodes[peer] = RaftNode(cfg, random.Random(self._seed.random()), self.saved[peer])
        self.applied[peer] = []  # no snapshot in this walkthrough: it re-applies from index 1
        self.down.discard(peer)

    # -- looking at it ------------------------------------------------------------------------------

    def leader(self) -> int | None:
        leaders = [i for i in self.ids if i not in self.down and self.nodes[i].is_leader]
        return max(leaders, key=lambda i: self.nodes[i].term) if leaders else None

    def election_timeouts(self) -> dict[int, int]:
        """The election timeout each peer drew (in ticks) for its current term."""
        return {i: self.nodes[i].randomized_timeout for i in self.ids}

    def status_table(self) -> str:
        """Every peer's :meth:`raft.RaftNode.status` as a text table."""
        rows = []
        for i in self.ids:
            if i in self.down:  # a crashed peer is only what it persisted
                hs, log = self.saved[i].hard_state, self.saved[i].entries
                rows.append({"id": i, "role": "(down)", "term": hs.term, "leader": None,
                             "voted_for": hs.voted_for, "last_index": log[-1].index if log else 0,
                             "commit": None, "applied": None})
            else:
                rows.append(self.nodes[i].status())
        return format_table(rows, ["id", "role", "term", "leader", "voted_for", "last_index", "commit",
                                   "applied"])


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain text table (readable in any notebook viewer and in a terminal)."""

    def show(v: Any) -> str:
        return "-" if v is None else str(v)

    widths = {c: max(len(c), *(len(show(r[c])) for r in rows)) for c in columns}
    head = "  ".join(c.rjust(widths[c]) for c in columns)
    body = ["  ".join(show(r[c]).rjust(widths[c]) for c in columns) for r in rows]
    return "\n".join([head, "  ".join("-" * widths[c] for c in columns), *body])


# --------------------------------------------------------------------------------------------------
# 2. The deterministic simulator
# --------------------------------------------------------------------------------------------------


def campaign_rows(results: Iterable[SeedResult], config: SimConfig) -> list[dict[str, Any]]:
    """One row per seed: its stats, wall time, and the liveness bound of the profile it drew.

    The bound depends on the seed's fault profile (its longest message delay), which a
    :class:`raft.sim.SimCluster` built for that seed draws on construction (cheap: nothing runs).
    """
    rows = []
    for r in results:
        profile = config.profile or SimCluster(r.seed, config).profile
        rows.append({"seed": r.seed, "ok": r.ok, "ticks": r.ticks, "wall_s": r.wall,
                     "bound": config.liveness_bound(profile), **r.stats})
    return rows


def plot_campaign(rows: Sequence[dict[str, Any]]) -> Any:
    """Three panels per seed: faults injected, commands proposed, slowest liveness window vs bound."""
    import matplotlib.pyplot as plt

    seeds = [r["seed"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    ax = axes[0]
    ax.bar(seeds, [r["crashes"] for r in rows], label="crashes")
    ax.bar(seeds, [r["partitions"] for r in rows], bottom=[r["crashes"] for r in rows],
           label="partitions")
    top = max([r["crashes"] + r["partitions"] for r in rows] + [1])
    ax.set_ylim(0, top * 1.3)  # room for the legend
    ax.set(title="faults injected", xlabel="seed", ylabel="count")
    ax.legend(fontsize="small", loc="upper center", ncol=2)
    ax = axes[1]
    ax.bar(seeds, [r["proposals"] for r in rows], color="tab:green")
    ax.set(title="commands proposed", xlabel="seed")
    ax = axes[2]
    ax.scatter(seeds, [max(r["max_commit_latency"], 0.5) for r in rows], label="slowest commit")
    ax.scatter(seeds, [max(r["max_catchup_latency"], 0.5) for r in rows], marker="x",
               label="slowest catch-up")
    ax.plot(seeds, [r["bound"] for r in rows], "r--", label="liveness bound")
    ax.set_yscale("log")
    ax.set_ylim(1, 3e4)  # room above the bound for the legend
    ax.set(title="calm windows (ticks, log scale)", xlabel="seed")
    ax.legend(fontsize="small", loc="upper center", ncol=3, handletextpad=0.3, columnspacing=0.8)
    fig.tight_layout()
    return fig


_LOST_ENTRY = re.compile(r"committed entry \(index (\d+),")


def storyline(cluster: SimCluster, index: int | None = None, before: int = 0) -> str:
    """The events of a recorded run that tell the story of one log index.

    ``index`` defaults to the committed entry a leader-completeness report says was lost. Kept:
    proposals at that index, crashes and restarts, peers becoming leader, commit advances that cross
    the index, and the violation, from the first proposal at the index (minus ``before`` ticks) on.
    Needs a run made with ``SimConfig(record=True)``.
    """
    events: list[Event] = cluster.trace.full or []
    if index is None:
        v = next((e for e in events if e[1] == "violation"), None)
        m = _LOST_ENTRY.search(str(v[3])) if v else None
        if m is None:
            raise ValueError("no leader-completeness violation naming an index; pass index=")
        index = int(m.group(1))
    at = f"-> index {index} "
    start = next((e[0] for e in events if e[1] == "propose" and at in e[3]), 0) - before

    def crosses(detail: str) -> bool:
        lo, hi = (int(x) for x in detail.split(" -> "))
        return lo < index <= hi

    keep = []
    for e in events:
        tick, kind, _, detail = e
        if tick < start:
            continue
        if (kind in ("crash", "restart", "violation")
                or (kind == "propose" and at in detail)
                or (kind == "role" and detail.startswith("leader "))
                or (kind == "commit" and crosses(detail))):
            keep.append(format_event(e))
    return "\n".join(keep)


# --------------------------------------------------------------------------------------------------
# 3. Raft on Ray
# --------------------------------------------------------------------------------------------------


def plot_demo_rpcs(report: Any) -> Any:
    """RPCs each peer of a :class:`raykv.DemoReport` received, with its role at the end."""
    import matplotlib.pyplot as plt

    rows = report.peer_rows
    fig, ax = plt.subplots(figsize=(6, 3))
    colors = ["tab:red" if r.role == "leader" else "tab:blue" for r in rows]
    ax.bar([f"peer{r.peer}{'*' if r.restarted else ''}" for r in rows],
           [r.rpcs_received for r in rows], color=colors)
    ax.set(title="requests received per peer (red: leader at the end, *: restarted)", ylabel="RPCs")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------------
# 4. The linearizability checker
# --------------------------------------------------------------------------------------------------


def record_kv_history(clients: int = 3, rounds: int = 3, keys: Sequence[str] = ("x",),
                      pause_s: float = 0.002) -> list[Operation]:
    """Run ``clients`` threads against a dict guarded by a lock and record what they saw.

    Each client, ``rounds`` times: append ``"c.i;"`` to a key, then get it. ``pause_s`` is slept
    inside each operation but outside the lock, so that operations of different clients overlap.
    """
    store: dict[str, str] = {}
    lock = threading.Lock()
    rec = Recorder()

    def clerk(c: int) -> None:
        for i in range(rounds):
            key = keys[(c + i) % len(keys)]
            with rec.operation(c, ("append", key, f"{c}.{i};")):
                time.sleep(pause_s)
                with lock:
                    store[key] = store.get(key, "") + f"{c}.{i};"
            with rec.operation(c, ("get", key)) as op:
                with lock:
                    op.output = store.get(key, "")
                time.sleep(pause_s)

    threads = [threading.Thread(target=clerk, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return rec.history()


def format_history(history: Sequence[Operation], model: Any) -> str:
    """One line per operation, by call time: client, call..return in ms from the first call, what it did."""
    t0 = min(op.call for op in history)
    lines = []
    for op in sorted(history, key=lambda o: o.call):
        ret = "   ?   " if op.ret is None else f"{(op.ret - t0) / 1e6:7.2f}"
        lines.append(f"client {op.client}  {(op.call - t0) / 1e6:7.2f} .. {ret} ms  "
                     f"{model.describe_operation(op.input, op.output)}")
    return "\n".join(lines)


@dataclass(frozen=True)
class Corruption:
    """Which read :func:`stale_read` changed, and how."""

    position: int
    read: Operation
    was: str
    now: str
    missing: Operation


def stale_read(history: Sequence[Operation]) -> tuple[list[Operation], Corruption]:
    """The same history with one read made stale: it misses an append that finished before it began.

    Picks the read that follows the most completed appends to its key and removes the last of them
    (by return time) from its result. No linearization can place that append after the read, so the
    corrupted history is certainly not linearizable.
    """
    best: tuple[int, int, Operation] | None = None
    for pos, op in enumerate(history):
        if op.input[0] != "get" or not op.output:
            continue
        done = [a for a in history if a.input[0] == "append" and a.input[1] == op.input[1]
                and a.ret is not None and a.ret < op.call and a.input[2] in op.output]
        if done and (best is None or len(done) > best[0]):
            best = (len(done), pos, max(done, key=lambda a: a.ret))
    if best is None:
        raise ValueError("no read follows a completed append: record a longer history")
    _, pos, missing = best
    read = history[pos]
    stale = read.output.replace(missing.input[2], "", 1)
    corrupted = list(history)
    corrupted[pos] = replace(read, output=stale)
    return corrupted, Corruption(pos, read, read.output, stale, missing)
