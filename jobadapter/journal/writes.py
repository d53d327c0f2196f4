"""A journal event write, without the SQL store: what the feed produces, the relay's pipes
and a writer process carry, and `store.Journal` writes.

Nothing here imports SQLAlchemy: a worker that forks a process per job forwards its
writes (`jobadapter.journal.forward`) and must not load the database client at all.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple, Protocol

EXECUTION = "execution"
"""The kind of write that adds a row to ``jobadapter_executions`` (keyed by job and execution)."""

DATETIME_COLUMNS = frozenset({"enqueued_at", "scheduled_at", "started_at", "finished_at", "updated_at"})
"""The columns of the jobs and executions tables that hold timestamps (the schema's tests check
the list), wherever a row travels as JSON (a pipe, a PostgreSQL batch) as ISO 8601 text."""


class Write(NamedTuple):
    """One row write: a kind (``enqueued``, ``started``, ``finished`` or `EXECUTION`) and the
    row's values."""

    kind: str
    values: dict[str, Any]


class Sink(Protocol):
    """Where the feed hands its writes: the store itself (`store.Journal`) or a forwarder to a
    writer process (`forward.Forwarder`)."""

    @property
    def forked(self) -> bool:
        """Whether this process was forked from the one that configured the journal."""
        ...

    def submit(self, write: Write) -> None:
        """Take ``write`` without doing I/O on the caller's behalf (but in a forked child)."""
        ...

    def write_pending(self) -> None:
        """In a forked child, make sure what it submitted has left it (it may end with os._exit)."""
        ...

    def flush(self, timeout: float = 5.0) -> None:
        """Wait (bounded) until the submitted writes are in the store."""
        ...

    def close(self, timeout: float = 5.0) -> None:
        """Flush (bounded) and stop."""
        ...


def with_iso_timestamps(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` as JSON can carry it: its timestamps as ISO 8601 text."""
    return {
        name: value.isoformat() if name in DATETIME_COLUMNS and isinstance(value, datetime) else value
        for name, value in row.items()
    }
