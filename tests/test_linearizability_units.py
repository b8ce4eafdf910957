"""Unit tests: models, compiled transitions, partitioning, events, unknown outcomes, time budget."""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linearizability import (
    REJECT,
    UNKNOWN,
    Event,
    HistoryError,
    KVModel,
    Model,
    ModelInputError,
    Operation,
    RegisterModel,
    Verdict,
    check,
    check_events,
    operations_from_events,
    partition,
)

# --------------------------------------------------------------------------- register model


@pytest.mark.parametrize(
    ("state", "input", "output", "ok", "new"),
    [
        (None, ("read",), None, True, None),  # an empty register reads nil
        (None, ("read",), 3, False, None),
        (3, ("read",), 3, True, 3),
        (3, ("read",), UNKNOWN, True, 3),  # a timed-out read matches any state
        (3, ("write",), None, None, None),  # malformed: checked below
        (None, ("write", 4), None, True, 4),
        (4, ("cas", 4, 0), True, True, 0),
        (4, ("cas", 4, 0), False, False, 4),
        (4, ("cas", 1, 0), False, True, 4),  # refused, no effect
        (4, ("cas", 1, 0), True, False, 4),
        (None, ("cas", 0, 1), True, False, None),  # cas on an empty register is refused
        (None, ("cas", 0, 1), False, True, None),
        (4, ("cas", 4, 0), UNKNOWN, True, 0),  # unknown cas applies if it matches
        (4, ("cas", 1, 0), UNKNOWN, True, 4),
        (4, ("write", 2), UNKNOWN, True, 2),
    ],
)
def test_register_step(state: Any, input: Any, output: Any, ok: bool | None, new: Any) -> None:
    model = RegisterModel()
    if ok is None:
        with pytest.raises(ModelInputError, match="register input"):
            model.step(state, input, output)
        return
    assert model.step(state, input, output) == (ok, new)
    # The compiled transition agrees with step.
    compiled = model.compile([Operation(0, input, output, 0, 1)])
    result = compiled.steps[0](state)
    assert (result is not REJECT) is ok
    if ok:
        assert result == new


def test_register_pure_operations() -> None:
    model = RegisterModel()
    assert model.pure(("read",), 3)
    assert model.pure(("read",), UNKNOWN)
    assert model.pure(("cas", 1, 2), False)
    assert model.pure(("cas", 2, 2), True)
    assert not model.pure(("cas", 1, 2), True)
    assert not model.pure(("cas", 1, 2), UNKNOWN)
    assert not model.pure(("write", 1), None)


def test_register_descriptions() -> None:
    model = RegisterModel()
    assert model.describe_operation(("read",), 3) == "read() -> 3"
    assert model.describe_operation(("write", 3), UNKNOWN) == "write(3) -> ?"
    assert model.describe_operation(("cas", 1, 2), False) == "cas(1, 2) -> refused"


# --------------------------------------------------------------------------- key-value model


def test_kv_step() -> None:
    model = KVModel()
    s = model.init()
    assert model.step(s, ("get", "k"), "") == (True, s)  # a missing key reads as ""
    assert model.step(s, ("get", "k"), None) == (True, s)
    assert model.step(s, ("get", "k"), "x")[0] is False
    ok, s = model.step(s, ("append", "k", "x"), None)
    assert ok and s == (("k", "x"),)
    ok, s = model.step(s, ("append", "k", "y"), None)
    assert s == (("k", "xy"),)
    ok, s = model.step(s, ("put", "j", "z"), None)
    assert s == (("j", "z"), ("k", "xy"))
    assert model.step(s, ("get", "k"), "xy") == (True, s)
    assert model.step(s, ("get", "k"), UNKNOWN) == (True, s)
    ok, s = model.step(s, ("put", "k", ""), None)
    assert s == (("j", "z"),)  # an empty value is the same store as a missing key
    assert model.describe_state(s) == "{'j': 'z'}"


@pytest.mark.parametrize("bad", [("get",), ("put", "k"), ("append", "k", 3), ("del", "k"), "get"])
def test_kv_rejects_malformed_inputs(bad: Any) -> None:
    with pytest.raises(ModelInputError, match="key-value input"):
        KVModel().step((), bad, None)
    with pytest.raises(ModelInputError):
        KVModel().compile([Operation(0, bad, None, 0, 1)])


kv_ops = st.lists(
    st.tuples(
        st.sampled_from(["get", "put", "append"]),
        st.sampled_from(["a", "b", "c"]),
        st.sampled_from(["", "x", "y", "xy"]),
        st.booleans(),
    ),
    max_size=12,
)


@settings(max_examples=100, deadline=None)
@given(kv_ops)
def test_kv_compiled_transitions_are_an_exact_quotient(ops: list[tuple[str, str, str, bool]]) -> None:
    """Replaying with compiled transitions and with step gives the same answers; the compiled
    state names the public state exactly, except that every value that is a prefix of no value
    read on its key is collapsed into one state (public_state None)."""
    model = KVModel()
    history = []
    for kind, key, value, unknown in ops:
        input = ("get", key) if kind == "get" else (kind, key, value)
        history.append(Operation(0, input, UNKNOWN if unknown else value, 0, 1))
    reads: dict[str, list[str]] = {}
    for op in history:
        if op.input[0] == "get" and op.output is not UNKNOWN:
            reads.setdefault(op.input[1], []).append(op.output)
    compiled = model.compile(history)
    assert compiled.replay is not None
    fast, slow = compiled.init, model.init()
    for index, (transition, op) in enumerate(zip(compiled.steps, history, strict=True)):
        new_fast = transition(fast)
        ok, new_slow = model.step(slow, op.input, op.output)
        assert (new_fast is not REJECT) is ok
        if not ok:
            break
        fast, slow = new_fast, new_slow
        live = all(any(r.startswith(v) for r in reads.get(k, [])) for k, v in slow)
        assert compiled.public_state(fast) == (slow if live else None)
        assert compiled.replay(range(index + 1)) == slow  # the fast replay agrees with step


def test_kv_values_no_get_sees_collapse_into_one_state() -> None:
    """Appends in an order that no get observed lead to the same compiled state, whatever
    the order; in an observed order they lead to distinct states."""
    history = [
        Operation(0, ("append", "k", "a"), None, 0, 10),
        Operation(1, ("append", "k", "b"), None, 0, 10),
        Operation(2, ("append", "k", "c"), None, 0, 10),
        Operation(3, ("get", "k"), "abc", 5, 12),  # concurrent with them: no early rejection
    ]
    compiled = KVModel().compile(history)
    a, b, c = compiled.steps[:3]
    s = compiled.init
    assert c(b(a(s))) == compiled.steps[3](c(b(a(s))))  # the get accepts "abc"
    assert b(a(c(s))) == c(a(b(s))) == a(c(b(s)))  # orders no get saw: one state
    assert compiled.public_state(b(a(c(s)))) is None
    assert len({a(s), b(a(s)), c(b(a(s))), b(a(c(s)))}) == 4


def test_kv_a_value_that_a_later_get_cannot_read_is_rejected_at_once() -> None:
    """The dead-value rule (compile_pruned, which the checker uses for partitions that need
    more than one slice): with a get called after the appends return, an order no get observed
    is rejected instead of entering the collapsed state; a put that may follow turns it off."""
    appends = [Operation(i, ("append", "k", v), None, 0, 10) for i, v in enumerate("abc")]
    get = Operation(3, ("get", "k"), "abc", 11, 12)
    assert KVModel().compile([*appends, get]).steps[2](0) is not REJECT  # only when pruned
    compiled = KVModel().compile_pruned([*appends, get])
    a, b, c = compiled.steps[:3]
    s = compiled.init
    assert c(s) is REJECT and b(s) is REJECT and c(b(a(s))) is not REJECT
    revived = KVModel().compile_pruned([*appends, Operation(4, ("put", "k", "a"), None, 5, 15), get])
    assert revived.steps[2](revived.init) is not REJECT  # the put could come after it
    assert check([*appends, get], KVModel()).linearizable


# --------------------------------------------------------------------------- partitioning


def test_partition_by_key_keeps_order_and_indices() -> None:
    history = [
        Operation(0, ("put", "b", "1"), None, 0, 1),
        Operation(1, ("get", "a"), "", 0, 1),
        Operation(0, ("append", "b", "2"), None, 2, 3),
    ]
    parts = partition(history, KVModel())
    assert [p.key for p in parts] == ["b", "a"]
    assert parts[0].indices == (0, 2)
    assert parts[0].operations == (history[0], history[2])
    (whole,) = partition([Operation(0, ("read",), None, 0, 1)], RegisterModel())
    assert whole.key is None


def test_partitions_are_checked_independently() -> None:
    """Two keys each fine on their own; the result names the bad key when one is bad."""
    history = [
        Operation(0, ("put", "a", "1"), None, 0, 1),
        Operation(1, ("put", "b", "2"), None, 0, 1),
        Operation(0, ("get", "a"), "1", 2, 3),
        Operation(1, ("get", "b"), "1", 2, 3),  # b was never "1"
    ]
    result = check(history, KVModel())
    assert result.verdict is Verdict.NOT_LINEARIZABLE
    assert [p.key for p in result.failures] == ["b"]
    failed = result.failures[0]
    assert failed.operations[failed.failed].input == ("get", "b")
    assert failed.state == (("b", "2"),)
    assert failed.indices == (1, 3)
    # Had the search stopped at the put instead (the dead-value rule can do that), the model
    # names the get that must see it.
    why = KVModel().explain_failure(failed.operations, 0)
    assert why is not None and "before get('b') -> '1' (client 1) was called at 2" in why
    assert KVModel().explain_failure(failed.operations, 1) is None  # a get: nothing to add
    whole = check(history, KVModel(), partitioned=False)
    assert whole.verdict is Verdict.NOT_LINEARIZABLE and len(whole.partitions) == 1


def test_mixed_partition_keys_are_an_error() -> None:
    class Half(RegisterModel):
        def partition_key(self, input: Any) -> Any:
            return "x" if input[0] == "write" else None

    history = [Operation(0, ("write", 1), None, 0, 1), Operation(0, ("read",), 1, 2, 3)]
    with pytest.raises(ValueError, match="no partition key"):
        check(history, Half())


# --------------------------------------------------------------------------- histories and events


def test_events_become_operations() -> None:
    events = [
        Event("call", "c1", 1, ("write", 1)),
        Event("call", "c2", 2, ("read",)),
        Event("return", "c1", 1, None),
        Event("return", "c2", 2, 1),
        Event("call", "c1", 3, ("write", 2)),  # never returns: unknown outcome
    ]
    ops = operations_from_events(events)
    assert ops[0] == Operation("c1", ("write", 1), None, 0.0, 2.0)
    assert ops[1] == Operation("c2", ("read",), 1, 1.0, 3.0)
    assert ops[2].unknown and ops[2].ret is None
    assert check_events(events, RegisterModel()).linearizable


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ([Event("return", 0, 1, None)], "no call with that id"),
        ([Event("call", 0, 1, ("read",)), Event("call", 0, 1, ("read",))], "still open"),
        ([Event("call", 0, 1, ("read",)), Event("return", 1, 1, None)], "called by client"),
        ([Event("call", 0, 1, ("read",), 5.0), Event("return", 0, 1, None, 4.0)], "real-time"),
        ([Event("ask", 0, 1, None)], "expected 'call' or 'return'"),  # type: ignore[arg-type]
    ],
)
def test_bad_events(events: list[Event], message: str) -> None:
    with pytest.raises(HistoryError, match=message):
        operations_from_events(events)


@pytest.mark.parametrize(
    ("op", "message"),
    [
        (Operation(0, ("read",), 1, 5, 4), "before its call"),
        (Operation(0, ("read",), 1, 5, None), "no return time"),
        ("read", "not an Operation"),
        (Operation(0, ("read",), 1, float("nan"), 4), "real numbers"),
        (Operation(0, ("read",), 1, None, 4), "real numbers"),  # type: ignore[arg-type]
        (Operation(0, ("read",), 1, 0, "4"), "real numbers"),  # type: ignore[arg-type]
    ],
)
def test_invalid_operations_are_reported(op: Any, message: str) -> None:
    with pytest.raises(HistoryError, match=message):
        check([op], RegisterModel())


def test_report_of_a_linearizable_history_shows_the_linearization() -> None:
    from linearizability import render_html

    history = [Operation(0, ("write", 1), None, 0, 2), Operation(1, ("read",), 1, 1, 3)]
    page = render_html(check(history, RegisterModel()))
    assert "1. write(1)" in page and "2. read() -&gt; 1" in page
    assert "Every attempt failed" not in page


def test_report_of_an_unknown_result() -> None:
    from linearizability import render_html

    result = check(hard_history(), RegisterModel(), timeout=0.05)
    page = render_html(result)
    assert "unknown" in page and "longest linearizable prefix found" in page


def test_empty_history_is_linearizable() -> None:
    assert check([], RegisterModel()).linearizable
    assert check([], KVModel()).linearizable


# --------------------------------------------------------------------------- unknown outcomes


def test_unknown_write_may_never_take_effect() -> None:
    history = [
        Operation(0, ("write", 1), None, 0, 1),
        Operation(1, ("write", 2), UNKNOWN, 2, 3),
        Operation(0, ("read",), 1, 4, 5),
        Operation(0, ("read",), 1, 6, 7),
    ]
    assert check(history, RegisterModel()).linearizable


def test_unknown_write_cannot_take_effect_before_its_call() -> None:
    history = [
        Operation(0, ("read",), 2, 0, 1),
        Operation(1, ("write", 2), UNKNOWN, 2, None),
    ]
    result = check(history, RegisterModel())
    assert result.verdict is Verdict.NOT_LINEARIZABLE
    assert result.partitions[0].failed == 0


def test_unknown_write_cannot_flicker() -> None:
    """Once seen, an unknown write has taken effect: it cannot disappear again."""
    history = [
        Operation(0, ("write", 1), None, 0, 1),
        Operation(1, ("write", 2), UNKNOWN, 2, None),
        Operation(0, ("read",), 2, 3, 4),
        Operation(0, ("read",), 1, 5, 6),
    ]
    assert check(history, RegisterModel()).verdict is Verdict.NOT_LINEARIZABLE


def test_unknown_cas_may_or_may_not_apply() -> None:
    base = [Operation(0, ("write", 1), None, 0, 1), Operation(1, ("cas", 1, 5), UNKNOWN, 2, 3)]
    for seen in (1, 5):
        assert check([*base, Operation(0, ("read",), seen, 4, 5)], RegisterModel()).linearizable
    bad = [*base, Operation(0, ("read",), 7, 4, 5)]
    assert not check(bad, RegisterModel()).linearizable


# --------------------------------------------------------------------------- time budget


def hard_history(n: int = 22) -> list[Operation]:
    """n overlapping writes, then a read of a value nobody wrote: every order must be tried."""
    writes = [Operation(i, ("write", i), None, 0, 100) for i in range(n)]
    return [*writes, Operation(n, ("read",), -1, 200, 201)]


def test_time_budget_answers_unknown() -> None:
    start = time.monotonic()
    result = check(hard_history(), RegisterModel(), timeout=0.2)
    elapsed = time.monotonic() - start
    assert result.verdict is Verdict.UNKNOWN
    assert elapsed < 2.0, f"the budget was 0.2 s but the check took {elapsed:.2f} s"
    assert not result.linearizable
    assert result.partitions[0].explored > 0


def test_time_budget_spans_partitions() -> None:
    """One budget for the whole check: the small partition is checked first and decided, the
    hard one is unknown, and the result says which key ran out of what."""
    history = [Operation(i, ("append", "k", "x"), None, 0, 100) for i in range(22)]
    history += [Operation(99, ("get", "k"), "x" * 23, 200, 201)]  # one more than was appended
    history += [Operation(0, ("put", "z", "1"), None, 300, 301)]
    result = check(history, KVModel(), timeout=0.1)
    assert result.verdict is Verdict.UNKNOWN
    assert [p.verdict for p in result.partitions] == [Verdict.UNKNOWN, Verdict.LINEARIZABLE]
    assert result.partitions[0].reason == "the time budget of 100 ms ran out"
    assert result.reason == "key 'k': the time budget of 100 ms ran out"
    assert not result.skipped


def test_a_spent_budget_searches_nothing() -> None:
    result = check(hard_history(), RegisterModel(), timeout=0)
    assert result.verdict is Verdict.UNKNOWN
    assert result.partitions[0].explored == 0
    assert "time budget" in (result.reason or "")


def test_a_generous_budget_still_decides() -> None:
    assert check(hard_history(8), RegisterModel(), timeout=30).verdict is Verdict.NOT_LINEARIZABLE


# --------------------------------------------------------------------------- custom models


class Counter(Model):
    """A counter with increment (output ignored) and read: a model written by a user."""

    name = "counter"

    def init(self) -> int:
        return 0

    def step(self, state: int, input: Any, output: Any) -> tuple[bool, int]:
        if input == "inc":
            return True, state + 1
        return (output is UNKNOWN or output == state), state


def test_custom_model_through_the_default_compile() -> None:
    history = [
        Operation(0, "inc", None, 0, 10),
        Operation(1, "inc", None, 0, 10),
        Operation(2, "read", 1, 1, 2),
        Operation(2, "read", 2, 11, 12),
    ]
    assert check(history, Counter()).linearizable
    history.append(Operation(3, "read", 1, 13, 14))
    result = check(history, Counter())
    assert result.verdict is Verdict.NOT_LINEARIZABLE
    assert result.partitions[0].state == 2
