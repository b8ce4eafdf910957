"""The picture of a demo run: the Raft decision log of every process, and its ``raykv viz`` page.

Both demos (:func:`raykv.run_demo`, :func:`raykv.run_system_demo`) record their run this way when they
start Ray themselves. The log is switched on through the environment (``RAYKV_LOG``, ``RAYKV_LOG_FILE``:
see :mod:`raft.trace`), which Ray's processes inherit when they start: so :meth:`DemoPicture.inherit`
wraps the start of the runtime (the raylets started then spawn every worker later on), and the
driver's environment is restored straight after. A runtime that was already running (in this process,
or a cluster at an address) has workers that never saw the variables: then there is no picture and
:attr:`DemoPicture.why_not` says so.

Invariant: the driver's ``os.environ`` is the same after :meth:`DemoPicture.inherit` as before it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: the topics recorded when the user asked for none: all of them (the page draws messages as arrows
#: from ``msg``, terms and roles from ``elect``/``term``, the logs from ``append``/``commit``/``snap``)
DEFAULT_TOPICS = "all"
#: how a page is missing when Ray was not started by the demo
NOT_STARTED_HERE = ("Ray was already running, so its workers do not have RAYKV_LOG; for a picture let the "
                    "demo start Ray, or start the cluster with RAYKV_LOG=all RAYKV_LOG_FILE=PATH and run "
                    "'raykv viz PATH'")


class DemoPicture:
    """Where a demo run's decision log and page go: ``out/decisions.log`` (or the user's
    ``RAYKV_LOG_FILE``) and ``out/viz.html``. The topics are the user's ``RAYKV_LOG`` when set (``off``
    switches the picture off), else :data:`DEFAULT_TOPICS`."""

    def __init__(self, out: Path) -> None:
        self.out = out
        user = os.environ.get("RAYKV_LOG")
        self.topics = DEFAULT_TOPICS if user is None or not user.strip() else user
        self.log: Path | None = None
        self.page: Path | None = None
        self.why_not: str | None = None

    @contextmanager
    def inherit(self) -> Iterator[None]:
        """Around the start of the processes that should log: the variables are set in this process's
        environment while inside, and restored on the way out."""
        from raft import trace

        if self.why_not is not None:  # not_recorded(): nothing to switch on
            yield
            return
        if not trace._parse(self.topics):
            self.why_not = f"RAYKV_LOG={self.topics} switches the decision log off"
            yield
            return
        self.out.mkdir(parents=True, exist_ok=True)
        user_file = os.environ.get(trace.FILE_ENV)
        self.log = Path(user_file) if user_file else self.out / "decisions.log"
        saved = {k: os.environ.get(k) for k in ("RAYKV_LOG", trace.FILE_ENV)}
        os.environ["RAYKV_LOG"] = self.topics
        os.environ[trace.FILE_ENV] = str(self.log.resolve())
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def not_recorded(self, why: str = NOT_STARTED_HERE) -> None:
        """This run has no picture, for this reason."""
        self.log, self.why_not = None, why

    def draw(self, title: str) -> Path | None:
        """Write the page from the log (after the run; Ray's processes have flushed their lines when
        they stopped); returns its path, or None with :attr:`why_not` set."""
        if self.log is None:
            self.why_not = self.why_not or NOT_STARTED_HERE
            return None
        from raykv.viz import write_viz

        try:
            self.page = write_viz([self.log], self.out / "viz.html", title=title)
        except (OSError, ValueError) as exc:
            self.why_not = f"no page drawn from {self.log}: {exc}"
            return None
        return self.page

    def describe(self) -> str:
        """One line for the account: where the page is, or why there is none."""
        if self.page is not None:
            return f"Picture of the run: {self.page} (open it in a browser; decision log {self.log})"
        return f"No picture of the run: {self.why_not or 'not drawn'}"
