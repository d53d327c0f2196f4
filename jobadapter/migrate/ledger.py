"""The migration ledger: what a move published and did not finish, so a crash loses nothing.

Between two backends, ``jobadapter migrate`` publishes a batch to the target,
writes the batch's ids here (`Ledger.add`), deletes the jobs from the source,
then clears their ids here. A run that dies after the publish but before the
delete leaves the ids behind, so the next run of the same move deletes those
jobs from the source without publishing them a second time. Only a death
between the publish and the ledger write (one batch) can duplicate jobs.

Within one backend (``--rename-queue`` on the same URL) a job keeps its id, and
the backend knows a job by its id: deleting the source job after publishing
would delete the copy. There the whole jobs are written here first
(`Ledger.keep`), then deleted from the source, published, and cleared. The
next run publishes whatever a dead run kept (`Ledger.kept`). Either way, no
death loses a job.

Where it lives (`open_ledger`): ``--ledger URL`` (a SQL database); else the
journal's database when ``JOBADAPTER_JOURNAL`` is set; else the target itself
where it offers a place (`Adapter.migration_ledger`: a Redis hash on RQ and on
Celery's and Dramatiq's Redis brokers); else `DEFAULT_LEDGER`, a SQLite file in
the working directory (a RabbitMQ target keeps no data of its own).
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from jobadapter.envelope import Envelope, decode
from jobadapter.journal import ENVIRONMENT_VARIABLE
from jobadapter.operations import JobError, JobState

if TYPE_CHECKING:
    from jobadapter.adapters.base import Adapter

DEFAULT_LEDGER = "sqlite:///jobadapter-migrate.sqlite"
"""Where the ledger is kept when nothing else offers a place."""
REDIS_KEY = "jobadapter.migrate.ledger:{move}"
"""The Redis hash of one move's ledger (`RedisLedger`): job_id → "" or the kept job."""

Kept = tuple[JobState, Envelope, "JobError | None"]
"""A job kept before it left the source: its state, its envelope, its error."""


class Ledger:
    """The ledger of one move. ``where`` says where it is, for the operator."""

    where: str = "?"

    def published(self) -> set[str]:
        """The ids earlier runs published and did not get to delete. Read once, when a run
        starts: only that run writes the ledger of its move while it runs."""
        raise NotImplementedError

    def add(self, job_ids: Sequence[str]) -> None:
        """Remember ``job_ids``, none of them in the ledger yet, as published (durable when this
        returns)."""
        raise NotImplementedError

    def keep(self, state: JobState, jobs: Sequence[tuple[Envelope, JobError | None]]) -> None:
        """Write these whole jobs, about to leave the source (durable when this returns)."""
        raise NotImplementedError

    def kept(self) -> list[Kept]:
        """The jobs a dead run kept here and may not have published."""
        raise NotImplementedError

    def clear(self, job_ids: Collection[str] | None = None) -> None:
        """Forget ``job_ids`` (deleted from the source, or published), or every id of this move."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the connection (a ledger in the target shares the adapter's)."""


class RedisLedger(Ledger):
    """One Redis hash in the target's own Redis: job_id → "" (published) or the kept job as JSON."""

    def __init__(self, client: Any, key: str) -> None:
        self.client = client
        self.key = key
        self.where = f"Redis hash {key!r} on the target"

    def published(self) -> set[str]:
        return {_text(job_id) for job_id in self.client.hkeys(self.key)}

    def add(self, job_ids: Sequence[str]) -> None:
        if job_ids:
            self.client.hset(self.key, mapping=dict.fromkeys(job_ids, ""))

    def keep(self, state: JobState, jobs: Sequence[tuple[Envelope, JobError | None]]) -> None:
        if jobs:
            entries = {
                envelope.job_id: json.dumps(
                    {"state": state.value, "envelope": envelope.encode(), "error": error_text(error)}
                )
                for envelope, error in jobs
            }
            self.client.hset(self.key, mapping=entries)

    def kept(self) -> list[Kept]:
        found = []
        for value in self.client.hgetall(self.key).values():
            if value:
                entry = json.loads(value)
                found.append(kept_job(entry["state"], entry["envelope"], entry["error"]))
        return found

    def clear(self, job_ids: Collection[str] | None = None) -> None:
        if job_ids is None:
            self.client.delete(self.key)
        elif job_ids:
            self.client.hdel(self.key, *job_ids)


def _text(raw: bytes | str) -> str:
    return raw if isinstance(raw, str) else raw.decode()


def error_text(error: JobError | None) -> str | None:
    """A kept job's error as stored."""
    return None if error is None else json.dumps(asdict(error))


def kept_job(state: str, envelope: str, error: str | None) -> Kept:
    """A kept job as stored, read back."""
    return JobState(state), decode(envelope), None if error is None else JobError(**json.loads(error))


def open_ledger(url: str | None, move: str, target: Adapter) -> Ledger:
    """The ledger of ``move``: at ``url`` if given, else in the journal's database, else in the
    target where it offers a place, else in `DEFAULT_LEDGER` (see the module docstring)."""
    from jobadapter.migrate.ledger_sql import SqlLedger  # SQLAlchemy, only for a SQL ledger

    url = url or os.environ.get(ENVIRONMENT_VARIABLE)
    if url:
        return SqlLedger(url, move)
    return target.migration_ledger(move) or SqlLedger(DEFAULT_LEDGER, move)
