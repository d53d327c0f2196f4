"""``test://``: records jobs instead of running them, for application tests.

Each enqueue is encoded to a real envelope and decoded again, so a test fails
on an argument a backend could not carry. ``perform_enqueued`` then runs what
is waiting through the worker path (`execution.execute`), in scheduled order,
including what those jobs enqueue and their retries, until nothing is left.
See `jobadapter.testing` for the ``jobs`` fixture built on it.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from jobadapter import registry
from jobadapter.adapters.base import Adapter, AdapterURL, Capability
from jobadapter.envelope import Envelope, decode
from jobadapter.errors import DeserializationError
from jobadapter.execution import perform

if TYPE_CHECKING:
    from jobadapter.job import Job

MAX_PERFORMS = 10_000
"""``perform_enqueued`` stops with an error after this many executions (a job that
re-enqueues itself forever, or ``attempts="unlimited"`` on a permanent error)."""


@dataclass(frozen=True)
class _Pending:
    order: tuple[datetime, int]
    payload: str
    provider_job_id: str


class TestAdapter(Adapter):
    __test__ = False  # not a pytest test class, despite its name
    name: ClassVar[str] = "Test"
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.DELAYED, Capability.BULK})
    accepted_options: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, url: AdapterURL | None = None, **options: Any) -> None:
        super().__init__(url or AdapterURL.parse("test://"), **options)
        self.enqueued: list[Job] = []
        self.performed: list[Job] = []
        self._pending: list[_Pending] = []
        self._counter = itertools.count()
        self._lock = threading.Lock()

    def enqueue(self, envelope: Envelope, options: Mapping[str, Any]) -> str | None:
        return self._record(envelope)

    def enqueue_at(self, envelope: Envelope, at: datetime, options: Mapping[str, Any]) -> str | None:
        return self._record(envelope)

    def _record(self, envelope: Envelope) -> str:
        payload = envelope.encode()
        carried = decode(payload)
        job = registry.lookup(carried.job_class).from_envelope(carried)
        with contextlib.suppress(DeserializationError):
            job.load_arguments()  # a retry of a job whose arguments no longer load keeps them stored
        job.provider_job_id = f"test-{next(self._counter)}"
        with self._lock:
            self.enqueued.append(job)
            self._pending.append(
                _Pending(
                    (carried.scheduled_at or carried.enqueued_at, len(self.enqueued)),
                    payload,
                    job.provider_job_id,
                )
            )
        return job.provider_job_id

    @property
    def pending(self) -> list[Envelope]:
        """Envelopes enqueued and not yet performed, in the order they would run."""
        with self._lock:
            return [decode(p.payload) for p in sorted(self._pending, key=lambda p: p.order)]

    def perform_enqueued(self, select: Callable[[Envelope], bool] | None = None) -> list[Job]:
        """Run everything waiting (that ``select`` accepts), and whatever that enqueues, earliest
        first, until none is left; the others stay waiting. An unhandled error is raised here
        (the failing job is dropped from the queue)."""
        ran: list[Job] = []
        for _ in range(MAX_PERFORMS):
            with self._lock:
                self._pending.sort(key=lambda p: p.order)
                chosen = next((p for p in self._pending if select is None or select(decode(p.payload))), None)
                if chosen is None:
                    return ran
                self._pending.remove(chosen)
                pending = chosen
            job = self._perform(pending.payload, pending.provider_job_id)
            ran.append(job)
        raise RuntimeError(
            f"perform_enqueued ran {MAX_PERFORMS} jobs and more keep coming: "
            "a job re-enqueues itself forever?"
        )

    def _perform(self, payload: str, provider_job_id: str) -> Job:
        envelope = decode(payload)
        job = registry.lookup(envelope.job_class).from_envelope(envelope)
        job.provider_job_id = provider_job_id
        self.performed.append(job)
        perform(job, self)
        return job

    def clear(self) -> None:
        """Forget everything recorded."""
        with self._lock:
            self.enqueued.clear()
            self.performed.clear()
            self._pending.clear()
