"""Human-readable logging of Raft decisions, off by default and free when off.

Set ``RAYKV_LOG`` to switch it on: ``RAYKV_LOG=all`` logs every topic, ``RAYKV_LOG=elect,commit``
only those topics. Topics: ``elect`` (timeouts, votes, leadership), ``term`` (term changes),
``append`` (replication and backtracking), ``commit`` (commit index), ``snap`` (snapshots),
``persist`` (restarts from storage), ``member`` (membership changes), ``replace`` (a leader replacing
the group's lost replicas: :mod:`actors.replacer`). Each line reads::

    raft  P2 T5 leader    commit  commit index 17 -> 19

Lines go to the ``raykv.raft`` logger (stderr at INFO level unless the application configures
logging). Call sites test :func:`enabled` first, so a disabled topic costs one set lookup.
"""

from __future__ import annotations

import logging
import os

TOPICS = frozenset({"elect", "term", "append", "commit", "snap", "persist", "member", "replace"})

_logger = logging.getLogger("raykv.raft")


def _parse(spec: str) -> frozenset[str]:
    spec = spec.strip().lower()
    if not spec or spec in {"0", "off", "none"}:
        return frozenset()
    if spec in {"1", "all", "*"}:
        return TOPICS
    return frozenset(t.strip() for t in spec.split(",") if t.strip()) & TOPICS


_enabled: frozenset[str] = _parse(os.environ.get("RAYKV_LOG", ""))


def configure(spec: str) -> None:
    """Switch topics on or off at run time (same syntax as ``RAYKV_LOG``)."""
    global _enabled
    _enabled = _parse(spec)
    if _enabled and not _logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        _logger.addHandler(handler)
        _logger.setLevel(logging.INFO)


def enabled(topic: str) -> bool:
    return topic in _enabled


def log(peer: int, term: int, role: str, topic: str, text: str) -> None:
    """Emit one line; callers check :func:`enabled` first on hot paths."""
    _logger.info("raft  P%d T%-3d %-9s %-7s %s", peer, term, role, topic, text)


if _enabled:
    configure(os.environ.get("RAYKV_LOG", ""))
