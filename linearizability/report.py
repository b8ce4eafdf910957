"""A self-contained HTML report of a check (inline CSS and JS, no network).

For each partition that is not linearizable (or whose check ran out of its time or memory budget,
with the reason) the page shows:

* one lane per client, each operation a bar from its call to its return (unknown outcomes are
  hatched and run to the end of the history); the axis is event order by default (every
  distinct call or return time gets the same width, which is all linearizability depends on),
  or real time;
* the longest linearizable prefix the search found, as green bars numbered in linearization
  order, and as a table with the model state after each step;
* the operation where every attempt failed, in red, with the model state at that point and what
  the model says about each operation that was still open there.

Hovering over a bar shows its details; the zoom slider widens the timeline.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

from .checker import CheckResult, PartitionResult
from .history import Operation
from .models import Model
from .search import Verdict

__all__ = ["render_html", "write_html"]

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:2em}
.verdict-bad{color:#b00020}.verdict-ok{color:#1b7f3b}.verdict-unknown{color:#a66a00}
.box{background:#f6f6f8;border:1px solid #ddd;border-radius:6px;padding:.6em 1em;margin:.6em 0}
code,.mono{font-family:ui-monospace,monospace}
.scroll{overflow-x:auto;border:1px solid #ccc;border-radius:4px;margin:.5em 0}
.timeline{position:relative;min-width:600px}
.lane{display:flex;border-bottom:1px solid #eee}
.lane-label{position:sticky;left:0;z-index:4;background:#fff;flex:0 0 7em;font-size:12px;
 padding:2px 4px;border-right:1px solid #ccc;box-sizing:border-box}
.track{position:relative;flex:1}
.bar{position:absolute;height:18px;border-radius:3px;font-size:11px;line-height:18px;
 white-space:nowrap;overflow:hidden;padding:0 3px;box-sizing:border-box;cursor:default;
 border:1px solid rgba(0,0,0,.25)}
.bar.prefix{background:#8fd19e}.bar.failed{background:#ff6b6b;font-weight:bold;z-index:1}
.bar.other{background:#d5d8dc}.bar.unknown{background-image:repeating-linear-gradient(
 45deg,transparent 0 4px,rgba(0,0,0,.12) 4px 8px)}
.bar:hover{outline:2px solid #333;z-index:3}
#details{position:fixed;right:1em;bottom:1em;max-width:32em;background:#fffbe6;
 border:1px solid #e0c97f;border-radius:6px;padding:.5em .8em;display:none;z-index:10}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:2px 6px;
 text-align:left;vertical-align:top}th{background:#f0f0f0}
.ok{color:#1b7f3b}.no{color:#b00020}
"""

_JS = """
const data = JSON.parse(document.getElementById('ops').textContent);
const box = document.getElementById('details');
document.querySelectorAll('.bar').forEach(function (bar) {
  bar.addEventListener('mouseenter', function () {
    const d = data[bar.dataset.p][bar.dataset.i];
    box.innerHTML = '';
    d.forEach(function (line) { const p = document.createElement('div');
      p.textContent = line; box.appendChild(p); });
    box.style.display = 'block';
  });
  bar.addEventListener('mouseleave', function () { box.style.display = 'none'; });
});
document.querySelectorAll('select.axis').forEach(function (a) {
  a.addEventListener('change', function () {
    document.getElementById(a.dataset.t).querySelectorAll('.bar').forEach(function (bar) {
      const g = bar.dataset[a.value].split(',');
      bar.style.left = g[0] + '%'; bar.style.width = g[1] + '%';
    });
  });
});
document.querySelectorAll('input.zoom').forEach(function (z) {
  z.addEventListener('input', function () {
    document.getElementById(z.dataset.t).style.width = (z.value * 100) + '%';
  });
});
"""

_LANE_ROW = 22


def _fmt_time(t: float | None) -> str:
    if t is None or math.isinf(t):
        return "end of history"
    return f"{t:g}"


def _lanes(ops: Sequence[Operation], end: float) -> dict[Hashable, list[tuple[int, int]]]:
    """Assign each operation to (client lane, sub-row) so bars in a sub-row never overlap."""
    lanes: dict[Hashable, list[float]] = {}
    placed: dict[Hashable, list[tuple[int, int]]] = {}
    for i in sorted(range(len(ops)), key=lambda i: ops[i].call):
        op = ops[i]
        rows = lanes.setdefault(op.client, [])
        stop = end if op.unknown or op.ret is None else op.ret
        for row, free_from in enumerate(rows):
            if op.call >= free_from:
                rows[row] = stop
                break
        else:
            row = len(rows)
            rows.append(stop)
        placed.setdefault(op.client, []).append((i, row))
    return placed


def _client_order(client: Hashable) -> tuple[int, float, str]:
    """Numbers in numeric order first, then everything else by its repr."""
    if isinstance(client, int | float) and not isinstance(client, bool):
        return (0, float(client), "")
    return (1, 0.0, repr(client))


def _replay(model: Model, part: PartitionResult) -> list[Any]:
    """Public states after each step of ``part.order`` (replayed with ``model.step``)."""
    states = []
    state = model.init()
    for i in part.order:
        op = part.operations[i]
        _, state = model.step(state, op.input, op.output)
        states.append(state)
    return states


def _partition_html(model: Model, part: PartitionResult, number: int) -> tuple[str, list[Any]]:
    ops = part.operations
    esc = html.escape
    describe = model.describe_operation
    if not ops:
        return "<p>(no operations)</p>", []
    prefix_pos = {op: k for k, op in enumerate(part.order)}
    finite = [t for op in ops for t in (op.call, op.ret) if t is not None and not math.isinf(t)]
    t0, t1 = min(finite), max(finite)
    span = (t1 - t0) or 1.0
    end = t1 + span * 0.03

    times = sorted(set(finite))
    rank = {t: k for k, t in enumerate(times)}
    slot = 100.0 / (len(times) + 1)

    def real(op: Operation) -> tuple[float, float]:
        """Bar geometry (left %, width %) on a real-time axis."""
        stop = end if op.unknown or op.ret is None else op.ret
        left = 100.0 * (op.call - t0) / (end - t0)
        return left, max(100.0 * (stop - t0) / (end - t0) - left, 0.15)

    def ordinal(op: Operation) -> tuple[float, float]:
        """Bar geometry on an axis of event order: every distinct time gets one slot."""
        left = rank[op.call] * slot
        stop = 100.0 if op.unknown or op.ret is None else (rank[op.ret] + 0.85) * slot
        return left, stop - left

    out: list[str] = []
    key = "" if part.key is None else f" — key {esc(repr(part.key))}"
    cls = {Verdict.NOT_LINEARIZABLE: "verdict-bad", Verdict.UNKNOWN: "verdict-unknown"}.get(
        part.verdict, "verdict-ok"
    )
    out.append(f'<h2>Partition {number}{key}: <span class="{cls}">{esc(str(part.verdict))}</span></h2>')
    out.append('<div class="box">')
    out.append(
        f"<div>{len(ops)} operations; longest linearizable prefix found: "
        f"<b>{len(part.order)}</b> operations; {part.explored} configurations explored "
        f"in {part.elapsed:.3f} s.</div>"
    )
    if part.verdict is Verdict.UNKNOWN and part.reason:
        out.append(f"<div>No verdict: {esc(part.reason)}.</div>")
    if part.failed is not None:
        f = ops[part.failed]
        out.append(
            f'<div>Every attempt failed at: <b class="no mono">{esc(describe(f.input, f.output))}'
            f"</b> by client <b>{esc(str(f.client))}</b> (called at {_fmt_time(f.call)}, "
            f"returned at {_fmt_time(f.end if f.unknown else f.ret)}).</div>"
            f'<div>Model state at that point: <b class="mono">'
            f"{esc(model.describe_state(part.state))}</b></div>"
        )
        why = model.explain_failure(ops, part.failed)
        if why:
            out.append(f"<div>Why: {esc(why)}.</div>")
    out.append("</div>")

    # The timeline.
    placed = _lanes(ops, end)
    tid = f"timeline{number}"
    out.append(
        f'<div>Zoom <input class="zoom" type="range" min="1" max="20" value="1" '
        f'data-t="{tid}"> Axis <select class="axis" data-t="{tid}"><option value="o">event '
        'order</option><option value="r">real time</option></select> · green: linearized '
        "prefix (numbered in order); red: the "
        "operation that could not be linearized; grey: the rest; hatched: outcome "
        "unknown (may take effect until the end)</div>"
    )
    out.append(f'<div class="scroll"><div class="timeline" id="{tid}" style="width:100%">')
    details: list[Any] = []
    for client, items in sorted(placed.items(), key=lambda kv: _client_order(kv[0])):
        rows = 1 + max(row for _, row in items)
        out.append(
            f'<div class="lane" style="height:{rows * _LANE_ROW + 4}px">'
            f'<span class="lane-label">client {esc(str(client))}</span>'
            '<div class="track">'
        )
        for i, row in items:
            op = ops[i]
            kind = "failed" if i == part.failed else ("prefix" if i in prefix_pos else "other")
            if op.unknown:
                kind += " unknown"
            text = describe(op.input, op.output)
            label = (f"{prefix_pos[i] + 1}. " if i in prefix_pos else "") + text
            left, width = ordinal(op)
            rleft, rwidth = real(op)
            info = [
                text,
                f"client {client}",
                f"call {_fmt_time(op.call)}, return "
                f"{_fmt_time(None if op.unknown else op.ret)}" + (" (outcome unknown)" if op.unknown else ""),
            ]
            if i in prefix_pos:
                info.append(f"linearized as number {prefix_pos[i] + 1}")
            if i == part.failed:
                info.append("could not be linearized after the prefix")
            details.append(info)
            out.append(
                f'<div class="bar {kind}" data-p="{number}" data-i="{len(details) - 1}" '
                f'data-o="{left:.4f},{width:.4f}" data-r="{rleft:.4f},{rwidth:.4f}" '
                f'title="{esc(text)}" style="left:{left:.4f}%;width:{width:.4f}%;'
                f'top:{row * _LANE_ROW + 2}px">'
                f"{esc(label)}</div>"
            )
        out.append("</div></div>")
    out.append("</div></div>")

    # What each open operation does in the failing state.
    if part.failed is not None:
        out.append(
            "<h3>Open operations at that point</h3><table><tr><th>operation</th>"
            "<th>client</th><th>what the model says in that state</th></tr>"
        )
        done = set(part.order)
        fail_end = ops[part.failed].end
        for i, op in enumerate(ops):
            if i in done or op.call > fail_end:
                continue
            ok, new = model.step(part.state, op.input, op.output)
            verdict = (
                f'<span class="ok">accepted, state becomes {esc(model.describe_state(new))}</span>'
                if ok
                else '<span class="no">rejected</span>'
            )
            mark = " (could not be linearized)" if i == part.failed else ""
            out.append(
                f'<tr><td class="mono">{esc(describe(op.input, op.output))}{mark}</td>'
                f"<td>{esc(str(op.client))}</td><td>{verdict}</td></tr>"
            )
        out.append("</table><p>Accepted operations led to dead ends later; the search tried every order.</p>")

    # The prefix, step by step.
    out.append(
        "<details><summary>Linearized prefix, step by step</summary><table><tr><th>#</th>"
        "<th>operation</th><th>client</th><th>state after</th></tr>"
    )
    for k, (i, state) in enumerate(zip(part.order, _replay(model, part), strict=True), 1):
        op = ops[i]
        out.append(
            f'<tr><td>{k}</td><td class="mono">{esc(describe(op.input, op.output))}</td>'
            f'<td>{esc(str(op.client))}</td><td class="mono">'
            f"{esc(model.describe_state(state))}</td></tr>"
        )
    out.append("</table></details>")
    return "\n".join(out), details


def render_html(result: CheckResult, title: str = "Linearizability check") -> str:
    """The report as one HTML string.  Shows every partition that is not linearizable or
    unknown (partitions skipped once the verdict was known are only listed); for a
    linearizable history it shows the linearization found."""
    esc = html.escape
    model = result.model
    shown = [p for p in result.partitions if p.verdict is not Verdict.LINEARIZABLE and not p.skipped]
    if not shown:
        shown = list(result.partitions)
    skipped = result.skipped
    cls = {Verdict.NOT_LINEARIZABLE: "verdict-bad", Verdict.UNKNOWN: "verdict-unknown"}.get(
        result.verdict, "verdict-ok"
    )
    body = [
        f'<h1>{esc(title)}: <span class="{cls}">{esc(str(result.verdict))}</span></h1>',
        f'<div class="box">Model <b>{esc(model.name)}</b>; '
        f"{sum(len(p.operations) for p in result.partitions)} operations in "
        f"{len(result.partitions)} partition(s); checked in {result.elapsed:.3f} s. "
        f"Showing {len(shown)} partition(s).</div>",
    ]
    if result.reason:
        body.append(f'<div class="box">No verdict: {esc(result.reason)}.</div>')
    if skipped:
        keys = ", ".join(esc(repr(p.key)) for p in skipped[:20]) + (", ..." if len(skipped) > 20 else "")
        body.append(
            f'<div class="box">The check stopped at the first partition found not linearizable; '
            f"{len(skipped)} other partition(s) were not checked to the end ({keys}). "
            "Check with <code>all_partitions=True</code> (<code>--all-partitions</code>) to "
            "see every failing one.</div>"
        )
    data: dict[int, list[Any]] = {}
    for number, part in enumerate(shown, 1):
        section, details = _partition_html(model, part, number)
        body.append(section)
        data[number] = details
    blob = json.dumps(data).replace("</", "<\\/")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(body)
        + '\n<div id="details"></div>'
        + f'<script type="application/json" id="ops">{blob}</script>'
        + f"<script>{_JS}</script></body></html>\n"
    )


def write_html(result: CheckResult, path: str | Path, title: str | None = None) -> Path:
    """Write :func:`render_html` to ``path`` (parent folders are created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(result, title or path.stem), encoding="utf-8")
    return path
