"""Enqueue after commit for SQLAlchemy: jobs enqueued in a ``Session``'s transaction wait for it.

::

    with jobadapter.sqlalchemy.transaction_of(session):
        session.add(order)
        ShipOrder.perform_later(order.id)      # enqueued when session commits, dropped on rollback
        session.commit()

or, for an application with one session per request or thread (a ``scoped_session``)::

    jobadapter.sqlalchemy.find_session_with(lambda: Session() if Session.registry.has() else None)

Only job classes that ask (``enqueue_after_transaction_commit = True``, or the default set by
``jobadapter.configure(enqueue_after_transaction_commit=True)``) wait. A session with no
transaction begun enqueues at once. A job enqueued inside a savepoint (``begin_nested``)
that rolls back is dropped with it; the others run after the outermost commit, in the order
they were enqueued.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

from jobadapter import transactions
from jobadapter.job import Job

SessionFinder = Callable[[], "Session | None"]
_PENDING = "jobadapter_after_commit"
"""The key in ``session.info`` of the enqueues waiting for the session's commit."""

_current: contextvars.ContextVar[Session | None] = contextvars.ContextVar("jobadapter_session", default=None)
_finders: list[SessionFinder] = []
_lock = threading.Lock()
_installed = False


@dataclass(frozen=True)
class _Waiting:
    transaction: SessionTransaction
    """The innermost transaction open when the job was enqueued: its rollback drops the job."""
    enqueue: Callable[[], object]


@contextmanager
def transaction_of(session: Session) -> Iterator[Session]:
    """Inside the block, jobs that wait for a commit wait for ``session``'s."""
    _install()
    token = _current.set(session)
    try:
        yield session
    finally:
        _current.reset(token)


def find_session_with(finder: SessionFinder) -> Callable[[], None]:
    """Ask ``finder()`` for the current session when no `transaction_of` block names one (None:
    there is none); returns a function that forgets the finder."""
    _install()
    with _lock:
        _finders.append(finder)

    def forget() -> None:
        with _lock:
            if finder in _finders:
                _finders.remove(finder)

    return forget


def defer_to_commit(jobs: Sequence[Job], enqueue: Callable[[], object]) -> bool:
    """The `jobadapter.transactions.Deferrer` for SQLAlchemy sessions."""
    session = _session()
    if session is None or not session.in_transaction():
        return False
    innermost = session.get_nested_transaction() or session.get_transaction()
    if innermost is None:
        return False
    session.info.setdefault(_PENDING, []).append(_Waiting(innermost, enqueue))
    return True


def _session() -> Session | None:
    named = _current.get()
    if named is not None:
        return named
    for finder in list(_finders):
        found = finder()
        if found is not None:
            return found
    return None


def _install() -> None:
    global _installed
    with _lock:
        if _installed:
            return
        event.listen(Session, "after_commit", _after_commit)
        event.listen(Session, "after_soft_rollback", _after_soft_rollback)
        event.listen(Session, "after_transaction_end", _after_transaction_end)
        transactions.register(defer_to_commit)
        _installed = True


def _after_commit(session: Session) -> None:
    if session.get_nested_transaction() is not None:
        return  # a savepoint released: its jobs now wait for the enclosing transaction
    for waiting in session.info.pop(_PENDING, []):
        waiting.enqueue()


def _after_soft_rollback(session: Session, previous_transaction: SessionTransaction) -> None:
    pending: list[_Waiting] = session.info.get(_PENDING, [])
    pending[:] = [each for each in pending if not _inside(each.transaction, previous_transaction)]


def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(_PENDING, None)  # closed without a commit: nothing is enqueued


def _inside(transaction: SessionTransaction | None, outer: SessionTransaction) -> bool:
    while transaction is not None:
        if transaction is outer:
            return True
        transaction = transaction.parent
    return False
