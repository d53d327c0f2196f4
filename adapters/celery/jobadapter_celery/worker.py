"""The worker side: one Celery task per job class, and a real Celery worker to run them.

``run`` registers a task under each registered ``job_name`` (plus
``jobadapter.perform`` for raw payloads), then starts Celery's own
``WorkController`` (prefork) in this process. Every task does the same thing:
check the envelope, hop it forward if its time is still beyond the horizon,
``execute`` it, and turn the outcome into Celery's: return (SUCCESS), raise the
Retry that ``schedule_retry`` prepared (RETRY), or dead-letter the payload and
raise (FAILURE).

Messages Celery cannot hand to a task (a task name this worker does not know,
an invalid or undecodable message) are dead-lettered by the worker's consumer
(`jobadapter_celery.consumer`) instead of being dropped.

On Redis, the worker consumes through `jobadapter_celery.transport`, whose
fetch records a message as unacknowledged in the same atomic step that takes it
off its queue. kombu keeps a worker's unacknowledged messages in one hash that
is only swept after ``visibility_timeout``; a killed worker's jobs would wait
that long. Each worker therefore keeps its own unacked hash and a heartbeat
key, and every worker restores the hash of a worker whose heartbeat has lapsed
(`Lifeline`). Broker outages are waited out: Celery reconnects forever.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from celery.exceptions import Ignore  # type: ignore[import-untyped]
from celery.signals import worker_ready  # type: ignore[import-untyped]
from kombu.connection import Connection

from jobadapter import registry
from jobadapter.envelope import Envelope, decode, format_timestamp
from jobadapter.errors import ConfigurationError, InvalidEnvelope
from jobadapter.execution import execute
from jobadapter.worker_logging import announce_ready
from jobadapter_celery.adapter import RAW_TASK, arguments_repr
from jobadapter_celery.consumer import (
    ActiveJobLinesSuffice,
    OneLineAckFailures,
    OneLineConnectionLoss,
    consumer_class,
)
from jobadapter_celery.transport import Transport, dead_letter_rejects

if TYPE_CHECKING:
    from jobadapter_celery.adapter import CeleryAdapter

_logger = logging.getLogger("jobadapter")

EARLY_TOLERANCE = 0.02
"""Seconds before its ``scheduled_at`` a job may start (timer granularity) without another hop."""
HEARTBEAT_INTERVAL = 2.0
HEARTBEAT_TTL = 10
"""A Redis worker silent this long (seconds) is dead: its unacked messages are restored."""
PAUSE_POLL = 0.4
"""Seconds between a worker's reads of the paused queues: with Celery's reaction, well
within `jobadapter.adapters.base.PAUSE_BOUND`."""
_KEY_PREFIX = "jobadapter.celery"


def current_task_for(app: Any, job_id: str) -> Any:
    """The Celery task this worker is running for ``job_id``, or None (not in a worker, or
    another job: ``perform_now`` inside a task retries through a plain enqueue)."""
    task = app.current_worker_task
    if task is None or getattr(task, "jobadapter", False) is not True or task.request.id != job_id:
        return None
    return task


def register_tasks(adapter: CeleryAdapter) -> list[str]:
    """A Celery task per registered job class, named by its ``job_name``; returns the names."""
    app = adapter.app
    names = [*sorted(registry.registered()), RAW_TASK]

    def perform(task: Any, *args: Any, **kwargs: Any) -> None:
        handle(adapter, task, args, kwargs)

    for name in names:
        existing = app.tasks.get(name)
        if existing is not None and getattr(existing, "jobadapter", False) is not True:
            raise ConfigurationError(f"the Celery app already has a task named {name!r}; rename the job_name")
        task = app.task(
            name=name,
            bind=True,
            shared=False,
            lazy=False,
            acks_late=True,
            reject_on_worker_lost=True,
            max_retries=None,
            serializer="json",
            typing=False,
        )(perform)
        task.jobadapter = True
    return names


def handle(adapter: CeleryAdapter, task: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
    """Run one task message: the body of every jobadapter task."""
    payload = args[0] if len(args) == 1 and not kwargs and isinstance(args[0], str) else None
    text = payload if payload is not None else json.dumps([list(args), kwargs], default=repr)
    try:
        if payload is None:
            raise InvalidEnvelope("the task's arguments are not one envelope text")
        envelope = decode(payload)
    except InvalidEnvelope as error:
        _dead_letter(adapter, task, text, error)
        raise
    except RecursionError as error:  # what json raises on nesting deeper than the stack
        invalid = InvalidEnvelope(f"payload is nested too deeply to read ({error})")
        _dead_letter(adapter, task, text, invalid)
        raise invalid from None
    if envelope.scheduled_at is not None:
        remaining = (envelope.scheduled_at - datetime.now(timezone.utc)).total_seconds()
        if remaining > EARLY_TOLERANCE:
            if adapter.discarded(envelope):  # a discarded job (or superseded schedule) hops no more
                _logger.info("Dropped %s (Job ID: %s): discarded by an operator", task.name, envelope.job_id)
                return
            _hop(adapter, task, envelope, payload)
    try:
        execute(envelope, adapter, task.request.id)
    except Exception as error:
        adapter.pending_retry(envelope.job_id)
        _dead_letter(adapter, task, text, error)
        raise
    retry = adapter.pending_retry(envelope.job_id)
    if retry is not None:
        raise retry


def _hop(adapter: CeleryAdapter, task: Any, envelope: Envelope, payload: str) -> None:
    """Re-publish a job whose time is beyond the horizon, acknowledge this message, record
    SCHEDULED: no message ever waits unacknowledged for more than the horizon.

    The hop keeps what ``adapter_options`` set on the first message: its time
    limits, and its expiry (an absolute time, so a hop does not extend it).
    """
    assert envelope.scheduled_at is not None
    time_limit, soft_time_limit = task.request.timelimit or (None, None)
    argsrepr, kwargsrepr = arguments_repr(envelope)
    task.app.send_task(
        task.name,
        args=[payload],
        task_id=task.request.id,
        queue=adapter.fit_queue(envelope.queue_name),
        argsrepr=argsrepr,
        kwargsrepr=kwargsrepr,
        priority=adapter.broker_priority(envelope.priority),
        eta=adapter.hop_eta(envelope.scheduled_at),
        retries=task.request.retries or 0,
        serializer="json",
        expires=task.request.expires,
        time_limit=time_limit,
        soft_time_limit=soft_time_limit,
    )
    if adapter.has_result_backend:
        task.update_state(state="SCHEDULED", meta={"scheduled_at": format_timestamp(envelope.scheduled_at)})
    raise Ignore()


def _dead_letter(adapter: CeleryAdapter, task: Any, payload: str, error: BaseException) -> None:
    """Record FAILURE, then publish to the dead-letter queue: whoever finds the job there
    already reads its state as failed (Celery's own FAILURE write follows the raise, later)."""
    reason = f"{type(error).__name__}: {error}"
    _logger.error("%s[%s] failed for good: %s", task.name, task.request.id, reason)
    if adapter.has_result_backend:
        task.backend.store_result(task.request.id, error, "FAILURE", request=task.request)
    adapter.dead_letter_publish(payload, reason, task.name, task.request.id)


class Lifeline:
    """On Redis: this worker's own unacked hash, its heartbeat, and the restore of dead workers'."""

    def __init__(self, adapter: CeleryAdapter, node: str) -> None:
        self.adapter = adapter
        self.node = node
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jobadapter-lifeline", daemon=True)
        self._connection: Any = Connection(  # type: ignore[no-untyped-call]
            adapter.broker_url, transport_options=self._base_options()
        )

    def _base_options(self) -> dict[str, Any]:
        return dict(self.adapter.app.conf.broker_transport_options or {})

    @staticmethod
    def keys(node: str) -> dict[str, str]:
        """The transport options giving ``node`` its own unacked bookkeeping and rejects list."""
        return {
            "unacked_key": f"{_KEY_PREFIX}.unacked.{node}",
            "unacked_index_key": f"{_KEY_PREFIX}.unacked_index.{node}",
            "unacked_mutex_key": f"{_KEY_PREFIX}.unacked_mutex.{node}",
            "rejects_key": f"{_KEY_PREFIX}.rejects.{node}",
        }

    def transport_options(self) -> dict[str, Any]:
        """What this worker's own consumer runs with (`jobadapter_celery.transport.Channel`)."""
        return {
            **self._base_options(),
            **self.keys(self.node),
            "dead_letter_queue": self.adapter.settings.dead_letter_queue,
        }

    def start(self) -> None:
        self._beat()
        self._thread.start()

    def stop(self) -> None:
        """Stop beating; give back anything this worker still held; forget it."""
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self.restore(self.node)
        except Exception as error:  # Redis is down: another worker restores them once our beat lapses
            _logger.warning("jobadapter lifeline: could not give back this worker's unacked jobs: %s", error)
        self._connection.release()

    def _client(self) -> Any:
        return self._connection.default_channel.client

    def _beat(self) -> None:
        client = self._client()
        client.sadd(f"{_KEY_PREFIX}.nodes", self.node)
        client.set(f"{_KEY_PREFIX}.alive.{self.node}", "1", ex=HEARTBEAT_TTL)

    def _run(self) -> None:
        """Beat and sweep every `HEARTBEAT_INTERVAL`; an outage is logged when it starts and
        when it ends, not at every failed beat."""
        failing = False
        while not self._stop.wait(HEARTBEAT_INTERVAL):
            try:
                self._beat()
                self.sweep()
            except Exception as error:
                if not failing:
                    _logger.warning(
                        "jobadapter lifeline: Redis unreachable (%s); retrying every %g s",
                        error,
                        HEARTBEAT_INTERVAL,
                    )
                failing = True
                continue
            if failing:
                _logger.warning("jobadapter lifeline: Redis reachable again")
            failing = False

    def sweep(self) -> None:
        """Restore the unacked messages of every worker whose heartbeat has lapsed."""
        client = self._client()
        for raw in client.smembers(f"{_KEY_PREFIX}.nodes"):
            node = raw.decode() if isinstance(raw, bytes) else str(raw)
            if node != self.node and not client.exists(f"{_KEY_PREFIX}.alive.{node}"):
                self.restore(node)

    def restore(self, node: str) -> None:
        """Put ``node``'s unacknowledged messages back on their queues, dead-letter what its
        fetch rejected but had not moved yet, then forget ``node``."""
        options = {**self._base_options(), **self.keys(node), "visibility_timeout": 0}
        connection: Any = Connection(  # type: ignore[no-untyped-call]
            self.adapter.broker_url, transport_options=options
        )
        with connection:
            channel = connection.default_channel
            channel.qos.restore_visible(start=0, num=None, interval=1)
            client = channel.client
            dead_letter_rejects(client, options["rejects_key"], self.adapter.settings.dead_letter_queue)
            if not client.hlen(options["unacked_key"]):
                client.srem(f"{_KEY_PREFIX}.nodes", node)
                client.delete(options["unacked_index_key"], f"{_KEY_PREFIX}.alive.{node}")
        _logger.info("jobadapter lifeline: restored the unacknowledged jobs of worker %s", node)


class PauseWatch:
    """Keeps this worker's consumers in line with the paused set (``pause``/``resume``).

    Every `PAUSE_POLL` seconds it reads the paused queues (a Redis set, or the
    journal on RabbitMQ) and compares them with what Celery consumes; a queue
    out of line gets Celery's own ``cancel_consumer`` or ``add_consumer``, sent
    to this worker only, so Celery applies it in its event loop. The comparison
    is made against Celery's state each time, so a control message lost (a
    reconnect, a worker still starting) is simply sent again. Only the queues
    this worker was started with are ever added back.
    """

    def __init__(self, adapter: CeleryAdapter, hostname: str, queues: Sequence[str]) -> None:
        self.adapter = adapter
        self.hostname = hostname
        self.queues = list(queues)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jobadapter-pause-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        failing = False
        while not self._stop.wait(PAUSE_POLL):
            try:
                self.apply(self.adapter.operations.paused())
            except Exception as error:  # the broker or the journal is down: try again at the next poll
                if not failing:
                    _logger.warning("jobadapter pause watch: cannot read the paused queues: %s", error)
                failing = True
                continue
            failing = False

    def apply(self, paused: frozenset[str]) -> None:
        control = self.adapter.app.control
        consuming = set(self.adapter.app.amqp.queues.consume_from)
        for queue in self.queues:
            if queue in paused and queue in consuming:
                control.cancel_consumer(queue, destination=[self.hostname], reply=False)
            elif queue not in paused and queue not in consuming:
                control.add_consumer(queue, destination=[self.hostname], reply=False)


def run(adapter: CeleryAdapter, queues: list[str], concurrency: int) -> None:
    """Run a Celery worker (prefork) on ``queues`` until a warm shutdown (SIGTERM)."""
    app = adapter.app
    names = register_tasks(adapter)
    node = uuid.uuid4().hex[:12]
    lifeline = Lifeline(adapter, node) if adapter.transport == "redis" else None
    if lifeline is not None:
        app.conf.broker_transport = Transport
        app.conf.broker_transport_options = lifeline.transport_options()
    app.conf.broker_connection_max_retries = None  # outlive a broker outage of any length
    app.conf.worker_enable_prefetch_count_reduction = False  # moot at a multiplier of 1; one line less
    logging.getLogger("celery.worker.request").addFilter(OneLineAckFailures())
    logging.getLogger("celery.worker.consumer.consumer").addFilter(OneLineConnectionLoss())
    for per_task in ("celery.worker.strategy", "celery.app.trace"):
        logging.getLogger(per_task).addFilter(ActiveJobLinesSuffice())
    _logger.debug("Celery tasks for jobadapter: %s", ", ".join(names))
    hostname = f"jobadapter-{node}@{socket.gethostname()}"
    paused = [queue for queue in queues if queue in adapter.operations.paused()]
    if paused:
        _logger.info("paused, not consumed until resumed: %s", ", ".join(paused))
    worker = app.Worker(
        hostname=hostname,
        queues=queues,
        exclude_queues=paused,
        concurrency=concurrency,
        pool_cls="prefork",
        loglevel=logging.getLogger().getEffectiveLevel(),
        without_mingle=True,
        without_gossip=True,
        optimization="fair",
        prefetch_multiplier=adapter.settings.prefetch,
        quiet=True,
        consumer_cls=consumer_class(adapter),
    )
    watch = PauseWatch(adapter, hostname, queues)
    if lifeline is not None:
        lifeline.start()
    watch.start()

    def ready(**_: Any) -> None:
        announce_ready(adapter.name)

    worker_ready.connect(ready, weak=False)
    try:
        worker.start()
    finally:
        worker_ready.disconnect(ready)
        watch.stop()
        if lifeline is not None:
            lifeline.stop()
    if worker.exitcode:
        raise SystemExit(worker.exitcode)
