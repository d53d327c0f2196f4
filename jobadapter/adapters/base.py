"""The adapter contract: how the core hands jobs to a backend, and what a backend offers.

The core decides *what* happens to a job (run now or later, on which queue, retry
after how long, discard, fail); an adapter decides *how*, with its backend's
native primitive where one fits. The contract is deliberately narrow:

- ``enqueue(envelope, options)`` and ``enqueue_at(envelope, at, options)`` publish
  one envelope and return the backend's id for it (``provider_job_id``). They
  raise `EnqueueError` (the backend's error chained) when the backend cannot
  take the job; they never drop it silently.
- ``enqueue_all(requests)`` publishes many; the default loops over the two above.
- ``schedule_retry(envelope, at, options)`` is called inside a worker when the
  core decided to retry; the default publishes like ``enqueue_at``. A backend
  with a native retry (Celery's ``task.retry``) overrides it.
- ``run_worker(queues, concurrency, burst)`` runs the backend's own worker in
  this process (``queues=None`` means `jobadapter.registry.declared_queues`:
  ``default`` and every queue the registered job classes declare), calling
  `jobadapter.execution.execute(payload, adapter)` for each message.
  ``execute`` raises when the job failed for good (or the payload is not a
  runnable envelope): the worker records that in its failed store.
- ``close()``; and, optionally, inspection: ``queue_sizes``, ``scheduled``,
  ``failed`` and ``status(job_id)``; ``enqueue_payload`` (publish raw bytes, for
  the conformance suite's poison-payload scenarios) and ``purge(queue_names)``;
  ``hostile_messages()`` (malformed backend-level messages, for the fault suite).
- ``capabilities``: the features the adapter supports, from `Capability`. The
  conformance suite runs a scenario only when its capability is declared and
  reports the rest as unsupported; ``notes`` say how each feature is mapped.

An adapter is constructed from its parsed URL (`AdapterURL`) plus keyword
options, and is found through the ``jobadapter.adapters`` entry-point group by
the URL's scheme (the part before ``+``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from jobadapter.envelope import Envelope
from jobadapter.errors import ConfigurationError, EnqueueError, JobAdapterError
from jobadapter.operations import (
    EVERY_JOB,
    JobError,
    JobFilter,
    JobNotFound,
    JobRecord,
    JobState,
    OperationUnsupported,
    QueueInfo,
)

if TYPE_CHECKING:
    from jobadapter.faults.hostile import HostileMessage
    from jobadapter.migrate.ledger import Ledger


class Capability(str, Enum):
    """A feature an adapter may support; the conformance suite keys scenarios on these."""

    EXTERNAL_WORKER = "external_worker"
    """Jobs run in a separate worker process (``jobadapter worker``)."""
    DELAYED = "delayed"
    """``wait``/``wait_until`` are honoured: a job does not run before its time."""
    QUEUES = "queues"
    """A worker consumes only the queues it is told to."""
    PRIORITY = "priority"
    """Among waiting jobs, a more urgent priority runs first."""
    BULK = "bulk"
    """``perform_all_later`` publishes a batch in one round trip."""
    FAILED_STORE = "failed_store"
    """Failed jobs are kept by the backend, with their error, and can be inspected."""
    AT_LEAST_ONCE = "at_least_once"
    """A job whose worker died mid-run is run again by another worker."""
    GRACEFUL_SHUTDOWN = "graceful_shutdown"
    """SIGTERM lets running jobs finish (or returns them to the queue)."""
    # The operations contract (`jobadapter.operations`).
    INSPECT = "inspect"
    """``queues()``, ``jobs(state)`` for every `JobState`, and ``find(job_id)``."""
    RETRY = "retry"
    """``retry``/``retry_all``: a failed job runs again, with the same job_id."""
    DISCARD = "discard"
    """``discard``/``discard_all``: a pending, scheduled or failed job is removed and never runs."""
    RUN_NOW = "run_now"
    """``run_now``: a scheduled job becomes due at once."""
    PAUSE = "pause"
    """``pause``/``resume``: every worker stops taking a queue's jobs within `PAUSE_BOUND` seconds."""
    # Moving jobs between backends (`jobadapter.migrate`).
    MIGRATE_FROM = "migrate_from"
    """``jobadapter migrate`` can take jobs from it: ``jobs(state)`` lists pending, scheduled and
    failed jobs with their whole envelopes (non-jobadapter messages as records without one),
    ``discard`` deletes one for good, and ``running_workers`` says who still consumes a queue."""
    MIGRATE_TO = "migrate_to"
    """``jobadapter migrate`` can put jobs into it: ``enqueue_all`` keeps each envelope as it is
    (job_id, scheduled time, counts), and ``enqueue_failed`` files a failed job, with its error,
    straight into the failed store, where ``retry`` finds it."""


JOB_CAPABILITIES: frozenset[Capability] = frozenset(
    {
        Capability.EXTERNAL_WORKER,
        Capability.DELAYED,
        Capability.QUEUES,
        Capability.PRIORITY,
        Capability.BULK,
        Capability.FAILED_STORE,
        Capability.AT_LEAST_ONCE,
        Capability.GRACEFUL_SHUTDOWN,
    }
)
"""The features of running jobs."""
OPERATION_CAPABILITIES: frozenset[Capability] = frozenset(Capability) - JOB_CAPABILITIES
"""The features of operating them afterwards."""
EVERY_CAPABILITY: frozenset[Capability] = frozenset(Capability)
"""What a full-featured backend adapter declares (less what its broker cannot do)."""
PAUSE_BOUND = 2.0
"""Seconds within which every running worker stops taking a paused queue's jobs."""


@dataclass(frozen=True)
class AdapterURL:
    """A parsed ``JOBADAPTER_URL``: ``rq+redis://host:6379/0?x=1`` →
    adapter ``rq``, transport URL ``redis://host:6379/0``, query ``{"x": "1"}``."""

    text: str
    adapter: str
    transport: str | None
    target: str
    query: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> AdapterURL:
        if not isinstance(text, str) or "://" not in text:
            raise ConfigurationError(
                f"{text!r} is not an adapter URL: expected e.g. async://, inline:// or "
                "rq+redis://127.0.0.1:6379/0"
            )
        parts = urlsplit(text)
        scheme = parts.scheme
        if not scheme:
            raise ConfigurationError(f"adapter URL {redact(text)!r} has no scheme")
        adapter, _, transport = scheme.partition("+")
        # The transport URL is the text after "adapter+", as written: rebuilding it from its parts
        # would turn sqlite:////abs/path into sqlite://abs/path (a host).
        target = text[len(adapter) + 1 :].partition("#")[0] if transport else ""
        return cls(text, adapter, transport or None, target, dict(parse_qsl(parts.query)))

    @property
    def redacted(self) -> str:
        """The URL with any password replaced, fit for a log line."""
        return redact(self.text)

    def target_without(self, names: Collection[str]) -> str:
        """``target`` without the query options ``names`` (the adapter's own), as the backend's
        client should see it; the transport's own options stay."""
        base, _, query = self.target.partition("?")
        kept = [(key, value) for key, value in parse_qsl(query, keep_blank_values=True) if key not in names]
        return f"{base}?{urlencode(kept)}" if kept else base


def option_number(adapter: str, name: str, value: object, default: float, *, whole: bool = False) -> float:
    """An adapter option that is a number >= 0, from a URL query or a keyword (None: ``default``).

    ``whole`` refuses a fraction. A bad value raises `ConfigurationError` naming the option.
    """
    if value is None:
        return default
    try:
        number: float = int(str(value)) if whole else float(str(value))
    except ValueError:
        number = -1
    if number < 0 or number != number:
        kind = "a number >= 0 (a whole one)" if whole else "a number >= 0"
        raise ConfigurationError(f"{adapter} option {name} must be {kind}, not {value!r}")
    return number


def redact(url: str) -> str:
    """``amqp://guest:secret@host//`` → ``amqp://guest:***@host//``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


class EnqueueRequest(NamedTuple):
    """One job of a bulk enqueue: its envelope and its ``adapter_options``."""

    envelope: Envelope
    options: Mapping[str, Any] = MappingProxyType({})


class Adapter:
    """Base class of every adapter. Subclasses set ``name`` and ``capabilities`` and
    implement ``enqueue``, ``enqueue_at`` and, for a real backend, ``run_worker``."""

    name: ClassVar[str] = "Adapter"
    """Shown in log lines: ``Enqueued X (Job ID: …) to RQ(default)``."""
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    notes: ClassVar[Mapping[str, str]] = {}
    """Per capability or scenario: how the adapter maps the feature natively (matrix footnotes)."""
    accepted_options: ClassVar[frozenset[str]] = frozenset()
    """The ``set(adapter_options=...)`` keys this adapter honours; others are rejected."""
    backend_packages: ClassVar[tuple[str, ...]] = ()
    """Distributions whose versions the conformance results record (e.g. ``("rq", "redis")``)."""
    forks_per_job: ClassVar[bool] = False
    """Whether the worker forks a process for every job (RQ's work horse). Its journal then
    sends event writes to a writer process, so that each fork copies a smaller parent
    (`jobadapter.journal.forward`)."""

    def __init__(self, url: AdapterURL, **options: Any) -> None:
        self.url = url
        self.closed = False
        self.published_batches = 0
        """Batches ``enqueue_all`` published in one round trip or one transaction. An adapter that
        declares `Capability.BULK` adds one per such batch; the conformance suite reads it."""
        if options:
            raise ConfigurationError(
                f"the {self.name} adapter takes no option(s) {', '.join(sorted(options))}"
            )

    def check_options(self, options: Mapping[str, Any]) -> None:
        """Reject ``adapter_options`` this adapter does not know, naming them."""
        unknown = set(options) - self.accepted_options
        if unknown:
            known = ", ".join(sorted(self.accepted_options)) or "none"
            raise ConfigurationError(
                f"the {self.name} adapter does not know adapter_options {', '.join(sorted(unknown))} "
                f"(it accepts: {known})"
            )

    def enqueue(self, envelope: Envelope, options: Mapping[str, Any]) -> str | None:
        raise NotImplementedError

    def enqueue_at(self, envelope: Envelope, at: datetime, options: Mapping[str, Any]) -> str | None:
        raise NotImplementedError

    def enqueue_all(self, requests: Sequence[EnqueueRequest]) -> list[str | None]:
        """One publish per job; a failure says which leading jobs were taken (`EnqueueError.taken`)."""
        taken: list[str | None] = []
        for r in requests:
            try:
                if r.envelope.scheduled_at is None:
                    taken.append(self.enqueue(r.envelope, r.options))
                else:
                    taken.append(self.enqueue_at(r.envelope, r.envelope.scheduled_at, r.options))
            except EnqueueError as error:
                error.taken = taken  # the jobs before this one are in the queue
                raise
        return taken

    def schedule_retry(
        self, envelope: Envelope, at: datetime | None, options: Mapping[str, Any]
    ) -> str | None:
        if at is None:
            return self.enqueue(envelope, options)
        return self.enqueue_at(envelope, at, options)

    def enqueue_failed(self, envelopes: Sequence[tuple[Envelope, JobError]]) -> None:
        """File these jobs straight into the failed store, each with its error, as if they had
        failed here: ``jobs(FAILED)`` lists them and ``retry`` runs them again with their
        job_id. ``jobadapter migrate`` moves failed jobs with it (`Capability.MIGRATE_TO`).
        Raises `EnqueueError` when the backend did not take them all."""
        raise self._unsupported("file failed jobs into its failed store")

    def delete_moved(self, records: Sequence[JobRecord]) -> set[str]:
        """Delete these jobs, which ``jobs()`` just listed and ``jobadapter migrate`` copied
        elsewhere; returns the ids of those deleted (one a worker took meanwhile stays).

        The default discards them in one call, and one by one to learn which if some
        stayed. An adapter with a cheaper bulk delete overrides it."""
        ids = [record.job_id for record in records]
        with contextlib.suppress(JobAdapterError, ValueError):
            if self.discard(ids) == len(ids):
                return set(ids)
        deleted = set()
        for job_id in ids:
            try:
                if self.discard([job_id]):
                    deleted.add(job_id)
            except JobNotFound:
                deleted.add(job_id)  # deleted by the call for all
            except (JobAdapterError, ValueError):
                pass
        return deleted

    def drain_for_move(self, state: JobState, queue: str) -> Drain | None:
        """For a backend that cannot list or delete one message without consuming it (RabbitMQ):
        a `Drain` that takes ``queue``'s jobs in ``state`` off the broker unacknowledged, for
        ``jobadapter migrate`` to copy and then delete. None (the default): the move lists with
        ``jobs`` and deletes with ``delete_moved``."""
        return None

    def migration_ledger(self, move: str) -> Ledger | None:
        """Where ``jobadapter migrate`` may keep the ledger of ``move`` in this backend, as a
        target (`jobadapter.migrate.ledger`); None where the backend keeps no data of its own."""
        return None

    def running_workers(self, queues: Collection[str]) -> list[str]:
        """The workers (by name) that consume any of ``queues`` now, as far as the backend
        can tell. ``jobadapter migrate`` refuses to take jobs from under a running worker: a
        Celery or Dramatiq worker holds scheduled messages in its memory, where nobody else
        can read or delete them."""
        raise self._unsupported("tell which workers are running")

    def enqueue_payload(self, payload: str, queue_name: str) -> None:
        """Publish ``payload`` as is, unvalidated, as if another producer had written it.

        Only the conformance suite's poison-payload scenarios use this, to prove
        that the worker fails such a message into the failed store and goes on.
        """
        raise NotImplementedError(f"the {self.name} adapter cannot publish raw payloads")

    def purge(self, queue_names: Sequence[str]) -> None:
        """Delete the jobs waiting in these queues (the conformance suite cleans up with it)."""
        raise NotImplementedError(f"the {self.name} adapter cannot purge queues")

    def hostile_messages(self) -> Sequence[HostileMessage]:
        """Malformed messages in this backend's own wire format, for the fault suite.

        Bad envelopes inside good messages come from `jobadapter.faults.hostile`
        through ``enqueue_payload``; these are the ones only the adapter can
        write (random bytes on the transport, wrong types in the backend's own
        headers, unknown task names, pickle content, …).
        """
        raise NotImplementedError(f"the {self.name} adapter supplies no backend-level hostile messages")

    def run_worker(
        self, *, queues: Sequence[str] | None = None, concurrency: int = 1, burst: bool = False
    ) -> None:
        raise ConfigurationError(
            f"the {self.name} adapter runs jobs in the enqueuing process; it has no separate worker"
        )

    def close(self) -> None:
        self.closed = True

    # Optional inspection. Each raises NotImplementedError where the backend offers none.

    def queue_sizes(self) -> dict[str, int]:
        """Jobs waiting to run, by queue name."""
        raise NotImplementedError(f"the {self.name} adapter does not report queue sizes")

    def scheduled(self) -> list[Envelope]:
        """Jobs waiting for their time."""
        raise NotImplementedError(f"the {self.name} adapter does not list scheduled jobs")

    def failed(self) -> list[tuple[str, str]]:
        """Failed jobs as ``(payload, reason)``: the payload may not be a valid envelope."""
        raise NotImplementedError(f"the {self.name} adapter does not list failed jobs")

    def status(self, job_id: str) -> str | None:
        """The backend's state of a job (``queued``, ``scheduled``, ``started``, ``finished``,
        ``failed``…), or None when it does not know the id."""
        raise NotImplementedError(f"the {self.name} adapter does not report job status")

    # The operations contract (see `jobadapter.operations`). Each raises
    # OperationUnsupported, naming the reason, where the adapter lacks the capability.

    def queues(self) -> list[QueueInfo]:
        """Every queue the backend knows, with its pending, scheduled and failed counts."""
        raise self._unsupported("list queues")

    def jobs(
        self,
        state: JobState,
        *,
        filter: JobFilter = EVERY_JOB,
        limit: int = 50,
        offset: int = 0,
    ) -> list[JobRecord]:
        """The jobs in ``state`` that ``filter`` matches, oldest first, one page."""
        raise self._unsupported(f"list {state.value} jobs")

    def all_jobs(self, state: JobState, filter: JobFilter = EVERY_JOB) -> Iterator[JobRecord]:
        """Every job in ``state`` that ``filter`` matches, oldest first, one page in memory at
        a time: what the CLI counts before a bulk action. This default pages through `jobs`;
        an adapter whose listing reads up to each page's offset streams instead, so a walk
        over 100,000 jobs stays linear."""
        offset = 0
        while True:
            page = self.jobs(state, filter=filter, limit=OPERATION_PAGE, offset=offset)
            yield from page
            if len(page) < OPERATION_PAGE:
                return
            offset += len(page)

    def find(self, job_id: str) -> JobRecord:
        """The job with this id, wherever it is; raises `JobNotFound`."""
        raise self._unsupported("look up jobs by id")

    def retry(self, job_ids: Sequence[str]) -> int:
        """Publish these failed jobs again (same job_id); returns how many. An id that is
        not a failed job raises `JobNotFound` or `NotInState` before anything is retried."""
        raise self._unsupported("retry failed jobs")

    def retry_all(self, filter: JobFilter = EVERY_JOB, *, progress: Progress | None = None) -> int:
        """Retry every failed job ``filter`` matches, a page at a time; returns how many.
        ``progress`` is called with the number retried after each page."""
        return self._page_through(JobState.FAILED, filter, self.retry, progress)

    def discard(self, job_ids: Sequence[str]) -> int:
        """Remove these pending, scheduled or failed jobs for good: none of them runs
        afterwards. Returns how many were discarded."""
        raise self._unsupported("discard jobs")

    def discard_all(
        self, state: JobState, filter: JobFilter = EVERY_JOB, *, progress: Progress | None = None
    ) -> int:
        """Discard every job in ``state`` (pending, scheduled or failed) that ``filter``
        matches, a page at a time; returns how many. ``progress`` as for ``retry_all``."""
        if state not in (JobState.PENDING, JobState.SCHEDULED, JobState.FAILED):
            raise ValueError(f"only pending, scheduled or failed jobs can be discarded, not {state.value}")
        return self._page_through(state, filter, self.discard, progress)

    def discarded(self, envelope: Envelope) -> bool:
        """Whether this message must not run: an operator discarded its job, or ``run_now``
        superseded its schedule, while the backend could not delete the message (an ETA
        message in a worker's memory, a prefetched one). `jobadapter.execution.execute`
        asks before perform and skips such a message. It gets the whole envelope so a
        tombstone can name one schedule of a job (its ``scheduled_at``) as well as the
        job. An adapter that deletes every such message natively keeps this default."""
        return False

    def run_now(self, job_id: str) -> None:
        """Make a scheduled job due at once (it keeps its job_id)."""
        raise self._unsupported("run scheduled jobs now")

    def pause(self, queue: str) -> None:
        """Stop every worker from taking this queue's jobs (within `PAUSE_BOUND`); jobs keep
        arriving and wait. Running jobs finish."""
        raise self._unsupported("pause queues")

    def resume(self, queue: str) -> None:
        """Undo ``pause``: workers take the queue's jobs again."""
        raise self._unsupported("pause queues")

    def _page_through(
        self,
        state: JobState,
        filter: JobFilter,
        act: Callable[[Sequence[str]], int],
        progress: Progress | None,
    ) -> int:
        """Apply ``act`` to every job in ``state`` matching ``filter``, one page in memory at a
        time. Jobs ``act`` leaves in place (say, an unreadable payload retry cannot publish)
        are stepped over, so the walk ends."""
        done = 0
        skipped = 0
        while True:
            page = self.jobs(state, filter=filter, limit=OPERATION_PAGE, offset=skipped)
            if not page:
                return done
            acted = act([record.job_id for record in page])
            done += acted
            if progress is not None:
                progress(acted)
            skipped += len(page) - acted

    def _unsupported(self, what: str) -> OperationUnsupported:
        return OperationUnsupported(f"the {self.name} adapter cannot {what}")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url.redacted}>"


class Drain:
    """One queue's jobs of one state, taken off a broker that cannot list without consuming
    (`Adapter.drain_for_move`). Each taken message stays unacknowledged until ``delete`` acknowledges it
    or ``close`` gives every other one back to the broker, in place; a crash gives them back
    too. Messages of another state met on the way are held the same way, unseen."""

    def take(self, limit: int) -> list[JobRecord]:
        """Up to ``limit`` more jobs (records without an envelope for messages that are not
        jobadapter jobs); an empty list when none is left."""
        raise NotImplementedError

    def delete(self, records: Sequence[JobRecord]) -> set[str]:
        """Acknowledge these taken jobs (they are gone from the broker); returns their ids."""
        raise NotImplementedError

    def close(self) -> None:
        """Give back every message taken and not deleted."""
        raise NotImplementedError


Progress = Callable[[int], object]
"""Told how many jobs a bulk operation just handled (the CLI's progress bar)."""
OPERATION_PAGE = 500
"""How many jobs a bulk operation (``retry_all``, ``discard_all``) holds in memory at once."""
