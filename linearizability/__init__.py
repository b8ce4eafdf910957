"""Linearizability checking for raykv histories.

Record what clients saw (:class:`Recorder`), then :func:`check` the history against a sequential
:class:`Model` (:class:`RegisterModel`, :class:`KVModel`, or your own).  Histories that are not
linearizable can be drawn as a self-contained HTML page (:func:`write_html`).  A check stops at
the first partition found not linearizable (``all_partitions=True`` checks them all) and runs
under a time and a memory budget, answering UNKNOWN with the reason when one runs out.  The
command line is ``python -m linearizability check --help``.

    >>> from linearizability import Operation, RegisterModel, check
    >>> history = [
    ...     Operation(client=0, input=("write", 1), output=None, call=0, ret=10),
    ...     Operation(client=1, input=("read",), output=1, call=2, ret=3),
    ...     Operation(client=2, input=("read",), output=None, call=4, ret=5),
    ... ]
    >>> check(history, RegisterModel()).verdict
    <Verdict.NOT_LINEARIZABLE: 'not linearizable'>
"""

from .budget import Limits, default_memory_limit
from .checker import CheckResult, PartitionResult, check, check_events
from .history import (
    UNKNOWN,
    Event,
    HistoryError,
    Operation,
    Unknown,
    operations_from_events,
    validate_history,
)
from .models import REJECT, CompiledHistory, KVModel, Model, ModelInputError, RegisterModel
from .parsers import HistoryFormatError, parse_file, parse_jepsen, parse_kv
from .partition import Partition, partition
from .recorder import PendingOperation, Record, Recorder, history_from_records
from .report import render_html, write_html
from .search import SearchOutcome, Verdict, search, search_steps

__all__ = [
    "REJECT",
    "UNKNOWN",
    "CheckResult",
    "CompiledHistory",
    "Event",
    "HistoryError",
    "HistoryFormatError",
    "KVModel",
    "Limits",
    "Model",
    "ModelInputError",
    "Operation",
    "Partition",
    "PartitionResult",
    "PendingOperation",
    "Record",
    "Recorder",
    "RegisterModel",
    "SearchOutcome",
    "Unknown",
    "Verdict",
    "check",
    "check_events",
    "default_memory_limit",
    "history_from_records",
    "operations_from_events",
    "parse_file",
    "parse_jepsen",
    "parse_kv",
    "partition",
    "render_html",
    "search",
    "search_steps",
    "validate_history",
    "write_html",
]
