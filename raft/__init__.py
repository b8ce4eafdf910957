"""The Raft consensus core: pure Python, no Ray, no asyncio, no clock.

Drive a :class:`RaftNode` with ``tick`` / ``step`` / ``propose`` / ``snapshot`` and carry out each
:class:`Ready` it hands back (persist, then send, then apply).
"""

from raft.config import RaftConfig
from raft.node import CANDIDATE, FOLLOWER, LEADER, PRE_CANDIDATE, RaftNode
from raft.types import (
    NO_VOTE,
    AppendEntries,
    AppendEntriesReply,
    Entry,
    HardState,
    InstallSnapshot,
    InstallSnapshotReply,
    Message,
    PersistentState,
    ReadState,
    Ready,
    RequestVote,
    RequestVoteReply,
    Snapshot,
)

__all__ = [
    "CANDIDATE",
    "FOLLOWER",
    "LEADER",
    "NO_VOTE",
    "PRE_CANDIDATE",
    "AppendEntries",
    "AppendEntriesReply",
    "Entry",
    "HardState",
    "InstallSnapshot",
    "InstallSnapshotReply",
    "Message",
    "PersistentState",
    "RaftConfig",
    "RaftNode",
    "ReadState",
    "Ready",
    "RequestVote",
    "RequestVoteReply",
    "Snapshot",
]
