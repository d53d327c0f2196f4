"""``dramatiq+amqp://…`` and ``dramatiq+redis://…``: jobadapter jobs as native Dramatiq messages.

| jobadapter | Dramatiq |
|---|---|
| ``perform_later`` | a `dramatiq.Message` on the job's queue; ``actor_name`` is the job's ``job_name``,
  ``args`` is the envelope (one JSON object), ``message_id`` is the ``job_id`` |
| ``wait`` / ``wait_until`` | ``broker.enqueue(message, delay=ms)``: Dramatiq's delay queue (``<queue>.DQ``),
  at most ``delay_horizon`` seconds per hop (see below) |
| priority | RabbitMQ message priority (``broker_priority``, queues declared with ``x-max-priority``);
  the Redis broker has none (its queues are plain lists), so it is declared unsupported there |
| retry | the core's decision, published as a delayed copy of the message (same ``message_id``),
  with ``options["retries"]`` and ``options["traceback"]`` as Dramatiq's ``Retries`` writes them;
  actors get ``max_retries=0`` so ``Retries`` never retries behind the core's back |
| failure | Dramatiq's dead-letter queue (``<queue>.XQ``), the error in ``options["jobadapter_error"]``
  and ``options["traceback"]`` |
| ``perform_all_later`` | one AMQP transaction (RabbitMQ) or one Redis ``MULTI`` pipeline per batch |
| a body that is not a Dramatiq message | refused by the worker's consumer (`jobadapter_dramatiq.wire`):
  a record of it in ``<queue>.XQ`` with the reason, the original acknowledged |

Long waits: a Dramatiq worker holds a delayed message unacknowledged in memory
until its ``eta``; RabbitMQ closes a channel that holds a delivery longer than
its ``consumer_timeout`` (30 minutes by default). A delay longer than
``delay_horizon`` (default 900 s) is therefore published as a hop of
``delay_horizon`` carrying the real due time in ``options["jobadapter_eta"]``;
a worker that receives a hop early publishes the next one and skips the
message (`dramatiq.middleware.SkipMessage`), so no delivery is held longer than
the horizon.

Attaching to an application's broker: pass ``broker=<a RabbitmqBroker or
RedisBroker>`` to ``configure`` (or ``dramatiq://?broker=proj.tasks:broker`` in
a URL: a name from configuration, never from a payload). Jobs then share the
app's connections and middleware.
"""

from __future__ import annotations

import importlib
import json
import math
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pika  # type: ignore[import-untyped]
import pika.exceptions  # type: ignore[import-untyped]
import redis
from dramatiq import Message
from dramatiq import middleware as dramatiq_middleware
from dramatiq.broker import Broker
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis, dq_name, q_name, xq_name
from dramatiq.errors import BrokerError
from dramatiq.middleware import Middleware

from jobadapter.adapters.base import (
    JOB_CAPABILITIES,
    Adapter,
    AdapterURL,
    Capability,
    Drain,
    EnqueueRequest,
    option_number,
)
from jobadapter.envelope import Envelope
from jobadapter.errors import ConfigurationError, EnqueueError
from jobadapter.operations import JobError, JobState
from jobadapter_dramatiq.operations import RabbitmqOperations, RedisOperations
from jobadapter_dramatiq.wire import dead_letter_copy, failed_copy, failure

if TYPE_CHECKING:  # the fault suite's tools are never imported by a worker
    from jobadapter.faults.hostile import HostileMessage
    from jobadapter.migrate.ledger import Ledger

RAW_ACTOR = "jobadapter.payload"
"""The actor name of a raw payload whose text names no job class (`enqueue_payload` only)."""
ETA_OPTION = "jobadapter_eta"
"""Message option holding the real due time (epoch ms) of a delay cut into hops."""

_COMMON_OPTIONS = ("delay_horizon", "worker_timeout", "shutdown_timeout", "processes", "broker")
_RABBITMQ_OPTIONS = ("max_priority", "confirm_delivery")
_REDIS_OPTIONS = ("heartbeat_timeout", "maintenance_chance", "namespace", "dead_message_ttl")
_PIKA_DEFAULTS = {
    "socket_timeout": "2",
    "stack_timeout": "4",
    "connection_attempts": "1",
    "blocked_connection_timeout": "10",
}
"""Bounds on how long ``perform_later`` may block on a RabbitMQ that is down or blocked."""
_SHARED_NOTES = {
    Capability.EXTERNAL_WORKER.value: "Dramatiq's Worker (consumer + worker threads), an actor per job_name",
    Capability.DELAYED.value: "Dramatiq's delay queue <queue>.DQ, in hops of at most delay_horizon",
    Capability.GRACEFUL_SHUTDOWN.value: "Dramatiq's Worker.stop: running jobs finish, prefetched ones return",
    "test_retry_on_attempt_counts_and_stable_job_id": (
        "each retry: a delayed copy of the message, same message_id, options.retries counted"
    ),
}
T = TypeVar("T")
HEARTBEAT_WINDOW = 1.2
"""Seconds ``running_workers`` watches Dramatiq's heartbeats on Redis: more than twice the
default ``worker_timeout`` (0.5 s) between a consumer's fetches."""
_BROKER_ERRORS = (BrokerError, pika.exceptions.AMQPError, redis.RedisError, OSError)


class DramatiqAdapter(Adapter):
    """Publishes envelopes as Dramatiq messages and runs Dramatiq's worker on them.

    Constructing ``DramatiqAdapter`` gives the RabbitMQ or the Redis flavour,
    chosen by the URL's transport (or the attached broker's class): the two
    brokers differ in what they can promise (priority, redelivery), so each
    declares its own capabilities.
    """

    name: ClassVar[str] = "Dramatiq"
    accepted_options: ClassVar[frozenset[str]] = frozenset({"time_limit", "max_age"})
    backend_packages: ClassVar[tuple[str, ...]] = ("dramatiq",)
    broker: Broker

    def __new__(cls, url: AdapterURL, **options: Any) -> DramatiqAdapter:
        if cls is DramatiqAdapter:
            attached = _attached_broker(url, options.get("broker"))
            if isinstance(attached, RabbitmqBroker) or (attached is None and _is_amqp(url)):
                cls = RabbitmqAdapter
            elif isinstance(attached, RedisBroker) or (attached is None and _is_redis(url)):
                cls = RedisAdapter
            else:
                raise ConfigurationError(
                    "dramatiq URLs look like dramatiq+amqp://guest:guest@127.0.0.1:5672, "
                    "dramatiq+redis://127.0.0.1:6379/0 or dramatiq://?broker=proj.tasks:broker, "
                    f"not {url.redacted!r}"
                )
        return super().__new__(cls)

    def __init__(self, url: AdapterURL, **options: Any) -> None:
        settings = {name: options.pop(name, url.query.get(name)) for name in self._option_names()}
        super().__init__(url, **options)
        self.delay_horizon_ms = int(_number(settings["delay_horizon"], 900.0, "delay_horizon") * 1000)
        self.worker_timeout_ms = int(_number(settings["worker_timeout"], 0.5, "worker_timeout") * 1000)
        self.shutdown_timeout = _number(settings["shutdown_timeout"], 15.0, "shutdown_timeout")
        self.processes = max(1, int(_number(settings["processes"], 1, "processes")))
        attached = _attached_broker(url, settings["broker"])
        self.attached = attached is not None
        self.broker = attached if attached is not None else self._build_broker(url, settings)
        self._queues: set[str] = set()
        self._lock = threading.Lock()

    @classmethod
    def _option_names(cls) -> tuple[str, ...]:
        return _COMMON_OPTIONS

    def _build_broker(self, url: AdapterURL, settings: Mapping[str, Any]) -> Broker:
        raise NotImplementedError

    # -- enqueueing --------------------------------------------------------------------

    def message(self, envelope: Envelope, options: Mapping[str, Any]) -> Message[Any]:
        """The Dramatiq message of ``envelope``: its own actor name, the envelope as the argument."""
        extra = dict(options) if options else {}
        priority = self.broker_priority(envelope.priority)
        if priority is not None:
            extra["broker_priority"] = priority
        return Message(
            queue_name=envelope.queue_name,
            actor_name=envelope.job_class,
            args=(envelope.to_document(),),
            kwargs={},
            options=extra,
            message_id=envelope.job_id,
        )

    def broker_priority(self, priority: int | None) -> int | None:
        """The broker's priority for a jobadapter priority (None: the broker has none)."""
        return None

    def enqueue(self, envelope: Envelope, options: Mapping[str, Any]) -> str | None:
        return self._send(self.message(envelope, options), None)

    def enqueue_at(self, envelope: Envelope, at: datetime, options: Mapping[str, Any]) -> str | None:
        return self._send(self.message(envelope, options), at)

    def schedule_retry(
        self, envelope: Envelope, at: datetime | None, options: Mapping[str, Any]
    ) -> str | None:
        """Publish the next attempt as Dramatiq's ``Retries`` would: same ``message_id``,
        ``retries`` counted, the traceback of the error that caused it."""
        message = self.message(envelope, options)
        retry_options: dict[str, Any] = {
            "retries": envelope.executions,
            "requeue_timestamp": current_millis(),
        }
        if sys.exc_info()[0] is not None:
            retry_options["traceback"] = traceback.format_exc(limit=30)
        return self._send(message.copy(options=retry_options), at)

    def enqueue_payload(self, payload: str, queue_name: str) -> None:
        """Publish ``payload`` as the argument of a message for the job class it names."""
        actor_name = RAW_ACTOR
        try:
            document = json.loads(payload)
        except (ValueError, RecursionError):  # not JSON, or nested too deep to read: the worker refuses it
            document = None
        if isinstance(document, dict) and isinstance(document.get("job_class"), str):
            actor_name = document["job_class"] or RAW_ACTOR
        message: Message[Any] = Message(
            queue_name=queue_name, actor_name=actor_name, args=(payload,), kwargs={}, options={}
        )
        self._send(message, None)

    def hostile_messages(self) -> Sequence[HostileMessage]:
        """Dramatiq-level hostile messages (`jobadapter_dramatiq.hostile`), and this broker's own.

        Imported here, in the fault suite's process only: the suite's tools import the canary.
        """
        from jobadapter_dramatiq import hostile

        return [*hostile.kinds(self), *self._own_hostile_messages()]

    def _own_hostile_messages(self) -> list[HostileMessage]:
        raise NotImplementedError

    def write_raw(self, queue_name: str, body: bytes, content_type: str | None = None) -> None:
        """Put ``body`` on ``queue_name`` as is, bypassing Dramatiq (the fault suite's hostile messages)."""
        raise NotImplementedError

    def enqueue_failed(self, envelopes: Sequence[tuple[Envelope, JobError]]) -> None:
        """Each job's message as the worker dead-letters one, its error in the options."""
        letters = [failed_copy(self.message(envelope, {}), error) for envelope, error in envelopes]
        with self._publishing(f"{len(letters)} failed jobs"):
            for letter in letters:
                self.declare(letter.queue_name)
            self._file_dead_letters(letters)

    def _file_dead_letters(self, letters: Sequence[Message[Any]]) -> None:
        raise NotImplementedError

    def publish_native(self, message: Message[Any]) -> None:
        """Publish a Dramatiq message as Dramatiq would, whatever actor it names."""
        self._send(message, None)

    def enqueue_all(self, requests: Sequence[EnqueueRequest]) -> list[str | None]:
        batch = [self.delayed(self.message(r.envelope, r.options), r.envelope.scheduled_at) for r in requests]
        with self._publishing(f"a batch of {len(batch)} jobs"):
            for message, _ in batch:
                self.declare(message.queue_name)
            self._publish_batch(batch)
        self.published_batches += 1
        return [message.message_id for message, _ in batch]

    def delayed(self, message: Message[Any], at: datetime | None) -> tuple[Message[Any], int | None]:
        """``message`` and its delay in ms (None: due now), a long delay cut to the horizon.

        The delay is rounded up to the next millisecond, plus one for the
        millisecond Dramatiq's own clock may truncate, so a job never runs early.
        """
        if at is None:
            return message, None
        delay = math.ceil((at - datetime.now(timezone.utc)).total_seconds() * 1000) + 1
        if delay <= 1:
            return message, None
        if delay > self.delay_horizon_ms:
            message = message.copy(options={ETA_OPTION: math.ceil(at.timestamp() * 1000)})
            delay = self.delay_horizon_ms
        return message, delay

    def _send(self, message: Message[Any], at: datetime | None) -> str:
        message, delay = self.delayed(message, at)
        try:  # not `_publishing`: this is the hot path of every perform_later
            self.declare(message.queue_name)
            self.broker.enqueue(message, delay=delay)
        except _BROKER_ERRORS as error:
            raise self._refused(f"{message.actor_name} ({message.message_id})", error) from error
        return message.message_id

    def declare(self, queue_name: str) -> None:
        """Remember a queue this adapter published to (inspection reads these)."""
        if queue_name not in self._queues:
            with self._lock:
                self._queues.add(queue_name)

    @contextmanager
    def _publishing(self, what: str) -> Iterator[None]:
        try:
            yield
        except _BROKER_ERRORS as error:
            raise self._refused(what, error) from error

    def _refused(self, what: str, error: BaseException) -> EnqueueError:
        return EnqueueError(f"{self.name}: the broker did not take {what}: {type(error).__name__}: {error}")

    def _publish_batch(self, batch: Sequence[tuple[Message[Any], int | None]]) -> None:
        raise NotImplementedError

    # -- the worker ----------------------------------------------------------------------

    def run_worker(
        self, *, queues: Sequence[str] | None = None, concurrency: int = 1, burst: bool = False
    ) -> None:
        from jobadapter_dramatiq.worker import run

        run(self, queues=queues, threads=concurrency, burst=burst)

    def dead_letter(self, message: Any, error: BaseException) -> None:
        """Move a failed message (a `dramatiq.broker.MessageProxy`) to the dead-letter queue,
        with its error. Called by the worker's middleware once ``Retries`` failed it."""
        raise NotImplementedError

    def paused_queues(self) -> frozenset[str] | None:
        """The queues workers must not take jobs from now; None where this adapter has nowhere
        to keep pauses (its workers then watch none)."""
        return None

    def end_run(self) -> None:
        """Called by the worker once a message was processed: drop what ``discarded`` claimed
        for it, where the adapter claims anything."""

    def close(self) -> None:
        if not self.closed and not self.attached:
            self.broker.close()
        super().close()

    def purge(self, queue_names: Sequence[str]) -> None:
        """Drop these queues' messages, delayed and dead-lettered ones included."""
        for name in queue_names:
            self.broker.flush(name)

    # -- inspection ----------------------------------------------------------------------

    def known_queues(self) -> list[str]:
        with self._lock:
            return sorted(self._queues | set(self.broker.get_declared_queues()))

    def failed(self) -> list[tuple[str, str]]:
        return [failure(data) for queue in self.known_queues() for data in self._dead_letters(queue)]

    def _dead_letters(self, queue_name: str) -> list[bytes]:
        raise NotImplementedError


class RabbitmqAdapter(RabbitmqOperations, DramatiqAdapter):
    """Dramatiq on RabbitMQ: priorities are message priorities, redelivery is RabbitMQ's own;
    operated through the dead letters and the journal (`jobadapter_dramatiq.operations`)."""

    def purge(self, queue_names: Sequence[str]) -> None:
        """Delete these queues with their delay and dead-letter queues, so none are left behind."""
        for queue_name in queue_names:
            for name in (queue_name, dq_name(queue_name), xq_name(queue_name)):
                self._reconnecting(partial(self._delete_queue, name))

    name: ClassVar[str] = "Dramatiq"
    JOB_FEATURES: ClassVar[frozenset[Capability]] = JOB_CAPABILITIES
    notes: ClassVar[Mapping[str, str]] = {
        **_SHARED_NOTES,
        Capability.PRIORITY.value: "RabbitMQ message priority (queues with x-max-priority=10)",
        Capability.BULK.value: "one AMQP transaction (tx_select/tx_commit) per batch",
        Capability.FAILED_STORE.value: "Dramatiq's dead-letter queue <queue>.XQ, the error in its options",
        Capability.AT_LEAST_ONCE.value: "unacked deliveries are requeued when a worker's connection drops",
        **RabbitmqOperations.OPERATION_NOTES,
        Capability.MIGRATE_FROM.value: (
            "<queue>, <queue>.DQ and <queue>.XQ taken with unacknowledged basic_get, each moved message "
            "acked, the rest given back; running workers from RabbitMQ's consumer counts; needs --queues"
        ),
        Capability.MIGRATE_TO.value: (
            "one AMQP transaction per batch; a failed job is a dead letter in <queue>.XQ with its error"
        ),
    }
    broker: RabbitmqBroker

    @classmethod
    def _option_names(cls) -> tuple[str, ...]:
        return _COMMON_OPTIONS + _RABBITMQ_OPTIONS

    def _build_broker(self, url: AdapterURL, settings: Mapping[str, Any]) -> Broker:
        max_priority = int(_number(settings["max_priority"], 10, "max_priority"))
        confirm = str(settings["confirm_delivery"] or "true").lower() not in ("0", "false", "no")
        return RabbitmqBroker(
            url=_pika_url(url, self._option_names()),
            confirm_delivery=confirm,
            max_priority=max_priority,
            middleware=default_middleware(),
        )

    def broker_priority(self, priority: int | None) -> int | None:
        """jobadapter: lower is more urgent, None counts as 0; RabbitMQ: higher is more urgent."""
        top = self.broker.max_priority
        if not top:
            return None
        return top - min(max(priority or 0, 0), top)

    def _delete_queue(self, name: str) -> None:
        self.broker.channel.queue_delete(name)

    def declare(self, queue_name: str) -> None:
        super().declare(queue_name)
        self.broker.declare_queue(queue_name, ensure=True)

    def _reconnecting(self, operation: Callable[[], T]) -> T:
        """Run ``operation`` on this thread's connection, and once more on a new one if that one
        died (after an outage). Dramatiq's ``enqueue`` replaces a dead connection itself; the
        connection and channel properties used here would hand out the dead one for ever."""
        try:
            return operation()
        except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError):
            del self.broker.connection  # and its channel
            return operation()

    def _publish_batch(self, batch: Sequence[tuple[Message[Any], int | None]]) -> None:
        """One AMQP transaction; on a connection found dead, the whole transaction once more."""
        self._reconnecting(lambda: self._publish_transaction(batch))

    def _publish_transaction(self, batch: Sequence[tuple[Message[Any], int | None]]) -> None:
        channel = self.broker.connection.channel()
        try:
            channel.tx_select()
            for message, delay in batch:
                routed = message
                if delay is not None:
                    routed = message.copy(
                        queue_name=dq_name(message.queue_name), options={"eta": current_millis() + delay}
                    )
                self.broker.emit_before("enqueue", routed, delay)
                channel.basic_publish(
                    exchange="",
                    routing_key=routed.queue_name,
                    body=routed.encode(),
                    properties=pika.BasicProperties(
                        delivery_mode=2, priority=routed.options.get("broker_priority")
                    ),
                )
            channel.tx_commit()
        finally:
            if channel.is_open:
                channel.close()
        for message, delay in batch:
            self.broker.emit_after("enqueue", message, delay)

    def dead_letter(self, message: Any, error: BaseException) -> None:
        """Publish the failed message, with its error, to ``<queue>.XQ``; the original is then
        acknowledged (RabbitMQ's own dead-lettering would keep only the original body)."""
        self.publish_dead_letter(dead_letter_copy(message, error))
        message.failed = False

    def publish_dead_letter(self, message: Message[Any]) -> None:
        """Publish ``message`` to the dead-letter queue of its queue, persistent (and confirmed,
        with ``confirm_delivery``), on this thread's channel."""
        self._reconnecting(
            lambda: self.broker.channel.basic_publish(
                exchange="",
                routing_key=xq_name(message.queue_name),
                body=message.encode(),
                properties=pika.BasicProperties(delivery_mode=2),
            )
        )

    def _file_dead_letters(self, letters: Sequence[Message[Any]]) -> None:
        for letter in letters:
            self.broker.declare_queue(letter.queue_name, ensure=True)
            self.publish_dead_letter(letter)

    def drain_for_move(self, state: JobState, queue: str) -> Drain | None:
        from jobadapter_dramatiq.drain import RabbitmqDrain

        return self._reconnecting(lambda: RabbitmqDrain(self, JobState(state), q_name(queue)))

    def running_workers(self, queues: Collection[str]) -> list[str]:
        """RabbitMQ's own count of consumers on each queue and its delay queue."""
        found = []
        for queue in sorted(queues):
            for name in (queue, dq_name(queue)):
                _, consumers = self._reconnecting(partial(self._passive_declare, name))
                if consumers:
                    found.append(f"{consumers} consumer(s) of {name}")
        return found

    def write_raw(self, queue_name: str, body: bytes, content_type: str | None = None) -> None:
        self.declare(q_name(queue_name))
        self._reconnecting(
            lambda: self.broker.channel.basic_publish(
                exchange="",
                routing_key=queue_name,
                body=body,
                properties=pika.BasicProperties(delivery_mode=2, content_type=content_type),
            )
        )

    def _own_hostile_messages(self) -> list[HostileMessage]:
        from jobadapter.faults.hostile import HostileMessage
        from jobadapter_dramatiq.hostile import message_fields

        def pickle_typed(queue: str, marker: str) -> None:
            body = json.dumps(message_fields(queue, marker)).encode()
            self.write_raw(queue, body, content_type="application/x-python-serialize")

        return [
            HostileMessage(
                "pickle-content-type",
                "a good Dramatiq body whose AMQP content_type says pickle",
                pickle_typed,
            )
        ]

    def queue_sizes(self) -> dict[str, int]:
        sizes = {}
        for queue in self.known_queues():
            counts = self._reconnecting(partial(self.broker.get_queue_message_counts, queue))
            sizes[queue] = counts[0] + counts[1]
        return sizes

    def _dead_letters(self, queue_name: str) -> list[bytes]:
        return self._reconnecting(lambda: self._read_dead_letters(queue_name))

    def _read_dead_letters(self, queue_name: str) -> list[bytes]:
        """Read ``<queue>.XQ`` without consuming it: unacknowledged gets return on channel close."""
        self.broker.declare_queue(queue_name, ensure=True)
        channel = self.broker.connection.channel()
        bodies = []
        try:
            while True:
                method, _, body = channel.basic_get(xq_name(queue_name), auto_ack=False)
                if method is None:
                    break
                bodies.append(body)
        finally:
            if channel.is_open:
                channel.close()
        return bodies


class RedisAdapter(RedisOperations, DramatiqAdapter):
    """Dramatiq on Redis: FIFO lists, redelivery after a dead worker's heartbeat times out;
    operated natively (`jobadapter_dramatiq.operations`)."""

    name: ClassVar[str] = "Dramatiq"
    JOB_FEATURES: ClassVar[frozenset[Capability]] = JOB_CAPABILITIES - {Capability.PRIORITY}
    notes: ClassVar[Mapping[str, str]] = {
        **_SHARED_NOTES,
        Capability.PRIORITY.value: (
            "unsupported: Dramatiq's Redis queues are FIFO lists and its worker merges queues "
            "without order, so no mapping is faithful"
        ),
        Capability.BULK.value: "one Redis MULTI pipeline of Dramatiq's enqueue script per batch",
        Capability.FAILED_STORE.value: "Dramatiq's dead-letter set <queue>.XQ, the error in its options",
        Capability.AT_LEAST_ONCE.value: (
            "a dead worker's messages are requeued once its heartbeat is 15 s old "
            "(heartbeat_timeout; maintenance_chance=10%)"
        ),
        **RedisOperations.OPERATION_NOTES,
        Capability.MIGRATE_FROM.value: "listed and deleted natively; running workers from the heartbeats",
        Capability.MIGRATE_TO.value: (
            "one MULTI pipeline per batch; a failed job is a dead letter in <queue>.XQ with its error"
        ),
    }
    broker: RedisBroker

    @classmethod
    def _option_names(cls) -> tuple[str, ...]:
        return _COMMON_OPTIONS + _REDIS_OPTIONS

    def _build_broker(self, url: AdapterURL, settings: Mapping[str, Any]) -> Broker:
        client = redis.Redis.from_url(
            url.target_without(self._option_names()), socket_connect_timeout=2, socket_timeout=5
        )
        return RedisBroker(  # type: ignore[no-untyped-call]
            client=client,
            middleware=default_middleware(),
            namespace=settings["namespace"] or "dramatiq",
            heartbeat_timeout=int(_number(settings["heartbeat_timeout"], 15.0, "heartbeat_timeout") * 1000),
            maintenance_chance=int(_number(settings["maintenance_chance"], 100000, "maintenance_chance")),
            dead_message_ttl=int(
                _number(settings["dead_message_ttl"], 7 * 86400.0, "dead_message_ttl") * 1000
            ),
        )

    def _key(self, name: str) -> str:
        return f"{self.broker.namespace}:{name}"

    def _publish_batch(self, batch: Sequence[tuple[Message[Any], int | None]]) -> None:
        """Run Dramatiq's own enqueue script once per message, all in one MULTI round trip.

        The script's arguments follow `RedisBroker._dispatch` (the same in Dramatiq 1.17 and 2.x); maintenance
        is off for these calls, so the unpack limit it takes is unused.
        """
        broker = self.broker
        script = broker.scripts["dispatch"]
        prepared = []
        for message, delay in batch:
            routed = message.copy(options={"redis_message_id": str(uuid.uuid4())})
            if delay is not None:
                routed = routed.copy(
                    queue_name=dq_name(message.queue_name), options={"eta": current_millis() + delay}
                )
            prepared.append((routed, delay))
        with broker.client.pipeline(transaction=True) as pipe:
            for routed, delay in prepared:
                broker.emit_before("enqueue", routed, delay)
                arguments = [
                    "enqueue",
                    current_millis(),
                    routed.queue_name,
                    broker.broker_id,
                    broker.heartbeat_timeout,
                    broker.dead_message_ttl,
                    0,
                    1,
                    routed.options["redis_message_id"],
                    routed.encode(),
                ]
                script(keys=[broker.namespace], args=arguments, client=pipe)
            pipe.execute()
        for routed, delay in prepared:
            broker.emit_after("enqueue", routed, delay)

    def dead_letter(self, message: Any, error: BaseException) -> None:
        """Rewrite the stored message with its error; Dramatiq's own nack then moves it to
        ``<queue>.XQ``."""
        copy = dead_letter_copy(message, error)
        key = self._key(f"{message.queue_name}.msgs")
        field = message.options["redis_message_id"]
        if self.broker.client.hexists(key, field):
            self.broker.client.hset(key, field, copy.encode())

    def _file_dead_letters(self, letters: Sequence[Message[Any]]) -> None:
        """As Dramatiq's ``nack`` stores a dead letter: the body in ``<queue>.XQ.msgs``, its id in
        the ``<queue>.XQ`` sorted set scored by the time it died; one MULTI for all."""
        now = current_millis()
        with self.broker.client.pipeline(transaction=True) as pipe:
            for letter in letters:
                redis_id = str(uuid.uuid4())
                stored = letter.copy(options={"redis_message_id": redis_id})
                dead = self._key(xq_name(letter.queue_name))
                pipe.hset(f"{dead}.msgs", redis_id, stored.encode())
                pipe.zadd(dead, {redis_id: now})
            pipe.execute()

    def migration_ledger(self, move: str) -> Ledger | None:
        """A hash in the broker's namespace (`jobadapter.migrate.ledger.RedisLedger`)."""
        from jobadapter.migrate.ledger import REDIS_KEY, RedisLedger

        return RedisLedger(self.broker.client, self._key(REDIS_KEY.format(move=move)))

    def running_workers(self, queues: Collection[str]) -> list[str]:
        """Dramatiq's heartbeats: every consumer writes its broker id's time into
        ``__heartbeats__`` each time it fetches (at least every ``worker_timeout``); a
        producer writes it only when it publishes. The ids whose heartbeat moves within
        `HEARTBEAT_WINDOW` seconds are consumers. Dramatiq does not record which queues
        a consumer reads, so any live one counts."""
        key = self._key("__heartbeats__")
        before = self._heartbeats(key)
        time.sleep(HEARTBEAT_WINDOW)
        after = self._heartbeats(key)
        return sorted(
            worker
            for worker, beat in after.items()
            if beat > before.get(worker, 0) and worker != self.broker.broker_id
        )

    def _heartbeats(self, key: str) -> dict[str, float]:
        beats: list[tuple[bytes, float]] = self.broker.client.zrange(key, 0, -1, withscores=True)  # type: ignore[assignment]
        return {worker.decode(): beat for worker, beat in beats}

    def write_raw(self, queue_name: str, body: bytes, content_type: str | None = None) -> None:
        """As Dramatiq's ``enqueue`` script stores a message: the body in ``<queue>.msgs`` under a
        fresh id, the id at the tail of the list (``content_type`` has no place on Redis)."""
        self.declare(q_name(queue_name))
        redis_id = str(uuid.uuid4())
        with self.broker.client.pipeline(transaction=True) as pipe:
            pipe.hset(self._key(f"{queue_name}.msgs"), redis_id, body)
            pipe.rpush(self._key(queue_name), redis_id)
            pipe.execute()

    def _own_hostile_messages(self) -> list[HostileMessage]:
        from jobadapter.faults.hostile import HostileMessage
        from jobadapter_dramatiq.hostile import message_fields

        def without_id(queue: str, marker: str) -> None:
            self.write_raw(queue, json.dumps(message_fields(queue, marker)).encode())

        return [
            HostileMessage(
                "no-redis-id",
                "a good Dramatiq body without the redis_message_id option Dramatiq acks it by",
                without_id,
            )
        ]

    def queue_sizes(self) -> dict[str, int]:
        client = self.broker.client
        return {
            queue: int(client.llen(self._key(queue))) + int(client.hlen(self._key(f"{queue}.DQ.msgs")))
            for queue in self.known_queues()
        }

    def _dead_letters(self, queue_name: str) -> list[bytes]:
        stored = self.broker.client.hgetall(self._key(f"{queue_name}.XQ.msgs"))
        return [value if isinstance(value, bytes) else value.encode() for value in stored.values()]


def _is_amqp(url: AdapterURL) -> bool:
    return url.transport in ("amqp", "amqps")


def _is_redis(url: AdapterURL) -> bool:
    return url.transport in ("redis", "rediss", "unix")


def _attached_broker(url: AdapterURL, given: object) -> Broker | None:
    """The application's broker: an object passed in, or ``module:attribute`` from the URL."""
    reference = given if given is not None else url.query.get("broker")
    if reference is None:
        return None
    if isinstance(reference, Broker):
        return reference
    module_name, _, attribute = str(reference).partition(":")
    try:
        # a name from the adapter's configuration, never from a payload
        found = getattr(importlib.import_module(module_name), attribute or "broker")
    except (ImportError, AttributeError) as error:
        raise ConfigurationError(f"dramatiq broker {reference!r} could not be loaded: {error}") from error
    if not isinstance(found, (RabbitmqBroker, RedisBroker)):
        raise ConfigurationError(f"{reference!r} is {found!r}, not a Dramatiq RabbitmqBroker or RedisBroker")
    return found


def default_middleware() -> list[Middleware]:
    """Dramatiq's default middleware, without ``Prometheus``: Dramatiq 1.x lists it by default,
    and it fails with a traceback before and after every message unless Dramatiq's own command
    line boots it (Dramatiq 2.x leaves it out)."""
    return [
        middleware()
        for middleware in dramatiq_middleware.default_middleware
        if middleware.__name__ != "Prometheus"
    ]


def _pika_url(url: AdapterURL, names: Sequence[str]) -> str:
    """The AMQP URL for pika, with timeouts that bound a publish to a broker that is down."""
    parts = urlsplit(url.target_without(names))
    query = {**_PIKA_DEFAULTS, **dict(parse_qsl(parts.query))}
    return urlunsplit(parts._replace(query=urlencode(query)))


def _number(value: object, default: float, name: str) -> float:
    return option_number("dramatiq", name, value, default)


def due_in_ms(eta_ms: int) -> int:
    """Milliseconds until ``eta_ms`` (epoch ms), 0 when already due."""
    return max(0, eta_ms - int(time.time() * 1000))
