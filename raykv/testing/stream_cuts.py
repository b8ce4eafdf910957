"""Partitions on the stream transport as data (pure: no Ray, no asyncio, no clock).

On the faulty network actor a partition is a set of disabled ends; on the stream transport it is, for
every replica, the set of peers its fault hook cuts off (``ReplicaActor.set_stream_faults({"cut":
[...]})``: requests to them fail, so neither requests nor their replies cross), and for a clerk the set
of server names its endpoints' :class:`~actors.stream_faults.StreamFaults` cuts. These functions build
those sets with the reference harness's meaning:

- :func:`partition_cuts`: servers on the same side reach each other, nothing crosses sides, and a
  server on neither side reaches nobody and is reached by nobody (as ``ServiceHarness.partition``);
- :func:`isolate`: one server cut off in both directions (a shut-down server, and a restarted one until
  ``connect_all``, as ``ServiceHarness.shutdown_server`` / ``start_server``);
- :func:`clerk_cut`: the server names a clerk must not reach (it reaches only ``to``).

Invariant of every ``cuts`` list: ``cuts[i]`` never holds ``i``, and the relation is symmetric
(``j in cuts[i]`` iff ``i in cuts[j]``), so a cut link carries nothing either way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def no_cuts(n: int) -> list[set[int]]:
    """Every server reaches every other."""
    _check_n(n)
    return [set() for _ in range(n)]


def partition_cuts(n: int, p1: Iterable[int], p2: Iterable[int]) -> list[set[int]]:
    """For each server ``i``, the peers it cannot reach when the servers are split into ``p1`` and
    ``p2`` (servers in neither are cut off from everyone)."""
    _check_n(n)
    side: dict[int, int] = {}
    for k, part in enumerate((p1, p2)):
        for i in part:
            if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < n:
                raise ValueError(f"partition side {k + 1} names server {i!r}; servers are 0..{n - 1}")
            if i in side:
                raise ValueError(f"server {i} is on both sides of the partition")
            side[i] = k
    return [{j for j in range(n) if j != i and (i not in side or side.get(j) != side[i])}
            for i in range(n)]


def isolate(cuts: Sequence[set[int]], i: int) -> list[set[int]]:
    """``cuts`` with server ``i`` cut off from every other server, both ways (a new list)."""
    n = len(cuts)
    if not 0 <= i < n:
        raise ValueError(f"server {i} is not one of the {n} servers")
    out = [set(c) for c in cuts]
    out[i] = {j for j in range(n) if j != i}
    for j in range(n):
        if j != i:
            out[j].add(i)
    return out


def clerk_cut(names: Sequence[str], to: Iterable[int] | None) -> set[str]:
    """The names of the servers a clerk that reaches only ``to`` (``None``: all) must not reach."""
    if to is None:
        return set()
    reach = set(to)
    unknown = sorted(reach - set(range(len(names))))
    if unknown:
        raise ValueError(f"a clerk cannot be connected to servers {unknown}; servers are 0..{len(names) - 1}")
    return {name for k, name in enumerate(names) if k not in reach}


def _check_n(n: int) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"a group has at least one server, got n={n!r}")
