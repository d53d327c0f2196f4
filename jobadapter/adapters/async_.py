"""``async://?workers=N``: an in-process thread pool, the default adapter.

Jobs run on ``workers`` daemon threads (default: the number of CPUs) in the
enqueuing process; no server is needed and nothing survives the process. Due
jobs run most urgent priority first (a lower number; None counts as 0), then
in enqueue order; delayed jobs and retries wait in a timer heap until their
time. Queue names are recorded and every queue is served, unless paused.

At interpreter exit the pool drains: it waits for running and due jobs, and
for delayed ones that come due within ``drain_timeout`` seconds (default 10);
a warning names how many later jobs are dropped. ``close()`` drains the same
way. An unhandled error is logged and kept in ``failed()``.

The operations contract is answered from the pool's own book of jobs
(`jobadapter.adapters.book`): pending, scheduled, running, failed, and the last
``history`` finished ones (default 1000).
"""

from __future__ import annotations

import atexit
import heapq
import logging
import os
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, ClassVar

from jobadapter.adapters.base import Adapter, AdapterURL, Capability
from jobadapter.adapters.book import Book
from jobadapter.envelope import Envelope, decode
from jobadapter.errors import ConfigurationError, InvalidEnvelope
from jobadapter.execution import execute
from jobadapter.operations import EVERY_JOB, JobFilter, JobRecord, JobState, QueueInfo

_logger = logging.getLogger("jobadapter")


class AsyncAdapter(Adapter):
    name: ClassVar[str] = "Async"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.DELAYED,
            Capability.PRIORITY,
            Capability.FAILED_STORE,
            Capability.INSPECT,
            Capability.RETRY,
            Capability.DISCARD,
            Capability.RUN_NOW,
            Capability.PAUSE,
        }
    )
    notes: ClassVar[Mapping[str, str]] = {
        Capability.DELAYED.value: "a timer heap in the process",
        Capability.PRIORITY.value: (
            "due jobs run by priority, then enqueue order; the scenario needs a worker it can stop, "
            "which an in-process pool is not"
        ),
        Capability.INSPECT.value: (
            "the pool's own book of jobs, in memory; the last `history` (1000) finished jobs are kept"
        ),
        Capability.PAUSE.value: "the pool's threads skip a paused queue's jobs",
    }

    def __init__(
        self,
        url: AdapterURL,
        *,
        workers: int | None = None,
        drain_timeout: float | None = None,
        history: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__(url, **options)
        self.workers = _positive_int(workers if workers is not None else url.query.get("workers"), "workers")
        self.drain_timeout = float(
            drain_timeout if drain_timeout is not None else url.query.get("drain_timeout", 10)
        )
        self._condition = threading.Condition()
        self._ready: list[tuple[int, int, str]] = []
        self._delayed: list[tuple[float, int, int, str]] = []
        self._sequence = 0
        self._running = 0
        self._stopping = False
        self._paused: set[str] = set()
        self._book = Book(
            _positive_int(history if history is not None else url.query.get("history", 1000), "history")
        )
        self._threads: list[threading.Thread] = []
        reference = weakref.ref(self)
        atexit.register(_drain_at_exit, reference)

    # -- enqueueing --------------------------------------------------------------------

    def enqueue(self, envelope: Envelope, options: Mapping[str, Any]) -> str | None:
        payload = envelope.encode()
        with self._condition:
            sequence = self._push_ready(envelope.priority, payload)
            self._book.waiting(envelope, payload, sequence, JobState.PENDING)
            self._start_threads()
            self._condition.notify()
        return envelope.job_id

    def enqueue_at(self, envelope: Envelope, at: datetime, options: Mapping[str, Any]) -> str | None:
        delay = (at - datetime.now(timezone.utc)).total_seconds()
        due = time.monotonic() + max(delay, 0.0)
        payload = envelope.encode()
        with self._condition:
            self._sequence += 1
            heapq.heappush(self._delayed, (due, _rank(envelope.priority), self._sequence, payload))
            self._book.waiting(envelope, payload, self._sequence, JobState.SCHEDULED)
            self._start_threads()
            self._condition.notify_all()
        return envelope.job_id

    def enqueue_payload(self, payload: str, queue_name: str) -> None:
        with self._condition:
            self._push_ready(None, payload)
            self._start_threads()
            self._condition.notify()

    def purge(self, queue_names: Sequence[str]) -> None:
        doomed = set(queue_names)

        def keep(payload: str) -> bool:
            try:
                return decode(payload).queue_name not in doomed
            except InvalidEnvelope:
                return True

        with self._condition:
            self._ready = [item for item in self._ready if keep(item[2])]
            self._delayed = [item for item in self._delayed if keep(item[3])]
            heapq.heapify(self._ready)
            heapq.heapify(self._delayed)
            self._book.forget_waiting(doomed)

    # -- inspection and operations -------------------------------------------------------

    def queue_sizes(self) -> dict[str, int]:
        return {info.name: info.pending for info in self.queues() if info.pending}

    def scheduled(self) -> list[Envelope]:
        with self._condition:
            payloads = [item[3] for item in sorted(self._delayed)]
        return [decode(payload) for payload in payloads]

    def failed(self) -> list[tuple[str, str]]:
        with self._condition:
            return self._book.failures()

    def queues(self) -> list[QueueInfo]:
        with self._condition:
            return self._book.queues(self._paused)

    def jobs(
        self, state: JobState, *, filter: JobFilter = EVERY_JOB, limit: int = 50, offset: int = 0
    ) -> list[JobRecord]:
        with self._condition:
            return self._book.records(state, filter, limit, offset)

    def find(self, job_id: str) -> JobRecord:
        with self._condition:
            return self._book.find(job_id)

    def retry(self, job_ids: Sequence[str]) -> int:
        with self._condition:
            entries = [self._book.expect(job_id, JobState.FAILED) for job_id in job_ids]
            for entry in entries:
                assert entry.envelope is not None  # expect() refuses unreadable payloads for retry
                sequence = self._push_ready(entry.envelope.priority, entry.payload)
                self._book.waiting(entry.envelope, entry.payload, sequence, JobState.PENDING)
            self._start_threads()
            self._condition.notify_all()
        return len(entries)

    def discard(self, job_ids: Sequence[str]) -> int:
        with self._condition:
            entries = [
                self._book.expect(job_id, JobState.PENDING, JobState.SCHEDULED, JobState.FAILED)
                for job_id in job_ids
            ]
            doomed = {entry.sequence for entry in entries}
            self._ready = [item for item in self._ready if item[1] not in doomed]
            self._delayed = [item for item in self._delayed if item[2] not in doomed]
            heapq.heapify(self._ready)
            heapq.heapify(self._delayed)
            for job_id in job_ids:
                self._book.forget(job_id)
        return len(entries)

    def run_now(self, job_id: str) -> None:
        with self._condition:
            entry = self._book.expect(job_id, JobState.SCHEDULED)
            assert entry.envelope is not None  # only envelopes are ever scheduled
            self._delayed = [item for item in self._delayed if item[2] != entry.sequence]
            heapq.heapify(self._delayed)
            sequence = self._push_ready(entry.envelope.priority, entry.payload)
            self._book.waiting(entry.envelope, entry.payload, sequence, JobState.PENDING)
            self._condition.notify_all()

    def pause(self, queue: str) -> None:
        with self._condition:
            self._paused.add(queue)

    def resume(self, queue: str) -> None:
        with self._condition:
            self._paused.discard(queue)
            self._condition.notify_all()

    # -- lifecycle -----------------------------------------------------------------------

    def close(self, timeout: float | None = None) -> None:
        """Stop taking jobs, then drain (see the module docstring) and stop the threads."""
        if self.closed:
            return
        self.drain(self.drain_timeout if timeout is None else timeout)
        super().close()
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)

    def drain(self, timeout: float) -> bool:
        """Wait until nothing is running or due, and no delayed job comes due within ``timeout``.
        Returns False (and logs how many jobs are left) if jobs remain. Jobs of a paused
        queue are not waited for: they are counted as left."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while True:
                pending_soon = any(due <= deadline for due, *_ in self._delayed)
                runnable = any(not self._is_paused(item[2]) for item in self._ready)
                if not runnable and not self._running and not pending_soon:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._condition.wait(min(remaining, 0.05))
            left = len(self._ready) + len(self._delayed) + self._running
        if left:
            _logger.warning("async:// stopped with %d job(s) not run: they are lost", left)
        return not left

    # -- the pool ------------------------------------------------------------------------

    def _push_ready(self, priority: int | None, payload: str) -> int:
        self._sequence += 1
        heapq.heappush(self._ready, (_rank(priority), self._sequence, payload))
        return self._sequence

    def _start_threads(self) -> None:
        while len(self._threads) < self.workers:
            thread = threading.Thread(
                target=self._work, name=f"jobadapter-async-{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _work(self) -> None:
        while True:
            with self._condition:
                taken = self._next_payload()
                if taken is None:
                    return
                sequence, payload = taken
                self._running += 1
                self._book.started(sequence)
            try:
                envelope = decode(payload)
                execute(envelope, self, envelope.job_id)  # enqueue returned the job_id as its id
            except Exception as error:
                _logger.error("async:// job failed: %s: %s", type(error).__name__, error)
                with self._condition:
                    self._book.ended(sequence, payload, error)
            else:
                with self._condition:
                    self._book.ended(sequence, payload, None)
            finally:
                with self._condition:
                    self._running -= 1
                    self._condition.notify_all()

    def _is_paused(self, payload: str) -> bool:
        return bool(self._paused) and self._book.queue_of(payload) in self._paused

    def _next_payload(self) -> tuple[int, str] | None:
        """Block until a job of a queue that is not paused is due (moving due delayed jobs
        over); None once stopping."""
        while True:
            now = time.monotonic()
            while self._delayed and self._delayed[0][0] <= now:
                _, rank, sequence, payload = heapq.heappop(self._delayed)
                heapq.heappush(self._ready, (rank, sequence, payload))
                self._book.due(sequence)
            held: list[tuple[int, int, str]] = []
            taken = None
            while self._ready:
                item = heapq.heappop(self._ready)
                if self._is_paused(item[2]):
                    held.append(item)
                    continue
                taken = (item[1], item[2])
                break
            for item in held:
                heapq.heappush(self._ready, item)
            if taken is not None:
                return taken
            if self._stopping:
                return None
            timeout = self._delayed[0][0] - now if self._delayed else None
            self._condition.wait(timeout)


def _rank(priority: int | None) -> int:
    return 0 if priority is None else priority


def _positive_int(value: object, name: str) -> int:
    if value is None:
        return os.cpu_count() or 2
    try:
        number = int(str(value))
    except ValueError:
        number = 0
    if number < 1:
        raise ConfigurationError(f"async:// {name} must be a whole number >= 1, not {value!r}")
    return number


def _drain_at_exit(reference: weakref.ref[AsyncAdapter]) -> None:
    adapter = reference()
    if adapter is not None and not adapter.closed:
        adapter.close()
