"""The native Dramatiq broker and actors of ``worker_drain.py``: ``dramatiq _native_dramatiq``."""

from __future__ import annotations

import os

import dramatiq
from _drain import QUEUE, drained, pinged
from dramatiq.broker import Broker
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker


def make_broker(url: str) -> Broker:
    """Dramatiq's own broker for ``url`` (amqp:// or redis://), with its default middleware."""
    if url.startswith("amqp"):
        return RabbitmqBroker(url=url)
    return RedisBroker(url=url)  # type: ignore[no-untyped-call]


broker = make_broker(os.environ.get("DRAIN_BROKER", "redis://127.0.0.1:6379/12"))
dramatiq.set_broker(broker)
dramatiq.actor(actor_name="bench_drain", queue_name=QUEUE, max_retries=0)(drained)
dramatiq.actor(actor_name="bench_ping", queue_name=QUEUE, max_retries=0)(pinged)
