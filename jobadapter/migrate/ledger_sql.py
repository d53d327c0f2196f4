"""The migration ledger as a SQL table (SQLAlchemy): in the journal's database, or a file.

``jobadapter_migrate_ledger(move, job_id, written_at, state, envelope, error)``:
one row per job a move published and did not delete yet (``envelope`` NULL),
or kept before deleting it (the whole job). See `jobadapter.migrate.ledger`.
SQLAlchemy is imported only here, when a move uses this ledger.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from jobadapter.envelope import Envelope
from jobadapter.errors import ConfigurationError
from jobadapter.migrate.ledger import Kept, Ledger, error_text, kept_job
from jobadapter.operations import JobError, JobState

_metadata = sa.MetaData()
_entries = sa.Table(
    "jobadapter_migrate_ledger",
    _metadata,
    sa.Column("move", sa.String, primary_key=True),
    sa.Column("job_id", sa.String, primary_key=True),
    sa.Column("written_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("state", sa.String(16)),
    sa.Column("envelope", sa.Text),
    sa.Column("error", sa.Text),
)

_ADD = (
    "INSERT INTO jobadapter_migrate_ledger (move, job_id, written_at) "
    "VALUES ({mark}, {mark}, CURRENT_TIMESTAMP)"
)
_CLEAR = "DELETE FROM jobadapter_migrate_ledger WHERE move = {mark} AND job_id = {mark}"


class SqlLedger(Ledger):
    """The ledger of one move (``move`` names its source and target) in a SQL table."""

    def __init__(self, url: str, move: str) -> None:
        try:
            parsed = make_url(url).difference_update_query(["retention_days"])
            self.engine = sa.create_engine(parsed)
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as error:
            raise ConfigurationError(
                f"{url!r} is not a ledger URL: expected e.g. sqlite:///migrate.sqlite or "
                "postgresql+psycopg://user@host/db"
            ) from error
        if parsed.get_backend_name() == "sqlite":
            sa.event.listen(self.engine, "connect", _write_ahead)
        self.where = f"table jobadapter_migrate_ledger at {parsed.render_as_string(hide_password=True)}"
        self.move = move
        _metadata.create_all(self.engine)

    def published(self) -> set[str]:
        query = sa.select(_entries.c.job_id).where(_entries.c.move == self.move)
        with self.engine.connect() as connection:
            return {row[0] for row in connection.execute(query)}

    def add(self, job_ids: Sequence[str]) -> None:
        if job_ids:
            self._each(_ADD, job_ids)

    def keep(self, state: JobState, jobs: Sequence[tuple[Envelope, JobError | None]]) -> None:
        if not jobs:
            return
        now = datetime.now(timezone.utc)
        rows = [
            {
                "move": self.move,
                "job_id": envelope.job_id,
                "written_at": now,
                "state": state.value,
                "envelope": envelope.encode(),
                "error": error_text(error),
            }
            for envelope, error in jobs
        ]
        self.clear([envelope.job_id for envelope, _ in jobs])
        with self.engine.begin() as connection:
            connection.execute(_entries.insert(), rows)

    def kept(self) -> list[Kept]:
        query = sa.select(_entries.c.state, _entries.c.envelope, _entries.c.error).where(
            _entries.c.move == self.move, _entries.c.envelope.is_not(None)
        )
        with self.engine.connect() as connection:
            rows = list(connection.execute(query))
        return [kept_job(state, envelope, error) for state, envelope, error in rows]

    def clear(self, job_ids: Collection[str] | None = None) -> None:
        if job_ids is None:
            with self.engine.begin() as connection:
                connection.execute(_entries.delete().where(_entries.c.move == self.move))
        elif job_ids:
            self._each(_CLEAR, job_ids)

    def _each(self, statement: str, job_ids: Collection[str]) -> None:
        """Run ``statement`` (`_ADD`, `_CLEAR`) once per id, in one transaction, as the driver's
        own executemany: a batch's ids through SQLAlchemy's statements cost twice the CPU, and a
        move does this twice a batch."""
        mark = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"  # SQLite's, else psycopg's
        with self.engine.begin() as connection:
            connection.exec_driver_sql(
                statement.format(mark=mark), [(self.move, job_id) for job_id in job_ids]
            )

    def close(self) -> None:
        self.engine.dispose()


def _write_ahead(connection: Any, record: Any) -> None:
    """SQLite in WAL mode: a commit is one sync of the log, not of a rollback journal and the
    database (two commits a batch, a third of a batch's ledger time). Synchronous stays FULL:
    a kept job must outlive a power cut."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()
