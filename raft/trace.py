"""Human-readable logging of Raft decisions, off by default and free when off.

Set ``RAYKV_LOG`` to switch it on: ``RAYKV_LOG=all`` logs every topic, ``RAYKV_LOG=elect,commit``
only those topics. Topics: ``elect`` (timeouts, votes, leadership), ``term`` (term changes),
``append`` (replication and backtracking), ``commit`` (commit index), ``snap`` (snapshots),
``persist`` (restarts from storage, crashes), ``member`` (membership changes), ``replace`` (a leader
replacing the group's lost replicas: :mod:`actors.replacer`), ``msg`` (every message sent and received,
with the peer's last log index: ``raykv viz`` draws them as arrows), ``fault`` (faults a simulator or
the torture nemesis injects: :func:`note`). Each line reads::

    13:20:01.123456 raft  P2 T5   leader    commit  commit index 17 -> 19

Lines go to the ``raykv.raft`` logger (stderr at INFO level unless the application configures
logging). With ``RAYKV_LOG_FILE=PATH`` as well, they go to that file instead, appended by every
process that has the variable (a test's driver and its Ray workers alike; one line is one write, so
lines of several processes do not tear), and not to the application's handlers. The handlers
installed here prefix the wall-clock time of day the line was logged at (the record's ``created``,
set by :mod:`logging`; the core reads no clock); ``raykv logs`` lays such a file out per peer.
Call sites test :func:`enabled` first, so a disabled topic costs one set lookup.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime

TOPICS = frozenset({"elect", "term", "append", "commit", "snap", "persist", "member", "replace", "msg",
                    "fault"})

#: environment variable naming a file that receives the lines instead of stderr
FILE_ENV = "RAYKV_LOG_FILE"

_logger = logging.getLogger("raykv.raft")
#: the handler :func:`configure` installed (replaced by the next call), if any
_handler: logging.Handler | None = None


#: this process's name in a ``RAYKV_LOG_FILE`` (:func:`set_label`; empty: none)
_label = ""


class TimeFormatter(logging.Formatter):
    """``HH:MM:SS.ffffff message``: the local time of day of the record, to the microsecond; with
    ``labelled``, behind this process's label in parentheses when it has one (:func:`set_label`)."""

    def __init__(self, labelled: bool = False) -> None:
        super().__init__()
        self.labelled = labelled

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created).strftime("%H:%M:%S.%f")
        if self.labelled and _label:
            return f"({_label}) {stamp} {record.getMessage()}"
        return f"{stamp} {record.getMessage()}"


def set_label(label: str) -> None:
    """Name this process in the ``RAYKV_LOG_FILE`` lines: ``(shop-g101-2) 13:20:01.123456 raft ...``
    (a replica actor calls it with its name, so ``raykv viz`` tells the groups apart in one file)."""
    global _label
    _label = "".join("_" if ch.isspace() or ch in "()" else ch for ch in label)


def _parse(spec: str) -> frozenset[str]:
    spec = spec.strip().lower()
    if not spec or spec in {"0", "off", "none"}:
        return frozenset()
    if spec in {"1", "all", "*"}:
        return TOPICS
    return frozenset(t.strip() for t in spec.split(",") if t.strip()) & TOPICS


_enabled: frozenset[str] = _parse(os.environ.get("RAYKV_LOG", ""))


def configure(spec: str, path: str | None = None) -> None:
    """Switch topics on or off at run time (same syntax as ``RAYKV_LOG``); with ``path``, the lines
    are appended to that file (and only there) from now on."""
    global _enabled, _handler
    _enabled = _parse(spec)
    if not _enabled:
        return
    if path:
        if _handler is not None:
            _logger.removeHandler(_handler)
            _handler.close()
        _handler = logging.FileHandler(path, mode="a", encoding="utf-8", delay=True)
        _handler.setFormatter(TimeFormatter(labelled=True))
        _logger.addHandler(_handler)
        _logger.setLevel(logging.INFO)
        _logger.propagate = False
    elif not _logger.handlers and not logging.getLogger().handlers:
        _handler = logging.StreamHandler()
        _handler.setFormatter(TimeFormatter())
        _logger.addHandler(_handler)
        _logger.setLevel(logging.INFO)


def enabled(topic: str) -> bool:
    return topic in _enabled


def log(peer: int, term: int, role: str, topic: str, text: str) -> None:
    """Emit one line; callers check :func:`enabled` first on hot paths."""
    _logger.info("raft  P%d T%-3d %-9s %-7s %s", peer, term, role, topic, text)


def note(topic: str, text: str) -> None:
    """A line about the run rather than one peer's decision (a fault injected or healed, a shard
    moved), when ``topic`` is on: ``note  fault   isolate shop-g101-2``."""
    if topic in _enabled:
        _logger.info("note  %-7s %s", topic, text)


if _enabled:
    configure(os.environ.get("RAYKV_LOG", ""), os.environ.get(FILE_ENV) or None)
