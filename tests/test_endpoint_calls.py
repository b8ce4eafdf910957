"""The clerk-side call API (actors/service_endpoints.py), without Ray: ``call`` / ``acall`` over an
endpoint set of the Ray-ref shape (``submit`` / ``unpack``) answer the reply, ``NO_ANSWER`` after the
timeout, or ``None`` for a failed call (and make a by-name endpoint set ``forget`` the server); an
endpoint set that has ``call`` / ``acall`` is used as it is; anything else is refused, saying what an
endpoint set needs."""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any

import pytest

from actors.service_endpoints import calls_of
from actors.service_protocol import NO_ANSWER


class _Ref:
    def __init__(self, fut: concurrent.futures.Future[Any]) -> None:
        self._fut = fut

    def future(self) -> concurrent.futures.Future[Any]:
        return self._fut


class _RefShaped:
    """Server 0 answers at once, server 1 never, server 2's call fails (as a dead actor's would)."""

    names = ("a", "b", "c")

    def __init__(self) -> None:
        self.forgotten: list[int] = []

    def submit(self, server: int, ops: Any) -> Any:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        if server == 0:
            fut.set_result(("packed", ops))
        elif server == 2:
            fut.set_exception(RuntimeError("the actor died"))
        return _Ref(fut)

    def unpack(self, value: Any) -> Any:
        return ("ok", value[1])

    def forget(self, server: int) -> None:
        self.forgotten.append(server)


def test_ref_shaped_endpoints_are_adapted() -> None:
    inner = _RefShaped()
    ep = calls_of(inner)
    assert ep is not inner and ep.names == ("a", "b", "c")

    async def main() -> None:
        assert await ep.acall(0, ("op",), 1.0) == ("ok", ("op",))
        assert await ep.acall(1, ("op",), 0.05) == NO_ANSWER
        assert await ep.acall(2, ("op",), 1.0) is None

    asyncio.run(main())
    assert inner.forgotten == [2], "a failed call makes a by-name endpoint set look the server up again"


def test_endpoints_with_calls_are_used_as_they_are_and_others_are_refused() -> None:
    class _Calls:
        names = ("a",)

        def call(self, server: int, ops: Any, timeout_s: float) -> Any:
            return ("ok", ops)

        async def acall(self, server: int, ops: Any, timeout_s: float) -> Any:
            return ("ok", ops)

    calls = _Calls()
    assert calls_of(calls) is calls

    class _Nothing:
        names = ("a",)

    with pytest.raises(TypeError, match=r"needs call\(server, ops, timeout_s\) and acall"):
        calls_of(_Nothing()).call(0, (), 1.0)
    with pytest.raises(TypeError, match="is not an endpoint set"):
        asyncio.run(calls_of(_Nothing()).acall(0, (), 1.0))
