"""One background event loop per process, for blocking callers of the stream transport (sync clerks).

``run_blocking(lambda: client.start(method, payload, 1.0), timeout_s=2.0)`` runs the coroutine the
factory returns on the shared loop thread and blocks the calling thread until it finishes.

Invariants:

- The loop and its thread are created lazily, on the first call, as a daemon thread (a process that
  never makes a blocking stream call starts no thread; the thread never keeps a process alive).
- The factory is called *on the loop thread*, so everything it creates (stream clients, their
  connections and futures) belongs to that one loop; stream clients used through here must only ever
  be used through here.
- After ``fork`` the child starts with no loop (the parent's thread does not exist in the child) and
  creates its own on first use; nothing of this module is ever pickled.
- A call that runs out of ``timeout_s`` is cancelled on the loop and raises ``TimeoutError``; a call
  made from the loop thread itself raises ``RuntimeError`` (it would wait for itself forever).

Nothing here imports Ray.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
_pid: int | None = None


def get_loop() -> asyncio.AbstractEventLoop:
    """The process's background loop, started on first use (again in a forked child)."""
    global _loop, _thread, _pid
    with _lock:
        if _loop is None or _pid != os.getpid() or _thread is None or not _thread.is_alive():
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            thread = threading.Thread(target=run, name="raykv-stream-loop", daemon=True)
            thread.start()
            ready.wait()
            _loop, _thread, _pid = loop, thread, os.getpid()
        return _loop


def run_blocking(coro_factory: Callable[[], Awaitable[T]], timeout_s: float) -> T:
    """Run ``coro_factory()`` on the background loop; return its result or raise its exception.

    Raises ``TimeoutError`` (after cancelling the coroutine) if it takes longer than ``timeout_s``.
    """
    loop = get_loop()
    if threading.current_thread() is _thread:
        raise RuntimeError("run_blocking called from the stream loop's own thread; await the coroutine "
                           "instead")

    async def invoke() -> T:
        return await coro_factory()

    fut = asyncio.run_coroutine_threadsafe(invoke(), loop)
    try:
        return fut.result(timeout_s)
    except concurrent.futures.TimeoutError:
        fut.cancel()
        raise TimeoutError(f"the stream call did not finish within {timeout_s:g} s") from None


def shutdown() -> None:
    """Stop the background loop and join its thread (tests; a later call starts a fresh loop)."""
    global _loop, _thread, _pid
    with _lock:
        loop, thread = _loop, _thread
        _loop, _thread, _pid = None, None, None
    if loop is None or thread is None or not thread.is_alive():
        return

    async def cancel_all() -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run_coroutine_threadsafe(cancel_all(), loop).result(5.0)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5.0)
    loop.close()


def _after_fork_in_child() -> None:
    global _lock, _loop, _thread, _pid
    _lock = threading.Lock()  # another thread may have held it at the fork
    _loop, _thread, _pid = None, None, None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
