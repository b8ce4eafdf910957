"""A throwaway etcd cluster on loopback for benchmarks, and an asyncio writer for it.

    with EtcdCluster(members=3) as cluster:       # raises EtcdUnavailable when there is no binary
        host, port = cluster.leader_endpoint()
        ...                                       # drive it (see :func:`etcd_writer`)

:class:`EtcdCluster` starts ``members`` etcd processes (Debian's ``etcd-server`` package; the binary is
found on ``PATH`` or given explicitly) in a fresh temporary directory, each with its own client and
peer port on 127.0.0.1, waits until every member answers ``/health`` with ``true`` (which in etcd 3.4
means it has a leader and can serve a quorum read), and on :meth:`EtcdCluster.stop` terminates them
(SIGTERM, then SIGKILL after a grace period) and removes the directory.

Invariants: the processes run in their own session, so a Ctrl-C at the terminal reaches only the
driver, whose ``with`` block (or the ``atexit`` hook registered by :meth:`EtcdCluster.start`) stops
them; no etcd process and no data directory outlives a driver that exits normally, by an exception,
by KeyboardInterrupt or by ``sys.exit``; ``ETCD_*`` variables of the caller's environment are not
passed on (etcd reads them as flags). etcd keeps its default durability: every WAL append is
fsynced (nothing here passes ``--unsafe-no-fsync``). The data directory is on the same file system
as raykv's default durable storage (``tempfile.gettempdir()``), so both pay the same fsync.

The module needs only the standard library; :func:`etcd_writer` imports ``aetcd`` (the ``bench``
extra) when it is called.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

HOST = "127.0.0.1"
INSTALL_HINT = ("install Debian's etcd-server package (apt-get install -y etcd-server) "
                "or pass the path of an etcd binary")


class EtcdUnavailable(RuntimeError):
    """No etcd binary to run: the benchmark skips etcd and says why."""


class EtcdStartError(RuntimeError):
    """The cluster did not become healthy; the message carries each member's log tail."""


@dataclass(frozen=True)
class Member:
    """One member: its name, client and peer ports, and data directory."""

    name: str
    client_port: int
    peer_port: int
    data_dir: Path

    @property
    def client_url(self) -> str:
        return f"http://{HOST}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{HOST}:{self.peer_port}"


def find_etcd(binary: str | os.PathLike[str] | None = None) -> str:
    """The etcd binary to run: ``binary`` if given (it must be an executable file), else ``etcd`` on
    ``PATH``; raises :class:`EtcdUnavailable` naming what was looked for and how to get it."""
    if binary is not None:
        path = Path(binary)
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
        raise EtcdUnavailable(f"{binary} is not an executable file: {INSTALL_HINT}")
    found = shutil.which("etcd")
    if found is None:
        raise EtcdUnavailable(f"no etcd binary on PATH: {INSTALL_HINT}")
    return found


def etcd_version(binary: str) -> str:
    """The version ``binary --version`` reports (e.g. ``"3.4.23"``), or ``"unknown"``."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    for line in out.splitlines():
        if line.startswith("etcd Version:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 right now (bound together, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def member_args(member: Member, members: list[Member], token: str) -> list[str]:
    """The command-line flags of ``member`` in a new cluster of ``members`` named by ``token``."""
    initial = ",".join(f"{m.name}={m.peer_url}" for m in members)
    return [
        "--name", member.name, "--data-dir", str(member.data_dir),
        "--listen-client-urls", member.client_url, "--advertise-client-urls", member.client_url,
        "--listen-peer-urls", member.peer_url, "--initial-advertise-peer-urls", member.peer_url,
        "--initial-cluster", initial, "--initial-cluster-state", "new",
        "--initial-cluster-token", token, "--logger", "zap", "--log-level", "warn",
    ]


def _http_json(url: str, body: bytes | None, timeout_s: float) -> dict[str, object]:
    req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        return json.loads(resp.read().decode())  # type: ignore[no-any-return]


class EtcdCluster:
    """``members`` etcd processes on loopback; a context manager (start on enter, stop on exit)."""

    def __init__(self, members: int = 3, *, binary: str | os.PathLike[str] | None = None,
                 start_timeout_s: float = 30.0) -> None:
        if members < 1:
            raise ValueError(f"an etcd cluster needs at least 1 member, got {members}")
        self.binary = find_etcd(binary)
        self.n = members
        self.start_timeout_s = start_timeout_s
        self.members: list[Member] = []
        self.root: Path | None = None
        self._procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> EtcdCluster:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        """Launch every member and return once each one reports itself healthy; on any failure
        everything started is stopped and :class:`EtcdStartError` says which member and why."""
        if self._procs:
            raise RuntimeError("this etcd cluster is already started")
        self.root = Path(tempfile.mkdtemp(prefix="raykv-etcd-"))
        atexit.register(self.stop)
        try:
            ports = free_ports(2 * self.n)
            self.members = [Member(f"m{i}", ports[2 * i], ports[2 * i + 1], self.root / f"m{i}")
                            for i in range(self.n)]
            token = f"raykv-bench-{uuid.uuid4().hex[:12]}"
            env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
            for m in self.members:
                log = open(self.root / f"{m.name}.log", "wb")  # noqa: SIM115 (closed after Popen)
                with log:
                    self._procs.append(subprocess.Popen(
                        [self.binary, *member_args(m, self.members, token)], stdin=subprocess.DEVNULL,
                        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True))
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        pending = list(range(self.n))
        while pending:
            for i in list(pending):
                code = self._procs[i].poll()
                if code is not None:
                    raise EtcdStartError(f"etcd member {self.members[i].name} exited with code {code}"
                                         f"\n{self.log_tail(i)}")
                with contextlib.suppress(OSError, ValueError):
                    if _http_json(self.members[i].client_url + "/health", None, 1.0).get("health") in (
                            "true", True):
                        pending.remove(i)
            if pending and time.monotonic() > deadline:
                tails = "\n".join(self.log_tail(i) for i in pending)
                raise EtcdStartError(f"etcd members {[self.members[i].name for i in pending]} not healthy "
                                     f"after {self.start_timeout_s:.0f} s\n{tails}")
            if pending:
                time.sleep(0.05)  # polling the health endpoint, not waiting for a fixed time

    def log_tail(self, i: int, lines: int = 15) -> str:
        """The last ``lines`` lines of member ``i``'s log (for error messages)."""
        assert self.root is not None
        path = self.root / f"{self.members[i].name}.log"
        try:
            text = path.read_text(errors="replace").splitlines()[-lines:]
        except OSError as e:
            return f"[{self.members[i].name}] no log: {e}"
        return "\n".join(f"[{self.members[i].name}] {line}" for line in text)

    def endpoints(self) -> list[tuple[str, int]]:
        """Every member's client address."""
        return [(HOST, m.client_port) for m in self.members]

    def leader_endpoint(self, timeout_s: float = 10.0) -> tuple[str, int]:
        """The client address of the current leader (from each member's ``/v3/maintenance/status``
        through etcd's HTTP gateway); a client connected there pays no forwarding hop, as raykv's
        clerks talk to the leader."""
        deadline = time.monotonic() + timeout_s
        while True:
            for m in self.members:
                with contextlib.suppress(OSError, ValueError):
                    st = _http_json(m.client_url + "/v3/maintenance/status", b"{}", 1.0)
                    header = st.get("header")
                    if isinstance(header, dict) and st.get("leader") and header.get("member_id") == st[
                            "leader"]:
                        return HOST, m.client_port
            if time.monotonic() > deadline:
                raise EtcdStartError(f"no etcd member reported itself leader within {timeout_s:.0f} s")
            time.sleep(0.05)

    def stop(self, grace_s: float = 5.0) -> None:
        """Terminate every member (SIGKILL after ``grace_s``) and remove the data directory;
        idempotent."""
        procs, self._procs = self._procs, []
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for p in procs:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
        atexit.unregister(self.stop)


@contextlib.asynccontextmanager
async def etcd_writer(endpoint: tuple[str, int], value: bytes) -> AsyncIterator[
        Callable[[int], Awaitable[object]]]:
    """An ``op(c)`` for :func:`peers.load.drive`: writer ``c`` puts ``value`` to key ``k{c}`` through
    one ``aetcd`` client (one gRPC channel, shared by every writer as raykv's writers share one asyncio
    clerk). The client is connected and one put made before this yields; closed on exit."""
    import aetcd

    client = aetcd.Client(host=endpoint[0], port=endpoint[1])
    try:
        await client.put(b"warm", value)

        def op(c: int) -> Awaitable[object]:
            return client.put(f"k{c}".encode(), value)

        yield op
    finally:
        await client.close()
