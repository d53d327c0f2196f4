"""Testing an application's jobs: the ``jobs`` fixture and its assertions.

The pytest plugin (``jobadapter.testing.plugin``, registered through
``pytest11``) gives each test that asks for ``jobs`` a fresh `TestAdapter` in
place of every configured adapter::

    def test_signup(jobs):
        WelcomeJob.perform_later(7, lang="en")
        jobs.assert_enqueued(WelcomeJob, args=(7,), kwargs={"lang": "en"}, queue="default")
        jobs.perform_enqueued()
        jobs.assert_performed(WelcomeJob, count=1)

Rails' TestHelper, in Python names: ``assert_enqueued_jobs(2, only=WelcomeJob)``
(``only``/``except_`` take a class, several, or a predicate on the job),
``assert_no_enqueued_jobs()``, the block forms ``with jobs.assert_enqueues(1):``
and ``with jobs.assert_performs(1):`` that count only what the block did, ``args``
as a predicate, and ``perform_enqueued(only=…, except_=…, at=…)``.

Outside pytest, `recording()` does the same as a context manager.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from jobadapter import config, registry
from jobadapter.adapters.test import TestAdapter
from jobadapter.envelope import Envelope
from jobadapter.functions import JobFunction
from jobadapter.job import Job

JobKind = type[Job] | JobFunction[Any, Any]
"""A job class, or a ``@job`` function standing for the class made for it."""
Selection = JobKind | Sequence[JobKind] | Callable[[Job], bool] | None
"""``only``/``except_``: a job class or function, several, or a predicate on the job (None: no
filter)."""

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

    def perform_enqueued(
        self, *, only: Selection = None, except_: Selection = None, at: datetime | None = None
    ) -> list[Job]:
        """Run what is enqueued, and what that enqueues (retries too), in scheduled order,
        until none is left; an unhandled error is raised here. ``only``/``except_`` choose the
        jobs that run, and ``at`` runs only those due by then (Rails' ``perform_enqueued_jobs(at:)``);
        the others stay enqueued."""

        def select(envelope: Envelope) -> bool:
            if at is not None and envelope.scheduled_at is not None and envelope.scheduled_at > at:
                return False
            return _selected(registry.lookup(envelope.job_class).from_envelope(envelope), only, except_)

        plain = only is None and except_ is None and at is None
        return self.adapter.perform_enqueued(None if plain else select)

    def clear(self) -> None:
        self.adapter.clear()

    def assert_enqueued_jobs(
        self, count: int, *, only: Selection = None, except_: Selection = None, queue: str = ANY
    ) -> list[Job]:
        """Assert exactly ``count`` jobs (of any class ``only``/``except_`` let through, on
        ``queue`` if given) were enqueued; returns them."""
        return _assert_count("enqueued", self.adapter.enqueued, count, only, except_, queue)

    def assert_no_enqueued_jobs(
        self, *, only: Selection = None, except_: Selection = None, queue: str = ANY
    ) -> None:
        self.assert_enqueued_jobs(0, only=only, except_=except_, queue=queue)

    def assert_performed_jobs(
        self, count: int, *, only: Selection = None, except_: Selection = None, queue: str = ANY
    ) -> list[Job]:
        """Like `assert_enqueued_jobs`, over the executions ``perform_enqueued`` ran."""
        return _assert_count("performed", self.adapter.performed, count, only, except_, queue)

    def assert_no_performed_jobs(
        self, *, only: Selection = None, except_: Selection = None, queue: str = ANY
    ) -> None:
        self.assert_performed_jobs(0, only=only, except_=except_, queue=queue)

    @contextmanager
    def assert_enqueues(
        self, count: int, *, only: Selection = None, except_: Selection = None, queue: str = ANY
    ) -> Iterator[None]:
        """``with jobs.assert_enqueues(2, only=HelloJob): …``: the block enqueued exactly
        ``count`` such jobs (Rails' ``assert_enqueued_jobs`` with a block)."""
        before = len(self.adapter.enqueued)
        yield
        _assert_count("enqueued", self.adapter.enqueued[before:], count, only, except_, queue)

    @contextmanager
    def assert_performs(
        self, count: int, *, only: Selection = None, except_: Selection = None, queue: str = ANY
    ) -> Iterator[None]:
        """Like `assert_enqueues`, for the executions the block ran."""
        before = len(self.adapter.performed)
        yield
        _assert_count("performed", self.adapter.performed[before:], count, only, except_, queue)

    def assert_enqueued(
        self,
        job_class: JobKind,
        *,
        args: Sequence[Any] | Callable[[list[Any]], bool] = ANY,
        kwargs: Mapping[str, Any] = ANY,
        queue: str = ANY,
        priority: int | None = ANY,
        at: datetime | None = ANY,
        count: int | None = None,
    ) -> list[Job]:
        """Assert jobs of ``job_class`` matching every filter given were enqueued:
        ``count`` of them exactly, or at least one. ``args`` may be a predicate on the
        arguments list (Rails' ``args: ->(args) { … }``). Returns the matching jobs."""
        return _assert_matching(
            "enqueued", self.adapter.enqueued, job_class, args, kwargs, queue, priority, at, count
        )

    def assert_performed(
        self,
        job_class: JobKind,
        *,
        args: Sequence[Any] | Callable[[list[Any]], bool] = ANY,
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
    kind: JobKind,
    args: Sequence[Any] | Callable[[list[Any]], bool],
    kwargs: Mapping[str, Any],
    queue: str,
    priority: int | None,
    at: datetime | None,
    count: int | None,
) -> list[Job]:
    job_class = _class_of(kind)

    def matches(job: Job) -> bool:
        if type(job) is not job_class:
            return False
        if callable(args):
            if not args(list(job.arguments)):
                return False
        elif args is not ANY and list(job.arguments) != list(args):
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


def _selected(job: Job, only: Selection, except_: Selection) -> bool:
    return (only is None or _chosen(job, only)) and (except_ is None or not _chosen(job, except_))


def _chosen(job: Job, selection: Selection) -> bool:
    if isinstance(selection, (type, JobFunction)):
        return type(job) is _class_of(selection)
    if callable(selection):
        return bool(selection(job))
    assert selection is not None
    return type(job) in tuple(_class_of(kind) for kind in selection)


def _class_of(kind: JobKind) -> type[Job]:
    return kind.job_class if isinstance(kind, JobFunction) else kind


def _assert_count(
    verb: str, jobs: Sequence[Job], count: int, only: Selection, except_: Selection, queue: str
) -> list[Job]:
    found = [
        job for job in jobs if _selected(job, only, except_) and (queue is ANY or job.queue_name == queue)
    ]
    if len(found) == count:
        return found
    seen = "\n".join(f"  {_describe(job)}" for job in jobs) or "  (none)"
    raise AssertionError(f"expected {count} job(s) {verb}, found {len(found)}. All {verb} jobs:\n{seen}")


def _describe(job: Job) -> str:
    at = f" at={job.scheduled_at.isoformat()}" if job.scheduled_at else ""
    return (
        f"{type(job).__qualname__} args={job.arguments!r} kwargs={job.keyword_arguments!r} "
        f"queue={job.queue_name!r} priority={job.priority!r}{at}"
    )
