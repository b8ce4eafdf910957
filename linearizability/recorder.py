"""Recording what clients saw, from many threads, asyncio tasks or Ray actors.

    rec = Recorder()
    token = rec.call(client=1, input=("put", "k", "v"))
    ...                                   # the real call
    rec.ret(token, None)                  # or rec.unknown(token) if it timed out

    with rec.operation(2, ("get", "k")) as op:   # the same, as a context manager
        op.output = clerk.get("k")               # an exception records an unknown outcome

    check(rec.history(), KVModel())

Times come from :func:`time.monotonic_ns`, which on Linux is one clock for every process of a
machine, so records made in several processes (Ray actors on one node) can be merged: each
actor keeps its own ``Recorder`` and sends ``recorder.records()`` (plain picklable
:class:`Record` objects) back; the driver merges them with :meth:`Recorder.extend` or
:func:`history_from_records`.  Records from different machines are *not* comparable.

Invariants: a token is returned by exactly one :meth:`Recorder.call`, and is closed at most once,
by :meth:`Recorder.ret` or :meth:`Recorder.unknown`; records are kept in the order they were
made.  All methods are thread-safe.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable, Hashable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from .history import UNKNOWN, HistoryError, Operation

__all__ = ["PendingOperation", "Record", "Recorder", "Token", "history_from_records"]

Token = tuple[str, int]
"""Identifies one call: (recorder id, sequence number).  Unique across recorders."""

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Record:
    """One logged event.  ``kind`` is "call", "return", or "unknown" (the call timed out or
    failed in a way that leaves its effect unknown).  ``time`` is a monotonic_ns reading."""

    kind: Literal["call", "return", "unknown"]
    token: Token
    client: Hashable
    value: Any
    time: int


class PendingOperation:
    """What :meth:`Recorder.operation` yields: set :attr:`output` before the block ends, or
    call :meth:`unknown` if the outcome is unknown.  Leaving the block with an exception
    records an unknown outcome.  If no output is set, ``None`` is recorded."""

    __slots__ = ("_unknown", "output", "token")

    def __init__(self, token: Token) -> None:
        self.token = token
        self.output: Any = None
        self._unknown = False

    def unknown(self) -> None:
        """Mark the outcome as unknown (for example after a timeout that was swallowed)."""
        self._unknown = True


class Recorder:
    """A thread-safe log of calls and returns.  See the module docstring."""

    def __init__(self, clock: Callable[[], int] = time.monotonic_ns) -> None:
        self.id = uuid.uuid4().hex[:12]
        self._clock = clock
        self._lock = threading.Lock()
        self._records: list[Record] = []
        self._open: dict[Token, Hashable] = {}
        self._sequence = itertools.count()

    def __getstate__(self) -> None:
        raise TypeError(
            "a Recorder holds a lock and cannot be pickled; give each Ray actor its own "
            "Recorder and send recorder.records() back, then merge them with extend()"
        )

    def call(self, client: Hashable, input: Any) -> Token:
        """Log that ``client`` calls an operation with ``input``; returns its token."""
        with self._lock:
            token = (self.id, next(self._sequence))
            self._open[token] = client
            self._records.append(Record("call", token, client, input, self._clock()))
        return token

    def ret(self, token: Token, output: Any) -> None:
        """Log that the call ``token`` returned ``output``."""
        self._close(token, "return", output)

    def unknown(self, token: Token) -> None:
        """Log that the call ``token`` ended with an unknown outcome (e.g. it timed out)."""
        self._close(token, "unknown", UNKNOWN)

    timeout = unknown

    def _close(self, token: Token, kind: Literal["return", "unknown"], value: Any) -> None:
        with self._lock:
            now = self._clock()
            client = self._open.pop(token, None)
            if client is None:
                raise ValueError(
                    f"token {token!r} is not an open call of this recorder: it was already "
                    "closed with ret()/unknown(), or came from another Recorder"
                )
            self._records.append(Record(kind, token, client, value, now))

    @contextmanager
    def operation(self, client: Hashable, input: Any) -> Iterator[PendingOperation]:
        """Record one call around a ``with`` block (works in threads and asyncio tasks)."""
        pending = PendingOperation(self.call(client, input))
        try:
            yield pending
        except BaseException:
            self.unknown(pending.token)
            raise
        if pending._unknown:
            self.unknown(pending.token)
        else:
            self.ret(pending.token, pending.output)

    def run(self, client: Hashable, input: Any, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call ``fn(*args, **kwargs)`` and record its result as the output.

        If ``fn`` raises, the outcome is recorded as unknown and the exception propagates.
        """
        with self.operation(client, input) as op:
            op.output = result = fn(*args, **kwargs)
        return result

    def records(self) -> list[Record]:
        """A copy of all records so far (picklable; send these back from Ray actors)."""
        with self._lock:
            return list(self._records)

    def extend(self, records: Iterable[Record]) -> None:
        """Merge records made by other recorders (for example in Ray actors)."""
        records = list(records)
        for record in records:
            if not isinstance(record, Record):
                raise TypeError(
                    f"expected Record objects from Recorder.records(); got {type(record).__name__}"
                )
        with self._lock:
            self._records.extend(records)

    def history(self) -> list[Operation]:
        """The operations recorded so far (open calls have an unknown outcome)."""
        return history_from_records(self.records())


def history_from_records(records: Iterable[Record]) -> list[Operation]:
    """Turn records (from one or more recorders) into operations, ordered by call time.

    Raises:
        HistoryError: for a return without a call, or a call closed twice.
    """
    calls: dict[Token, Record] = {}
    ends: dict[Token, Record] = {}
    for record in records:
        if record.kind == "call":
            if record.token in calls:
                raise HistoryError(
                    f"token {record.token!r} was called twice; were the same records merged twice?"
                )
            calls[record.token] = record
        else:
            if record.token in ends:
                raise HistoryError(
                    f"token {record.token!r} was closed twice; were the same records merged twice?"
                )
            ends[record.token] = record
    for token in ends:
        if token not in calls:
            raise HistoryError(
                f"token {token!r} returned but its call is missing; merge the "
                "records of every recorder before building the history"
            )
    ops = []
    for token, call in sorted(calls.items(), key=lambda item: (item[1].time, item[0])):
        end = ends.get(token)
        if end is None:
            ops.append(Operation(call.client, call.value, UNKNOWN, call.time, None))
        else:
            ops.append(Operation(call.client, call.value, end.value, call.time, end.time))
    return ops
