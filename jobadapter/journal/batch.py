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
from datetime import datetime
from operator import itemgetter
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from jobadapter.journal import schema, writes
from jobadapter.operations import arguments_text

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
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)  # as `arguments_text`


def search_text(arguments: Sequence[Any], keyword_arguments: Mapping[str, Any]) -> str:
    """What a search looks in: the arguments' text (`arguments_text`), lower-cased."""
    return arguments_text(arguments, keyword_arguments).lower()


def _iso(value: Any) -> Any:
    """How a batch's JSON document carries a timestamp (the only values JSON cannot)."""
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"a journal row cannot hold {type(value).__name__}")


class BatchWriter:
    """Writes batches of one kind of row for one dialect (SQLite or PostgreSQL)."""

    def __init__(self, dialect: sa.engine.Dialect) -> None:
        self._postgresql = dialect.name == "postgresql"
        self._statements: dict[tuple[str, tuple[str, ...]], str] = {}
        processor = sa.DateTime(timezone=True).dialect_impl(dialect).bind_processor(dialect)
        self._datetime: Callable[[Any], Any] | None = processor

    def write(self, connection: Connection, kind: str, rows: Sequence[dict[str, Any]]) -> None:
        """Upsert ``rows`` (one kind's, all with the same keys); each gets its ``search`` text
        here, unless it brings one."""
        columns = (*(name for name in rows[0] if name != "search"), "search")
        if self._postgresql:
            for row in rows:
                if "search" not in row:
                    row["search"] = search_text(row["arguments"], row["keyword_arguments"])
            document = json.dumps(rows, separators=(",", ":"), ensure_ascii=False, default=_iso)
            connection.exec_driver_sql(self._statement(kind, columns), (document,))
        else:
            connection.exec_driver_sql(self._statement(kind, columns), self._tuples(columns, rows))

    def _tuples(self, columns: tuple[str, ...], rows: Sequence[dict[str, Any]]) -> list[tuple[Any, ...]]:
        """SQLite's parameters: the values in column order, JSON as text, timestamps as
        SQLAlchemy stores them, and the search text made from the arguments' JSON (not
        serialized a second time)."""
        own = columns[:-1]
        take = itemgetter(*own)
        encoded = [index for index, name in enumerate(own) if name in _JSON]
        moments = [index for index, name in enumerate(own) if name in writes.DATETIME_COLUMNS]
        arguments, keywords = own.index("arguments"), own.index("keyword_arguments")
        convert = self._datetime
        tuples = []
        for row in rows:
            values = list(take(row))
            for index in encoded:
                values[index] = _json(values[index])
            if convert is not None:
                for index in moments:
                    if values[index] is not None:
                        values[index] = convert(values[index])
            values.append(row.get("search") or f"[{values[arguments]},{values[keywords]}]".lower())
            tuples.append(tuple(values))
        return tuples

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
