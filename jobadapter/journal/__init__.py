"""The job journal: a SQL table of every job's life, for the backends that do not keep one.

The broker stays the truth about where a job is; the journal remembers what
happened to it (enqueued, started where and when, finished how, with which
error or result), fed by the core's events in every process where it is
configured. Adapters answer operations from it where their backend keeps no
such data (see `jobadapter.operations`), ``Job.lookup`` and ``job.result()``
read it, and it holds the tombstones and paused queues that every worker
must see. docs/journal.md has the details.

Configure it with ``JOBADAPTER_JOURNAL=<SQLAlchemy URL>`` (read when the first
adapter is built, so ``jobadapter worker`` picks it up) or `configure`:
``sqlite:///jobs.db`` on one machine, ``postgresql+psycopg://…`` otherwise;
``?retention_days=N`` (default 7) keeps finished rows N days. This module
imports SQLAlchemy only when a journal is configured.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from jobadapter.operations import JobState

if TYPE_CHECKING:
    from jobadapter.journal.feed import Feed
    from jobadapter.journal.store import Journal
    from jobadapter.journal.writes import Sink

ENVIRONMENT_VARIABLE = "JOBADAPTER_JOURNAL"


@dataclass
class _Configured:
    """The journal of this process: where the feed's writes go (``sink``), and the store that
    reads (the sink itself, or built on first use when writes are forwarded)."""

    url: str
    sink: Sink
    feed: Feed
    store: Journal | None


_lock = threading.Lock()
_active: _Configured | None = None
_environment_read = False
_forwarding = False


def configure(url: str, *, writer_process: bool = False) -> Journal:
    """Journal every job of this process at ``url`` from now on (replacing any journal);
    returns it. Raises `ConfigurationError` for a URL it cannot use.

    ``writer_process``: event writes go to a writer process of their own instead of a thread
    of this one (`jobadapter.journal.forward`; what a worker that forks per job does)."""
    from jobadapter.journal.store import Journal

    if not writer_process:
        journal = Journal(url)
        _install(_Configured(url, journal, _feed(journal), journal))
        return journal
    from jobadapter.journal.forward import Forwarder

    forwarder = Forwarder(url)
    journal = Journal(url, writes=forwarder)
    _install(_Configured(url, forwarder, _feed(forwarder), journal))
    return journal


def forward_writes() -> None:
    """Have the journal configured from ``JOBADAPTER_JOURNAL`` in this process send its event
    writes to a writer process (`jobadapter.journal.forward`), keeping SQLAlchemy out of it:
    for a worker that forks per job, called before its adapter is built."""
    global _forwarding
    _forwarding = True


def active() -> Journal | None:
    """The journal this process writes to, or None."""
    current = _active
    if current is None or current.store is not None:
        return None if current is None else current.store
    from jobadapter.journal.store import Journal

    with _lock:
        if current.store is None:
            current.store = Journal(current.url, writes=current.sink)
    return current.store


def flush(timeout: float = 5.0) -> None:
    """Wait (bounded) until this process's journal writes, and those its forked children handed
    it, are in the store, or on their way in a forked process (which hands them to its parent).
    For a process that ends with os._exit, which runs no exit handler."""
    current = _active
    if current is not None:
        current.sink.flush(timeout)


def _feed(sink: Sink) -> Feed:
    from jobadapter.journal.feed import Feed

    return Feed(sink)


def _install(configured: _Configured) -> None:
    global _active
    with _lock:
        previous, _active = _active, configured
        configured.feed.install()
    if previous is not None:
        _shut(previous)


def _forward(url: str) -> None:
    from jobadapter.journal.forward import Forwarder

    forwarder = Forwarder(url)
    _install(_Configured(url, forwarder, _feed(forwarder), None))


def required(what: str) -> Journal:
    """The active journal, or `OperationUnsupported` saying that ``what`` needs one and how to
    configure it (an adapter whose broker keeps no such data calls this)."""
    from jobadapter.operations import OperationUnsupported

    current = active()
    if current is None:
        raise OperationUnsupported(
            f"{what} needs a journal: the broker keeps no such data; configure one with "
            f"{ENVIRONMENT_VARIABLE}=<SQLAlchemy URL> (in the workers too) or jobadapter.journal.configure"
        )
    return current


def record_discarded(job_ids: Iterable[str]) -> None:
    """Tell the journal, where there is one, that an operator discarded these jobs: they are
    over (finished, outcome "discarded by an operator", as a tombstoned message that reaches a
    worker reads), so no listing shows them waiting."""
    from jobadapter.execution import DISCARDED_BY_OPERATOR

    current = active()
    if current is not None:
        now = datetime.now(timezone.utc)
        for job_id in job_ids:
            current.record(job_id, state=JobState.FINISHED, outcome=DISCARDED_BY_OPERATOR, finished_at=now)


def close() -> None:
    """Stop journaling in this process: unsubscribe, flush (bounded) and release the store."""
    global _active
    with _lock:
        previous, _active = _active, None
    if previous is not None:
        _shut(previous)


def install_from_environment() -> None:
    """Configure the journal from ``JOBADAPTER_JOURNAL`` once per process, unless `configure`
    was called first (`jobadapter.config` calls this when it builds an adapter)."""
    global _environment_read
    if _environment_read:
        return
    with _lock:
        if _environment_read:
            return
        _environment_read = True
        url = os.environ.get(ENVIRONMENT_VARIABLE)
        if not url or _active is not None:
            return
    if _forwarding:
        _forward(url)
    else:
        configure(url)


def _shut(configured: _Configured) -> None:
    configured.feed.uninstall()
    configured.sink.close()
    if configured.store is not None and configured.store is not configured.sink:
        configured.store.close()
