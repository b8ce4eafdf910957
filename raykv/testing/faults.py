"""The planted faults: deliberately broken rules that the harnesses can switch on in every peer they
start, to prove that the tests catch the bugs they exist for.

One mechanism for every suite: ``pytest --plant=FAULT[,FAULT...]`` (``tests/conftest.py``) sets
``RAYKV_PLANT``; every harness reads it (:func:`planted`), switches on in each peer it starts or
restarts the faults that concern it, and leaves the others to the harnesses they belong to. A name
that no harness knows is refused at once. ``benchmarks/planted_faults.py`` measures them (fault x
test -> caught in k of N runs).

The faults, by the layer whose rule they break (each harness module holds its service's broken
classes; this module only names them, so that it is cheap to import and has no Ray in it):

- the Raft core (:data:`raft.sim.config.FAULTS`), planted by every harness in every peer:
  ``commit_old_term``, ``vote_without_log_check``, ``forget_vote``, ``apply_past_commit``;
- the KV service (:data:`KV_FAULTS`, :mod:`raykv.testing.kv_harness`);
- the shard controller (:data:`CTRL_FAULTS`, :mod:`raykv.testing.ctrler_harness`), planted by the
  controller harness, also where it runs inside the sharded KV's;
- the sharded KV (:data:`SHARDKV_FAULTS`, :mod:`raykv.testing.shardkv_harness`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from raft.sim.config import FAULTS as CORE_FAULTS

#: The environment variable naming the planted faults of a test run (comma separated).
PLANT_ENV = "RAYKV_PLANT"

#: The KV service's planted faults.
KV_FAULTS: dict[str, str] = {
    "kv_no_dedup": "the dedup table is forgotten before every entry: a retried Put or Append that "
                   "was already applied is applied again",
    "kv_local_read": "a server that believes it leads answers Gets from its own state at once, "
                     "without the log, and CheckQuorum is off (a deposed leader answers stale values)",
}

#: The shard controller's planted faults (each breaks one rule of rebalancing).
CTRL_FAULTS: dict[str, str] = {
    "ctrl_not_minimal": "rebalancing deals the shards out afresh (shard s to the s-th group mod k): "
                        "balanced and deterministic, but shards move between groups that stay",
    "ctrl_unbalanced": "rebalancing moves only the shards of departed groups (to the smallest gid): "
                       "a joining group gets nothing",
    "ctrl_nondeterministic": "rebalancing breaks ties (which group gets an extra shard, which group "
                             "takes which free shard) by a random order drawn in each replica, so "
                             "replicas can compute different configurations",
}

#: The sharded KV's planted faults (each breaks one rule of migration or garbage collection).
SHARDKV_FAULTS: dict[str, str] = {
    "skv_no_gc": "a group never asks the previous holder to delete the shards it installed (moved "
                 "shards are kept forever, and the group never settles to take the next configuration)",
    "skv_keep_deleted": "a group obeys a delete but keeps the shard's data in every later snapshot: "
                        "the storage of moved-away shards is never reclaimed",
    "skv_no_dedup_move": "shards move without their dedup tables: a retried Put or Append that the old "
                         "owner applied is applied again by the new one",
    "skv_serve_leaving": "a group keeps serving shards that are leaving it: writes land on a copy that "
                         "is being handed over",
    "skv_serve_arriving": "a group serves a shard as soon as the configuration gives it, before its "
                          "data has arrived: reads see an empty shard, and writes are lost when the "
                          "data is installed over them",
    "skv_wait_all": "a group serves none of the shards it gains until every one of them has arrived "
                    "(challenge 2: a shard that has arrived must be served while others still move)",
}

#: Every fault any harness knows.
ALL_FAULTS: frozenset[str] = frozenset(CORE_FAULTS) | frozenset(KV_FAULTS) | frozenset(CTRL_FAULTS) \
    | frozenset(SHARDKV_FAULTS)


def planted_from_env() -> frozenset[str]:
    """The fault names in ``RAYKV_PLANT`` (comma separated; empty or unset: none)."""
    raw = os.environ.get(PLANT_ENV, "")
    return frozenset(name.strip() for name in raw.split(",") if name.strip())


def unknown_faults(names: Iterable[str], known: Iterable[str] = ALL_FAULTS) -> str | None:
    """``None`` if every name is in ``known``; otherwise a message naming the unknown ones and what
    is known, to raise."""
    unknown = frozenset(names) - frozenset(known)
    if not unknown:
        return None
    return f"unknown planted fault(s) {sorted(unknown)}; known: {sorted(known)}"


def planted(faults: Iterable[str] | None, concerns: Iterable[str]) -> frozenset[str]:
    """The faults a harness plants: ``faults`` if given (each must be one it knows, ``concerns``),
    else those named in ``RAYKV_PLANT`` that concern it (names known to another harness are left to
    it; a name no harness knows raises ``ValueError``)."""
    concerns = frozenset(concerns)
    if faults is None:
        chosen = planted_from_env()
        problem = unknown_faults(chosen)
        if problem is not None:
            raise ValueError(f"{PLANT_ENV}: {problem}")
        return chosen & concerns
    chosen = frozenset(faults)
    problem = unknown_faults(chosen, concerns)
    if problem is not None:
        raise ValueError(problem)
    return chosen
