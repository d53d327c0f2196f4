"""The operations contract's vocabulary: job states, job records, queue summaries, filters.

After enqueue, operating a job (seeing where it is, retrying it, discarding it,
pausing its queue) must not depend on the backend any more than writing it
did. Every adapter answers the same queries and commands
(`jobadapter.adapters.base.Adapter.queues`, ``jobs``, ``find``, ``retry``,
``retry_all``, ``discard``, ``discard_all``, ``run_now``, ``pause``,
``resume``) with the types defined here: natively where its backend keeps the
data, through the journal (`jobadapter.journal`) where it does not.

The broker stays the truth about *where* a job is (waiting, scheduled, held
by a worker, failed); the journal is the memory of *what happened* to it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

from jobadapter.envelope import Envelope
from jobadapter.errors import JobAdapterError

if TYPE_CHECKING:
    from jobadapter.adapters.base import Adapter


class JobState(str, Enum):
    """Where a job is in its life. A discarded job has no state: it is gone."""

    PENDING = "pending"
    """Due, waiting on its queue for a worker."""
    SCHEDULED = "scheduled"
    """Waiting for its time (``wait``/``wait_until``, or a retry's delay)."""
    RUNNING = "running"
    """Held by a worker that is performing it."""
    FAILED = "failed"
    """In the backend's failed store: unhandled error, exhausted retries, or an unreadable payload."""
    FINISHED = "finished"
    """Performed (or its error handled); kept as long as the backend or the journal keeps it."""


EVERY_STATE: frozenset[JobState] = frozenset(JobState)


class JobNotFound(JobAdapterError, LookupError):
    """No job with this id is known to the backend (nor to the journal, where there is one)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}")
        self.job_id = job_id


class OperationUnsupported(JobAdapterError, NotImplementedError):
    """The adapter cannot do this operation at all; the message says why (the matrix shows it)."""


class NotInState(JobAdapterError):
    """The job exists, but the operation needs it in another state (retry of a pending job,
    run-now of a running one)."""

    def __init__(self, job_id: str, state: JobState | None, wanted: Sequence[JobState]) -> None:
        shown = state.value if state is not None else "unknown"
        super().__init__(f"job {job_id!r} is {shown}; this needs it {' or '.join(s.value for s in wanted)}")
        self.job_id = job_id
        self.state = state


@dataclass(frozen=True)
class JobError:
    """The last error a job raised (or why its payload could not run)."""

    error_class: str
    message: str
    traceback: str | None = None

    def __str__(self) -> str:
        return f"{self.error_class}: {self.message}" if self.message else self.error_class


@dataclass(frozen=True)
class JobRecord:
    """One job as the operations contract reports it, on every backend.

    Fields a backend does not know are None (``started_at`` of a job that never
    ran). ``payload`` is the raw text of a failed entry that is not a valid
    envelope: such an entry is still listed, with ``job_class`` ``"?"``, so an
    operator can see and discard it.
    """

    job_id: str
    job_class: str
    queue: str
    state: JobState
    priority: int | None = None
    arguments: list[Any] = field(default_factory=list)
    keyword_arguments: dict[str, Any] = field(default_factory=dict)
    executions: int = 0
    enqueued_at: datetime | None = None
    scheduled_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: JobError | None = None
    outcome: str | None = None
    """How the last execution ended (``performed``, ``retried``, ``discarded``, ``rescued``,
    ``exhausted``, ``failed``, ``aborted``), where the journal recorded it."""
    worker: str | None = None
    provider_job_id: str | None = None
    result: Any = None
    has_result: bool = False
    payload: str | None = None
    envelope: Envelope | None = field(default=None, repr=False, compare=False)
    """The whole envelope, where the backend holds it (``jobadapter migrate`` moves it as is,
    ``exception_executions`` included); None for a record the journal alone knows, or an
    entry that is not an envelope."""

    @classmethod
    def from_envelope(cls, envelope: Envelope, state: JobState, **known: Any) -> JobRecord:
        """The record of a job whose envelope the backend holds.

        A backend holds the envelope as it was delivered, whose ``executions`` counts the runs
        before the attempt it carries: a running, finished or failed job's record counts that
        attempt too, so every backend reports 1 for a job that ran once."""
        ran = 1 if state in (JobState.RUNNING, JobState.FINISHED, JobState.FAILED) else 0
        return cls(
            job_id=envelope.job_id,
            job_class=envelope.job_class,
            queue=envelope.queue_name,
            state=state,
            priority=envelope.priority,
            arguments=list(envelope.arguments),
            keyword_arguments=dict(envelope.keyword_arguments),
            executions=envelope.executions + ran,
            enqueued_at=envelope.enqueued_at,
            scheduled_at=envelope.scheduled_at,
            envelope=envelope,
            **known,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (timestamps in ISO 8601), for ``--json`` output and the dashboard."""
        document: dict[str, Any] = {
            "job_id": self.job_id,
            "job_class": self.job_class,
            "queue": self.queue,
            "state": self.state.value,
            "priority": self.priority,
            "arguments": self.arguments,
            "keyword_arguments": self.keyword_arguments,
            "executions": self.executions,
            "enqueued_at": _iso(self.enqueued_at),
            "scheduled_at": _iso(self.scheduled_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "error": None
            if self.error is None
            else {
                "class": self.error.error_class,
                "message": self.error.message,
                "traceback": self.error.traceback,
            },
            "outcome": self.outcome,
            "worker": self.worker,
            "provider_job_id": self.provider_job_id,
        }
        if self.has_result:
            document["result"] = self.result
        if self.payload is not None:
            document["payload"] = self.payload
        return document


@dataclass(frozen=True)
class QueueInfo:
    """One queue as ``queues()`` reports it."""

    name: str
    pending: int
    scheduled: int
    failed: int
    paused: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pending": self.pending,
            "scheduled": self.scheduled,
            "failed": self.failed,
            "paused": self.paused,
        }


@dataclass(frozen=True)
class JobFilter:
    """Which jobs a listing or a bulk command applies to; an unset field matches everything.

    ``search`` matches the text of the job's arguments (their serialized JSON),
    case-insensitively: ``search="alice@example.com"`` finds every job that
    got that address, whatever the argument's position or name.
    """

    queue: str | None = None
    job_class: str | None = None
    search: str | None = None

    def matches(self, record: JobRecord) -> bool:
        if self.queue is not None and record.queue != self.queue:
            return False
        if self.job_class is not None and record.job_class != self.job_class:
            return False
        if self.search is not None:
            return self.search.lower() in arguments_text(record.arguments, record.keyword_arguments).lower()
        return True


EVERY_JOB = JobFilter()
"""The filter that matches every job."""


def arguments_text(arguments: Sequence[Any], keyword_arguments: Mapping[str, Any]) -> str:
    """The text ``JobFilter.search`` looks in: the serialized arguments as compact JSON, with
    their characters as they are (a search for "Émile" must not meet ``\u00c9mile``)."""
    return json.dumps(
        [list(arguments), dict(keyword_arguments)], separators=(",", ":"), ensure_ascii=False, default=str
    )


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def look_up(adapter: Adapter, job_id: str) -> JobRecord:
    """The job with this id as ``adapter`` and the journal know it (``Job.lookup`` and
    ``jobadapter job``).

    The adapter's ``find`` says where the job is; the journal fills what the
    adapter left unknown (timings, worker, outcome, result). Where the adapter
    cannot look jobs up, the journal's row alone answers. Raises `JobNotFound`
    when neither knows the id.
    """
    from jobadapter import journal

    native: JobRecord | None = None
    with contextlib.suppress(OperationUnsupported, JobNotFound):
        native = adapter.find(job_id)
    active = journal.active()
    kept = None
    if active is not None:
        active.flush()  # this process's own writes first: read what it just did
        kept = active.find(job_id)
    if native is None:
        if kept is None:
            raise JobNotFound(job_id)
        return kept
    return native if kept is None else _merged(native, kept)


def _merged(native: JobRecord, kept: JobRecord) -> JobRecord:
    """``native`` (the adapter's record) with the fields it left unknown taken from ``kept``."""
    filled: dict[str, Any] = {
        name: getattr(kept, name)
        for name in (
            "priority",
            "enqueued_at",
            "scheduled_at",
            "started_at",
            "finished_at",
            "error",
            "outcome",
            "worker",
            "provider_job_id",
        )
        if getattr(native, name) is None
    }
    if not native.has_result and kept.has_result:
        filled.update(result=kept.result, has_result=True)
    return dataclasses.replace(native, **filled) if filled else native
