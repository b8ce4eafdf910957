"""Replacing a lost replica on the stream transport, the wiring step (actors/replacer.py), without Ray:
a leader whose transport is a :class:`~actors.transport.StreamTransport`, and fake actor handles that
record what they are asked. The leader has the new replica open its listener with the service's secret,
starts it knowing every live member's stream address (not the dead one's), tells every live member
(itself included) the new replica's address, and proposes it as a learner; told members are not told
again; a member whose listener is not open yet is told on a later round.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

import actors.replacer as replacer
from actors.replacer import ReplaceOptions, Replacer
from actors.stream_auth import new_secret
from actors.transport import StreamTransport
from raft.membership import ADD_LEARNER

SECRET = new_secret()
ADDR = {0: ("10.0.0.1", 4000), 1: ("10.0.0.2", 4001), 2: ("10.0.0.3", 4002), 3: ("10.0.0.4", 4003)}


class _Method:
    def __init__(self, handle: _Handle, name: str) -> None:
        self.handle, self.name = handle, name

    def remote(self, *args: Any) -> Any:
        self.handle.calls.append((self.name, args))
        return self.handle.answer(self.name, args)


@dataclass(eq=False)
class _Handle:
    """A replica actor's handle: every ``h.method.remote(...)`` is recorded and answered."""

    peer: int
    listening: bool = True
    started: bool = False
    calls: list[tuple[str, tuple]] = field(default_factory=list)

    @property
    def _actor_id(self) -> str:
        return f"actor-{self.peer}"

    def __getattr__(self, name: str) -> _Method:
        if name.startswith("_"):
            raise AttributeError(name)
        return _Method(self, name)

    async def answer(self, name: str, args: tuple) -> Any:
        if name == "status":
            return {"incarnation": 1 if self.started else 0}
        if name == "open_stream":
            assert args == (SECRET,), "the listener is opened with the service's secret"
            self.listening = True
            return ADDR[self.peer]
        if name == "stream_address":
            return ADDR[self.peer] if self.listening else None
        if name == "start":
            self.started = True
        return None


class _Leader:
    """What the replacer uses of its replica: the leader P0 of a group {0, 1, 2} whose P2 died."""

    def __init__(self) -> None:
        self.transport = StreamTransport({1: ADDR[1], 2: ADDR[2]}, SECRET, label="g-0")
        self._stream_secret = SECRET
        self.spec = SimpleNamespace(peers=(0, 1, 2), name="g-0")
        self.incarnation = 1
        self.core = SimpleNamespace(id=0, is_leader=True, term=3, role="leader",
                                    membership=SimpleNamespace(members={0, 1, 2}))
        self.told: list[tuple[int, Any]] = []
        self.changes: list[tuple[str, int]] = []

    async def stream_peers(self) -> dict[int, tuple[str, int]]:
        return {0: ADDR[0], **self.transport.addresses()}

    async def add_peer(self, peer: int, endpoint: Any) -> None:
        self.told.append((peer, endpoint))

    async def change_membership(self, op: str, peer: int) -> tuple[int, int, bool]:
        self.changes.append((op, peer))
        self.core.membership.members.add(peer)
        return 7, 3, True


def test_a_replacement_is_wired_with_stream_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replacer, "_log_to_stderr", lambda: None)

    async def main() -> None:
        leader = _Leader()
        r = Replacer(leader, ReplaceOptions(directory=None, gid=1))  # type: ignore[arg-type]
        handles = {p: _Handle(p) for p in range(4)}
        handles[3].listening = False  # a fresh replacement: no listener until the leader opens it
        alive, dead = {1: "node-b"}, {2}
        await r._wire(1, leader.core, 3, handles, alive, dead)

        new = handles[3]
        names = [c[0] for c in new.calls]
        assert names.index("open_stream") < names.index("start"), names
        start = next(args for name, args in new.calls if name == "start")
        assert start == (1, ("stream", SECRET, {0: ADDR[0], 1: ADDR[1]})), \
            "started knowing every live member's address (the dead P2's is left out)"
        assert leader.told == [(3, ADDR[3])], "the leader learns the new replica's address"
        assert ("add_peer", (3, ADDR[3])) in handles[1].calls, "so does every live member"
        assert not [c for c in handles[2].calls if c[0] == "add_peer"], "the dead are not told"
        assert leader.changes == [(ADD_LEARNER, 3)]
        assert r.last is not None and "a new replica" in r.last

        # a later round: nobody is told twice, and the started replica is not started again
        before = (len(leader.told), len(handles[1].calls))
        await r._wire(1, leader.core, 3, handles, alive, dead)
        assert (len(leader.told), len([c for c in handles[1].calls if c[0] == "add_peer"])) == (before[0], 1)
        assert [c[0] for c in new.calls].count("start") == 1

    asyncio.run(main())


def test_a_member_whose_listener_is_not_open_is_told_later(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replacer, "_log_to_stderr", lambda: None)

    async def main() -> None:
        leader = _Leader()
        leader.core.membership.members = {0, 1, 3}  # P3 joined (replaced P2) before this leader was built
        r = Replacer(leader, ReplaceOptions(directory=None, gid=1))  # type: ignore[arg-type]
        handles = {p: _Handle(p) for p in (0, 1, 3)}
        handles[3].listening = False
        await r._tell(1, leader.core, handles, {1: "node-b", 3: "node-d"}, set(), None)
        assert leader.told == [] and not [c for c in handles[1].calls if c[0] == "add_peer"]
        handles[3].listening = True
        await r._tell(1, leader.core, handles, {1: "node-b", 3: "node-d"}, set(), None)
        assert leader.told == [(3, ADDR[3])] and ("add_peer", (3, ADDR[3])) in handles[1].calls

    asyncio.run(main())


def test_the_replacement_starts_only_once_every_live_member_s_address_is_known(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replacer, "_log_to_stderr", lambda: None)

    async def main() -> None:
        leader = _Leader()
        leader.transport = StreamTransport({2: ADDR[2]}, SECRET, label="g-0")  # P1's address unknown here
        r = Replacer(leader, ReplaceOptions(directory=None, gid=1))  # type: ignore[arg-type]
        handles = {p: _Handle(p) for p in range(4)}
        handles[1].listening = False  # and P1 does not say (yet)
        await r._wire(1, leader.core, 3, handles, {1: "node-b"}, {2})
        assert "start" not in [c[0] for c in handles[3].calls] and leader.changes == []
        assert r.last is not None and "P1 is not known yet" in r.last
        handles[1].listening = True
        await r._wire(1, leader.core, 3, handles, {1: "node-b"}, {2})
        start = next(args for name, args in handles[3].calls if name == "start")
        assert start == (1, ("stream", SECRET, {0: ADDR[0], 1: ADDR[1]}))
        assert leader.changes == [(ADD_LEARNER, 3)]

    asyncio.run(main())
