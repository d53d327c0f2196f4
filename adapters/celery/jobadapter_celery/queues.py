"""RabbitMQ queues that another application declared: used as they are, never redeclared.

RabbitMQ refuses a declaration whose arguments differ from the queue's
(``PRECONDITION_FAILED - inequivalent arg 'x-max-priority'``) and closes the
channel: a worker or a publisher that declares such a queue crashes. That
happens as soon as jobadapter's own app (which declares ``x-max-priority``)
meets a queue an existing Celery app declared without it, or an attached app
without priorities meets a queue jobadapter declared with them.

So, the first time this process uses a queue, it declares the queue the way
its app would, on a channel of its own. When RabbitMQ refuses, the queue
exists with other arguments: the app is told to publish to it through the
default exchange and to consume it without declaring anything, and the queue
keeps its own arguments (priorities are off on it if it has none; a warning
says so once, and the adapter's notes list it).
"""

from __future__ import annotations

import logging
import threading
from contextlib import suppress
from typing import Any

from amqp.exceptions import AMQPError, PreconditionFailed  # type: ignore[import-untyped]
from kombu.entity import Exchange, Queue
from kombu.exceptions import KombuError

_logger = logging.getLogger("jobadapter")


class ExistingQueues:
    """Fits each queue name to the queue RabbitMQ already holds (once per name and process)."""

    def __init__(self, app: Any) -> None:
        self._app = app
        self._fitted: set[str] = set()
        self._lock = threading.Lock()
        self.foreign: set[str] = set()
        """Queues declared elsewhere with other arguments, used as they are."""

    def fit(self, name: str) -> None:
        if name in self._fitted:
            return
        with self._lock:
            if name in self._fitted:
                return
            try:
                alike = self._declares_alike(name)
            except (OSError, KombuError, AMQPError):
                return  # the broker is down: the publish reports it, and the next use looks again
            if not alike:
                # The default exchange routes by queue name: no exchange or binding of ours is needed.
                queue: Any = Queue(name, Exchange(""), routing_key=name, no_declare=True)  # type: ignore[no-untyped-call]
                self._app.amqp.queues[name] = queue
                self.foreign.add(name)
                _logger.warning(
                    "Queue %s was declared by another application with other arguments (x-max-priority): "
                    "it is used as it is, without priorities if it has none",
                    name,
                )
            self._fitted.add(name)

    def _declares_alike(self, name: str) -> bool:
        """Declare ``name`` as the app would (creating it if it is missing); False if RabbitMQ
        refuses because the queue exists with other arguments."""
        top = self._app.conf.task_queue_max_priority
        arguments = {"x-max-priority": top} if top is not None else None
        with self._app.connection_for_write() as connection:
            channel = connection.channel()
            try:
                channel.queue_declare(queue=name, durable=True, auto_delete=False, arguments=arguments)
            except PreconditionFailed:
                return False
            finally:
                with suppress(Exception):
                    channel.close()
        return True
