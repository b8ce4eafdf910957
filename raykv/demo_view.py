"""The live view of ``raykv demo``: a thin shell over :mod:`raykv.demo_table` and ``rich``.

On a terminal, :class:`LiveView` keeps one table (:func:`rich_table`) redrawn in place with
``rich.live.Live`` and prints each event above it; anywhere else (a pipe, a file, CI) it prints plain
lines: each event as it happens, and the table in one line (:func:`raykv.demo_table.format_line`)
every ``plain_every`` seconds. Its two methods are the callbacks of
:func:`raykv.system_demo.run_system_demo` (``on_event``, ``on_snapshot``); both may be called from any
thread.
"""

from __future__ import annotations

import sys
import threading
from types import TracebackType
from typing import IO, Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from raykv.demo import DemoEvent
from raykv.demo_table import HEAD, Snapshot, cells, format_line, title

__all__ = ["LiveView", "rich_table"]


def rich_table(s: Snapshot) -> Table:
    """The snapshot as a ``rich`` table: the columns of :data:`raykv.demo_table.HEAD` and a note."""
    table = Table(title=title(s), title_justify="left", expand=False)
    for i, name in enumerate((*HEAD, "note")):
        table.add_column(name, justify="right" if 2 <= i <= 6 and i != 4 else "left",
                         style="bold" if i == 0 else None, no_wrap=i < len(HEAD))
    for row in s.rows:
        style = "dim" if row.note.startswith("left") else ("yellow" if row.note or row.moving else None)
        leader = cells(row)[1]
        table.add_row(*cells(row)[:1], leader if row.leader else "[red]none[/red]", *cells(row)[2:],
                      row.note, style=style)
    return table


class LiveView:
    """The demo's display (see the module docstring). ``live``: force the terminal view on or off
    (default: on when ``file`` is a terminal)."""

    def __init__(self, file: IO[str] | None = None, live: bool | None = None,
                 plain_every: float = 5.0) -> None:
        self.file = file if file is not None else sys.stdout
        self.live_mode = self.file.isatty() if live is None else live
        self.console = Console(file=self.file, force_terminal=self.live_mode or None, highlight=False)
        self.plain_every = plain_every
        self._live: Live | None = None
        self._lock = threading.Lock()
        self._last_plain: float | None = None

    def __enter__(self) -> LiveView:
        if self.live_mode:
            self._live = Live(console=self.console, auto_refresh=False, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        with self._lock:
            live, self._live = self._live, None
        if live is not None:
            live.__exit__(exc_type, exc, tb)

    def event(self, ev: DemoEvent) -> None:
        with self._lock:
            if self._live is not None:
                self._live.console.print(ev.format(), markup=False)
            else:
                self._print(ev.format())

    def snapshot(self, s: Snapshot) -> None:
        with self._lock:
            if self._live is not None:
                self._live.update(rich_table(s), refresh=True)
            elif self._last_plain is None or s.elapsed - self._last_plain >= self.plain_every:
                self._last_plain = s.elapsed
                self._print(format_line(s))

    def _print(self, text: str) -> None:
        print(text, file=self.file, flush=True)

    def callbacks(self) -> dict[str, Any]:
        """``on_event`` and ``on_snapshot`` for :func:`~raykv.system_demo.run_system_demo`."""
        return {"on_event": self.event, "on_snapshot": self.snapshot}
