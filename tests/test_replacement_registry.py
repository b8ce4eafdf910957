"""The sharded service's registry as the directory of replacements (raykv/sharded.py), without a Ray
runtime: Ray's actor creation is replaced by a recorder, so what is checked is the bookkeeping (the
slots, the peer ids, the records, what ``get()`` and ``status()`` show, what a driver's write cannot
undo, what a stopping service refuses).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

import raykv.sharded as sharded
from actors.placement import GroupPlacement
from actors.replica import ReplicaSpec
from actors.storage import FileStorage, MemoryStorage
from raykv.sharded import GroupInfo, ServiceInfo, ServiceRegistry
from raykv.sharded_status import GroupStatus, ReplicaReplacement, ServiceStatus

#: node ids (Ray checks that a node affinity names a well-formed one)
N = {k: f"{k:02x}" * 28 for k in range(1, 10)}


@dataclass
class _Made:
    """What the fake ``ray.remote`` was asked to create."""

    options: list[dict[str, Any]] = field(default_factory=list)
    specs: list[ReplicaSpec] = field(default_factory=list)
    taken: set[str] = field(default_factory=set)
    killed: list[Any] = field(default_factory=list)


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> _Made:
    rec = _Made()

    class _Cls:
        def options(self, **opts: Any) -> Any:
            outer = self

            class _Starter:
                def remote(self, spec: ReplicaSpec) -> str:
                    if opts["name"] in rec.taken:
                        raise ValueError(f"The name {opts['name']} is already taken")
                    rec.options.append(opts)
                    rec.specs.append(spec)
                    return f"handle-{spec.name}-p{spec.peer_id}"

            del outer
            return _Starter()

    class _Ctx:
        current_actor = "registry-handle"

    monkeypatch.setattr(sharded.ray, "remote", lambda **kw: (lambda cls: _Cls()))
    monkeypatch.setattr(sharded.ray, "get_runtime_context", lambda: _Ctx())
    monkeypatch.setattr(sharded.ray, "kill", lambda h, no_restart=True: rec.killed.append(h))
    return rec


def _group(gid: int, name: str, storage: bool = True) -> GroupInfo:
    return GroupInfo(gid, name, tuple(f"h-{name}-{i}" for i in range(3)),
                     tuple(f"{name}-{i}" for i in range(3)), (N[1], N[2], N[3]),
                     f"/data/{name}" if storage else None, GroupPlacement(name, 3, "spread"))


def _info(version: int = 1) -> ServiceInfo:
    return ServiceInfo("svc", "ns", 10, "hash", 3, "durable", False, "/data", "strict",
                       _group(0, "svc-ctrler"), (_group(1, "svc-g1"), _group(2, "svc-g2")), version=version)


def _spec() -> ReplicaSpec:
    return ReplicaSpec(name="svc-g1-1", peer_id=1, peers=(0, 1, 2), state_machine=dict, extra={"gid": 1})


def test_the_view_lists_slots_and_load() -> None:
    reg = ServiceRegistry()
    assert reg.replacement_view(1) is None  # nothing registered yet
    assert reg.put(_info(), None)
    view = reg.replacement_view(1)
    assert view is not None
    assert view["target"] == 3 and view["in_progress"] is None
    assert view["slots"] == {0: (0, N[1], "h-svc-g1-0"), 1: (1, N[2], "h-svc-g1-1"),
                             2: (2, N[3], "h-svc-g1-2")}
    assert view["load"] == {N[1]: 3, N[2]: 3, N[3]: 3}
    assert reg.replacement_view(0) is not None and reg.replacement_view(7) is None


def test_spawn_wire_finish_bookkeeping(made: _Made) -> None:
    reg = ServiceRegistry()
    reg.put(_info(), None)
    got = reg.spawn_replacement(1, 0, 0, N[4], object, _spec(), 100.0)
    assert got == (3, "handle-svc-g1-0-p3")
    spec, opts = made.specs[0], made.options[0]
    # the slot's name, a fresh peer id, joining, storage of its own, the directory for its own replacer
    assert (spec.name, spec.peer_id, spec.join, spec.peers) == ("svc-g1-0", 3, True, (0, 1, 2))
    assert spec.storage.func is FileStorage and spec.storage.args == ("/data/svc-g1/replica0-p3",)
    assert spec.storage.keywords["new"] is True
    assert spec.extra["gid"] == 1 and spec.extra["replace"].gid == 1
    assert spec.extra["replace"].directory == "registry-handle"
    assert opts["name"] == "svc-g1-0" and opts["namespace"] == "ns" and "lifetime" not in opts
    assert opts["scheduling_strategy"].node_id == N[4] and opts["scheduling_strategy"].soft is False
    # asked again (a leader that lost the answer): the same replacement, nothing new made
    assert reg.spawn_replacement(1, 0, 0, N[4], object, _spec(), 100.0) == (3, "handle-svc-g1-0-p3")
    assert len(made.specs) == 1
    # one replacement at a time per group; the other groups are independent
    assert "already replacing" in str(reg.spawn_replacement(1, 1, 1, N[4], object, _spec(), 1.0))
    view = reg.replacement_view(1)
    assert view is not None and view["in_progress"] == (0, 0, 3, N[4])
    assert view["slots"][3] == (0, N[4], "handle-svc-g1-0-p3") and 0 not in view["slots"]
    info = reg.get()
    assert info is not None
    g1 = info.group(1)
    assert g1 is not None and g1.peers == (3, 1, 2) and g1.nodes == (N[4], N[2], N[3])
    assert g1.replicas[0] == "handle-svc-g1-0-p3" and g1.replacements[0].outcome == "in progress"
    # a driver's write (with the version it read) does not undo the slots
    assert reg.put(info, 1)
    reg.finish_replacement(1, 0, 3)
    info = reg.get()
    assert info is not None and info.version == 1
    g1 = info.group(1)
    assert g1 is not None and g1.peers == (3, 1, 2)
    (r,) = g1.replacements
    assert (r.slot, r.old_peer, r.new_peer, r.old_node, r.new_node) == (0, 0, 3, N[1], N[4])
    assert r.detected == 100.0
    assert r.outcome == "done" and r.finished is not None and r.finished >= r.started
    view = reg.replacement_view(1)
    assert view is not None and view["in_progress"] is None
    # the next replacement takes the next peer id
    assert reg.spawn_replacement(1, 1, 1, N[1], object, _spec(), 1.0) == (4, "handle-svc-g1-1-p4")


def test_refusals_and_abandon(made: _Made) -> None:
    reg = ServiceRegistry()
    reg.put(_info(), None)
    assert "does not hold P5" in str(reg.spawn_replacement(1, 5, 0, N[4], object, _spec(), 1.0))
    made.taken.add("svc-g1-0")  # the dead replica's name is not released yet
    assert "cannot create svc-g1-0 yet" in str(reg.spawn_replacement(1, 0, 0, N[4], object, _spec(), 1.0))
    assert made.killed == ["h-svc-g1-0"]  # the dead replica, killed: that releases its name
    made.taken.clear()
    made.killed.clear()
    assert reg.spawn_replacement(1, 0, 0, N[4], object, _spec(), 1.0) == (3, "handle-svc-g1-0-p3")
    reg.abandon_replacement(1, 3)  # it died before it joined: killed, the slot as before
    assert made.killed == ["handle-svc-g1-0-p3"]
    info = reg.get()
    assert info is not None
    g1 = info.group(1)
    assert g1 is not None and g1.peers == (0, 1, 2) and g1.replicas[0] == "h-svc-g1-0"
    assert [r.outcome for r in g1.replacements] == ["abandoned"]
    assert reg.spawn_replacement(1, 0, 0, N[4], object, _spec(), 1.0) == (4, "handle-svc-g1-0-p4")


def test_memory_storage_detached_and_removed_groups(made: _Made) -> None:
    reg = ServiceRegistry()
    info = _info()
    info = ServiceInfo(**{**info.__dict__, "storage": "memory", "detached": True})
    reg.put(info, None)
    assert reg.spawn_replacement(2, 2, 2, N[9], object, _spec(), 1.0) == (3, "handle-svc-g2-2-p3")
    assert made.specs[0].storage is MemoryStorage and made.options[0]["lifetime"] == "detached"
    # the group leaves: its slots are forgotten and nothing more is replaced for it
    cur = reg.get()
    assert cur is not None
    reg.put(ServiceInfo(**{**cur.__dict__, "groups": (cur.groups[0],), "version": 2}), 1)
    assert 2 not in reg.slots and reg.replacement_view(2) is None
    assert "gone" in str(reg.spawn_replacement(2, 0, 0, N[9], object, _spec(), 1.0))


def test_a_stopping_service_replaces_nothing(made: _Made) -> None:
    reg = ServiceRegistry()
    reg.put(_info(), None)
    assert reg.stopping() is not None
    assert reg.replacement_view(1) is None and reg.replacement_view(0) is None
    assert "stopping" in str(reg.spawn_replacement(1, 0, 0, N[4], object, _spec(), 1.0))
    assert made.specs == []


def test_status_full_strength_and_format() -> None:
    r = ReplicaReplacement(0, 0, 3, "aaaaaaaaaa", "bbbbbbbbbb", 10.0, 11.0, 14.5, "done")
    g = GroupStatus(1, "svc-g1", ("leader", "follower", "follower"), 0, 3, 4, owned=(1, 2),
                    nodes=("x", "y", "z"), voters=(1, 2, 3), peers=(3, 1, 2), replacements=(r,))
    assert g.full_strength
    assert not GroupStatus(**{**g.__dict__, "learners": (4,)}).full_strength
    assert not GroupStatus(**{**g.__dict__, "voters": (0, 1, 2, 3)}).full_strength
    assert not GroupStatus(**{**g.__dict__, "nodes": ("x", "x", "z")}).full_strength
    assert not GroupStatus(**{**g.__dict__, "roles": ("leader", "follower", "unreachable")}).full_strength
    ctrler = GroupStatus(0, "svc-ctrler", ("leader", "follower", "follower"), 0, 2, -1, voters=(0, 1, 2),
                         peers=(0, 1, 2))
    text = ServiceStatus("svc", "ns", 10, "hash", False, None, ctrler, (g,)).format()
    assert "voters 0,1,2" in text and "1,2,3" in text
    assert "group 1: slot 0: P0 (node aaaaaaaa) -> P3 (node bbbbbbbb) done at" in text
    assert "4.5 s after it was found dead" in text
