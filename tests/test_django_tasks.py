"""The django.tasks backend in one process: enqueue, priority, defer, validation, signals,
context, retry rules on a task, results from the journal, and the system checks."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import tests.django_support  # noqa: F401  (Django set up before anything imports django.tasks)
from jobadapter import config, journal
from jobadapter.django.backend import TaskBackend
from jobadapter.django.compat import (
    InvalidTask,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
    task_backends,
    task_enqueued,
    task_finished,
    task_started,
)
from jobadapter.django.tasks import TaskJob, job_priority
from jobadapter.testing import JobRecorder
from tests.django_site.tasks import add, broken, flaky, gated, greet


@pytest.fixture
def signals() -> Iterator[list[tuple[str, TaskResult[Any], Any]]]:
    """Every django.tasks signal sent during the test: (name, result, the error being handled),
    the result's status as it was when sent."""
    seen: list[tuple[str, TaskResult[Any], Any]] = []

    def receiver(name: str) -> Any:
        def receive(sender: type, task_result: TaskResult[Any], **kwargs: Any) -> None:
            sent = dataclasses.replace(task_result)
            object.__setattr__(sent, "_return_value", task_result._return_value)
            seen.append((name, sent, sys.exc_info()[1]))

        return receive

    receivers = {signal: receiver(name) for signal, name in _SIGNALS}
    for signal, receive in receivers.items():
        signal.connect(receive, weak=False)
    yield seen
    for signal, receive in receivers.items():
        signal.disconnect(receive)


_SIGNALS = ((task_enqueued, "enqueued"), (task_started, "started"), (task_finished, "finished"))


@pytest.fixture
def journaled(tmp_path: Path) -> Iterator[None]:
    journal.configure(f"sqlite:///{tmp_path / 'journal.db'}")
    yield
    journal.close()


def test_the_backend_is_the_configured_one_and_says_what_it_supports() -> None:
    backend = task_backends["default"]
    assert isinstance(backend, TaskBackend)
    assert backend.supports_defer and backend.supports_priority and backend.supports_async_task


def test_enqueue_is_a_job_of_the_functions_name_with_a_ready_result(jobs: JobRecorder, signals: Any) -> None:
    result = add.enqueue(2, 3)
    assert result.status == TaskResultStatus.READY and result.args == [2, 3] and result.worker_ids == []
    [job] = jobs.assert_enqueued(add.func.__jobadapter_job__, args=[2, 3], queue="default", priority=5)
    assert result.id == job.job_id and type(job).job_name == "tests.django_site.tasks.add"
    assert isinstance(job, TaskJob)
    assert [(name, each.id) for name, each, _ in signals] == [("enqueued", result.id)]


def test_queue_priority_and_run_after_reach_the_job(jobs: JobRecorder) -> None:
    greet.enqueue("Ada")
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    add.using(priority=-100, run_after=later).enqueue(1, 1)
    jobs.assert_enqueued(greet.func.__jobadapter_job__, args=["Ada"], queue="mail", priority=job_priority(50))
    jobs.assert_enqueued(add.func.__jobadapter_job__, args=[1, 1], priority=9, at=later)


def test_django_priorities_map_in_order_onto_ten_bands() -> None:
    assert [job_priority(p) for p in (100, 89, 88, 1, 0, -1, -88, -89, -100)] == [0, 0, 1, 4, 5, 5, 8, 9, 9]
    mapped = [job_priority(p) for p in range(100, -101, -1)]
    assert mapped == sorted(mapped) and set(mapped) == set(range(10))


def test_performing_sends_started_then_finished_with_the_return_value(
    jobs: JobRecorder, signals: Any
) -> None:
    result = add.enqueue(2, 3)
    jobs.perform_enqueued()
    assert [name for name, _, _ in signals] == ["enqueued", "started", "finished"]
    (_, started, _), (_, finished, error) = signals[1:]
    assert started.status == TaskResultStatus.RUNNING and started.id == result.id
    assert finished.status == TaskResultStatus.SUCCESSFUL and finished.return_value == 5
    assert finished.attempts == 1 and error is None


def test_a_failure_is_finished_inside_the_except_block_with_its_error(
    jobs: JobRecorder, signals: Any
) -> None:
    broken.enqueue()
    with pytest.raises(ValueError, match="broken on purpose"):
        jobs.perform_enqueued()
    name, finished, handling = signals[-1]
    assert name == "finished" and finished.status == TaskResultStatus.FAILED
    assert isinstance(handling, ValueError)  # sent while the error is being handled
    [error] = finished.errors
    assert error.exception_class_path == "builtins.ValueError" and error.exception_class is ValueError
    assert "broken on purpose" in error.traceback


def test_retry_on_above_task_retries_and_the_context_counts_attempts(
    tmp_path: Path, jobs: JobRecorder
) -> None:
    notes = tmp_path / "notes"
    flaky.enqueue(str(notes), 3)
    jobs.perform_enqueued()
    assert notes.read_text().split() == ["1", "2", "3"]
    jobs.assert_performed_jobs(3)


def test_validation_names_the_problem() -> None:
    with pytest.raises(InvalidTask, match="Queue 'other' is not valid"):
        add.using(queue_name="other")
    with pytest.raises(InvalidTask, match="priority must be a whole number"):
        add.using(priority=101)


def test_unknown_options_and_bad_urls_are_improperly_configured() -> None:
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match=r"unknown key.*URL"):
        TaskBackend("x", {"OPTIONS": {"URL": "rq+redis://"}})
    with pytest.raises(ImproperlyConfigured, match="not an adapter URL"):
        TaskBackend("x", {"OPTIONS": {"url": "redis"}})


def test_the_check_reports_a_missing_adapter_and_an_unreachable_broker() -> None:
    missing = list(TaskBackend("x", {"OPTIONS": {"url": "nosuch+redis://127.0.0.1:6379/0"}}).check())
    assert [m.id for m in missing] == ["jobadapter.E001"] and "nosuch" in missing[0].msg
    down = list(TaskBackend("y", {"OPTIONS": {"url": "rq+redis://127.0.0.1:1/0"}}).check())
    assert [m.id for m in down] == ["jobadapter.E002"] and "127.0.0.1:1" in down[0].msg
    assert list(TaskBackend("z", {"OPTIONS": {"url": "rq+redis://127.0.0.1:6379/0"}}).check()) == []


def test_results_come_from_the_journal(journaled: None, signals: Any) -> None:
    config.configure(url="inline://")
    backend = task_backends["default"]
    assert backend.supports_get_result
    done = add.enqueue(20, 22)
    found = add.get_result(done.id)
    assert found.status == TaskResultStatus.SUCCESSFUL and found.return_value == 42
    assert found.args == [20, 22] and found.attempts == 1 and found.finished_at is not None
    with pytest.raises(ValueError, match="broken on purpose"):
        broken.enqueue()
    failed = broken.get_result(signals[-1][1].id)  # the inline adapter ran it while enqueueing
    assert failed.status == TaskResultStatus.FAILED
    assert failed.errors[0].exception_class_path == "builtins.ValueError"
    with pytest.raises(TaskResultDoesNotExist):
        add.get_result("no-such-id")


def test_a_gated_task_is_ready_before_it_runs(jobs: JobRecorder, tmp_path: Path) -> None:
    result = gated.enqueue(str(tmp_path / "gate"), str(tmp_path / "log"), "one")
    assert result.status == TaskResultStatus.READY and result.kwargs == {}
