"""The journal's tables, in SQLAlchemy Core (no ORM: rows are written in bulk by one thread).

``jobadapter_jobs`` holds one row per job, upserted as its events arrive;
``jobadapter_executions`` one row per execution that ended.
Events reach the store out of order across processes (the enqueuing process
and the worker each flush their own buffer), so every row carries ``step``,
the position in the job's life of the event that last wrote it: an
execution's enqueue, start and end are ``3e``, ``3e + 1`` and ``3e + 2``
(``e`` = executions before it). An event older than the row's step does not
overwrite it. An operator's write (`Journal.record`) sets ``step`` to -1, so
whatever the job does next is recorded.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

jobs = sa.Table(
    "jobadapter_jobs",
    metadata,
    sa.Column("job_id", sa.String, primary_key=True),
    sa.Column("job_class", sa.String, nullable=False),
    sa.Column("queue", sa.String, nullable=False),
    sa.Column("priority", sa.Integer),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("arguments", sa.JSON, nullable=False),
    sa.Column("keyword_arguments", sa.JSON, nullable=False),
    sa.Column("search", sa.Text, nullable=False),
    sa.Column("enqueued_at", sa.DateTime(timezone=True)),
    sa.Column("scheduled_at", sa.DateTime(timezone=True)),
    sa.Column("started_at", sa.DateTime(timezone=True)),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("executions", sa.Integer, nullable=False),
    sa.Column("outcome", sa.String(32)),
    sa.Column("error_class", sa.String),
    sa.Column("error_message", sa.Text),
    sa.Column("error_traceback", sa.Text),
    sa.Column("worker", sa.String),
    sa.Column("provider_job_id", sa.String),
    sa.Column("result", sa.JSON),
    sa.Column("has_result", sa.Boolean, nullable=False),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    # Listings page by (enqueued_at, job_id) within a state: with job_id in the index, a page
    # deep in a long list is a walk of the index, not a sort.
    sa.Index("jobadapter_jobs_state_queue_enqueued_id", "state", "queue", "enqueued_at", "job_id"),
    sa.Index("jobadapter_jobs_state_enqueued_id", "state", "enqueued_at", "job_id"),
    sa.Index("jobadapter_jobs_listing", "state", "enqueued_at", "job_id", "job_class", "search"),
    sa.Index("jobadapter_jobs_state_finished", "state", "finished_at"),
)

ONLY_ON: dict[str, str] = {
    "jobadapter_jobs_state_enqueued_id": "postgresql",
    "jobadapter_jobs_listing": "sqlite",
}
"""Indexes made on one dialect only. On SQLite the listing index also holds the class and the
search text, so a filter that matches few of 100,000 rows is checked in the index instead of
row by row in the table (5x faster); PostgreSQL refuses index entries over about 2.7 kB, which
long arguments would exceed, so it gets the narrow index."""
for _index in jobs.indexes:
    if _index.name in ONLY_ON:
        _index.ddl_if(dialect=ONLY_ON[_index.name])


def wanted_indexes(dialect: str) -> list[sa.Index]:
    """The job table's indexes for ``dialect`` (`Journal.ensure_schema` adds missing ones to a
    journal made by an earlier version)."""
    return [index for index in jobs.indexes if ONLY_ON.get(str(index.name), dialect) == dialect]


executions = sa.Table(
    "jobadapter_executions",
    metadata,
    sa.Column("job_id", sa.String, primary_key=True),
    sa.Column("started_at", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("execution", sa.Integer, nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("outcome", sa.String(32)),
    sa.Column("worker", sa.String),
    sa.Column("error_class", sa.String),
    sa.Column("error_message", sa.Text),
    sa.Column("error_traceback", sa.Text),
    sa.Index("jobadapter_executions_finished", "finished_at"),
)
"""One row per execution that ended, written beside the job's row: the job's row holds the
latest execution only, this keeps each one's times, outcome and error (a job's history).
Keyed by start time, not by the envelope's ``executions`` count (kept in ``execution``):
an operator's retry publishes the failed envelope again, so that count repeats."""

tombstones = sa.Table(
    "jobadapter_tombstones",
    metadata,
    sa.Column("key", sa.String, primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

paused = sa.Table(
    "jobadapter_paused",
    metadata,
    sa.Column("queue", sa.String, primary_key=True),
    sa.Column("paused_at", sa.DateTime(timezone=True), nullable=False),
)
