"""``inline://``: run each job at once, in the caller's thread, like Celery's eager mode.

Every job still goes through the real envelope (encode, decode, registry), so
what works inline works on a real backend. A delay is not honoured: a delayed
job or a retry runs as soon as the current job finishes, and a log line says
the wait was skipped. Jobs enqueued while a job runs (by the job itself, or by
a retry) queue up and run after it, in order, so retries never recurse. An
unhandled error is raised to whoever called ``perform_later``.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, ClassVar

from jobadapter.adapters.base import Adapter, AdapterURL, Capability
from jobadapter.envelope import Envelope
from jobadapter.execution import execute

_logger = logging.getLogger("jobadapter")


class InlineAdapter(Adapter):
    name: ClassVar[str] = "Inline"
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    notes: ClassVar[Mapping[str, str]] = {
        Capability.DELAYED.value: "runs delayed jobs and retries at once, logging the skipped wait",
        Capability.INSPECT.value: (
            "a job runs inside perform_later: none is ever pending, scheduled or kept to operate on "
            "(Job.lookup and results still work through the journal)"
        ),
    }

    def __init__(self, url: AdapterURL, **options: Any) -> None:
        super().__init__(url, **options)
        self._local = threading.local()

    def enqueue(self, envelope: Envelope, options: Mapping[str, Any]) -> str | None:
        pending: deque[tuple[str, str]] | None = getattr(self._local, "pending", None)
        if pending is not None:
            pending.append((envelope.encode(), envelope.job_id))
            return envelope.job_id
        self._local.pending = pending = deque([(envelope.encode(), envelope.job_id)])
        try:
            while pending:
                payload, provider_job_id = pending.popleft()
                execute(payload, self, provider_job_id)
        finally:
            self._local.pending = None
        return envelope.job_id

    def enqueue_at(self, envelope: Envelope, at: datetime, options: Mapping[str, Any]) -> str | None:
        wait = (at - datetime.now(timezone.utc)).total_seconds()
        if wait > 0:
            _logger.info(
                "inline:// runs %s (Job ID: %s) now, skipping its wait of %.1f s",
                envelope.job_class,
                envelope.job_id,
                wait,
            )
        return self.enqueue(envelope, options)
