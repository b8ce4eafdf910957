"""Every raykv error class survives pickling with its type, message and fields (issue 10, finding 4).

Ray moves an exception raised in an actor to its caller by pickling it; an exception class whose
``__init__`` takes other arguments than it passes to ``Exception.__init__`` cannot be unpickled, and
the caller then gets ``UnserializableException`` instead of the error, its type and its fields.

* ``test_round_trip`` checks one sample of every class (pure);
* ``test_every_error_class_has_a_sample`` finds every exception class defined in the raykv packages,
  so a new one without a sample here fails;
* the Ray tests raise every sample in a real actor and check what the caller gets, and start a
  replica actor on a damaged directory.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import pickle
import pkgutil
from pathlib import Path

import pytest

from actors.files import LockBusy
from actors.network import StaleIncarnationError
from actors.placement import PlacementError
from actors.sessions import SessionExpiredError
from actors.storage import (
    StorageClosedError,
    StorageCorruptionError,
    StorageError,
    StorageIdentityError,
    StorageLockedError,
    StorageMissingError,
)
from actors.stream_auth import AuthError
from actors.stream_frames import ConnectionClosed, FrameError, StreamError
from kvraft.errors import GroupStartError, KVRejectedError, KVTimeoutError
from linearizability.history import HistoryError
from linearizability.models import ModelInputError
from linearizability.parsers import HistoryFormatError
from raft.membership import ConfChangeRefused
from raft.sim.invariants import Violation
from raykv.cluster import ClusterError
from raykv.demo import DemoFailure
from raykv.nemesis import ScheduleError
from raykv.sharded import ServiceError, ServiceExistsError, ServiceNotFoundError
from shardctrler.errors import CtrlerTimeoutError, RefusedError, RefusedTypeError
from shardkv.errors import ShardKVRequestError, ShardKVTimeoutError
from shardkv.statemachine import _BadCommand

PACKAGES = ("raft", "actors", "kvraft", "shardctrler", "shardkv", "linearizability", "raykv")


def _violation() -> Violation:
    v = Violation("election-safety", "two leaders in term 3: 0 and 2", 417)
    v.seed, v.tail, v.replay = 12, "t=416 0 -> 2 vote", "python -m raft.sim --seed 12"
    return v


SAMPLES: dict[type[BaseException], BaseException] = {
    StreamError: StreamError("the stream layer failed"),
    FrameError: FrameError("frame of 70000000 bytes over the limit of 67108864", key="oversized"),
    ConnectionClosed: ConnectionClosed("the peer closed the stream between two frames"),
    AuthError: AuthError("the client's proof does not match this service's secret", key="wrong_proof"),
    StorageError: StorageError("/d: an earlier write failed; reopen the storage"),
    StorageCorruptionError: StorageCorruptionError(
        Path("/data/replica1/raft.wal"), 137, "the record fails its checksum", "Restore it from a backup."),
    StorageMissingError: StorageMissingError(
        Path("/data/replica0"), "the replica's directory does not exist", "Create it with new=True."),
    StorageIdentityError: StorageIdentityError(
        Path("/data/replica2"), "the directory belongs to another replica",
        {"replica": 2, "replicas": 3}, {"format": 2, "replica": 1, "replicas": 3}),
    StorageLockedError: StorageLockedError("/data/replica0 is in use"),
    StorageClosedError: StorageClosedError("FileStorage('/d', closed) used after close()"),
    LockBusy: LockBusy("4242"),
    StaleIncarnationError: StaleIncarnationError("call for incarnation 3, now 4"),
    KVTimeoutError: KVTimeoutError("put('k')", 0.5, ["kv-0", "kv-2"], "kv-2: no answer within 0.5 s"),
    KVRejectedError: KVRejectedError("kv-1", "operation 0 has unknown kind 9"),
    GroupStartError: GroupStartError("kv-1", 3, {0: "StorageMissingError: gone", 2: "corrupt"}),
    HistoryFormatError: HistoryFormatError("history.edn", 12, "unknown :type :foo"),
    HistoryError: HistoryError("operation 3 returns before it is called"),
    ModelInputError: ModelInputError("the kv model does not know ('cas', 1)"),
    Violation: _violation(),
    ConfChangeRefused: ConfChangeRefused("the change at index 7 is not committed yet; retry once it commits"),
    ClusterError: ClusterError("no Ray cluster at 10.0.0.1:6379"),
    DemoFailure: DemoFailure("no leader within 10 s"),
    RefusedError: RefusedError("err_unknown_gid", "group 7 is not in the configuration", sent=True),
    RefusedTypeError: RefusedTypeError("err_type", "gids must be ints, got 'a'"),
    CtrlerTimeoutError: CtrlerTimeoutError("query(-1)", 1.0, ["ctrler-0"], "ctrler-0: wrong leader"),
    ShardKVTimeoutError: ShardKVTimeoutError("get('k')", 2.0, 7, 3, ["g100-0"], "wrong group"),
    ShardKVRequestError: ShardKVRequestError("put('k')", "err_bad_shard", "shard 11 of 10"),
    _BadCommand: _BadCommand("not a tuple"),
    PlacementError: PlacementError("group kv-1 needs 3 nodes with CPUs, the cluster has 2"),
    ServiceError: ServiceError("service 'demo' could not be started: no Ray cluster"),
    ServiceExistsError: ServiceExistsError("a service named 'demo' already runs in namespace 'raykv'"),
    ServiceNotFoundError: ServiceNotFoundError("no service named 'demo' in namespace 'raykv'"),
    SessionExpiredError: SessionExpiredError("kvraft", "append('k')", 4242, 17, maybe_applied=False),
    ScheduleError: ScheduleError("event 3: unknown fault 'flood' (known: partition, kill, ...)"),
}

#: the fields each class promises (besides args and the message)
FIELDS: dict[type[BaseException], tuple[str, ...]] = {
    FrameError: ("reason", "key"),
    AuthError: ("reason", "key"),
    StorageCorruptionError: ("path", "offset", "reason", "advice"),
    StorageMissingError: ("path", "reason", "advice"),
    StorageIdentityError: ("path", "reason", "expected", "found"),
    LockBusy: ("holder",),
    KVTimeoutError: ("operation", "timeout", "servers", "last"),
    KVRejectedError: ("server", "reason"),
    GroupStartError: ("group", "n", "failed"),
    HistoryFormatError: ("source", "line", "message"),
    Violation: ("invariant", "detail", "tick", "seed", "tail", "replay"),
    RefusedError: ("code", "message", "sent"),
    RefusedTypeError: ("code", "message", "sent"),
    CtrlerTimeoutError: ("operation", "timeout", "servers", "last"),
    ShardKVTimeoutError: ("operation", "timeout", "shard", "config", "servers", "last"),
    ShardKVRequestError: ("operation", "code", "message"),
    SessionExpiredError: ("service", "operation", "client_id", "seq", "maybe_applied"),
}


def _error_classes() -> set[type[BaseException]]:
    found: set[type[BaseException]] = set()
    for package in PACKAGES:
        pkg = importlib.import_module(package)
        for info in pkgutil.walk_packages(pkg.__path__, package + "."):
            if info.name.rsplit(".", 1)[-1] == "__main__":
                continue
            module = importlib.import_module(info.name)
            for _, obj in inspect.getmembers(module, inspect.isclass):
                if issubclass(obj, BaseException) and obj.__module__ == module.__name__:
                    found.add(obj)
    return found


def test_every_error_class_has_a_sample() -> None:
    missing = {f"{c.__module__}.{c.__qualname__}" for c in _error_classes()} - {
        f"{c.__module__}.{c.__qualname__}" for c in SAMPLES}
    assert not missing, f"add a sample to SAMPLES (and its fields to FIELDS) for: {sorted(missing)}"


@pytest.mark.parametrize("cls", list(SAMPLES), ids=lambda c: c.__name__)
def test_round_trip(cls: type[BaseException]) -> None:
    original = SAMPLES[cls]
    copy = pickle.loads(pickle.dumps(original))
    assert type(copy) is cls
    assert str(copy) == str(original)
    assert copy.args == original.args
    assert vars(copy) == vars(original)
    for name in FIELDS.get(cls, ()):
        assert getattr(copy, name) == getattr(original, name), name


# --------------------------------------------------------------------------------------------------
# Through a real Ray actor boundary
# --------------------------------------------------------------------------------------------------


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_every_error_reaches_a_ray_caller_with_type_and_fields(ray_session: None) -> None:
    import ray

    class Raiser:
        def raise_it(self, exc: BaseException) -> None:
            raise exc

    actor = ray.remote(num_cpus=0)(Raiser).remote()
    try:
        for cls, sample in SAMPLES.items():
            with pytest.raises(cls) as info:
                ray.get(actor.raise_it.remote(sample), timeout=30)
            got = info.value
            assert str(sample) in str(got), cls
            for name in FIELDS.get(cls, ()):
                assert getattr(got, name) == getattr(sample, name), (cls, name)
    finally:
        ray.kill(actor)


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_a_replica_on_a_damaged_directory_raises_the_storage_error(ray_session: None,
                                                                    tmp_path: Path) -> None:
    """The user story of the issue: the caller of ``start`` gets StorageCorruptionError, with the
    file, offset and reason, not "Failed to deserialize exception"."""
    import ray

    from actors.file_storage import _REC_HEADER, _WAL_MAGIC
    from actors.replica import ReplicaSpec
    from actors.storage import FileStorage
    from kvraft.server import kv_replica_actor
    from kvraft.statemachine import KVStateMachine
    from raft.types import Entry, HardState

    d = tmp_path / "replica0"
    with FileStorage(d, new=True) as s:
        s.save(HardState(1, 0), (Entry(1, 1, "a"),), None)
        s.save(HardState(2, 0), (Entry(2, 2, "b"),), None)
    wal = d / FileStorage.WAL_NAME
    data = bytearray(wal.read_bytes())
    first = len(_WAL_MAGIC)
    data[first + _REC_HEADER.size + 5] ^= 0x10  # inside the first record; a valid one follows
    wal.write_bytes(bytes(data))

    spec = ReplicaSpec(name="r0", peer_id=0, peers=(0,), state_machine=KVStateMachine,
                       storage=functools.partial(FileStorage, str(d)))
    actor = kv_replica_actor().remote(spec)
    try:
        with pytest.raises(StorageCorruptionError) as info:
            ray.get(actor.start.remote(1, ("direct", {})), timeout=30)
        assert info.value.path == wal
        assert info.value.offset == first
        assert "checksum" in info.value.reason
        status = ray.get(actor.status.remote(), timeout=30)
        assert status["role"] == "down" and "checksum" in status["failure"]
    finally:
        ray.kill(actor)
