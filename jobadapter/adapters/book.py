"""The async:// pool's book of jobs: where each one is, for the operations contract.

An in-process pool has no broker to ask, so it keeps the answer itself: one
entry per job id, moved from state to state under the pool's lock as the pool
moves the job (waiting, due, started, ended). Finished jobs are kept up to a
bound (``history``), oldest forgotten first; failed ones stay until retried or
discarded, as in a backend's failed store.

Each entry remembers the sequence number of the message it describes. A job
that re-enqueues itself (``retry_on``) gets a new entry while its previous
execution is still ending, and that execution's end must not overwrite it: an
end whose sequence is not the entry's is ignored.
"""

from __future__ import annotations

import dataclasses
import itertools
import traceback
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone

from jobadapter.envelope import Envelope, decode
from jobadapter.errors import InvalidEnvelope, JobAdapterError
from jobadapter.operations import JobError, JobFilter, JobNotFound, JobRecord, JobState, NotInState, QueueInfo


@dataclass
class Entry:
    envelope: Envelope | None
    """None for a payload that is not a valid envelope (it can only fail)."""
    payload: str
    state: JobState
    sequence: int
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: JobError | None = None

    def record(self, job_id: str) -> JobRecord:
        if self.envelope is None:
            record = JobRecord(job_id, "?", "?", self.state, payload=self.payload)
        else:
            record = JobRecord.from_envelope(self.envelope, self.state, provider_job_id=job_id)
        return dataclasses.replace(
            record, started_at=self.started_at, finished_at=self.finished_at, error=self.error
        )


class Book:
    """Every job the pool holds or remembers, by job id (callers hold the pool's lock)."""

    def __init__(self, history: int) -> None:
        self.history = history
        self._entries: dict[str, Entry] = {}
        self._by_sequence: dict[int, str] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()

    def waiting(self, envelope: Envelope, payload: str, sequence: int, state: JobState) -> None:
        """The job was put on the pool as ``sequence``: due (pending) or delayed (scheduled)."""
        job_id = envelope.job_id
        self._finished.pop(job_id, None)
        self._entries[job_id] = Entry(envelope, payload, state, sequence)
        self._by_sequence[sequence] = job_id

    def due(self, sequence: int) -> None:
        entry = self._entry_of(sequence)
        if entry is not None:
            entry.state = JobState.PENDING

    def started(self, sequence: int) -> None:
        entry = self._entry_of(sequence)
        if entry is not None:
            entry.state = JobState.RUNNING
            entry.started_at = datetime.now(timezone.utc)

    def ended(self, sequence: int, payload: str, error: BaseException | None) -> None:
        """The execution of ``sequence`` ended, with ``error`` if it failed for good."""
        job_id = self._by_sequence.pop(sequence, None)
        now = datetime.now(timezone.utc)
        if job_id is None:  # a raw payload (not a job this pool was given as an envelope)
            if error is not None:
                job_id = f"payload-{sequence}"
                self._entries[job_id] = Entry(
                    _envelope_or_none(payload), payload, JobState.FAILED, sequence, None, now, _error(error)
                )
            return
        entry = self._entries.get(job_id)
        if entry is None or entry.sequence != sequence:
            return  # discarded meanwhile, or re-enqueued by its own retry
        entry.finished_at = now
        if error is not None:
            entry.state = JobState.FAILED
            entry.error = _error(error)
            return
        entry.state = JobState.FINISHED
        self._finished[job_id] = None
        while len(self._finished) > self.history:
            forgotten, _ = self._finished.popitem(last=False)
            self._entries.pop(forgotten, None)

    def forget(self, job_id: str) -> None:
        entry = self._entries.pop(job_id, None)
        if entry is not None:
            self._by_sequence.pop(entry.sequence, None)
            self._finished.pop(job_id, None)

    def forget_waiting(self, queues: set[str]) -> None:
        """Drop the pending and scheduled entries of ``queues`` (they were purged)."""
        for job_id, entry in list(self._entries.items()):
            waiting = entry.state in (JobState.PENDING, JobState.SCHEDULED)
            if waiting and entry.envelope is not None and entry.envelope.queue_name in queues:
                self.forget(job_id)

    def expect(self, job_id: str, *states: JobState) -> Entry:
        """The entry of ``job_id``, which must be in one of ``states`` (and runnable)."""
        entry = self._entries.get(job_id)
        if entry is None:
            raise JobNotFound(job_id)
        if entry.state not in states:
            raise NotInState(job_id, entry.state, states)
        if entry.envelope is None and JobState.FAILED in states and len(states) == 1:
            raise JobAdapterError(f"job {job_id!r} is an unreadable payload: it can only be discarded")
        return entry

    def find(self, job_id: str) -> JobRecord:
        entry = self._entries.get(job_id)
        if entry is None:
            raise JobNotFound(job_id)
        return entry.record(job_id)

    def records(self, state: JobState, filter: JobFilter, limit: int, offset: int) -> list[JobRecord]:
        matching = (
            record
            for record in (entry.record(job_id) for job_id, entry in self._in_order(state))
            if filter.matches(record)
        )
        return list(itertools.islice(matching, offset, offset + limit))

    def failures(self) -> list[tuple[str, str]]:
        return [(entry.payload, str(entry.error)) for _, entry in self._in_order(JobState.FAILED)]

    def _in_order(self, state: JobState) -> list[tuple[str, Entry]]:
        """The entries in ``state``, oldest message first."""
        found = [(job_id, entry) for job_id, entry in self._entries.items() if entry.state == state]
        return sorted(found, key=lambda item: item[1].sequence)

    def queues(self, paused: set[str]) -> list[QueueInfo]:
        counts: dict[str, dict[JobState, int]] = {name: {} for name in paused}
        for entry in self._entries.values():
            queue = entry.envelope.queue_name if entry.envelope is not None else "?"
            per_state = counts.setdefault(queue, {})
            per_state[entry.state] = per_state.get(entry.state, 0) + 1
        return [
            QueueInfo(
                name,
                per_state.get(JobState.PENDING, 0),
                per_state.get(JobState.SCHEDULED, 0),
                per_state.get(JobState.FAILED, 0),
                name in paused,
            )
            for name, per_state in sorted(counts.items())
        ]

    def queue_of(self, payload: str) -> str | None:
        envelope = _envelope_or_none(payload)
        return None if envelope is None else envelope.queue_name

    def _entry_of(self, sequence: int) -> Entry | None:
        job_id = self._by_sequence.get(sequence)
        return None if job_id is None else self._entries.get(job_id)


def _envelope_or_none(payload: str) -> Envelope | None:
    try:
        return decode(payload)
    except InvalidEnvelope:
        return None


def _error(error: BaseException) -> JobError:
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return JobError(type(error).__name__, str(error), text)
