"""Enqueue after commit for Django: a job enqueued inside ``transaction.atomic()`` waits for
``transaction.on_commit``, on the right database alias.

The alias is the database of a model passed to the job, when that database is in a
transaction (the job most likely reads what that transaction wrote); else ``default`` when
it is in one; else the one database in a transaction. Savepoints work as Django's own
``on_commit`` does: a job enqueued in a rolled-back savepoint is dropped with it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import chain

from django.db import DEFAULT_DB_ALIAS, connections, models, transaction

from jobadapter.job import Job


def defer_to_commit(jobs: Sequence[Job], enqueue: Callable[[], object]) -> bool:
    """The `jobadapter.transactions.Deferrer` for Django's database transactions."""
    alias = _alias(jobs)
    if alias is None:
        return False
    transaction.on_commit(enqueue, using=alias)
    return True


def _alias(jobs: Sequence[Job]) -> str | None:
    open_here = [alias for alias in connections if connections[alias].in_atomic_block]
    if not open_here:
        return None
    for job in jobs:
        for value in chain(job.arguments, job.keyword_arguments.values()):
            if isinstance(value, models.Model) and value._state.db in open_here:
                return value._state.db
    return DEFAULT_DB_ALIAS if DEFAULT_DB_ALIAS in open_here else open_here[0]
