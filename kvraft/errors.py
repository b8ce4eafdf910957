"""Errors a clerk raises.

- ``TypeError``: a key or value that is not a ``str`` (raised before anything is sent);
- ``ValueError``: a key or value above the clerk's size limit (before anything is sent);
- :class:`KVTimeoutError` (a ``TimeoutError``): a call with a ``timeout`` did not complete in time.
"""

from __future__ import annotations


class KVTimeoutError(TimeoutError):
    """A clerk call did not complete within its ``timeout``.

    ``servers`` names the servers tried, in order of first attempt; ``operation`` describes the call.
    The operation may still take effect (exactly once, atomically) until the clerk's next operation
    completes; after that it never will (see docs/kvraft.md, "Clerk semantics").
    """

    def __init__(self, operation: str, timeout: float, servers: list[str], last: str) -> None:
        tried = ", ".join(servers) if servers else "none (no attempt finished)"
        super().__init__(f"{operation} did not complete within {timeout:g} s; servers tried: {tried}"
                         f"; last outcome: {last}")
        self.operation = operation
        self.timeout = timeout
        self.servers = list(servers)
