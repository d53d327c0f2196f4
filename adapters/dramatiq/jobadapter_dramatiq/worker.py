"""``jobadapter worker --url dramatiq+…``: Dramatiq's own `dramatiq.Worker`, wired for jobadapter.

Every registered job class becomes a Dramatiq actor named by its ``job_name``
(so Dramatiq's logs and error reporters show the job's own name); each actor
hands its message's envelope to `jobadapter.execution.execute`. Actors get
``max_retries=0``: retries are the core's decision, published by the adapter's
``schedule_retry``, and Dramatiq's ``Retries`` only marks a failure final.

A message for an actor this worker does not know is resolved through the
registry too: it runs a refusal that raises `UnknownJobError` (or
`InvalidEnvelope`), so it lands in the dead-letter queue with that reason
instead of Dramatiq's bare "undefined actor".

`JobadapterMiddleware` sits first in the broker's middleware list, which makes
it the first to see a message and the last to see its outcome: it forwards
delay hops that came due early, gives back a prefetched message whose queue
was paused since, ends the job's running claim, and, after ``Retries`` failed
a job, moves it to the dead-letter queue with its error.

The broker's consumers are `jobadapter_dramatiq.consumers`' guarded ones: a
body that is not a well-formed Dramatiq message is dead-lettered with its
reason instead of wedging or crashing the worker, and a broker outage is
survived, logged once, and recovered from unaided.

SIGTERM or SIGINT is a warm shutdown: `Worker.stop` lets running jobs finish
(for up to ``shutdown_timeout`` seconds) and returns prefetched messages.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from dramatiq import Actor, Worker
from dramatiq.broker import Broker, MessageProxy
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import q_name
from dramatiq.middleware import Middleware, SkipMessage

from jobadapter import registry
from jobadapter.envelope import Envelope, decode, from_document
from jobadapter.errors import InvalidEnvelope
from jobadapter.execution import execute
from jobadapter.worker_logging import announce_ready
from jobadapter_dramatiq.adapter import ETA_OPTION, RAW_ACTOR, due_in_ms
from jobadapter_dramatiq.consumers import Guard, install

if TYPE_CHECKING:
    from jobadapter_dramatiq.adapter import DramatiqAdapter

_logger = logging.getLogger("jobadapter")
_IDLE_CHECKS = 3
"""Consecutive empty polls (0.2 s apart) before a ``--burst`` worker stops."""


class JobadapterMiddleware(Middleware):
    """Runs delay hops, gives back prefetched messages of paused queues, and dead-letters failed
    jobs with their error (see the module docstring)."""

    def __init__(self, adapter: DramatiqAdapter, actor_names: set[str], guard: Guard) -> None:
        self.adapter = adapter
        self.actor_names = actor_names
        self.guard = guard
        self._current = threading.local()

    def current_actor_name(self) -> str:
        """The actor name of the message this worker thread is processing."""
        name: str = self._current.actor_name
        return name

    def current_message_id(self) -> str | None:
        """The message id (the job's ``provider_job_id``) of the message being processed."""
        return getattr(self._current, "message_id", None)

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        eta = message.options.get(ETA_OPTION)
        if isinstance(eta, int) and due_in_ms(eta) > 0:
            delay = min(due_in_ms(eta), self.adapter.delay_horizon_ms)
            _logger.debug("%s (%s) is not due yet: next hop in %d ms", message, message.message_id, delay)
            broker.enqueue(message.copy(), delay=delay)
            raise SkipMessage("not due yet: forwarded to the next delay hop")
        if self.guard.paused(q_name(message.queue_name)):
            self.guard.give_back(message)
            raise SkipMessage("its queue is paused: given back to the queue")
        self._current.actor_name = message.actor_name
        self._current.message_id = message.message_id

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        self._current.actor_name = None
        self.adapter.end_run()
        ours = message.actor_name in self.actor_names or message.actor_name not in broker.actors
        if exception is not None and message.failed and ours:
            self.adapter.dead_letter(message, exception)


class _RegistryActors(dict[str, Actor[Any, Any]]):
    """``broker.actors`` that resolve an unknown name to the refusal actor."""

    def __init__(self, actors: Mapping[str, Actor[Any, Any]], refusal: Callable[[], Actor[Any, Any]]) -> None:
        super().__init__(actors)
        self._refusal = refusal

    def __missing__(self, name: str) -> Actor[Any, Any]:
        return self._refusal()


def _runner(adapter: DramatiqAdapter, middleware: JobadapterMiddleware) -> Callable[[object], None]:
    def perform(payload: object) -> None:
        """Check the envelope against the message's actor name, then run it."""
        envelope = _envelope(payload)
        actor_name = middleware.current_actor_name()
        if envelope.job_class != actor_name:
            registry.lookup(actor_name)
            raise InvalidEnvelope(
                f"a message for actor {actor_name!r} carries a {envelope.job_class!r} envelope"
            )
        execute(envelope, adapter, middleware.current_message_id())

    return perform


def _envelope(payload: object) -> Envelope:
    if isinstance(payload, str):
        return decode(payload)
    if isinstance(payload, Mapping):
        return from_document(dict(payload))
    raise InvalidEnvelope(f"the message argument is a {type(payload).__name__}, not an envelope")


def declare_actors(
    adapter: DramatiqAdapter, middleware: JobadapterMiddleware, default_queue: str
) -> list[Actor[Any, Any]]:
    """One actor per registered job class, named by its ``job_name``; and the refusal actor."""
    broker = adapter.broker
    options: dict[str, Any] = {"max_retries": 0} if "max_retries" in broker.actor_options else {}
    perform = _runner(adapter, middleware)
    declared = []
    for name, job_class in sorted(registry.registered().items()):
        if name in broker.actors:
            _logger.warning("Dramatiq already has an actor named %s: jobadapter leaves it alone", name)
            continue
        queue = job_class.queue_as if isinstance(job_class.queue_as, str) else default_queue
        declared.append(
            Actor(perform, broker=broker, actor_name=name, queue_name=queue, priority=0, options=options)
        )
    refusal: Actor[Any, Any] = Actor(
        perform, broker=broker, actor_name=RAW_ACTOR, queue_name=default_queue, priority=0, options=options
    )
    middleware.actor_names.update(actor.actor_name for actor in [*declared, refusal])
    broker.actors = _RegistryActors(broker.actors, lambda: refusal)
    return declared


def run(adapter: DramatiqAdapter, *, queues: Sequence[str] | None, threads: int, burst: bool) -> None:
    """Run ``adapter.processes`` Dramatiq workers of ``threads`` threads each on ``queues``
    (default: every registered class's queue) until SIGTERM/SIGINT, or, with ``burst``, until
    the queues are empty."""
    if adapter.processes == 1:
        _run_one(adapter, queues=queues, threads=threads, burst=burst)
        return
    children = []
    for _ in range(adapter.processes):
        pid = os.fork()  # before any connection or thread exists in this process
        if pid == 0:
            code = 1
            try:
                if isinstance(adapter.broker, RedisBroker):
                    # Each process its own heartbeat and ack sets, as with Dramatiq's own CLI: a
                    # consumer that restarts requeues what its ack set holds that its own process
                    # is not running, which must not include a sibling's jobs.
                    adapter.broker.broker_id = str(uuid.uuid4())
                _run_one(adapter, queues=queues, threads=threads, burst=burst)
                code = 0
            finally:
                os._exit(code)
        children.append(pid)

    def forward(signum: int, frame: FrameType | None) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for child in children:
            os.waitpid(child, 0)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_one(adapter: DramatiqAdapter, *, queues: Sequence[str] | None, threads: int, burst: bool) -> None:
    """One Dramatiq worker (consumer and worker threads) in this process."""
    broker = adapter.broker
    names = list(queues or registry.declared_queues())
    guard = Guard(adapter)
    install(broker, guard)
    guard.outage.watch(names)
    if not _logger.isEnabledFor(logging.DEBUG):
        # pika logs every failed connection attempt (several ERROR lines and a traceback, per
        # consumer, every restart); each failure also surfaces as an exception that the
        # consumers' outage log or the adapter's EnqueueError reports.
        logging.getLogger("pika").setLevel(logging.CRITICAL)
    guard.watch_pauses()
    middleware = JobadapterMiddleware(adapter, set(), guard)
    first = type(broker.middleware[0]) if broker.middleware else None
    broker.add_middleware(middleware, before=first)
    declare_actors(adapter, middleware, names[0])
    worker = Worker(
        broker, queues=set(names), worker_threads=threads, worker_timeout=adapter.worker_timeout_ms
    )
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        _logger.info("Received %s: warm shutdown", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        worker.start()
        for name in names:
            broker.declare_queue(name)
        announce_ready(adapter.name)
        idle = 0
        while not stop.wait(0.2):
            if burst:
                idle = idle + 1 if _idle(adapter, worker, names) else 0
                if idle >= _IDLE_CHECKS:
                    break
    finally:
        guard.stopping.set()
        worker.stop(timeout=int(adapter.shutdown_timeout * 1000))
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _idle(adapter: DramatiqAdapter, worker: Worker, names: Sequence[str]) -> bool:
    """Nothing waiting in ``names``, nothing held in memory, nothing running."""
    if worker.work_queue.unfinished_tasks:
        return False
    if any(consumer.delay_queue.unfinished_tasks for consumer in worker.consumers.values()):
        return False
    sizes = adapter.queue_sizes()
    return not any(sizes.get(name, 0) for name in names)
