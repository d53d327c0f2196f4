"""The operations contract on Celery: list, find, retry, discard, run now, pause and resume.

The broker is the truth about where a job is, so every answer it can give is
read from it; what it cannot keep comes from the journal (`jobadapter.journal`,
configured by ``JOBADAPTER_JOURNAL``) or, for finished jobs, from Celery's own
Redis result keys.

**Redis** (`RedisOperations`) is fully native. A waiting job is an entry in
one of its queue's lists (one per priority step); a job a worker holds is an
entry in that worker's unacked hash (``jobadapter.celery.unacked.<node>``,
`jobadapter_celery.worker.Lifeline`), ETA messages included; a failed job is
an entry in the dead-letter queue. An entry whose envelope's ``scheduled_at``
is in the future is *scheduled*, wherever it is; a due entry in a list is
*pending*, a due entry in an unacked hash is *running* (held by a worker that
is performing it or about to). Finished jobs come from the journal when one is
configured, else from Celery's result keys (``results=1``). Discard and
run-now delete a list entry atomically (``LREM``); a message a worker already
holds (ETA in its memory, or prefetched) cannot be taken back, so a tombstone
key (``jobadapter.celery.tombstone.<job_id>`` or ``…<job_id>@<scheduled_at>``)
makes the worker skip it, and its unacked entry is deleted so no restore
brings it back. Paused queues are a Redis set every worker polls.

**RabbitMQ** (`AmqpOperations`) cannot list or delete a message without
consuming it, and ETA messages sit in worker memory. Failed jobs are the
dead-letter queue, read by taking messages without acknowledging them (closing
the channel gives them back), so ``jobs(FAILED)``, ``retry`` and discarding a
failed job are native. Pending counts come from a passive ``queue_declare``.
Everything else (listing pending, scheduled, running and finished jobs;
tombstones; the paused set) needs the journal; without one those operations
raise `OperationUnsupported` naming ``JOBADAPTER_JOURNAL``, and the adapter
does not declare their capabilities.

Pause is applied by each worker to itself with Celery's consumer control
(`jobadapter_celery.worker.PauseWatch`); ``pause`` also broadcasts Celery's
``cancel_consumer`` so running workers stop at once rather than at their next poll.
"""

from __future__ import annotations

import base64
import heapq
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from itertools import islice
from typing import TYPE_CHECKING, Any

import redis
from celery.backends.redis import RedisBackend  # type: ignore[import-untyped]

from jobadapter import journal as journal_module
from jobadapter.adapters.base import OPERATION_CAPABILITIES, Capability, Progress
from jobadapter.envelope import Envelope, decode, format_timestamp
from jobadapter.errors import InvalidEnvelope
from jobadapter.operations import (
    JobError,
    JobFilter,
    JobNotFound,
    JobRecord,
    JobState,
    NotInState,
    OperationUnsupported,
    QueueInfo,
)
from jobadapter_celery.transport import FAILED_AT_HEADER

if TYPE_CHECKING:
    from jobadapter.journal.store import Journal
    from jobadapter_celery.adapter import CeleryAdapter

_logger = logging.getLogger("jobadapter")

KEY_PREFIX = "jobadapter.celery"
PAUSED_KEY = f"{KEY_PREFIX}.paused"
"""The Redis set of paused queue names."""
TOMBSTONE_TTL = 7 * 24 * 3600
"""Seconds a Redis tombstone is kept: far beyond any hop (``horizon``) or ``visibility_timeout``,
so a held message is gone long before its tombstone."""
JOURNAL_VARIABLE = journal_module.ENVIRONMENT_VARIABLE
_SEP = "\x06\x16"
"""kombu's separator in a priority step's list key (``queue\\x06\\x16<step>``)."""
_CHUNK = 500
_EXPIRY_SCAN = 100
"""How many of the oldest dead letters each expiry looks at (it runs at every new one)."""
_EXPIRE_DEAD_LETTERS = """
local key, cutoff, most, header = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local oldest = redis.call('LRANGE', key, -most, -1)
local expired = {}
for index = #oldest, 1, -1 do
  local ok, message = pcall(cjson.decode, oldest[index])
  local at = nil
  if ok and type(message) == 'table' and type(message['headers']) == 'table' then
    at = tonumber(message['headers'][header])
  end
  if at ~= nil then
    if at >= cutoff then break end
    table.insert(expired, oldest[index])
  end
end
for _, entry in ipairs(expired) do
  redis.call('LREM', key, -1, entry)
end
return #expired
"""
WORKER_QUEUES_TTL = 30.0
"""Seconds `AmqpOperations.queues` reuses the queue names the workers reported."""
DEAD_LETTER_PATIENCE = 2.0
"""Seconds a command on given dead letters keeps looking for ones another channel held."""
_NO_ETA = b'"eta": null'
"""How kombu's JSON writes the ``eta`` header of a message published without one."""
_DEFAULT_STEPS = [0, 3, 6, 9]
"""kombu's default priority steps, for an attached app that sets none."""
_DISCARDABLE = (JobState.PENDING, JobState.SCHEDULED, JobState.FAILED)
MIGRATE_TO_NOTE = "enqueue_all through one producer; a failed job is a dead letter with its error"
MIGRATE_FROM_AMQP_NOTE = (
    "the queue and the dead-letter queue taken with unacknowledged basic_get, each moved message "
    "acked, the rest given back; running workers from inspect active_queues; needs --queues"
)


def active_journal() -> Journal | None:
    """The journal this process writes to (``JOBADAPTER_JOURNAL``), or None."""
    return journal_module.active()


def tombstone_keys(envelope: Envelope) -> list[str]:
    """The tombstones that stop this message: its job's, and its schedule's (run_now)."""
    keys = [envelope.job_id]
    if envelope.scheduled_at is not None:
        keys.append(schedule_key(envelope.job_id, envelope.scheduled_at))
    return keys


def schedule_key(job_id: str, scheduled_at: datetime) -> str:
    return f"{job_id}@{format_timestamp(scheduled_at)}"


def check_queue(queue: object) -> str:
    if not isinstance(queue, str) or not queue:
        raise ValueError(f"a queue name must be a non-empty string, not {queue!r}")
    return queue


# -- reading Celery messages ----------------------------------------------------------------


def message_envelope(message: Any) -> Envelope | None:
    """The envelope a kombu message document carries (a task whose one argument is the
    envelope text), or None when it carries none."""
    try:
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        arguments = json.loads(body)[0]
        if len(arguments) != 1 or not isinstance(arguments[0], str):
            return None
        return decode(arguments[0])
    except (InvalidEnvelope, ValueError, KeyError, IndexError, TypeError, AttributeError, RecursionError):
        return None


def message_options(message: Any) -> dict[str, Any]:
    """The ``adapter_options`` a message was published with (time limits, expiry), so a job
    published again keeps them."""
    headers = message.get("headers") or {}
    options: dict[str, Any] = {}
    hard, soft = headers.get("timelimit") or (None, None)
    if hard is not None:
        options["time_limit"] = hard
    if soft is not None:
        options["soft_time_limit"] = soft
    if headers.get("expires") is not None:
        options["expires"] = headers["expires"]
    return options


def is_due(envelope: Envelope, now: datetime) -> bool:
    return envelope.scheduled_at is None or envelope.scheduled_at <= now


def dead_record(body: Any, fallback_id: str) -> tuple[JobRecord, Envelope | None]:
    """A dead-letter document as a failed `JobRecord`, and its envelope (None if unreadable).

    An entry whose payload is not an envelope is listed anyway (job class ``"?"``,
    the raw ``payload``) under its task id, or ``fallback_id`` when it has none,
    so an operator can see and discard it.
    """
    text = body.decode("utf-8", "replace") if isinstance(body, (bytes, bytearray)) else str(body)
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        document = None
    if not isinstance(document, dict) or "reason" not in document:
        document = {"payload": text, "reason": "not a jobadapter dead-letter entry"}
    payload = str(document.get("payload", ""))
    error_class, _, message = str(document.get("reason", "")).partition(": ")
    error = JobError(error_class, message)
    failed_at = _timestamp(document.get("failed_at"))
    try:
        envelope = decode(payload)
    except (InvalidEnvelope, RecursionError):
        task_id = document.get("task_id")
        record = JobRecord(
            job_id=task_id if isinstance(task_id, str) and task_id else fallback_id,
            job_class="?",
            queue=str(document.get("queue") or "?"),
            state=JobState.FAILED,
            finished_at=failed_at,
            error=error,
            payload=payload,
        )
        return record, None
    record = JobRecord.from_envelope(envelope, JobState.FAILED, finished_at=failed_at, error=error)
    return record, envelope


def _timestamp(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _age(record: JobRecord) -> datetime:
    """The sort key of "oldest first"."""
    return record.enqueued_at or record.finished_at or datetime.min.replace(tzinfo=timezone.utc)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _never() -> bool:
    return False


class Operations:
    """What both transports share: the finished jobs, the journal, the errors."""

    def __init__(self, adapter: CeleryAdapter) -> None:
        self.adapter = adapter

    # -- capabilities ------------------------------------------------------------------

    def capabilities(self) -> frozenset[Capability]:
        raise NotImplementedError

    def notes(self) -> dict[str, str]:
        raise NotImplementedError

    # -- shared helpers ----------------------------------------------------------------

    def journal(self, what: str) -> Journal:
        """The active journal, or `OperationUnsupported` saying that ``what`` needs one."""
        return journal_module.required(f"Celery on {self.adapter.transport}: {what}")

    def finished_jobs(self, filter: JobFilter, limit: int, offset: int) -> list[JobRecord]:
        """Finished jobs: the journal's memory, else Celery's Redis result keys."""
        journal = active_journal()
        if journal is not None:
            journal.flush()
            return journal.jobs(JobState.FINISHED, filter, limit, offset)
        results = self._result_backend()
        if results is None:
            raise OperationUnsupported(
                "Celery keeps no finished jobs without a Redis result backend (results=1) or the "
                f"journal ({JOURNAL_VARIABLE})"
            )
        found = sorted(self._finished_from_results(results, filter), key=lambda r: r.finished_at or _age(r))
        return found[offset : offset + limit]

    def find_finished(self, job_id: str) -> JobRecord | None:
        journal = active_journal()
        if journal is not None:
            journal.flush()
            found = journal.find(job_id)
            if found is not None:
                return found
        results = self._result_backend()
        if results is None:
            return None
        meta = results.get_task_meta(job_id)
        return _finished_record(meta)

    def _result_backend(self) -> Any:
        backend = self.adapter.app.backend
        return backend if isinstance(backend, RedisBackend) else None

    def _finished_from_results(self, results: Any, filter: JobFilter) -> Iterator[JobRecord]:
        """Every SUCCESS among Celery's result keys (a SCAN: they are not indexed by state)."""
        client = results.client
        pattern = f"{_text(results.task_keyprefix)}*"
        batch: list[bytes] = []
        for key in client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= _CHUNK:
                yield from self._results_batch(client, batch, filter)
                batch = []
        if batch:
            yield from self._results_batch(client, batch, filter)

    @staticmethod
    def _results_batch(client: Any, keys: list[bytes], filter: JobFilter) -> Iterator[JobRecord]:
        for raw in client.mget(keys):
            if raw is None:
                continue
            try:
                meta = json.loads(raw)
            except (ValueError, RecursionError):
                continue
            record = _finished_record(meta)
            if record is not None and filter.matches(record):
                yield record

    @contextmanager
    def journaled_first(self, job_id: str, now: dict[str, Any], otherwise: dict[str, Any]) -> Iterator[None]:
        """Journal ``now`` for ``job_id`` before the body publishes the job again, and
        ``otherwise`` if the body fails.

        Once published, the job may run and journal its own rows at once; an
        operator's row written after them would bury them (it overwrites whatever
        the job did), leaving a finished job listed as pending.
        """
        journal = active_journal()
        if journal is None:
            yield
            return
        journal.record(job_id, **now)
        try:
            yield
        except BaseException:
            journal.record(job_id, **otherwise)
            raise

    def not_found_or_wrong_state(self, job_id: str, wanted: Sequence[JobState]) -> Exception:
        try:
            found = self.find(job_id)
        except JobNotFound as missing:
            return missing
        return NotInState(job_id, found.state, wanted)

    def find(self, job_id: str) -> JobRecord:
        raise NotImplementedError


_WAITING_AGAIN: dict[str, Any] = {"state": JobState.PENDING, "scheduled_at": None}
_STILL_FAILED: dict[str, Any] = {"state": JobState.FAILED}


def _still_scheduled(at: datetime) -> dict[str, Any]:
    return {"state": JobState.SCHEDULED, "scheduled_at": at}


def _finished_record(meta: Any) -> JobRecord | None:
    """A SUCCESS result (``result_extended``: it carries the task's arguments) as a record."""
    if not isinstance(meta, dict) or meta.get("status") != "SUCCESS":
        return None
    arguments = meta.get("args")
    if not isinstance(arguments, list) or len(arguments) != 1 or not isinstance(arguments[0], str):
        return None
    try:
        envelope = decode(arguments[0])
    except (InvalidEnvelope, RecursionError):
        return None
    worker = meta.get("worker")
    return JobRecord.from_envelope(
        envelope,
        JobState.FINISHED,
        finished_at=_timestamp(meta.get("date_done")),
        worker=worker if isinstance(worker, str) else None,
        result=meta.get("result"),
        has_result=False,
    )


class Held:
    """A message a worker holds: where its unacked entry is, and what it carries."""

    def __init__(self, node: str, tag: str, message: Any, queue: str, envelope: Envelope) -> None:
        self.node, self.tag, self.message, self.queue, self.envelope = node, tag, message, queue, envelope


class Waiting:
    """An entry of a queue list, as stored (``raw``, for an exact ``LREM``) and as read."""

    def __init__(self, key: str, raw: bytes, message: Any, envelope: Envelope) -> None:
        self.key, self.raw, self.message, self.envelope = key, raw, message, envelope


class RedisOperations(Operations):
    """Every operation natively on the Redis broker (see the module's docstring)."""

    def __init__(self, adapter: CeleryAdapter) -> None:
        super().__init__(adapter)
        options = adapter.app.conf.broker_transport_options or {}
        self.prefix = str(options.get("global_keyprefix") or "")
        self.steps = sorted(options.get("priority_steps") or _DEFAULT_STEPS)
        self._client: Any = None  # redis.Redis, whose replies are typed bytes | str

    def capabilities(self) -> frozenset[Capability]:
        if active_journal() is not None or self._result_backend() is not None:
            return OPERATION_CAPABILITIES
        return OPERATION_CAPABILITIES - {Capability.INSPECT}

    def notes(self) -> dict[str, str]:
        inspect = (
            "queue lists (pending), each worker's unacked hash (scheduled, running), the dead-letter "
            "queue (failed); finished from the journal, else Celery's Redis result keys (results=1)"
        )
        if Capability.INSPECT not in self.capabilities():
            inspect = f"finished jobs need results=1 or the journal ({JOURNAL_VARIABLE}); " + inspect
        return {
            Capability.INSPECT.value: inspect,
            Capability.RETRY.value: "dead-letter entries published again (same task id), then removed",
            Capability.DISCARD.value: (
                "LREM of the list entry; a message a worker holds gets a Redis tombstone key and "
                "loses its unacked entry"
            ),
            Capability.RUN_NOW.value: (
                "published due now with the same task id; the old schedule is removed or tombstoned"
            ),
            Capability.PAUSE.value: (
                "a Redis set every worker polls (0.4 s) and applies with cancel_consumer/add_consumer, "
                "plus a cancel_consumer broadcast"
            ),
            Capability.MIGRATE_FROM.value: (
                "listed and deleted natively (LREM); running workers from inspect active_queues"
            ),
            Capability.MIGRATE_TO.value: MIGRATE_TO_NOTE,
        }

    # -- Redis access ------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """One client per adapter; redis-py's pool reconnects in a forked pool child."""
        if self._client is None:
            self._client = redis.Redis.from_url(
                self.adapter.broker_url,
                socket_connect_timeout=self.adapter.settings.connect_timeout,
                socket_timeout=10,
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def queue_keys(self, queue: str) -> list[str]:
        """The lists of ``queue``, most urgent step first (kombu's ``_q_for_pri``)."""
        return [self.key(queue if step == 0 else f"{queue}{_SEP}{step}") for step in self.steps]

    def queue_names(self) -> list[str]:
        """The queues Celery declared (kombu's binding sets: a queue bound to its own
        exchange), and any paused one, without the dead-letter queue."""
        names: set[str] = set()
        pattern = self.key("_kombu.binding.*")
        start = len(self.key("_kombu.binding."))
        for key in self.client.scan_iter(match=pattern, count=1000):
            exchange = _text(key)[start:]
            for member in self.client.smembers(key):
                queue = _text(member).split(_SEP)[-1]
                if queue == exchange and queue:
                    names.add(queue)
        names |= self.paused()
        names.discard(self.adapter.settings.dead_letter_queue)
        return sorted(names)

    def nodes(self) -> list[str]:
        return sorted(_text(node) for node in self.client.smembers(self.key(f"{KEY_PREFIX}.nodes")))

    def held(self) -> Iterator[Held]:
        """Every message a jobadapter worker holds (its unacked hash, live or not yet restored)."""
        for node in self.nodes():
            for tag, value in self.client.hscan_iter(self.key(f"{KEY_PREFIX}.unacked.{node}"), count=_CHUNK):
                try:
                    message, _exchange, queue = json.loads(value)
                except (ValueError, TypeError, RecursionError):
                    continue
                envelope = message_envelope(message)
                if envelope is not None:
                    yield Held(node, _text(tag), message, str(queue), envelope)

    def waiting(self, key: str) -> Iterator[Waiting]:
        """A queue list's entries, oldest (tail) first, read a chunk at a time."""
        seen = 0
        while True:
            chunk = self.client.lrange(key, -(seen + _CHUNK), -(seen + 1))
            if not chunk:
                return
            for raw in reversed(chunk):
                try:
                    message = json.loads(raw)
                except (ValueError, RecursionError):
                    continue
                envelope = message_envelope(message)
                if envelope is not None:
                    yield Waiting(key, raw, message, envelope)
            seen += len(chunk)
            if len(chunk) < _CHUNK:
                return

    def dead_letters(self) -> Iterator[tuple[bytes, JobRecord, Envelope | None]]:
        """The dead-letter queue, oldest first, a chunk at a time."""
        key = self.key(self.adapter.settings.dead_letter_queue)
        seen = 0
        while True:
            chunk = self.client.lrange(key, -(seen + _CHUNK), -(seen + 1))
            if not chunk:
                return
            for raw in reversed(chunk):
                yield (raw, *self._dead_entry(raw))
            seen += len(chunk)
            if len(chunk) < _CHUNK:
                return

    @staticmethod
    def _dead_entry(raw: bytes) -> tuple[JobRecord, Envelope | None]:
        try:
            message = json.loads(raw)
            body = message["body"]
            if message.get("properties", {}).get("body_encoding") == "base64":
                body = base64.b64decode(body)
            tag = str(message["properties"]["delivery_tag"])
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            return dead_record(raw, f"dead-{abs(hash(raw)):x}")
        return dead_record(body, tag)

    def expire_dead_letters(self, cutoff: float) -> int:
        """Remove the dead letters that failed before ``cutoff`` (epoch seconds), among the
        oldest `_EXPIRY_SCAN`: what RabbitMQ's per-message TTL does, for a Redis list, run at
        each new dead letter. One without a date (written before dates were) is kept."""
        key = self.key(self.adapter.settings.dead_letter_queue)
        script = self.client.register_script(_EXPIRE_DEAD_LETTERS)
        return int(script(keys=[key], args=[cutoff, _EXPIRY_SCAN, FAILED_AT_HEADER]))

    def _remove_dead(self, raw: bytes) -> bool:
        return bool(self.client.lrem(self.key(self.adapter.settings.dead_letter_queue), 1, raw))

    # -- queries -----------------------------------------------------------------------

    def queues(self) -> list[QueueInfo]:
        names = self.queue_names()
        now = datetime.now(timezone.utc)
        scheduled: dict[str, int] = {}
        for held in self.held():
            if not is_due(held.envelope, now):
                scheduled[held.envelope.queue_name] = scheduled.get(held.envelope.queue_name, 0) + 1
        failed: dict[str, int] = {}
        for _raw, record, _envelope in self.dead_letters():
            failed[record.queue] = failed.get(record.queue, 0) + 1
        paused = self.paused()
        found = []
        # A queue known only by its dead letters or by ETA messages a worker holds (its
        # binding gone, or a failed job moved here by `jobadapter migrate`) is listed too.
        extra = (set(failed) | set(scheduled)) - {self.adapter.settings.dead_letter_queue}
        for name in sorted(set(names) | extra):
            pending = 0
            for key in self.queue_keys(name):
                due, later = self._count_waiting(key, now)
                pending += due
                scheduled[name] = scheduled.get(name, 0) + later
            counts = (pending, scheduled.get(name, 0), failed.get(name, 0))
            found.append(QueueInfo(name, *counts, name in paused))
        return found

    def _count_waiting(self, key: str, now: datetime) -> tuple[int, int]:
        """A queue list's (due, scheduled) entries. Only messages published with an ETA are
        decoded: one whose ``eta`` header is null is due (every delayed publish sets it)."""
        due = later = seen = 0
        while True:
            chunk = self.client.lrange(key, -(seen + _CHUNK), -(seen + 1))
            for raw in chunk:
                if _NO_ETA in raw:
                    due += 1
                    continue
                try:
                    envelope = message_envelope(json.loads(raw))
                except (ValueError, RecursionError):
                    envelope = None
                if envelope is not None and not is_due(envelope, now):
                    later += 1
                else:
                    due += 1
            seen += len(chunk)
            if len(chunk) < _CHUNK:
                return due, later

    def records(self, state: JobState, filter: JobFilter) -> Iterator[JobRecord]:
        """Every job in ``state`` that ``filter`` matches, oldest first, streamed."""
        now = datetime.now(timezone.utc)
        if state is JobState.FAILED:
            yield from (record for _raw, record, _env in self.dead_letters() if filter.matches(record))
            return
        if state is JobState.RUNNING:
            running = [
                JobRecord.from_envelope(h.envelope, state, worker=h.node, provider_job_id=h.envelope.job_id)
                for h in self.held()
                if is_due(h.envelope, now)
            ]
            yield from sorted((r for r in running if filter.matches(r)), key=_age)
            return
        queues = [filter.queue] if filter.queue is not None else self.queue_names()
        lists: list[Iterable[JobRecord]] = [
            (
                JobRecord.from_envelope(w.envelope, state, provider_job_id=w.envelope.job_id)
                for w in self.waiting(key)
                if is_due(w.envelope, now) == (state is JobState.PENDING)
            )
            for queue in queues
            for key in self.queue_keys(queue)
        ]
        if state is JobState.SCHEDULED:
            held = [
                JobRecord.from_envelope(h.envelope, state, worker=h.node, provider_job_id=h.envelope.job_id)
                for h in self.held()
                if not is_due(h.envelope, now)
            ]
            lists.append(sorted(held, key=_age))
        yield from (record for record in heapq.merge(*lists, key=_age) if filter.matches(record))

    def jobs(self, state: JobState, filter: JobFilter, limit: int, offset: int) -> list[JobRecord]:
        if state is JobState.FINISHED:
            return self.finished_jobs(filter, limit, offset)
        return list(islice(self.records(state, filter), offset, offset + limit))

    def locate(self, job_id: str) -> Waiting | Held | tuple[bytes, JobRecord, Envelope | None] | None:
        """Where the broker holds ``job_id``: a queue list, a worker, or the dead-letter queue."""
        needle = job_id.encode()
        for queue in self.queue_names():
            for key in self.queue_keys(queue):
                for entry in self.waiting_matching(key, needle):
                    if entry.envelope.job_id == job_id:
                        return entry
        for held in self.held():
            if held.envelope.job_id == job_id:
                return held
        for dead in self.dead_letters():
            if dead[1].job_id == job_id:
                return dead
        return None

    def waiting_matching(self, key: str, needle: bytes) -> Iterator[Waiting]:
        """The entries of a queue list whose raw text holds ``needle`` (the task id is in the
        plain headers), parsed only when it does."""
        seen = 0
        while True:
            chunk = self.client.lrange(key, -(seen + _CHUNK), -(seen + 1))
            for raw in reversed(chunk):
                if needle in raw:
                    message = json.loads(raw)
                    envelope = message_envelope(message)
                    if envelope is not None:
                        yield Waiting(key, raw, message, envelope)
            seen += len(chunk)
            if len(chunk) < _CHUNK:
                return

    def find(self, job_id: str) -> JobRecord:
        now = datetime.now(timezone.utc)
        found = self.locate(job_id)
        if isinstance(found, Waiting):
            state = JobState.PENDING if is_due(found.envelope, now) else JobState.SCHEDULED
            return JobRecord.from_envelope(found.envelope, state, provider_job_id=job_id)
        if isinstance(found, Held):
            state = JobState.RUNNING if is_due(found.envelope, now) else JobState.SCHEDULED
            return JobRecord.from_envelope(found.envelope, state, worker=found.node, provider_job_id=job_id)
        if found is not None:
            return found[1]
        finished = self.find_finished(job_id)
        if finished is None:
            raise JobNotFound(job_id)
        return finished

    # -- commands ----------------------------------------------------------------------

    def retry(self, job_ids: Sequence[str]) -> int:
        wanted = set(job_ids)
        entries = {}
        for raw, record, envelope in self.dead_letters():
            if record.job_id in wanted and record.job_id not in entries:
                entries[record.job_id] = (raw, envelope)
                if len(entries) == len(wanted):
                    break
        for job_id in job_ids:
            if job_id not in entries:
                raise self.not_found_or_wrong_state(job_id, [JobState.FAILED])
        return sum(self._retry_one(raw, envelope) for raw, envelope in entries.values())

    def retry_all(self, filter: JobFilter, progress: Progress | None) -> int:
        return self._walk_dead(filter, self._retry_one, progress)

    def _retry_one(self, raw: bytes, envelope: Envelope | None) -> bool:
        """Publish a dead letter's job again, then remove the entry (a crash in between leaves
        a duplicate entry, never a lost job); an unreadable payload stays where it is."""
        if envelope is None:
            return False
        with self.journaled_first(envelope.job_id, _WAITING_AGAIN, _STILL_FAILED):
            self.adapter.enqueue(envelope.evolve(scheduled_at=None), {})
        self._remove_dead(raw)
        return True

    def _walk_dead(
        self, filter: JobFilter, act: Callable[[bytes, Envelope | None], bool], progress: Progress | None
    ) -> int:
        """Apply ``act`` to every matching dead letter, oldest first, a chunk in memory at a time.

        Walked by negative index from the tail: what ``act`` removes shifts nothing not
        yet seen, and new dead letters arrive at the head. Only the entries present at
        the start are visited, so a retried job failing again is not retried again.
        ``progress`` gets the count so far after each chunk.
        """
        key = self.key(self.adapter.settings.dead_letter_queue)
        remaining = self.client.llen(key)
        kept = done = 0
        while remaining > 0:
            chunk = self.client.lrange(key, -(kept + min(_CHUNK, remaining)), -(kept + 1))
            if not chunk:
                break
            for raw in reversed(chunk):
                remaining -= 1
                record, envelope = self._dead_entry(raw)
                if filter.matches(record) and act(raw, envelope):
                    done += 1
                else:
                    kept += 1
            if progress is not None:
                progress(done)
        return done

    def discard(self, job_ids: Sequence[str]) -> int:
        now = datetime.now(timezone.utc)
        located = []
        for job_id in job_ids:
            found = self.locate(job_id)
            if found is None:
                raise JobNotFound(job_id)
            if isinstance(found, Held) and is_due(found.envelope, now):
                raise NotInState(job_id, JobState.RUNNING, _DISCARDABLE)
            located.append(found)
        for found in located:
            if isinstance(found, Waiting):
                self._discard_waiting(found)
            elif isinstance(found, Held):
                self._discard_held(found, [found.envelope.job_id])
            else:
                self._remove_dead(found[0])
        return len(located)

    def discard_all(self, state: JobState, filter: JobFilter, progress: Progress | None) -> int:
        if state is JobState.FAILED:
            return self._walk_dead(filter, lambda raw, _envelope: self._remove_dead(raw), progress)
        if state not in (JobState.PENDING, JobState.SCHEDULED):
            raise ValueError(f"only pending, scheduled or failed jobs can be discarded, not {state.value}")
        now = datetime.now(timezone.utc)
        done = 0
        queues = [filter.queue] if filter.queue is not None else self.queue_names()
        for queue in queues:
            for key in self.queue_keys(queue):
                done += self._discard_in_list(key, state, filter, now)
                if progress is not None:
                    progress(done)
        if state is JobState.SCHEDULED:
            for held in self.held():
                record = JobRecord.from_envelope(held.envelope, state)
                if not is_due(held.envelope, now) and filter.matches(record):
                    self._discard_held(held, [held.envelope.job_id])
                    done += 1
            if progress is not None:
                progress(done)
        return done

    def _discard_in_list(self, key: str, state: JobState, filter: JobFilter, now: datetime) -> int:
        """Remove the matching entries of one list, a chunk at a time (see `_walk_dead`)."""
        remaining = self.client.llen(key)
        kept = done = 0
        while remaining > 0:
            chunk = self.client.lrange(key, -(kept + min(_CHUNK, remaining)), -(kept + 1))
            if not chunk:
                break
            for raw in reversed(chunk):
                remaining -= 1
                try:
                    envelope = message_envelope(json.loads(raw))
                except (ValueError, RecursionError):
                    envelope = None
                if envelope is not None and self._in_state(envelope, state, filter, now):
                    self._discard_waiting(Waiting(key, raw, None, envelope))
                    done += 1
                    continue
                kept += 1
        return done

    @staticmethod
    def _in_state(envelope: Envelope, state: JobState, filter: JobFilter, now: datetime) -> bool:
        """Whether a list entry is a ``state`` (pending or scheduled) job ``filter`` matches."""
        if is_due(envelope, now) != (state is JobState.PENDING):
            return False
        return filter.matches(JobRecord.from_envelope(envelope, state))

    def delete_moved(self, records: Sequence[JobRecord]) -> set[str]:
        """Delete a batch ``jobs()`` just listed: one pass over the lists of their queues (and the
        dead-letter queue for failed ones) from the oldest end, where a move's batch is, ``LREM``
        of the exact entries in one pipeline, stopping once every id is met. An entry a worker
        took meanwhile is not deleted, and no tombstone is left: the move counts it as still on
        the source. Ids met nowhere in the lists (a stopped worker's unacked entries) are
        discarded the usual way."""
        wanted = {record.job_id for record in records if record.state is not JobState.FAILED}
        dead = {record.job_id for record in records if record.state is JobState.FAILED}
        removals: list[tuple[str, bytes, str]] = []
        if wanted:
            for queue in sorted({record.queue for record in records if record.job_id in wanted}):
                for key in self.queue_keys(queue):
                    for entry in self.waiting(key):
                        if len(removals) == len(wanted):
                            break
                        if entry.envelope.job_id in wanted:
                            removals.append((key, entry.raw, entry.envelope.job_id))
        if dead:
            dead_key = self.key(self.adapter.settings.dead_letter_queue)
            met = 0
            for raw, record, _envelope in self.dead_letters():
                if met == len(dead):
                    break
                if record.job_id in dead:
                    removals.append((dead_key, raw, record.job_id))
                    met += 1
        with self.client.pipeline(transaction=False) as pipeline:
            for key, raw, _ in removals:
                pipeline.lrem(key, 1, raw)
            removed = pipeline.execute()
        deleted = {job_id for (_, _, job_id), count in zip(removals, removed, strict=True) if count}
        elsewhere = (wanted | dead) - {job_id for _, _, job_id in removals}
        for job_id in sorted(elsewhere):
            try:
                if self.discard([job_id]):
                    deleted.add(job_id)
            except (JobNotFound, NotInState):
                pass
        return deleted

    def _discard_waiting(self, entry: Waiting) -> None:
        """``LREM`` the entry; if a worker took it in the meantime, tombstone it."""
        if not self.client.lrem(entry.key, 1, entry.raw):
            self.tombstone([entry.envelope.job_id])
        journal_module.record_discarded([entry.envelope.job_id])

    def _discard_held(self, held: Held, keys: list[str]) -> None:
        """Tombstone a message a worker holds, then drop its unacked entry so that no restore
        (the worker's death, a reconnect) puts it back on its queue."""
        self.tombstone(keys)
        if keys == [held.envelope.job_id]:
            journal_module.record_discarded([held.envelope.job_id])
        unacked = self.key(f"{KEY_PREFIX}.unacked.{held.node}")
        index = self.key(f"{KEY_PREFIX}.unacked_index.{held.node}")
        self.client.pipeline(transaction=True).hdel(unacked, held.tag).zrem(index, held.tag).execute()

    def tombstone(self, keys: list[str]) -> None:
        pipe = self.client.pipeline(transaction=True)
        for key in keys:
            pipe.set(self.key(f"{KEY_PREFIX}.tombstone.{key}"), "1", ex=TOMBSTONE_TTL)
        pipe.execute()

    def discarded(self, envelope: Envelope) -> bool:
        """One ``EXISTS`` over the job's and its schedule's tombstone keys.

        While Redis is unreachable the answer is False, logged, as the journal's is: failing
        here would send the job to the dead-letter queue for an outage, not for its own error.
        """
        keys = [self.key(f"{KEY_PREFIX}.tombstone.{key}") for key in tombstone_keys(envelope)]
        try:
            return bool(self.client.exists(*keys))
        except redis.RedisError as error:
            _logger.warning("tombstone check of %s skipped, Redis unreachable: %s", envelope.job_id, error)
            return False

    def run_now(self, job_id: str) -> None:
        found = self.locate(job_id)
        now = datetime.now(timezone.utc)
        if found is None:
            raise JobNotFound(job_id)
        if isinstance(found, (Waiting, Held)):
            if is_due(found.envelope, now):
                state = JobState.PENDING if isinstance(found, Waiting) else JobState.RUNNING
                raise NotInState(job_id, state, [JobState.SCHEDULED])
        else:
            raise NotInState(job_id, JobState.FAILED, [JobState.SCHEDULED])
        envelope = found.envelope
        assert envelope.scheduled_at is not None
        options = (
            message_options(found.message)
            if isinstance(found, Held)
            else message_options(json.loads(found.raw))
        )
        # Published first: if this fails, the old schedule still stands and nothing is lost.
        with self.journaled_first(job_id, _WAITING_AGAIN, _still_scheduled(envelope.scheduled_at)):
            self.adapter.enqueue(envelope.evolve(scheduled_at=None), options)
        old = [schedule_key(job_id, envelope.scheduled_at)]
        if isinstance(found, Waiting):
            if not self.client.lrem(found.key, 1, found.raw):
                self.tombstone(old)  # a worker took it meanwhile
        else:
            self._discard_held(found, old)

    def paused(self) -> frozenset[str]:
        return frozenset(_text(queue) for queue in self.client.smembers(self.key(PAUSED_KEY)))

    def pause(self, queue: str) -> None:
        self.client.sadd(self.key(PAUSED_KEY), check_queue(queue))
        broadcast_cancel(self.adapter, queue)

    def resume(self, queue: str) -> None:
        """Workers see it at their next poll (`jobadapter_celery.worker.PAUSE_POLL`)."""
        self.client.srem(self.key(PAUSED_KEY), check_queue(queue))


def broadcast_cancel(adapter: CeleryAdapter, queue: str) -> None:
    """Celery's ``cancel_consumer`` to every worker, unanswered: the fast path of ``pause``.
    (Resume is not broadcast: ``add_consumer`` would make workers that never consumed the
    queue start to; each worker resumes its own queues at its next poll.)"""
    adapter.app.control.cancel_consumer(queue, reply=False)


class AmqpOperations(Operations):
    """RabbitMQ: the dead-letter queue natively, the rest through the journal."""

    def __init__(self, adapter: CeleryAdapter) -> None:
        super().__init__(adapter)
        self._worker_queues: tuple[float, frozenset[str]] | None = None
        """When the workers were last asked, and the queue names they consume."""

    def capabilities(self) -> frozenset[Capability]:
        if active_journal() is None:
            return frozenset({Capability.RETRY, Capability.MIGRATE_FROM, Capability.MIGRATE_TO})
        return OPERATION_CAPABILITIES

    def notes(self) -> dict[str, str]:
        journal = active_journal() is not None
        needs = (
            f"needs the journal ({JOURNAL_VARIABLE}): RabbitMQ cannot list, delete or look up a "
            "message without consuming it"
        )
        return {
            Capability.INSPECT.value: (
                "pending counts from a passive queue_declare; failed jobs from the dead-letter queue "
                "(read unacknowledged); pending, scheduled, running and finished jobs from the journal"
                if journal
                else needs
            ),
            Capability.RETRY.value: "dead-letter messages published again (same task id), then acknowledged",
            Capability.DISCARD.value: (
                "a journal tombstone the worker checks before perform; a failed job's dead letter "
                "is acknowledged"
                if journal
                else needs + " (ETA messages sit in worker memory)"
            ),
            Capability.RUN_NOW.value: (
                "published due now with the same task id; the old schedule tombstoned in the journal"
                if journal
                else needs
            ),
            Capability.PAUSE.value: (
                "the journal's paused set, polled by every worker (0.4 s) and applied with "
                "cancel_consumer/add_consumer, plus a cancel_consumer broadcast"
                if journal
                else f"needs the journal ({JOURNAL_VARIABLE}) to keep the paused set for workers "
                "started later"
            ),
            Capability.MIGRATE_FROM.value: MIGRATE_FROM_AMQP_NOTE,
            Capability.MIGRATE_TO.value: MIGRATE_TO_NOTE,
        }

    # -- the dead-letter queue -----------------------------------------------------------

    def _walk_dead(
        self,
        act: Callable[[Any, JobRecord, Envelope | None], bool],
        stop: Callable[[], bool] = _never,
        progress: Progress | None = None,
    ) -> int:
        """Take every dead letter present now without acknowledging it; ``act`` acknowledges
        the ones it handles. Closing the channel gives the rest back to RabbitMQ, in place.
        Only delivery tags are kept in memory, never the messages."""
        done = 0
        with self.adapter.app.connection_for_write() as connection:
            channel = connection.channel()
            try:
                queue: Any = self.adapter.dead_letter(channel)
                _name, remaining, _consumers = queue.queue_declare()
                while remaining > 0 and not stop():
                    message = queue.get(no_ack=False, accept=["json"])
                    if message is None:
                        break
                    remaining -= 1
                    record, envelope = dead_record(message.body, f"dead-{message.delivery_tag}")
                    if act(message, record, envelope):
                        done += 1
                    if progress is not None and remaining % _CHUNK == 0:
                        progress(done)
            finally:
                channel.close()
        return done

    def _failed(self, filter: JobFilter, limit: int, offset: int) -> list[JobRecord]:
        page: list[JobRecord] = []
        matched = 0

        def collect(_message: Any, record: JobRecord, _envelope: Envelope | None) -> bool:
            nonlocal matched
            if filter.matches(record):
                if matched >= offset:
                    page.append(record)
                matched += 1
            return False

        self._walk_dead(collect, stop=lambda: len(page) >= limit)
        return page

    def _retry_message(self, message: Any, envelope: Envelope | None) -> bool:
        if envelope is None:
            return False
        with self.journaled_first(envelope.job_id, _WAITING_AGAIN, _STILL_FAILED):
            self.adapter.enqueue(envelope.evolve(scheduled_at=None), {})
        message.ack()
        return True

    # -- queries -----------------------------------------------------------------------

    def queues(self) -> list[QueueInfo]:
        """Queue names from the workers, the journal, pauses and dead letters. Pending and
        scheduled counts are the journal's, like the listings: RabbitMQ's ready count also
        holds ETA messages no worker has fetched yet, which are scheduled, not pending."""
        journal = self.journal("list queues")
        journal.flush()
        counts = journal.queue_counts()
        paused = journal.paused()
        names = set(self.worker_queues()) | set(paused) | set(counts)
        failed: dict[str, int] = {}

        def count(_message: Any, record: JobRecord, _envelope: Envelope | None) -> bool:
            failed[record.queue] = failed.get(record.queue, 0) + 1
            return False

        self._walk_dead(count)
        names |= set(failed)
        names.discard(self.adapter.settings.dead_letter_queue)
        return [
            QueueInfo(
                name,
                counts.get(name, {}).get(JobState.PENDING, 0),
                counts.get(name, {}).get(JobState.SCHEDULED, 0),
                failed.get(name, 0),
                name in paused,
            )
            for name in sorted(names)
        ]

    def worker_queues(self) -> frozenset[str]:
        """The queues running workers consume, asked at most every `WORKER_QUEUES_TTL` seconds:
        ``inspect active_queues`` waits its whole timeout for replies, which a dashboard reload
        should not pay each time. (These names only add empty queues: any queue with a job is
        in the journal's counts.)"""
        now = time.monotonic()
        if self._worker_queues is None or now - self._worker_queues[0] > WORKER_QUEUES_TTL:
            replies = self.adapter.app.control.inspect(timeout=1.0).active_queues() or {}
            names = frozenset(q["name"] for queues in replies.values() for q in queues or [])
            self._worker_queues = (now, names)
        return self._worker_queues[1]

    def jobs(self, state: JobState, filter: JobFilter, limit: int, offset: int) -> list[JobRecord]:
        if state is JobState.FAILED:
            return self._failed(filter, limit, offset)
        if state is JobState.FINISHED:
            return self.finished_jobs(filter, limit, offset)
        journal = self.journal(f"list {state.value} jobs")
        journal.flush()
        return journal.jobs(state, filter, limit, offset)

    def find(self, job_id: str) -> JobRecord:
        journal = active_journal()
        found = None
        if journal is not None:
            journal.flush()
            found = journal.find(job_id)
            # A row that says running is checked against the dead letters: the broker is the
            # truth, and the worker's last row may still be on its way to the journal.
            if found is not None and found.state is not JobState.RUNNING:
                return found
        failed = self._find_dead(job_id)
        if failed is not None:
            return failed
        if found is not None:
            return found  # running, and not in the dead letters
        finished = self.find_finished(job_id)
        if finished is not None:
            return finished
        if journal is None:
            raise OperationUnsupported(
                f"no failed job {job_id!r}; Celery on RabbitMQ can look other jobs up only in the journal "
                f"({JOURNAL_VARIABLE})"
            )
        raise JobNotFound(job_id)

    def _find_dead(self, job_id: str, *, patient: bool = False) -> JobRecord | None:
        """The dead letter of ``job_id``; ``patient``: look again for one held elsewhere (a
        command about to act on it), not for a plain look-up, which would wait on every miss."""
        found: dict[str, JobRecord] = {}

        def match(_message: Any, record: JobRecord, _envelope: Envelope | None) -> bool:
            if record.job_id == job_id:
                found[job_id] = record
            return False

        if patient:
            self._each_dead({job_id}, match)
        else:
            self._walk_dead(match, stop=lambda: bool(found))
        return found.get(job_id)

    def _dead_among(self, job_ids: set[str]) -> set[str]:
        """Which of ``job_ids`` have a dead letter, in one walk that stops once all are seen."""
        seen: set[str] = set()

        def note(_message: Any, record: JobRecord, _envelope: Envelope | None) -> bool:
            if record.job_id in job_ids:
                seen.add(record.job_id)
            return False

        self._walk_dead(note, stop=lambda: seen == job_ids)
        return seen

    def _each_dead(
        self, wanted: set[str], handle: Callable[[Any, JobRecord, Envelope | None], bool]
    ) -> set[str]:
        """Apply ``handle`` to the dead letters of the ``wanted`` job ids; the ids it handled.

        A dead letter another channel holds at that moment is invisible (a listing, the
        dashboard or another operator walks the queue the same way, taking each letter
        unacknowledged for a moment), so a walk that missed some looks again, for up to
        `DEAD_LETTER_PATIENCE` seconds."""
        done: set[str] = set()
        seen: set[str] = set()
        deadline = time.monotonic() + DEAD_LETTER_PATIENCE

        def act(message: Any, record: JobRecord, envelope: Envelope | None) -> bool:
            if record.job_id not in wanted or record.job_id in done:
                return False
            seen.add(record.job_id)
            if handle(message, record, envelope):
                done.add(record.job_id)
                return True
            return False

        while True:
            self._walk_dead(act, stop=lambda: seen == wanted)
            if seen == wanted or time.monotonic() > deadline:
                return done
            time.sleep(0.05)

    # -- commands ----------------------------------------------------------------------

    def retry(self, job_ids: Sequence[str]) -> int:
        wanted = set(job_ids)
        present = set()

        def check(_message: Any, record: JobRecord, _envelope: Envelope | None) -> bool:
            present.add(record.job_id)
            return False

        self._each_dead(wanted, check)
        for job_id in job_ids:
            if job_id not in present:
                raise self.not_found_or_wrong_state(job_id, [JobState.FAILED])
        return len(
            self._each_dead(wanted, lambda message, _record, envelope: self._retry_message(message, envelope))
        )

    def retry_all(self, filter: JobFilter, progress: Progress | None) -> int:
        def act(message: Any, record: JobRecord, envelope: Envelope | None) -> bool:
            return filter.matches(record) and self._retry_message(message, envelope)

        return self._walk_dead(act, progress=progress)

    def discard(self, job_ids: Sequence[str]) -> int:
        journal = self.journal("discard pending or scheduled jobs")
        journal.flush()
        # The dead letters first: the broker is the truth, and a job's last journal rows
        # (running, failed) may still be on their way while its dead letter is there.
        failed = self._dead_among(set(job_ids))
        for job_id in job_ids:
            if job_id in failed:
                continue
            found = journal.find(job_id)
            if found is None or found.state is JobState.FAILED:
                if self._find_dead(job_id, patient=True) is None:
                    if found is None:
                        raise JobNotFound(job_id)
                    raise NotInState(job_id, found.state, [JobState.FAILED])
                failed.add(job_id)
            elif found.state not in (JobState.PENDING, JobState.SCHEDULED):
                raise NotInState(job_id, found.state, _DISCARDABLE)
        for job_id in job_ids:
            if job_id not in failed:
                journal.tombstone(job_id)
                journal_module.record_discarded([job_id])
        acked = (
            self._each_dead(failed, lambda message, _record, _envelope: _ack(message)) if failed else set()
        )
        return len(job_ids) - len(failed) + len(acked)

    def discard_failed(self, filter: JobFilter, progress: Progress | None) -> int:
        """``discard_all(FAILED)`` in one walk (pending and scheduled ones page through the
        journal with the base class's ``discard_all``)."""
        return self._walk_dead(
            lambda message, record, _envelope: filter.matches(record) and _ack(message), progress=progress
        )

    def discarded(self, envelope: Envelope) -> bool:
        journal = active_journal()
        return journal is not None and any(journal.is_tombstoned(key) for key in tombstone_keys(envelope))

    def run_now(self, job_id: str) -> None:
        journal = self.journal("run scheduled jobs now")
        journal.flush()
        found = journal.find(job_id)
        if found is None:
            raise JobNotFound(job_id)
        if found.state is not JobState.SCHEDULED or found.scheduled_at is None:
            raise NotInState(job_id, found.state, [JobState.SCHEDULED])
        envelope = Envelope(
            job_class=found.job_class,
            job_id=job_id,
            queue_name=found.queue,
            priority=found.priority,
            arguments=found.arguments,
            keyword_arguments=found.keyword_arguments,
            executions=found.executions,
            exception_executions={},
            enqueued_at=found.enqueued_at or datetime.now(timezone.utc),
            scheduled_at=None,
        )
        with self.journaled_first(job_id, _WAITING_AGAIN, _still_scheduled(found.scheduled_at)):
            self.adapter.enqueue(envelope, {})
        journal.tombstone(schedule_key(job_id, found.scheduled_at))

    def pause(self, queue: str) -> None:
        self.journal("pause queues").pause(check_queue(queue))
        broadcast_cancel(self.adapter, queue)

    def resume(self, queue: str) -> None:
        self.journal("pause queues").resume(check_queue(queue))

    def paused(self) -> frozenset[str]:
        journal = active_journal()
        return frozenset() if journal is None else journal.paused()


def _ack(message: Any) -> bool:
    message.ack()
    return True


def operations_for(adapter: CeleryAdapter) -> RedisOperations | AmqpOperations:
    return RedisOperations(adapter) if adapter.transport == "redis" else AmqpOperations(adapter)
