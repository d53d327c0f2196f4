"""The worker's consumers: Dramatiq's Redis and RabbitMQ consumers, hardened against what a queue may hold.

`install` makes ``broker.consume`` return these (on the worker's broker only,
an application's attached broker included). Each puts every body through
`jobadapter_dramatiq.wire.parse` before Dramatiq sees it; a refused body is
dead-lettered with its reason and acknowledged, and the consumer goes on with
the next one. Without this, on Redis one undecodable body raises out of
``_RedisConsumer.__next__``: the consumer is replaced, and the rest of its
batch stays in this worker's ack set, neither run nor requeued, for as long as
the worker heartbeats. On RabbitMQ, ``"options": 5`` decodes, crashes the
consumer thread, is redelivered and crashes it again every restart.

They also make outages survivable and quiet:

- Redis: a consumer that replaces a failed one first requeues what its
  predecessor held and no one is processing (a delay queue's in-memory
  messages, dropped by Dramatiq on a connection error; a batch cut short), so
  nothing waits for the worker's death to come back.
- Redis errors from requeueing are `ConnectionClosed`, which Dramatiq's
  consumer thread survives (a raw ``redis.ConnectionError`` there kills it).
- Acknowledging on a dead connection: RabbitMQ redelivers those deliveries
  anyway, so the ack is dropped instead of retried every 5 s; on Redis it is
  retried until the worker is told to stop, then left to redelivery.
- `OutageLog` turns Dramatiq's line-per-retry into one line when the broker
  goes away and one when it is back.

And they honour paused queues (`jobadapter_dramatiq.operations`): the `Guard`
reads the adapter's paused set when the worker starts and every `PAUSE_POLL`
seconds after; a consumer of a paused queue fetches nothing (delay queues go
on, so jobs still come due), and a message the worker had already prefetched
is given back to its queue instead of acknowledged (the worker's middleware
marks it).
"""

from __future__ import annotations

import inspect
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from functools import partial

import pika.exceptions  # type: ignore[import-untyped]
import redis
from dramatiq.broker import Broker, Consumer, MessageProxy
from dramatiq.brokers.rabbitmq import RabbitmqBroker, _RabbitmqConsumer, _RabbitmqMessage
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import compute_backoff, current_millis, q_name, xq_name
from dramatiq.errors import ConnectionClosed

try:
    from dramatiq.errors import BrokerConnectionError
except ImportError:  # Dramatiq before 2.1: the same class under its old name
    from dramatiq.errors import ConnectionError as BrokerConnectionError  # type: ignore[no-redef]

from jobadapter_dramatiq.adapter import DramatiqAdapter, RabbitmqAdapter
from jobadapter_dramatiq.operations import PAUSE_POLL
from jobadapter_dramatiq.wire import Rejected, parse, rejection

_logger = logging.getLogger("jobadapter")
_AMQP_ERRORS = (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError)
_REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)
"""A Redis that refuses, or one that hangs (a frozen server, a lost network): Dramatiq converts
only the first into `ConnectionClosed`; a raw timeout out of a requeue kills its consumer thread."""


def _closed(error: BaseException) -> ConnectionClosed:
    """Dramatiq's connection error, which its consumer thread survives and restarts on."""
    closed: ConnectionClosed = ConnectionClosed(error)  # type: ignore[no-untyped-call]
    return closed


class OutageLog(logging.Filter):
    """One warning when the broker becomes unreachable, one when it answers again.

    Installed on Dramatiq's consumer-thread loggers, it lets the first
    connection-error line through and drops the rest (Dramatiq logs one per
    consumer every restart, 3 s apart, and one per unacknowledged message every
    5 s) until a consumer reaches the broker again.
    """

    _OUTAGE_LINES = (
        "Consumer encountered a connection error",
        "Restarting consumer",
        "Failed to post_process_message",
    )

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self.down_since: float | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._is_outage_line(record):
            return True
        with self._lock:
            if self.down_since is not None:
                return False
            self.down_since = time.monotonic()
        _logger.warning("The broker is unreachable: the worker keeps retrying and goes on when it is back")
        return record.levelno > logging.INFO

    def _is_outage_line(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if message.startswith(self._OUTAGE_LINES):
            return True
        error = record.exc_info[1] if record.exc_info else None
        return isinstance(error, (BrokerConnectionError, *_REDIS_DOWN, *_AMQP_ERRORS))

    def reached(self) -> None:
        """A consumer talked to the broker: close the outage, if there was one."""
        if self.down_since is None:
            return
        with self._lock:
            since, self.down_since = self.down_since, None
        if since is not None:
            _logger.warning("The broker is reachable again after %.1f s", time.monotonic() - since)

    def watch(self, queue_names: Iterable[str]) -> None:
        """Filter the loggers of the consumer threads of these queues (and their delay queues)."""
        for name in queue_names:
            for queue in (name, f"{name}.DQ"):
                logging.getLogger(f"dramatiq.worker.ConsumerThread({queue})").addFilter(self)


PAUSED_NAP = 0.2
"""Seconds a consumer of a paused queue waits between two looks at the paused set."""


class Guard:
    """What the worker's consumers share: the adapter, the outage log, the stop flag, the paused
    queues, the messages to give back, and (Redis) the messages handed to worker threads and
    not yet acknowledged, by queue."""

    def __init__(self, adapter: DramatiqAdapter) -> None:
        self.adapter = adapter
        self.outage = OutageLog()
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._held: dict[str, set[str]] = {}
        self._paused: frozenset[str] = frozenset()
        self._given_back: set[int] = set()

    def watch_pauses(self) -> None:
        """Read the paused queues now (a worker started while a queue is paused never takes
        its jobs), then every `PAUSE_POLL` seconds on a daemon thread until the worker stops.
        An adapter with nowhere to keep pauses (RabbitMQ without a journal) is not watched."""
        if not self._read_pauses():
            return
        threading.Thread(target=self._poll_pauses, name="jobadapter-pauses", daemon=True).start()

    def _read_pauses(self) -> bool:
        paused = self.adapter.paused_queues()
        if paused is None:
            return False
        self._paused = paused
        return True

    def _poll_pauses(self) -> None:
        failing = False
        while not self.stopping.wait(PAUSE_POLL):
            try:
                self._read_pauses()
            except Exception as error:  # the store is down: keep what was last read, say so once
                if not failing:
                    _logger.warning("Could not read the paused queues (%s); keeping the last known", error)
                failing = True
            else:
                failing = False

    def paused(self, queue_name: str) -> bool:
        return queue_name in self._paused

    def give_back(self, message: MessageProxy) -> None:
        """Mark a prefetched message of a paused queue: its consumer requeues it instead of
        acknowledging it."""
        with self._lock:
            self._given_back.add(id(message))

    def taken_back(self, message: MessageProxy) -> bool:
        """Whether ``message`` is to be given back (and forget the mark)."""
        with self._lock:
            if id(message) in self._given_back:
                self._given_back.discard(id(message))
                return True
            return False

    def hold(self, queue_name: str, redis_id: str) -> None:
        with self._lock:
            self._held.setdefault(queue_name, set()).add(redis_id)

    def release(self, queue_name: str, redis_id: str) -> None:
        with self._lock:
            self._held.get(queue_name, set()).discard(redis_id)

    def held(self, queue_name: str) -> set[str]:
        with self._lock:
            return set(self._held.get(queue_name, ()))


def install(broker: Broker, guard: Guard) -> None:
    """Make ``broker.consume`` build guarded consumers (this process's broker object only)."""
    if isinstance(broker, RabbitmqBroker):

        def consume(queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Consumer:
            broker.declare_queue(queue_name, ensure=True)
            consumer = GuardedRabbitmqConsumer(broker, queue_name, prefetch, timeout)
            consumer.guard = guard
            guard.outage.reached()
            return consumer

    elif isinstance(broker, RedisBroker):

        def consume(queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Consumer:
            consumer = GuardedRedisConsumer(broker, queue_name, prefetch, timeout)  # type: ignore[no-untyped-call]
            consumer.guard = guard
            consumer.requeue_orphans()
            return consumer

    else:  # pragma: no cover - the adapter only builds or attaches these two
        raise TypeError(f"no guarded consumer for {type(broker).__name__}")
    # An attribute of this broker object, not its class: an attached broker stays the app's type.
    broker.consume = consume  # type: ignore[method-assign]


_ARRIVALS = itertools.count()


class _InArrivalOrder:
    """A message proxy that sorts by when its consumer received it.

    A worker queues the messages it prefetched by (actor priority, message) and,
    before Dramatiq 2.2, compares two proxies of equal priority as "always
    less": ties ran in no fixed order, so the order the broker delivered in
    (RabbitMQ's priority order, a queue's first in, first out) was lost among
    prefetched messages. Dramatiq 2.2 breaks ties by arrival itself and never
    compares the proxies; these give 1.x the same order."""

    _arrival: int

    def __lt__(self, other: object) -> bool:
        return self._arrival < getattr(other, "_arrival", self._arrival + 1)


class _RedisProxy(_InArrivalOrder, MessageProxy):
    pass


class _RabbitmqProxy(_InArrivalOrder, _RabbitmqMessage):
    pass


def _arrived(proxy: _InArrivalOrder) -> MessageProxy:
    proxy._arrival = next(_ARRIVALS)
    assert isinstance(proxy, MessageProxy)
    return proxy


class GuardedRedisConsumer(_RedisConsumer):
    """Dramatiq's Redis consumer, with every fetched body checked (see the module docstring)."""

    guard: Guard

    def _key(self, name: str) -> str:
        return f"{self.broker.namespace}:{name}"

    @property
    def _acks(self) -> str:
        """This worker's ack set for this queue, as Dramatiq's ``fetch`` script names it."""
        return self._key(f"__acks__.{self.broker.broker_id}.{self.queue_name}")

    def __next__(self) -> MessageProxy | None:
        try:
            while True:
                if not self.message_cache and not self._fetch():
                    return None
                data = self.message_cache.pop(0)
                if data is None:  # an id whose body is gone (acked by a stale twin): forget it
                    self._forget_stale()
                    continue
                self.misses = 0
                try:
                    message = parse(data, self.queue_name)
                    if not isinstance(message.options.get("redis_message_id"), str):
                        raise Rejected("no redis_message_id option: not written by Dramatiq's RedisBroker")
                except Rejected as rejected:
                    self._reject(data, str(rejected))
                    continue
                self.queued_message_ids.add(message.message_id)
                if message.options.get("eta") is None:  # for a worker thread, not the delay queue
                    self.guard.hold(self.queue_name, message.options["redis_message_id"])
                return _arrived(_RedisProxy(message))
        except _REDIS_DOWN as error:
            raise _closed(error) from None

    def _fetch(self) -> bool:
        """Fill the cache with up to the prefetch allowance; False (after an idle backoff) if none,
        or at once (after a nap) if the queue is paused."""
        if self.guard.paused(self.queue_name):
            time.sleep(PAUSED_NAP)
            return False
        if self.outstanding_message_count < self.prefetch:
            self.message_cache = list(
                self.broker.do_fetch(self.queue_name, self.prefetch - self.outstanding_message_count)
            )
            self.guard.outage.reached()
        if self.message_cache:
            return True
        self.misses, backoff_ms = compute_backoff(self.misses, max_backoff=self.timeout)
        time.sleep(backoff_ms / 1000)
        return False

    def _reject(self, data: bytes, reason: str) -> None:
        """Move a refused body from this worker's ack set to the dead-letter queue, as a rejection
        record, in one transaction. Dramatiq's ``fetch`` returns bodies without their ids, so the
        id is found by matching the body among the ids this consumer holds."""
        client = self.broker.client
        held = sorted(client.smembers(self._acks))
        bodies = client.hmget(self._key(f"{self.queue_name}.msgs"), held) if held else []
        redis_id = next((key for key, body in zip(held, bodies, strict=True) if body == data), None)
        if redis_id is None:
            _logger.error("Could not find the id of a refused message on %s: %s", self.queue_name, reason)
            return
        record = rejection(data, self.queue_name, reason)
        dead = self._key(xq_name(q_name(self.queue_name)))
        with client.pipeline(transaction=True) as pipe:
            pipe.srem(self._acks, redis_id)
            pipe.hdel(self._key(f"{self.queue_name}.msgs"), redis_id)
            pipe.zadd(dead, {redis_id: current_millis()})
            pipe.hset(f"{dead}.msgs", redis_id, record.encode())
            pipe.execute()
        _logger.error("Refused a message on %s (dead-lettered): %s", self.queue_name, reason)

    def _forget_stale(self) -> None:
        held = sorted(self.broker.client.smembers(self._acks))
        bodies = self.broker.client.hmget(self._key(f"{self.queue_name}.msgs"), held) if held else []
        stale = [key for key, body in zip(held, bodies, strict=True) if body is None]
        if stale:
            self.broker.client.srem(self._acks, *stale)

    def requeue_orphans(self) -> None:
        """Give back what this worker's ack set holds and no worker thread is processing: left by a
        consumer this one replaces (a delay queue's in-memory messages, a batch cut short)."""
        try:
            held = {key.decode() for key in self.broker.client.smembers(self._acks)}
            orphans = held - self.guard.held(self.queue_name)
            if orphans:
                self.broker.do_requeue(self.queue_name, *sorted(orphans))
                _logger.info(
                    "Requeued %d message(s) a replaced consumer held on %s", len(orphans), self.queue_name
                )
        except _REDIS_DOWN as error:
            raise _closed(error) from None
        self.guard.outage.reached()

    def ack(self, message: MessageProxy) -> None:
        self._settle(self._give_back if self.guard.taken_back(message) else super().ack, message)

    def _give_back(self, message: MessageProxy) -> None:
        """Return a message of a paused queue to the tail of its list, in one step out of this
        worker's ack set (Dramatiq's requeue script)."""
        try:
            self.broker.do_requeue(self.queue_name, message.options["redis_message_id"])
        except _REDIS_DOWN as error:
            raise _closed(error) from None
        finally:
            self.queued_message_ids.discard(message.message_id)

    def nack(self, message: MessageProxy) -> None:
        self._settle(super().nack, message)

    def _settle(self, settle: Callable[[MessageProxy], None], message: MessageProxy) -> None:
        try:
            try:
                settle(message)
            except redis.TimeoutError as error:
                raise _closed(error) from None
        except ConnectionClosed:
            if not self.guard.stopping.is_set():
                raise  # Dramatiq retries it every 5 s until Redis is back
            _logger.warning(
                "Left %s (%s) unacknowledged on the way out: Redis requeues it once this worker's "
                "heartbeat times out",
                message.actor_name,
                message.message_id,
            )
        self.guard.release(self.queue_name, message.options["redis_message_id"])

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        try:
            super().requeue(list(messages))  # type: ignore[no-untyped-call]
        except _REDIS_DOWN as error:
            raise _closed(error) from None


_BROKER_PASSED = "broker" in inspect.signature(_RabbitmqConsumer.__init__).parameters
"""Dramatiq 2.2 builds its RabbitMQ consumer from the broker; earlier versions from the
connection parameters, keeping neither the broker nor the queue name, which this consumer reads."""


class GuardedRabbitmqConsumer(_RabbitmqConsumer):
    """Dramatiq's RabbitMQ consumer, with every delivery checked (see the module docstring)."""

    guard: Guard

    def __init__(self, broker: RabbitmqBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        if _BROKER_PASSED:
            super().__init__(broker, queue_name, prefetch, timeout)  # type: ignore[no-untyped-call]
        else:
            super().__init__(broker.parameters, queue_name, prefetch, timeout)  # type: ignore[no-untyped-call]
            self.broker, self.queue_name = broker, queue_name

    def close(self) -> None:
        """Dramatiq's. Before 2.2, Dramatiq waits for the callbacks of a connection the broker
        already closed, fails, and logs a traceback at every outage; there is nothing to wait for."""
        if _BROKER_PASSED or self.connection.is_open:
            super().close()  # type: ignore[no-untyped-call]
            return
        try:
            self.channel.close()
            self.connection.close()
        except (pika.exceptions.ChannelWrongStateError, pika.exceptions.ConnectionWrongStateError):
            pass  # already closed
        except (AssertionError, *_AMQP_ERRORS) as error:
            raise _closed(error) from None

    def __next__(self) -> MessageProxy | None:
        if self.guard.paused(self.queue_name):
            # Take nothing: deliveries RabbitMQ already sent wait, unacknowledged, in pika's
            # buffer; serving the connection keeps its heartbeats.
            try:
                self.connection.process_data_events(time_limit=PAUSED_NAP)
            except _AMQP_ERRORS as error:
                raise _closed(error) from None
            return None
        try:
            method, properties, body = next(self.iterator)
            if method is None:
                return None
        except (AssertionError, *_AMQP_ERRORS) as error:
            if getattr(error, "reply_code", None) == 404:  # the queue was deleted: declare it again
                self.broker.queues_pending.add(q_name(self.queue_name))
            raise _closed(error) from None
        try:
            message = parse(body, self.queue_name, properties.content_type)
        except Rejected as rejected:
            self._reject(method.delivery_tag, body, str(rejected))
            return None
        self.known_tags.add(method.delivery_tag)
        return _arrived(_RabbitmqProxy(method.redelivered, method.delivery_tag, message))  # type: ignore[no-untyped-call]

    def _reject(self, tag: int, body: bytes, reason: str) -> None:
        """Publish the rejection record to ``<queue>.XQ`` (confirmed), then acknowledge the
        delivery; if either fails the consumer restarts and RabbitMQ delivers the body again."""
        record = rejection(body, self.queue_name, reason)
        try:
            adapter = self.guard.adapter
            assert isinstance(adapter, RabbitmqAdapter)
            adapter.publish_dead_letter(record)
            self.channel.basic_ack(tag)
        except _AMQP_ERRORS as error:
            raise _closed(error) from None
        _logger.error("Refused a message on %s (dead-lettered): %s", self.queue_name, reason)

    def ack(self, message: MessageProxy) -> None:
        if self._dead():
            return
        if self.guard.taken_back(message):
            # A message of a paused queue: RabbitMQ puts it back in its place in the queue.
            self.known_tags.discard(message._tag)
            self.connection.add_callback_threadsafe(
                partial(self.channel.basic_nack, message._tag, requeue=True)
            )
            return
        super().ack(message)  # type: ignore[no-untyped-call]

    def nack(self, message: MessageProxy) -> None:
        if self._dead():
            return
        super().nack(message)  # type: ignore[no-untyped-call]

    def _dead(self) -> bool:
        """The connection is gone: RabbitMQ redelivers its deliveries, so settling them is moot
        (Dramatiq would retry every 5 s for ever, holding a worker thread)."""
        return not self.connection.is_open
