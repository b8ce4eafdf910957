"""A tiny replicated service for the simulator: a counter with a fingerprint of its history.

Commands are integers. Applying command ``c`` at log index ``i`` adds ``c`` to ``total`` and folds it
into ``digest``, a hash chain over every command applied so far, so two replicas have equal digests
at the same index only if they applied the same commands in the same order (up to hash collisions,
which the 61-bit chain makes negligible). The invariant checker keeps the same chain over the
committed log and compares: this is the check "applied state equals the replay of committed
commands".

The service snapshots every ``snapshot_every`` applied entries; a snapshot is the encoded
``(applied, total, digest)``. A restarted peer, or one that receives an InstallSnapshot, restores
from it.

Invariant: ``applied`` is the index of the last entry applied (or of the snapshot restored).
"""

from __future__ import annotations

from collections.abc import Sequence

from raft.types import Entry

MASK = (1 << 61) - 1
MUL = 1_000_003


def fold(digest: int, command: object) -> int:
    """The hash chain step shared by the service and the checker."""
    c = command if isinstance(command, int) else 0
    return (digest * MUL + c + 1) & MASK


class CounterService:
    __slots__ = ("applied", "digest", "snapshot_index", "total")

    def __init__(self, applied: int = 0, total: int = 0, digest: int = 0) -> None:
        self.applied = applied
        self.total = total
        self.digest = digest
        self.snapshot_index = applied

    def apply(self, e: Entry) -> None:
        c = e.command
        self.applied = e.index
        if isinstance(c, int):
            self.total += c
        self.digest = fold(self.digest, c)

    def apply_all(self, entries: Sequence[Entry]) -> None:
        total, digest = self.total, self.digest
        for e in entries:
            c = e.command
            if isinstance(c, int):
                total += c
            else:
                c = 0
            digest = (digest * MUL + c + 1) & MASK
        self.total, self.digest = total, digest
        if entries:
            self.applied = entries[-1].index

    def encode(self) -> bytes:
        return f"{self.applied}:{self.total}:{self.digest}".encode()

    @classmethod
    def decode(cls, data: bytes) -> CounterService:
        if not data:
            return cls()
        applied, total, digest = (int(x) for x in data.decode().split(":"))
        return cls(applied, total, digest)
