"""Errors of the KV service.

A clerk raises:

- ``TypeError``: a key or value that is not a ``str`` (raised before anything is sent);
- ``ValueError``: a key or value above the clerk's size limit (before anything is sent);
- :class:`KVTimeoutError` (a ``TimeoutError``): a call with a ``timeout`` did not complete in time;
- :class:`KVRejectedError` (a ``ValueError``): a server refused the batch as malformed (nothing was
  proposed); only a clerk bug, or a caller that bypasses the clerks, can cause it.

:func:`~kvraft.start_group` raises :class:`GroupStartError` when too few replicas could start.

Every class here is picklable with its fields, so it reaches a caller across a Ray actor boundary
with its type and fields intact.
"""

from __future__ import annotations

from typing import Any


class KVTimeoutError(TimeoutError):
    """A clerk call did not complete within its ``timeout``.

    ``servers`` names the servers tried, in order of first attempt; ``operation`` describes the call;
    ``last`` is the last outcome seen. The operation may still take effect (exactly once, atomically)
    until the clerk's next operation completes; after that it never will (see docs/kvraft.md, "Clerk
    semantics").
    """

    def __init__(self, operation: str, timeout: float, servers: list[str], last: str) -> None:
        tried = ", ".join(servers) if servers else "none (no attempt finished)"
        super().__init__(f"{operation} did not complete within {timeout:g} s; servers tried: {tried}"
                         f"; last outcome: {last}")
        self.operation = operation
        self.timeout = timeout
        self.servers = list(servers)
        self.last = last

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.operation, self.timeout, self.servers, self.last), self.__dict__)


class KVRejectedError(ValueError):
    """A server refused a batch because it is malformed (``reason`` says how); nothing was proposed,
    so nothing of it will ever take effect. ``server`` names the server that refused it."""

    def __init__(self, server: str, reason: str) -> None:
        super().__init__(f"{server} refused the request: {reason}. Nothing was proposed; this is a bug "
                         f"in the caller (clerks check their input before sending)")
        self.server = server
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.server, self.reason), self.__dict__)


class GroupStartError(RuntimeError):
    """Too few replicas of a group could start to form a majority (or a new group could not be
    created). ``group`` is its name; ``failed`` maps each replica that did not start (peer id) to the
    reason; ``n`` is the group's size."""

    def __init__(self, group: str, n: int, failed: dict[int, str]) -> None:
        lines = "; ".join(f"replica {i}: {why}" for i, why in sorted(failed.items()))
        super().__init__(f"group {group!r}: {len(failed)} of {n} replicas could not start, so no "
                         f"majority can form ({lines})")
        self.group = group
        self.n = n
        self.failed = dict(failed)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.group, self.n, self.failed), self.__dict__)
