"""The events subscriber that turns a job's life into journal row writes.

Each handler only snapshots the job into a `Write` and buffers it (no I/O,
no JSON encoding: the writer thread does that), so the journal adds little to
an enqueue or a perform. What each event writes:

- ``enqueue``, ``enqueue_at``, ``enqueue_all``: the full row, pending or scheduled;
- ``enqueue_retry``: the same for the retry, with outcome ``retried`` and the error;
- ``perform_start``: running, with ``started_at``, ``worker`` and ``executions``;
- ``discard``: finished, outcome ``discarded``, with the error that discarded it;
- ``perform``: finished or failed per its outcome (a retried or discarded run was
  written by the two events above), the error when nothing handled it, and the
  return value of a ``store_result`` job.

The end of each execution (``enqueue_retry``, ``discard`` or ``perform``) also
adds the execution's own row (`store.EXECUTION`): when it started and ended,
where, how, and its error, so a job's history outlives its row's latest state.

Only jobs that went through an adapter are journaled: ``perform_now`` runs
(no adapter) are not jobs anyone can operate.
"""

from __future__ import annotations

import logging
import os
import socket
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from jobadapter import events
from jobadapter.arguments import serialize_arguments
from jobadapter.errors import SerializationError
from jobadapter.execution import DISCARDED, FAILED, RETRIED
from jobadapter.journal.writes import EXECUTION, Sink, Write
from jobadapter.operations import JobState

if TYPE_CHECKING:
    from jobadapter.job import Job

_logger = logging.getLogger("jobadapter")
_HOST = socket.gethostname()


class Feed:
    """Subscribes a journal (`store.Journal`, or a `forward.Forwarder`) to the core's events;
    `uninstall` undoes it."""

    def __init__(self, journal: Sink) -> None:
        self.journal = journal
        self._unsubscribers: list[Callable[[], None]] = []
        self._started: dict[tuple[str, int], datetime] = {}
        """When each execution running in this process started, until it ends."""

    def install(self) -> None:
        handlers: dict[str, Callable[[events.Event], None]] = {
            "enqueue": self._on_enqueue,
            "enqueue_at": self._on_enqueue,
            "enqueue_all": self._on_enqueue_all,
            "enqueue_retry": self._on_enqueue_retry,
            "perform_start": self._on_perform_start,
            "perform": self._on_perform,
            "discard": self._on_discard,
        }
        self._unsubscribers = [events.subscribe(name, handler) for name, handler in handlers.items()]

    def uninstall(self) -> None:
        for unsubscribe in self._unsubscribers:
            unsubscribe()
        self._unsubscribers = []

    def _on_enqueue(self, event: events.Event) -> None:
        job = event.job
        if job is not None and job.successfully_enqueued:
            self.journal.submit(_enqueued(job))

    def _on_enqueue_all(self, event: events.Event) -> None:
        for job in event.jobs:
            self.journal.submit(_enqueued(job))

    def _on_enqueue_retry(self, event: events.Event) -> None:
        job = event.job
        if job is not None:
            self.journal.submit(_enqueued(job, outcome=RETRIED, error=event.error))
            self._ended(job, RETRIED, event.error)

    def _on_perform_start(self, event: events.Event) -> None:
        job = event.job
        if job is None or event.adapter is None:
            return
        values = _row(job, 3 * job.executions - 2)
        started = self._started[(job.job_id, job.executions)] = _now()
        values.update(
            state=JobState.RUNNING.value,
            started_at=started,
            finished_at=None,
            worker=_worker(),
            has_result=False,
            result=None,
            **_error_fields(None, None),
        )
        self.journal.submit(Write("started", values))
        if self.journal.forked:
            # No writer thread here: without this write the job would show as running only
            # once it ended, and a broker that cannot list running jobs (RabbitMQ) relies on it.
            self.journal.write_pending()

    def _on_discard(self, event: events.Event) -> None:
        job = event.job
        if job is None or event.adapter is None:
            return
        self.journal.submit(_finished(job, JobState.FINISHED, DISCARDED, event.error))
        self._ended(job, DISCARDED, event.error)

    def _on_perform(self, event: events.Event) -> None:
        job = event.job
        if job is None or event.adapter is None:
            return
        if event.outcome in (RETRIED, DISCARDED):  # written by enqueue_retry or discard
            self._write_now_if_forked()
            return
        if event.error is not None:
            write = _finished(job, JobState.FAILED, event.outcome or FAILED, event.error)
        else:
            write = _finished(job, JobState.FINISHED, event.outcome, None)
            if type(job).store_result and event.outcome == "performed":
                _store_result(job, write, event.result)
        self.journal.submit(write)
        self._ended(job, event.outcome, event.error)
        self._write_now_if_forked()

    def _ended(self, job: Job, outcome: str | None, error: BaseException | None) -> None:
        """The row of the execution that just ended, if it started in this process (a
        ``perform_now`` run has no start event and no journal row)."""
        started = self._started.pop((job.job_id, job.executions), None)
        if started is None:
            return
        values: dict[str, Any] = {
            "job_id": job.job_id,
            "execution": job.executions,
            "started_at": started,
            "finished_at": _now(),
            "worker": _worker(),
            **_error_fields(error, outcome),
        }
        self.journal.submit(Write(EXECUTION, values))

    def _write_now_if_forked(self) -> None:
        if self.journal.forked:
            # A forked process (RQ's work horse) may end with os._exit right after the job.
            self.journal.write_pending()


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _worker() -> str:
    return f"{_HOST}:{os.getpid()}"


def _row(job: Job, step: int) -> dict[str, Any]:
    """The job's own columns (see `store.UPDATED`), as of this event."""
    stored = job._stored_arguments
    if stored is None:
        try:
            stored = serialize_arguments(job.arguments, job.keyword_arguments)
        except SerializationError:
            stored = ([], {})
    return {
        "job_id": job.job_id,
        "job_class": type(job).job_name,
        "queue": job.queue_name,
        "priority": job.priority,
        "arguments": stored[0],
        "keyword_arguments": stored[1],
        "enqueued_at": job.enqueued_at,
        "scheduled_at": job.scheduled_at,
        "executions": job.executions,
        "step": step,
        "updated_at": _now(),
    }


def _enqueued(job: Job, *, outcome: str | None = None, error: BaseException | None = None) -> Write:
    values = _row(job, 3 * job.executions)
    values.update(
        state=(JobState.PENDING if job.scheduled_at is None else JobState.SCHEDULED).value,
        provider_job_id=job.provider_job_id,
        has_result=False,
        **_error_fields(error, outcome),
    )
    return Write("enqueued", values)


def _finished(job: Job, state: JobState, outcome: str | None, error: BaseException | None) -> Write:
    values = _row(job, 3 * job.executions - 1)
    values.update(
        state=state.value,
        finished_at=_now(),
        worker=_worker(),
        has_result=False,
        result=None,
        **_error_fields(error, outcome),
    )
    return Write("finished", values)


def _error_fields(error: BaseException | None, outcome: str | None) -> dict[str, Any]:
    if error is None:
        return {"outcome": outcome, "error_class": None, "error_message": None, "error_traceback": None}
    kind = type(error)
    return {
        "outcome": outcome,
        "error_class": kind.__qualname__,  # as the backends' failed stores and the log lines name it
        "error_message": str(error),
        "error_traceback": "".join(traceback.format_exception(kind, error, error.__traceback__)),
    }


def _store_result(job: Job, write: Write, result: Any) -> None:
    try:
        serialized, _ = serialize_arguments([result], {})
    except SerializationError as error:
        _logger.warning("The result of %s (Job ID: %s) cannot be stored: %s", job.job_name, job.job_id, error)
        return
    write.values.update(result=serialized[0], has_result=True)
