"""The shard controller's test harness on Ray, equivalent to the reference's ``shardctrler/config.go``,
and the configuration checks its tests use.

``CtrlerHarness(n, unreliable)`` builds ``n`` :class:`~shardctrler.server.CtrlerReplica` servers,
``{name}-0`` .. ``{name}-{n-1}``, behind one :class:`~actors.network.FaultyNetwork`: a
:class:`~raykv.testing.service_harness.ServiceHarness` (clerks, ``endpoints(to)`` for a clerk built
in a shard group's replica actor, shutdown and restart, partitions, ``leader()``, ``wait_leader()``,
the ledger and the teardown checks; see there), plus ``ctrl_stats()``.

Every server reports what it applies to the harness's ledger (:mod:`actors.ledger`: the same batch
with the same results, and the same latest configuration after it, at each index on every server (the
Queries answered by ReadIndex leave no entry to compare), in order, one leader
per term, leader completeness, the commit rule, persistence across restarts); a violation fails the
next ``leader()`` / ``wait_leader()`` / ``partition()`` and the teardown.

It can also live on a network and a ledger someone else owns (``network=``, ``ledger=``), as the
sharded KV's harness needs: a controller service of 3 servers beside the shard groups, or a second
controller service on the same network.

Planted faults (``faults``, default: those named in ``RAYKV_PLANT``; see :mod:`raykv.testing.faults`):
the core's, and three broken rules of rebalancing (:data:`~raykv.testing.faults.CTRL_FAULTS`), each
a state machine that rewrites the configuration a Join or Leave made:

- ``ctrl_not_minimal``: the shards are dealt out afresh, shard ``s`` to the ``s``-th group (mod the
  number of groups) in gid order: balanced and the same on every replica, but shards move between
  groups that stay;
- ``ctrl_unbalanced``: only the shards of departed groups (or of gid 0) move, all to the smallest
  gid: a joining group gets nothing;
- ``ctrl_nondeterministic``: the real rebalancing, with its ties (which groups get the larger quotas,
  which group takes which free shard) broken by a random order of the gids drawn in each replica:
  balanced and minimal, but replicas can compute different configurations.

The checks (:func:`check_config`, :func:`check_same_config`, :func:`fewest_moves`,
:func:`moved_shards`) are the reference's ``check`` and ``check_same_config`` plus an exact count of
the shards a balanced configuration must move.
"""

from __future__ import annotations

import functools
import random
from collections import Counter
from collections.abc import Iterable
from typing import Any

from actors.ledger import LedgerReplica
from raft.sim.config import FAULTS as CORE_FAULTS
from raykv.testing.faults import CTRL_FAULTS, planted
from raykv.testing.raft_harness import get_with_deadline
from raykv.testing.service_harness import CALL_DEADLINE_S as CALL_DEADLINE_S
from raykv.testing.service_harness import CLERK_ATTEMPT_TIMEOUT_S as CLERK_ATTEMPT_TIMEOUT_S
from raykv.testing.service_harness import ELECTION_TIMEOUT_S as ELECTION_TIMEOUT_S
from raykv.testing.service_harness import TEST_TIME_LIMIT_S as TEST_TIME_LIMIT_S
from raykv.testing.service_harness import ServiceHarness
from shardctrler.async_clerk import AsyncClerk
from shardctrler.clerk import Clerk
from shardctrler.config import NSHARDS, Config
from shardctrler.endpoints import NetworkEndpoints
from shardctrler.ops import JOIN, LEAVE
from shardctrler.server import CtrlerReplica
from shardctrler.statemachine import CtrlerStateMachine, rebalance

_get = get_with_deadline


def ctrler_faults(faults: Iterable[str] | None) -> frozenset[str]:
    """The faults to plant: ``faults`` (core or controller faults), or by default those in
    ``RAYKV_PLANT`` that concern the controller."""
    return planted(faults, CORE_FAULTS | CTRL_FAULTS.keys())


class _RebalanceFault(CtrlerStateMachine):
    """A controller whose Join and Leave rebalance with :meth:`assign` instead of the real rule."""

    def assign(self, shards: tuple[int, ...], gids: list[int]) -> tuple[int, ...]:
        raise NotImplementedError

    def _write(self, kind: int, args: Any) -> Any:
        result = super()._write(kind, args)
        if kind in (JOIN, LEAVE) and isinstance(result, int):
            prev, cur = self.configs[-2], self.configs[-1]
            gids = sorted(cur.groups)
            shards = self.assign(prev.shards, gids) if gids else cur.shards
            self.configs[-1] = Config(cur.num, shards, dict(cur.groups))
        return result


class NotMinimalStateMachine(_RebalanceFault):
    """Planted fault ``ctrl_not_minimal``: shard s goes to the s-th group mod k, whatever it had."""

    def assign(self, shards: tuple[int, ...], gids: list[int]) -> tuple[int, ...]:
        return tuple(gids[s % len(gids)] for s in range(len(shards)))


class UnbalancedStateMachine(_RebalanceFault):
    """Planted fault ``ctrl_unbalanced``: only orphaned shards move, all to the smallest gid."""

    def assign(self, shards: tuple[int, ...], gids: list[int]) -> tuple[int, ...]:
        return tuple(g if g in gids else gids[0] for g in shards)


class NondeterministicStateMachine(_RebalanceFault):
    """Planted fault ``ctrl_nondeterministic``: the real rebalancing with the gids relabelled by a
    random order drawn in this replica (deliberately, a source of randomness outside the log)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rng = random.Random()  # seeded from the OS: different in every replica

    def assign(self, shards: tuple[int, ...], gids: list[int]) -> tuple[int, ...]:
        labels = self._rng.sample(range(1, 10 * len(gids) + 1), len(gids))
        to_label = dict(zip(gids, labels, strict=True))
        back = {v: k for k, v in to_label.items()}
        out = rebalance(tuple(to_label.get(g, -1) if g else 0 for g in shards), labels)
        return tuple(back[g] for g in out)


_CTRL_FAULT_SMS: dict[str, type[CtrlerStateMachine]] = {
    "ctrl_not_minimal": NotMinimalStateMachine,
    "ctrl_unbalanced": UnbalancedStateMachine,
    "ctrl_nondeterministic": NondeterministicStateMachine,
}


def ctrler_state_machine(faults: Iterable[str]) -> type[CtrlerStateMachine]:
    """The controller state machine class that carries the planted faults among ``faults`` (at most
    one rebalancing fault at a time)."""
    chosen = [_CTRL_FAULT_SMS[f] for f in sorted(faults) if f in _CTRL_FAULT_SMS]
    if len(chosen) > 1:
        names = sorted(f for f in faults if f in _CTRL_FAULT_SMS)
        raise ValueError(f"plant one rebalancing fault at a time, not {names}")
    return chosen[0] if chosen else CtrlerStateMachine


class HarnessCtrlerReplica(LedgerReplica, CtrlerReplica):
    """The harness's controller server: a :class:`CtrlerReplica` that reports to the ledger, with
    every applied entry's result and the latest configuration after it. Queries are answered without
    the log (ReadIndex), so their results no longer show replicas that compute different
    configurations; the configuration after each entry does, at the entry where they part."""

    def _ledger_result(self, result: Any) -> Any:
        sm = self.sm
        return (result, sm.latest()) if isinstance(sm, CtrlerStateMachine) else result


class CtrlerHarness(ServiceHarness):
    """``n`` controller servers behind a faulty network (the reference ``make_config(n, unreliable)``).

    ``network`` / ``ledger``: put the servers on this network actor and report to this ledger instead
    of new ones (the harness then neither sets the network's reliability nor kills either).
    ``name``: prefix of the server names (``{name}-{i}``).
    """

    replica_cls = HarnessCtrlerReplica
    endpoints_cls = NetworkEndpoints
    clerk_cls = Clerk
    async_clerk_cls = AsyncClerk
    kind = "controller server"

    def __init__(
        self,
        n: int = 3,
        unreliable: bool = False,
        *,
        nshards: int = NSHARDS,
        network: Any = None,
        ledger: Any = None,
        name: str = "ctrler",
        maxraftstate: int = -1,
        seed: int | None = None,
        tick_s: float = 0.02,
        faults: Iterable[str] | None = None,
    ) -> None:
        self.name = name
        self.nshards = nshards
        chosen = ctrler_faults(faults)
        sm = functools.partial(ctrler_state_machine(chosen), nshards, maxraftstate)
        super().__init__(n, unreliable, state_machine=sm, faults=chosen, prefix=f"{name}-",
                         network=network, ledger=ledger, seed=seed, tick_s=tick_s)

    def ctrl_stats(self) -> list[dict[str, Any]]:
        return _get([r.ctrl_stats.remote() for r in self.replicas])


# ------------------------------------------------------------------------------------------------
# Checks
# ------------------------------------------------------------------------------------------------


def check_config(cfg: Config, gids: Iterable[int]) -> None:
    """The reference's ``check(groups)`` on ``cfg`` (the latest configuration): exactly the groups
    ``gids``; if there are any, every shard on one of them; balance: max - min <= 1 shards among the
    groups (a group with none counts as 0)."""
    gids = sorted(gids)
    assert sorted(cfg.groups) == gids, f"expected groups {gids}, got {sorted(cfg.groups)} in {cfg}"
    if not gids:
        assert set(cfg.shards) == {0}, f"no groups, yet shards are assigned: {cfg}"
        return
    for s, g in enumerate(cfg.shards):
        assert g in cfg.groups, f"shard {s} is on gid {g}, which is not a group: {cfg}"
    counts = cfg.counts()
    assert max(counts.values()) - min(counts.values()) <= 1, f"unbalanced: {counts} in {cfg}"


def check_same_config(c1: Config, c2: Config) -> None:
    """The reference's ``check_same_config``: same number, shards, groups and server lists (in order)."""
    assert c1.num == c2.num, f"config numbers differ: {c1.num} != {c2.num}"
    assert c1.shards == c2.shards, f"shards of config {c1.num} differ: {c1.shards} != {c2.shards}"
    assert dict(c1.groups) == dict(c2.groups), f"groups of config {c1.num} differ: {c1} != {c2}"


def moved_shards(c1: Config, c2: Config) -> list[int]:
    """The shards whose gid differs between ``c1`` and ``c2``."""
    return [s for s, (a, b) in enumerate(zip(c1.shards, c2.shards, strict=True)) if a != b]


def fewest_moves(shards: tuple[int, ...], gids: Iterable[int]) -> int:
    """The fewest shards any balanced assignment over ``gids`` must move away from ``shards``.

    Derived from the balance rule alone, independently of the controller's algorithm: with ``n``
    shards and ``k`` groups each group keeps at most its quota (``n // k``, or one more for ``n % k``
    of them), so at most ``sum(min(count, n // k))`` shards stay, plus one for each of the ``n % k``
    larger quotas given to a group that holds more than ``n // k``.
    """
    gids = set(gids)
    n = len(shards)
    if not gids:
        return sum(1 for g in shards if g != 0)
    base, extra = divmod(n, len(gids))
    counts = Counter(g for g in shards if g in gids)
    kept = sum(min(counts[g], base) for g in gids) + min(extra, sum(counts[g] > base for g in gids))
    return n - kept
