"""Enqueue after commit: a job enqueued inside a database transaction waits for its commit.

A job enqueued inside a transaction can run before the transaction commits (the worker
then reads rows that are not there yet), or run although the transaction rolled back.
With ``enqueue_after_transaction_commit`` (on a job class, or for every class through
``configure(enqueue_after_transaction_commit=True)``), ``perform_later`` hands the enqueue
to the open transaction, which runs it when it commits and drops it when it rolls back;
outside a transaction the job is enqueued at once, as always.

The core knows no database: an integration registers a `Deferrer` that knows its
framework's transactions (``jobadapter.django`` for Django's ``transaction.on_commit``,
``jobadapter.sqlalchemy`` for a ``Session``'s commit).
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from jobadapter import defaults

if TYPE_CHECKING:
    from jobadapter.job import Job

Deferrer = Callable[["Sequence[Job]", Callable[[], object]], bool]
"""``(jobs, enqueue) -> bool``: when a transaction of its framework is open, arrange for
``enqueue()`` to run when it commits (and never if it rolls back) and return True;
return False to leave the jobs to the next deferrer, or to be enqueued at once."""

_deferrers: tuple[Deferrer, ...] = ()
_lock = threading.Lock()
_committing: contextvars.ContextVar[bool] = contextvars.ContextVar("jobadapter_committing", default=False)


def wanted(job_class: type[Job]) -> bool:
    """Whether ``job_class``'s enqueues wait for the commit of an open transaction."""
    declared = job_class.enqueue_after_transaction_commit
    return defaults.active.enqueue_after_transaction_commit if declared is None else declared


def register(deferrer: Deferrer) -> Callable[[], None]:
    """Add ``deferrer`` (once; asked in registration order); returns a function that removes it."""
    global _deferrers
    with _lock:
        if deferrer not in _deferrers:
            _deferrers += (deferrer,)

    def unregister() -> None:
        global _deferrers
        with _lock:
            _deferrers = tuple(each for each in _deferrers if each is not deferrer)

    return unregister


def defer(jobs: Sequence[Job], enqueue: Callable[[], object]) -> bool:
    """Hand ``enqueue`` to the open transaction if a registered deferrer finds one; False when
    none does (the caller enqueues now), and always while deferred enqueues run at commit."""
    if _committing.get() or not _deferrers:
        return False
    committed = _at_commit(enqueue)
    return any(deferrer(jobs, committed) for deferrer in _deferrers)


def _at_commit(enqueue: Callable[[], object]) -> Callable[[], None]:
    def run() -> None:
        token = _committing.set(True)
        try:
            enqueue()
        finally:
            _committing.reset(token)

    return run
