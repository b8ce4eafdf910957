"""Property tests: generated histories, mutations, order independence, and a brute-force oracle."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from linearizability import (
    UNKNOWN,
    KVModel,
    Model,
    Operation,
    RegisterModel,
    Verdict,
    check,
)

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------- helpers


def register_inputs(draw: st.DrawFn, n: int) -> list[tuple[Any, ...]]:
    ops = []
    for _ in range(n):
        kind = draw(st.sampled_from(["read", "read", "write", "cas"]))
        if kind == "read":
            ops.append(("read",))
        elif kind == "write":
            ops.append(("write", draw(st.integers(0, 3))))
        else:
            ops.append(("cas", draw(st.integers(0, 3)), draw(st.integers(0, 3))))
    return ops


def kv_inputs(draw: st.DrawFn, n: int) -> list[tuple[Any, ...]]:
    ops = []
    for i in range(n):
        kind = draw(st.sampled_from(["get", "get", "put", "append"]))
        key = draw(st.sampled_from(["a", "b", "c"]))
        ops.append(("get", key) if kind == "get" else (kind, key, f"v{i};"))
    return ops


@st.composite
def sequential_histories(draw: st.DrawFn, max_ops: int = 40) -> tuple[Model, list[Operation]]:
    """Run random operations one at a time, then widen each into a random interval around its
    linearization point: the result is linearizable by construction."""
    model: Model = draw(st.sampled_from([RegisterModel(), KVModel()]))
    n = draw(st.integers(0, max_ops))
    inputs = (register_inputs if isinstance(model, RegisterModel) else kv_inputs)(draw, n)
    state = model.init()
    history = []
    for point, input in enumerate(inputs):
        point_time = point * 10.0
        if isinstance(model, RegisterModel) and input[0] == "cas":
            output: Any = state is not None and state == input[1]
        elif input[0] in ("read", "get"):
            output = state if input[0] == "read" else dict(state).get(input[1], "")
        else:
            output = None
        ok, state = model.step(state, input, output)
        assert ok
        before = draw(st.floats(0, 35, allow_nan=False))
        after = draw(st.floats(0, 35, allow_nan=False))
        client = draw(st.integers(0, 4))
        if input[0] not in ("read", "get") and draw(st.integers(0, 9)) == 0:
            history.append(Operation(client, input, UNKNOWN, point_time - before, None))
        else:
            history.append(Operation(client, input, output, point_time - before, point_time + after))
    return model, history


def assert_valid_linearization(model: Model, history: Sequence[Operation], order: Sequence[int]) -> None:
    """``order`` contains every operation once, respects real time, and replays on the model."""
    assert sorted(order) == list(range(len(history)))
    position = {op: k for k, op in enumerate(order)}
    for a, b in itertools.permutations(range(len(history)), 2):
        if history[a].end < history[b].call:
            assert position[a] < position[b], (history[a], history[b])
    state = model.init()
    for i in order:
        ok, state = model.step(state, history[i].input, history[i].output)
        assert ok, (history[i], state)


def brute_force(model: Model, history: Sequence[Operation]) -> bool:
    """Try every order that respects real time (small histories only)."""
    n = len(history)

    def extend(done: frozenset[int], state: Any) -> bool:
        if len(done) == n:
            return True
        for i in range(n):
            if i in done:
                continue
            if any(j not in done and j != i and history[j].end < history[i].call for j in range(n)):
                continue
            ok, new = model.step(state, history[i].input, history[i].output)
            if ok and extend(done | {i}, new):
                return True
        return False

    return extend(frozenset(), model.init())


# --------------------------------------------------------------------------- properties


@SETTINGS
@given(sequential_histories())
def test_generated_histories_are_linearizable(case: tuple[Model, list[Operation]]) -> None:
    model, history = case
    for partitioned in (True, False):
        result = check(history, model, partitioned=partitioned)
        assert result.verdict is Verdict.LINEARIZABLE
        for part in result.partitions:
            assert_valid_linearization(model, part.operations, part.order)


@SETTINGS
@given(sequential_histories(), st.data())
def test_a_read_of_a_value_never_written_is_not_linearizable(
    case: tuple[Model, list[Operation]], data: st.DataObject
) -> None:
    model, history = case
    reads = [i for i, op in enumerate(history) if op.input[0] in ("read", "get")]
    if not reads:
        return
    i = data.draw(st.sampled_from(reads))
    never = -1 if isinstance(model, RegisterModel) else "never written"
    op = history[i]
    history[i] = Operation(op.client, op.input, never, op.call, op.ret)
    for partitioned in (True, False):
        result = check(history, model, partitioned=partitioned)
        assert result.verdict is Verdict.NOT_LINEARIZABLE
        (failed,) = result.failures
        assert failed.failed is not None


@SETTINGS
@given(sequential_histories(max_ops=25), st.randoms(use_true_random=False), st.booleans())
def test_verdict_does_not_depend_on_listing_order(
    case: tuple[Model, list[Operation]], rnd: random.Random, corrupt: bool
) -> None:
    model, history = case
    if corrupt and history:
        # Swap two outputs of the same kind of operation: often, not always, a violation.
        i, j = rnd.randrange(len(history)), rnd.randrange(len(history))
        a, b = history[i], history[j]
        if a.input[0] == b.input[0] and not a.unknown and not b.unknown:
            history[i] = Operation(a.client, a.input, b.output, a.call, a.ret)
            history[j] = Operation(b.client, b.input, a.output, b.call, b.ret)
    expected = check(history, model).verdict
    shuffled = list(history)
    rnd.shuffle(shuffled)
    for partitioned in (True, False):
        result = check(shuffled, model, partitioned=partitioned)
        assert result.verdict is expected
        if result.linearizable:
            for part in result.partitions:
                assert_valid_linearization(model, part.operations, part.order)


def test_a_long_history_with_long_values() -> None:
    """Thousands of operations on one key whose value keeps growing: the window encoding keeps
    the cache keys small, and states are ids of prefixes of the values read, never new strings."""
    rnd = random.Random(7)
    value, history = "", []
    for p in range(2000):
        t = p * 10.0
        if rnd.random() < 0.5:
            piece = f"x {p % 5} {p} y"
            value += piece
            history.append(Operation(p % 5, ("append", "k", piece), None, t - 12, t + 12))
        else:
            history.append(Operation(p % 5, ("get", "k"), value, t - 12, t + 12))
    result = check(history, KVModel(), timeout=60)
    assert result.verdict is Verdict.LINEARIZABLE
    wrong = Operation(0, ("get", "k"), value + "!", 20_000.0, 20_001.0)
    assert check([*history, wrong], KVModel(), timeout=60).verdict is Verdict.NOT_LINEARIZABLE


@st.composite
def small_random_histories(draw: st.DrawFn) -> tuple[Model, list[Operation]]:
    """Arbitrary (mostly not linearizable) small histories with arbitrary outputs."""
    model: Model = draw(st.sampled_from([RegisterModel(), KVModel()]))
    n = draw(st.integers(0, 6))
    history = []
    for i in range(n):
        call = draw(st.integers(0, 20))
        ret = call + draw(st.integers(0, 10))
        if isinstance(model, RegisterModel):
            (input,) = register_inputs(draw, 1)
            if input[0] == "read":
                output: Any = draw(st.sampled_from([None, 0, 1, 2]))
            elif input[0] == "cas":
                output = draw(st.booleans())
            else:
                output = None
        else:
            kind = draw(st.sampled_from(["get", "put", "append"]))
            key = draw(st.sampled_from(["a", "b"]))
            input = ("get", key) if kind == "get" else (kind, key, draw(st.sampled_from("xy")))
            output = draw(st.sampled_from(["", "x", "y", "xy", "yx", "xx"])) if kind == "get" else None
        if draw(st.integers(0, 7)) == 0:
            history.append(Operation(i % 3, input, UNKNOWN, call, None))
        else:
            history.append(Operation(i % 3, input, output, call, ret))
    return model, history


@settings(max_examples=300, deadline=None)
@given(small_random_histories())
def test_search_agrees_with_brute_force(case: tuple[Model, list[Operation]]) -> None:
    model, history = case
    expected = brute_force(model, history)
    for partitioned in (True, False):
        result = check(history, model, partitioned=partitioned)
        assert result.linearizable is expected
        if expected:
            for part in result.partitions:
                assert_valid_linearization(model, part.operations, part.order)


@st.composite
def append_heavy_histories(draw: st.DrawFn) -> list[Operation]:
    """One key, up to 8 overlapping appends, puts and gets whose values collide on purpose
    ("a" + "b" == "ab"): the trie of values read must stay exact whatever the strings."""
    n = draw(st.integers(1, 8))
    history = []
    for i in range(n):
        call = draw(st.integers(0, 12))
        ret = call + draw(st.integers(0, 8))
        kind = draw(st.sampled_from(["append", "append", "append", "get", "get", "put"]))
        if kind == "get":
            output: Any = draw(st.sampled_from(["", "a", "b", "ab", "ba", "aab", "abab", "bab", "abb"]))
            input: tuple[str, ...] = ("get", "k")
        else:
            output = None
            input = (kind, "k", draw(st.sampled_from(["a", "b", "ab", ""])))
        if draw(st.integers(0, 9)) == 0:
            history.append(Operation(i % 4, input, UNKNOWN, call, None))
        else:
            history.append(Operation(i % 4, input, output, call, ret))
    return history


@settings(max_examples=400, deadline=None)
@given(append_heavy_histories())
def test_append_heavy_search_agrees_with_brute_force(history: list[Operation]) -> None:
    model = KVModel()
    expected = brute_force(model, history)
    for all_partitions in (False, True):
        result = check(history, model, all_partitions=all_partitions)
        assert result.linearizable is expected
        if expected:
            assert_valid_linearization(model, history, result.partitions[0].order)
        else:
            # The reported state is the real one after the reported prefix.
            (part,) = result.partitions
            state = model.init()
            for i in part.order:
                ok, state = model.step(state, history[i].input, history[i].output)
                assert ok
            assert part.state == state


def test_unknown_outcomes_stay_open_until_the_end() -> None:
    """A write whose outcome is unknown may take effect long after it timed out."""
    history = [
        Operation(0, ("write", 1), UNKNOWN, 0, 1),  # timed out at 1
        Operation(1, ("read",), None, 2, 3),  # not yet visible
        Operation(1, ("read",), 1, 4, 5),  # now visible
    ]
    assert check(history, RegisterModel()).linearizable
    assert math.isinf(history[0].end)
