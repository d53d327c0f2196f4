"""The migration ledger as a SQL table (SQLAlchemy): in the journal's database, or a file.

``jobadapter_migrate_ledger(move, job_id, written_at, state, envelope, error)``:
one row per job a move published and did not delete yet (``envelope`` NULL),
or kept before deleting it (the whole job). See `jobadapter.migrate.ledger`.
SQLAlchemy is imported only here, when a move uses this ledger.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timezone

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
        self.where = f"table jobadapter_migrate_ledger at {parsed.render_as_string(hide_password=True)}"
        self.move = move
        _metadata.create_all(self.engine)

    def published(self, job_ids: Collection[str]) -> set[str]:
        if not job_ids:
            return set()
        query = sa.select(_entries.c.job_id).where(
            _entries.c.move == self.move, _entries.c.job_id.in_(list(job_ids))
        )
        with self.engine.connect() as connection:
            return {row[0] for row in connection.execute(query)}

    def add(self, job_ids: Sequence[str]) -> None:
        new = set(job_ids) - self.published(job_ids)
        if not new:
            return
        now = datetime.now(timezone.utc)
        with self.engine.begin() as connection:
            connection.execute(
                _entries.insert(),
                [{"move": self.move, "job_id": job_id, "written_at": now} for job_id in new],
            )

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
        statement = _entries.delete().where(_entries.c.move == self.move)
        if job_ids is not None:
            if not job_ids:
                return
            statement = statement.where(_entries.c.job_id.in_(list(job_ids)))
        with self.engine.begin() as connection:
            connection.execute(statement)

    def close(self) -> None:
        self.engine.dispose()
