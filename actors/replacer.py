"""Replacing lost replicas, the shell: a background task of every replica, active while it leads.

Every :data:`DEFAULT_PERIOD_S` the leader of a group that has a *directory* (``spec.extra["replace"]``,
a :class:`ReplaceOptions`) gathers what it knows into a :class:`~actors.replacement_plan.GroupView`
(its configuration and progress from its Raft core; which members Ray reports dead, by calling each
member's :meth:`~actors.replica.ReplicaActor.node_id`; the group's slots, the replacement in progress
and the service's load per node from the directory; the live nodes when it must spawn), asks
:func:`~actors.replacement_plan.plan` for the next step and carries it out:

- ``Spawn``: asks the directory to create the replacement (the directory owns it, so it does not die
  with this leader: a Ray actor is fate-shared with its owner) in the dead replica's slot, on the
  chosen node, with this replica's spec as the template (a fresh peer id, ``join=True``, new storage);
- ``Wire``: starts the new replica knowing every member, tells every member how to reach it
  (:meth:`~actors.replica.ReplicaActor.add_peer`), proposes ``add_learner``. How a member is reached
  is the leader's own transport's: an actor handle on the direct transport; on the stream transport
  the address of its listener, which the leader first has the new replica open
  (:meth:`~actors.replica.ReplicaActor.open_stream`, with the service's secret, which the leader holds
  and hands over through Ray) and then starts it knowing every member's address (the network
  transport's ends are made by whoever builds the network: a group on it waits instead);
- ``Promote`` / ``Remove``: :meth:`~actors.replica.ReplicaActor.change_membership` (a refusal of the
  core, e.g. not caught up, is retried next round);
- ``Finish`` / ``Abandon``: tells the directory.

Nothing here is needed for a group to work: without a directory the task is not started. Nothing
depends on the driver that started the service, and nothing on one particular replica: whichever
replica leads does it, and a new leader continues from the directory and the log.

**The directory** is an actor handle with these methods (``raykv.sharded``'s registry implements
them; any layer above may):

- ``replacement_view(gid) -> dict | None``: ``{"target": n, "slots": {peer: (slot, node, handle)},
  "in_progress": (slot, old, new, node) | None, "load": {node: replicas}}``; ``None`` when the group
  is gone or the service is stopping (nothing is replaced then);
- ``spawn_replacement(gid, old, slot, node, actor_class, template_spec, detected_at) ->
  (new_peer, handle) | str`` (a reason when it cannot);
- ``abandon_replacement(gid, new_peer)`` and ``finish_replacement(gid, old, new_peer)``.

Logged on the ``raykv.replace`` logger (a WARNING when a member is found dead and when its
replacement is done, INFO for each step), and on the ``replace`` topic of ``RAYKV_LOG``
(:mod:`raft.trace`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import ray
from ray.exceptions import ActorDiedError

from actors.placement import BUNDLE_CPU, alive_nodes
from actors.replacement_plan import (
    Abandon,
    Action,
    Finish,
    GroupView,
    Idle,
    InProgress,
    NeedNodes,
    Promote,
    Remove,
    Spawn,
    Wait,
    Wire,
    plan,
)
from actors.transport import DirectTransport, StreamTransport
from raft import trace
from raft.membership import ADD_LEARNER, PROMOTE, REMOVE, ConfChangeRefused

if TYPE_CHECKING:
    from actors.replica import ReplicaActor

log = logging.getLogger("raykv.replace")

#: how often the leader looks for dead members
DEFAULT_PERIOD_S = 0.5
#: deadline of one call to the directory or a member
CALL_TIMEOUT_S = 5.0
#: deadline of one probe of a member (an unanswered probe is neither alive nor dead)
PROBE_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class ReplaceOptions:
    """``spec.extra["replace"]``: the group's ``gid`` in the service and the ``directory`` actor (see
    the module docstring); ``period_s`` between two rounds."""

    directory: Any
    gid: int
    period_s: float = DEFAULT_PERIOD_S


class Replacer:
    """The leader's side of replacing lost replicas for one replica actor (see the module docstring).

    ``last`` is the last step taken or the reason for waiting (shown by the replica's ``status()``).
    State kept here is only an optimisation (who was told what, when a member was first seen dead): a
    new leader starts without it and reaches the same decisions.
    """

    def __init__(self, replica: ReplicaActor, options: ReplaceOptions) -> None:
        _log_to_stderr()
        self.replica = replica
        self.options = options
        self.last: str | None = None
        self._first_dead: dict[int, float] = {}
        self._told: set[tuple[int, int, str]] = set()
        self._node: str | None = None

    # -- the loop --------------------------------------------------------------------------------

    async def run(self, inc: int) -> None:
        r = self.replica
        while inc == r.incarnation:
            await asyncio.sleep(self.options.period_s)
            core = r.core
            if inc != r.incarnation or core is None or not core.is_leader:
                continue
            try:
                await self._round(inc)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug or a failed call: log it; the next round tries again
                log.exception("replica %s: replacing lost replicas failed this round", r.spec.name)

    def _leading(self, inc: int, core: Any) -> bool:
        r = self.replica
        return inc == r.incarnation and r.core is core and core.is_leader

    async def _round(self, inc: int) -> None:
        r, gid = self.replica, self.options.gid
        core = r.core
        assert core is not None
        info = await _ask(self.options.directory.replacement_view.remote(gid))
        if info is None or not self._leading(inc, core):
            return
        slots: dict[int, tuple[int, str | None, Any]] = info["slots"]
        rec = InProgress(*info["in_progress"]) if info["in_progress"] is not None else None
        m = core.membership
        me = core.id
        handles = {p: h for p, (_, _, h) in slots.items()}
        probe = {p: handles[p] for p in (m.members | ({rec.new} if rec else set())) - {me} if p in handles}
        alive, dead = await _probe(probe)
        if not self._leading(inc, core):
            return
        now = time.time()
        for p in dead:
            if p not in self._first_dead:
                self._first_dead[p] = now
                if p in m.members:
                    log.warning("group %d (%s): Ray reports replica P%d dead (it ran on node %s)", gid,
                                r.spec.name, p, _short(slots[p][1] if p in slots else None))
        if self._node is None:
            self._node = str(ray.get_runtime_context().get_node_id())
        nodes = {p: node for p, (_, node, _) in slots.items()} | alive | {me: self._node}
        slot_of = {p: s for p, (s, _, _) in slots.items()} | ({rec.old: rec.slot} if rec else {})
        log_ = core.log
        view = GroupView(target=int(info["target"]), voters=m.voters, learners=m.learners,
                         change_pending=log_.configs.current_index > log_.commit, commit=log_.commit,
                         match={p: pr.match_index for p, pr in core.progress.items()},
                         dead=frozenset(dead), nodes=nodes, slots=slot_of, load=dict(info["load"]),
                         in_progress=rec)
        action = plan(view)
        if isinstance(action, NeedNodes):
            live = await asyncio.get_running_loop().run_in_executor(
                None, functools.partial(alive_nodes, BUNDLE_CPU))
            if not self._leading(inc, core):
                return
            action = plan(replace(view, live_nodes=tuple(live)))
        await self._tell(inc, core, handles, alive, dead, rec)
        if self._leading(inc, core):
            await self._act(inc, core, action, handles, alive, dead, rec, slots)

    # -- carrying out one step -------------------------------------------------------------------

    async def _act(self, inc: int, core: Any, action: Action, handles: dict[int, Any], alive: dict[int, str],
                   dead: set[int], rec: InProgress | None,
                   slots: dict[int, tuple[int, str | None, Any]]) -> None:
        r, gid, d = self.replica, self.options.gid, self.options.directory
        match action:
            case Idle():
                if self.last is not None and not self.last.startswith("idle"):
                    self._note("idle: every member alive")
            case Wait(reason=reason):
                if self.last != f"waiting: {reason}":
                    self._note(f"waiting: {reason}")
            case Spawn(old=old, slot=slot, node=node):
                cls = getattr(type(r), "__ray_actor_class__", type(r))
                got = await _ask(d.spawn_replacement.remote(gid, old, slot, node, cls, r.spec,
                                                            self._first_dead.get(old, time.time())))
                if isinstance(got, str):
                    self._note(f"waiting: the directory cannot spawn a replacement of P{old} yet: {got}")
                else:
                    self._note(f"spawned P{got[0]} in slot {slot} on node {_short(node)} to replace dead "
                               f"P{old}", warn=True)
            case Wire(peer=new):
                await self._wire(inc, core, new, handles, alive, dead)
            case Promote(peer=p):
                await self._change(inc, core, PROMOTE, p, "caught up")
            case Remove(peer=p, reason=why):
                await self._change(inc, core, REMOVE, p, why)
            case Finish(old=old, new=new):
                await _ask(d.finish_replacement.remote(gid, old, new))
                since = self._first_dead.pop(old, None)
                took = f" ({time.time() - since:.1f} s after it was found dead)" if since is not None else ""
                self._note(f"replaced dead P{old} by P{new} (slot {rec.slot if rec else '?'}, node "
                           f"{_short(rec.node if rec else None)}): the group is back to its voters{took}",
                           warn=True)
            case Abandon(peer=new):
                await _ask(d.abandon_replacement.remote(gid, new))
                self._note(f"abandoned P{new}: it died before it joined; a new replacement follows",
                           warn=True)

    async def _wire(self, inc: int, core: Any, new: int, handles: dict[int, Any], alive: dict[int, str],
                    dead: set[int]) -> None:
        r = self.replica
        h = handles.get(new)
        if h is None:
            return
        stream = isinstance(r.transport, StreamTransport)
        if not stream and not isinstance(r.transport, DirectTransport):
            self._note("waiting: replacing replicas needs the stream or the direct transport")
            return
        st = await _ask(h.status.remote())
        if not self._leading(inc, core):
            return
        if st.get("incarnation", 0) == 0:  # never started: start it knowing every live member
            members = [p for p in core.membership.members if p in handles and p not in dead and p != new]
            if stream:
                secret = r._stream_secret  # the service's: it travels to the new replica through Ray only
                await _ask(h.open_stream.remote(secret))
                known = await r.stream_peers()
                peers: dict[int, Any] = {p: known[p] for p in members if p in known}
                missing = [p for p in members if p not in known and p != core.id]
                if missing:
                    found = await asyncio.gather(*(_ask(handles[p].stream_address.remote()) for p in missing),
                                                 return_exceptions=True)
                    peers |= {p: tuple(a) for p, a in zip(missing, found, strict=True)
                              if isinstance(a, (tuple, list))}
                unknown = sorted(p for p in members if p not in peers)
                if unknown:  # it would never learn them: start it once every live member's address is known
                    self._note(f"waiting: the stream address of {', '.join(f'P{p}' for p in unknown)} is not "
                               f"known yet; P{new} starts once it is")
                    return
                transport: tuple = ("stream", secret, peers)
            else:
                me = ray.get_runtime_context().current_actor
                direct = {p: handles[p] for p in members}
                direct[core.id] = me
                transport = ("direct", direct)
            await _ask(h.start.remote(1, transport), timeout=60.0)
            self._note(f"started P{new}")
        await self._tell(inc, core, handles, alive, dead, None, also=new)
        await self._change(inc, core, ADD_LEARNER, new, "a new replica")

    async def _tell(self, inc: int, core: Any, handles: dict[int, Any], alive: dict[int, str],
                    dead: set[int], rec: InProgress | None, also: int | None = None) -> None:
        """Make sure every live member (this leader included) knows how to reach every member that
        joined after it was built (and ``also``, about to join): its actor handle, or on the stream
        transport its listener's address (asked of its actor; one whose listener is not open yet is
        told next round)."""
        r = self.replica
        bootstrap = set(r.spec.peers)
        joined = {p for p in core.membership.members if p not in bootstrap and p in handles and p not in dead}
        if also is not None:
            joined.add(also)
        if rec is not None and rec.new in core.membership.members and rec.new not in dead:
            joined.add(rec.new)
        if not joined:
            return
        stream = isinstance(r.transport, StreamTransport)
        targets = [p for p in core.membership.members if p == core.id or p in alive]
        calls = []
        for q in sorted(joined):
            key = repr(handles[q]._actor_id)
            todo = [t for t in targets if t != q and (t, q, key) not in self._told]
            if not todo:
                continue
            endpoint: Any = handles[q]
            if stream:
                try:
                    endpoint = await _ask(handles[q].stream_address.remote())
                except Exception:  # unreachable now: told next round
                    continue
                if endpoint is None:
                    continue
                endpoint = tuple(endpoint)
            for t in todo:
                if t == core.id:
                    await r.add_peer(q, endpoint)
                    self._told.add((t, q, key))
                else:
                    calls.append(((t, q, key), handles[t].add_peer.remote(q, endpoint)))
        for told, ref in calls:
            try:
                await asyncio.wait_for(ref, CALL_TIMEOUT_S)
            except Exception:  # unreachable now: told again next round
                continue
            self._told.add(told)

    async def _change(self, inc: int, core: Any, op: str, peer: int, why: str) -> None:
        if not self._leading(inc, core):
            return
        try:
            idx, _, ok = await self.replica.change_membership(op, peer)
        except ConfChangeRefused as exc:
            self._note(f"waiting: {op} P{peer} refused for now: {exc}")
            return
        if ok:
            self._note(f"proposed {op} P{peer} at index {idx} ({why})")

    def _note(self, text: str, warn: bool = False) -> None:
        r = self.replica
        self.last = text
        (log.warning if warn else log.info)("group %d (%s): %s", self.options.gid, r.spec.name, text)
        core = r.core
        if core is not None and trace.enabled("replace"):
            trace.log(core.id, core.term, core.role, "replace", text)


def _log_to_stderr() -> None:
    """In a Ray worker nothing configures logging (Python's last-resort handler shows WARNINGs only):
    the steps of a replacement, at INFO, go to the worker's stderr (its Ray log) too, one line each."""
    if not log.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s raykv.replace %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


async def _ask(ref: Any, timeout: float = CALL_TIMEOUT_S) -> Any:
    return await asyncio.wait_for(ref, timeout)


async def _probe(handles: dict[int, Any]) -> tuple[dict[int, str], set[int]]:
    """Ask each member (all at once, each within :data:`PROBE_TIMEOUT_S`) where it runs: ``(alive: peer
    -> node, dead)``. Only Ray's word that the actor is dead counts as dead; a member that does not
    answer in time (or is briefly unavailable, as while Ray decides that a silent node is dead) is
    neither."""

    async def one(h: Any) -> str:
        return str(await asyncio.wait_for(h.node_id.remote(), PROBE_TIMEOUT_S))

    peers = list(handles)
    got = await asyncio.gather(*(one(handles[p]) for p in peers), return_exceptions=True)
    alive: dict[int, str] = {}
    dead: set[int] = set()
    for p, answer in zip(peers, got, strict=True):
        if isinstance(answer, ActorDiedError):
            dead.add(p)
        elif isinstance(answer, str):
            alive[p] = answer
    return alive, dead


def _short(node: str | None) -> str:
    return "?" if node is None else node[:8]
