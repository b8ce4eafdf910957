"""The notebooks run from a clean kernel, in their smoke size (``SMOKE_TEST=1``), as CI runs them.

The kernel is a separate process started from this interpreter (a throw-away kernelspec, so that a
``python3`` kernel registered elsewhere on the machine cannot stand in for it); it starts its own
embedded Ray runtime through ``raykv.init_ray`` whether or not the session fixture ``ray_session``
has one running in the pytest process, and shuts it down in its last cell.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
WALKTHROUGH = NOTEBOOKS / "raft_walkthrough.ipynb"
EXPERIMENTS = NOTEBOOKS / "experiments.ipynb"
KERNEL = "raykv-notebook-test"


def _kernelspec(root: Path) -> None:
    """A kernelspec for exactly this interpreter, under ``root`` (to be put on ``JUPYTER_PATH``)."""
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "raykv tests",
        "language": "python",
    }))


def _outputs(nb: Any) -> tuple[str, list[Any]]:
    """All text the code cells printed (stdout, stderr, plain-text results), and every output."""
    texts, outputs = [], []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            outputs.append(out)
            if out.output_type == "stream":
                texts.append(out.text)
            elif out.output_type in ("execute_result", "display_data"):
                texts.append(out.get("data", {}).get("text/plain", ""))
    return "\n".join(texts), outputs


def _execute(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Run the notebook at ``path`` in smoke size from a clean kernel; the executed notebook."""
    _kernelspec(tmp_path / "jupyter")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))  # no user startup files
    monkeypatch.setenv("SMOKE_TEST", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # the kernel starts its own embedded runtime

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, kernel_name=KERNEL, timeout=180,
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    start = time.monotonic()
    try:
        client.execute()  # raises CellExecutionError if any cell raises
    finally:
        nbformat.write(nb, str(tmp_path / "executed.ipynb"))  # for a look after a failure
    elapsed = time.monotonic() - start
    print(f"\n{path.name} executed in {elapsed:.1f} s (executed copy: {tmp_path / 'executed.ipynb'})")
    return nb


def _html_report(text: str) -> None:
    """The notebook printed the path of a linearizability HTML report that exists; remove it."""
    match = re.search(r"HTML report \([\d,]+ bytes\): (\S+\.html)", text)
    assert match, "no HTML report written"
    html = Path(match.group(1))
    try:
        assert html.read_text().lstrip().lower().startswith("<!doctype html")
    finally:
        shutil.rmtree(html.parent, ignore_errors=True)


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_raft_walkthrough_runs_in_smoke_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nb = _execute(WALKTHROUGH, tmp_path, monkeypatch)
    text, outputs = _outputs(nb)
    assert not [o for o in outputs if o.output_type == "error"]
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code_cells), "a code cell did not run"

    assert "smoke test sizes" in text
    # 1. the hand-driven core: every peer applied the three commands, also after the leader's restart
    assert "every peer applied ['x=1', 'y=2', 'x=3']" in text
    assert "new leader: P" in text
    # 2. the simulator: a clean campaign, then the broken rule caught with its report and story
    assert re.search(r"failures:\s+0\b", text), "the campaign of the correct core failed"
    assert "leader-completeness violated at tick" in text
    assert "replay: python -m raft.sim --replay" in text
    assert re.search(r"commit\s+P\d\s+\d+ -> \d+", text), "no commit in the Figure 8 story"
    # 3. Raft on Ray
    assert "OK: 6 commands on 3 peers survived a leader crash" in text
    # 4. the checker: linearizable, then not once a read is stale, with its HTML report
    assert "verdict: LINEARIZABLE" in text
    assert "verdict: NOT_LINEARIZABLE" in text
    _html_report(text)
    # the two plots were rendered headless, as PNG images
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pngs) >= 2, f"expected 2 plots, got {len(pngs)}"
    assert "Ray shut down" in text


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_experiments_run_in_smoke_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nb = _execute(EXPERIMENTS, tmp_path, monkeypatch)
    text, outputs = _outputs(nb)
    assert not [o for o in outputs if o.output_type == "error"]
    assert all(c.execution_count for c in nb.cells if c.cell_type == "code"), "a code cell did not run"
    assert "smoke test sizes" in text
    # 1. the service started and settled
    assert "configuration" in text and "controller:" in text
    # 2. the sweep: a line per op and number of clients, operations done in every one
    for op in ("put", "get"):
        for n in (1, 4, 16):
            match = re.search(rf"{op} with\s+{n} clients:\s+([\d,]+) ops/s", text)
            assert match, f"no sweep point for {op} with {n} clients"
            assert int(match.group(1).replace(",", "")) > 0
    # 3. the timeline: the kill led to a new leader of group 1; shards moved and settled
    assert re.search(r"killed P\d .*leader of group 1 in term \d+", text)
    assert re.search(r"group 1 elected P\d term \d+, [\d.]+ s after the kill", text)
    assert re.search(r"group \d+\s+moving", text) and re.search(r"group \d+\s+settled", text)
    match = re.search(r"(\d+) operations recorded", text)
    assert match and int(match.group(1)) > 20, "the recorded clients did (almost) nothing"
    # 4. a definite verdict, the right one, and its report
    assert re.search(r"keys: verdict: LINEARIZABLE", text)
    _html_report(text)
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pngs) == 2, f"expected 2 plots, got {len(pngs)}"
    assert "Ray shut down" in text
