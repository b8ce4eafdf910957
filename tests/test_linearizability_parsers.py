"""The two file formats: what the events mean, and line-numbered errors for garbled input."""

from __future__ import annotations

from pathlib import Path

import pytest

from linearizability import UNKNOWN, HistoryFormatError, Operation, parse_file, parse_jepsen, parse_kv

P = "INFO  jepsen.util - "


def jepsen(*lines: str) -> list[Operation]:
    return parse_jepsen([P + line for line in lines], "log")


def test_jepsen_events() -> None:
    ops = jepsen(
        "0\t:invoke\t:read\tnil",
        "1\t:invoke\t:write\t4",
        "0\t:ok\t:read\tnil",
        "1   :ok     :write  4",  # spaces instead of tabs
        "2\t:invoke\t:cas\t[4 0]",
        "2\t:ok\t:cas\t[4 0]",
        "3\t:invoke\t:cas\t[4 1]",
        "3\t:fail\t:cas\t[4 1]",
        "4\t:invoke\t:read\tnil",
        "4\t:fail\t:read\t:timed-out",
    )
    assert ops == [
        Operation(0, ("read",), None, 1, 3),
        Operation(1, ("write", 4), None, 2, 4),
        Operation(2, ("cas", 4, 0), True, 5, 6),
        Operation(3, ("cas", 4, 1), False, 7, 8),
        Operation(4, ("read",), UNKNOWN, 9, 10),
    ]


def test_jepsen_info_stays_open_and_frees_the_process() -> None:
    ops = jepsen(
        "5\t:invoke\t:write\t1",
        "5\t:info\t:write\t:timed-out",
        "5\t:invoke\t:read\tnil",  # the same id may call again
        "5\t:ok\t:read\t1",
        "6\t:invoke\t:cas\t[1 2]",  # never returns
    )
    assert ops == [
        Operation(5, ("write", 1), UNKNOWN, 1, None),
        Operation(5, ("read",), 1, 3, 4),
        Operation(6, ("cas", 1, 2), UNKNOWN, 5, None),
    ]


def test_jepsen_failed_write_is_dropped_and_other_lines_ignored() -> None:
    lines = [
        "INFO  jepsen.core - Running test",
        P + "1\t:invoke\t:write\t3",
        P + "1\t:fail\t:write\t3",
        P + ":nemesis\t:info\t:start\tnil",
        "",
    ]
    assert parse_jepsen(lines, "log") == []


@pytest.mark.parametrize(
    ("lines", "line", "expected"),
    [
        (["0\t:invoke\t:read\tnil", "0\t:ok\t:read\tfour"], 2, "'nil' or an integer"),
        (["0\t:invoke\t:write\tx"], 1, "an integer to write"),
        (["0\t:invoke\t:cas\t[1]"], 1, "'[old new]'"),
        (["0\t:invoke\t:read\t3"], 1, "'nil' as the value"),
        (["0\t:invoke\t:delete\t3"], 1, "':read', ':write' or ':cas'"),
        (["0\t:invoke"], 1, "':read', ':write' or ':cas'"),
        (["0\t:ok\t:read\t3"], 1, "no open call"),
        (["0\t:invoke\t:read\tnil", "0\t:invoke\t:read\tnil"], 2, "has not returned"),
        (["0\t:invoke\t:read\tnil", "0\t:ok\t:write\t3"], 2, "expected :read"),
        (["0\t:invoke\t:write\t3", "0\t:ok\t:write\t4"], 2, "expected the same value"),
    ],
)
def test_jepsen_garbled(lines: list[str], line: int, expected: str) -> None:
    with pytest.raises(HistoryFormatError) as info:
        jepsen(*lines)
    assert info.value.line == line
    assert expected in info.value.message
    assert str(info.value).startswith(f"log:{line}: ")


def test_jepsen_file_without_events() -> None:
    with pytest.raises(HistoryFormatError, match="no Jepsen client events found"):
        parse_jepsen(['{:process 0, :type :invoke, :f :get, :key "1", :value nil}'], "x")


def kv(*lines: str) -> list[Operation]:
    return parse_kv(list(lines), "kv.txt")


def test_kv_events() -> None:
    ops = kv(
        '{:process 0, :type :invoke, :f :get, :key "3", :value nil}',
        '{:process 1, :type :invoke, :f :append, :key "3", :value "x 1 0 y"}',
        '{:process 0, :type :ok, :f :get, :key "3", :value ""}',
        "",
        '{:process 1, :type :ok, :f :append, :key "3", :value "x 1 0 y"}',
        '{:value "a\\"b", :key "4", :f :put, :type :invoke, :process 2}',  # any key order
        '{:process 2, :type :info, :f :put, :key "4", :value "a\\"b"}',
        '{:process 3, :type :invoke, :f :put, :key "5", :value "z"}',
        '{:process 3, :type :fail, :f :put, :key "5", :value "z"}',
        '{:process 4, :type :invoke, :f :get, :key "5", :value nil}',
    )
    assert ops == [
        Operation(0, ("get", "3"), "", 1, 3),
        Operation(1, ("append", "3", "x 1 0 y"), None, 2, 5),
        Operation(2, ("put", "4", 'a"b'), UNKNOWN, 6, None),
        Operation(4, ("get", "5"), UNKNOWN, 10, None),
    ]


@pytest.mark.parametrize(
    ("lines", "line", "expected"),
    [
        (['{:process 0, :type :invoke, :f :get, :key "3", :value nil'], 1, "'}'"),
        (["process 0"], 1, "expected '{'"),
        (['{:process 0, :type :invoke, :f :get, :key "3"}'], 1, "expected :value"),
        (['{:process "0", :type :invoke, :f :get, :key "3", :value nil}'], 1, "integer :process"),
        (['{:process 0, :type :start, :f :get, :key "3", :value nil}'], 1, ":type to be one of"),
        (['{:process 0, :type :invoke, :f :cas, :key "3", :value nil}'], 1, ":f to be one of"),
        (['{:process 0, :type :invoke, :f :put, :key "3", :value nil}'], 1, "a string :value"),
        (['{:process 0, :type :ok, :f :get, :key "3", :value ""}'], 1, "no open call"),
        (['{:process 0, :type :invoke, :f :get, :key "3", :value nil} x'], 1, "end of the line"),
        (
            [
                '{:process 0, :type :invoke, :f :get, :key "3", :value nil}',
                '{:process 0, :type :ok, :f :get, :key "4", :value ""}',
            ],
            2,
            "for key '3'",
        ),
        (
            [
                '{:process 0, :type :invoke, :f :get, :key "3", :value nil}',
                '{:process 0, :type :ok, :f :get, :key "3", :value :x}',
            ],
            2,
            "a string or nil",
        ),
        (["", "{:process 0 :type}"], 2, "even number"),
    ],
)
def test_kv_garbled(lines: list[str], line: int, expected: str) -> None:
    with pytest.raises(HistoryFormatError) as info:
        kv(*lines)
    assert info.value.line == line
    assert expected in info.value.message


def test_parse_file_errors(tmp_path: Path) -> None:
    with pytest.raises(HistoryFormatError, match="no such file"):
        parse_file(tmp_path / "missing.log", "jepsen")
    with pytest.raises(HistoryFormatError, match="is a directory"):
        parse_file(tmp_path, "kv")
    binary = tmp_path / "binary.log"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(HistoryFormatError, match="not UTF-8"):
        parse_file(binary, "jepsen")
    with pytest.raises(HistoryFormatError, match="unknown format"):
        parse_file(binary, "edn")
