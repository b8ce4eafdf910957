"""Every Python example in README.md and docs/*.md runs as written.

Each fenced block whose info string starts with ``python`` is one test, named ``page:line``:

- a block that starts Ray itself (it calls ``ray.init``) runs in a fresh Python process, since it also
  shuts its runtime down;
- a block that imports a package that uses Ray (``ray``, ``raykv``, ``kvraft``, ``shardctrler``,
  ``shardkv``, ``actors``) runs in this process on the session's shared Ray runtime (the
  ``ray_session`` fixture) and is marked ``ray``; each such example stops what it started;
- any other block runs in a fresh Python process, in a temporary directory (what it writes stays
  there).

A block that cannot run on its own is excluded by an HTML comment on the line just above its fence,
``<!-- not executed: REASON -->``; the reason is required and shown as the skip reason. Shell
blocks (commands, command lines) and output listings are not executed.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RAY_PACKAGES = frozenset({"ray", "raykv", "kvraft", "shardctrler", "shardkv", "actors"})
#: modules of those packages that never import Ray (the stream layer: plain asyncio)
RAY_FREE_MODULES = frozenset({f"actors.stream_{m}" for m in ("frames", "auth", "server", "client", "faults",
                                                             "loop")})
SKIP_MARK = re.compile(r"<!--\s*not executed:\s*(.*?)\s*-->")
PROCESS_TIMEOUT_S = 240


@dataclass(frozen=True)
class Example:
    """One Python block of a page: where it is, its code, and how it must run."""

    page: Path
    name: str                  # "page:line", the line of the opening fence (1-based)
    code: str
    skip_reason: str | None    # from a ``<!-- not executed: ... -->`` line just above, else None

    def modules(self) -> set[str]:
        """The modules the block imports, by their full names."""
        found = set()
        for node in ast.walk(ast.parse(self.code, self.name)):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
        return found

    def imports(self) -> set[str]:
        """The top-level packages the block imports."""
        return {m.split(".")[0] for m in self.modules()}

    @property
    def uses_ray(self) -> bool:
        return any(m.split(".")[0] in RAY_PACKAGES for m in self.modules() - RAY_FREE_MODULES)

    @property
    def owns_ray(self) -> bool:
        """Starts (and shuts down) a Ray runtime of its own."""
        return "ray.init(" in self.code


def examples(page: Path, root: Path = ROOT) -> list[Example]:
    """The ``python`` blocks of a page, in order (named relative to ``root``). An unclosed fence is an
    error, not silence."""
    lines = page.read_text().splitlines()
    where = str(page.relative_to(root))
    found: list[Example] = []
    i = 0
    while i < len(lines):
        fence = re.match(r"\s*(`{3,})(.*)$", lines[i])
        if not fence:
            i += 1
            continue
        ticks, info = fence.group(1), fence.group(2).strip()
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == ticks), None)
        if end is None:
            raise AssertionError(f"{where}:{i + 1}: code fence never closed")
        if info.split(" ")[0] == "python":
            above = lines[i - 1] if i > 0 else ""
            mark = SKIP_MARK.search(above)
            if mark is not None and not mark.group(1):
                raise AssertionError(f"{where}:{i}: 'not executed' needs a reason")
            found.append(Example(page, f"{where}:{i + 1}", "\n".join(lines[i + 1:end]) + "\n",
                                 mark.group(1) if mark else None))
        i = end + 1
    return found


ALL = [ex for page in PAGES for ex in examples(page)]


def _param(ex: Example) -> object:
    marks = [pytest.mark.ray] if ex.uses_ray else []
    if ex.skip_reason is not None:
        marks.append(pytest.mark.skip(reason=f"not executed: {ex.skip_reason}"))
    return pytest.param(ex, id=ex.name, marks=marks)


def test_the_examples_are_found() -> None:
    """Guards the collector: every page that shows a ``python`` fence has that many examples."""
    for page in PAGES:
        shown = len(re.findall(r"^\s*```python\b", page.read_text(), re.M))
        assert len(examples(page)) == shown, page
    pages = {ex.page.name for ex in ALL}
    assert {"README.md", "raft.md", "kvraft.md", "shardctrler.md", "sharded-kv.md", "checker.md",
            "simulator.md", "demo.md"} <= pages, pages


def test_skipped_examples_need_a_reason(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text("a\n<!-- not executed: needs a GPU -->\n```python\nx = 1\n```\n\n```python\ny = 2\n```\n"
                    "```bash\nls\n```\n")
    found = examples(page, tmp_path)
    assert [(e.name, e.skip_reason, e.code) for e in found] == [
        ("p.md:3", "needs a GPU", "x = 1\n"), ("p.md:7", None, "y = 2\n")]
    page.write_text("<!-- not executed: -->\n```python\nx = 1\n```\n")
    with pytest.raises(AssertionError, match="needs a reason"):
        examples(page, tmp_path)
    page.write_text("```python\nx = 1\n")
    with pytest.raises(AssertionError, match="never closed"):
        examples(page, tmp_path)


def _run_in_fresh_process(ex: Example, cwd: Path) -> None:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=path)
    proc = subprocess.run([sys.executable, "-c", ex.code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=PROCESS_TIMEOUT_S)
    assert proc.returncode == 0, (f"{ex.name} failed (exit {proc.returncode}):\n"
                                  f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}")


@pytest.mark.parametrize("ex", [_param(ex) for ex in ALL if not ex.uses_ray or ex.owns_ray])
def test_example_runs_in_a_fresh_process(ex: Example, tmp_path: Path) -> None:
    _run_in_fresh_process(ex, tmp_path)


@pytest.mark.timeout(PROCESS_TIMEOUT_S)
@pytest.mark.parametrize("ex", [_param(ex) for ex in ALL if ex.uses_ray and not ex.owns_ray])
def test_ray_example_runs_on_the_shared_runtime(ex: Example, ray_session: None, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    exec(compile(ex.code, ex.name, "exec"), {"__name__": "__docs_example__"})
