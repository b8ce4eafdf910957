"""The replicated log of one peer, with its compacted prefix and its index arithmetic.

Layout::

    [ compacted by snapshot: 1 .. snapshot_index ][ entries: snapshot_index+1 .. last_index ]

Invariants:

- ``entries[k].index == snapshot_index + 1 + k`` (contiguous, in order);
- terms never decrease along the log;
- ``snapshot_index <= applied <= commit <= last_index`` (``applied`` is what has been handed out for
  application, see :class:`raft.node.RaftNode.ready`);
- ``unstable_from`` is the lowest index whose entry has changed since the last hand-off to storage;
  everything below it is already persisted;
- ``configs`` (:class:`raft.membership.ConfigHistory`) always holds the configuration at the snapshot
  and at every configuration entry of the log: every mutation below updates it.
"""

from __future__ import annotations

from collections.abc import Sequence

from raft.membership import ConfChange, ConfigHistory, Membership
from raft.types import Entry, Snapshot


class RaftLog:
    """The log entries after the latest snapshot, plus commit / applied bookkeeping."""

    __slots__ = ("applied", "commit", "configs", "entries", "snapshot_index", "snapshot_term",
                 "unstable_from")

    def __init__(self, snapshot: Snapshot, entries: Sequence[Entry],
                 bootstrap: Membership | None = None) -> None:
        """``bootstrap`` is the group's initial configuration, in force until the first configuration
        entry when the snapshot does not record one."""
        self.snapshot_index = snapshot.index
        self.snapshot_term = snapshot.term
        self.entries: list[Entry] = list(entries)
        for k, e in enumerate(self.entries):
            if e.index != snapshot.index + 1 + k:
                raise ValueError(
                    f"log entries are not contiguous after the snapshot at {snapshot.index}: "
                    f"position {k} holds index {e.index}"
                )
        self.commit = snapshot.index
        self.applied = snapshot.index
        self.unstable_from = self.last_index + 1
        self.configs = ConfigHistory(bootstrap or Membership(frozenset()), snapshot.config,
                                     snapshot.index, self.entries)

    # -- index arithmetic ------------------------------------------------------------------------

    @property
    def first_index(self) -> int:
        """The first index still held as an entry (may be ``last_index + 1`` when empty)."""
        return self.snapshot_index + 1

    @property
    def last_index(self) -> int:
        return self.snapshot_index + len(self.entries)

    @property
    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.snapshot_term

    def term_at(self, index: int) -> int | None:
        """The term of the entry at ``index``; ``None`` if compacted away or beyond the end."""
        if index == self.snapshot_index:
            return self.snapshot_term
        if index < self.snapshot_index or index > self.last_index:
            return None
        return self.entries[index - self.snapshot_index - 1].term

    def entry(self, index: int) -> Entry:
        return self.entries[index - self.snapshot_index - 1]

    def slice(self, lo: int, hi: int) -> list[Entry]:
        """Entries with ``lo <= index < hi``; ``lo`` must be >= ``first_index``."""
        off = self.snapshot_index + 1
        return self.entries[lo - off : hi - off]

    def first_index_of_term(self, index: int) -> int:
        """The first index of the run of entries sharing the term of ``index`` (not below the snapshot)."""
        term = self.term_at(index)
        i = index
        while i - 1 > self.snapshot_index and self.term_at(i - 1) == term:
            i -= 1
        return i

    def last_index_of_term(self, term: int) -> int | None:
        """The last index holding an entry of ``term``, if any entry of that term is still held."""
        for e in reversed(self.entries):
            if e.term == term:
                return e.index
            if e.term < term:
                return None
        return None

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Is a log ending at (``last_index``, ``last_term``) at least as up to date as ours (§5.4.1)?"""
        mine = self.last_term
        return last_term > mine or (last_term == mine and last_index >= self.last_index)

    # -- mutation --------------------------------------------------------------------------------

    def append(self, entry: Entry) -> None:
        assert entry.index == self.last_index + 1, (entry.index, self.last_index)
        self.entries.append(entry)
        if type(entry.command) is ConfChange:
            self.configs.on_append((entry,))

    def truncate_and_append(self, entries: Sequence[Entry]) -> None:
        """Delete every entry at or after ``entries[0].index`` and append ``entries``.

        Committed entries are never deleted: a caller that would do so has found a safety bug.
        """
        first = entries[0].index
        assert first > self.commit, f"truncating committed entry {first} (commit {self.commit})"
        del self.entries[first - self.snapshot_index - 1 :]
        self.entries.extend(entries)
        self.unstable_from = min(self.unstable_from, first)
        self.configs.on_truncate(first)
        self.configs.on_append(entries)

    def compact(self, index: int, term: int) -> None:
        """Drop entries up to ``index`` (a snapshot now covers them); keep the suffix after it."""
        del self.entries[: index - self.snapshot_index]
        self.snapshot_index = index
        self.snapshot_term = term
        self.unstable_from = max(self.unstable_from, index + 1)
        self.configs.on_compact(index)

    def restore(self, snapshot: Snapshot) -> None:
        """Install a received snapshot: keep the suffix if our entry at its index matches, else drop all.

        This is the same rule storage applies when it persists the snapshot.
        """
        if self.term_at(snapshot.index) == snapshot.term:
            self.compact(snapshot.index, snapshot.term)
        else:
            self.entries = []
            self.snapshot_index = snapshot.index
            self.snapshot_term = snapshot.term
            self.unstable_from = snapshot.index + 1
            self.configs.on_reset(snapshot.config, snapshot.index)
        self.commit = max(self.commit, snapshot.index)
        self.applied = max(self.applied, snapshot.index)

    def take_unstable(self) -> list[Entry]:
        """Entries that changed since the last call, to be persisted; marks them persisted."""
        if self.unstable_from > self.last_index:
            self.unstable_from = self.last_index + 1
            return []
        out = self.slice(max(self.unstable_from, self.first_index), self.last_index + 1)
        self.unstable_from = self.last_index + 1
        return out

    def take_committed(self) -> list[Entry]:
        """Committed entries not yet handed out for application; marks them applied."""
        if self.applied >= self.commit:
            return []
        out = self.slice(self.applied + 1, self.commit + 1)
        self.applied = self.commit
        return out
