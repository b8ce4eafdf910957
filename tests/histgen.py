"""A seeded generator of many-client key-value histories, and mutations that break them.

:func:`append_history` simulates ``clients`` clients that each run one operation at a time
against a linearizable key-value store: every operation gets a random interval and a
linearization point inside it, and the outputs of the gets are computed by applying all the
operations in the order of those points.  The result is linearizable by construction.  Most
operations are appends, as in the KV lab tests; values are ``"x CLIENT N y"`` (unique tokens,
like the shared ``kv/c10-*.txt`` logs), so a value read names exactly which appends it saw.

:func:`mutate_read` changes one get so that the history is provably *not* linearizable
(each kind says why), without running a checker.  :func:`to_kv_log` writes a history in the
``kv`` format of the command line.

Used by the tests and by ``benchmarks/linearizability.py``; nothing here is stored on disk.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from linearizability import UNKNOWN, Operation

__all__ = ["Mutation", "append_history", "mutate_read", "to_kv_log", "tokens"]

_TOKEN = re.compile(r"x -?\d+ \d+ y")

MutationKind = Literal["drop", "swap", "phantom"]


def tokens(value: str) -> list[str]:
    """The ``x C N y`` tokens a value is made of, in order."""
    return _TOKEN.findall(value)


def append_history(
    clients: int,
    keys: int,
    ops_per_key: int,
    seed: int = 0,
    *,
    get_ratio: float = 0.1,
    put_ratio: float = 0.01,
    unknown_ratio: float = 0.0,
    mean_latency: float = 10.0,
) -> list[Operation]:
    """A linearizable history of ``keys * ops_per_key`` operations by ``clients`` clients.

    Each key gets exactly ``ops_per_key`` operations: gets with probability ``get_ratio``, puts
    with ``put_ratio``, appends otherwise.  Every client runs its operations back to back with
    exponential latencies (mean ``mean_latency``) and small think times, so about
    ``clients / keys`` operations of a key overlap at any time, and a few long ones many more.
    A write (put or append) gets an unknown outcome with probability ``unknown_ratio``: it
    never returns, and takes effect or not (a fair coin).  Keys are ``"0"``, ``"1"``, ...
    """
    if clients < 1 or keys < 1 or ops_per_key < 0:
        raise ValueError("need at least one client and one key, and ops_per_key >= 0")
    rng = random.Random(seed)
    slots = [str(k) for k in range(keys) for _ in range(ops_per_key)]
    rng.shuffle(slots)
    per_client: list[list[str]] = [slots[c::clients] for c in range(clients)]

    # (linearization point, call, ret or None, client, input, takes effect)
    planned: list[tuple[float, float, float | None, int, tuple[str, ...], bool]] = []
    for client, client_keys in enumerate(per_client):
        t = rng.uniform(0.0, mean_latency)
        for n, key in enumerate(client_keys):
            roll = rng.random()
            value = f"x {client} {n} y"
            if roll < get_ratio:
                input: tuple[str, ...] = ("get", key)
            elif roll < get_ratio + put_ratio:
                input = ("put", key, value)
            else:
                input = ("append", key, value)
            latency = rng.expovariate(1.0 / mean_latency) + 0.01
            call, ret = t, t + latency
            point = rng.uniform(call, ret)
            if input[0] != "get" and rng.random() < unknown_ratio:
                planned.append((point, call, None, client, input, rng.random() < 0.5))
                break  # a client whose call never returned does nothing more
            planned.append((point, call, ret, client, input, True))
            t = ret + rng.expovariate(1.0 / (mean_latency / 10))

    store: dict[str, str] = {}
    ops: list[Operation] = []
    for _, call, ret, client, input, effect in sorted(planned):
        kind, key = input[0], input[1]
        if kind == "get":
            ops.append(Operation(client, input, store.get(key, ""), call, ret))
            continue
        if effect:
            store[key] = input[2] if kind == "put" else store.get(key, "") + input[2]
        ops.append(Operation(client, input, None if ret is not None else UNKNOWN, call, ret))
    ops.sort(key=lambda op: op.call)
    return ops


@dataclass(frozen=True)
class Mutation:
    """What :func:`mutate_read` changed: operation ``index`` now reads ``new`` instead of ``old``."""

    index: int
    kind: str
    old: str
    new: str


def mutate_read(
    history: Sequence[Operation], seed: int = 0, kind: MutationKind = "drop"
) -> tuple[list[Operation], Mutation]:
    """A copy of ``history`` (from :func:`append_history`) with one get made wrong.

    * ``"drop"``: the get no longer sees one append that returned before the get was called.
      Only gets whose value starts with an append (no put since the key was empty) qualify.
      Not linearizable: no put can precede the get (the state would start with the put's
      token), so the state there is every append linearized before it, which includes the
      dropped one.
    * ``"swap"``: two adjacent appends in the value change places, where the first returned
      before the second was called (same condition on puts).  Not linearizable: the state
      there lists the appends in linearization order, which must respect real time.
    * ``"phantom"``: the get also sees a token that no operation ever wrote.

    The get is chosen at random (seeded) among those that qualify, preferring ones late in
    the history, whose refutation needs the most search.

    Raises:
        ValueError: if no get of the history qualifies for ``kind``.
    """
    rng = random.Random(seed)
    writer = {op.input[2]: op for op in history if op.input[0] in ("put", "append")}
    candidates: list[tuple[int, str]] = []
    for index, op in enumerate(history):
        if op.input[0] != "get" or not isinstance(op.output, str) or op.output is UNKNOWN:
            continue
        seen = tokens(op.output)
        if kind == "phantom":
            candidates.append((index, op.output + "x -1 0 y"))
            continue
        if not seen or writer[seen[0]].input[0] != "append":
            continue
        if kind == "drop":
            for k, token in enumerate(seen):
                w = writer[token]
                if w.ret is not None and w.ret < op.call:
                    candidates.append((index, "".join(seen[:k] + seen[k + 1 :])))
        else:
            for k in range(len(seen) - 1):
                a, b = writer[seen[k]], writer[seen[k + 1]]
                if a.ret is not None and a.ret < b.call:
                    swapped = [*seen[:k], seen[k + 1], seen[k], *seen[k + 2 :]]
                    candidates.append((index, "".join(swapped)))
    if not candidates:
        raise ValueError(f"no get in this history qualifies for a {kind!r} mutation")
    late = [c for c in candidates if c[0] >= len(history) // 2] or candidates
    index, new = rng.choice(late)
    old = history[index].output
    mutated = list(history)
    mutated[index] = replace(history[index], output=new)
    return mutated, Mutation(index, kind, old, new)


def to_kv_log(history: Sequence[Operation]) -> str:
    """The history as a ``kv`` log (one event per line, in time order); calls that never
    returned get no return line, so they stay open until the end."""
    events: list[tuple[float, int, int, str]] = []
    for i, op in enumerate(history):
        kind, key = op.input[0], op.input[1]
        value = "nil" if kind == "get" else f'"{op.input[2]}"'
        head = f"{{:process {op.client}, :type"
        tail = f':f :{kind}, :key "{key}", :value'
        events.append((op.call, 0, i, f"{head} :invoke, {tail} {value}}}"))
        if op.ret is not None and op.output is not UNKNOWN:
            out = f'"{op.output}"' if kind == "get" else value
            events.append((op.ret, 1, i, f"{head} :ok, {tail} {out}}}"))
    # Returns after calls at equal times would make them concurrent; here times are distinct
    # floats in practice, and a tie keeps the call first, which only adds overlap.
    return "\n".join(line for _, _, _, line in sorted(events)) + "\n"
