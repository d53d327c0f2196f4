"""The worker side: one Celery task per job class, and a real Celery worker to run them.

``run`` registers a task under each registered ``job_name`` (plus
``jobadapter.perform`` for raw payloads), then starts Celery's own
``WorkController`` (prefork) in this process. Every task does the same thing:
check the envelope, hop it forward if its time is still beyond the horizon,
``execute`` it, and turn the outcome into Celery's: return (SUCCESS), raise the
Retry that ``schedule_retry`` prepared (RETRY), or dead-letter the payload and
raise (FAILURE).

Messages Celery cannot hand to a task (a task name this worker does not know,
an invalid message) are dead-lettered through Celery's ``task_unknown`` and
``task_rejected`` signals instead of being dropped.

On Redis, kombu keeps a worker's unacknowledged messages in one hash that is
only swept after ``visibility_timeout``; a killed worker's jobs would wait that
long. Each worker therefore keeps its own unacked hash and a heartbeat key, and
every worker restores the hash of a worker whose heartbeat has lapsed
(`Lifeline`).
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

from celery import signals  # type: ignore[import-untyped]
from celery.exceptions import Ignore  # type: ignore[import-untyped]
from kombu.connection import Connection

from jobadapter import registry
from jobadapter.envelope import Envelope, decode, format_timestamp
from jobadapter.errors import ConfigurationError, InvalidEnvelope
from jobadapter.execution import execute
from jobadapter_celery.adapter import RAW_TASK

if TYPE_CHECKING:
    from jobadapter_celery.adapter import CeleryAdapter

_logger = logging.getLogger("jobadapter")

EARLY_TOLERANCE = 0.02
"""Seconds before its ``scheduled_at`` a job may start (timer granularity) without another hop."""
HEARTBEAT_INTERVAL = 2.0
HEARTBEAT_TTL = 10
"""A Redis worker silent this long (seconds) is dead: its unacked messages are restored."""
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
    if envelope.scheduled_at is not None:
        remaining = (envelope.scheduled_at - datetime.now(timezone.utc)).total_seconds()
        if remaining > EARLY_TOLERANCE:
            _hop(adapter, task, envelope, payload)
    try:
        execute(envelope, adapter)
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
    task.app.send_task(
        task.name,
        args=[payload],
        task_id=task.request.id,
        queue=envelope.queue_name,
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
    reason = f"{type(error).__name__}: {error}"
    _logger.error("%s[%s] failed for good: %s", task.name, task.request.id, reason)
    adapter.dead_letter_publish(payload, reason, task.name, task.request.id)


def _message_payload(message: Any) -> str:
    """The envelope text a task message carries, or its raw body when it carries none."""
    body = message.body
    text = body.decode("utf-8", "replace") if isinstance(body, (bytes, bytearray)) else str(body)
    try:
        document = json.loads(text)
    except ValueError:
        return text
    if isinstance(document, list) and document and isinstance(document[0], list):
        arguments = document[0]
        if len(arguments) == 1 and isinstance(arguments[0], str):
            return arguments[0]
    return text


def _connect_signals(adapter: CeleryAdapter) -> None:
    """Dead-letter what Celery would otherwise drop with a log line."""

    def unknown(sender: Any = None, message: Any = None, exc: Any = None, name: Any = None, **_: Any) -> None:
        reason = (
            f"UnknownJobError: job class {name!r} is not registered in this worker: "
            "pass the module that defines it to the worker's --app"
        )
        adapter.dead_letter_publish(_message_payload(message), reason, str(name), message.headers.get("id"))

    def rejected(sender: Any = None, message: Any = None, exc: Any = None, **_: Any) -> None:
        reason = f"InvalidEnvelope: Celery rejected the message ({type(exc).__name__}: {exc})"
        adapter.dead_letter_publish(_message_payload(message), reason, "?", None)

    signals.task_unknown.connect(unknown, weak=False)
    signals.task_rejected.connect(rejected, weak=False)


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
        """The transport options giving ``node`` its own unacked bookkeeping."""
        return {
            "unacked_key": f"{_KEY_PREFIX}.unacked.{node}",
            "unacked_index_key": f"{_KEY_PREFIX}.unacked_index.{node}",
            "unacked_mutex_key": f"{_KEY_PREFIX}.unacked_mutex.{node}",
        }

    def start(self) -> None:
        self._beat()
        self._thread.start()

    def stop(self) -> None:
        """Stop beating; give back anything this worker still held; forget it."""
        self._stop.set()
        self._thread.join(timeout=5)
        self.restore(self.node)
        self._connection.release()

    def _client(self) -> Any:
        return self._connection.default_channel.client

    def _beat(self) -> None:
        client = self._client()
        client.sadd(f"{_KEY_PREFIX}.nodes", self.node)
        client.set(f"{_KEY_PREFIX}.alive.{self.node}", "1", ex=HEARTBEAT_TTL)

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_INTERVAL):
            try:
                self._beat()
                self.sweep()
            except Exception:
                _logger.exception("jobadapter lifeline: Redis heartbeat or sweep failed; retrying")

    def sweep(self) -> None:
        """Restore the unacked messages of every worker whose heartbeat has lapsed."""
        client = self._client()
        for raw in client.smembers(f"{_KEY_PREFIX}.nodes"):
            node = raw.decode() if isinstance(raw, bytes) else str(raw)
            if node != self.node and not client.exists(f"{_KEY_PREFIX}.alive.{node}"):
                self.restore(node)

    def restore(self, node: str) -> None:
        """Put ``node``'s unacknowledged messages back on their queues, then forget ``node``."""
        options = {**self._base_options(), **self.keys(node), "visibility_timeout": 0}
        connection: Any = Connection(  # type: ignore[no-untyped-call]
            self.adapter.broker_url, transport_options=options
        )
        with connection:
            channel = connection.default_channel
            channel.qos.restore_visible(start=0, num=None, interval=1)
            client = channel.client
            if not client.hlen(options["unacked_key"]):
                client.srem(f"{_KEY_PREFIX}.nodes", node)
                client.delete(options["unacked_index_key"], f"{_KEY_PREFIX}.alive.{node}")
        _logger.info("jobadapter lifeline: restored the unacknowledged jobs of worker %s", node)


def run(adapter: CeleryAdapter, queues: list[str], concurrency: int) -> None:
    """Run a Celery worker (prefork) on ``queues`` until a warm shutdown (SIGTERM)."""
    app = adapter.app
    names = register_tasks(adapter)
    _connect_signals(adapter)
    node = uuid.uuid4().hex[:12]
    lifeline = Lifeline(adapter, node) if adapter.transport == "redis" else None
    if lifeline is not None:
        app.conf.broker_transport_options = {**lifeline._base_options(), **Lifeline.keys(node)}
    _logger.info("Celery tasks for jobadapter: %s", ", ".join(names))
    worker = app.Worker(
        hostname=f"jobadapter-{node}@{socket.gethostname()}",
        queues=queues,
        concurrency=concurrency,
        pool_cls="prefork",
        loglevel=logging.getLogger().getEffectiveLevel(),
        without_mingle=True,
        without_gossip=True,
        optimization="fair",
        prefetch_multiplier=1,
        quiet=True,
    )
    if lifeline is not None:
        lifeline.start()
    try:
        worker.start()
    finally:
        if lifeline is not None:
            lifeline.stop()
    if worker.exitcode:
        raise SystemExit(worker.exitcode)
