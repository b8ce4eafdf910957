"""Readers for the two history file formats, with line-numbered errors.

Both formats list one event of one client process per line, in real-time order; the line number
is used as the time.  A process has at most one call open at a time.

**Jepsen register logs** (``--format jepsen``), e.g. ``etcd_000.log``::

    INFO  jepsen.util - 3	:invoke	:read	nil
    INFO  jepsen.util - 3	:ok	:read	4
    INFO  jepsen.util - 1	:invoke	:cas	[4 0]
    INFO  jepsen.util - 1	:fail	:cas	[4 0]      (refused)
    INFO  jepsen.util - 0	:fail	:read	:timed-out (returns here, value unknown)
    INFO  jepsen.util - 4	:info	:write	:timed-out (stays open until the end, outcome unknown)

Fields are separated by any whitespace.  Lines that are not client events (they do not start
with ``INFO jepsen.util - <process> :invoke|:ok|:fail|:info``) are ignored; an event line whose
rest is malformed is an error.  ``:fail`` of a write, or of a cas without ``[old new]``, means it
did not happen: the operation is dropped.

**Key-value logs** (``--format kv``), e.g. ``c10-ok.txt``, one Clojure map per line::

    {:process 0, :type :invoke, :f :get, :key "3", :value nil}
    {:process 0, :type :ok, :f :get, :key "3", :value "x 0 0 y"}

``:type`` is ``:invoke``, ``:ok``, ``:fail`` (did not happen: dropped) or ``:info`` (outcome
unknown); ``:f`` is ``:get``, ``:put`` or ``:append``.  Blank lines are ignored.

In both formats a call that has no return by the end of the file returns at the end with an
unknown outcome.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .history import UNKNOWN, Operation

__all__ = ["FORMATS", "HistoryFormatError", "parse_file", "parse_jepsen", "parse_kv"]

JEPSEN_EXAMPLE = "INFO  jepsen.util - 3\t:invoke\t:write\t4"
KV_EXAMPLE = '{:process 0, :type :invoke, :f :get, :key "3", :value nil}'


class HistoryFormatError(ValueError):
    """A history file that cannot be read.  ``str()`` is ``SOURCE:LINE: what was wrong``."""

    def __init__(self, source: str, line: int | None, message: str) -> None:
        self.source = source
        self.line = line
        self.message = message
        where = source if line is None else f"{source}:{line}"
        super().__init__(f"{where}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:  # picklable with its fields (e.g. across Ray)
        return (type(self), (self.source, self.line, self.message), self.__dict__)


@dataclass(slots=True)
class _Open:
    line: int
    f: str
    input: Any
    index: int


class _Builder:
    """Pairs calls with returns per process.  Invariant: ``ops[i] is None`` for open calls."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.slots: list[Operation | None] = []
        self.inputs: list[tuple[Hashable, Any, int]] = []
        self.dropped: set[int] = set()
        self.open: dict[Hashable, _Open] = {}

    def error(self, line: int, message: str) -> HistoryFormatError:
        return HistoryFormatError(self.source, line, message)

    def call(self, line: int, process: Hashable, f: str, input: Any) -> None:
        if process in self.open:
            earlier = self.open[process].line
            raise self.error(
                line,
                f"process {process} calls :{f} while its call on line "
                f"{earlier} has not returned; expected a return for process "
                f"{process} first (one open call per process)",
            )
        self.open[process] = _Open(line, f, input, len(self.slots))
        self.slots.append(None)
        self.inputs.append((process, input, line))

    def pending(self, line: int, process: Hashable, f: str, kind: str) -> _Open:
        pending = self.open.get(process)
        if pending is None:
            raise self.error(
                line,
                f"process {process} has :{kind} :{f} but no open call; "
                f"expected an earlier :invoke :{f} line for process {process}",
            )
        if pending.f != f:
            raise self.error(
                line,
                f"process {process} returns :{f}, but its open call (line "
                f"{pending.line}) is :{pending.f}; expected :{pending.f}",
            )
        return pending

    def ret(self, line: int, process: Hashable, output: Any) -> None:
        pending = self.open.pop(process)
        self.slots[pending.index] = Operation(process, pending.input, output, pending.line, line)

    def drop(self, process: Hashable) -> None:
        self.dropped.add(self.open.pop(process).index)

    def abandon(self, process: Hashable) -> None:
        """The outcome is unknown: the call stays open until the end; the process is freed."""
        self.open.pop(process)

    def operations(self) -> list[Operation]:
        ops = []
        for index, op in enumerate(self.slots):
            if index in self.dropped:
                continue
            if op is None:
                process, input, line = self.inputs[index]
                op = Operation(process, input, UNKNOWN, line, None)
            ops.append(op)
        return ops


# --------------------------------------------------------------------------- Jepsen

_JEPSEN_EVENT = re.compile(r"\s*INFO\s+jepsen\.util\s+-\s+(\d+)\s+:(invoke|ok|fail|info)(?:\s|$)")
_JEPSEN_REST = re.compile(r"\s*:(read|write|cas)\s+(.*?)\s*$")
_INT = re.compile(r"-?\d+")
_CAS = re.compile(r"\[\s*(-?\d+)\s+(-?\d+)\s*\]")


def parse_jepsen(lines: Iterable[str], source: str = "<jepsen>") -> list[Operation]:
    """Read a Jepsen register log into operations on :class:`RegisterModel` inputs.

    Raises:
        HistoryFormatError: with the line number and what was expected there.
    """
    b = _Builder(source)
    events = 0
    for number, line in enumerate(lines, 1):
        m = _JEPSEN_EVENT.match(line)
        if m is None:
            continue
        events += 1
        process, kind = int(m.group(1)), m.group(2)
        rest = _JEPSEN_REST.fullmatch(line, m.end())
        if rest is None:
            raise b.error(
                number,
                "expected ':read', ':write' or ':cas' and a value after "
                f"':{kind}' (like {JEPSEN_EXAMPLE!r}); got {line[m.end() :].strip()!r}",
            )
        f, value = rest.group(1), rest.group(2)
        if kind == "invoke":
            b.call(number, process, f, _jepsen_input(b, number, f, value))
            continue
        pending = b.pending(number, process, f, kind)
        if kind == "info":
            b.abandon(process)
        elif kind == "ok":
            b.ret(number, process, _jepsen_output(b, number, f, value, pending.input))
        elif f == "read":
            b.ret(number, process, UNKNOWN)
        elif f == "cas" and _CAS.fullmatch(value):
            _jepsen_output(b, number, f, value, pending.input)
            b.ret(number, process, False)
        else:
            b.drop(process)
    if events == 0:
        raise HistoryFormatError(
            source,
            None,
            "no Jepsen client events found; expected lines "
            f"like {JEPSEN_EXAMPLE!r} (is this a --format kv file?)",
        )
    return b.operations()


def _jepsen_input(b: _Builder, number: int, f: str, value: str) -> tuple[Any, ...]:
    if f == "read":
        if value != "nil":
            raise b.error(number, f"expected 'nil' as the value of ':invoke :read'; got {value!r}")
        return ("read",)
    if f == "write":
        if not _INT.fullmatch(value):
            raise b.error(number, f"expected an integer to write; got {value!r}")
        return ("write", int(value))
    m = _CAS.fullmatch(value)
    if m is None:
        raise b.error(number, f"expected '[old new]' (two integers) for :cas; got {value!r}")
    return ("cas", int(m.group(1)), int(m.group(2)))


def _jepsen_output(b: _Builder, number: int, f: str, value: str, input: tuple[Any, ...]) -> Any:
    if f == "read":
        if value == "nil":
            return None
        if not _INT.fullmatch(value):
            raise b.error(number, f"expected 'nil' or an integer read; got {value!r}")
        return int(value)
    expected = _jepsen_input(b, number, f, value)
    if expected != input:
        raise b.error(
            number,
            f"the return of :{f} names {value!r}, but the call on the "
            f"process's open :invoke line was {input[1:]!r}; expected the same value",
        )
    return None if f == "write" else True


# --------------------------------------------------------------------------- key-value

_TOKEN = re.compile(
    r'\s*(?:(?P<punct>[{}])|(?P<kw>:[A-Za-z_][\w\-?!*]*)|"(?P<str>(?:[^"\\]|\\.)*)"'
    r"|(?P<int>-?\d+)|(?P<nil>nil)|(?P<comma>,))"
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}
_KV_TYPES = ("invoke", "ok", "fail", "info")
_KV_FS = ("get", "put", "append")


class _Keyword(str):
    """A Clojure keyword, without its colon."""


def _edn_map(text: str) -> dict[str, Any] | str:
    """Parse a flat Clojure map of keywords to keywords, strings, integers or nil.

    Returns the map, or a string saying what was expected where parsing stopped.
    """
    pos, end = 0, len(text.rstrip())
    items: list[Any] = []
    m = _TOKEN.match(text, pos)
    if m is None or m.group("punct") != "{":
        return "expected '{' at the start of the line"
    pos = m.end()
    while True:
        m = _TOKEN.match(text, pos)
        if m is None or pos >= end:
            return f"expected a keyword, string, integer, nil or '}}' at column {pos + 1}"
        pos = m.end()
        if m.group("comma"):
            continue
        if m.group("punct") == "}":
            break
        if m.group("punct") == "{":
            return f"nested maps are not supported (column {m.start(1) + 1})"
        if m.group("kw"):
            items.append(_Keyword(m.group("kw")[1:]))
        elif m.group("str") is not None:
            items.append(re.sub(r"\\(.)", lambda e: _ESCAPES.get(e.group(1), e.group(1)), m.group("str")))
        elif m.group("int"):
            items.append(int(m.group("int")))
        else:
            items.append(None)
    if pos < end:
        return f"expected the end of the line after '}}' at column {pos}"
    if len(items) % 2:
        return "expected an even number of items (key value pairs) in the map"
    keys = items[0::2]
    if not all(isinstance(k, _Keyword) for k in keys):
        return "expected keywords (like :process) as map keys"
    return dict(zip(keys, items[1::2], strict=True))


def parse_kv(lines: Iterable[str], source: str = "<kv>") -> list[Operation]:
    """Read a key-value log into operations on :class:`KVModel` inputs.

    Raises:
        HistoryFormatError: with the line number and what was expected there.
    """
    b = _Builder(source)
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        event = _edn_map(line)
        if isinstance(event, str):
            raise b.error(number, f"{event}; expected a map like {KV_EXAMPLE}; got {line.strip()!r}")
        missing = [k for k in ("process", "type", "f", "key", "value") if k not in event]
        if missing:
            raise b.error(
                number,
                "expected :" + ", :".join(missing) + f" in the map (like {KV_EXAMPLE}); got {line.strip()!r}",
            )
        process, kind, f, key, value = (event[k] for k in ("process", "type", "f", "key", "value"))
        if not isinstance(process, int) or isinstance(process, _Keyword):
            raise b.error(number, f"expected an integer :process; got {process!r}")
        if not isinstance(kind, _Keyword) or kind not in _KV_TYPES:
            raise b.error(number, f"expected :type to be one of :invoke, :ok, :fail, :info; got {kind!r}")
        if not isinstance(f, _Keyword) or f not in _KV_FS:
            raise b.error(number, f"expected :f to be one of :get, :put, :append; got {f!r}")
        if not isinstance(key, str | int) or isinstance(key, _Keyword):
            raise b.error(number, f"expected :key to be a string; got {key!r}")
        key = str(key)
        if kind == "invoke":
            if f == "get":
                b.call(number, process, f, ("get", key))
            elif isinstance(value, str) and not isinstance(value, _Keyword):
                b.call(number, process, f, (str(f), key, value))
            else:
                raise b.error(number, f"expected a string :value to {f}; got {value!r}")
            continue
        pending = b.pending(number, process, f, kind)
        if pending.input[1] != key:
            raise b.error(
                number,
                f"process {process} returns key {key!r}, but its open call "
                f"(line {pending.line}) was for key {pending.input[1]!r}",
            )
        if kind == "info":
            b.abandon(process)
        elif kind == "fail":
            b.drop(process)
        elif f == "get":
            if value is not None and (not isinstance(value, str) or isinstance(value, _Keyword)):
                raise b.error(number, f"expected a string or nil :value read; got {value!r}")
            b.ret(number, process, "" if value is None else str(value))
        else:
            b.ret(number, process, None)
    return b.operations()


# --------------------------------------------------------------------------- files

FORMATS = {"jepsen": parse_jepsen, "kv": parse_kv}


def parse_file(path: str | Path, format: str) -> list[Operation]:
    """Read a history file in ``format`` (``"jepsen"`` or ``"kv"``).

    Raises:
        HistoryFormatError: for a malformed file, an unknown format, or a file that cannot be
            read (missing, a directory, not UTF-8); the message says what to do.
    """
    source = str(path)
    if format not in FORMATS:
        raise HistoryFormatError(
            source, None, f"unknown format {format!r}; expected one of " + ", ".join(FORMATS)
        )
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HistoryFormatError(source, None, "no such file") from None
    except IsADirectoryError:
        raise HistoryFormatError(source, None, "is a directory; pass history files") from None
    except UnicodeDecodeError as e:
        raise HistoryFormatError(
            source, None, f"not UTF-8 text ({e.reason} at byte {e.start}); is this a history file?"
        ) from None
    except OSError as e:
        raise HistoryFormatError(source, None, f"cannot be read: {e.strerror}") from None
    return FORMATS[format](text.splitlines(), source)
