"""``raykv torture`` without Ray: the nemesis schedule (pure, seeded, deterministic, JSON round trip,
its invariants on many seeds, malformed schedules refused), the lost-write check, the history file,
the workload's keys, and the command line's refusals (all before anything starts)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from linearizability import UNKNOWN, KVModel, Operation, Verdict, check, parse_kv
from raykv.cli import main as cli_main
from raykv.nemesis import (
    DEFAULT_FAULTS,
    FAULTS,
    QUIET_TAIL_S,
    REPLICA_FAULTS,
    TIMED_FAULTS,
    Event,
    Schedule,
    ScheduleError,
    Setup,
    generate,
    parse_faults,
    validate,
)
from raykv.torture import campaign_seeds
from raykv.torture_check import key_for_shards, lost_writes, token, write_kv_history
from shardctrler.config import key2shard

# ------------------------------------------------------------------------------------------------
# The schedule
# ------------------------------------------------------------------------------------------------


def test_same_seed_same_schedule_and_different_seeds_differ() -> None:
    a, b = generate(7, 20), generate(7, 20)
    assert a == b and a.to_json() == b.to_json()
    assert generate(8, 20) != a
    assert len({generate(s, 20).to_json() for s in range(20)}) == 20
    assert campaign_seeds(3, 5) == campaign_seeds(3, 5) and len(set(campaign_seeds(3, 5))) == 5
    assert campaign_seeds(3, 5)[:2] == campaign_seeds(3, 2)  # campaign i's seed does not depend on N


def test_schedule_round_trips_through_json(tmp_path: Path) -> None:
    s = generate(11, 30, "all", Setup(groups=3, nodes=3))
    assert Schedule.from_json(s.to_json()) == s
    path = tmp_path / "schedule.json"
    s.save(path)
    assert Schedule.load(path) == s
    data = json.loads(path.read_text())
    assert data["seed"] == 11 and data["setup"]["groups"] == 3 and data["version"] == 1
    assert all("replica" not in e for e in data["events"] if e["kind"] == "heal")  # no null fields


@pytest.mark.parametrize("faults", ["default", "all", "isolate,crash", "join,leave,move", "unreliable",
                                    "node-loss", "isolate-leader,leave"])
def test_invariants_hold_on_many_seeds(faults: str) -> None:
    chosen = parse_faults(faults)
    for seed in range(150):
        setup = Setup(groups=1 + seed % 3, replicas=(3, 5, 1)[seed % 3], nodes=seed % 4,
                      max_groups=4)
        s = generate(seed, 5 + seed % 40, faults, setup)
        validate(s)  # every timed fault healed before the quiet tail, no overlap, groups in bounds ...
        kinds = {e.kind for e in s.events} - {"heal"}
        assert kinds <= set(chosen)
        assert all(e.at <= s.seconds - QUIET_TAIL_S for e in s.events)
        assert [e.id for e in s.events] == list(range(len(s.events)))
        heals = {e.of for e in s.events if e.kind == "heal"}
        assert heals == {e.id for e in s.events if e.kind in TIMED_FAULTS}
        losses = sum(e.kind == "node-loss" for e in s.events)
        assert losses <= min(setup.replicas - setup.majority, setup.nodes)
        first_loss = next((e.at for e in s.events if e.kind == "node-loss"), None)
        if first_loss is not None and setup.replicas == 3:  # tolerance 1, used up by the loss
            assert not any(e.kind in REPLICA_FAULTS and e.at >= first_loss for e in s.events)


def test_a_long_schedule_uses_every_fault_of_its_list() -> None:
    # with every fault: node-loss once (groups of 3 survive one), the replica faults only before it
    seen: set[str] = set()
    for seed in range(10):
        s = generate(seed, 300, "all", Setup(nodes=3))
        assert s.counts()["node-loss"] == 1
        assert s.injected == sum(s.counts().values()) > 50
        seen |= set(s.counts())
    assert seen == set(FAULTS)
    assert set(generate(5, 300).counts()) == set(DEFAULT_FAULTS)


def test_groups_stay_in_bounds_and_gids_are_never_reused() -> None:
    s = generate(2, 400, "join,leave", Setup(groups=2, min_groups=1, max_groups=3))
    live, seen = {1, 2}, {1, 2}
    for e in s.events:
        if e.kind == "join":
            assert e.gid not in seen
            live.add(e.gid)
            seen.add(e.gid)  # type: ignore[arg-type]
        elif e.kind == "leave":
            live.remove(e.gid)  # type: ignore[arg-type]
        assert 1 <= len(live) <= 3
    assert s.counts()["join"] > 5 and s.counts()["leave"] > 5


def _sched(*events: Event, faults: str = "all", seconds: float = 20, **setup: int) -> Schedule:
    return Schedule(1, seconds, parse_faults(faults), Setup(**setup), tuple(events))


@pytest.mark.parametrize(("events", "message"), [
    ((Event(0, 1, "crash", gid=1, replica=0),), "never healed"),
    ((Event(0, 1, "crash", gid=1, replica=0), Event(1, 2, "isolate", gid=2, replica=0),
      Event(2, 3, "heal", of=0), Event(3, 4, "heal", of=1)), "still in force"),
    ((Event(0, 1, "heal", of=5),), "not in force"),
    ((Event(0, 1, "isolate", gid=1, replica=0), Event(1, 19.5, "heal", of=0)), "quiet tail"),
    ((Event(0, 1, "crash", gid=1, replica=0), Event(1, 2, "leave", gid=1), Event(2, 3, "heal", of=0)),
     "while a fault holds"),
    ((Event(0, 1, "join", gid=2),), "never used before"),
    ((Event(0, 1, "move", shard=3, gid=7),), "not in the service"),
    ((Event(0, 1, "move", shard=10, gid=1),), "shard out of range"),
    ((Event(0, 1, "crash", gid=1, replica=3), Event(1, 2, "heal", of=0)), "replica index"),
    ((Event(0, 2, "move", shard=1, gid=1), Event(1, 1, "move", shard=1, gid=2)), "time order"),
    ((Event(0, 1, "leave", gid=1), Event(1, 2, "leave", gid=2)), "0 groups"),
    ((Event(0, 1, "node-loss", node=0), Event(1, 2, "node-loss", node=1)), "more nodes lost"),
    ((Event(0, 1, "node-loss", node=5),), "node index"),
    ((Event(0, 1, "node-loss", node=0), Event(1, 2, "isolate", gid=1, replica=0), Event(2, 3, "heal", of=1)),
     "after 1 node"),
])
def test_validate_refuses_broken_schedules(events: tuple[Event, ...], message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        validate(_sched(*events))


def test_validate_refuses_a_fault_outside_the_list() -> None:
    with pytest.raises(ScheduleError, match="not in the schedule's fault list"):
        validate(_sched(Event(0, 1, "move", shard=1, gid=1), faults="crash"))


def test_parse_faults() -> None:
    assert parse_faults("default") == DEFAULT_FAULTS
    assert parse_faults("all") == FAULTS
    assert parse_faults("crash, isolate,crash") == ("isolate", "crash")
    assert parse_faults(["default", "node-loss"]) == FAULTS
    with pytest.raises(ScheduleError, match="unknown fault 'partition'; known: isolate"):
        parse_faults("partition")
    with pytest.raises(ScheduleError, match="empty"):
        parse_faults(" , ")


def test_bad_arguments_and_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ScheduleError, match="seconds must be"):
        generate(1, 1)
    with pytest.raises(ScheduleError, match="seed must be an int"):
        generate("1", 10)  # type: ignore[arg-type]
    with pytest.raises(ScheduleError, match=r"groups \(5\) must be within"):
        Setup(groups=5, max_groups=4)
    with pytest.raises(ScheduleError, match="clients must be an int of at least 1"):
        Setup(clients=0)
    good = json.loads(generate(1, 10).to_json())
    with pytest.raises(ScheduleError, match="not JSON"):
        Schedule.from_json("{", "x.json")
    with pytest.raises(ScheduleError, match="schedule version 9"):
        Schedule.from_json(json.dumps(good | {"version": 9}))
    with pytest.raises(ScheduleError, match="missing, unexpected or malformed field"):
        Schedule.from_json(json.dumps({k: v for k, v in good.items() if k != "setup"}))
    with pytest.raises(ScheduleError, match="cannot read schedule"):
        Schedule.load(tmp_path / "missing.json")


# ------------------------------------------------------------------------------------------------
# Lost writes, the history file, the keys
# ------------------------------------------------------------------------------------------------


def _op(client: int, inp: tuple, call: int, ret: int | None, out: object = None) -> Operation:
    return Operation(client, inp, UNKNOWN if ret is None else out, call, ret)


def test_an_acknowledged_append_missing_from_the_final_value_is_lost() -> None:
    a, b = token(0, 1), token(1, 1)
    h = [_op(0, ("append", "k", a), 0, 10), _op(1, ("append", "k", b), 5, 12)]
    assert lost_writes(h, {"k": a + b}).ok
    out = lost_writes(h, {"k": b})
    assert out.checked == 2 and len(out.lost) == 1 and "'0:1;' by client 0" in out.lost[0]


def test_a_write_a_put_may_have_overwritten_is_not_required() -> None:
    a, p, u = token(0, 1), token(1, 1), token(2, 1)
    h = [_op(0, ("append", "k", a), 0, 10),
         _op(1, ("put", "k", p), 20, 30)]                # a later put erases the append legitimately
    out = lost_writes(h, {"k": p})
    assert out.ok and out.checked == 1                  # only the put had to be visible
    assert not lost_writes(h, {"k": a}).ok              # the put is lost
    h2 = [_op(0, ("append", "k", a), 0, 10), _op(2, ("put", "k", u), 5, None)]  # unknown put
    assert lost_writes(h2, {"k": ""}).checked == 0      # it may have come after: nothing required


def test_a_put_must_be_the_first_token_and_duplicates_are_reported() -> None:
    p, a = token(0, 1), token(1, 1)
    h = [_op(0, ("put", "k", p), 0, 10), _op(1, ("append", "k", a), 11, 20)]
    assert lost_writes(h, {"k": p + a}).ok
    assert len(lost_writes(h, {"k": a + p}).lost) == 1  # put not first
    dup = lost_writes(h, {"k": p + a + a})
    assert dup.duplicated == [f"k: {a}"] and not dup.ok
    assert lost_writes(h, {"other": ""}).checked == 0    # only the keys read at the end


def test_history_file_reads_back_with_the_same_verdict(tmp_path: Path) -> None:
    h = [_op(0, ("put", "k", "x;"), 0, 10), _op(1, ("append", "k", "y;"), 2, None),
         _op(1, ("get", "k"), 12, 14, "x;y;"), _op(0, ("get", "j"), 11, 13, "")]
    path = tmp_path / "history.kv"
    write_kv_history(h, path)
    text = path.read_text()
    assert ":type :info" in text and ":process 2" in text  # client 1 continues as a new process
    back = parse_kv(text.splitlines())
    assert len(back) == 4
    assert check(back, KVModel()).verdict is check(h, KVModel()).verdict is Verdict.LINEARIZABLE
    bad = [*h, _op(2, ("get", "k"), 20, 21, "zz;")]
    write_kv_history(bad, path)
    assert check(parse_kv(path.read_text().splitlines()), KVModel()).verdict is Verdict.NOT_LINEARIZABLE


def test_keys_cover_every_shard() -> None:
    keys = key_for_shards(10, 2)
    assert len(keys) == len(set(keys)) == 20
    assert [key2shard(k, 10) for k in keys] == [s for s in range(10) for _ in range(2)]


# ------------------------------------------------------------------------------------------------
# The command line (refusals happen before anything starts) and the service's transport option
# ------------------------------------------------------------------------------------------------


def test_cli_help_and_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["torture", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--replay" in out and "node-loss" in out and "OFF by default" in out
    assert cli_main(["torture", "--faults", "partition"]) == 2
    assert "unknown fault 'partition'" in capsys.readouterr().err
    assert cli_main(["torture", "--faults", "node-loss", "--address", "auto"]) == 2
    assert "node-loss needs a cluster started by this command" in capsys.readouterr().err
    assert cli_main(["torture", "--faults", "node-loss", "--nodes", "2"]) == 2
    assert cli_main(["torture", "--seconds", "1"]) == 2
    assert cli_main(["torture", "--replay", str(tmp_path / "nope.json")]) == 2
    assert "cannot read schedule" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(json.loads(generate(1, 10).to_json()) | {"seconds": "x"}))
    assert cli_main(["torture", "--replay", str(bad)]) == 2


def test_cli_dry_run_prints_the_schedules(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["torture", "--campaigns", "2", "--seconds", "10", "--seed", "7", "--dry-run"]) == 0
    out = capsys.readouterr().out
    seeds = campaign_seeds(7, 2)
    assert out.startswith("same run: raykv torture --campaigns 2 --seconds 10 --seed 7 --faults default")
    for seed in seeds:
        sched = generate(seed, 10, "default", Setup(clients=4))
        assert f"campaign {seeds.index(seed) + 1} seed {seed}: 10 s, {sched.injected} faults" in out
        assert all(f"  {e.describe()}\n" in out for e in sched.events)


def test_start_sharded_refuses_a_bad_transport_before_starting() -> None:
    from raykv.sharded import start

    with pytest.raises(ValueError, match="transport must be one of 'stream', 'direct', 'network'"):
        start(transport="tcp")
    with pytest.raises(ValueError, match="cannot be combined with detached"):
        start(transport="network", detached=True)


def test_event_describe() -> None:
    s = replace(generate(3, 20), events=(Event(0, 1.5, "isolate", gid=0, replica=2),
                                          Event(1, 2.0, "heal", of=0)))
    assert [e.describe() for e in s.events] == ["#0 t=1.50s isolate controller replica 2",
                                                 "#1 t=2.00s heal #0"]


def test_the_nemesis_skips_a_replica_whose_node_it_killed() -> None:
    """A crash or isolation aimed at a replica on a node lost earlier in the campaign is skipped (and
    not counted), not an error: that replica is gone for good."""
    from types import SimpleNamespace

    from raykv.nemesis import Event
    from raykv.torture import Nemesis

    class NoNetwork:  # any call on the network would mean the skip did not happen
        def __getattr__(self, name: str) -> None:
            raise AssertionError(f"the network was called ({name}) for a replica on a lost node")

    group = SimpleNamespace(names=("g1-0", "g1-1", "g1-2"), replicas=(None, None, None),
                            nodes=("nodeA", "nodeB", "nodeC"))
    info = SimpleNamespace(network=NoNetwork(), ctrler=group, group=lambda gid: group)
    notes: list[str] = []
    nemesis = Nemesis(SimpleNamespace(info=info), cluster=None, note=notes.append)  # type: ignore[arg-type]
    nemesis.lost_nodes.add("nodeB")
    for kind in ("crash", "isolate"):
        nemesis.apply(Event(1, 2.0, kind, gid=1, replica=1))
    assert nemesis.errors == [] and nemesis.done == {}
    assert all("g1-1 was on a node lost earlier; skipped" in n for n in notes), notes
