"""Sequential specifications (models) that histories are checked against.

A :class:`Model` says what one operation does to a state when the operations run one at a time:
``step(state, input, output) -> (ok, new_state)``.  ``ok`` is False when ``output`` is impossible
for ``input`` in ``state``.  States must be hashable and compare equal exactly when they behave
the same: the search memoises (linearized set, state) pairs.

For speed, :meth:`Model.compile` turns a whole (partition of a) history into a
:class:`CompiledHistory`: one small transition function per operation, which returns the new
state or :data:`REJECT`.  Models may choose an internal state representation there (the
key-value model indexes keys into a tuple), and say how to turn it back into a public state.

Outputs may be :data:`~linearizability.history.UNKNOWN`: such an operation may have taken
effect or not, and any result is acceptable.

Built-in models:

* :class:`RegisterModel` -- a single register, initially ``None`` (empty), with inputs
  ``("read",)``, ``("write", v)`` and ``("cas", old, new)``; outputs: the value read, ``None``
  for writes, and ``True``/``False`` for compare-and-set (``False`` = refused, no effect).
* :class:`KVModel` -- a key-value store of strings, a missing key reads as ``""``, with inputs
  ``("get", key)``, ``("put", key, value)`` and ``("append", key, value)``; outputs: the value
  read for gets (``None`` is read as ``""``), anything for puts and appends.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from .history import UNKNOWN, Operation
from .kvstates import DEAD, EMPTY, PrefixTable, dead_rejects

__all__ = [
    "REJECT",
    "CompiledHistory",
    "KVModel",
    "Model",
    "ModelInputError",
    "RegisterModel",
    "Transition",
]


class _Reject:
    __slots__ = ()

    def __repr__(self) -> str:
        return "REJECT"


REJECT: Final[Any] = _Reject()
"""Returned by a transition function when the operation's output is impossible in a state."""

Transition = Callable[[Any], Any]
"""A compiled operation: maps a state to the next state, or to :data:`REJECT`."""


class ModelInputError(ValueError):
    """An operation input or output that the model does not understand."""


@dataclass(frozen=True, slots=True)
class CompiledHistory:
    """A history prepared for the search.

    Invariants: ``len(steps) == len(pure) == number of operations``; ``pure[i]`` is True only if
    operation ``i`` never changes the state when it is accepted (reads, refused cas); the search
    may then linearize it as soon as it is accepted without trying it later.  ``public_state``
    gives the public form of a compiled state, or None for a compiled state that stands for
    many public states; the checker then gets the public state after a linearization from
    ``replay(order)`` if the model gives one (a fast equivalent of applying the operations in
    ``order`` with :meth:`Model.step`), else from :meth:`Model.step` itself.
    """

    init: Hashable
    steps: list[Transition]
    pure: list[bool]
    public_state: Callable[[Any], Hashable]
    replay: Callable[[Sequence[int]], Hashable] | None = None


class Model(ABC):
    """A sequential specification.  Subclass and implement :meth:`init` and :meth:`step`."""

    name: str = "model"

    @abstractmethod
    def init(self) -> Hashable:
        """The initial state."""

    @abstractmethod
    def step(self, state: Any, input: Any, output: Any) -> tuple[bool, Hashable]:
        """Apply one operation: ``(True, new_state)``, or ``(False, state)`` if impossible."""

    def pure(self, input: Any, output: Any) -> bool:
        """True if the operation never changes any state in which it is accepted."""
        return False

    def partition_key(self, input: Any) -> Hashable | None:
        """The independent part of the state that ``input`` touches, or None (no partitions)."""
        return None

    def describe_state(self, state: Any) -> str:
        """A short human-readable form of a (public) state."""
        return repr(state)

    def describe_operation(self, input: Any, output: Any) -> str:
        """A short human-readable form of an operation, e.g. ``write(3)`` or ``get("k") -> "x"``."""
        out = "?" if output is UNKNOWN else repr(output)
        return f"{input!r} -> {out}"

    def explain_failure(self, operations: Sequence[Operation], index: int) -> str | None:
        """Why operation ``index`` could not be linearized, when the model knows more than
        "the model rejected it in every order" (None otherwise); for reports."""
        return None

    def compile_pruned(self, operations: Sequence[Operation]) -> CompiledHistory | None:
        """Like :meth:`compile`, with extra exact pruning that costs more to set up; None if the
        model has none.  The checker switches to it for partitions that do not finish within
        their first slice of the search, so small histories never pay for it."""
        return None

    def compile(self, operations: Sequence[Operation]) -> CompiledHistory:
        """Prepare ``operations`` for the search.  The default wraps :meth:`step`."""

        def make(input: Any, output: Any) -> Transition:
            step = self.step

            def transition(state: Any) -> Any:
                ok, new = step(state, input, output)
                return new if ok else REJECT

            return transition

        return CompiledHistory(
            init=self.init(),
            steps=[make(op.input, op.output) for op in operations],
            pure=[self.pure(op.input, op.output) for op in operations],
            public_state=lambda state: state,
        )


# --------------------------------------------------------------------------- register


def _register_input(input: Any) -> tuple[str, Any, Any]:
    """Validate a register input; returns (kind, a, b)."""
    if isinstance(input, tuple) and input:
        kind = input[0]
        if kind == "read" and len(input) == 1:
            return "read", None, None
        if kind == "write" and len(input) == 2:
            return "write", input[1], None
        if kind == "cas" and len(input) == 3:
            return "cas", input[1], input[2]
    raise ModelInputError(
        f"register input {input!r} is not one of ('read',), ('write', value), ('cas', old, new)"
    )


class RegisterModel(Model):
    """A single register with read, write and compare-and-set; initially ``None`` (empty).

    A cas whose ``old`` differs from the state is refused (output ``False``) and has no effect;
    on an empty register every cas is refused.
    """

    name = "register"

    def init(self) -> Hashable:
        return None

    def step(self, state: Any, input: Any, output: Any) -> tuple[bool, Hashable]:
        kind, a, b = _register_input(input)
        if kind == "read":
            return (output is UNKNOWN or output == state), state
        if kind == "write":
            return True, a
        matches = state is not None and state == a
        if output is UNKNOWN:
            return True, (b if matches else state)
        if bool(output) != matches:
            return False, state
        return True, (b if matches else state)

    def pure(self, input: Any, output: Any) -> bool:
        kind, a, b = _register_input(input)
        return kind == "read" or (kind == "cas" and (output is False or (a == b)))

    def describe_operation(self, input: Any, output: Any) -> str:
        kind, a, b = _register_input(input)
        unknown = output is UNKNOWN
        if kind == "read":
            return "read() -> " + ("?" if unknown else repr(output))
        if kind == "write":
            return f"write({a!r})" + (" -> ?" if unknown else "")
        result = "?" if unknown else ("ok" if output else "refused")
        return f"cas({a!r}, {b!r}) -> {result}"

    def compile(self, operations: Sequence[Operation]) -> CompiledHistory:
        steps: list[Transition] = []
        pure: list[bool] = []
        for op in operations:
            kind, a, b = _register_input(op.input)
            out = op.output
            steps.append(_register_transition(kind, a, b, out))
            pure.append(self.pure(op.input, out))
        return CompiledHistory(None, steps, pure, lambda state: state)


def _register_transition(kind: str, a: Any, b: Any, out: Any) -> Transition:
    if kind == "read":
        if out is UNKNOWN:
            return lambda s: s
        return lambda s: s if s == out else REJECT
    if kind == "write":
        return lambda s: a
    if a is None:  # cas from "empty" can never match
        return (lambda s: s) if (out is UNKNOWN or not out) else (lambda s: REJECT)
    if out is UNKNOWN:
        return lambda s: b if s == a else s
    if out:
        return lambda s: b if s == a else REJECT
    return lambda s: REJECT if s == a else s


# --------------------------------------------------------------------------- key-value


def _kv_input(input: Any) -> tuple[str, Any, str]:
    """Validate a key-value input; returns (kind, key, value)."""
    if isinstance(input, tuple) and input:
        kind = input[0]
        if kind == "get" and len(input) == 2:
            return "get", input[1], ""
        if kind in ("put", "append") and len(input) == 3 and isinstance(input[2], str):
            return kind, input[1], input[2]
    raise ModelInputError(
        f"key-value input {input!r} is not one of ('get', key), ('put', key, str), ('append', key, str)"
    )


def _kv_read(output: Any) -> Any:
    if output is UNKNOWN:
        return UNKNOWN
    if output is None:
        return ""
    if not isinstance(output, str):
        raise ModelInputError(f"a get returned {output!r}; expected a string, None or UNKNOWN")
    return output


class KVModel(Model):
    """A key-value store with get, put and append on string values.

    Public states are tuples of ``(key, value)`` pairs sorted by key, without empty values, so
    equal stores are equal states.  :meth:`compile` uses a smaller internal form: each key's
    value is an id in the trie of the values read on that key (0 is ``""``, 1 stands for every
    value that is a prefix of no value read; see :mod:`linearizability.kvstates`); the state is
    that id for a single-key history, else a tuple of them indexed by key.
    """

    name = "kv"

    def init(self) -> Hashable:
        return ()

    def step(self, state: Any, input: Any, output: Any) -> tuple[bool, Hashable]:
        kind, key, value = _kv_input(input)
        store = dict(state)
        current = store.get(key, "")
        if kind == "get":
            expected = _kv_read(output)
            return (expected is UNKNOWN or expected == current), state
        store[key] = value if kind == "put" else current + value
        return True, tuple(sorted(((k, v) for k, v in store.items() if v != ""), key=lambda kv: repr(kv[0])))

    def pure(self, input: Any, output: Any) -> bool:
        return _kv_input(input)[0] == "get"

    def partition_key(self, input: Any) -> Hashable | None:
        return _kv_input(input)[1]

    def describe_state(self, state: Any) -> str:
        if not state:
            return "{} (every key empty)"
        return "{" + ", ".join(f"{k!r}: {v!r}" for k, v in state) + "}"

    def describe_operation(self, input: Any, output: Any) -> str:
        kind, key, value = _kv_input(input)
        if kind == "get":
            return f"get({key!r}) -> " + ("?" if output is UNKNOWN else repr(_kv_read(output)))
        return f"{kind}({key!r}, {value!r})" + (" -> ?" if output is UNKNOWN else "")

    def explain_failure(self, operations: Sequence[Operation], index: int) -> str | None:
        """For a put or append: the first get of its key with a known output called after it
        returned, when no put that leads to a value some get returned could come between
        them.  That get must then see the operation's effect."""
        op = operations[index]
        kind, key, _ = _kv_input(op.input)
        if kind == "get":
            return None
        same = [other for other in operations if other.input[1] == key]
        reads = [o.output for o in same if o.input[0] == "get" and o.output is not UNKNOWN]
        later = [o for o in same if o.input[0] == "get" and o.output is not UNKNOWN and o.call > op.end]
        if not later:
            return None
        get = min(later, key=lambda other: other.call)
        for other in same:
            value = other.input[2] if other.input[0] == "put" else None
            live = value is not None and (not value or any(r.startswith(value) for r in reads if r))
            if other is not op and live and other.end >= op.call and other.call <= get.end:
                return None
        return (
            f"it returned before {self.describe_operation(get.input, get.output)} (client "
            f"{get.client}) was called at {get.call:g}, and no put can come between them, so that "
            "get must see its effect; no order of the operations gave a value it could read"
        )

    def compile(self, operations: Sequence[Operation]) -> CompiledHistory:
        """Values become ids in a trie of the values read (see :mod:`linearizability.kvstates`):
        an exact quotient of the model that collapses every value no get can still see."""
        return self._compile(operations, pruned=False)

    def compile_pruned(self, operations: Sequence[Operation]) -> CompiledHistory:
        """:meth:`compile` plus the dead-value rule (:func:`~.kvstates.dead_rejects`): a put or
        append that would leave a value no later get can read is rejected at once."""
        return self._compile(operations, pruned=True)

    def _compile(self, operations: Sequence[Operation], pruned: bool) -> CompiledHistory:
        parsed = [
            (_kv_input(op.input), _kv_read(op.output) if op.input[0] == "get" else None) for op in operations
        ]
        reads: dict[Any, list[str]] = {key: [] for (_, key, _), _ in parsed}
        for (kind, key, _), out in parsed:
            if kind == "get" and out is not UNKNOWN:
                reads[key].append(out)
        keys = list(reads) if len(reads) <= 1 else sorted(reads, key=repr)
        tables = {key: PrefixTable(reads[key]) for key in keys}
        rejects = None
        if pruned:
            calls, ends = [op.call for op in operations], [op.end for op in operations]
            rejects = dead_rejects(parsed, calls, ends, tables)
        if rejects is None:
            rejects = [False] * len(parsed)
        pure = [kind == "get" for (kind, _, _), _ in parsed]
        if len(keys) <= 1:
            only = keys[0] if keys else None
            table = tables.get(only) or PrefixTable(())
            steps = [
                _kv_single(table, kind, value, out, reject)
                for ((kind, _, value), out), reject in zip(parsed, rejects, strict=True)
            ]

            def public_single(state: int) -> Hashable:
                value = table.text(state)
                if value is None:
                    return None
                return ((only, value),) if value else ()

            return CompiledHistory(EMPTY, steps, pure, public_single, _kv_replayer_single(parsed, only))
        index = {key: i for i, key in enumerate(keys)}
        steps = [
            _kv_multi(tables[key], kind, index[key], value, out, reject)
            for ((kind, key, value), out), reject in zip(parsed, rejects, strict=True)
        ]
        ordered = [tables[key] for key in keys]

        def public(state: tuple[int, ...]) -> Hashable:
            values = [table.text(v) for table, v in zip(ordered, state, strict=True)]
            if None in values:
                return None
            pairs = ((k, v) for k, v in zip(keys, values, strict=True) if v)
            return tuple(sorted(pairs, key=lambda kv: repr(kv[0])))

        return CompiledHistory((EMPTY,) * len(keys), steps, pure, public, _kv_replayer(parsed))


def _kv_replayer(parsed: list[tuple[tuple[str, Any, str], Any]]) -> Callable[[Sequence[int]], Hashable]:
    """The public state after the operations ``order`` (indices into ``parsed``, whose items
    are (input, output)): the same as applying them with :meth:`KVModel.step`, in time linear
    in the length of the values."""

    def replay(order: Sequence[int]) -> Hashable:
        pieces: dict[Any, list[str]] = {}
        for i in order:
            kind, key, value = parsed[i][0]
            if kind == "put":
                pieces[key] = [value]
            elif kind == "append":
                pieces.setdefault(key, []).append(value)
        values = ((key, "".join(parts)) for key, parts in pieces.items())
        return tuple(sorted(((k, v) for k, v in values if v), key=lambda kv: repr(kv[0])))

    return replay


def _kv_replayer_single(
    parsed: list[tuple[tuple[str, Any, str], Any]], key: Any
) -> Callable[[Sequence[int]], Hashable]:
    """:func:`_kv_replayer` for operations on the single key ``key``."""

    def replay(order: Sequence[int]) -> Hashable:
        pieces: list[str] = []
        for i in order:
            kind, _, value = parsed[i][0]
            if kind == "append":
                pieces.append(value)
            elif kind == "put":
                pieces = [value]
        value = "".join(pieces)
        return ((key, value),) if value else ()

    return replay


def _kv_single(table: PrefixTable, kind: str, value: str, out: Any, reject: bool) -> Transition:
    """``reject``: a transition to DEAD rejects instead (see :func:`~.kvstates.dead_rejects`)."""
    if kind == "get":
        if out is UNKNOWN:
            return lambda s: s
        target = table.id(out)
        return lambda s: s if s == target else REJECT
    on_dead = REJECT if reject else DEAD
    if kind == "put":
        new = table.id(value)
        new = on_dead if new == DEAD else new
        return lambda s: new
    return table.appender(value, on_dead)


def _kv_multi(table: PrefixTable, kind: str, i: int, value: str, out: Any, reject: bool) -> Transition:
    j = i + 1
    if kind == "get":
        if out is UNKNOWN:
            return lambda s: s
        target = table.id(out)
        return lambda s: s if s[i] == target else REJECT
    on_dead = REJECT if reject else DEAD
    if kind == "put":
        new = table.id(value)
        if new == DEAD and reject:
            return lambda s: REJECT
        return lambda s: (*s[:i], new, *s[j:])
    append = table.appender(value, on_dead)

    def transition(s: tuple[int, ...]) -> Any:
        new = append(s[i])
        return new if new is REJECT else (*s[:i], new, *s[j:])

    return transition
