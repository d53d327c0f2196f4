"""The operations contract (`jobadapter.operations`) on Dramatiq's two brokers.

The broker is the truth about where a job is; what each broker can say, and
so where each answer comes from:

- Redis keeps every message where it can be read, so everything but finished
  jobs is answered from it: pending are the bodies in ``<queue>.msgs`` (the ids
  in the ``<queue>`` list and those workers prefetched, their ``__acks__``
  sets, less the running ones), scheduled the ``<queue>.DQ`` ones (listed, or
  held in a delay consumer's memory), failed the dead letters ``<queue>.XQ``,
  running the claims workers write in ``jobadapter.running``. Each command is
  one Lua script or one ``MULTI``, and pauses are a Redis set.
- RabbitMQ cannot list a queue without consuming it: pending, scheduled,
  running and finished come from the journal; failed jobs are read off
  ``<queue>.XQ`` with unacknowledged ``basic_get`` (which returns them when the
  channel closes), retried in one AMQP transaction (publish, ack), discarded
  by acknowledging them; a pending or scheduled job cannot be deleted, so
  discarding it is a journal tombstone, and pauses are the journal's.
- Finished jobs are kept by neither broker: only the journal lists them.

The full table is in docs/dramatiq.md, "Operations".

Tombstones exist because a message a worker already holds (prefetched, or a
delayed one a delay consumer keeps in memory until its eta) cannot be taken
back. `jobadapter.execution.execute` asks ``discarded(envelope)`` before
perform; on Redis that question is one script that also claims the job as
running, so a discard either sees the job running (and refuses) or the job sees
the tombstone (and is skipped): never both, never neither.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from functools import partial
from itertools import islice
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import pika  # type: ignore[import-untyped]
import pika.exceptions  # type: ignore[import-untyped]
import redis
from dramatiq import Message
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis, dq_name, q_name, xq_name

from jobadapter import journal
from jobadapter.adapters.base import OPERATION_CAPABILITIES, OPERATION_PAGE, Adapter, Capability, Progress
from jobadapter.envelope import Envelope, decode, format_timestamp, from_document
from jobadapter.errors import InvalidEnvelope
from jobadapter.operations import (
    EVERY_JOB,
    JobError,
    JobFilter,
    JobNotFound,
    JobRecord,
    JobState,
    NotInState,
    OperationUnsupported,
    QueueInfo,
)
from jobadapter_dramatiq.wire import ERROR_OPTION, REJECTED_ACTOR, Rejected, parse

_logger = logging.getLogger("jobadapter")


class _Outage:
    """One warning when the operations' Redis calls on the worker's path start failing, one
    when they work again: not a line per job."""

    def __init__(self) -> None:
        self._down = False

    def down(self, what: str) -> None:
        if not self._down:
            self._down = True
            _logger.warning("jobadapter: %s", what)

    def up(self) -> None:
        if self._down:
            self._down = False
            _logger.warning("jobadapter: Redis answers the tombstone checks again")


_outage = _Outage()

if TYPE_CHECKING:
    from jobadapter.journal.store import Journal

T = TypeVar("T")
PAUSE_POLL = 0.5
"""Seconds between two reads of the paused queues by a worker (well within `PAUSE_BOUND`)."""
TOMBSTONE_LINGER_MS = 7 * 86_400_000
"""How long a tombstone outlives the moment its message was due: longer than any message a
worker holds survives (a dead worker's are requeued after its heartbeat times out)."""
RETRYABLE = (JobState.FAILED,)
DISCARDABLE = (JobState.PENDING, JobState.SCHEDULED, JobState.FAILED)
_MESSAGE_ID = re.compile(rb'"message_id":\s*"([^"\\]+)"')
"""Candidate message ids in a stored body, read without decoding it (confirmed by `parse`)."""
_MESSAGE_OPTIONS_DROPPED = ("eta", ERROR_OPTION, "traceback", "redis_message_id")
"""Options of a dead letter or a delayed message that its republished copy must not carry."""


def job_key(job_id: str) -> str:
    """The tombstone of a discarded job: every message of it is skipped."""
    return job_id


def schedule_key(job_id: str, scheduled_at: datetime | None) -> str:
    """The tombstone of one schedule of a job, superseded by ``run_now``: the due copy, which
    has another ``scheduled_at``, still runs."""
    return f"{job_id}@{format_timestamp(scheduled_at) if scheduled_at is not None else '-'}"


@dataclass(frozen=True)
class Entry:
    """One stored message, as the operations see it: its record and where it is kept."""

    record: JobRecord
    queue: str
    """The canonical queue (``q_name``)."""
    ref: str
    """The broker's handle on it: the Redis hash field (``redis_message_id``)."""
    message: Message[Any] | None
    """The Dramatiq message, or None for a body that is not one."""

    @property
    def envelope(self) -> Envelope | None:
        """The job's envelope, when the message carries a valid one."""
        if self.message is None or self.record.job_class == "?":
            return None
        return _envelope_of(self.message)


def read_entry(body: bytes, queue: str, ref: str, state: JobState, **known: Any) -> Entry:
    """The `Entry` of one stored body, whatever it holds: a body that is not a runnable envelope
    is listed with job_class ``"?"`` and its text as ``payload``, so it can still be discarded."""
    try:
        message = parse(body)
    except Rejected as rejected:
        text = body.decode("utf-8", "replace")
        error = known.pop("error", None) or JobError("Rejected", str(rejected))
        record = JobRecord(ref, "?", queue, state, payload=text, error=error, **known)
        return Entry(record, queue, ref, None)
    error = _error_of(message) if state is JobState.FAILED else None
    if message.actor_name == REJECTED_ACTOR:  # a refusal record: the refused body is its argument
        refused = message.args[0] if message.args and isinstance(message.args[0], str) else str(message.args)
        record = JobRecord(message.message_id, "?", queue, state, payload=refused, error=error, **known)
        return Entry(record, queue, ref, message)
    try:
        envelope = _envelope_of(message)
    except InvalidEnvelope as invalid:
        payload = message.args[0] if len(message.args) == 1 else list(message.args)
        text = payload if isinstance(payload, str) else json.dumps(payload, default=str)
        record = JobRecord(
            message.message_id,
            "?",
            queue,
            state,
            payload=text,
            error=error or JobError("InvalidEnvelope", str(invalid)),
            **known,
        )
        return Entry(record, queue, ref, message)
    if envelope.scheduled_at is None and state is JobState.SCHEDULED and "eta" in message.options:
        envelope = envelope.evolve(scheduled_at=_from_ms(message.options["eta"]))
    record = JobRecord.from_envelope(
        envelope, state, error=error, provider_job_id=message.message_id, **known
    )
    return Entry(record, queue, ref, message)


def _envelope_of(message: Message[Any]) -> Envelope:
    if len(message.args) != 1:
        raise InvalidEnvelope(f"the message has {len(message.args)} arguments, not one envelope")
    (payload,) = message.args
    return decode(payload) if isinstance(payload, str) else from_document(payload)


def _error_of(message: Message[Any]) -> JobError:
    text = message.options.get(ERROR_OPTION)
    trace = message.options.get("traceback")
    if not isinstance(text, str):
        return JobError("DeadLettered", "dead-lettered by Dramatiq (no error recorded)", trace)
    error_class, _, detail = text.partition(": ")
    return JobError(error_class, detail, trace)


def _from_ms(millis: object) -> datetime | None:
    if isinstance(millis, (int, float)) and not isinstance(millis, bool):
        return datetime.fromtimestamp(millis / 1000, timezone.utc)
    return None


def due_copy(message: Message[Any], envelope: Envelope | None = None) -> Message[Any]:
    """``message`` as it is published to run now: same message id, on its canonical queue,
    without the options of its last stay (eta, dead-letter error); ``envelope`` replaces its
    argument when given."""
    options = {k: v for k, v in message.options.items() if k not in _MESSAGE_OPTIONS_DROPPED}
    options.pop("jobadapter_eta", None)
    args = (envelope.to_document(),) if envelope is not None else message.args
    return Message(
        queue_name=q_name(message.queue_name),
        actor_name=message.actor_name,
        args=args,
        kwargs=message.kwargs,
        options=options,
        message_id=message.message_id,
    )


def check_ids(job_ids: Sequence[str]) -> list[str]:
    """``job_ids`` as a list of distinct ids, refusing a lone string (a common slip)."""
    if isinstance(job_ids, (str, bytes)) or not all(isinstance(i, str) and i for i in job_ids):
        raise ValueError(f"job_ids must be a sequence of non-empty job id strings, not {job_ids!r}")
    return list(dict.fromkeys(job_ids))


def check_page(limit: int, offset: int) -> None:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise ValueError(f"limit must be a whole number >= 0, not {limit!r}")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise ValueError(f"offset must be a whole number >= 0, not {offset!r}")


def check_queue(queue: str) -> str:
    if not isinstance(queue, str) or not queue:
        raise ValueError(f"a queue name must be a non-empty string, not {queue!r}")
    return q_name(queue)


def not_in_state(job_id: str, found: Entry | None, wanted: Sequence[JobState]) -> Exception:
    """`JobNotFound` when the job is nowhere, `NotInState` when it is elsewhere."""
    if found is None:
        return JobNotFound(job_id)
    return NotInState(job_id, found.record.state, wanted)


def journal_retried(job_ids: Iterable[str]) -> None:
    """Tell the journal, where there is one, that these jobs wait again (it said failed)."""
    active = journal.active()
    if active is not None:
        for job_id in job_ids:
            active.record(job_id, state=JobState.PENDING, error_class=None, error_message=None)


class _Tally:
    """Counts what a bulk command did, a page of job ids at a time (told to ``progress``)."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.done = 0
        self._page: list[str] = []

    def add(self, job_id: str) -> bool:
        """Count one; True when a page is full (then `flush` it)."""
        self._page.append(job_id)
        return len(self._page) >= OPERATION_PAGE

    def flush(self) -> list[str]:
        page, self._page = self._page, []
        self.done += len(page)
        if page and self.progress is not None:
            self.progress(len(page))
        return page


class _Walk:
    """A reader's cursor through one ordered store (a list or a zset) while the caller removes
    some of what it read: the next read starts past what stayed, not past what was read."""

    def __init__(self) -> None:
        self.removed = 0

    def take(self) -> int:
        removed, self.removed = self.removed, 0
        return removed


_CLAIM = """
-- KEYS: tombstones, running; ARGV: now, job key, schedule key, job id, claim
local now = tonumber(ARGV[1])
for _, key in ipairs({ARGV[2], ARGV[3]}) do
    local until_ms = redis.call('zscore', KEYS[1], key)
    if until_ms and tonumber(until_ms) > now then return 1 end
end
redis.call('hset', KEYS[2], ARGV[4], ARGV[5])
return 0
"""
_DISCARD = """
-- KEYS: list, msgs, tombstones, running; ARGV: ref, job id, tombstone key, until, now
if redis.call('hexists', KEYS[4], ARGV[2]) == 1 then return -1 end
local listed = redis.call('lrem', KEYS[1], 1, ARGV[1])
local stored = redis.call('hdel', KEYS[2], ARGV[1])
if listed == 1 then return 1 end
if stored == 0 then return 0 end
redis.call('zremrangebyscore', KEYS[3], '-inf', ARGV[5])
redis.call('zadd', KEYS[3], ARGV[4], ARGV[3])
return 1
"""
_RUN_NOW = """
-- KEYS: delay list, delay msgs, tombstones, list, msgs; ARGV: ref, tombstone key, until, now, new ref, body
local listed = redis.call('lrem', KEYS[1], 1, ARGV[1])
local stored = redis.call('hdel', KEYS[2], ARGV[1])
if listed == 0 and stored == 0 then return 0 end
if listed == 0 then
    redis.call('zremrangebyscore', KEYS[3], '-inf', ARGV[4])
    redis.call('zadd', KEYS[3], ARGV[3], ARGV[2])
end
redis.call('hset', KEYS[5], ARGV[5], ARGV[6])
redis.call('rpush', KEYS[4], ARGV[5])
return 1
"""
_RETRY = """
-- KEYS: dead zset, dead msgs, list, msgs, tombstones; ARGV: ref, new ref, body, job key
if redis.call('zrem', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('hdel', KEYS[2], ARGV[1])
redis.call('zrem', KEYS[5], ARGV[4])
redis.call('hset', KEYS[4], ARGV[2], ARGV[3])
redis.call('rpush', KEYS[3], ARGV[2])
return 1
"""


class RedisOperations(Adapter):
    """The operations on Dramatiq's Redis broker, natively (see the module docstring); only
    finished jobs need the journal, which Dramatiq's Redis broker keeps no trace of."""

    broker: RedisBroker
    JOB_FEATURES: ClassVar[frozenset[Capability]] = frozenset()
    """The adapter's job capabilities (the class sets them)."""
    if TYPE_CHECKING:

        def known_queues(self) -> list[str]: ...

        def declare(self, queue_name: str) -> None: ...

    OPERATIONS: ClassVar[frozenset[Capability]] = OPERATION_CAPABILITIES - {Capability.INSPECT}
    OPERATION_NOTES: ClassVar[dict[str, str]] = {
        Capability.INSPECT.value: (
            "pending, scheduled, failed and running natively (queue lists, delay queue, dead "
            "letters, the worker's running claim); finished jobs only with a journal "
            "(JOBADAPTER_JOURNAL): Dramatiq keeps no trace of them"
        ),
        Capability.RETRY.value: "one Lua script: off <queue>.XQ onto <queue>, same message_id",
        Capability.DISCARD.value: (
            "deleted in one script; a message a worker already holds (prefetched, or delayed in its "
            "memory) is deleted and tombstoned, and skipped before perform"
        ),
        Capability.RUN_NOW.value: (
            "one script: the delayed message removed (its schedule tombstoned if a worker holds it), "
            "a due copy with the same message_id published"
        ),
        Capability.PAUSE.value: f"a Redis set each worker reads every {PAUSE_POLL} s",
    }

    @property
    def capabilities(self) -> frozenset[Capability]:  # type: ignore[override]
        """The job features, and the operations: inspection only with a journal, which alone
        keeps finished jobs."""
        declared = self.JOB_FEATURES | self.OPERATIONS
        return declared | {Capability.INSPECT} if journal.active() is not None else declared

    def _ops_key(self, name: str) -> str:
        return f"{self.broker.namespace}:jobadapter.{name}"

    def _store(self, name: str) -> str:
        return f"{self.broker.namespace}:{name}"

    def _script(self, source: str) -> Any:
        scripts: dict[str, Any] = self.__dict__.setdefault("_ops_scripts", {})
        if source not in scripts:
            scripts[source] = self.broker.client.register_script(source)
        return scripts[source]

    # -- what the worker calls -------------------------------------------------------------

    def discarded(self, envelope: Envelope) -> bool:
        """Check the tombstones and, when there is none, claim the job as running, atomically
        (one round trip): ``discard`` refuses a claimed job, so it cannot report a job
        discarded that then runs."""
        claim = json.dumps(
            {
                "queue": q_name(envelope.queue_name),
                "worker": self.broker.broker_id,
                "started_at": format_timestamp(datetime.now(timezone.utc)),
                "scheduled_at": None
                if envelope.scheduled_at is None
                else format_timestamp(envelope.scheduled_at),
            }
        )
        try:
            skipped = self._script(_CLAIM)(
                keys=[self._ops_key("tombstones"), self._ops_key("running")],
                args=[
                    current_millis(),
                    job_key(envelope.job_id),
                    schedule_key(envelope.job_id, envelope.scheduled_at),
                    envelope.job_id,
                    claim,
                ],
            )
        except redis.ConnectionError as error:
            # Redis went away with the message already delivered: its ack cannot land either,
            # so it comes back after the outage anyway. Running it (at least once) beats
            # failing a job over a check that could not be made.
            _outage.down(f"the tombstone check cannot reach Redis ({error}); jobs run unchecked")
            return False
        _outage.up()
        if not skipped:
            self._claimed().append(envelope.job_id)
        return bool(skipped)

    def _claimed(self) -> list[str]:
        local: threading.local = self.__dict__.setdefault("_ops_claims", threading.local())
        if not hasattr(local, "job_ids"):
            local.job_ids = []
        claims: list[str] = local.job_ids
        return claims

    def end_run(self) -> None:
        """Drop the running claims this worker thread took (the message was settled)."""
        claims = self._claimed()
        if claims:
            try:
                self.broker.client.hdel(self._ops_key("running"), *claims)
            except redis.ConnectionError as error:  # kept: the thread's next job drops them too
                _outage.down(f"running claims cannot be dropped while Redis is away ({error})")
                return
            claims.clear()

    def paused_queues(self) -> frozenset[str] | None:
        """The queues no worker may take jobs from now."""
        members = self.broker.client.smembers(self._ops_key("paused"))
        return frozenset(m.decode() if isinstance(m, bytes) else str(m) for m in members)

    # -- queries ---------------------------------------------------------------------------

    def queues(self) -> list[QueueInfo]:
        client = self.broker.client
        paused = self.paused_queues() or frozenset()
        running = self._running()
        names = self._queue_names() | paused
        with client.pipeline(transaction=False) as pipe:
            for name in sorted(names):
                pipe.hlen(self._store(f"{name}.msgs"))
                pipe.hlen(self._store(f"{dq_name(name)}.msgs"))
                pipe.zcard(self._store(xq_name(name)))
            counts = pipe.execute()
        infos = []
        for index, name in enumerate(sorted(names)):
            stored, delayed, dead = counts[3 * index : 3 * index + 3]
            busy = sum(1 for entry in running if entry.queue == name)
            infos.append(QueueInfo(name, max(0, int(stored) - busy), int(delayed), int(dead), name in paused))
        return infos

    def _queue_names(self) -> set[str]:
        """Every queue with something stored, found in Redis (an operator's process published to
        none), and those this adapter knows."""
        prefix = f"{self.broker.namespace}:"
        names = set(self.known_queues())
        pattern = _glob_escape(prefix) + "*"
        for key in self.broker.client.scan_iter(match=pattern, count=1000):
            name = (key.decode() if isinstance(key, bytes) else str(key))[len(prefix) :]
            if name.startswith(("__acks__.", "__heartbeats__", "jobadapter.")):
                continue
            name = name.removesuffix(".msgs")
            names.add(q_name(name.removesuffix(".XQ")))
        return names

    def jobs(
        self,
        state: JobState,
        *,
        filter: JobFilter = EVERY_JOB,
        limit: int = 50,
        offset: int = 0,
    ) -> list[JobRecord]:
        check_page(limit, offset)
        state = JobState(state)
        if state is JobState.FINISHED:
            return self._finished(filter, limit, offset)
        return [e.record for e in islice(self._entries(state, filter), offset, offset + limit)]

    def all_jobs(self, state: JobState, filter: JobFilter = EVERY_JOB) -> Iterator[JobRecord]:
        """Streamed: a page of `jobs` reads every stored entry up to its offset."""
        state = JobState(state)
        if state is JobState.FINISHED:
            return super().all_jobs(state, filter)
        return (entry.record for entry in self._entries(state, filter))

    def _finished(self, filter: JobFilter, limit: int, offset: int) -> list[JobRecord]:
        return journal.required(f"listing finished jobs on {self.name}").jobs(
            JobState.FINISHED, filter, limit, offset
        )

    def _entries(self, state: JobState, filter: JobFilter, walk: _Walk | None = None) -> Iterator[Entry]:
        """Every stored job in ``state`` that ``filter`` matches, queue by queue, each queue
        oldest first, read a page at a time."""
        names = [check_queue(filter.queue)] if filter.queue is not None else sorted(self._queue_names())
        for name in names:
            for entry in self._queue_entries(name, state, walk):
                if filter.matches(entry.record):
                    yield entry

    def _queue_entries(self, queue: str, state: JobState, walk: _Walk | None) -> Iterator[Entry]:
        if state is JobState.RUNNING:
            yield from (entry for entry in self._running() if entry.queue == queue)
        elif state is JobState.PENDING:
            running = {entry.ref for entry in self._running() if entry.queue == queue}
            held = sorted(self._held(queue) - running)
            yield from self._read(queue, queue, state, held)
            yield from self._read_list(queue, queue, state, walk)
        elif state is JobState.SCHEDULED:
            delayed = dq_name(queue)
            yield from self._read(queue, delayed, state, sorted(self._held(delayed)))
            yield from self._read_list(queue, delayed, state, walk)
        elif state is JobState.FAILED:
            yield from self._read_dead(queue, walk)

    def _held(self, store: str) -> set[str]:
        """The ids workers fetched from ``store`` and have not acknowledged (prefetched, in a
        delay consumer's memory, or running), from every worker that heartbeats."""
        client = self.broker.client
        workers = client.zrange(self._store("__heartbeats__"), 0, -1)
        if not workers:
            return set()
        with client.pipeline(transaction=False) as pipe:
            for worker in workers:
                wid = worker.decode() if isinstance(worker, bytes) else str(worker)
                pipe.smembers(self._store(f"__acks__.{wid}.{store}"))
            sets = pipe.execute()
        return {m.decode() if isinstance(m, bytes) else str(m) for members in sets for m in members}

    def _read(self, queue: str, store: str, state: JobState, refs: Sequence[str]) -> Iterator[Entry]:
        for start in range(0, len(refs), OPERATION_PAGE):
            chunk = refs[start : start + OPERATION_PAGE]
            bodies = self.broker.client.hmget(self._store(f"{store}.msgs"), chunk)
            for ref, body in zip(chunk, bodies, strict=True):
                if body is not None:
                    yield read_entry(body, queue, ref, state)

    def _read_list(self, queue: str, store: str, state: JobState, walk: _Walk | None) -> Iterator[Entry]:
        position = 0
        if walk is not None:
            walk.take()  # removals so far were of held messages, not of this list
        while True:
            raw = self.broker.client.lrange(self._store(store), position, position + OPERATION_PAGE - 1)
            if not raw:
                return
            refs = [r.decode() if isinstance(r, bytes) else str(r) for r in raw]
            yield from self._read(queue, store, state, refs)
            position = max(0, position + len(refs) - (walk.take() if walk is not None else 0))

    def _read_dead(self, queue: str, walk: _Walk | None) -> Iterator[Entry]:
        """The dead letters, oldest first, up to those dead-lettered when the walk began (so a
        ``retry_all`` never meets the jobs it retried that failed again)."""
        key = self._store(xq_name(queue))
        until = current_millis()
        position = 0
        if walk is not None:
            walk.take()  # removals so far were in other queues
        while True:
            raw: list[tuple[bytes, float]] = self.broker.client.zrangebyscore(  # type: ignore[assignment]
                key, "-inf", until, start=position, num=OPERATION_PAGE, withscores=True
            )
            if not raw:
                return
            refs = [r.decode() if isinstance(r, bytes) else str(r) for r, _ in raw]
            bodies = self.broker.client.hmget(f"{key}.msgs", refs)
            for ref, (_, score), body in zip(refs, raw, bodies, strict=True):
                if body is not None:
                    yield read_entry(body, queue, ref, JobState.FAILED, finished_at=_from_ms(score))
            position = max(0, position + len(refs) - (walk.take() if walk is not None else 0))

    def _running(self) -> list[Entry]:
        """The claimed jobs whose worker still heartbeats, oldest start first; claims of dead
        workers are dropped (their messages come back once the heartbeat times out)."""
        client = self.broker.client
        claims = client.hgetall(self._ops_key("running"))
        if not claims:
            return []
        alive_since = current_millis() - self.broker.heartbeat_timeout
        entries, stale = [], []
        for raw_id, raw_claim in claims.items():
            job_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            claim = json.loads(raw_claim)
            beat = client.zscore(self._store("__heartbeats__"), claim["worker"])
            if beat is None or beat < alive_since:
                stale.append(job_id)
                continue
            entry = self._running_entry(job_id, claim)
            if entry is not None:
                entries.append(entry)
        if stale:
            client.hdel(self._ops_key("running"), *stale)
        return sorted(entries, key=lambda e: e.record.started_at or datetime.min.replace(tzinfo=timezone.utc))

    def _running_entry(self, job_id: str, claim: dict[str, Any]) -> Entry | None:
        """The running job's entry: its body is still in its queue's hash until it is
        acknowledged, under one of the ids its worker holds."""
        queue = claim["queue"]
        worker = claim["worker"]
        client = self.broker.client
        refs = sorted(
            m.decode() if isinstance(m, bytes) else str(m)
            for m in client.smembers(self._store(f"__acks__.{worker}.{queue}"))
        )
        started = datetime.fromisoformat(claim["started_at"].replace("Z", "+00:00"))
        for entry in self._read(queue, queue, JobState.RUNNING, refs):
            if entry.record.job_id == job_id:
                record = replace(entry.record, started_at=started, worker=worker)
                return replace(entry, record=record)
        return None

    def find(self, job_id: str) -> JobRecord:
        found = self._locate([job_id]).get(job_id)
        if found is not None:
            return found.record
        return self._find_elsewhere(job_id)

    def _find_elsewhere(self, job_id: str) -> JobRecord:
        """A job Redis no longer holds: finished (or discarded), as the journal remembers it."""
        active = journal.active()
        found = active.find(job_id) if active is not None else None
        if found is None:
            raise JobNotFound(job_id)
        return found

    def _locate(self, job_ids: Iterable[str]) -> dict[str, Entry]:
        """Where each of ``job_ids`` is stored, in one pass over the stores (running first, then
        pending, scheduled and failed: a job stored twice is reported where it runs soonest)."""
        wanted = set(job_ids)
        found: dict[str, Entry] = {}
        for entry in self._running():
            if entry.record.job_id in wanted:
                found.setdefault(entry.record.job_id, entry)
        for queue in sorted(self._queue_names()):
            for store, state in (
                (queue, JobState.PENDING),
                (dq_name(queue), JobState.SCHEDULED),
                (xq_name(queue), JobState.FAILED),
            ):
                if wanted - set(found):
                    self._scan_for(queue, store, state, wanted - set(found), found)
        return found

    def _scan_for(
        self, queue: str, store: str, state: JobState, wanted: set[str], found: dict[str, Entry]
    ) -> None:
        key = self._store(f"{store}.msgs")
        for raw_ref, body in self.broker.client.hscan_iter(key, count=OPERATION_PAGE):
            ref = raw_ref.decode() if isinstance(raw_ref, bytes) else str(raw_ref)
            candidates = {m.decode() for m in _MESSAGE_ID.findall(body)} | {ref}
            if not candidates & wanted:
                continue
            entry = read_entry(body, queue, ref, state)
            if entry.record.job_id in wanted and entry.record.job_id not in found:
                found[entry.record.job_id] = entry

    # -- commands --------------------------------------------------------------------------

    def retry(self, job_ids: Sequence[str]) -> int:
        ids = check_ids(job_ids)
        located = self._locate(ids)
        for job_id in ids:
            entry = located.get(job_id)
            if entry is None or entry.record.state is not JobState.FAILED:
                raise not_in_state(job_id, entry, RETRYABLE)
            if entry.envelope is None:
                raise OperationUnsupported(
                    f"failed entry {job_id!r} is not a runnable envelope ({entry.record.error}); "
                    "it can only be discarded"
                )
        return sum(self._retry_entry(located[job_id]) for job_id in ids)

    def retry_all(self, filter: JobFilter = EVERY_JOB, *, progress: Progress | None = None) -> int:
        """One walk through the dead letters, retrying as it goes: a page in memory at a time,
        and what it retried is not met again."""
        walk = _Walk()
        tally = _Tally(progress)
        for entry in self._entries(JobState.FAILED, filter, walk):
            if entry.envelope is not None and self._retry_entry(entry):
                walk.removed += 1
                if tally.add(entry.record.job_id):
                    tally.flush()
        tally.flush()
        return tally.done

    def _retry_entry(self, entry: Entry) -> int:
        assert entry.message is not None
        journal_retried([entry.record.job_id])  # first: the copy may run, and journal it, at once
        fresh = str(uuid.uuid4())
        copy = due_copy(entry.message).copy(options={"redis_message_id": fresh})
        done: int = self._script(_RETRY)(
            keys=[
                self._store(xq_name(entry.queue)),
                self._store(f"{xq_name(entry.queue)}.msgs"),
                self._store(entry.queue),
                self._store(f"{entry.queue}.msgs"),
                self._ops_key("tombstones"),
            ],
            args=[entry.ref, fresh, copy.encode(), job_key(entry.record.job_id)],
        )
        if done:
            self.declare(entry.queue)
        return done

    def discard(self, job_ids: Sequence[str]) -> int:
        ids = check_ids(job_ids)
        located = self._locate(ids)
        for job_id in ids:
            entry = located.get(job_id)
            if entry is None or entry.record.state not in DISCARDABLE:
                raise not_in_state(job_id, entry, DISCARDABLE)
        done = 0
        for job_id in ids:
            outcome = self._discard_entry(located[job_id])
            if outcome == 0:  # it moved (a delayed message came due): find it once more
                again = self._locate([job_id]).get(job_id)
                if again is None or again.record.state not in DISCARDABLE:
                    raise not_in_state(job_id, again, DISCARDABLE)
                outcome = self._discard_entry(again)
            if outcome < 0:
                raise NotInState(job_id, JobState.RUNNING, DISCARDABLE)
            done += outcome
        journal.record_discarded(ids)
        return done

    def discard_all(
        self, state: JobState, filter: JobFilter = EVERY_JOB, *, progress: Progress | None = None
    ) -> int:
        state = JobState(state)
        if state not in DISCARDABLE:
            raise ValueError(f"only pending, scheduled or failed jobs can be discarded, not {state.value}")
        walk = _Walk()
        tally = _Tally(progress)
        for entry in self._entries(state, filter, walk):
            if self._discard_entry(entry) > 0:
                walk.removed += 1
                if tally.add(entry.record.job_id):
                    journal.record_discarded(tally.flush())
        journal.record_discarded(tally.flush())
        return tally.done

    def _discard_entry(self, entry: Entry) -> int:
        """1: discarded; 0: no longer where it was read; -1: it started running meanwhile."""
        state = entry.record.state
        if state is JobState.FAILED:
            dead = self._store(xq_name(entry.queue))
            with self.broker.client.pipeline(transaction=True) as pipe:
                pipe.zrem(dead, entry.ref)
                pipe.hdel(f"{dead}.msgs", entry.ref)
                removed, _ = pipe.execute()
            return int(removed)
        store = entry.queue if state is JobState.PENDING else dq_name(entry.queue)
        until = self._tombstone_until(entry.record.scheduled_at)
        result: int = self._script(_DISCARD)(
            keys=[
                self._store(store),
                self._store(f"{store}.msgs"),
                self._ops_key("tombstones"),
                self._ops_key("running"),
            ],
            args=[entry.ref, entry.record.job_id, job_key(entry.record.job_id), until, current_millis()],
        )
        return result

    @staticmethod
    def _tombstone_until(scheduled_at: datetime | None) -> int:
        due = current_millis()
        if scheduled_at is not None:
            due = max(due, int(scheduled_at.timestamp() * 1000))
        return due + TOMBSTONE_LINGER_MS

    def run_now(self, job_id: str) -> None:
        check_ids([job_id])
        entry = self._locate([job_id]).get(job_id)
        for _ in range(2):
            if entry is not None and entry.record.state is JobState.PENDING:
                return  # it came due meanwhile: it runs at once already
            if entry is None or entry.record.state is not JobState.SCHEDULED or entry.message is None:
                raise not_in_state(job_id, entry, (JobState.SCHEDULED,))
            envelope = entry.envelope
            due = envelope.evolve(scheduled_at=datetime.now(timezone.utc)) if envelope is not None else None
            journal_retried([job_id])  # first: the due copy may run, and journal it, at once
            fresh = str(uuid.uuid4())
            copy = due_copy(entry.message, due).copy(options={"redis_message_id": fresh})
            delayed = dq_name(entry.queue)
            moved = self._script(_RUN_NOW)(
                keys=[
                    self._store(delayed),
                    self._store(f"{delayed}.msgs"),
                    self._ops_key("tombstones"),
                    self._store(entry.queue),
                    self._store(f"{entry.queue}.msgs"),
                ],
                args=[
                    entry.ref,
                    schedule_key(job_id, envelope.scheduled_at if envelope else None),
                    self._tombstone_until(entry.record.scheduled_at),
                    current_millis(),
                    fresh,
                    copy.encode(),
                ],
            )
            if moved:
                self.declare(entry.queue)
                return
            entry = self._locate([job_id]).get(job_id)  # a delay consumer moved it meanwhile
        raise not_in_state(job_id, entry, (JobState.SCHEDULED,))

    def pause(self, queue: str) -> None:
        self.broker.client.sadd(self._ops_key("paused"), check_queue(queue))

    def resume(self, queue: str) -> None:
        self.broker.client.srem(self._ops_key("paused"), check_queue(queue))


class RabbitmqOperations(Adapter):
    """The operations on Dramatiq's RabbitMQ broker: failed jobs natively (the dead-letter
    queues, read without consuming), the rest through the journal (see the module docstring).
    Without a journal it offers only what the dead letters allow: listing, retrying and
    discarding failed jobs."""

    broker: RabbitmqBroker
    JOB_FEATURES: ClassVar[frozenset[Capability]] = frozenset()
    """The adapter's job capabilities (the class sets them)."""
    if TYPE_CHECKING:

        def known_queues(self) -> list[str]: ...

        def _reconnecting(self, operation: Callable[[], T]) -> T: ...

    OPERATION_NOTES: ClassVar[dict[str, str]] = {
        Capability.INSPECT.value: (
            "failed jobs from the dead-letter queues <queue>.XQ (read with unacknowledged basic_get), "
            "pending, scheduled, running and finished from the journal: RabbitMQ cannot list a queue "
            "without consuming it; without a journal (JOBADAPTER_JOURNAL) unsupported"
        ),
        Capability.RETRY.value: "one AMQP transaction per page: the copy published, the dead letter acked",
        Capability.DISCARD.value: (
            "failed: acked off <queue>.XQ; pending or scheduled: RabbitMQ cannot delete one message, so "
            "a journal tombstone the worker checks before perform (unsupported without a journal)"
        ),
        Capability.RUN_NOW.value: (
            "a due copy (same message_id, rebuilt from the journal's row) published, the old schedule "
            "tombstoned in the journal (unsupported without one)"
        ),
        Capability.PAUSE.value: (
            f"the journal's paused set, which each worker reads every {PAUSE_POLL} s "
            "(unsupported without a journal)"
        ),
    }

    @property
    def capabilities(self) -> frozenset[Capability]:  # type: ignore[override]
        """Retrying needs only the dead letters; everything else needs the journal."""
        declared = self.JOB_FEATURES | {Capability.RETRY, Capability.MIGRATE_FROM, Capability.MIGRATE_TO}
        if journal.active() is None:
            return declared
        return declared | {Capability.INSPECT, Capability.DISCARD, Capability.RUN_NOW, Capability.PAUSE}

    # -- what the worker calls -------------------------------------------------------------

    def discarded(self, envelope: Envelope) -> bool:
        """The journal's tombstones: the job's, and its schedule's (two indexed lookups)."""
        active = journal.active()
        if active is None:
            return False
        return active.is_tombstoned(job_key(envelope.job_id)) or active.is_tombstoned(
            schedule_key(envelope.job_id, envelope.scheduled_at)
        )

    def paused_queues(self) -> frozenset[str] | None:
        active = journal.active()
        return None if active is None else active.paused()

    # -- queries ---------------------------------------------------------------------------

    def queues(self) -> list[QueueInfo]:
        active = journal.required(f"listing queues on {self.name}")
        paused = active.paused()
        infos = []
        for name in sorted(self._queue_names(active) | paused):
            ready, _ = self._reconnecting(partial(self._passive_declare, name))
            dead, _ = self._reconnecting(partial(self._passive_declare, xq_name(name)))
            scheduled = active.count(JobState.SCHEDULED, name)
            infos.append(QueueInfo(name, ready, scheduled, dead, name in paused))
        return infos

    def _passive_declare(self, name: str) -> tuple[int, int]:
        """Queue ``name``'s (messages, consumers) from a passive declare, (0, 0) if it does not
        exist: a read never creates a queue (Dramatiq's own counts declare all three)."""
        channel = self.broker.connection.channel()
        try:
            declared = channel.queue_declare(name, passive=True)
        except pika.exceptions.ChannelClosedByBroker:  # 404: no such queue
            return 0, 0
        finally:
            if channel.is_open:
                channel.close()
        return int(declared.method.message_count), int(declared.method.consumer_count)

    def _queue_names(self, active: Journal | None) -> set[str]:
        """The queues this process published to, and (RabbitMQ lists none over AMQP) those of the
        journal's failed rows, whose dead letters are the ones to read."""
        names = set(self.known_queues())
        if active is not None:
            # One GROUP BY, not every failed row read and parsed (the dashboard asks on each load).
            names.update(
                name for name, counts in active.queue_counts().items() if counts.get(JobState.FAILED)
            )
        return {q_name(name) for name in names if name}

    def jobs(
        self,
        state: JobState,
        *,
        filter: JobFilter = EVERY_JOB,
        limit: int = 50,
        offset: int = 0,
    ) -> list[JobRecord]:
        check_page(limit, offset)
        state = JobState(state)
        if state is JobState.FAILED:
            return [e.record for e in islice(self._dead(filter), offset, offset + limit)]
        active = journal.required(f"listing {state.value} jobs on {self.name}")
        return active.jobs(state, filter, limit, offset)

    def _dead(self, filter: JobFilter) -> Iterator[Entry]:
        """The dead letters ``filter`` matches, queue by queue, each oldest first."""
        for name in self._filtered_queues(filter):
            with self._reading_dead(name) as (_, letters):
                for _, entry in letters:
                    if filter.matches(entry.record):
                        yield entry

    @contextmanager
    def _reading_dead(self, queue: str) -> Iterator[tuple[Any, Iterator[tuple[int, Entry]]]]:
        """A channel reading ``<queue>.XQ`` with unacknowledged ``basic_get``: the deliveries and
        their entries, up to as many as the queue held when it began (so what a walk republishes
        and fails again is not met twice). Closing the channel returns what was not acked. A
        queue that does not exist has no letters: reading never declares one."""
        channel = self._reconnecting(lambda: self.broker.connection.channel())
        try:
            yield channel, self._deliveries(channel, queue)
        finally:
            if channel.is_open:
                channel.close()

    @staticmethod
    def _deliveries(channel: Any, queue: str) -> Iterator[tuple[int, Entry]]:
        dead = xq_name(queue)
        try:
            held = channel.queue_declare(dead, passive=True).method.message_count
        except pika.exceptions.ChannelClosedByBroker:  # 404: nothing ever failed on this queue
            return
        for _ in range(held):
            method, _, body = channel.basic_get(dead, auto_ack=False)
            if method is None:
                return
            ref = "sha256:" + hashlib.sha256(body).hexdigest()[:24]
            yield method.delivery_tag, read_entry(body, queue, ref, JobState.FAILED)

    def find(self, job_id: str) -> JobRecord:
        """The journal's row; the dead letter itself when the job failed (or the journal has
        none, or there is no journal). A row that says running is checked against the dead
        letters too: the broker is the truth, and the worker's last row may still be on its way."""
        active = journal.active()
        row = active.find(job_id) if active is not None else None
        if row is not None and row.state not in (JobState.FAILED, JobState.RUNNING):
            return row
        queues = [row.queue] if row is not None else None
        dead = self._find_dead({job_id}, queues).get(job_id)
        if dead is not None:
            return dead
        if row is not None:
            return row
        if active is None:
            raise OperationUnsupported(
                f"job {job_id!r} is not in the dead letters; whether it is pending, scheduled, running "
                "or finished only a journal knows (configure JOBADAPTER_JOURNAL)"
            )
        raise JobNotFound(job_id)

    def _find_dead(self, job_ids: set[str], queues: Sequence[str] | None = None) -> dict[str, JobRecord]:
        names = queues if queues is not None else sorted(self._queue_names(journal.active()))
        found: dict[str, JobRecord] = {}
        for name in names:
            with self._reading_dead(name) as (_, letters):
                for _, entry in letters:
                    if entry.record.job_id in job_ids:
                        found.setdefault(entry.record.job_id, entry.record)
        return found

    # -- commands --------------------------------------------------------------------------

    def retry(self, job_ids: Sequence[str]) -> int:
        ids = check_ids(job_ids)
        dead = self._find_dead(set(ids))
        for job_id in ids:
            if job_id not in dead:
                raise self._elsewhere(job_id, RETRYABLE)
            if dead[job_id].job_class == "?":
                raise OperationUnsupported(
                    f"failed entry {job_id!r} is not a runnable envelope ({dead[job_id].error}); "
                    "it can only be discarded"
                )
        wanted = set(ids)
        queues = sorted({record.queue for record in dead.values()})
        return self._settle_dead(queues, lambda e: e.record.job_id in wanted, publish=True)

    def retry_all(self, filter: JobFilter = EVERY_JOB, *, progress: Progress | None = None) -> int:
        """One pass over each dead-letter queue, republishing what ``filter`` matches."""
        names = self._filtered_queues(filter)
        return self._settle_dead(
            names,
            lambda e: e.envelope is not None and filter.matches(e.record),
            publish=True,
            progress=progress,
        )

    def _settle_dead(
        self,
        queues: Sequence[str],
        chosen: Callable[[Entry], bool],
        *,
        publish: bool,
        progress: Progress | None = None,
    ) -> int:
        """Ack the chosen dead letters, after publishing a due copy of each with ``publish``, on
        the reading channel in one AMQP transaction per page: a copy is published exactly when
        its dead letter goes. The journal is told first: a copy may run, and journal its run,
        as soon as the transaction commits. Returns how many."""
        tally = _Tally(progress)
        for name in queues:
            with self._reading_dead(name) as (channel, letters):
                channel.tx_select()
                for tag, entry in letters:
                    if not chosen(entry):
                        continue
                    if publish and entry.message is not None:
                        copy = due_copy(entry.message)
                        channel.basic_publish(
                            exchange="",
                            routing_key=copy.queue_name,
                            body=copy.encode(),
                            properties=pika.BasicProperties(
                                delivery_mode=2, priority=copy.options.get("broker_priority")
                            ),
                        )
                    channel.basic_ack(tag)
                    if tally.add(entry.record.job_id):
                        self._settled(tally.flush(), publish)
                        channel.tx_commit()
                self._settled(tally.flush(), publish)
                channel.tx_commit()
        return tally.done

    @staticmethod
    def _settled(job_ids: list[str], published: bool) -> None:
        if published:
            journal_retried(job_ids)
        else:
            journal.record_discarded(job_ids)

    def discard(self, job_ids: Sequence[str]) -> int:
        """Failed jobs are acked off their dead-letter queue; pending and scheduled ones, which
        RabbitMQ cannot delete, are tombstoned in the journal (the worker skips them)."""
        ids = check_ids(job_ids)
        active = journal.active()
        if active is not None:
            active.flush()
        # The dead letters first: the broker is the truth, and a job's last journal rows
        # (running, failed) may still be on their way while its dead letter is there.
        dead = self._find_dead(set(ids))
        waiting = []
        for job_id in ids:
            if job_id in dead:
                continue
            row = active.find(job_id) if active is not None else None
            if row is not None and row.state in (JobState.PENDING, JobState.SCHEDULED):
                waiting.append(job_id)
                continue
            if row is not None and row.state is not JobState.FAILED:
                raise NotInState(job_id, row.state, DISCARDABLE)
            if active is None:
                raise OperationUnsupported(
                    f"job {job_id!r} is not in the dead letters; discarding a pending or scheduled job "
                    "on RabbitMQ needs a journal (configure JOBADAPTER_JOURNAL)"
                )
            raise JobNotFound(job_id)
        if waiting:
            assert active is not None
            for job_id in waiting:
                active.tombstone(job_key(job_id))
            journal.record_discarded(waiting)
        queues = sorted({record.queue for record in dead.values()})
        discarded = self._settle_dead(queues, lambda e: e.record.job_id in dead, publish=False)
        return len(waiting) + discarded

    def discard_all(
        self, state: JobState, filter: JobFilter = EVERY_JOB, *, progress: Progress | None = None
    ) -> int:
        """Failed: one pass over each dead-letter queue; pending or scheduled: the journal's
        listing, a page at a time."""
        state = JobState(state)
        if state is JobState.FAILED:
            names = self._filtered_queues(filter)
            return self._settle_dead(
                names, lambda e: filter.matches(e.record), publish=False, progress=progress
            )
        journal.required(f"discarding {state.value} jobs on {self.name}")
        return super().discard_all(state, filter, progress=progress)

    def _filtered_queues(self, filter: JobFilter) -> list[str]:
        if filter.queue is not None:
            return [check_queue(filter.queue)]
        return sorted(self._queue_names(journal.active()))

    def run_now(self, job_id: str) -> None:
        """Publish a due copy rebuilt from the journal's row (the message itself sits in a
        delay queue or a worker's memory, out of reach), then tombstone the old schedule."""
        check_ids([job_id])
        active = journal.required(f"run_now on {self.name}")
        row = active.find(job_id)
        if row is None:
            raise JobNotFound(job_id)
        if row.state is JobState.PENDING:
            return  # due already
        if row.state is not JobState.SCHEDULED:
            raise NotInState(job_id, row.state, (JobState.SCHEDULED,))
        now = datetime.now(timezone.utc)
        envelope = Envelope(
            job_class=row.job_class,
            job_id=job_id,
            queue_name=row.queue,
            priority=row.priority,
            arguments=list(row.arguments),
            keyword_arguments=dict(row.keyword_arguments),
            executions=row.executions,
            exception_executions={},
            enqueued_at=row.enqueued_at or now,
            scheduled_at=now,
        )
        active.record(job_id, state=JobState.PENDING, scheduled_at=now)  # before the copy can run
        self.enqueue(envelope, {})
        active.tombstone(schedule_key(job_id, row.scheduled_at))

    def pause(self, queue: str) -> None:
        journal.required(f"pausing queues on {self.name}").pause(check_queue(queue))

    def resume(self, queue: str) -> None:
        journal.required(f"pausing queues on {self.name}").resume(check_queue(queue))

    def _elsewhere(self, job_id: str, wanted: Sequence[JobState]) -> Exception:
        active = journal.active()
        row = active.find(job_id) if active is not None else None
        if row is None:
            return JobNotFound(job_id)
        return NotInState(job_id, row.state, wanted)


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)
