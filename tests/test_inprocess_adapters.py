from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest

from jobadapter import Job, config, retry_on
from jobadapter.adapters.async_ import AsyncAdapter
from jobadapter.adapters.base import AdapterURL

RUNS: list[Any] = []
LOCK = threading.Lock()


class Noted(Job):
    def perform(self, label: str) -> None:
        with LOCK:
            RUNS.append((label, time.monotonic()))


class Oops(Exception):
    pass


@retry_on(Oops, wait=0.2, attempts=3, jitter=0)
class RetriedTwice(Job):
    def perform(self, label: str) -> None:
        with LOCK:
            RUNS.append((f"{label}#{self.executions}", time.monotonic()))
        if self.executions < 3:
            raise Oops


class Chained(Job):
    def perform(self, depth: int) -> None:
        RUNS.append(("chain", depth))
        if depth:
            Chained.perform_later(depth - 1)
            RUNS.append(("after enqueue", depth))


class AsyncPerform(Job):
    async def perform(self, label: str) -> None:
        RUNS.append((label, 0))


class Exploding(Job):
    def perform(self) -> None:
        raise ValueError("kaboom")


def test_inline_runs_at_once_and_nested_jobs_after_the_current_one(caplog: pytest.LogCaptureFixture) -> None:
    RUNS.clear()
    config.configure(url="inline://")
    Chained.perform_later(2)
    assert RUNS == [("chain", 2), ("after enqueue", 2), ("chain", 1), ("after enqueue", 1), ("chain", 0)]


def test_inline_runs_delayed_jobs_and_retries_now_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    RUNS.clear()
    config.configure(url="inline://")
    with caplog.at_level(logging.INFO, logger="jobadapter"):
        Noted.set(wait=3600).perform_later("late")
        RetriedTwice.perform_later("r")
    assert [label for label, _ in RUNS] == ["late", "r#1", "r#2", "r#3"]
    assert "skipping its wait of 3600.0 s" in caplog.text


def test_inline_raises_an_unhandled_error_to_the_caller() -> None:
    config.configure(url="inline://")
    with pytest.raises(ValueError, match="kaboom"):
        Exploding.perform_later()


def test_inline_runs_async_perform() -> None:
    RUNS.clear()
    config.configure(url="inline://")
    AsyncPerform.perform_later("coro")
    assert RUNS == [("coro", 0)]


def _wait_for(condition: Any, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_async_runs_in_other_threads_and_honours_delays() -> None:
    RUNS.clear()
    adapter = config.configure(url="async://?workers=2")
    start = time.monotonic()
    Noted.set(wait=0.3).perform_later("delayed")
    Noted.perform_later("now")
    _wait_for(lambda: len(RUNS) == 2)
    runs = dict(RUNS)
    assert runs["now"] < runs["delayed"]
    assert runs["delayed"] - start >= 0.29
    assert adapter.failed() == []


def test_async_retries_with_the_declared_wait() -> None:
    RUNS.clear()
    config.configure(url="async://?workers=1")
    RetriedTwice.perform_later("a")
    _wait_for(lambda: len(RUNS) == 3)
    times = [t for _, t in RUNS]
    assert [label for label, _ in RUNS] == ["a#1", "a#2", "a#3"]
    assert times[1] - times[0] >= 0.19 and times[2] - times[1] >= 0.19


def test_async_runs_due_jobs_by_priority() -> None:
    RUNS.clear()
    adapter = AsyncAdapter(AdapterURL.parse("async://?workers=1"))
    with config.override(adapter):
        gate = threading.Event()

        class Blocker(Job):
            def perform(self) -> None:
                gate.wait(2)

        Blocker.perform_later()
        time.sleep(0.05)
        Noted.set(priority=10).perform_later("low")
        Noted.set(priority=1).perform_later("high")
        Noted.perform_later("default")
        gate.set()
        _wait_for(lambda: len(RUNS) == 3)
    assert [label for label, _ in RUNS] == ["default", "high", "low"]
    adapter.close()


def test_async_keeps_failures_and_keeps_running() -> None:
    RUNS.clear()
    adapter = config.configure(url="async://?workers=1")
    Exploding.perform_later()
    Noted.perform_later("after")
    _wait_for(lambda: len(RUNS) == 1)
    failed = adapter.failed()
    assert len(failed) == 1 and "ValueError: kaboom" in failed[0][1]
    assert f'"job_class":"{Exploding.job_name}"' in failed[0][0]


def test_async_close_drains_due_and_soon_due_jobs() -> None:
    RUNS.clear()
    adapter = config.configure(url="async://?workers=1")
    Noted.set(wait=0.2).perform_later("soon")
    Noted.set(wait=60).perform_later("much later")
    assert [e.job_class for e in adapter.scheduled()] == [Noted.job_name] * 2
    adapter.close(timeout=1)
    assert [label for label, _ in RUNS] == ["soon"]
    assert adapter.closed


def test_async_purge_drops_waiting_jobs_of_the_named_queues_only() -> None:
    RUNS.clear()
    adapter = config.configure(url="async://?workers=1")
    Noted.set(wait=60, queue="doomed").perform_later("a")
    Noted.set(wait=60, queue="kept").perform_later("b")
    adapter.purge(["doomed"])
    assert [envelope.queue_name for envelope in adapter.scheduled()] == ["kept"]
