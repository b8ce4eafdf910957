"""The recorder: threads, asyncio tasks, pickled records merged from several recorders."""

from __future__ import annotations

import asyncio
import itertools
import pickle
import threading

import pytest

from linearizability import (
    UNKNOWN,
    HistoryError,
    KVModel,
    Record,
    Recorder,
    RegisterModel,
    Verdict,
    check,
    history_from_records,
)


class LockedRegister:
    """A correct concurrent register, to record real concurrent histories."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.value: int | None = None

    def read(self) -> int | None:
        with self.lock:
            return self.value

    def write(self, value: int) -> None:
        with self.lock:
            self.value = value

    def cas(self, old: int, new: int) -> bool:
        with self.lock:
            if self.value is not None and self.value == old:
                self.value = new
                return True
            return False


def test_threads_record_a_linearizable_history() -> None:
    rec = Recorder()
    reg = LockedRegister()
    barrier = threading.Barrier(6)

    def client(c: int) -> None:
        barrier.wait()
        for i in range(40):
            kind = (c + i) % 3
            if kind == 0:
                rec.run(c, ("read",), reg.read)
            elif kind == 1:
                rec.run(c, ("write", i % 4), reg.write, i % 4)
            else:
                rec.run(c, ("cas", i % 4, c % 4), reg.cas, i % 4, c % 4)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    history = rec.history()
    assert len(history) == 240
    assert all(op.ret is not None and op.call <= op.ret for op in history)
    for c in range(6):  # each client's operations do not overlap
        mine = [op for op in history if op.client == c]
        assert all(a.ret <= b.call for a, b in itertools.pairwise(mine))  # type: ignore[operator]
    assert check(history, RegisterModel(), timeout=30).verdict is Verdict.LINEARIZABLE


def test_a_broken_register_is_caught() -> None:
    rec = Recorder()
    t = rec.call("a", ("write", 1))
    rec.ret(t, None)
    t = rec.call("b", ("read",))
    rec.ret(t, None)  # a stale read after the write returned
    assert check(rec.history(), RegisterModel()).verdict is Verdict.NOT_LINEARIZABLE


def test_context_manager_and_unknown_outcomes() -> None:
    rec = Recorder()
    with rec.operation(0, ("put", "k", "v")):
        pass  # no output set: None
    with rec.operation(0, ("get", "k")) as op:
        op.output = "v"
    with pytest.raises(TimeoutError), rec.operation(1, ("append", "k", "w")):
        raise TimeoutError
    with rec.operation(2, ("append", "k", "x")) as op:
        op.unknown()
    rec.timeout(rec.call(3, ("get", "k")))  # timeout is an alias of unknown
    rec.call(4, ("put", "k", "z"))  # never returns
    history = rec.history()
    assert [op.output for op in history] == [None, "v", UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN]
    assert history[2].ret is not None and history[5].ret is None
    assert all(op.end == float("inf") for op in history[2:])
    assert check(history, KVModel()).linearizable


def test_closing_a_token_twice_or_a_foreign_token_fails() -> None:
    rec = Recorder()
    token = rec.call(0, ("read",))
    rec.ret(token, None)
    with pytest.raises(ValueError, match="already"):
        rec.ret(token, None)
    with pytest.raises(ValueError, match="another Recorder"):
        Recorder().unknown(token)


def test_asyncio_tasks() -> None:
    rec = Recorder()
    store: dict[str, str] = {}

    async def client(c: int) -> None:
        for i in range(10):
            with rec.operation(c, ("append", "k", f"{c}.{i};")):
                await asyncio.sleep(0)
                store["k"] = store.get("k", "") + f"{c}.{i};"
            with rec.operation(c, ("get", "k")) as op:
                await asyncio.sleep(0)
                op.output = store.get("k", "")

    async def main() -> None:
        await asyncio.gather(*(client(c) for c in range(4)))

    asyncio.run(main())
    history = rec.history()
    assert len(history) == 80
    assert check(history, KVModel(), partitioned=False).linearizable


def test_records_pickle_and_merge_like_ray_actors() -> None:
    """Each actor has its own recorder; the driver merges the records it gets back."""
    actors = [Recorder(), Recorder()]
    t = actors[0].call("a", ("write", 1))
    actors[0].ret(t, None)
    t = actors[1].call("b", ("read",))
    actors[1].ret(t, 1)
    t = actors[1].call("b", ("write", 2))
    actors[1].unknown(t)
    shipped = pickle.loads(pickle.dumps([r.records() for r in actors]))
    assert all(isinstance(r, Record) for batch in shipped for r in batch)
    assert shipped[1][-1].value is UNKNOWN  # identity survives pickling
    driver = Recorder()
    for batch in shipped:
        driver.extend(batch)
    history = driver.history()
    assert [op.client for op in history] == ["a", "b", "b"]
    assert history[2].unknown
    assert check(history, RegisterModel()).linearizable
    with pytest.raises(TypeError, match="records"):
        pickle.dumps(driver)
    with pytest.raises(TypeError, match="Record"):
        driver.extend(["not a record"])  # type: ignore[list-item]


def test_merging_the_same_records_twice_is_an_error() -> None:
    rec = Recorder()
    rec.ret(rec.call(0, ("read",)), None)
    with pytest.raises(HistoryError, match="merged twice"):
        history_from_records(rec.records() * 2)
    with pytest.raises(HistoryError, match="call is missing"):
        history_from_records(rec.records()[1:])


def test_custom_clock() -> None:
    ticks = iter(range(100))
    rec = Recorder(clock=lambda: next(ticks))
    a = rec.call(0, ("write", 1))
    b = rec.call(1, ("read",))
    rec.ret(b, 1)
    rec.ret(a, None)
    assert [(op.call, op.ret) for op in rec.history()] == [(0, 3), (1, 2)]
