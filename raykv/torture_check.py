"""The pure half of ``raykv torture``: the workload's keys and values, the lost-write check, the
history file a person can re-check, and the one-line verdict. No Ray here.

**Lost writes.** After the nemesis has healed everything and the clients have stopped, the tool reads
every key once (the *final reads*, recorded in the history too). An acknowledged write ``W`` of key
``k`` *must be visible* in the final value when no other put of ``k`` could have been ordered after it:
every other put of ``k`` was acknowledged and returned before ``W`` was called. A visible put is the
first token of the final value; a visible append is one of its tokens. Every value the clients write
is one unique token ending in ``;`` (``"{client}:{n};"``), so the final value splits into the tokens
that were applied, and a token applied twice (a retried append applied twice) is a *duplicate*.
The linearizability check finds these too (the final reads are in the history); this check names
them, one by one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from linearizability import UNKNOWN, Operation
from shardctrler.config import key2shard

__all__ = [
    "LostWrites",
    "key_for_shards",
    "lost_writes",
    "token",
    "write_kv_history",
]

TOKEN_END = ";"


def token(client: int, n: int) -> str:
    """The unique value client ``client`` writes in its ``n``-th operation."""
    return f"{client}:{n}{TOKEN_END}"


def key_for_shards(nshards: int, per_shard: int) -> list[str]:
    """``per_shard`` keys on each of the ``nshards`` shards (hash mapping), in a fixed order:
    ``k0``, ``k1``, ... picked by shard."""
    keys: dict[int, list[str]] = defaultdict(list)
    i = 0
    while any(len(keys[s]) < per_shard for s in range(nshards)):
        k = f"k{i}"
        s = key2shard(k, nshards)
        if len(keys[s]) < per_shard:
            keys[s].append(k)
        i += 1
    return [k for s in range(nshards) for k in keys[s]]


def _tokens(value: str) -> list[str]:
    return [t + TOKEN_END for t in value.split(TOKEN_END)[:-1]]


@dataclass
class LostWrites:
    """The outcome of :func:`lost_writes`: ``checked`` acknowledged writes had to be visible;
    ``lost`` lists those that were not, ``duplicated`` the tokens applied more than once (each as
    ``key: token``)."""

    checked: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.lost and not self.duplicated


def _acked(op: Operation) -> bool:
    return op.ret is not None and op.output is not UNKNOWN


def lost_writes(history: Iterable[Operation], finals: Mapping[str, str]) -> LostWrites:
    """Look up every acknowledged write of the keys in ``finals`` (key -> final value); see the
    module docstring for the rule."""
    writes: dict[str, list[Operation]] = defaultdict(list)
    for op in history:
        if op.input[0] in ("put", "append") and op.input[1] in finals:
            writes[op.input[1]].append(op)
    out = LostWrites()
    for key, final in finals.items():
        toks = _tokens(final)
        seen: dict[str, int] = defaultdict(int)
        for t in toks:
            seen[t] += 1
        out.duplicated += [f"{key}: {t}" for t, c in seen.items() if c > 1]
        puts = [op for op in writes[key] if op.input[0] == "put"]
        for w in writes[key]:
            if not _acked(w):
                continue
            later_put = any(p is not w and not (_acked(p) and p.ret < w.call) for p in puts)  # type: ignore[operator]
            if later_put:
                continue
            out.checked += 1
            value = w.input[2]
            visible = (toks[:1] == [value]) if w.input[0] == "put" else seen.get(value, 0) > 0
            if not visible:
                out.lost.append(f"{key}: {w.input[0]} {value!r} by client {w.client} "
                                f"(final value {final!r:.120})")
    return out


def _edn(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_kv_history(history: Sequence[Operation], path: str | Path) -> None:
    """Write ``history`` in the ``kv`` format of ``raykv check --format kv`` (one event per line, in
    real-time order; an operation with an unknown outcome is an ``:info``, after which its client
    continues as a new process, as Jepsen numbers them)."""
    events: list[tuple[Any, int, str]] = []  # (time, order, line)
    procs: dict[Any, int] = {}
    next_proc = 0
    for op in sorted(history, key=lambda o: o.call):
        if op.client not in procs:
            procs[op.client] = next_proc
            next_proc += 1
        p = procs[op.client]
        f, key = op.input[0], op.input[1]
        value = "nil" if f == "get" else _edn(op.input[2])
        events.append((op.call, 0, f"{{:process {p}, :type :invoke, :f :{f}, :key {_edn(key)}, "
                                   f":value {value}}}"))
        end = op.ret if op.ret is not None else float("inf")
        if op.output is UNKNOWN:
            events.append((end, 1, f"{{:process {p}, :type :info, :f :{f}, :key {_edn(key)}, "
                                   f":value {value}}}"))
            procs[op.client] = next_proc  # the process that got :info is never reused
            next_proc += 1
        else:
            out = _edn(op.output) if f == "get" else value
            events.append((end, 1, f"{{:process {p}, :type :ok, :f :{f}, :key {_edn(key)}, "
                                   f":value {out}}}"))
    events.sort(key=lambda e: (e[0], e[1]))
    Path(path).write_text("".join(line + "\n" for _, _, line in events))
