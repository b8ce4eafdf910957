"""Errors a controller clerk raises.

- :class:`RefusedError` (a ``ValueError``): the request was refused and the configuration did not
  change. ``code`` says why (one of the ``ERR_*`` codes of :mod:`shardctrler.ops`: a gid already in,
  an unknown gid, a shard out of range, a group with no servers, ...); ``sent`` is ``False`` when the
  clerk refused it before sending anything (its shape or types are wrong) and ``True`` when the
  controller refused it (it conflicts with the current configuration).
- :class:`RefusedTypeError` (a ``RefusedError`` and a ``TypeError``): an argument of the wrong type,
  refused before sending.
- :class:`CtrlerTimeoutError` (a ``TimeoutError``): a call with a ``timeout`` did not complete in time.
"""

from __future__ import annotations

from typing import Any


class RefusedError(ValueError):
    """A refused request; see the module docstring. The configuration is unchanged."""

    def __init__(self, code: str, message: str, *, sent: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.sent = sent
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:  # picklable with its fields (e.g. across Ray)
        return (_rebuild_refused, (type(self), self.code, self.message, self.sent), self.__dict__)


class RefusedTypeError(RefusedError, TypeError):
    """A request with an argument of the wrong type (refused before sending)."""


class CtrlerTimeoutError(TimeoutError):
    """A clerk call did not complete within its ``timeout``.

    ``servers`` names the servers tried, in order of first attempt; ``operation`` describes the call.
    A write may still take effect (exactly once, atomically) until the clerk's next operation
    completes; after that it never will.
    """

    def __init__(self, operation: str, timeout: float, servers: list[str], last: str) -> None:
        tried = ", ".join(servers) if servers else "none (no attempt finished)"
        super().__init__(f"{operation} did not complete within {timeout:g} s; servers tried: {tried}"
                         f"; last outcome: {last}")
        self.operation = operation
        self.timeout = timeout
        self.servers = list(servers)
        self.last = last

    def __reduce__(self) -> tuple[Any, ...]:  # picklable with its fields (e.g. across Ray)
        return (type(self), (self.operation, self.timeout, self.servers, self.last), self.__dict__)


def _rebuild_refused(cls: type[RefusedError], code: str, message: str, sent: bool) -> RefusedError:
    return cls(code, message, sent=sent)
