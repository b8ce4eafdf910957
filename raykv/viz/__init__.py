"""``raykv viz``: one self-contained HTML page from the Raft decision logs of a real run.

:func:`write_viz` reads the logs (files written with ``RAYKV_LOG`` / ``RAYKV_LOG_FILE``, or directories
of ``*.log`` files), builds the timeline (:mod:`raykv.viz.model`, pure) and writes the page: the
template ``page.html`` (package data) with the timeline inlined as JSON; no network access, no CDN.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path

from raykv.viz.model import Timeline, build

__all__ = ["Timeline", "build", "log_files", "render_html", "write_viz"]


def log_files(paths: Iterable[str | Path]) -> list[Path]:
    """The files named (a directory stands for its ``*.log`` files, sorted); raises FileNotFoundError
    naming a path that does not exist, or a directory without ``*.log`` files."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.glob("*.log") if f.is_file())
            if not found:
                raise FileNotFoundError(f"{p} is a directory without *.log files; name the decision log "
                                        "files (written with RAYKV_LOG and RAYKV_LOG_FILE)")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"no such log file or directory: {p}")
    return out


def render_html(timeline: Timeline, title: str = "raykv viz") -> str:
    """The page for ``timeline``: the template with the title and the data filled in."""
    template = resources.files("raykv.viz").joinpath("page.html").read_text(encoding="utf-8")
    data = json.dumps(timeline.to_json(), separators=(",", ":"))
    # inside <script> a "</" would end the element: JSON lets us escape the slash
    data = data.replace("</", "<\\/")
    safe_title = title.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return template.replace("__VIZ_TITLE__", safe_title).replace("__VIZ_DATA__", data)


def write_viz(log_paths: Sequence[str | Path], out: str | Path, title: str | None = None) -> Path:
    """Write the page of the run logged in ``log_paths`` (files or directories) to ``out``; returns
    its path. Raises FileNotFoundError for a missing log, ValueError when no log holds a decision."""
    files = log_files(log_paths)
    sources = []
    for f in files:
        name = f.name[:-4] if f.name.endswith(".log") else f.name
        sources.append((name, f.read_text(encoding="utf-8", errors="replace").splitlines()))
    timeline = build(sources)
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    shown = ", ".join(f.name for f in files[:4]) + (f" and {len(files) - 4} more" if len(files) > 4 else "")
    out_path.write_text(render_html(timeline, title or f"raykv viz: {shown}"), encoding="utf-8")
    return out_path
