"""``celery+amqp://…``, ``celery+redis://…`` and ``celery:///?app=pkg.module:app``.

jobadapter jobs as native Celery tasks. Each registered job class is a Celery
task named by its ``job_name`` (registered in the worker, published by name
with ``send_task``), so Flower, task events and error reporters show the job's
own class. The task's one argument is the envelope's JSON text: a string keeps
kombu's JSON type hooks (``{"__type__": …}``) away from user dicts, and the
text in the dead-letter queue is byte for byte what was published.

| jobadapter | Celery |
|---|---|
| queue | ``queue=`` (created on demand, ``x-max-priority`` on RabbitMQ) |
| ``wait`` / ``wait_until`` | ``eta``; beyond ``horizon`` seconds, re-published in hops |
| priority (lower = more urgent) | RabbitMQ ``9 - p``; Redis priority step ``p`` (0 … 9); None counts as 0 |
| retry | the task's own ``retry`` (state RETRY), same ``task_id`` = ``job_id`` |
| failure | the dead-letter queue (and state FAILURE with ``results=1``) |
| ``perform_all_later`` | one producer, inside kombu's ``Producer.batch()`` (one Redis pipeline) |

URL options: ``horizon`` (seconds an ETA message may sit unacknowledged in a
worker, default 900), ``visibility_timeout`` (Redis, default 3600, must exceed
``horizon``), ``dead_letter_queue`` (default ``jobadapter.dead``),
``dead_letter_ttl`` (seconds a dead letter is kept, default 7 days, as
Dramatiq's ``dead_message_ttl``),
``results`` (default 0: no per-job result writes; 1 keeps each job's state, in
the Redis broker itself unless ``result_backend`` names another),
``result_backend`` (implies ``results=1``), ``prefetch`` (messages each pool
process may hold, default 1: strict priority order), ``connect_timeout``
(default 2 s) and ``publish_retries`` (default 2), which bound how long
``perform_later`` may block on a broker that is down.
``set(adapter_options=…)`` accepts Celery's ``expires``, ``time_limit`` and
``soft_time_limit``.
"""

from __future__ import annotations

import base64
import importlib
import json
import logging
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from celery import Celery  # type: ignore[import-untyped]
from celery.backends.base import DisabledBackend  # type: ignore[import-untyped]
from celery.backends.redis import RedisBackend  # type: ignore[import-untyped]
from celery.exceptions import Reject  # type: ignore[import-untyped]
from kombu.entity import Queue
from kombu.exceptions import KombuError
from kombu.messaging import Producer
from redis.exceptions import RedisError

from jobadapter import registry
from jobadapter.adapters.base import (
    JOB_CAPABILITIES,
    Adapter,
    AdapterURL,
    Capability,
    Drain,
    EnqueueRequest,
    Progress,
    option_number,
)
from jobadapter.envelope import Envelope, format_timestamp
from jobadapter.errors import ConfigurationError, EnqueueError, UnknownJobError
from jobadapter.operations import EVERY_JOB, JobError, JobFilter, JobRecord, JobState, QueueInfo
from jobadapter_celery.operations import RedisOperations, operations_for
from jobadapter_celery.queues import ExistingQueues
from jobadapter_celery.transport import FAILED_AT_HEADER

_logger = logging.getLogger("jobadapter")

if TYPE_CHECKING:
    from jobadapter.faults.hostile import HostileMessage
    from jobadapter.migrate.ledger import Ledger

RAW_TASK = "jobadapter.perform"
"""The task that carries payloads published without a job class (``enqueue_payload``)."""
DEAD_LETTER_TTL = 7 * 24 * 3600.0
"""Seconds a dead letter is kept (``dead_letter_ttl``): Dramatiq's ``dead_message_ttl``."""
PRIORITY_LEVELS = 10
"""jobadapter priorities 0 … 9 map onto ten broker levels; outside values are clamped."""
DEFAULT_QUEUE = "default"
"""What a worker consumes when given no queues: jobadapter's default ``queue_as``."""
_OUR_OPTIONS = (
    "app",
    "horizon",
    "visibility_timeout",
    "dead_letter_queue",
    "dead_letter_ttl",
    "result_backend",
    "results",
    "prefetch",
    "connect_timeout",
    "publish_retries",
)
_PUBLISH_ERRORS = (KombuError, OSError, RedisError)
_STATES = {
    "SCHEDULED": "scheduled",
    "RECEIVED": "queued",
    "STARTED": "started",
    "RETRY": "retrying",
    "SUCCESS": "finished",
    "FAILURE": "failed",
    "REVOKED": "canceled",
}


class PollingRedisBackend(RedisBackend):  # type: ignore[misc]
    """Celery's Redis result backend, minus the pub/sub subscription made at every publish,
    and whose state writes never fail a job when Redis is down.

    Celery subscribes to a task's result channel when it sends the task, so that
    ``AsyncResult.get()`` can wait without polling. jobadapter never waits on a
    job's result (``status`` reads the stored state), so the subscription would
    only cost a round trip per enqueue, and block ``perform_later`` for Celery's
    20 reconnection attempts when Redis is down.

    A job's state is a report, not the job: its message is acknowledged (or
    dead-lettered) whatever the state write did. Celery lets a failed STARTED
    write escape the task's trace as an error outside the task body, so during
    an outage a job that had run was reported as an internal error. Here a
    write that cannot reach Redis is given up after one quick retry, with one
    warning per outage; the job's outcome stands.
    """

    _unreachable = False

    def on_task_call(self, producer: Any, task_id: str) -> None:
        return None

    def store_result(
        self, task_id: str, result: Any, state: str, traceback: Any = None, request: Any = None, **kwargs: Any
    ) -> Any:
        try:
            stored = super().store_result(task_id, result, state, traceback, request, **kwargs)
        except self.connection_errors as error:
            if not PollingRedisBackend._unreachable:
                _logger.warning(
                    "result backend unreachable; job states are not recorded until it is back: %s", error
                )
            PollingRedisBackend._unreachable = True
            return result
        if PollingRedisBackend._unreachable:
            _logger.warning("result backend reachable again")
            PollingRedisBackend._unreachable = False
        return stored


@dataclass(frozen=True)
class Settings:
    """The adapter's own URL options, parsed and checked once."""

    horizon: float
    visibility_timeout: float
    dead_letter_queue: str
    dead_letter_ttl: float
    connect_timeout: float
    publish_retries: int
    results: bool
    prefetch: int


_BATCHES = hasattr(Producer, "batch")
"""kombu 5.7 groups publishes in ``Producer.batch()`` (one Redis pipeline); kombu 5.5 (Celery 5.5)
publishes each message on its own, so there the adapter does not declare bulk enqueue."""

_JOB_NOTES: Mapping[str, str] = {
    Capability.EXTERNAL_WORKER.value: ("a Celery worker (prefork), one task per job class named by job_name"),
    Capability.DELAYED.value: (
        "Celery eta; waits beyond the horizon (900 s) are re-published in hops, "
        "so no message outlives consumer_timeout or visibility_timeout"
    ),
    Capability.QUEUES.value: "Celery queue= (worker -Q)",
    Capability.PRIORITY.value: (
        "RabbitMQ x-max-priority 9 with 9 - priority; Redis transport priority steps 0-9"
    ),
    Capability.BULK.value: "one producer in kombu Producer.batch(): one Redis pipeline, one AMQP channel",
    Capability.FAILED_STORE.value: (
        "FAILURE state in the result backend and the jobadapter.dead dead-letter queue"
    ),
    Capability.AT_LEAST_ONCE.value: (
        "acks_late + reject_on_worker_lost; on Redis an atomic fetch (one Lua script pops and "
        "records the message as unacked) and a dead worker's unacked messages are restored once "
        "its heartbeat lapses (10 s)"
    ),
    Capability.GRACEFUL_SHUTDOWN.value: "Celery's warm shutdown on SIGTERM",
    "test_retry_on_attempt_counts_and_stable_job_id": "Task.retry keeps the task id: task_id == job_id",
}


class CeleryAdapter(Adapter):
    name: ClassVar[str] = "Celery"
    accepted_options: ClassVar[frozenset[str]] = frozenset({"expires", "time_limit", "soft_time_limit"})
    backend_packages: ClassVar[tuple[str, ...]] = ("celery", "kombu", "redis", "amqp")

    def __init__(self, url: AdapterURL, **options: Any) -> None:
        values = {key: options.pop(key) for key in _OUR_OPTIONS if key in options}
        super().__init__(url, **options)
        query = {**url.query, **{key: str(value) for key, value in values.items()}}
        self.settings = _settings(query)
        self.owns_app = url.transport is not None
        if not self.owns_app:
            self.app = _attached_app(query.get("app"), url)
            self.broker_url = str(self.app.conf.broker_url or "")
        else:
            if "app" in query:
                raise ConfigurationError(
                    "celery+<transport>:// builds its own Celery app; use celery:///?app=pkg.module:app "
                    "to attach to an existing one"
                )
            self.broker_url = url.target_without(_OUR_OPTIONS)
            self.app = self._build_app(query.get("result_backend") if self.settings.results else None)
        scheme = urlsplit(self.broker_url).scheme
        self.transport = "redis" if scheme in ("redis", "rediss") else "amqp" if "amqp" in scheme else scheme
        self.dead_letter = Queue(self.settings.dead_letter_queue, durable=True)  # type: ignore[no-untyped-call]
        self._pending_retries: dict[str, Any] = {}
        self.existing_queues = ExistingQueues(self.app) if self.transport == "amqp" else None
        self.operations = operations_for(self)

    @property
    def capabilities(self) -> frozenset[Capability]:  # type: ignore[override]  # per instance
        """The job features, and the operations this transport (and a journal, if any) allow."""
        job_capabilities = JOB_CAPABILITIES if _BATCHES else JOB_CAPABILITIES - {Capability.BULK}
        return job_capabilities | self.operations.capabilities()

    @property
    def notes(self) -> Mapping[str, str]:  # type: ignore[override]
        notes = {**_JOB_NOTES, **self.operations.notes()}
        if not _BATCHES:
            notes[Capability.BULK.value] = "kombu before 5.7 has no Producer.batch(): one publish per job"
        if self.existing_queues is not None and self.existing_queues.foreign:
            foreign = ", ".join(sorted(self.existing_queues.foreign))
            notes[Capability.PRIORITY.value] += (
                f"; off on queues another application declared without x-max-priority: {foreign}"
            )
        return notes

    def fit_queue(self, name: str) -> str:
        """``name``, made safe to publish to and consume on RabbitMQ (`ExistingQueues`)."""
        if self.existing_queues is not None:
            self.existing_queues.fit(name)
        return name

    def _build_app(self, result_backend: str | None) -> Any:
        """A private Celery app wired for jobadapter (JSON only, late acks, bounded publishing)."""
        scheme = urlsplit(self.broker_url).scheme
        redis = scheme in ("redis", "rediss")
        app = Celery("jobadapter", set_as_current=False)
        transport_options: dict[str, Any] = {}
        if redis:
            transport_options = {
                "priority_steps": list(range(PRIORITY_LEVELS)),
                "visibility_timeout": self.settings.visibility_timeout,
                "unacked_restore_interval": max(1.0, min(10.0, self.settings.visibility_timeout / 3)),
                "unacked_restore_throttle": 1,
                "socket_connect_timeout": self.settings.connect_timeout,
                "socket_timeout": 10,
            }
        if self.settings.results and result_backend is None:
            if not redis:
                raise ConfigurationError(
                    "celery results=1 on RabbitMQ needs a result_backend (e.g. redis://127.0.0.1:6379/2)"
                )
            result_backend = f"{__name__}:PollingRedisBackend+{self.broker_url}"
        app.conf.update(
            broker_url=self.broker_url,
            result_backend=result_backend,
            task_serializer="json",
            result_serializer="json",
            accept_content=["json"],
            result_accept_content=["json"],
            result_extended=True,
            task_track_started=self.settings.results,
            task_ignore_result=not self.settings.results,
            result_backend_transport_options={
                "retry_policy": {"max_retries": 1, "interval_start": 0.2, "interval_max": 0.5}
            },
            redis_socket_connect_timeout=self.settings.connect_timeout,
            redis_socket_timeout=10,
            task_acks_late=True,
            task_reject_on_worker_lost=True,
            task_queue_max_priority=None if redis else PRIORITY_LEVELS - 1,
            task_default_queue=DEFAULT_QUEUE,
            task_publish_retry_policy={
                "max_retries": self.settings.publish_retries,
                "interval_start": 0,
                "interval_step": 0.2,
                "interval_max": 0.5,
            },
            broker_connection_timeout=self.settings.connect_timeout,
            broker_connection_retry_on_startup=True,
            broker_connection_max_retries=None,  # a worker waits out an outage of any length
            broker_transport_options=transport_options,
            worker_prefetch_multiplier=self.settings.prefetch,
            worker_hijack_root_logger=False,
            enable_utc=True,
        )
        return app

    # -- enqueueing --------------------------------------------------------------------

    def enqueue(self, envelope: Envelope, options: Mapping[str, Any]) -> str | None:
        return self._publish(envelope, None, options)

    def enqueue_at(self, envelope: Envelope, at: datetime, options: Mapping[str, Any]) -> str | None:
        return self._publish(envelope, at, options)

    def enqueue_all(self, requests: Sequence[EnqueueRequest]) -> list[str | None]:
        """Every job through one producer; on Redis, kombu's batch sends them in one pipeline.
        Before kombu 5.7 there is no batch: one publish per job, as any adapter without bulk."""
        if not _BATCHES:
            return super().enqueue_all(requests)
        try:
            with self.app.producer_or_acquire() as producer, producer.batch():
                ids: list[str | None] = [
                    self._publish(r.envelope, r.envelope.scheduled_at, r.options, producer=producer)
                    for r in requests
                ]
        except _PUBLISH_ERRORS as error:
            raise EnqueueError(f"Celery could not take {len(requests)} job(s): {error}") from error
        self.published_batches += 1
        return ids

    def schedule_retry(
        self, envelope: Envelope, at: datetime | None, options: Mapping[str, Any]
    ) -> str | None:
        """Retry with the running task's own ``retry`` when this is that task's job.

        The Retry it returns is kept and raised by the task once ``execute`` is
        done (raising it here would run through the core's rescue as an error);
        Celery then records RETRY and emits ``task-retried``.
        """
        from jobadapter_celery.worker import current_task_for

        task = current_task_for(self.app, envelope.job_id)
        if task is None:
            return super().schedule_retry(envelope, at, options)
        argsrepr, kwargsrepr = arguments_repr(envelope)  # Task.retry would show the envelope's JSON
        try:
            self._pending_retries[envelope.job_id] = task.retry(
                args=[envelope.encode()],
                kwargs={},
                countdown=0 if at is None else None,
                eta=None if at is None else self.hop_eta(at),
                queue=self.fit_queue(envelope.queue_name),
                priority=self.broker_priority(envelope.priority),
                throw=False,
                argsrepr=argsrepr,
                kwargsrepr=kwargsrepr,
                **options,
            )
        except Reject as error:  # how Task.retry reports a publish that failed
            raise EnqueueError(f"Celery could not publish the retry of {envelope.job_id}: {error}") from error
        return envelope.job_id

    def pending_retry(self, job_id: str) -> Any:
        """The Retry ``schedule_retry`` kept for ``job_id`` (None if there is none), forgotten."""
        return self._pending_retries.pop(job_id, None)

    def enqueue_payload(self, payload: str, queue_name: str) -> None:
        try:
            self.app.send_task(RAW_TASK, args=[payload], queue=self.fit_queue(queue_name), serializer="json")
        except _PUBLISH_ERRORS as error:
            raise EnqueueError(f"Celery could not take the payload: {error}") from error

    def hostile_messages(self) -> Sequence[HostileMessage]:
        """Malformed Celery messages in this broker's wire format (`jobadapter_celery.hostile`)."""
        from jobadapter_celery.hostile import celery_kinds

        return celery_kinds(self)

    def _publish(
        self, envelope: Envelope, at: datetime | None, options: Mapping[str, Any], producer: Any = None
    ) -> str:
        argsrepr, kwargsrepr = arguments_repr(envelope)
        try:
            self.app.send_task(
                envelope.job_class,
                args=[envelope.encode()],
                task_id=envelope.job_id,
                queue=self.fit_queue(envelope.queue_name),
                priority=self.broker_priority(envelope.priority),
                eta=None if at is None else self.hop_eta(at),
                serializer="json",
                producer=producer,
                argsrepr=argsrepr,
                kwargsrepr=kwargsrepr,
                **options,
            )
        except _PUBLISH_ERRORS as error:
            raise EnqueueError(f"Celery could not take {envelope.job_class}: {error}") from error
        return envelope.job_id

    def hop_eta(self, at: datetime) -> datetime:
        """``at``, or the horizon if that is sooner: no message waits unacknowledged longer."""
        return min(at, datetime.now(timezone.utc) + timedelta(seconds=self.settings.horizon))

    def broker_priority(self, priority: int | None) -> int | None:
        """jobadapter's "lower is more urgent" in the broker's own convention."""
        level = min(max(priority or 0, 0), PRIORITY_LEVELS - 1)
        if self.transport == "amqp":
            return PRIORITY_LEVELS - 1 - level
        if self.transport == "redis":
            return level
        return None

    # -- the dead-letter queue -----------------------------------------------------------

    def dead_letter_publish(self, payload: str, reason: str, task_name: str, task_id: str | None) -> None:
        """Keep a job that failed for good where a Celery user can find and retry it."""
        document = {
            "payload": payload,
            "reason": reason,
            "task": task_name,
            "task_id": task_id,
            "failed_at": format_timestamp(datetime.now(timezone.utc)),
        }
        ttl = self.settings.dead_letter_ttl
        with self.app.producer_or_acquire() as producer:
            producer.publish(
                document,
                exchange="",
                routing_key=self.dead_letter.name,
                declare=[self.dead_letter],
                serializer="json",
                headers={FAILED_AT_HEADER: time.time()},
                expiration=ttl if self.transport == "amqp" else None,  # RabbitMQ's per-message TTL
                retry=True,
                retry_policy={"max_retries": 5, "interval_start": 0, "interval_step": 0.5},
            )
        if isinstance(self.operations, RedisOperations):  # a Redis list has no per-entry TTL
            self.operations.expire_dead_letters(time.time() - ttl)

    def enqueue_failed(self, envelopes: Sequence[tuple[Envelope, JobError]]) -> None:
        """Each job as a dead letter, as the worker writes one when a job fails for good, so
        ``jobs(FAILED)`` lists it and ``retry`` publishes it again with its task id."""
        try:
            for envelope, error in envelopes:
                reason = f"{error.error_class}: {error.message}" if error.message else error.error_class
                self.dead_letter_publish(envelope.encode(), reason, envelope.job_class, envelope.job_id)
        except _PUBLISH_ERRORS as failure:
            raise EnqueueError(
                f"Celery could not take {len(envelopes)} failed job(s): {failure}"
            ) from failure

    def drain_for_move(self, state: JobState, queue: str) -> Drain | None:
        """On RabbitMQ, `jobadapter_celery.drain.AmqpDrain`; Redis lists and deletes natively."""
        if self.transport != "amqp":
            return None
        from jobadapter_celery.drain import AmqpDrain

        return AmqpDrain(self, JobState(state), queue)

    def migration_ledger(self, move: str) -> Ledger | None:
        """On Redis, a hash next to the jobs (`jobadapter.migrate.ledger.RedisLedger`)."""
        if not isinstance(self.operations, RedisOperations):
            return None
        from jobadapter.migrate.ledger import REDIS_KEY, RedisLedger

        return RedisLedger(self.operations.client, self.operations.key(REDIS_KEY.format(move=move)))

    def running_workers(self, queues: Collection[str]) -> list[str]:
        """Celery's own answer: the workers that reply to ``inspect active_queues`` within a
        second and consume one of ``queues``."""
        replies = self.app.control.inspect(timeout=1.0).active_queues() or {}
        return sorted(
            node
            for node, consumed in replies.items()
            if any(queue.get("name") in queues for queue in consumed or [])
        )

    def purge(self, queue_names: Sequence[str]) -> None:
        """Delete these queues and the jobs waiting in them (the dead-letter queue stays)."""
        with self.app.connection_for_write() as connection:
            channel = connection.default_channel
            for name in queue_names:
                if self.transport == "redis":
                    channel.queue_purge(name)  # kombu's Redis queue_delete only knows this channel's bindings
                    # The exchange Celery made for the queue (named like it) and its bindings.
                    prefix = channel.global_keyprefix
                    # kombu 5.7 also keeps the bindings of queues without an expiry in a set of their own.
                    permanent = getattr(channel, "keyprefix_binding_permanent", None)
                    bindings = [channel.keyprefix_queue, *([permanent] if permanent else [])]
                    channel.client.delete(*(prefix + binding % (name,) for binding in bindings))
                else:
                    channel.queue_delete(name)

    def failed(self) -> list[tuple[str, str]]:
        """The dead-letter queue, read without consuming it."""
        with self.app.connection_for_write() as connection:
            if self.transport == "redis":
                return _peek_redis(connection, self.dead_letter.name)
            return _peek_amqp(connection, self.dead_letter)

    def retry_failed(self, limit: int | None = None) -> int:
        """Publish dead-lettered jobs again (same ``job_id``); returns how many.

        Entries whose payload is not a valid envelope stay in the queue.
        """
        from jobadapter.envelope import decode
        from jobadapter.errors import InvalidEnvelope

        moved = 0
        with self.app.connection_for_write() as connection, connection.channel() as channel:
            queue: Any = self.dead_letter(channel)
            queue.declare()
            kept = []
            while limit is None or moved < limit:
                message = queue.get(no_ack=False, accept=["json"])
                if message is None:
                    break
                try:
                    envelope = decode(message.payload["payload"])
                except (InvalidEnvelope, KeyError, TypeError):
                    kept.append(message)
                    continue
                self.enqueue(envelope.evolve(scheduled_at=None), {})
                message.ack()
                moved += 1
            for message in kept:
                message.reject(requeue=True)
        return moved

    # -- inspection ----------------------------------------------------------------------

    @property
    def has_result_backend(self) -> bool:
        return not isinstance(self.app.backend, DisabledBackend)

    def status(self, job_id: str) -> str | None:
        if not self.has_result_backend:
            raise NotImplementedError(
                "job states are kept only with a result backend (URL option results=1 or result_backend)"
            )
        state = str(self.app.backend.get_task_meta(job_id).get("status"))
        return _STATES.get(state)

    # -- operations (`jobadapter_celery.operations`) -----------------------------------------

    def queues(self) -> list[QueueInfo]:
        return self.operations.queues()

    def jobs(
        self, state: JobState, *, filter: JobFilter = EVERY_JOB, limit: int = 50, offset: int = 0
    ) -> list[JobRecord]:
        return self.operations.jobs(JobState(state), filter, limit, offset)

    def all_jobs(self, state: JobState, filter: JobFilter = EVERY_JOB) -> Iterator[JobRecord]:
        """Streamed on Redis, whose pages read every list entry up to their offset."""
        state = JobState(state)
        if isinstance(self.operations, RedisOperations) and state is not JobState.FINISHED:
            return self.operations.records(state, filter)
        return super().all_jobs(state, filter)

    def find(self, job_id: str) -> JobRecord:
        return self.operations.find(job_id)

    def retry(self, job_ids: Sequence[str]) -> int:
        return self.operations.retry(job_ids)

    def retry_all(self, filter: JobFilter = EVERY_JOB, *, progress: Progress | None = None) -> int:
        return self.operations.retry_all(filter, progress)

    def discard(self, job_ids: Sequence[str]) -> int:
        return self.operations.discard(job_ids)

    def delete_moved(self, records: Sequence[JobRecord]) -> set[str]:
        """Redis deletes a moved batch in one pass (`RedisOperations.delete_moved`); RabbitMQ is
        drained instead (`drain_for_move`)."""
        if isinstance(self.operations, RedisOperations):
            return self.operations.delete_moved(records)
        return super().delete_moved(records)

    def discard_all(
        self, state: JobState, filter: JobFilter = EVERY_JOB, *, progress: Progress | None = None
    ) -> int:
        """Redis walks each list once; RabbitMQ walks its dead-letter queue once, and pages
        pending or scheduled jobs through the journal (the base class)."""
        if isinstance(self.operations, RedisOperations):
            return self.operations.discard_all(state, filter, progress)
        if state is JobState.FAILED:
            return self.operations.discard_failed(filter, progress)
        return super().discard_all(state, filter, progress=progress)

    def discarded(self, envelope: Envelope) -> bool:
        return self.operations.discarded(envelope)

    def run_now(self, job_id: str) -> None:
        self.operations.run_now(job_id)

    def pause(self, queue: str) -> None:
        self.operations.pause(queue)

    def resume(self, queue: str) -> None:
        self.operations.resume(queue)

    def run_worker(
        self, *, queues: Sequence[str] | None = None, concurrency: int = 1, burst: bool = False
    ) -> None:
        from jobadapter_celery.worker import run

        if burst:
            raise ConfigurationError("a Celery worker has no burst mode: stop it with SIGTERM")
        run(self, [self.fit_queue(name) for name in queues or registry.declared_queues()], concurrency)

    def close(self) -> None:
        if isinstance(self.operations, RedisOperations):
            self.operations.close()
        if not self.closed and self.owns_app:  # an attached app belongs to the application
            self.app.close()
        super().close()


def arguments_repr(envelope: Envelope) -> tuple[str, str]:
    """What Flower, events and Celery's log lines show as the task's arguments: the job's own
    (serialized) arguments, not the envelope text; hidden for a ``log_arguments = False`` job."""
    try:
        shown = registry.lookup(envelope.job_class).log_arguments
    except UnknownJobError:
        shown = False
    if not shown:
        return "[FILTERED]", "[FILTERED]"
    return f"{envelope.arguments!r:.1024}", f"{envelope.keyword_arguments!r:.1024}"


def _settings(query: Mapping[str, str]) -> Settings:
    horizon = _number(query, "horizon", 900.0)
    visibility_timeout = _number(query, "visibility_timeout", 3600.0)
    if horizon >= visibility_timeout:
        raise ConfigurationError(
            f"celery horizon ({horizon:g} s) must be shorter than "
            f"visibility_timeout ({visibility_timeout:g} s), or a waiting job would be delivered twice"
        )
    return Settings(
        horizon=horizon,
        visibility_timeout=visibility_timeout,
        dead_letter_queue=query.get("dead_letter_queue", "jobadapter.dead"),
        dead_letter_ttl=_number(query, "dead_letter_ttl", DEAD_LETTER_TTL),
        connect_timeout=_number(query, "connect_timeout", 2.0),
        publish_retries=int(_number(query, "publish_retries", 2.0)),
        results="result_backend" in query or _flag(query, "results"),
        prefetch=max(1, int(option_number("celery", "prefetch", query.get("prefetch"), 1, whole=True))),
    )


def _flag(query: Mapping[str, str], name: str) -> bool:
    value = query.get(name, "0").lower()
    if value not in ("0", "1", "true", "false", "yes", "no"):
        raise ConfigurationError(f"celery option {name} must be 0 or 1, not {value!r}")
    return value in ("1", "true", "yes")


def _number(query: Mapping[str, str], name: str, default: float) -> float:
    return option_number("celery", name, query.get(name), default)


def _attached_app(reference: str | None, url: AdapterURL) -> Any:
    """The application's own Celery app, named by ``?app=pkg.module:attribute``."""
    if not reference or ":" not in reference:
        raise ConfigurationError(
            f"{url.redacted}: celery:// needs ?app=pkg.module:app naming an existing Celery app"
        )
    module_name, _, attribute = reference.partition(":")
    try:
        app = getattr(importlib.import_module(module_name), attribute)  # a name from configuration
    except (ImportError, AttributeError) as error:
        raise ConfigurationError(f"celery app {reference!r} could not be loaded: {error}") from error
    if not isinstance(app, Celery):
        raise ConfigurationError(f"{reference!r} is {type(app).__name__}, not a Celery app")
    if "pickle" in app.conf.accept_content or "application/x-python-serialize" in app.conf.accept_content:
        raise ConfigurationError(
            f"celery app {reference!r} accepts pickle: jobadapter never unpickles; "
            "set accept_content to ['json']"
        )
    return app


def _peek_amqp(connection: Any, queue: Queue) -> list[tuple[str, str]]:
    """Take every message without acknowledging, then close the channel: RabbitMQ requeues them."""
    found = []
    channel = connection.channel()
    try:
        bound: Any = queue(channel)
        bound.declare()
        while (message := bound.get(no_ack=False, accept=["json"])) is not None:
            found.append(_entry(message.body))
    finally:
        channel.close()
    return found


def _peek_redis(connection: Any, name: str) -> list[tuple[str, str]]:
    """LRANGE the list kombu keeps the queue in (oldest last): nothing is taken off it."""
    channel = connection.default_channel
    with channel.conn_or_acquire() as client:
        raw = client.lrange(name, 0, -1)
    found = []
    for item in reversed(raw):
        try:
            message = json.loads(item)
            body = message["body"]
            if message.get("properties", {}).get("body_encoding") == "base64":
                body = base64.b64decode(body)
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            body = item  # not a kombu entry: listed as it is
        found.append(_entry(body))
    return found


def _entry(body: Any) -> tuple[str, str]:
    """One dead letter as ``(payload, reason)``; never raises, whatever the entry holds."""
    text = body.decode("utf-8", "replace") if isinstance(body, (bytes, bytearray)) else str(body)
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return text, "not a jobadapter dead-letter entry (not JSON)"
    if isinstance(document, dict) and "reason" in document:
        return str(document.get("payload", "")), str(document.get("reason", ""))
    return text, "not a jobadapter dead-letter entry"
