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
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from jobadapter.operations import JobState

if TYPE_CHECKING:
    from jobadapter.journal.feed import Feed
    from jobadapter.journal.store import Journal

ENVIRONMENT_VARIABLE = "JOBADAPTER_JOURNAL"

_lock = threading.Lock()
_active: tuple[Journal, Feed] | None = None
_environment_read = False


def configure(url: str) -> Journal:
    """Journal every job of this process at ``url`` from now on (replacing any journal);
    returns it. Raises `ConfigurationError` for a URL it cannot use."""
    from jobadapter.journal.feed import Feed
    from jobadapter.journal.store import Journal

    journal = Journal(url)
    feed = Feed(journal)
    global _active
    with _lock:
        previous, _active = _active, (journal, feed)
        feed.install()
    if previous is not None:
        _shut(previous)
    return journal


def active() -> Journal | None:
    """The journal this process writes to, or None."""
    current = _active
    return None if current is None else current[0]


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
    configure(url)


def _shut(pair: tuple[Journal, Feed]) -> None:
    journal, feed = pair
    feed.uninstall()
    journal.close()
