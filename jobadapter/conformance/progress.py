"""What ``jobadapter conformance`` shows while it runs: a line per scenario as it ends, and no
silence longer than a few seconds.

Each line gives the count so far, the result, the seconds it took, the backend and the
scenario. A scenario still running after `HEARTBEAT` seconds gets a "still running" line
every `HEARTBEAT` seconds (the bulk and reliability scenarios wait for real workers). On a
terminal, a bar with the total stays under the lines.

Everything goes through pytest's terminal writer. The "still running" lines are written
while a scenario runs: they reach the terminal only without output capture (``-s``, as
``jobadapter conformance`` runs the suite).
"""

from __future__ import annotations

import sys
import threading
import time

import pytest

from jobadapter.console import bar

HEARTBEAT = 5.0
"""Seconds of silence after which a running scenario is named again."""


class ProgressLines:
    """A pytest plugin (registered by the conformance plugin for ``--jobadapter-progress``)."""

    def __init__(self, config: pytest.Config) -> None:
        self._config = config
        self._terminal = sys.__stdout__ is not None and sys.__stdout__.isatty()
        self._lock = threading.Lock()
        self._running: tuple[str, float] | None = None
        self._outcomes: dict[str, str] = {}
        self._done = 0
        self._total = 0
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="jobadapter-progress", daemon=True)

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self._total = len(session.items)
        self._writer = self._config.get_terminal_writer()  # there once the terminal reporter is
        self._ticker.start()

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        with self._lock:
            self._running = (nodeid, time.monotonic())

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" or report.failed or report.skipped:
            unsupported = report.skipped and dict(report.user_properties).get("jobadapter_unsupported")
            outcome: str = "unsupported" if unsupported else report.outcome
            if report.failed and report.when != "call":
                outcome = "error"
            self._outcomes.setdefault(report.nodeid, outcome)

    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        with self._lock:
            started = self._running[1] if self._running else time.monotonic()
            self._running = None
            self._done += 1
            outcome = self._outcomes.pop(nodeid, "passed")
            elapsed = time.monotonic() - started
            self._write(f"{self._done:>4}/{self._total}  {outcome:<11} {elapsed:6.1f} s  {_readable(nodeid)}")

    def pytest_sessionfinish(self) -> None:
        self._stop.set()
        if self._terminal:
            with self._lock:
                self._writer.write("\r\033[K")
                self._writer.flush()

    def _tick(self) -> None:
        while not self._stop.wait(HEARTBEAT):
            with self._lock:
                if self._running is None:
                    continue
                nodeid, started = self._running
                elapsed = time.monotonic() - started
                if elapsed >= HEARTBEAT:
                    self._write(f"{'':>9}  … still running ({elapsed:.0f} s)  {_readable(nodeid)}")

    def _write(self, line: str) -> None:
        """A line above the bar (lock held)."""
        if self._terminal:
            self._writer.write("\r\033[K")
        self._writer.line(line)
        if self._terminal:
            self._writer.write(bar("conformance", self._done, self._total))
        self._writer.flush()


def _readable(nodeid: str) -> str:
    """``test_name[url]`` of a node id, as ``url  test_name``."""
    name = nodeid.rpartition("::")[2]
    test, _, parameter = name.partition("[")
    return f"{parameter.rstrip(']'):<40} {test}" if parameter else test
