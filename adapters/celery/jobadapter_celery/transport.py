"""A kombu Redis transport whose fetch cannot lose a message: ``jobadapter_celery.transport:Transport``.

kombu's Redis transport takes a message with ``BRPOP`` and only afterwards,
in a second round trip, records it in the ``unacked`` hash (``QoS.append``).
Redis removes the message from the list the moment it answers the ``BRPOP``;
a worker killed before its ``HSET`` lands (the reply may still be in the
socket buffer) loses the message for good: it is in no list and no hash. The
fault suite's kill storm measured 1 to 2 lost jobs in 300 that way.

Here the fetch is one Lua script: it pops the first message (same key order as
kombu's ``BRPOP``: priority steps, then queues, rotated for fairness) and, in
the same atomic step, writes it to the ``unacked`` hash and ``unacked_index``
sorted set in ``QoS.append``'s format (``[message, exchange, routing key]``,
here ``[message, "", queue]``: the default exchange and the queue it came
from, so a restore puts it back exactly there; scored by the Redis clock).
From the moment Redis removes a message from its queue, it is in the unacked
bookkeeping; kombu's own restore (and the worker's
`~jobadapter_celery.worker.Lifeline`) put it back if the worker dies. A
script cannot block, so when every queue is empty the channel waits with a
short non-destructive ``BLMOVE key key RIGHT RIGHT`` on its first queue key
(moving a list's last element onto its own tail changes nothing) before
fetching again:
a message on that key wakes it at once, one on another key within
`FETCH_WAIT` seconds.

An entry the script cannot record (not JSON, or no ``properties.delivery_tag``)
is moved, atomically with the pop, to a per-worker *rejects* list; the worker
then moves it to the dead-letter queue with a reason (in one ``MULTI``), and a
worker that dies in between leaves it in its rejects list, where the lifeline
finds it. An entry the script recorded but kombu cannot read (its body will
not decode) goes to the dead-letter queue in the same ``MULTI`` that removes it
from the unacked hash. So no entry on a queue list can stop the worker, and
none is ever dropped.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from datetime import datetime, timezone
from queue import Empty
from time import monotonic, time
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils import encoding as kombu_encoding
from kombu.utils import json as kombu_json

from jobadapter.envelope import format_timestamp

FETCH_WAIT = 0.1
"""Seconds an idle channel waits between fetches (a message on its first key wakes it at once)."""

_logger = logging.getLogger("jobadapter")

# kombu's Redis classes are only partly typed: subclass and call them as Any.
_RedisChannel: Any = kombu_redis.Channel
_FLUSHES_REAUTH = hasattr(_RedisChannel, "_flush_brpop_reauth")
"""kombu 5.7 holds back re-authentication tokens while a fetch is in flight and sends them after
it (``_flush_brpop_reauth``); kombu 5.5 has no such step."""
_RedisQoS: Any = kombu_redis.QoS
_RedisTransport: Any = kombu_redis.Transport
_VirtualQoS: Any = virtual.QoS
_loads: Any = kombu_json.loads
_bytes_to_str: Any = kombu_encoding.bytes_to_str

DEFAULT_REJECTS_KEY = "jobadapter.celery.rejects"
DEFAULT_DEAD_LETTER_QUEUE = "jobadapter.dead"

# KEYS: unacked hash, unacked index, rejects list, then the queue keys in fetch order.
# ARGV: the queue name of each queue key (what a restore pushes the message back onto).
# A queue key holding another type than a list (an error reply) is skipped, not fatal.
_FETCH = """
local clock = redis.call('TIME')
local score = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
for i = 4, #KEYS do
    local item = redis.pcall('RPOP', KEYS[i])
    if type(item) == 'string' then
        local queue = ARGV[i - 3]
        local ok, message = pcall(cjson.decode, item)
        local tag = nil
        if ok and type(message) == 'table' and type(message.properties) == 'table' then
            tag = message.properties.delivery_tag
        end
        if type(tag) == 'string' and tag ~= '' then
            redis.call('HSET', KEYS[1], tag, '[' .. item .. ', "", ' .. cjson.encode(queue) .. ']')
            redis.call('ZADD', KEYS[2], score, tag)
            return {queue, item, tag}
        end
        redis.call('LPUSH', KEYS[3], item)
        return {queue, item}
    end
end
return false
"""


def _text(item: bytes | str) -> str:
    return item.decode("utf-8", "replace") if isinstance(item, bytes) else item


def reject_reason(item: bytes | str, error: BaseException | None = None) -> str:
    """Why a queue entry is not a message Celery could be handed."""
    if error is not None:
        return f"InvalidMessage: not a readable Celery message on Redis ({type(error).__name__}: {error})"
    try:
        json.loads(item)
    except (ValueError, RecursionError) as problem:
        return f"InvalidMessage: the Redis queue entry is not JSON ({type(problem).__name__}: {problem})"
    return "InvalidMessage: the Redis queue entry is not a kombu message (no properties.delivery_tag)"


FAILED_AT_HEADER = "jobadapter_failed_at"
"""The dead letter's header holding when it failed (epoch seconds), which the Redis expiry reads."""


def dead_letter_entry(payload: str, reason: str, queue: str, dead_letter_queue: str) -> str:
    """The kombu list entry of a dead letter, as `CeleryAdapter.dead_letter_publish` writes one."""
    document = {
        "payload": payload,
        "reason": reason,
        "task": "?",
        "task_id": None,
        "queue": queue,
        "failed_at": format_timestamp(datetime.now(timezone.utc)),
    }
    body = base64.b64encode(json.dumps(document).encode()).decode()
    return json.dumps(
        {
            "body": body,
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {FAILED_AT_HEADER: time()},
            "properties": {
                "body_encoding": "base64",
                "delivery_info": {"exchange": "", "routing_key": dead_letter_queue},
                "delivery_mode": 2,
                "delivery_tag": str(uuid.uuid4()),
                "priority": 0,
            },
        }
    )


def dead_letter_rejects(client: Any, rejects_key: str, dead_letter_queue: str) -> int:
    """Move every entry of a rejects list to the dead-letter queue; returns how many."""
    moved = 0
    for item in client.lrange(rejects_key, 0, -1):
        entry = dead_letter_entry(_text(item), reject_reason(item), "?", dead_letter_queue)
        with client.pipeline(transaction=True) as pipe:
            pipe.lpush(dead_letter_queue, entry).lrem(rejects_key, 1, item).execute()
        moved += 1
    return moved


class Channel(_RedisChannel):  # type: ignore[misc]
    """kombu's Redis channel with an atomic fetch in place of ``BRPOP`` + ``QoS.append``."""

    rejects_key = DEFAULT_REJECTS_KEY
    dead_letter_queue = DEFAULT_DEAD_LETTER_QUEUE
    from_transport_options = (*_RedisChannel.from_transport_options, "rejects_key", "dead_letter_queue")

    _waiting = False
    """True while the command in flight is the idle wait, not a fetch."""
    _idle_until = 0.0
    _wait_key: str | None = None
    """Where the idle wait blocks once the first queue key proved not to be a list."""
    _gave_back = False
    """True once this channel gave back what its worker held before it (its first fetch)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._last_connparams: dict[bool, dict[str, Any]] = {}  # before kombu's __init__ connects
        super().__init__(*args, **kwargs)
        self._recorded: set[str] = set()
        """Delivery tags the fetch script already wrote to the unacked bookkeeping."""

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        """kombu's connection parameters, or the last ones once the connection was released.

        When the broker goes away, Celery closes the connection, and the channel's
        close then restores its unacknowledged messages through a new client pool,
        built from ``self.connection.client``, which the release has already set
        to None: kombu raised AttributeError there, which no connection-error
        handler catches, and the worker exited. With the last parameters the
        restore (or a late ack) reaches Redis, or fails with a connection error
        that Celery handles.
        """
        try:
            params: dict[str, Any] = super()._connparams(asynchronous=asynchronous)
        except AttributeError:
            last = self._last_connparams.get(asynchronous)
            if last is None:
                raise
            return dict(last)
        self._last_connparams[asynchronous] = dict(params)
        return params

    def _key(self, name: str) -> str:
        return f"{self.global_keyprefix}{name}"

    def _give_back_undelivered(self) -> None:
        """Put back on their queues the entries of this worker's unacked hash that this
        channel does not hold.

        A consuming channel is new when the worker starts or after it reconnected.
        Then nothing in the worker's unacked hash is being held by it: an entry is a
        message whose fetch ran but whose reply the lost connection swallowed, or a
        message the worker was running when the broker went away, whose ack cannot
        reach Redis now. Neither would otherwise come back before
        ``visibility_timeout`` (an hour by default), since this worker is alive and
        its heartbeat keeps the lifeline's restore away. Each restore is kombu's
        own (one transaction per message); a job that was running is run again,
        as Celery redelivers any acks_late task whose ack was lost.
        """
        with self.conn_or_acquire() as client:
            tags = [_text(tag) for tag in client.hkeys(self.unacked_key)]
        held = self.qos._delivered
        given_back = [tag for tag in tags if tag not in held]
        for tag in given_back:
            self.qos.restore_by_tag(tag)
        if given_back:
            _logger.warning(
                "jobadapter: gave back %d job(s) fetched or running before the connection was lost",
                len(given_back),
            )
        self._gave_back = True

    def _brpop_start(self, timeout: float | None = None) -> None:
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        if not self._gave_back:
            self._give_back_undelivered()
        keys = [self._q_for_pri(queue, pri) for pri in self.priority_steps for queue in queues]
        connection = self.client.connection
        self._in_poll = connection
        self._brpop_sent_at = monotonic()
        wait = self._idle_until - monotonic()
        if wait > 0.001:
            self._waiting = True
            key = self._wait_key or self._key(keys[0])
            connection.send_command("BLMOVE", key, key, "RIGHT", "RIGHT", f"{wait:.3f}")
            return
        self._waiting = False
        names = [key.rsplit(self.sep, 1)[0] for key in keys]
        bookkeeping = [self.unacked_key, self.unacked_index_key, self.rejects_key]
        all_keys = [self._key(key) for key in (*bookkeeping, *keys)]
        connection.send_command("EVAL", _FETCH, len(all_keys), *all_keys, *names)

    def _brpop_read(self, **options: Any) -> bool:
        waiting = self._waiting
        try:
            try:
                reply = self.client.parse_response(self.client.connection, "EVAL", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            except self.ResponseError as error:
                if not waiting:
                    raise
                # The first queue key is not a list (WRONGTYPE): wait on a key of our own.
                _logger.error("jobadapter: the idle wait failed (%s); waiting on a private key", error)
                self._wait_key = self._key(f"jobadapter.celery.wait.{uuid.uuid4().hex}")
                self._idle_until = monotonic() + FETCH_WAIT
                raise Empty() from None
        finally:
            self._in_poll = None
            self._waiting = False
            if _FLUSHES_REAUTH:
                self._flush_brpop_reauth()
        if waiting:
            self._idle_until = 0.0
            raise Empty()
        if not reply:
            self._idle_until = monotonic() + FETCH_WAIT
            raise Empty()
        queue, item = _text(reply[0]), reply[1]
        self._queue_cycle.rotate(queue)
        if len(reply) < 3:
            self._dead_letter_reject(queue, item)
            return True
        tag = _text(reply[2])
        try:
            payload = _loads(_bytes_to_str(item))
            self.Message(payload, channel=self)  # what kombu will build: its body must decode
        except Exception as error:  # anything a hostile entry makes kombu raise
            self._dead_letter_recorded(queue, item, tag, error)
            return True
        self._recorded.add(tag)
        self.connection._deliver(payload, queue)
        return True

    def _dead_letter_reject(self, queue: str, item: bytes) -> None:
        entry = dead_letter_entry(_text(item), reject_reason(item), queue, self.dead_letter_queue)
        _logger.error("jobadapter: dead-lettered an unreadable entry of queue %s", queue)
        with self.conn_or_acquire() as client, client.pipeline(transaction=True) as pipe:
            pipe.lpush(self.dead_letter_queue, entry).lrem(self.rejects_key, 1, item).execute()

    def _dead_letter_recorded(self, queue: str, item: bytes, tag: str, error: BaseException) -> None:
        entry = dead_letter_entry(_text(item), reject_reason(item, error), queue, self.dead_letter_queue)
        _logger.error("jobadapter: dead-lettered an unreadable message of queue %s", queue)
        with self.conn_or_acquire() as client, client.pipeline(transaction=True) as pipe:
            pipe.lpush(self.dead_letter_queue, entry)
            pipe.hdel(self.unacked_key, tag).zrem(self.unacked_index_key, tag).execute()


class QoS(_RedisQoS):  # type: ignore[misc]
    """Skips the unacked write for a message the fetch script already recorded."""

    def append(self, message: Any, delivery_tag: str) -> None:
        recorded: set[str] = self.channel._recorded
        if delivery_tag in recorded:
            recorded.discard(delivery_tag)
            _VirtualQoS.append(self, message, delivery_tag)
            return
        super().append(message, delivery_tag)


Channel.QoS = QoS


class Transport(_RedisTransport):  # type: ignore[misc]
    """kombu's Redis transport with `Channel`; select it with ``broker_transport``."""

    Channel = Channel
