"""Configurations and keys-to-shards: the vocabulary the controller and the sharded KV share.

A :class:`Config` says which replica group serves each shard. Configurations are numbered from 0; the
controller only ever appends new ones, so ``Query(num)`` of an existing number always returns the same
configuration. Config 0 has no groups and assigns every shard to gid 0 ("no group").

Two ways to map a key to a shard:

- :func:`key2shard_reference`: the first byte of the key modulo the shard count, as the MIT 6.5840
  tests do (``""`` goes to shard 0). Keys with a common first character all land on one shard, which
  the ported tests rely on and real use should not.
- :func:`key2shard`: a stable hash of the whole key (BLAKE2b of its UTF-8 bytes), the same in every
  process, on every machine and in every Python version (unlike the built-in ``hash``, which is
  salted per process), so keys that share a prefix spread evenly over the shards.

Both are pure functions of ``(key, nshards)``.
"""

from __future__ import annotations

import hashlib
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: the reference's number of shards (the ported tests use it; real deployments may use more)
NSHARDS = 10


def _check_nshards(nshards: Any) -> int:
    if not isinstance(nshards, int) or isinstance(nshards, bool):
        raise TypeError(f"nshards must be an int, got {type(nshards).__name__}: {nshards!r:.80}")
    if nshards < 1:
        raise ValueError(f"nshards must be >= 1, got {nshards}")
    return nshards


def _check_key(key: Any) -> str:
    if not isinstance(key, str):
        raise TypeError(f"key must be a str, got {type(key).__name__}: {key!r:.80}")
    return key


def key2shard_reference(key: str, nshards: int = NSHARDS) -> int:
    """The reference mapping: the first UTF-8 byte of ``key`` modulo ``nshards`` (``""`` -> 0).

    With 10 shards, ``"0"`` .. ``"9"`` land on 10 different shards (``"0"`` -> 8, ``"2"`` -> 0) and
    ``"10"`` .. ``"19"`` all land on shard 9.
    """
    _check_key(key)
    _check_nshards(nshards)
    if not key:
        return 0
    return key[0].encode("utf-8", "surrogatepass")[0] % nshards


def key2shard(key: str, nshards: int) -> int:
    """A stable hash of the whole key modulo ``nshards``: BLAKE2b (8-byte digest) of the key's UTF-8
    bytes, read as a big-endian integer. Identical in every process and Python version."""
    _check_key(key)
    _check_nshards(nshards)
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % nshards


@dataclass(frozen=True)
class Config:
    """One numbered configuration: ``shards[s]`` is the gid serving shard ``s`` (0: none) and
    ``groups`` maps each gid to its servers' names, in the order they were given.

    Invariants (checked on construction, so a malformed configuration cannot exist): ``num >= 0``;
    at least one shard; every gid positive; every group has at least one server, names non-empty
    strings with no repeats; every shard's gid is 0 or a member of ``groups``; shards are on gid 0
    only when there are no groups. ``groups`` is read-only and ordered by gid. Equality is the
    reference's ``check_same_config``: same number, same shards, same groups with the same server
    lists in the same order. Picklable (it travels between actors).
    """

    num: int
    shards: tuple[int, ...]
    groups: Mapping[int, tuple[str, ...]]

    def __post_init__(self) -> None:
        if not isinstance(self.num, int) or isinstance(self.num, bool) or self.num < 0:
            raise ValueError(f"config number must be an int >= 0, got {self.num!r:.80}")
        shards = tuple(self.shards)
        if not shards:
            raise ValueError("a configuration needs at least one shard")
        groups: dict[int, tuple[str, ...]] = {}
        for gid in sorted(self.groups):
            if not isinstance(gid, int) or isinstance(gid, bool) or gid <= 0:
                raise ValueError(f"gid must be an int > 0, got {gid!r:.80}")
            servers = tuple(self.groups[gid])
            if not servers or not all(isinstance(s, str) and s for s in servers):
                raise ValueError(f"group {gid} needs a non-empty list of server names, got {servers!r:.200}")
            if len(set(servers)) != len(servers):
                raise ValueError(f"group {gid} lists a server twice: {servers!r:.200}")
            groups[gid] = servers
        for s, gid in enumerate(shards):
            if not isinstance(gid, int) or isinstance(gid, bool) or (gid != 0 and gid not in groups):
                raise ValueError(f"shard {s} is on gid {gid!r}, which is not a group of config {self.num}")
            if gid == 0 and groups:
                raise ValueError(f"shard {s} is unassigned although config {self.num} has groups")
        object.__setattr__(self, "shards", shards)
        object.__setattr__(self, "groups", types.MappingProxyType(groups))

    @classmethod
    def initial(cls, nshards: int = NSHARDS) -> Config:
        """Config 0: no groups, every shard on gid 0."""
        return cls(0, (0,) * _check_nshards(nshards), {})

    @property
    def nshards(self) -> int:
        return len(self.shards)

    def shards_of(self, gid: int) -> tuple[int, ...]:
        """The shards that ``gid`` serves, in increasing order."""
        return tuple(s for s, g in enumerate(self.shards) if g == gid)

    def counts(self) -> dict[int, int]:
        """Shards per group, for every group of this configuration (0 for a group with none)."""
        out = dict.fromkeys(self.groups, 0)
        for g in self.shards:
            if g in out:
                out[g] += 1
        return out

    def servers(self, gid: int) -> tuple[str, ...]:
        """The servers of ``gid`` (``()`` if it is not a group of this configuration)."""
        return self.groups.get(gid, ())

    def __hash__(self) -> int:
        return hash((self.num, self.shards, tuple(self.groups.items())))

    def __reduce__(self) -> tuple[Any, ...]:
        return (Config, (self.num, self.shards, dict(self.groups)))

    def __repr__(self) -> str:
        groups = ", ".join(f"{g}: {list(s)}" for g, s in self.groups.items())
        return f"Config(num={self.num}, shards={list(self.shards)}, groups={{{groups}}})"
