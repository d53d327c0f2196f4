"""ActiveJob-style log lines on the ``jobadapter`` logger, written by an event subscriber.

    Enqueued SignupJob (Job ID: 1f0…) to Async(default) with arguments: 7, lang='en'
    Performing SignupJob (Job ID: 1f0…) from Async(default) enqueued at 2026-… with arguments: 7
    Performed SignupJob (Job ID: 1f0…) from Async(default) in 3.21ms
    Retrying SignupJob (Job ID: 1f0…) after 1 attempts in 3.2 seconds, due to a TimeoutError (slow).
    Stopped retrying SignupJob (Job ID: 1f0…) due to a TimeoutError (slow), which reoccurred on 5 attempts.
    Discarded SignupJob (Job ID: 1f0…) due to a RecordNotFound (gone).

A job class with ``log_arguments = False`` keeps its arguments out of every line.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING

from jobadapter import events
from jobadapter.envelope import format_timestamp

if TYPE_CHECKING:
    from jobadapter.job import Job

logger = logging.getLogger("jobadapter")


def _where(event: events.Event, job: Job) -> str:
    adapter = event.adapter.name if event.adapter is not None else "Inline"
    return f"{adapter}({job.queue_name})"


def _ident(job: Job) -> str:
    return f"{type(job).__qualname__} (Job ID: {job.job_id})"


def _arguments(job: Job) -> str:
    if not type(job).log_arguments or not (job.arguments or job.keyword_arguments):
        return ""
    shown = [repr(value) for value in job.arguments]
    shown += [f"{name}={value!r}" for name, value in job.keyword_arguments.items()]
    return " with arguments: " + ", ".join(shown)


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
        )
    elif event.error is not None:
        logger.error(
            "Failed enqueuing %s to %s: %s", type(job).__qualname__, _where(event, job), _error(event.error)
        )
    elif logger.isEnabledFor(logging.INFO):
        at = f" at {format_timestamp(job.scheduled_at)}" if job.scheduled_at is not None else ""
        logger.info("Enqueued %s to %s%s%s", _ident(job), _where(event, job), at, _arguments(job))


def _on_enqueue_all(event: events.Event) -> None:
    if not logger.isEnabledFor(logging.INFO) or not event.jobs:
        return
    counts = Counter(type(job).__qualname__ for job in event.jobs)
    detail = ", ".join(f"{count} {name}" for name, count in counts.items())
    adapter = event.adapter.name if event.adapter is not None else "?"
    logger.info("Enqueued %d jobs to %s (%s)", len(event.jobs), adapter, detail)


def _on_perform_start(event: events.Event) -> None:
    job = event.job
    if job is None or not logger.isEnabledFor(logging.INFO):
        return
    enqueued = f" enqueued at {format_timestamp(job.enqueued_at)}" if job.enqueued_at else ""
    logger.info("Performing %s from %s%s%s", _ident(job), _where(event, job), enqueued, _arguments(job))


def _on_perform(event: events.Event) -> None:
    job = event.job
    if job is None:
        return
    took = f"{(event.duration or 0.0) * 1000:.2f}ms"
    if event.aborted:
        logger.info(
            "Error performing %s from %s in %s: a before_perform hook halted the job",
            _ident(job),
            _where(event, job),
            took,
        )
    elif event.error is not None:
        logger.error(
            "Error performing %s from %s in %s: %s",
            _ident(job),
            _where(event, job),
            took,
            _error(event.error),
        )
    else:
        logger.info("Performed %s from %s in %s", _ident(job), _where(event, job), took)


def _on_enqueue_retry(event: events.Event) -> None:
    job = event.job
    if job is None:
        return
    logger.info(
        "Retrying %s after %d attempts in %s seconds, due to a %s.",
        _ident(job),
        job.executions,
        f"{event.wait or 0:g}",
        _error(event.error),
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
    )


def _on_discard(event: events.Event) -> None:
    job = event.job
    if job is None:
        return
    logger.error("Discarded %s due to a %s.", _ident(job), _error(event.error))


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
