"""Testing an application's jobs: the ``jobs`` fixture and its assertions.

The pytest plugin (``jobadapter.testing.plugin``, registered through
``pytest11``) gives each test that asks for ``jobs`` a fresh `TestAdapter` in
place of every configured adapter::

    def test_signup(jobs):
        WelcomeJob.perform_later(7, lang="en")
        jobs.assert_enqueued(WelcomeJob, args=(7,), kwargs={"lang": "en"}, queue="default")
        jobs.perform_enqueued()
        jobs.assert_performed(WelcomeJob, count=1)

Outside pytest, `recording()` does the same as a context manager.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from jobadapter import config
from jobadapter.adapters.test import TestAdapter
from jobadapter.job import Job

ANY: Any = object()
"""The default of every filter: matches whatever the job has."""
SCHEDULE_TOLERANCE = timedelta(seconds=1)
"""How far ``at=`` may be from a job's ``scheduled_at`` (the test computes its ``at`` later)."""


class JobRecorder:
    """What the ``jobs`` fixture gives a test: the recorded jobs and assertions on them."""

    def __init__(self, adapter: TestAdapter) -> None:
        self.adapter = adapter

    @property
    def enqueued(self) -> list[Job]:
        """Every job enqueued, in order, as a backend would receive it (arguments round-tripped)."""
        return list(self.adapter.enqueued)

    @property
    def performed(self) -> list[Job]:
        """Every execution ``perform_enqueued`` ran, in order (a retried job appears per attempt)."""
        return list(self.adapter.performed)

    def perform_enqueued(self) -> list[Job]:
        """Run what is enqueued, and what that enqueues (retries too), in scheduled order,
        until none is left; an unhandled error is raised here."""
        return self.adapter.perform_enqueued()

    def clear(self) -> None:
        self.adapter.clear()

    def assert_enqueued(
        self,
        job_class: type[Job],
        *,
        args: Sequence[Any] = ANY,
        kwargs: Mapping[str, Any] = ANY,
        queue: str = ANY,
        priority: int | None = ANY,
        at: datetime | None = ANY,
        count: int | None = None,
    ) -> list[Job]:
        """Assert jobs of ``job_class`` matching every filter given were enqueued:
        ``count`` of them exactly, or at least one. Returns the matching jobs."""
        return _assert_matching(
            "enqueued", self.adapter.enqueued, job_class, args, kwargs, queue, priority, at, count
        )

    def assert_performed(
        self,
        job_class: type[Job],
        *,
        args: Sequence[Any] = ANY,
        kwargs: Mapping[str, Any] = ANY,
        queue: str = ANY,
        priority: int | None = ANY,
        at: datetime | None = ANY,
        count: int | None = None,
    ) -> list[Job]:
        """Like `assert_enqueued`, over the executions ``perform_enqueued`` ran."""
        return _assert_matching(
            "performed", self.adapter.performed, job_class, args, kwargs, queue, priority, at, count
        )


@contextmanager
def recording() -> Iterator[JobRecorder]:
    """Send every job to a fresh test adapter for the duration of the block."""
    adapter = TestAdapter()
    with config.override(adapter):
        yield JobRecorder(adapter)
    adapter.close()


def _assert_matching(
    verb: str,
    jobs: Sequence[Job],
    job_class: type[Job],
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    queue: str,
    priority: int | None,
    at: datetime | None,
    count: int | None,
) -> list[Job]:
    def matches(job: Job) -> bool:
        if type(job) is not job_class:
            return False
        if args is not ANY and list(job.arguments) != list(args):
            return False
        if kwargs is not ANY and job.keyword_arguments != dict(kwargs):
            return False
        if queue is not ANY and job.queue_name != queue:
            return False
        if priority is not ANY and job.priority != priority:
            return False
        if at is not ANY:
            if at is None or job.scheduled_at is None:
                return at is None and job.scheduled_at is None
            return abs(job.scheduled_at - at) <= SCHEDULE_TOLERANCE
        return True

    found = [job for job in jobs if matches(job)]
    if (count is None and found) or (count is not None and len(found) == count):
        return found
    wanted = "at least one" if count is None else f"exactly {count}"
    filters = {
        name: value
        for name, value in (
            ("args", args),
            ("kwargs", kwargs),
            ("queue", queue),
            ("priority", priority),
            ("at", at),
        )
        if value is not ANY
    }
    seen = "\n".join(f"  {_describe(job)}" for job in jobs) or "  (none)"
    raise AssertionError(
        f"expected {wanted} {job_class.__qualname__} {verb} with {filters or 'any arguments'}, "
        f"found {len(found)}. All {verb} jobs:\n{seen}"
    )


def _describe(job: Job) -> str:
    at = f" at={job.scheduled_at.isoformat()}" if job.scheduled_at else ""
    return (
        f"{type(job).__qualname__} args={job.arguments!r} kwargs={job.keyword_arguments!r} "
        f"queue={job.queue_name!r} priority={job.priority!r}{at}"
    )
