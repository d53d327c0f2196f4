"""The writer's hot path: a batch of event rows as plain SQL upserts.

Through SQLAlchemy's executemany a row cost more CPU than the enqueue it
records (parameter processing per value, and on psycopg one pipeline round
per row), spent on the writer thread beside the application's own. Here the
statement text is built once per shape: SQLite's ``executemany`` takes the
rows as plain tuples and loops in C, and PostgreSQL takes the whole batch as
one JSON document that ``json_populate_recordset`` turns back into rows of
the table's own types (one parameter, so the driver parses a short statement
once instead of adapting every value of every row).

Each statement inserts the row, or updates the columns of its kind of write
(`UPDATED`) when the event is not older than the row (``step``, see `schema`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from jobadapter.journal import schema, writes

_TABLE = schema.jobs.name
_JSON = frozenset(column.name for column in schema.jobs.c if isinstance(column.type, sa.JSON))
OWN_COLUMNS = (
    "job_id",
    "job_class",
    "queue",
    "priority",
    "arguments",
    "keyword_arguments",
    "enqueued_at",
    "scheduled_at",
    "executions",
    "step",
    "updated_at",
)
_ERROR = ("outcome", "error_class", "error_message", "error_traceback")
UPDATED: Mapping[str, tuple[str, ...]] = {
    "enqueued": ("state", *_ERROR),
    "started": ("state", "started_at", "finished_at", "worker", *_ERROR, "has_result", "result"),
    "finished": ("state", "finished_at", "worker", *_ERROR, "has_result", "result"),
}
"""Per kind of write, the columns (besides the job's own, `OWN_COLUMNS`) an upsert updates when
it is not older than the row (see `schema`). Every kind also inserts ``search`` and ``has_result``."""


def _json(value: Any) -> str:
    if value is None:
        return "null"  # as SQLAlchemy's JSON type stores None
    if value == [] or value == {}:
        return "[]" if isinstance(value, list) else "{}"
    return json.dumps(value, separators=(",", ":"))


class BatchWriter:
    """Writes batches of one kind of row for one dialect (SQLite or PostgreSQL)."""

    def __init__(self, dialect: sa.engine.Dialect) -> None:
        self._postgresql = dialect.name == "postgresql"
        self._statements: dict[tuple[str, tuple[str, ...]], str] = {}
        processor = sa.DateTime(timezone=True).dialect_impl(dialect).bind_processor(dialect)
        self._datetime: Callable[[Any], Any] | None = processor

    def write(self, connection: Connection, kind: str, rows: Sequence[dict[str, Any]]) -> None:
        columns = tuple(rows[0])
        if self._postgresql:
            document = json.dumps([writes.with_iso_timestamps(row) for row in rows], separators=(",", ":"))
            connection.exec_driver_sql(self._statement(kind, columns), (document,))
        else:
            connection.exec_driver_sql(
                self._statement(kind, columns), [self._values(columns, row) for row in rows]
            )

    def _values(self, columns: tuple[str, ...], row: dict[str, Any]) -> tuple[Any, ...]:
        converted = []
        for name in columns:
            value = row.get(name)
            if name in _JSON:
                value = _json(value)
            elif value is not None and name in writes.DATETIME_COLUMNS and self._datetime is not None:
                value = self._datetime(value)
            converted.append(value)
        return tuple(converted)

    def _statement(self, kind: str, columns: tuple[str, ...]) -> str:
        key = (kind, columns)
        text = self._statements.get(key)
        if text is None:
            text = self._statements[key] = self._build(kind, columns)
        return text

    def _build(self, kind: str, columns: tuple[str, ...]) -> str:
        names = ", ".join(columns)
        if self._postgresql:
            # The whole batch is one JSON parameter, read back as rows of the table's own types.
            rows = f"SELECT {names} FROM json_populate_recordset(NULL::{_TABLE}, %s::json)"
        else:
            rows = f"VALUES ({', '.join('?' for _ in columns)})"
        newer = f"{_TABLE}.step <= excluded.step"
        assignments = [
            f"{name} = CASE WHEN {newer} THEN excluded.{name} ELSE {_TABLE}.{name} END"
            for name in (*OWN_COLUMNS[1:], "search", *UPDATED[kind])
            if name not in ("step", "updated_at")
        ]
        assignments.append(f"step = CASE WHEN {newer} THEN excluded.step ELSE {_TABLE}.step END")
        assignments.append("updated_at = excluded.updated_at")
        if kind == "enqueued":
            kept = f"COALESCE(excluded.provider_job_id, {_TABLE}.provider_job_id)"
            assignments.append(f"provider_job_id = {kept}")
        upsert = f"ON CONFLICT (job_id) DO UPDATE SET {', '.join(assignments)}"
        return f"INSERT INTO {_TABLE} ({names}) {rows} {upsert}"
