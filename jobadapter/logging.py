"""ActiveJob-style log lines on the ``jobadapter`` logger, written by an event subscriber.

    Enqueued SignupJob (Job ID: 1f0…) to Async(default) with arguments: 7, lang='en'
    Performing SignupJob (Job ID: 1f0…) from Async(default) enqueued at 2026-… with arguments: 7
    Performed SignupJob (Job ID: 1f0…) from Async(default) in 3.21ms
    Retrying SignupJob (Job ID: 1f0…) after 1 attempts in 3.2 seconds, due to a TimeoutError (slow).
    Stopped retrying SignupJob (Job ID: 1f0…) due to a TimeoutError (slow), which reoccurred on 5 attempts.
    Discarded SignupJob (Job ID: 1f0…) due to a RecordNotFound (gone).

A job class with ``log_arguments = False`` keeps its arguments out of every line.

Every line about one job carries the job's ``job_id``, ``job_class`` (its
registry name), ``queue`` and ``executions`` as attributes of the log record
(`job_fields`), for a structured formatter to pick up; ``jobadapter.otel``
adds ``trace_id`` and ``span_id``.

Every job logs two routine lines, so they are cheap: the logger gets the
parts, not a built string (nothing is formatted unless a handler writes the
line), and the record is made without the stack walk ``logger.info`` does to
find its caller. ``jobadapter worker`` then formats and writes them in a thread
of its own (`jobadapter.worker_logging`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from jobadapter import events, locators
from jobadapter.envelope import format_timestamp

if TYPE_CHECKING:
    from datetime import datetime

    from jobadapter.job import Job

logger = logging.getLogger("jobadapter")


def job_fields(job: Job) -> dict[str, object]:
    """The log record attributes that say which job a line is about (``extra=`` of a log call)."""
    return {
        "job_id": job.job_id,
        "job_class": job.job_name,
        "queue": job.queue_name,
        "executions": job.executions,
    }


def _where(event: events.Event, job: Job) -> str:
    return f"{_adapter_name(event)}({job.queue_name})"


def _ident(job: Job) -> str:
    return f"{type(job).__qualname__} (Job ID: {job.job_id})"


def _adapter_name(event: events.Event) -> str:
    return event.adapter.name if event.adapter is not None else "Inline"


class _Arguments:
    """`` with arguments: 7, lang='en'``, rendered only when a handler formats the line."""

    __slots__ = ("_job",)

    def __init__(self, job: Job) -> None:
        self._job = job

    def __str__(self) -> str:
        job = self._job
        shown = [_shown(value) for value in job.arguments]
        shown += [f"{name}={_shown(value)}" for name, value in job.keyword_arguments.items()]
        return " with arguments: " + ", ".join(shown)


def _shown(value: object) -> str:
    """An argument as a log line shows it: ``repr``, but a model by its global id, as Rails logs
    ``gid://app/Person/1`` (inside lists and dicts too)."""
    if isinstance(value, (list, tuple)):
        inner = ", ".join(_shown(item) for item in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner}{',' if len(value) == 1 else ''})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_shown(key)}: {_shown(item)}" for key, item in value.items()) + "}"
    try:
        gid = locators.global_id(value)
    except ValueError:
        gid = None
    return gid if gid is not None else repr(value)


class _At:
    """``<prefix><timestamp>`` (e.g. `` enqueued at 2026-…Z``), rendered only when formatted."""

    __slots__ = ("_moment", "_prefix")

    def __init__(self, prefix: str, moment: datetime) -> None:
        self._prefix = prefix
        self._moment = moment

    def __str__(self) -> str:
        return self._prefix + format_timestamp(self._moment)


IMMUTABLE_ARGUMENT_TYPES = frozenset({str, int, float, bool, type(None), _At})
"""Types of log record arguments that can be formatted later, in another thread, and read
the same: immutable ones (`_Arguments` is not: a job may change its arguments)."""


def _info(source: Callable[..., Any], job: Job, message: str, *arguments: object) -> None:
    """``logger.info(message, *arguments)``, the record naming ``source`` as where it was logged.

    ``logger.info`` walks the stack to find its caller's file, line and function
    (a few µs per line, on every job); the subscriber knows them already.
    """
    code = source.__code__
    record = logger.makeRecord(
        logger.name,
        logging.INFO,
        code.co_filename,
        code.co_firstlineno,
        message,
        arguments,
        None,
        code.co_name,
        job_fields(job),
    )
    logger.handle(record)


def _arguments(job: Job) -> _Arguments | str:
    if not type(job).log_arguments or not (job.arguments or job.keyword_arguments):
        return ""
    return _Arguments(job)


def _error(error: BaseException | None) -> str:
    return f"{type(error).__name__} ({error})" if error is not None else "error"


def _on_enqueue(event: events.Event) -> None:
    job = event.job
    if job is None:
        return
    if event.aborted:
        logger.info(
            "Failed enqueuing %s to %s, a before_enqueue hook halted the enqueuing",
            type(job).__qualname__,
            _where(event, job),
            extra=job_fields(job),
        )
    elif event.error is not None:
        logger.error(
            "Failed enqueuing %s to %s: %s",
            type(job).__qualname__,
            _where(event, job),
            _error(event.error),
            extra=job_fields(job),
        )
    elif logger.isEnabledFor(logging.INFO):
        at = _At(" at ", job.scheduled_at) if job.scheduled_at is not None else ""
        _info(
            _on_enqueue,
            job,
            "Enqueued %s (Job ID: %s) to %s(%s)%s%s",
            type(job).__qualname__,
            job.job_id,
            _adapter_name(event),
            job.queue_name,
            at,
            _arguments(job),
        )


def _on_enqueue_all(event: events.Event) -> None:
    if not logger.isEnabledFor(logging.INFO) or not event.jobs:
        return
    counts = Counter(type(job).__qualname__ for job in event.jobs)
    # As Rails: the most numerous class first (then by name), and "1 job".
    ordered = sorted(counts.items(), key=lambda pair: (-pair[1], pair[0]))
    detail = ", ".join(f"{count} {name}" for name, count in ordered)
    adapter = event.adapter.name if event.adapter is not None else "?"
    noun = "job" if len(event.jobs) == 1 else "jobs"
    logger.info("Enqueued %d %s to %s (%s)", len(event.jobs), noun, adapter, detail)


def _on_perform_start(event: events.Event) -> None:
    job = event.job
    if job is None or not logger.isEnabledFor(logging.INFO):
        return
    _info(
        _on_perform_start,
        job,
        "Performing %s (Job ID: %s) from %s(%s)%s%s",
        type(job).__qualname__,
        job.job_id,
        _adapter_name(event),
        job.queue_name,
        _At(" enqueued at ", job.enqueued_at) if job.enqueued_at else "",
        _arguments(job),
    )


def _on_perform(event: events.Event) -> None:
    job = event.job
    if job is None:
        return
    if event.aborted:
        logger.info(
            "Error performing %s from %s in %.2fms: a before_perform hook halted the job",
            _ident(job),
            _where(event, job),
            (event.duration or 0.0) * 1000,
            extra=job_fields(job),
        )
    elif event.error is not None:
        logger.error(
            "Error performing %s from %s in %.2fms: %s",
            _ident(job),
            _where(event, job),
            (event.duration or 0.0) * 1000,
            _error(event.error),
            extra=job_fields(job),
        )
    elif logger.isEnabledFor(logging.INFO):
        _info(
            _on_perform,
            job,
            "Performed %s (Job ID: %s) from %s(%s) in %.2fms",
            type(job).__qualname__,
            job.job_id,
            _adapter_name(event),
            job.queue_name,
            (event.duration or 0.0) * 1000,
        )


def _on_enqueue_retry(event: events.Event) -> None:
    job = event.job
    if job is None:
        return
    if event.error is None:  # retry_job outside a rescue handler
        logger.info(
            "Retrying %s after %d attempts in %s seconds.",
            _ident(job),
            job.executions,
            f"{event.wait or 0:g}",
            extra=job_fields(job),
        )
        return
    logger.info(
        "Retrying %s after %d attempts in %s seconds, due to a %s.",
        _ident(job),
        job.executions,
        f"{event.wait or 0:g}",
        _error(event.error),
        extra=job_fields(job),
    )


def _on_retry_stopped(event: events.Event) -> None:
    job = event.job
    if job is None:
        return
    logger.error(
        "Stopped retrying %s due to a %s, which reoccurred on %d attempts.",
        _ident(job),
        _error(event.error),
        job.executions,
        extra=job_fields(job),
    )


def _on_discard(event: events.Event) -> None:
    job = event.job
    if job is None:
        return
    logger.error("Discarded %s due to a %s.", _ident(job), _error(event.error), extra=job_fields(job))


def _info_off() -> bool:
    return not logger.isEnabledFor(logging.INFO)


def install() -> None:
    """Subscribe the log lines (done once, when ``jobadapter`` is imported).

    Routine lines are INFO: with the logger above INFO, routine events are
    not even built (``events.subscribe``'s ``silenced``). Failure lines are
    ERROR and always written.
    """
    events.subscribe("enqueue", _on_enqueue, silenced=_info_off)
    events.subscribe("enqueue_at", _on_enqueue, silenced=_info_off)
    events.subscribe("enqueue_all", _on_enqueue_all, silenced=_info_off)
    events.subscribe("perform_start", _on_perform_start, silenced=_info_off)
    events.subscribe("perform", _on_perform, silenced=_info_off)
    events.subscribe("enqueue_retry", _on_enqueue_retry, silenced=_info_off)
    events.subscribe("retry_stopped", _on_retry_stopped)
    events.subscribe("discard", _on_discard)
