"""The harnesses' ledger (actors.ledger.ApplyLedger) as a plain object: each check fires on the
history it exists for, names both peers, the index, both commands and terms, and a correct history
passes. No Ray runtime is started."""

from __future__ import annotations

import pytest

from actors.ledger import ApplyLedger, LedgerBook, result_digest
from raft import NO_VOTE


def apply(peer: int, inc: int, index: int, term: int, cmd, seen: int | None = None, result=None,
          leader_commit: bool = False) -> tuple:
    return ("apply", peer, inc, index, term, cmd, *result_digest(result),
            term if seen is None else seen, leader_commit)


def start(peer: int, inc: int, term: int = 0, vote: int = NO_VOTE, last: int = 0, snap: int = 0,
          snap_term: int = 0, cmds=None) -> tuple:
    return ("start", peer, inc, term, vote, last, snap, snap_term, cmds)


def crash(peer: int, inc: int, term: int, vote: int, commit: int, last: int) -> tuple:
    return ("crash", peer, inc, term, vote, commit, last)


def lead(peer: int, inc: int, term: int, runs, last: int, snap: int = 0, snap_term: int = 0) -> tuple:
    return ("lead", peer, inc, term, snap, snap_term, runs, last)


def only_failure(ledger: ApplyLedger) -> str:
    failures, _ = ledger.verdict()
    assert len(failures) == 1, failures
    return failures[0]


def test_a_correct_history_passes_and_counts_every_peer_that_ever_applied() -> None:
    led = ApplyLedger()
    led.report([start(0, 1), start(1, 1), start(2, 1)])
    led.report([lead(0, 1, 1, [], 0), apply(0, 1, 1, 1, "a", leader_commit=True), apply(0, 1, 2, 1, "b")])
    led.report([apply(1, 1, 1, 1, "a"), apply(1, 1, 2, 1, "b")])
    # peer 1 crashes and restarts from a snapshot at 2, then applies 3; peer 2 restores a snapshot
    led.report([crash(1, 1, 1, 0, 2, 2), start(1, 2, 1, 0, 2, snap=2, snap_term=1, cmds={1: "a", 2: "b"}),
                apply(1, 2, 3, 1, "c")])
    led.report([("snapshot", 2, 1, 2, 1, {1: "a", 2: "b"}), apply(2, 1, 3, 1, "c")])
    led.report([lead(2, 1, 2, [(3, 1)], 3, snap=2, snap_term=1)])
    assert led.verdict()[0] == []
    assert led.committed(1) == (3, "a", None)  # peer 2 has it from its snapshot
    assert led.committed(3) == (2, "c", None)
    assert led.committed(4) == (0, None, None)
    assert led.applied_by(1) == {1: "a", 2: "b", 3: "c"}


def test_two_peers_applying_different_commands_fails_naming_both() -> None:
    led = ApplyLedger()
    led.report([start(0, 1), start(3, 1)])
    led.report([apply(0, 1, 1, 2, 101)])
    led.report([apply(3, 1, 1, 3, 202)])
    msg = only_failure(led)
    assert "state machine safety" in msg
    assert "peer3 (incarnation 1) applied 202 (term 3) at index 1" in msg
    assert "peer0 had applied 101 (term 2)" in msg
    assert led.failure() == msg and led.committed(1)[2] == msg


def test_a_peer_contradicting_its_own_earlier_record_is_caught_across_a_restart() -> None:
    """The evidence a restart used to erase: a wrong value applied, then the right one re-applied."""
    led = ApplyLedger()
    led.report([start(2, 1), apply(2, 1, 1, 1, "wrong")])
    led.report([crash(2, 1, 1, NO_VOTE, 1, 1), start(2, 2, 1, NO_VOTE, 1), apply(2, 2, 1, 1, "right")])
    msg = only_failure(led)
    assert "peer2 (incarnation 2) applied 'right'" in msg and "it had applied 'wrong'" in msg


def test_same_command_with_another_term_is_another_entry() -> None:
    led = ApplyLedger()
    led.report([start(0, 1), start(1, 1), apply(0, 1, 1, 1, 7), apply(1, 1, 1, 2, 7)])
    assert "(term 2) at index 1" in only_failure(led)


def test_diverged_results_are_caught() -> None:
    led = ApplyLedger("server")
    led.report([start(0, 1), start(1, 1), apply(0, 1, 1, 1, ("get", "k"), result=["x"]),
                apply(1, 1, 1, 1, ("get", "k"), result=["xx"])])
    msg = only_failure(led)
    assert "diverged state" in msg and "server1" in msg and "'xx'" in msg


def test_a_snapshot_holding_another_command_is_caught() -> None:
    led = ApplyLedger()
    led.report([start(0, 1), apply(0, 1, 1, 1, "a"), apply(0, 1, 2, 1, "b")])
    led.report([start(1, 1), ("snapshot", 1, 1, 2, 1, {1: "a", 2: "B"})])
    assert "restored from a snapshot 'B'" in only_failure(led)


def test_out_of_order_applies_are_caught_per_incarnation() -> None:
    led = ApplyLedger()
    led.report([start(0, 1), apply(0, 1, 1, 1, "a"), apply(0, 1, 3, 1, "c")])
    assert "applied index 3, expected 2" in only_failure(led)
    led = ApplyLedger()
    led.report([start(0, 1, snap=4, snap_term=1), apply(0, 1, 4, 1, "d")])
    assert "applied index 4, expected 5" in only_failure(led)


def test_two_leaders_of_one_term_are_caught() -> None:
    led = ApplyLedger()
    led.report([lead(1, 1, 5, [], 0), lead(1, 2, 5, [], 0)])  # the same peer again: fine
    led.report([lead(4, 1, 5, [], 0)])
    assert "peer4 (incarnation 1) and peer1 (incarnation 1) both led term 5" in only_failure(led)


def test_a_leader_missing_an_entry_applied_in_an_earlier_term_is_caught() -> None:
    led = ApplyLedger()
    led.report([start(0, 1), apply(0, 1, 1, 1, "a", seen=2), apply(0, 1, 2, 2, "b", seen=2)])
    led.report([lead(1, 1, 3, [(1, 1), (2, 2)], 2)])  # has both: fine
    led.report([lead(2, 1, 4, [(1, 1)], 1)])  # lacks index 2
    msg = only_failure(led)
    assert ("leader completeness: peer2 (incarnation 1) became leader of term 4 with no entry at "
            "index 2") in msg
    led = ApplyLedger()
    led.report([start(0, 1), apply(0, 1, 1, 1, "a", seen=2)])
    led.report([lead(2, 1, 4, [(1, 3)], 1)])  # holds another term's entry there
    assert "with an entry of term 3 at index 1" in only_failure(led)


def test_an_entry_applied_only_in_a_later_term_does_not_bind_an_earlier_leader() -> None:
    """A leader of term 4 may lack an entry that was committed only in term 5."""
    led = ApplyLedger()
    led.report([start(0, 1), apply(0, 1, 1, 2, "a", seen=5)])
    led.report([lead(2, 1, 4, [(1, 3)], 1)])
    assert led.verdict()[0] == []


@pytest.mark.parametrize("before,after,expected", [
    ((3, 1, 0, 0), (3, NO_VOTE, 0),
     "restarted in term 3 having voted for nobody, but it had voted for peer1"),
    ((3, 1, 0, 0), (2, 1, 0), "restarted at term 2, but it was at term 3"),
    ((3, 1, 5, 5), (3, 1, 4), "its log ending at 4, but it had committed up to 5"),
])
def test_state_lost_across_a_restart_is_caught(before, after, expected) -> None:
    led = ApplyLedger()
    term, vote, commit, last = before
    led.report([start(2, 1), crash(2, 1, term, vote, commit, last)])
    t, v, lst = after
    led.report([start(2, 2, t, v, lst)])
    assert expected in only_failure(led)


def test_a_restart_with_everything_kept_passes() -> None:
    led = ApplyLedger()
    led.report([start(2, 1), crash(2, 1, 3, 1, 5, 6), start(2, 2, 3, 1, 6)])
    led.report([crash(2, 2, 3, NO_VOTE, 0, 6), start(2, 3, 4, 0, 6)])  # a later term may hold any vote
    assert led.verdict()[0] == []


def test_a_leader_committing_an_earlier_terms_entry_by_counting_is_caught() -> None:
    led = ApplyLedger()
    led.report([start(0, 1), apply(0, 1, 1, 2, "x", seen=4, leader_commit=True)])
    assert "commit rule: peer0 (incarnation 1), leader of term 4, moved its commit index to 1, an entry " \
           "of term 2" in only_failure(led)
    led = ApplyLedger()
    led.report([start(0, 1), apply(0, 1, 1, 2, "x", seen=4), apply(0, 1, 2, 4, "y", seen=4,
                                                                  leader_commit=True)])
    assert led.verdict()[0] == []


def test_planted_faults_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from raykv.testing.faults import planted_from_env

    monkeypatch.setenv("RAYKV_PLANT", " commit_old_term, kv_no_dedup ,")
    assert planted_from_env() == {"commit_old_term", "kv_no_dedup"}
    monkeypatch.delenv("RAYKV_PLANT")
    assert planted_from_env() == frozenset()


def test_a_book_keeps_one_ledger_per_group_and_every_violation_in_order() -> None:
    book = LedgerBook()
    # two groups that both use index 1 for different commands: no violation (separate logs)
    book.report([start(0, 1), apply(0, 1, 1, 1, "ctrl-a")], "ctlr-x-")
    book.report([start(0, 1), apply(0, 1, 1, 1, "kv-a")], "server-100-")
    assert book.failure() is None
    assert book.committed(1, "ctlr-x-") == (1, "ctrl-a", None)
    assert book.committed(1, "server-100-") == (1, "kv-a", None)
    # a divergence in the second group, then one in the first: both kept, in the order seen
    book.report([start(1, 1), apply(1, 1, 1, 1, "kv-b")], "server-100-")
    book.report([start(2, 1), apply(2, 1, 1, 1, "ctrl-b")], "ctlr-x-")
    failures, counts = book.verdict()
    assert len(failures) == 2
    assert "server-100-1 (incarnation 1)" in failures[0] and "server-100-0" in failures[0]
    assert "ctlr-x-2 (incarnation 1)" in failures[1]
    assert book.failure() == failures[0]
    assert book.committed(1, "ctlr-x-")[2] == failures[0]  # the first violation of any group
    assert counts["groups"] == 2 and counts["applied"] == 4 and counts["starts"] == 4
    assert book.applied_by(1, "server-100-") == {1: "kv-a"}
