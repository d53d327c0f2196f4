"""django.tasks through jobadapter on real workers started by ``manage.py jobadapter_worker``:
results READY → RUNNING → SUCCESSFUL or FAILED, errors, context attempts with retry rules,
defer, priority and the signals the worker sends, on RQ and on Celery."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from jobadapter import config, journal
from jobadapter.django.compat import Task, TaskResult, TaskResultStatus
from jobadapter.faults.brokers import PrivateRedis
from tests import django_support
from tests.django_site.tasks import SIGNAL_LOG, add, broken, flaky, gated

ROOT = Path(__file__).resolve().parent.parent
READY, RUNNING = TaskResultStatus.READY, TaskResultStatus.RUNNING
SUCCESSFUL, FAILED = TaskResultStatus.SUCCESSFUL, TaskResultStatus.FAILED


class Site:
    """The test's side of a backend: where it enqueues, and the worker it started."""

    def __init__(self, url: str, folder: Path) -> None:
        self.url = url
        self.folder = folder
        self.signals = folder / "signals.jsonl"
        self.journal = f"sqlite:///{folder / 'journal.db'}"
        self.worker: subprocess.Popen[bytes] | None = None
        self.log = folder / "worker.log"

    def start_worker(self) -> None:
        environment = {
            **os.environ,
            "JOBADAPTER_URL": self.url,
            "JOBADAPTER_JOURNAL": self.journal,
            SIGNAL_LOG: str(self.signals),
            **django_support.ENVIRONMENT,
        }
        with self.log.open("wb") as log:
            self.worker = subprocess.Popen(
                [sys.executable, "-m", "django", "jobadapter_worker", "--concurrency", "1"],
                cwd=ROOT,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def stop_worker(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            self.worker.send_signal(signal.SIGTERM)
            try:
                self.worker.wait(20)
            except subprocess.TimeoutExpired:
                self.worker.kill()
                self.worker.wait()

    def sent(self, result_id: str) -> list[tuple[str, str]]:
        """The signals the worker sent for ``result_id``: (signal, status)."""
        if not self.signals.exists():
            return []
        lines = [json.loads(line) for line in self.signals.read_text().splitlines()]
        return [(line["signal"], line["status"]) for line in lines if line["id"] == result_id]

    def until(self, task: Task[Any, Any], result_id: str, status: TaskResultStatus) -> TaskResult[Any]:
        """``task``'s result once it has ``status`` (and a start time, when running; at most 20 s)."""
        seen: list[TaskResult[Any]] = []

        def reached() -> TaskResult[Any] | None:
            seen[:] = [task.get_result(result_id)]
            found = seen[0]
            return found if found.status == status and (status != RUNNING or found.started_at) else None

        return _until(reached, self, seen)


def _until(found: Callable[[], Any], site: Site, what: object) -> Any:
    deadline = time.monotonic() + 20
    while True:
        value = found()
        if value:
            return value
        assert site.worker is None or site.worker.poll() is None, site.log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"no {what}; the worker said:\n{site.log.read_text()[-3000:]}"
        time.sleep(0.05)


@pytest.fixture(params=["rq", "celery"])
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Site]:
    with PrivateRedis(persistent=False) as redis:
        url = f"{request.param}+{redis.url}"
        chosen = Site(url, tmp_path)
        config.configure(url=url)
        journal.configure(chosen.journal)
        try:
            yield chosen
        finally:
            chosen.stop_worker()
            journal.close()
            config.reset()


def test_results_go_ready_running_successful_and_failed_with_signals(site: Site) -> None:
    gate, log = site.folder / "gate", site.folder / "ran"
    held = gated.enqueue(str(gate), str(log), "held")
    assert gated.get_result(held.id).status == READY
    site.start_worker()
    running = site.until(gated, held.id, RUNNING)
    assert running.started_at is not None and running.attempts == 1
    gate.touch()
    done = site.until(gated, held.id, SUCCESSFUL)
    assert (
        done.return_value == "held"
        and done.finished_at is not None
        and done.args == [str(gate), str(log), "held"]
    )
    assert site.sent(held.id) == [("started", "RUNNING"), ("finished", "SUCCESSFUL")]

    failing = broken.enqueue()
    failed = site.until(broken, failing.id, FAILED)
    [error] = failed.errors
    assert error.exception_class_path == "builtins.ValueError" and "broken on purpose" in error.traceback
    assert site.sent(failing.id) == [("started", "RUNNING"), ("finished", "FAILED")]


def test_retry_rules_context_defer_and_priority_on_a_real_worker(site: Site) -> None:
    notes = site.folder / "notes"
    retried = flaky.enqueue(str(notes), 2)
    gate, log = site.folder / "gate", site.folder / "order"
    first = gated.enqueue(str(gate), str(log), "first")
    later = add.using(run_after=timezone.now() + timedelta(seconds=1)).enqueue(2, 3)
    site.start_worker()
    site.until(gated, first.id, RUNNING)  # it holds the only worker while the next two queue up
    gated.using(priority=-50).enqueue(str(gate), str(log), "low")
    gated.using(priority=50).enqueue(str(gate), str(log), "high")
    assert add.get_result(later.id).status == READY
    gate.touch()
    _until(lambda: log.exists() and len(log.read_text().split()) == 3, site, "three gated tasks")
    assert log.read_text().split() == ["first", "high", "low"]
    done = site.until(flaky, retried.id, SUCCESSFUL)
    assert done.return_value == 2 and notes.read_text().split() == ["1", "2"]
    assert site.sent(retried.id) == [
        ("started", "RUNNING"),
        ("finished", "FAILED"),
        ("started", "RUNNING"),
        ("finished", "SUCCESSFUL"),
    ]
    deferred = site.until(add, later.id, SUCCESSFUL)
    assert deferred.return_value == 5 and deferred.started_at is not None
    assert later.enqueued_at is not None
    assert deferred.started_at >= later.enqueued_at + timedelta(seconds=1)
