"""The command line (through main(argv), and once as a subprocess) and the HTML report."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from linearizability import KVModel, Operation, RegisterModel, check, render_html
from linearizability.cli import main

REPO = Path(__file__).resolve().parents[1]
_env = os.environ.get("RAYKV_SHARED_DATA")
_root = Path(_env) if _env else REPO.parent / "shared" / "data"
DATA = _root if (_root / "jepsen").is_dir() else _root / "linearizability"
LINE = re.compile(r"^(?P<file>.+): (?P<verdict>linearizable|not linearizable|unknown) \(\d+\.\d\ds\)$")

GOOD_KV = (
    '{:process 0, :type :invoke, :f :put, :key "1", :value "a"}\n'
    '{:process 0, :type :ok, :f :put, :key "1", :value "a"}\n'
    '{:process 1, :type :invoke, :f :get, :key "1", :value nil}\n'
    '{:process 1, :type :ok, :f :get, :key "1", :value "a"}\n'
)
BAD_KV = GOOD_KV.replace(':value "a"', ':value "b"', 2)  # put "b", then read "a"


def data(*parts: str) -> str:
    path = DATA.joinpath(*parts)
    if not path.is_file():
        pytest.fail(f"shared linearizability data not found at {path}; set RAYKV_SHARED_DATA")
    return str(path)


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(list(argv), stdout=out, stderr=err)
    return status, out.getvalue(), err.getvalue()


def verdicts(out: str) -> dict[str, str]:
    lines = out.splitlines()
    matches = [LINE.match(line) for line in lines]
    assert all(matches), f"unexpected output lines: {lines}"
    return {m.group("file"): m.group("verdict") for m in matches if m}


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    made = {
        "good.txt": GOOD_KV,
        "bad.txt": BAD_KV,
        "garbled.txt": GOOD_KV + '{:process 2, :type :ok, :f :get, :key "1"\n',
    }
    for name, text in made.items():
        (tmp_path / name).write_text(text)
    return {name: str(tmp_path / name) for name in made}


def test_bad_kv_fixture_is_not_linearizable(files: dict[str, str]) -> None:
    status, out, _ = run("check", "--format", "kv", files["bad.txt"])
    assert (status, verdicts(out)) == (1, {files["bad.txt"]: "not linearizable"})


def test_jepsen_files_and_exit_status() -> None:
    good, bad = data("jepsen", "etcd_007.log"), data("jepsen", "etcd_000.log")
    status, out, err = run("check", "--format", "jepsen", good)
    assert (status, verdicts(out), err) == (0, {good: "linearizable"}, "")
    status, out, err = run("check", "--format", "jepsen", good, bad)
    assert status == 1
    assert verdicts(out) == {good: "linearizable", bad: "not linearizable"}
    (why,) = err.splitlines()  # stderr explains the failure, one line per failing partition
    assert why.startswith(f"{bad}: the history is not linearizable: ")
    assert "could not be linearized after" in why and "state there:" in why


@pytest.mark.parametrize("whole", [False, True])
def test_kv_files(whole: bool) -> None:
    ok, bad = data("kv", "c01-ok.txt"), data("kv", "c01-bad.txt")
    argv = ["--format", "kv", *(["--whole"] if whole else []), ok, bad]  # "check" is optional
    status, out, _ = run(*argv)
    assert status == 1
    assert verdicts(out) == {ok: "linearizable", bad: "not linearizable"}


def test_garbled_file_gets_a_message_and_no_verdict(files: dict[str, str]) -> None:
    status, out, err = run("check", "--format", "kv", files["good.txt"], files["garbled.txt"])
    assert status == 2
    assert verdicts(out) == {files["good.txt"]: "linearizable"}
    assert f"{files['garbled.txt']}:5:" in err
    assert "expected" in err


def test_wrong_format_and_missing_file(files: dict[str, str], tmp_path: Path) -> None:
    status, out, err = run("check", "--format", "jepsen", files["good.txt"])
    assert (status, out) == (2, "")
    assert "no Jepsen client events" in err and "--format kv" in err
    status, out, err = run("check", "--format", "kv", str(tmp_path / "nope.txt"))
    assert (status, out) == (2, "")
    assert "no such file" in err


def test_unknown_when_the_timeout_runs_out(tmp_path: Path) -> None:
    # 22 overlapping appends of "x", then a read of 23 of them: every subset must be tried.
    lines = [f'{{:process {i}, :type :invoke, :f :append, :key "k", :value "x"}}' for i in range(22)]
    lines += [f'{{:process {i}, :type :ok, :f :append, :key "k", :value "x"}}' for i in range(22)]
    lines += [
        '{:process 99, :type :invoke, :f :get, :key "k", :value nil}',
        f'{{:process 99, :type :ok, :f :get, :key "k", :value "{"x" * 23}"}}',
    ]
    slow = tmp_path / "slow.txt"
    slow.write_text("\n".join(lines) + "\n")
    status, out, _ = run("check", "--format", "kv", "--timeout", "0.2", str(slow))
    assert status == 2
    assert verdicts(out) == {str(slow): "unknown"}


def test_unknown_wins_over_not_linearizable(files: dict[str, str], tmp_path: Path) -> None:
    status, _, _ = run("check", "--format", "kv", files["bad.txt"], str(tmp_path / "missing"))
    assert status == 2


@pytest.mark.parametrize("argv", [["check", "--help"], ["--help"]])
def test_help_explains_itself(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 0
    text = capsys.readouterr().out
    for needle in ("--format", "--whole", "--timeout", "--html", "exit status", "jepsen.util", ":process"):
        assert needle in text


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["check"],
        ["check", "--format", "xml", "f"],
        ["check", "--format", "kv", "--timeout", "-1", "f"],
        ["check", "--format", "kv"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "usage" in capsys.readouterr().err


def test_html_reports(files: dict[str, str], tmp_path: Path) -> None:
    out_dir = tmp_path / "reports"
    status, _, err = run(
        "check", "--format", "kv", "--html", str(out_dir), files["good.txt"], files["bad.txt"]
    )
    assert status == 1
    assert [p.name for p in out_dir.iterdir()] == ["bad.txt.html"]  # only for failures
    assert "report written" in err
    page = (out_dir / "bad.txt.html").read_text()
    assert "not linearizable" in page and "get(&#x27;1&#x27;) -&gt; &#x27;a&#x27;" in page


def test_module_runs_as_a_subprocess(files: dict[str, str]) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "linearizability",
            "check",
            "--format",
            "kv",
            files["good.txt"],
            files["bad.txt"],
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert verdicts(proc.stdout) == {files["good.txt"]: "linearizable", files["bad.txt"]: "not linearizable"}


# --------------------------------------------------------------------------- the report itself


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.bars: list[dict[str, str | None]] = []
        self.external: list[str] = []
        self.lanes: list[str] = []
        self._lane = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for attr in ("src", "href"):
            if a.get(attr):
                self.external.append(str(a[attr]))
        if tag == "link":
            self.external.append("link")
        if "bar" in (a.get("class") or "").split():
            self.bars.append(a)
        self._lane = a.get("class") == "lane-label"

    def handle_data(self, data: str) -> None:
        if self._lane:
            self.lanes.append(data)
            self._lane = False


def test_report_content() -> None:
    history = [
        Operation("alice", ("write", 1), None, 0, 10),
        Operation("bob", ("read",), 1, 2, 3),
        Operation("carol", ("write", 2), None, 11, 12),
        Operation("bob", ("read",), 1, 13, 14),  # stale: 2 was written before
    ]
    result = check(history, RegisterModel())
    page = render_html(result, title="demo </script>")
    parser = _Collector()
    parser.feed(page)
    assert parser.external == []  # self-contained: no network
    assert parser.lanes == ["client alice", "client bob", "client carol"]
    assert len(parser.bars) == 4
    classes = [str(b["class"]) for b in parser.bars]
    assert sum("failed" in c for c in classes) == 1
    assert sum("prefix" in c for c in classes) == 3
    assert "Every attempt failed at" in page and "read() -&gt; 1" in page
    assert 'Model state at that point: <b class="mono">2</b>' in page
    assert "demo &lt;/script&gt;" in page
    assert page.count("<script") == 2 and '</script>"' not in page


def test_report_of_a_per_key_kv_check_shows_only_failing_keys() -> None:
    history = [
        Operation(0, ("put", "a", "1"), None, 0, 1),
        Operation(1, ("get", "a"), "1", 2, 3),
        Operation(0, ("put", "b", "1"), None, 0, 1),
        Operation(1, ("get", "b"), "2", 2, 3),
    ]
    page = render_html(check(history, KVModel()))
    assert "key &#x27;b&#x27;" in page and "key &#x27;a&#x27;" not in page
    assert "{&#x27;b&#x27;: &#x27;1&#x27;}" in page  # the state where it failed
