"""A simulated Raft cluster: N cores, a virtual network and clock, crashes, a service, checks.

Everything random comes from one ``random.Random(seed)``: the fault profile, the network, the fault
schedule, the clients, and the cores' election timeouts (the cores are handed the same generator).
Nothing reads a clock or the global ``random`` module, so a seed determines the run, byte for byte.

One tick of simulated time:

1. chaos (unless a liveness window is open): crashed peers whose downtime is over restart; a partition
   forms or heals; live peers crash, either at once or "armed" to crash at a chosen point of their
   next Ready (before persisting, after persisting but before sending, after sending some of the
   messages, or after sending but before applying);
2. clients propose a burst of commands to a random peer that believes it leads (stale leaders
   included); an operator asks such a peer for a membership change (``Profile.member_p``: add a
   non-member as a learner, promote a learner, remove a learner or a voter, the leader included),
   which the core accepts or refuses (:mod:`raft.membership`);
3. every live peer ticks;
4. every message due at this tick is delivered (or lost to a partition or a crashed receiver).

After each of these steps the peer's Ready is carried out exactly as the contract says (persist into
:class:`~raft.sim.storage.MemoryStorage`, then send, then apply to a
:class:`~raft.sim.service.CounterService`, which snapshots every ``snapshot_every`` entries) and the
:class:`~raft.sim.invariants.Invariants` are checked.

Liveness windows: every ``profile.calm_every`` ticks of chaos the cluster turns calm: every crashed
peer restarts, partitions heal, and the network stops losing and duplicating and delivers within
``calm_delay_max`` ticks (messages sent earlier keep their delays). Other clients pause; one client
proposes a probe command to whichever peer leads (a fresh one whenever a new leader appears), so
nothing but the probes themselves can push them to commit. A probe must be committed
within :meth:`SimConfig.liveness_bound` ticks of the start of the window
(``D + R * (2E + 2d) + 2d + h``: at most 996 ticks with the defaults), and then
applied by every member of the committed configuration within the same bound again (lagging peers
catch up by log or snapshot; peers removed from the group no longer receive the log);
otherwise the ``liveness`` invariant fails. Then chaos resumes. (The core appends no no-op entry when
it is elected, as the 6.5840 tests expect exact indexes, so a new leader can commit entries of earlier
terms only once it has an entry of its own: hence a fresh probe for every new leader.)
"""

from __future__ import annotations

import hashlib
import json
import random
import traceback
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from raft import trace
from raft.config import RaftConfig
from raft.membership import ADD_LEARNER, PROMOTE, REMOVE, ConfChangeRefused, Membership
from raft.node import LEADER, RaftNode
from raft.sim.config import Profile, SimConfig
from raft.sim.hunting import HUNTING_PROFILES
from raft.sim.invariants import Invariants, Violation
from raft.sim.network import VirtualNetwork
from raft.sim.reads import ReadChecker
from raft.sim.service import CounterService
from raft.sim.storage import MemoryStorage
from raft.sim.trace import EventLog
from raft.types import AppendEntries, AppendEntriesReply, InstallSnapshot, InstallSnapshotReply

#: Where an armed crash strikes while a Ready is carried out.
CRASH_POINTS = ("before persisting", "after persisting, before sending", "halfway through sending",
                "after sending, before applying")

NodeFactory = Callable[[RaftConfig, random.Random, Any], RaftNode]


class SimCluster:
    """One seeded run. Use :meth:`run`; a broken invariant raises :class:`Violation`."""

    def __init__(self, seed: int, config: SimConfig | None = None,
                 node_factory: NodeFactory = RaftNode) -> None:
        self.seed = seed
        self.config = config = config or SimConfig()
        self.rng = rng = random.Random(seed)
        self.trace = EventLog(config.tail, config.record)
        self.emit = emit = self.trace.emitter()
        self.profile: Profile = config.profile or Profile.draw(rng, config.election_ticks)
        self.node_factory = node_factory
        n = config.nodes
        self.ids = list(range(n))
        v = config.initial_voters
        self.raft_configs = [
            RaftConfig(peer_id=i, peers=tuple(range(v)), election_ticks=config.election_ticks,
                       heartbeat_ticks=config.heartbeat_ticks,
                       max_entries_per_append=config.max_entries_per_append,
                       max_inflight_appends=config.max_inflight_appends, pre_vote=config.pre_vote,
                       check_quorum=config.check_quorum, leader_noop=config.leader_noop,
                       join=i >= v)
            for i in self.ids
        ]
        self.net = VirtualNetwork(n, rng, emit)
        self.net.apply_profile(self.profile)
        self.storage = [MemoryStorage() for _ in self.ids]
        self.nodes: list[RaftNode | None] = [None] * n
        self.services: list[CounterService | None] = [None] * n
        self.inv = Invariants(self.nodes, emit, Membership(frozenset(range(v))))
        for i in self.ids:
            self.nodes[i] = self._new_core(i)
            self.services[i] = CounterService()
        self.armed = [-1] * n
        self.restart_at = [0] * n
        self.heal_at = 0
        self.now = 0
        self.next_command = 1
        self.bound = config.liveness_bound(self.profile)
        self.calm_since: int | None = None
        self.next_calm = self.profile.calm_every
        self.probes: list[tuple[int, int]] = []  # (index, command) of each probe proposed
        self.probe_sent: set[tuple[int, int]] = set()  # (leader, term) pairs already probed
        self.probe_committed: tuple[int, int] | None = None  # (tick, index) of the first commit
        self.stats: dict[str, int] = {
            "ticks": 0, "proposals": 0, "crashes": 0, "restarts": 0, "partitions": 0,
            "snapshots": 0, "installs": 0, "calm_windows": 0, "max_commit_latency": 0,
            "max_catchup_latency": 0, "crash_before_persist": 0, "crash_before_send": 0,
            "crash_mid_send": 0, "crash_before_apply": 0, "conf_changes": 0, "conf_refused": 0,
            "conf_add_learner": 0, "conf_promote": 0, "conf_remove": 0,
        }
        self.reads = ReadChecker(n, self.inv, emit, self.stats) if config.reads else None

    # -- peers -----------------------------------------------------------------------------------

    def _new_core(self, i: int) -> RaftNode:
        node = self.node_factory(self.raft_configs[i], self.rng, self.storage[i].state())
        node.faults = self.config.faults
        return node

    def crash(self, i: int, why: str = "at once") -> None:
        old = self.nodes[i]
        if old is not None and trace.enabled("persist"):  # the decision log shows the crash too
            trace.log(i, old.term, "crashed", "persist", f"crashed ({why})")
        self.nodes[i] = None
        self.services[i] = None
        self.armed[i] = -1
        self.restart_at[i] = self.now + 1 + int(self.rng.random() * self.profile.restart_ticks_max)
        self.inv.on_crash(i)
        if self.reads is not None:
            self.reads.on_crash(i)
        self.stats["crashes"] += 1
        self.emit((self.now, "crash", i, why))

    def restart(self, i: int) -> None:
        node = self._new_core(i)
        snap = self.storage[i].snapshot
        svc = CounterService.decode(snap.data)
        if svc.applied != snap.index:
            self.inv.fail("applied-state", f"P{i}'s stored snapshot at {snap.index} holds service "
                                           f"state for index {svc.applied}")
        self.nodes[i] = node
        self.services[i] = svc
        self.inv.on_restart(i, node, svc)
        self.stats["restarts"] += 1
        self.emit((self.now, "restart", i, f"term {node.term}, vote {node.voted_for}, snapshot "
                                           f"{snap.index}, last index {node.log.last_index}"))

    def drive(self, i: int) -> None:
        """Carry out the peer's Ready batches: check, persist, send, apply (or crash midway)."""
        node = self.nodes[i]
        assert node is not None
        inv = self.inv
        rounds = 0
        while node.has_ready():
            rounds += 1
            if rounds > 1000:  # a core whose has_ready() never turns false would hang the run
                inv.fail("no-exception", f"P{i} ({node.role}, term {node.term}) still has work after "
                                         f"1000 Ready batches in one step: has_ready() never clears")
            rd = node.ready()
            inv.on_ready(i, node, rd)
            point = self.armed[i]
            if point == 0:
                self.stats["crash_before_persist"] += 1
                inv.on_lost_ready(i)
                self.crash(i, CRASH_POINTS[0])
                return
            self.storage[i].persist(rd)
            if point == 1:
                self.stats["crash_before_send"] += 1
                self.crash(i, CRASH_POINTS[1])
                return
            send = self.net.send
            if point == 2 and rd.messages:
                k = int(self.rng.random() * len(rd.messages))
                for m in rd.messages[:k]:
                    send(m)
                self.stats["crash_mid_send"] += 1
                self.crash(i, f"{CRASH_POINTS[2]} ({k} of {len(rd.messages)} sent)")
                return
            for m in rd.messages:
                send(m)
            if point >= 2:
                self.stats["crash_before_apply"] += 1
                self.crash(i, CRASH_POINTS[3])
                return
            svc = self.services[i]
            assert svc is not None
            snap = rd.apply_snapshot
            if snap is not None:
                svc = CounterService.decode(snap.data)
                if svc.applied != snap.index:
                    inv.fail("applied-state", f"P{i} installed a snapshot at {snap.index} holding "
                                              f"service state for index {svc.applied}")
                self.services[i] = svc
                inv.check_service(i, svc, f"installing snapshot {snap.index}")
                self.stats["installs"] += 1
                self.emit((self.now, "install", i, f"snapshot through {snap.index} (term {snap.term})"))
            if rd.committed_entries:
                inv.apply(i, svc, rd.committed_entries)
                if svc.applied - svc.snapshot_index >= self.profile.snapshot_every:
                    node.snapshot(svc.applied, svc.encode())
                    svc.snapshot_index = svc.applied
                    self.stats["snapshots"] += 1
                    self.emit((self.now, "snapshot", i, f"through {svc.applied}"))
            reads = self.reads
            if reads is not None:
                if rd.read_states or rd.reads_dropped:
                    reads.on_ready(i, node, rd)
                reads.serve(i, svc)

    def propose(self, i: int, count: int = 1) -> list[int]:
        """Propose ``count`` fresh commands to peer ``i``; returns the indexes it accepted them at."""
        node = self.nodes[i]
        assert node is not None
        out = []
        for _ in range(count):
            cmd = self.next_command
            self.next_command += 1
            index, term, ok = node.propose(cmd)
            self.emit((self.now, "propose", i, f"command {cmd} -> index {index} term {term}"
                       if ok else f"command {cmd} refused (not leader)"))
            if not ok:
                break
            out.append(index)
        self.stats["proposals"] += len(out)
        cp = self.profile.crash_on_propose_p
        if out and cp and self.calm_since is None and self.armed[i] < 0 and self.rng.random() < cp:
            # The worst moment to crash: the new entries reach some followers, or none.
            self.armed[i] = 2
        if node.has_ready():
            self.drive(i)
        return out

    # -- the fault schedule ------------------------------------------------------------------

    def _chaos(self) -> None:
        t = self.now
        rng = self.rng
        r = rng.random
        p = self.profile
        nodes = self.nodes
        for i in self.ids:
            if nodes[i] is None and self.restart_at[i] <= t:
                self.restart(i)
        net = self.net
        if self.heal_at:
            if t >= self.heal_at:
                self.heal_at = 0
                net.heal()
                self.emit((t, "heal", -1, None))
                trace.note("fault", "heal: every link works again")
        elif p.partition_p and r() < p.partition_p:
            self._partition()
        if p.crash_p:
            for i in self.ids:
                if nodes[i] is not None and self.armed[i] < 0 and r() < p.crash_p:
                    if r() < 0.5:
                        self.crash(i)
                    else:
                        self.armed[i] = int(r() * len(CRASH_POINTS))

    def _partition(self) -> None:
        rng = self.rng
        n = len(self.ids)
        net = self.net
        kind = rng.randrange(5)
        if kind == 0:  # isolate one peer, the leader half of the time
            leaders = [i for i, nd in enumerate(self.nodes) if nd is not None and nd.is_leader]
            victim = rng.choice(leaders) if leaders and rng.random() < 0.5 else rng.randrange(n)
            net.split([1 if i == victim else 0 for i in range(n)])
        elif kind == 1:  # a minority against the majority
            k = 1 + rng.randrange(max(1, n // 2))
            minority = set(rng.sample(self.ids, k))
            net.split([1 if i in minority else 0 for i in range(n)])
        elif kind == 2:  # random groups: maybe nobody has a majority
            net.split([rng.randrange(3) for _ in range(n)])
        elif kind == 3:  # one-way: a peer hears nobody, or nobody hears it
            victim = rng.randrange(n)
            deaf = rng.random() < 0.5
            for j in range(n):
                if j != victim:
                    if deaf:
                        net.cut_link(j, victim)
                    else:
                        net.cut_link(victim, j)
        else:  # a bridge: two sides that both reach one peer but not each other
            order = self.ids[:]
            rng.shuffle(order)
            bridge, rest = order[0], order[1:]
            left = set(rest[: len(rest) // 2])
            for a in rest:
                for b in rest:
                    if (a in left) != (b in left):
                        net.cut_link(a, b)
            del bridge
        self.heal_at = self.now + 1 + int(rng.random() * self.profile.partition_ticks_max)
        self.stats["partitions"] += 1
        self.emit((self.now, "partition", -1, f"{net.describe()} until t={self.heal_at}"))
        trace.note("fault", f"partition {net.describe()}")

    def _clients(self) -> None:
        r = self.rng.random
        p = self.profile
        if r() < p.propose_p:
            leaders = [i for i, nd in enumerate(self.nodes) if nd is not None and nd.role == LEADER]
            if p.propose_all:
                for i in leaders:
                    self.propose(i, 1 + int(r() * p.burst_max))
            elif leaders:
                i = leaders[int(r() * len(leaders))]
                self.propose(i, 1 + int(r() * p.burst_max))
        reads = self.reads
        if reads is not None and r() < p.propose_p:
            leaders = [i for i, nd in enumerate(self.nodes) if nd is not None and nd.role == LEADER]
            for i in leaders if p.propose_all else leaders[int(r() * len(leaders)):][:1]:
                node = self.nodes[i]
                assert node is not None
                reads.request(i, node)
                if node.has_ready():
                    self.drive(i)

    def _membership(self) -> None:
        """An operator asks a random would-be leader for one membership change."""
        p = self.profile
        r = self.rng.random
        if not p.member_p or r() >= p.member_p:
            return
        leaders = [nd for nd in self.nodes if nd is not None and nd.role == LEADER]
        if not leaders:
            return
        node = leaders[int(r() * len(leaders))]
        cfg = node.membership
        ops = [(ADD_LEARNER, i) for i in self.ids if i not in cfg.members]
        for i in sorted(cfg.learners):
            pr = node.progress.get(i)
            caught_up = pr is not None and pr.match_index >= node.commit_index
            ops += [(PROMOTE, i)] * (6 if caught_up else 1) + [(REMOVE, i)]
        if len(cfg.voters) > 1:
            ops += [(REMOVE, i) for i in sorted(cfg.voters)]
        op, peer = ops[int(r() * len(ops))]
        try:
            index, term, _ = node.propose_conf_change(op, peer)
        except ConfChangeRefused as e:
            self.stats["conf_refused"] += 1
            self.emit((self.now, "member", node.id, f"{op} P{peer} refused: {e}"))
            return
        self.stats["conf_changes"] += 1
        self.stats["conf_" + op] += 1
        self.emit((self.now, "member", node.id, f"{op} P{peer} -> index {index} term {term}: "
                                                 f"{node.membership}"))
        if node.has_ready():
            self.drive(node.id)

    # -- liveness windows --------------------------------------------------------------------

    def _start_calm(self) -> None:
        t = self.now
        self.emit((t, "calm", -1, f"heal everything; a probe must commit by t={t + self.bound}"))
        for i in self.ids:
            self.armed[i] = -1
            if self.nodes[i] is None:
                self.restart(i)
        self.heal_at = 0
        self.net.calm(self.config.calm_delay_max)
        self.calm_since = t
        self.probes = []
        self.probe_sent = set()
        self.probe_committed = None
        self.stats["calm_windows"] += 1

    def _calm_tick(self) -> None:
        """One tick of a liveness window: knock on the leader's door, check the two deadlines."""
        t = self.now
        since = self.calm_since
        assert since is not None
        if self.probe_committed is None:
            committed = self.inv.committed
            for idx, cmd in self.probes:
                if idx < len(committed) and committed[idx].command == cmd:
                    self.probe_committed = (t, idx)
                    latency = t - since
                    self.stats["max_commit_latency"] = max(self.stats["max_commit_latency"], latency)
                    self.emit((t, "live", -1, f"probe committed at index {idx} after {latency} ticks"))
                    break
        if self.probe_committed is not None:
            at, idx = self.probe_committed
            members = self.inv.committed_config.members
            if all(s is not None and s.applied >= idx for i, s in enumerate(self.services)
                   if i in members):
                latency = t - at
                self.stats["max_catchup_latency"] = max(self.stats["max_catchup_latency"], latency)
                self.emit((t, "live", -1, f"every peer applied the probe {latency} ticks later"))
                self.calm_since = None
                self.next_calm = t + self.profile.calm_every
                self.net.apply_profile(self.profile)
                return
            if t - at > self.bound:
                behind = [f"P{i}@{s.applied}" for i, s in enumerate(self.services)
                          if s is not None and s.applied < idx and i in members]
                self.inv.fail("liveness", f"a probe committed at index {idx} at t={at} but "
                                          f"{', '.join(behind)} had not applied it {self.bound} ticks "
                                          f"later")
        elif t - since > self.bound:
            roles = ", ".join(f"P{i}:{nd.role}/T{nd.term}" for i, nd in enumerate(self.nodes)
                              if nd is not None)
            self.inv.fail("liveness", f"no command committed within {self.bound} ticks of a healed, "
                                      f"calm network (since t={since}); peers: {roles}")
        # Like a real client, send a fresh probe to every new leader: without one, a new leader has
        # no entry of its own term and cannot commit (or announce) the entries of earlier terms.
        best: RaftNode | None = None
        for nd in self.nodes:
            if nd is not None and nd.role == LEADER and (best is None or nd.term > best.term):
                best = nd
        if best is not None and (best.id, best.term) not in self.probe_sent:
            self.probe_sent.add((best.id, best.term))
            cmd = self.next_command
            self.next_command += 1
            index, term, ok = best.propose(cmd)
            self.emit((t, "propose", best.id, f"probe {cmd} -> index {index} term {term}"))
            if ok:
                self.probes.append((index, cmd))
                if best.has_ready():
                    self.drive(best.id)

    # -- running -----------------------------------------------------------------------------

    def tick(self) -> None:
        """Advance the simulation by one tick (all four phases)."""
        self.now = t = self.now + 1
        self.net.now = t
        self.inv.now = t
        self.emit((t, "tick", -1, None))
        if self.calm_since is None:
            if t >= self.next_calm:
                self._start_calm()
            else:
                self._chaos()
        if self.calm_since is not None:
            self._calm_tick()
        else:
            self._clients()
            self._membership()
        nodes = self.nodes
        drive = self.drive
        for i in self.ids:
            node = nodes[i]
            if node is not None:
                node.tick()
                if node.has_ready():
                    drive(i)
        reach = self.net.reach
        emit = self.emit
        on_ack = self.inv.on_ack
        for m in self.net.take(t):
            d = m.dst
            node = nodes[d]
            if node is None:
                emit((t, "down", d, m))
            elif not reach[m.src][d]:
                emit((t, "cut", d, m))
            else:
                emit((t, "deliver", d, m))
                tm = type(m)
                led = node.term if node.role == LEADER and tm is not AppendEntries and \
                    tm is not InstallSnapshot else -1
                node.step(m)
                if node.has_ready():
                    drive(d)
                if led >= 0 and nodes[d] is not None:
                    self.inv.on_leader_message(d, node, m, led)
                if (tm is AppendEntriesReply and m.success) or tm is InstallSnapshotReply:
                    node = nodes[d]
                    if node is not None:
                        on_ack(d, node, m.src, m.term, m.match_index)
        if self.config.paranoid:
            self.inv.full_check(self.services)

    def run(self, ticks: int | None = None) -> None:
        """Run ``ticks`` (default: the config's) more ticks, then check everything from scratch.

        A broken invariant raises :class:`Violation` carrying the seed, the trace tail and the
        command that replays the run.
        """
        try:
            for _ in range(self.config.ticks if ticks is None else ticks):
                self.tick()
            self.inv.full_check(self.services)
        except Violation as v:
            self._annotate(v)
            raise
        except Exception as e:  # the core's own assertions are safety checks too
            frame = traceback.extract_tb(e.__traceback__)[-1]
            v = Violation("no-exception", f"{type(e).__name__}: {e} (raised at {frame.filename}:"
                                          f"{frame.lineno} in {frame.name})", self.now)
            self._annotate(v)
            raise v from e
        finally:
            self.stats["ticks"] = self.now

    def _annotate(self, v: Violation) -> None:
        self.emit((self.now, "violation", -1, f"{v.invariant}: {v.detail}"))
        v.seed = self.seed
        v.tail = self.trace.tail_text()
        v.replay = self.replay_command()

    def replay_command(self) -> str:
        """The command line that re-runs this seed with this configuration."""
        c = self.config
        cmd = f"python -m raft.sim --replay {self.seed} --ticks {c.ticks} --nodes {c.nodes}"
        if c.voters is not None:
            cmd += f" --voters {c.voters}"
        if c.election_ticks != 10 or c.heartbeat_ticks != 2:
            cmd += f" --election-ticks {c.election_ticks} --heartbeat-ticks {c.heartbeat_ticks}"
        for flag in ("pre_vote", "check_quorum", "leader_noop", "reads"):
            if getattr(c, flag):
                cmd += " --" + flag.replace("_", "-")
        for f in sorted(c.faults):
            cmd += f" --fault {f}"
        if c.profile is not None:
            if len(c.faults) == 1 and HUNTING_PROFILES.get(next(iter(c.faults))) == c.profile:
                cmd += " --hunt"
            else:
                cmd += f" --profile '{json.dumps(asdict(c.profile), separators=(',', ':'))}'"
        return cmd

    def fingerprint(self) -> str:
        """A digest of the final state of every peer, its storage and its service, plus the stats."""
        h = hashlib.blake2b(digest_size=16)
        for i in self.ids:
            nd, st, svc = self.nodes[i], self.storage[i], self.services[i]
            if nd is not None:
                h.update(repr((nd.status(), nd.log.last_term)).encode())
            h.update(repr((st.hard_state, st.snapshot.index, st.last_index)).encode())
            if svc is not None:
                h.update(svc.encode())
        h.update(repr(sorted(self.stats.items())).encode())
        h.update(repr(sorted(self.net.stats.items())).encode())
        return h.hexdigest()
