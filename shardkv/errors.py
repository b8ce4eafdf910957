"""Errors a sharded-KV clerk raises.

- ``TypeError``: a key or value that is not a ``str`` (raised before anything is sent);
- ``ValueError``: a key or value above the clerk's size limit, or a non-positive timeout (before
  anything is sent);
- :class:`ShardKVTimeoutError` (a ``TimeoutError``): a call with a ``timeout`` did not complete in
  time;
- :class:`ShardKVRequestError` (a ``ValueError``): the servers refused the operation as malformed,
  for example because the clerk maps keys to shards differently from the service. Nothing was applied.
"""

from __future__ import annotations

from typing import Any


class ShardKVTimeoutError(TimeoutError):
    """A clerk call did not complete within its ``timeout``.

    ``servers`` names the servers tried, in order of first attempt; ``operation`` describes the call;
    ``shard`` is the key's shard and ``config`` the configuration number the clerk last knew. The
    operation may still take effect (exactly once, atomically) until the clerk's next operation on the
    same shard completes; after that it never will.
    """

    def __init__(self, operation: str, timeout: float, shard: int, config: int, servers: list[str],
                 last: str) -> None:
        tried = ", ".join(servers) if servers else "none (no group owned the shard in any "\
                                                   "configuration the clerk saw)"
        super().__init__(f"{operation} (shard {shard}) did not complete within {timeout:g} s; "
                         f"configuration {config}; servers tried: {tried}; last outcome: {last}")
        self.operation = operation
        self.timeout = timeout
        self.shard = shard
        self.config = config
        self.servers = list(servers)
        self.last = last

    def __reduce__(self) -> tuple[Any, ...]:  # picklable with its fields (e.g. across Ray)
        return (type(self), (self.operation, self.timeout, self.shard, self.config, self.servers,
                             self.last), self.__dict__)


class ShardKVRequestError(ValueError):
    """The servers refused an operation as malformed (``code``, one of ``shardkv.ops.ERR_*``); it had
    no effect."""

    def __init__(self, operation: str, code: str, message: str) -> None:
        super().__init__(f"{operation} was refused ({code}): {message}")
        self.operation = operation
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:  # picklable with its fields (e.g. across Ray)
        return (type(self), (self.operation, self.code, self.message), self.__dict__)
