"""How ``jobadapter worker`` writes its log lines: from a listener thread, never a job's thread.

`queued_output` configures logging as ``logging.basicConfig(level=…, format=…)``
would, but the root logger gets a queue handler, and a
`logging.handlers.QueueListener` thread formats the records and writes them to
stderr. A job's thread then only makes a record and queues it: it never waits
on stderr (a terminal, a pipe to a log collector), and, for the records the
jobadapter lines make (immutable arguments only), does not even format them.

A forked child (RQ's work horse, Celery's pool processes, Dramatiq's worker
processes) has no listener thread, and often ends with ``os._exit``, which
would lose whatever it queued: right after a fork, the child's root logger
writes to stderr directly instead.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import queue
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from jobadapter.logging import IMMUTABLE_ARGUMENT_TYPES

_installed: tuple[logging.Handler, logging.Handler] | None = None
"""The root's queue handler and the stream handler behind it, while `queued_output` runs."""
_fork_hook_registered = False
POLL_INTERVAL = 0.05
"""Seconds between two looks of the listener at its queue: how late a line may be written."""


class DeferringQueueHandler(logging.handlers.QueueHandler):
    """A queue handler that leaves the formatting to the listener when that is safe.

    `logging.handlers.QueueHandler` formats every record in the logging thread,
    then copies it (its arguments might change, or not pickle, before the
    listener gets to them). A record whose message is a string and whose
    arguments are all immutable reads the same later: it is queued as a cheap
    copy, unformatted. Any other record (an exception, a mutable argument) is
    prepared as ``QueueHandler`` prepares it.
    """

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        if _immutable(record):
            deferred: logging.LogRecord = logging.LogRecord.__new__(logging.LogRecord)
            deferred.__dict__.update(record.__dict__)  # the listener's formatter writes to its own copy
            return deferred
        prepared: logging.LogRecord = super().prepare(record)
        return prepared


def _immutable(record: logging.LogRecord) -> bool:
    """Whether ``record`` will format the same in another thread later (a loop, not ``all()``:
    this runs for every record)."""
    if record.exc_info is not None or record.stack_info is not None or type(record.msg) is not str:
        return False
    if not isinstance(record.args, tuple):
        return False
    for value in record.args:  # noqa: SIM110
        if type(value) not in IMMUTABLE_ARGUMENT_TYPES:
            return False
    return True


class BatchingQueueListener(logging.handlers.QueueListener):
    """A queue listener that looks at its queue every `POLL_INTERVAL` seconds, not on every record.

    `logging.handlers.QueueListener` blocks on the queue, so every record wakes
    its thread, which then takes the GIL from the thread that logged: in a
    worker that logs two lines per job, a thread switch per line. Polling
    lets records pile up and writes them in one go, while the worker threads
    wait on their broker.
    """

    def __init__(self, records: queue.SimpleQueue[logging.LogRecord], *handlers: logging.Handler) -> None:
        super().__init__(records, *handlers)
        self._records = records

    def dequeue(self, block: bool) -> logging.LogRecord:
        while True:
            try:
                record = self._records.get_nowait()
            except queue.Empty:
                if not block:
                    raise
                time.sleep(POLL_INTERVAL)
            else:
                return record


@contextmanager
def queued_output(level: str | int, format: str) -> Iterator[None]:
    """Log to stderr at ``level`` in ``format`` through a listener thread, while the block runs.

    Like ``basicConfig``, it leaves a root logger that already has handlers alone.
    """
    global _installed, _fork_hook_registered
    root = logging.getLogger()
    if root.handlers:
        yield
        return
    # sys.stderr as it is now: Celery later replaces sys.stderr with a proxy that logs.
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(logging.Formatter(format))
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    handler = DeferringQueueHandler(records)
    listener = BatchingQueueListener(records, stream)
    if not _fork_hook_registered:
        os.register_at_fork(after_in_child=_write_directly)
        _fork_hook_registered = True
    owner = os.getpid()
    root.setLevel(level)
    root.addHandler(handler)
    _installed = (handler, stream)
    listener.start()
    try:
        yield
    finally:
        _installed = None
        root.removeHandler(handler)
        root.removeHandler(stream)
        if os.getpid() == owner:
            listener.stop()  # writes what is still queued


def _write_directly() -> None:
    """In a forked child: swap the root's queue handler for the stream handler behind it."""
    if _installed is None:
        return
    handler, stream = _installed
    root = logging.getLogger()
    if handler in root.handlers:
        root.removeHandler(handler)
        root.addHandler(stream)


BACKEND_START_UP_LOGGERS = (
    "rq.worker",
    "rq.scheduler",
    "rq.worker_pool",
    "celery.apps.worker",
    "celery.worker.consumer.connection",
)
"""Loggers whose INFO lines repeat what jobadapter's own start-up and job lines say (RQ writes
dozens per queue and priority band; Celery its connection and its "ready")."""


def quiet_backend_start_up() -> None:
    """Below DEBUG, show the backends' own lines from WARNING up only, so that a worker starts
    with the same few lines on every adapter (`announce_start`, `announce_ready`). A filter,
    not a level: RQ sets its loggers' levels again as each worker starts."""
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        for name in BACKEND_START_UP_LOGGERS:
            logging.getLogger(name).addFilter(_warnings_and_up)


def _warnings_and_up(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING


def announce_start(adapter_name: str, url: str, queues: list[str], concurrency: int, jobs: list[str]) -> None:
    """The first lines of every worker: adapter and broker (``url`` already redacted), queues,
    job classes and concurrency."""
    logger = logging.getLogger("jobadapter")
    logger.info("Starting %s worker on %s (concurrency %d)", adapter_name, url, concurrency)
    logger.info("Queues: %s", ", ".join(queues))
    logger.info(
        "Jobs: %s",
        ", ".join(jobs) if jobs else "none registered (pass the modules that define them to --app)",
    )


def announce_ready(adapter_name: str) -> None:
    """The line an adapter's worker logs once it consumes its queues."""
    logging.getLogger("jobadapter").info("%s worker ready", adapter_name)
