"""What the jobs of ``worker_drain.py`` do, on both sides: leave a trace in Redis, nothing else.

Imported by the worker processes (through ``_drain_jobs``, ``rq worker -c _drain``,
and the native Celery and Dramatiq modules) and by the driver. It imports no
more than Redis, so that a native worker that imports it per job (RQ's work
horse, when the parent did not) pays little for it. Every job only
leaves a trace in Redis, the same way on both sides, so "finished" is detected
alike and cheaply:

- a drain job INCRs a counter; the first one also records the time it started,
  the one that brings the counter to ``DRAIN_TARGET`` pushes the time it finished;
- a ping job pushes the time it started (enqueue-to-start latency).

The worker processes learn the keys, the queue and the target from ``DRAIN_*``
environment variables set by the driver (a worker's command line cannot pass them).
"""

from __future__ import annotations

import os
import time

from redis import Redis

REDIS_URL = os.environ.get("DRAIN_REDIS", "redis://127.0.0.1:6379/12")
PREFIX = os.environ.get("DRAIN_PREFIX", "bench")
QUEUE = os.environ.get("DRAIN_QUEUE", f"{PREFIX}-default")
TARGET = int(os.environ.get("DRAIN_TARGET", "0"))
COUNT_KEY = f"{PREFIX}:count"
FIRST_KEY = f"{PREFIX}:first"
LAST_KEY = f"{PREFIX}:last"
STARTED_KEY = f"{PREFIX}:started"

_client = Redis.from_url(REDIS_URL)
"""One client per process; redis-py opens a fresh connection in a forked child (RQ's work horse)."""


def drained() -> None:
    """The body of a drain job: count it, and time the first and the last."""
    count = _client.incr(COUNT_KEY)
    if count == 1:
        _client.set(FIRST_KEY, repr(time.time()))
    if count == TARGET:
        _client.rpush(LAST_KEY, repr(time.time()))


def pinged() -> None:
    """The body of a ping job: when it started."""
    _client.rpush(STARTED_KEY, repr(time.time()))


def native_drain() -> None:
    """RQ's no-op job, by dotted name ``_drain.native_drain``."""
    drained()


def native_ping() -> None:
    """RQ's ping job, by dotted name ``_drain.native_ping``."""
    pinged()
