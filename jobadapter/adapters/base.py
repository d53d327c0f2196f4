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
  this process, calling `jobadapter.execution.execute(payload, adapter)` for
  each message. ``execute`` raises when the job failed for good (or the payload
  is not a runnable envelope): the worker records that in its failed store.
- ``close()``; and, optionally, inspection: ``queue_sizes``, ``scheduled``,
  ``failed`` and ``status(job_id)``; ``enqueue_payload`` (publish raw bytes, for
  the conformance suite's poison-payload scenarios) and ``purge(queue_names)``.
- ``capabilities``: the features the adapter supports, from `Capability`. The
  conformance suite runs a scenario only when its capability is declared and
  reports the rest as unsupported; ``notes`` say how each feature is mapped.

An adapter is constructed from its parsed URL (`AdapterURL`) plus keyword
options, and is found through the ``jobadapter.adapters`` entry-point group by
the URL's scheme (the part before ``+``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from types import MappingProxyType
from typing import Any, ClassVar, NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from jobadapter.envelope import Envelope
from jobadapter.errors import ConfigurationError


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


EVERY_CAPABILITY: frozenset[Capability] = frozenset(Capability)
"""What a full-featured backend adapter declares (less what its broker cannot do)."""


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
        target = urlunsplit((transport, parts.netloc, parts.path, parts.query, "")) if transport else ""
        return cls(text, adapter, transport or None, target, dict(parse_qsl(parts.query)))

    @property
    def redacted(self) -> str:
        """The URL with any password replaced, fit for a log line."""
        return redact(self.text)

    def target_without(self, names: Collection[str]) -> str:
        """``target`` without the query options ``names`` (the adapter's own), as the backend's
        client should see it; the transport's own options stay."""
        parts = urlsplit(self.target)
        kept = [(key, value) for key, value in parse_qsl(parts.query) if key not in names]
        return urlunsplit(parts._replace(query=urlencode(kept)))


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

    def __init__(self, url: AdapterURL, **options: Any) -> None:
        self.url = url
        self.closed = False
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
        return [
            self.enqueue(r.envelope, r.options)
            if r.envelope.scheduled_at is None
            else self.enqueue_at(r.envelope, r.envelope.scheduled_at, r.options)
            for r in requests
        ]

    def schedule_retry(
        self, envelope: Envelope, at: datetime | None, options: Mapping[str, Any]
    ) -> str | None:
        if at is None:
            return self.enqueue(envelope, options)
        return self.enqueue_at(envelope, at, options)

    def enqueue_payload(self, payload: str, queue_name: str) -> None:
        """Publish ``payload`` as is, unvalidated, as if another producer had written it.

        Only the conformance suite's poison-payload scenarios use this, to prove
        that the worker fails such a message into the failed store and goes on.
        """
        raise NotImplementedError(f"the {self.name} adapter cannot publish raw payloads")

    def purge(self, queue_names: Sequence[str]) -> None:
        """Delete the jobs waiting in these queues (the conformance suite cleans up with it)."""
        raise NotImplementedError(f"the {self.name} adapter cannot purge queues")

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

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url.redacted}>"
