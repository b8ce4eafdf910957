"""A replicated KV store on PySyncObj, its processes on loopback, and an asyncio client for it.

    with PySyncObjCluster(3) as cluster:              # 3 processes, one SyncObj each, journal on disk
        async with PySyncObjClient(cluster.leader_front()) as client:
            await client.put(b"k", b"v")               # through the Raft log, answered once applied
            assert await client.get(b"k") == b"v"      # also through the log (linearizable)

PySyncObj replicates the methods of a Python class marked ``@replicated`` but has no client protocol:
a call is made inside one of the processes and its result comes back through a callback on
PySyncObj's own thread. So each process here runs two things:

- a :class:`KV` (a ``SyncObj``): a dict with a replicated ``set`` and a replicated ``get``; a read
  goes through the log like a write, which is the only linearizable read PySyncObj offers (reading
  the leader's dict directly can return a value an old leader no longer owns), as raykv's ReadIndex
  reads and etcd's default reads are linearizable;
- a *front*: an asyncio TCP server on its own thread, framed like :mod:`peers.tcp_echo` (4-byte
  body length, 8-byte request id, then ``op`` (1 byte: ``p`` put, ``g`` get, ``s`` status), a 2-byte
  key length, the key and the value). A request calls the replicated method with
  ``callback=...``, which does not block; the callback (PySyncObj's thread, on commit and apply)
  hands the reply back to the front's loop with ``call_soon_threadsafe``. Any number of requests
  are in flight at once on one connection, answered in any order, matched by request id.

The driver (:class:`PySyncObjClient`) keeps one connection to the leader's front, shared by every
client coroutine, as raykv's writers share one asyncio clerk and etcd's share one gRPC channel; so a
request costs the same loopback hop to a Python process that raykv's stream clerk pays.

Durability: each node has ``journalFile`` (its Raft log) and ``fullDumpFile`` (its snapshot) in the
cluster's temporary directory. PySyncObj 0.3 writes the journal into a memory-mapped file and never
calls ``fsync``/``msync`` on the commit path (only when the node is destroyed), and saves term and
vote with a plain write and rename: the log survives a crash of the process (the page cache has
it), not a crash of the machine. raykv and etcd fsync before acknowledging; this one does not, which
favours PySyncObj.

Batching: ``appendEntriesUseBatch`` (PySyncObj's default, True) leaves a new command in a queue
until the node's next tick (``autoTickPeriod``, 50 ms), good for throughput and bad for a lone
client; with False each command wakes the node at once (through its pipe notifier). ``batch``
chooses; the benchmark runs the setting given to it.

Run as a script, this module is one node: it prints ``PORT <front port>`` once its front listens
and exits when its standard input closes, so it dies with the driver that started it.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Any

try:
    from peers.tcp_echo import HEADER, FramedClient  # body length (id + rest), request id
except ImportError:  # run as a script: each node's process starts this file directly
    from tcp_echo import HEADER, FramedClient  # type: ignore[no-redef]

HOST = "127.0.0.1"
KEYLEN = struct.Struct(">H")
MAX_BODY = 1 << 20
OK = 0                          # a reply's status byte: 0, or PySyncObj's FAIL_REASON


class PySyncObjError(RuntimeError):
    """A request failed (PySyncObj's ``FAIL_REASON`` code in the message) or the cluster did not
    start (the message carries each node's output)."""


# ---------------------------------------------------------------------------------------------- node


def _make_kv(self_addr: str, partners: list[str], data_dir: Path, batch: bool) -> Any:
    from pysyncobj import SyncObj, SyncObjConf, replicated

    class KV(SyncObj):  # type: ignore[misc]
        """A dict whose ``set`` and ``get`` go through the Raft log."""

        def __init__(self) -> None:
            name = self_addr.replace(":", "_")
            conf = SyncObjConf(journalFile=str(data_dir / f"{name}.journal"),
                               fullDumpFile=str(data_dir / f"{name}.dump"), appendEntriesUseBatch=batch)
            super().__init__(self_addr, partners, conf)
            self._data: dict[bytes, bytes] = {}

        @replicated  # type: ignore[misc]
        def set(self, key: bytes, value: bytes) -> None:
            self._data[key] = value

        @replicated  # type: ignore[misc]
        def get(self, key: bytes) -> bytes:
            return self._data.get(key, b"")

    return KV()


async def _serve(kv: Any) -> None:
    loop = asyncio.get_running_loop()

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def reply(rid: int, status: int, payload: bytes) -> None:
            if not writer.is_closing():
                writer.write(HEADER.pack(9 + len(payload), rid) + bytes((status,)) + payload)

        def callback_for(rid: int) -> Any:
            def done(result: Any, fail: int) -> None:  # PySyncObj's thread
                loop.call_soon_threadsafe(reply, rid, fail, result if isinstance(result, bytes) else b"")
            return done

        try:
            while True:
                length, rid = HEADER.unpack(await reader.readexactly(HEADER.size))
                if not 11 <= length <= MAX_BODY:
                    return
                body = await reader.readexactly(length - 8)
                op, (klen,) = body[:1], KEYLEN.unpack(body[1:3])
                key, value = body[3:3 + klen], body[3 + klen:]
                if op == b"p":
                    kv.set(key, value, callback=callback_for(rid))
                elif op == b"g":
                    kv.get(key, callback=callback_for(rid))
                else:  # status: "leader ready" flags, then the leader's address as PySyncObj knows it
                    leader = kv._getLeader()
                    flags = f"{int(kv._isLeader())}{int(kv.isReady())}{leader if leader else ''}"
                    reply(rid, OK, flags.encode())
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    server = await asyncio.start_server(connection, HOST, 0)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    await loop.run_in_executor(None, sys.stdin.buffer.read)  # returns at EOF: the driver is gone
    server.close()


def node_main(argv: list[str] | None = None) -> None:
    """One node: ``--self HOST:PORT --partners A,B --data-dir D [--batch]``."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--self", dest="self_addr", required=True)
    ap.add_argument("--partners", required=True)
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--batch", action="store_true")
    a = ap.parse_args(argv)
    kv = _make_kv(a.self_addr, [p for p in a.partners.split(",") if p], a.data_dir, a.batch)
    try:
        asyncio.run(_serve(kv))
    finally:
        kv.destroy()


# ------------------------------------------------------------------------------------------- cluster


class PySyncObjCluster:
    """``n`` PySyncObj KV processes on loopback; a context manager (start on enter, stop on exit).

    Invariants: the processes run in their own session (a Ctrl-C reaches only the driver, whose
    ``with`` block or ``atexit`` hook stops them); each exits when its standard input closes; no
    process and no data directory outlives a driver that exits normally or by an exception."""

    def __init__(self, n: int = 3, *, batch: bool = False, start_timeout_s: float = 30.0) -> None:
        if n < 1:
            raise ValueError(f"a PySyncObj cluster needs at least 1 node, got {n}")
        self.n, self.batch, self.start_timeout_s = n, batch, start_timeout_s
        self.root: Path | None = None
        self.fronts: list[tuple[str, int]] = []
        self.raft_addrs: list[str] = []
        self._procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> PySyncObjCluster:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        """Launch every node and return once each front listens (a leader is found by
        :meth:`leader_front`); on failure everything started is stopped and
        :class:`PySyncObjError` says why."""
        from peers.etcd import free_ports

        if self._procs:
            raise RuntimeError("this PySyncObj cluster is already started")
        self.root = Path(tempfile.mkdtemp(prefix="raykv-pysyncobj-"))
        atexit.register(self.stop)
        try:
            self.raft_addrs = [f"{HOST}:{p}" for p in free_ports(self.n)]
            for i, addr in enumerate(self.raft_addrs):
                partners = ",".join(a for j, a in enumerate(self.raft_addrs) if j != i)
                cmd = [sys.executable, str(Path(__file__).resolve()), "--self", addr, "--partners", partners,
                       "--data-dir", str(self.root)] + (["--batch"] if self.batch else [])
                log = open(self.root / f"node{i}.log", "wb")  # noqa: SIM115 (closed after Popen)
                with log:
                    self._procs.append(subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                                        stderr=log, start_new_session=True))
            deadline = time.monotonic() + self.start_timeout_s
            for i, p in enumerate(self._procs):
                assert p.stdout is not None
                line = _readline_until(p, deadline)
                if not line.startswith(b"PORT "):
                    raise PySyncObjError(f"PySyncObj node {i} did not start (printed {line!r})\n"
                                         f"{self.log_tail(i)}")
                self.fronts.append((HOST, int(line.split()[1])))
        except BaseException:
            self.stop()
            raise

    def log_tail(self, i: int, lines: int = 15) -> str:
        """The last ``lines`` lines of node ``i``'s standard error."""
        if self.root is None:
            return ""
        try:
            text = (self.root / f"node{i}.log").read_text(errors="replace").splitlines()[-lines:]
        except OSError as e:
            return f"[node{i}] no log: {e}"
        return "\n".join(f"[node{i}] {line}" for line in text)

    def leader_front(self, timeout_s: float = 20.0) -> tuple[str, int]:
        """The front of the node that reports itself leader and ready (polled)."""
        async def ask() -> tuple[str, int] | None:
            for front in self.fronts:
                with contextlib.suppress(OSError, asyncio.TimeoutError):
                    async with PySyncObjClient(front) as c:
                        leader, ready = await asyncio.wait_for(c.status(), 1.0)
                        if leader and ready:
                            return front
            return None

        deadline = time.monotonic() + timeout_s
        while True:
            found = asyncio.run(ask())
            if found is not None:
                return found
            if time.monotonic() > deadline:
                tails = "\n".join(self.log_tail(i) for i in range(self.n))
                raise PySyncObjError(f"no PySyncObj node became leader within {timeout_s:.0f} s\n{tails}")
            time.sleep(0.05)  # polling the nodes' status, not waiting for a fixed time

    def stop(self, grace_s: float = 5.0) -> None:
        """Close every node's standard input (it exits), SIGKILL after ``grace_s``; remove the data
        directory; idempotent."""
        procs, self._procs = self._procs, []
        for p in procs:
            with contextlib.suppress(OSError):
                if p.stdin is not None:
                    p.stdin.close()
        deadline = time.monotonic() + grace_s
        for p in procs:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            if p.stdout is not None:
                p.stdout.close()
        self.fronts = []
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
        atexit.unregister(self.stop)


def _readline_until(p: subprocess.Popen[bytes], deadline: float) -> bytes:
    """A line of ``p``'s stdout, or ``b""`` if none came before ``deadline`` or ``p`` exited."""
    out: list[bytes] = []
    assert p.stdout is not None
    reader = threading.Thread(target=lambda: out.append(p.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(max(0.0, deadline - time.monotonic()))
    return out[0] if out else b""


# -------------------------------------------------------------------------------------------- client


class PySyncObjClient(FramedClient):
    """One connection to a node's front; ``put``/``get`` may be awaited by many coroutines at once.
    A reply's body is a status byte (``OK`` or PySyncObj's FAIL_REASON) and the payload."""

    peer = "PySyncObj front"

    def __init__(self, front: tuple[str, int]) -> None:
        super().__init__(front)
        self.front = front

    async def _call(self, op: bytes, key: bytes, value: bytes = b"") -> bytes:
        reply = await self._request(op + KEYLEN.pack(len(key)) + key + value)
        status, payload = reply[0], reply[1:]
        if status != OK:
            raise PySyncObjError(f"PySyncObj refused {op.decode()} {key!r}: FAIL_REASON {status}")
        return payload

    async def put(self, key: bytes, value: bytes) -> None:
        """Set ``key`` to ``value`` through the log; returns once the node applied it."""
        await self._call(b"p", key, value)

    async def get(self, key: bytes) -> bytes:
        """The value of ``key`` (``b""`` if never written), read through the log."""
        return await self._call(b"g", key)

    async def status(self) -> tuple[bool, bool]:
        """(this node thinks it is the leader, this node is ready)."""
        flags = await self._call(b"s", b"")
        return flags[:1] == b"1", flags[1:2] == b"1"


@contextlib.asynccontextmanager
async def pysyncobj_client(front: tuple[str, int]) -> AsyncIterator[PySyncObjClient]:
    """A connected :class:`PySyncObjClient` (one put made first, so the leader has committed in its
    term before anything is measured)."""
    async with PySyncObjClient(front) as client:
        await client.put(b"warm", b"w")
        yield client


if __name__ == "__main__":
    node_main()
