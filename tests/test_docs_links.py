"""Every relative link and anchor in README.md and docs/*.md resolves (no Ray).

A link ``[text](path#anchor)`` must name a file or directory that exists, relative to the page it is
on, and its anchor must be the slug of a heading of the target page (GitHub's rule: lower case, drop
everything but letters, digits, spaces, hyphens and underscores, spaces become hyphens, a repeated slug
gets ``-1``, ``-2``, ...). Links to other sites are not fetched. Code blocks and inline code are not
Markdown links and are skipped."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
_INLINE_CODE = re.compile(r"(`+).*?\1")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """The page's lines outside fenced code blocks, with their 1-based numbers."""
    out, fence = [], False
    for n, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fence = not fence
            continue
        if not fence:
            out.append((n, line))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor GitHub generates for the headings of a Markdown page (duplicates numbered)."""
    seen: dict[str, int] = {}
    result = set()
    for _, line in prose_lines(path.read_text()):
        m = re.match(r"#{1,6} (.+)", line)
        if not m:
            continue
        base = slug(m.group(1))
        k = seen.get(base, 0)
        seen[base] = k + 1
        result.add(base if k == 0 else f"{base}-{k}")
    return result


def links(path: Path) -> list[tuple[int, str]]:
    """The page's link targets outside code, with their line numbers."""
    found = []
    for n, line in prose_lines(path.read_text()):
        for m in _LINK.finditer(_INLINE_CODE.sub("", line)):
            found.append((n, m.group(1)))
    return found


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """One message per link of ``page`` that does not resolve (paths shown relative to ``root``)."""
    problems = []
    for n, target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):      # https:, mailto: ...: not fetched
            continue
        where = f"{page.relative_to(root)}:{n}: link {target!r}"
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.exists():
            problems.append(f"{where}: {dest.relative_to(root) if dest.is_relative_to(root) else dest} "
                            "does not exist")
            continue
        if anchor:
            if dest.suffix != ".md":
                problems.append(f"{where}: an anchor into a file that is not Markdown")
            elif anchor not in anchors(dest):
                problems.append(f"{where}: no heading of {dest.relative_to(root)} has the anchor #{anchor} "
                                f"(it has: {', '.join(sorted(anchors(dest)))})")
    return problems


def test_slug_follows_github() -> None:
    assert slug("The Raft core (`raft/`)") == "the-raft-core-raft"
    assert slug("Measured (2-core development machine, Ray 2.60)") == \
        "measured-2-core-development-machine-ray-260"
    assert slug("Planted faults: each suite proven against the bugs it exists for") == \
        "planted-faults-each-suite-proven-against-the-bugs-it-exists-for"
    assert slug("Bounds we changed, and why") == "bounds-we-changed-and-why"


def test_checker_finds_broken_links(tmp_path: Path) -> None:
    page = tmp_path / "a.md"
    (tmp_path / "b.md").write_text("# Title\n\n## Part two\n\n## Part two\n")
    page.write_text("# A\n\n[ok](b.md#part-two-1) [gone](c.md) [bad anchor](b.md#nope) [self](#a)\n"
                    "`[code](x.md)`\n\n```\n[fenced](y.md)\n```\n[web](https://example.com/x)\n")
    problems = broken_links(page, tmp_path)
    assert len(problems) == 2, problems
    assert "c.md does not exist" in problems[0]
    assert "#nope" in problems[1] and "part-two-1" in problems[1]


def test_there_are_pages_to_check() -> None:
    names = {p.name for p in PAGES}
    assert {"README.md", "raft.md", "kvraft.md", "testing.md"} <= names, names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    problems = broken_links(page)
    assert not problems, "\n".join(problems)
