"""The public API of the sharded service (:mod:`raykv.sharded`), its placement (:mod:`actors.placement`)
on a single-node runtime, and its command line (``raykv start``, ``status``, ``stop``): bad input is
refused with a clear error and changes nothing; a detached service outlives the driver that started
it and another driver attaches to it by name. (The multi-node behaviour is in
``tests/test_multinode.py``; the examples of docs/sharded-kv.md run in ``tests/test_docs_examples.py``.)"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import raykv
import raykv.sharded as sharded
from actors import placement
from raykv.cli import main as cli_main

ROOT = Path(__file__).resolve().parent.parent
OP_TIMEOUT_S = 30.0


# ------------------------------------------------------------------------------------------------
# Input checks that come before anything starts (no Ray needed)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "exc", "words"), [
    ({"groups": 0}, ValueError, "groups must be between 1 and 100, got 0"),
    ({"groups": "3"}, TypeError, "groups must be an int, got str"),
    ({"groups": True}, TypeError, "groups must be an int, got bool"),
    ({"replicas": 16}, ValueError, "replicas must be between 1 and 15"),
    ({"nshards": 0}, ValueError, "nshards"),
    ({"mapping": "md5"}, ValueError, "mapping must be one of 'hash', 'reference'"),
    ({"storage": "disk"}, ValueError, "storage must be one of"),
    ({"placement": "anywhere"}, ValueError, "placement must be one of 'spread', 'strict', 'pack'"),
    ({"detached": "yes"}, TypeError, "detached must be a bool"),
    ({"name": "has space"}, ValueError, "bad service name 'has space'"),
    ({"name": 7}, TypeError, "a service name must be a str"),
    ({"data_root": 3}, TypeError, "data_root must be a path"),
    ({"transport": "tcp"}, ValueError, "transport must be one of 'stream', 'direct', 'network'"),
    ({"transport": "network", "detached": True}, ValueError, "cannot be combined with detached"),
])
def test_start_refuses_bad_input_before_touching_ray(kwargs: dict[str, Any], exc: type, words: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def no_ray(*args: Any, **kw: Any) -> None:
        raise AssertionError("Ray was touched before the input was checked")

    monkeypatch.setattr(sharded, "init_ray", no_ray)
    with pytest.raises(exc, match=re.escape(words)):
        raykv.start_sharded(**kwargs)


def test_the_stream_secret_is_kept_out_of_reprs_and_the_status_shows_the_transport() -> None:
    """A service's description carries its one stream secret (for the clients of any driver, through
    the registry) but never shows it; the status names the transport and, on streams, every replica's
    address."""
    from actors.placement import GroupPlacement
    from raykv.sharded_status import GroupStatus, ServiceStatus

    secret = bytes(range(32))
    g = sharded.GroupInfo(1, "svc-g1", ("h0", "h1"), ("svc-g1-0", "svc-g1-1"), ("n1", "n2"), None,
                          GroupPlacement("svc-g1", 2, "packed", "test"))
    info = sharded.ServiceInfo("svc", "ns", 10, "hash", 2, "memory", False, None, "spread", g, (g,),
                               transport="stream", secret=secret)
    assert info.secret == secret and secret.hex() not in repr(info) and repr(secret) not in repr(info)
    assert "transport='stream'" in repr(info)
    assert sharded.TRANSPORTS[0] == "stream", "streams are the default transport"
    view = sharded._CtrlerView(g, 10, None, secret)
    assert repr(secret) not in repr(view)

    def status(addresses: tuple[Any, ...], gid: int = 1) -> GroupStatus:
        return GroupStatus(gid, "svc-g1", ("leader", "follower"), 0, 2, 1, owned=tuple(range(10)),
                           nodes=("n1", "n2"), voters=(0, 1), peers=(0, 1), addresses=addresses)

    text = ServiceStatus("svc", "ns", 10, "hash", False, None, status((), 0),
                         (status((("10.0.0.1", 4001), None)),), transport="stream").format()
    assert "transport 'stream'" in text and "stream addresses (by slot):" in text
    assert "group 1: 10.0.0.1:4001, ?" in text and "controller: ?" in text
    direct = ServiceStatus("svc", "ns", 10, "hash", False, None, status((), 0), (status(()),),
                           transport="direct").format()
    assert "transport 'direct'" in direct and "stream addresses" not in direct


def test_a_stream_service_hands_out_stream_routers() -> None:
    """Clerks of a stream service get a StreamRouter with the service's secret, the controller's
    replicas known by handle and the service's namespace; administrative calls share one router per
    handle (its connections are shared anyway), with the controller's replicas as last read; a
    description on streams without a secret is refused with a clear error."""
    from actors.placement import GroupPlacement
    from shardkv.endpoints import CtrlerEndpoints, DirectRouter, StreamRouter

    secret = bytes(range(32))
    c = sharded.GroupInfo(0, "svc-ctrler", ("c0", "c1"), ("svc-ctrler-0", "svc-ctrler-1"), ("n1", "n2"),
                          None, GroupPlacement("svc-ctrler", 2, "packed", "test"))
    info = sharded.ServiceInfo("svc", "ns", 10, "hash", 2, "memory", False, None, "spread", c, (),
                               transport="stream", secret=secret)
    kv = sharded.ShardedKV(info, registry=None)
    router = kv._router()
    assert isinstance(router, StreamRouter) and router.secret == secret and router.namespace == "ns"
    assert router.known == {"svc-ctrler-0": "c0", "svc-ctrler-1": "c1"}
    first = kv._ctrler_clerk(refresh=False)
    assert isinstance(first.endpoints, CtrlerEndpoints) and first.endpoints.names == c.names
    kv.info = replace(info, ctrler=replace(c, replicas=("c0", "c1-replacement")))
    second = kv._ctrler_clerk(refresh=False)
    assert second.endpoints.router is first.endpoints.router
    assert second.endpoints.router.known["svc-ctrler-1"] == "c1-replacement"
    assert isinstance(sharded.ShardedKV(replace(info, transport="direct", secret=None), None)._router(),
                      DirectRouter)
    with pytest.raises(sharded.ServiceError, match="runs on streams but its description has no secret"):
        sharded.ShardedKV(replace(info, secret=None), None)._router()


def test_placement_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one replica"):
        placement.place_group(0, name="x")
    with pytest.raises(ValueError, match="strategy must be one of spread, strict, pack"):
        placement.place_group(3, name="x", strategy="random")
    p = placement.GroupPlacement("x", 3, placement.PACKED, "asked to pack")
    with pytest.raises(IndexError, match="replica 3 is not in group 'x' of 3 replicas"):
        p.options(3)
    with pytest.raises(ValueError, match="at least one name"):
        placement.node_local_dir()


# ------------------------------------------------------------------------------------------------
# Placement on a single-node runtime
# ------------------------------------------------------------------------------------------------


def test_placement_on_one_node_packs_with_a_warning(ray_session: None, caplog: pytest.LogCaptureFixture,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(placement, "_warned_single_node", False)
    with caplog.at_level(logging.WARNING, logger="raykv.placement"):
        p = placement.place_group(3, name="solo")
        again = placement.place_group(3, name="solo2")
    assert p.mode == placement.PACKED and not p.spread and p.placement_group is None
    assert "1 alive node with CPUs for 3 replicas" in p.reason
    warnings = [r.getMessage() for r in caplog.records if r.name == "raykv.placement"]
    assert len(warnings) == 1, f"a single-node runtime warns once per process: {warnings}"
    assert "share nodes" in warnings[0] and "solo" in warnings[0]
    assert again.options(2) == {"scheduling_strategy": "SPREAD"}
    assert placement.place_group(3, name="d", detached=True).options(0)["lifetime"] == "detached"
    assert placement.place_group(1, name="one").spread
    with pytest.raises(placement.PlacementError, match="cannot put its 3 replicas on distinct nodes"):
        placement.place_group(3, name="strict", strategy="strict")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="raykv.placement"):
        assert placement.place_group(3, name="quiet", strategy="pack").mode == placement.PACKED
    assert not caplog.records


# ------------------------------------------------------------------------------------------------
# The API on a running service
# ------------------------------------------------------------------------------------------------


def test_bad_input_to_a_running_service_changes_nothing(ray_session: None) -> None:
    kv = raykv.start_sharded(groups=2, replicas=1, nshards=10)
    root = kv.info.data_root
    try:
        ck = kv.clerk()
        ck.put("k", "v", timeout=OP_TIMEOUT_S)
        before = kv.config()
        assert before.num == 1 and sorted(before.counts().values()) == [5, 5]
        bad: list[tuple[Any, type, str]] = [
            (lambda: kv.move(10, 1), ValueError, "shard must be between 0 and 9, got 10"),
            (lambda: kv.move(-1, 1), ValueError, "shard must be between 0 and 9, got -1"),
            (lambda: kv.move("0", 1), TypeError, "shard must be an int, got str"),
            (lambda: kv.move(0, 99), ValueError, "no group 99 in service"),
            (lambda: kv.move(0, True), TypeError, "gid must be an int, got bool"),
            (lambda: kv.remove_group(99), ValueError, "no group 99 in service"),
            (lambda: kv.remove_group("1"), TypeError, "gid must be an int, got str"),
            (lambda: kv.add_group(1), ValueError, "group 1 is already in service"),
            (lambda: kv.add_group(0), ValueError, "gid must be at least 1, got 0"),
            (lambda: kv.add_group(1.5), TypeError, "gid must be an int, got float"),
            (lambda: kv.config("latest"), TypeError, "num must be an int"),
            (lambda: ck.put(1, "x"), TypeError, "key must be a str, got int"),
            (lambda: ck.put("k", 2), TypeError, "value must be a str, got int"),
            (lambda: ck.get("k", timeout=0), ValueError, "timeout must be > 0"),
            (lambda: kv.clerk(attempt_timeout=0), ValueError, "attempt_timeout must be > 0"),
            (lambda: raykv.start_sharded(kv.name), raykv.ServiceExistsError,
             f"a sharded service named {kv.name!r} already runs"),
            (lambda: raykv.attach_sharded("no-such-service"), raykv.ServiceNotFoundError,
             "no sharded service named 'no-such-service' in namespace 'raykv-tests'; running services: "),
        ]
        for call, exc, words in bad:
            with pytest.raises(exc, match=re.escape(words)):
                call()
        assert kv.config() == before, "a refused call changed the configuration"
        assert kv.gids == (1, 2) and ck.get("k", timeout=OP_TIMEOUT_S) == "v"
        # the service still works, from this driver and from an attached handle
        other = raykv.attach_sharded(kv.name)
        assert other.gids == (1, 2) and other.config() == before

        async def many() -> list[str]:
            ack = kv.async_clerk()
            try:
                await asyncio.gather(*(ack.put(f"a{i}", str(i), timeout=OP_TIMEOUT_S) for i in range(20)))
                return list(await asyncio.gather(*(ack.get(f"a{i}", timeout=OP_TIMEOUT_S)
                                                   for i in range(20))))
            finally:
                await ack.close()

        assert asyncio.run(many()) == [str(i) for i in range(20)]
        # removing a group moves its shards; the last group cannot be removed
        kv.remove_group(2)
        assert kv.gids == (1,) and other.config().shards == (1,) * 10
        assert ck.get("k", timeout=OP_TIMEOUT_S) == "v" and ck.get("a7", timeout=OP_TIMEOUT_S) == "7"
        with pytest.raises(ValueError, match="group 1 is the last group of service"):
            kv.remove_group(1)
        st = kv.status()
        assert st.settled and [g.gid for g in st.groups] == [1] and st.groups[0].owned == tuple(range(10))
        assert st.groups[0].leader == 0 and st.groups[0].up == 1 and st.ctrler.leader == 0
        assert st.config is not None and st.config.num == 3 - 1  # the join of both, the leave of one
        assert "configuration 2" in st.format()
        # the metrics in status(): group 1 took group 2's shards (docs/ray-layer.md, "Metrics")
        m = st.groups[0].metrics
        assert m["shards_in"] == 5 and m["ops_applied"] >= 3 and m["leader_changes"] >= 1, m
        assert st.ctrler.metrics["ops_applied"] >= 2 and "metrics (ops: operations applied" in st.format()
    finally:
        kv.stop()
    assert root is not None and not os.path.exists(root), "stop() must remove the service's storage"
    assert kv.stop() == []  # stopping twice is harmless
    with pytest.raises(raykv.ServiceError, match="was stopped"):
        kv.clerk()
    with pytest.raises(raykv.ServiceNotFoundError):
        raykv.attach_sharded(kv.name)


def test_the_default_stream_service_serves_clerks_across_a_join_and_a_leave(ray_session: None) -> None:
    """The default transport is the stream one: every replica listens on its node's address, the
    service has one secret (kept by the registry for an attached handle's clerks), and clerks made
    before a Join and a Leave go on across both while shards move over the streams."""
    kv = raykv.start_sharded(groups=1, replicas=3, nshards=10, storage="memory")
    try:
        assert kv.transport == "stream" and kv.info.secret is not None and len(kv.info.secret) == 32
        st = kv.status()
        assert st.transport == "stream" and "stream addresses (by slot):" in st.format()
        for g in (st.ctrler, *st.groups):
            assert len(g.addresses) == 3 and None not in g.addresses and len(set(g.addresses)) == 3, g
        ck = kv.clerk()
        keys = [f"user:{i}" for i in range(40)]
        for k in keys:
            ck.put(k, k, timeout=OP_TIMEOUT_S)

        async def appended(suffix: str) -> list[str]:
            ack = kv.async_clerk()
            try:
                await asyncio.gather(*(ack.append(k, suffix, timeout=OP_TIMEOUT_S) for k in keys))
                return list(await asyncio.gather(*(ack.get(k, timeout=OP_TIMEOUT_S) for k in keys)))
            finally:
                await ack.close()

        gid = kv.add_group()  # a Join: half the shards move to the new group over the streams
        assert asyncio.run(appended("+")) == [k + "+" for k in keys]
        cfg = kv.wait_settled(timeout=60)
        assert sorted(cfg.counts().values()) == [5, 5], cfg
        assert [ck.get(k, timeout=OP_TIMEOUT_S) for k in keys] == [k + "+" for k in keys]
        other = raykv.attach_sharded(kv.name)  # another handle: the secret comes from the registry
        assert other.info.secret == kv.info.secret
        ock = other.clerk()
        kv.remove_group(1)  # a Leave: every shard ends up in the new group
        assert kv.config().shards == (gid,) * 10
        for k in keys:
            ock.append(k, "!", timeout=OP_TIMEOUT_S)
        assert [ck.get(k, timeout=OP_TIMEOUT_S) for k in keys] == [k + "+!" for k in keys]
        assert kv.wait_settled(timeout=60).num == cfg.num + 1
    finally:
        kv.stop()


# ------------------------------------------------------------------------------------------------
# Detached services and the command line
# ------------------------------------------------------------------------------------------------


def _raykv(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run([sys.executable, "-m", "raykv", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)


def test_cli_help_explains_each_command(capsys: pytest.CaptureFixture[str]) -> None:
    for command, words in (("start", "detached actors that outlive this"),
                           ("status", "Without --name, list the services"),
                           ("stop", "Any driver may stop a service")):
        assert cli_main([command, "--help"]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: raykv {command}") and words in out and "--address" in out
    assert cli_main(["start", "--groups", "0"]) == 2
    assert "must be between 1 and 100; got 0" in capsys.readouterr().err
    assert cli_main(["stop"]) == 2  # --name is required
    assert "--name" in capsys.readouterr().err


def test_cli_start_takes_a_session_ttl(monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    import raykv.cluster
    from actors.sessions import DEFAULT_SESSION_TTL_S

    assert cli_main(["start", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--session-ttl SECONDS" in out and "SessionExpiredError" in out
    assert "--transport {stream,direct}" in out and "authenticated TCP streams" in out
    assert cli_main(["start", "--transport", "network"]) == 2
    assert "invalid choice: 'network'" in capsys.readouterr().err
    assert f"(default: {DEFAULT_SESSION_TTL_S:g} s)" in out
    for bad, message in (("0", "must be a positive, finite number of seconds"), ("-5", "positive"),
                         ("inf", "finite"), ("nan", "finite"), ("0.0001", "at least 0.001"),
                         ("an hour", "expected a number of seconds, e.g. 3600; got 'an hour'")):
        assert cli_main(["start", "--session-ttl", bad]) == 2, bad
        err = capsys.readouterr().err
        assert "argument --session-ttl" in err and message in err, (bad, err)

    started: list[dict[str, Any]] = []

    class Cluster:
        mode = "existing"

        def describe(self) -> str:
            return "a test cluster"

    class Service:
        name, namespace = "svc", "raykv"

        def status(self) -> Any:
            return type("Status", (), {"format": lambda self: "(status)"})()

    def fake_start(name: Any, **options: Any) -> Service:
        started.append(options)
        return Service()

    monkeypatch.setattr(raykv.cluster, "init_ray", lambda address, namespace: Cluster())
    monkeypatch.setattr(sharded, "start", fake_start)
    assert cli_main(["start", "--session-ttl", "90.5"]) == 0
    assert cli_main(["start", "--transport", "direct"]) == 0
    assert [o["session_ttl"] for o in started] == [90.5, DEFAULT_SESSION_TTL_S]
    assert [o["transport"] for o in started] == ["stream", "direct"], "streams by default"
    assert "stop it:  raykv stop --name svc" in capsys.readouterr().out


def test_detached_service_outlives_its_driver(ray_session: None, capsys: pytest.CaptureFixture[str]) -> None:
    import ray

    address = ray.get_runtime_context().gcs_address
    name = "detached-test"
    # another driver (a separate process) starts the service and exits
    started = _raykv("start", "--name", name, "--groups", "2", "--replicas", "1", "--address", address,
                     "--namespace", "raykv-tests", "--session-ttl", "600")
    assert started.returncode == 0, started.stderr
    assert f"started ShardedKV({name!r}" in started.stdout and "gid" in started.stdout, started.stdout
    try:
        kv = raykv.attach_sharded(name)
        assert kv.info.detached and kv.gids == (1, 2) and kv.info.session_ttl == 600
        ck = kv.clerk()
        ck.put("after", "the driver left", timeout=OP_TIMEOUT_S)
        assert ck.get("after", timeout=OP_TIMEOUT_S) == "the driver left"
        assert cli_main(["status", "--name", name]) == 0
        out = capsys.readouterr().out
        assert f"service {name!r} (namespace 'raykv-tests', detached)" in out and "replica 0" in out
        assert cli_main(["status"]) == 0
        assert f"{name}  (namespace 'raykv-tests')" in capsys.readouterr().out
        # a second start under the same name is refused, and changes nothing
        assert cli_main(["start", "--name", name, "--groups", "1"]) == 1
        assert f"a sharded service named {name!r} already runs" in capsys.readouterr().err
        assert raykv.attach_sharded(name).gids == (1, 2)
    finally:
        stopped = cli_main(["stop", "--name", name])
    assert stopped == 0
    assert f"stopped service {name!r}" in capsys.readouterr().out
    assert cli_main(["status", "--name", name]) == 1
    assert f"no sharded service named {name!r}" in capsys.readouterr().err
    assert cli_main(["stop", "--name", name]) == 1
