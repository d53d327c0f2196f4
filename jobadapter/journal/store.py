"""`Journal`: the SQL store behind the journal, its background writer, and its queries.

Event writes never touch the database in the thread that produced them: they
go to a bounded in-memory buffer that one writer thread empties every few
milliseconds (or as soon as `BATCH_SIZE` rows wait), one transaction per
batch, with an ``INSERT … ON CONFLICT DO UPDATE`` per kind of event (SQLite
and PostgreSQL both have it). A store that is down never fails a job or an
enqueue: the writer logs once, keeps the writes while the buffer has room,
counts the ones it must drop (`Journal.dropped`), retries, and logs when the
store is back.

A process forked from the one that configured the journal (RQ's work horse,
Celery's and Dramatiq's pool processes) has no writer thread: it writes a
job's running row when the job starts (so the job shows as running while it
runs), and its final row before the job's ``perform`` event returns, since
such processes may end with ``os._exit``, which runs no exit handler (RQ
forks one per job, so a thread per job would cost more than the job).

Operator commands (`record`, `tombstone`, `pause`, `resume`) and queries are
synchronous and raise the database's error: the operator must know.
`is_tombstoned` and `paused`, which workers call before running a job, do
not: during an outage they answer from what they last knew (nothing
tombstoned; the last paused set), logged once, so a job is not failed for the
journal's sake.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, RowMapping, make_url

from jobadapter.errors import ConfigurationError
from jobadapter.journal import relay, schema, urls
from jobadapter.journal.batch import BatchWriter, search_text
from jobadapter.journal.writes import EXECUTION, Sink, Write
from jobadapter.operations import EVERY_JOB, JobError, JobFilter, JobRecord, JobState

_logger = logging.getLogger("jobadapter")

FLUSH_INTERVAL = 0.1
"""Seconds the writer lingers after the first buffered write, so a burst goes in one transaction
(a transaction costs far more than a row; `flush` does not wait for it)."""
BATCH_SIZE = 500
"""Rows per transaction at most; a full batch is written at once."""
BUFFER_LIMIT = 50_000
"""Writes kept in memory while the store is down; later ones are dropped and counted."""
RETRY_INTERVAL = 0.5
"""Seconds between attempts while the store is down."""
PRUNE_INTERVAL = 300.0
"""Seconds between two deletions of finished rows past their retention."""
EXIT_FLUSH_TIMEOUT = 5.0
"""How long a process exit waits for buffered writes."""

_LIFE_ORDER = {"enqueued": 0, "started": 1, "finished": 2, EXECUTION: 3}
"""The order `Journal._write` applies a batch's kinds of write in."""
RECORD_FIELDS = frozenset(schema.jobs.c.keys()) - {"job_id", "step", "search", "updated_at"}
"""What `Journal.record` may set."""


class Execution(NamedTuple):
    """One ended execution of a job: when it ran, where, how it ended, with which error."""

    number: int
    """Its place in the job's history: 1 for the first run, whatever retried it."""
    started_at: datetime | None
    finished_at: datetime | None
    outcome: str | None
    worker: str | None
    error: JobError | None


class Ended(NamedTuple):
    """One job whose last execution ended: its queue, how, and when it was due, began and ended."""

    queue: str
    state: JobState
    enqueued_at: datetime | None
    scheduled_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None


class Journal:
    """The journal at one SQLAlchemy URL; see `jobadapter.journal` for the interface."""

    def __init__(self, url: str, writes: Sink | None = None) -> None:
        """``writes``: where event writes go instead of this journal's own writer thread (a
        `forward.Forwarder`, in a worker that forks per job); this one then reads, and writes
        only what an operator does."""
        parsed, self.retention_days = _parse(url)
        self.url = parsed.render_as_string(hide_password=True)
        self.dialect = parsed.get_backend_name()
        self._engine = _build_engine(parsed)
        self._engine_pid = os.getpid()
        self.dropped = 0
        """Event writes dropped since the journal was built: the buffer was full in an outage."""
        self._schema_ready = False
        self._schema_lock = threading.Lock()
        self._batch = BatchWriter(self._engine.dialect)
        self._execution_statement = self._execution_upsert()
        self._paused: frozenset[str] = frozenset()
        self._closed = False
        self._owner = os.getpid()
        self._link = relay.Link(self._relayed_frames)
        """Reads the writes of the children this process forks; in a forked child, sends its
        own to the parent's writer (see `relay`)."""
        self._reset_writer()
        self._writes = writes
        if writes is not None:
            return  # the forwarder relays its forked children's writes; nothing to do at a fork
        reference = weakref.ref(self)
        os.register_at_fork(
            before=lambda: _before_fork(reference),
            after_in_parent=lambda: _after_fork_in_parent(reference),
            after_in_child=lambda: _after_fork(reference),
        )
        atexit.register(_flush_at_exit, reference)

    def __repr__(self) -> str:
        return f"<Journal {self.url}>"

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, with a pool of this process's own: a forked child sheds the
        parent's connections at its first use, not at the fork (a work horse that only
        relays its writes never needs one, and every page it touches after a fork is copied)."""
        if self._engine_pid != os.getpid():
            self._engine.dispose(close=False)  # the parent's connections are the parent's
            self._engine_pid = os.getpid()
        return self._engine

    # -- the writer ----------------------------------------------------------------------

    def _reset_writer(self) -> None:
        """A new buffer and no thread: at construction, and in a forked child (whose copy of
        the parent's buffer is the parent's to write, and whose writer thread did not survive)."""
        self._lock = threading.Lock()
        self._io = threading.Lock()
        """Held by the writer around its database work; a fork waits for it (see `_before_fork`)."""
        self._io_held_for_fork = False
        self._wake = threading.Condition(self._lock)
        self._idle = threading.Condition(self._lock)
        self._buffer: deque[Write] = deque()
        self._in_flight = 0
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._dropping = False
        self._next_prune = time.monotonic() + PRUNE_INTERVAL if self.forked else 0.0

    @property
    def forked(self) -> bool:
        """Whether this process was forked from the one that built the journal."""
        return os.getpid() != self._owner

    def submit(self, write: Write) -> None:
        """Buffer an event write (called on the job's hot path: no I/O here), or in a forked
        child hand it to the parent's writer.

        The append takes no lock (a deque's append and popleft are atomic): a job thread
        that wanted the lock while the writer, holding it to take a batch, was preempted
        waited a whole GIL switch interval. The lock is taken only to wake the writer, once
        per batch."""
        if self._writes is not None:
            self._writes.submit(write)
            return
        if self._link.to_parent is not None and self._relayed(write):
            return
        if self._closed:
            return
        buffer = self._buffer
        if len(buffer) >= BUFFER_LIMIT:
            with self._lock:
                self.dropped += 1
                if not self._dropping:
                    self._dropping = True
                    _logger.error("Job journal %s: the buffer is full, writes are being dropped", self.url)
            return
        buffer.append(write)
        size = len(buffer)
        if self._thread is None and not self.forked:
            with self._lock:
                if self._thread is None and not self._closed:
                    self._start_thread()
        if size == 1 or size == BATCH_SIZE:
            with self._lock:
                self._wake.notify()

    def _relayed_frames(self, frames: bytes) -> None:
        relay.decode_each(frames, lambda kind, values: self.submit(Write(kind, values)))

    def _relayed(self, write: Write) -> bool:
        try:
            line = relay.encode(write.kind, write.values)
        except (TypeError, ValueError):
            return False  # a value the pipe cannot carry: the child writes this one itself
        return self._link.send(line)

    def write_pending(self) -> None:
        """Write what is buffered now, in this thread: a forked process has no writer thread and
        calls this at the end of each job, so a job's rows take one transaction there."""
        if self._writes is not None:
            self._writes.write_pending()
            return
        while self._write_batch():
            pass

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until the buffered event writes are in the store (at most ``timeout`` s)."""
        if self._writes is not None:
            self._writes.flush(timeout)
            return
        self._link.relay.drain()
        if self.forked:
            self.write_pending()
            return
        deadline = time.monotonic() + timeout
        with self._lock:
            self._wake.notify()
            while self._buffer or self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._thread is None:
                    return
                self._idle.wait(min(remaining, 0.05))

    def close(self, timeout: float = EXIT_FLUSH_TIMEOUT) -> None:
        """Flush (bounded), stop the writer and release the connections."""
        if self._closed:
            return
        self.flush(timeout)
        with self._lock:
            self._closed = True
            self._stopping = True
            self._wake.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self.engine.dispose()

    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._run, name="jobadapter-journal", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._stopping and (not self._buffer or time.monotonic() < self._retry_at):
                    wait = self._retry_at - time.monotonic() if self._buffer else None
                    self._wake.wait(wait)
                if self._stopping and not self._buffer:
                    return
                if len(self._buffer) < BATCH_SIZE and not self._stopping:
                    self._wake.wait(FLUSH_INTERVAL)
            # Pruning comes before the batch: a flush (which waits for the buffer) then also
            # waits for the prune that the first write of a process sets off.
            if self._down_since is None and time.monotonic() >= self._next_prune:
                self._prune_quietly()
            if not self._write_batch() and self._stopping:
                return

    def _write_batch(self) -> bool:
        """Write one batch from the buffer; False when there was nothing to write or the
        store is down (the batch is then back in the buffer)."""
        with self._lock:
            if not self._buffer or time.monotonic() < self._retry_at:
                return False
            count = min(len(self._buffer), BATCH_SIZE)
            batch = [self._buffer.popleft() for _ in range(count)]
            self._in_flight += count
        try:
            with self._io:
                self._write(batch)
        except Exception as error:
            with self._lock:
                self._in_flight -= count
                self._failed(batch, error)
                self._idle.notify_all()
            return False
        with self._lock:
            self._in_flight -= count
            if self._down_since is not None:
                _logger.warning(
                    "Job journal %s is available again after %.1f s (%d writes dropped so far)",
                    self.url,
                    time.monotonic() - self._down_since,
                    self.dropped,
                )
                self._down_since = None
                self._dropping = False
            self._idle.notify_all()
        return True

    def _failed(self, batch: list[Write], error: Exception) -> None:
        """Drop a batch the store refuses, or keep it for a retry while the store is down
        (lock held)."""
        if _is_bad_data(error):
            self.dropped += len(batch)
            _logger.error("Job journal %s refused %d rows, dropped: %s", self.url, len(batch), error)
            return
        self._schema_ready = False  # a dropped table is created again on the next attempt
        self._retry_at = time.monotonic() + RETRY_INTERVAL
        if self._down_since is None:
            self._down_since = time.monotonic()
            _logger.error(
                "Job journal %s is unavailable; writes are kept in memory (up to %d) and retried: %s",
                self.url,
                BUFFER_LIMIT,
                _first_line(error),
            )
        room = max(BUFFER_LIMIT - len(self._buffer), 0)
        kept = batch[len(batch) - room :] if room < len(batch) else batch
        self.dropped += len(batch) - len(kept)
        self._buffer.extendleft(reversed(kept))

    def _write(self, batch: Sequence[Write]) -> None:
        groups: dict[str, dict[tuple[str, Any], dict[str, Any]]] = {}
        for write in batch:
            rows = groups.setdefault(write.kind, {})
            values = write.values
            key = (values["job_id"], values["started_at"] if write.kind == EXECUTION else None)
            previous = rows.get(key)
            # One statement must not touch a row twice (PostgreSQL refuses): keep the newest.
            if previous is None or previous.get("step", 0) <= values.get("step", 0):
                rows[key] = values
        self.ensure_schema()
        with self.engine.begin() as connection:
            # In the order of a job's life, not of the batch: a batch that opens with one job's
            # finish (it started in the batch before) must still apply the next job's start before
            # its finish, or that start would look older than the row and be dropped.
            for kind, rows in sorted(groups.items(), key=lambda group: _LIFE_ORDER.get(group[0], 0)):
                if kind == EXECUTION:
                    connection.execute(self._execution_statement, list(rows.values()))
                else:
                    self._batch.write(connection, kind, list(rows.values()))

    def _execution_upsert(self) -> Any:
        table = schema.executions
        statement = self._insert(table)
        keys = [table.c.job_id, table.c.started_at]
        excluded = statement.excluded
        updated = {column.name: excluded[column.name] for column in table.c if not column.primary_key}
        return statement.on_conflict_do_update(index_elements=keys, set_=updated)

    def _insert(self, table: sa.Table) -> Any:
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as postgresql_insert

            return postgresql_insert(table)
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table)

    # -- schema and retention ------------------------------------------------------------

    def ensure_schema(self) -> None:
        """Create the tables and indexes that are missing (``jobadapter journal migrate``)."""
        if self._schema_ready:
            return
        with self._schema_lock:
            if self._schema_ready:
                return
            try:
                self._create_schema()
            except sa.exc.DBAPIError:
                # Another process created them between our check and our CREATE.
                self._create_schema()
            self._schema_ready = True

    def _create_schema(self) -> None:
        schema.metadata.create_all(self.engine)
        with self.engine.begin() as connection:
            for index in schema.wanted_indexes(self.dialect):
                connection.execute(sa.schema.CreateIndex(index, if_not_exists=True))

    def prune(self) -> int:
        """Delete finished rows older than the retention; returns how many. Failed rows stay
        until an operator discards them."""
        self.ensure_schema()
        cutoff = _now() - timedelta(days=self.retention_days)
        table = schema.jobs
        history = schema.executions
        with self.engine.begin() as connection:
            deleted = connection.execute(
                table.delete().where(table.c.state == JobState.FINISHED.value, table.c.finished_at < cutoff)
            )
            # A pruned job's executions, and those of jobs gone otherwise; a kept job keeps them all.
            kept = sa.select(table.c.job_id).where(table.c.job_id == history.c.job_id).exists()
            connection.execute(history.delete().where(history.c.finished_at < cutoff, ~kept))
        return int(deleted.rowcount)

    def _prune_quietly(self) -> None:
        self._next_prune = time.monotonic() + PRUNE_INTERVAL
        try:
            with self._io:
                self.prune()
        except Exception as error:
            _logger.warning("Job journal %s: pruning old rows failed: %s", self.url, _first_line(error))

    # -- queries -------------------------------------------------------------------------

    def find(self, job_id: str) -> JobRecord | None:
        """The row of ``job_id``, or None."""
        self.ensure_schema()
        table = schema.jobs
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(table).where(table.c.job_id == job_id)).first()
        return None if row is None else _record(row._mapping)

    def executions(self, job_id: str) -> list[Execution]:
        """The ended executions of ``job_id``, first to last (the job's row holds the latest)."""
        self.ensure_schema()
        table = schema.executions
        query = sa.select(table).where(table.c.job_id == job_id).order_by(table.c.started_at)
        with self.engine.connect() as connection:
            rows = connection.execute(query)
            return [_execution(number, row._mapping) for number, row in enumerate(rows, start=1)]

    def jobs(
        self, state: JobState, filter: JobFilter = EVERY_JOB, limit: int = 50, offset: int = 0
    ) -> list[JobRecord]:
        """The jobs in ``state`` that ``filter`` matches, oldest enqueued first, one page."""
        state = JobState(state)
        if limit < 0 or offset < 0:
            raise ValueError(f"limit and offset must be >= 0, not {limit} and {offset}")
        self.ensure_schema()
        table = schema.jobs
        query = sa.select(table).where(table.c.state == state.value)
        if filter.queue is not None:
            query = query.where(table.c.queue == filter.queue)
        if filter.job_class is not None:
            query = query.where(table.c.job_class == filter.job_class)
        if filter.search is not None:
            pattern = "%" + _escape_like(filter.search.lower()) + "%"
            query = query.where(table.c.search.like(pattern, escape="\\"))
        query = query.order_by(table.c.enqueued_at, table.c.job_id).limit(limit).offset(offset)
        with self.engine.connect() as connection:
            return [_record(row._mapping) for row in connection.execute(query)]

    def count(self, state: JobState, queue: str | None = None) -> int:
        """How many jobs are in ``state`` (on ``queue``, when given)."""
        state = JobState(state)
        self.ensure_schema()
        table = schema.jobs
        query = sa.select(sa.func.count()).select_from(table).where(table.c.state == state.value)
        if queue is not None:
            query = query.where(table.c.queue == queue)
        with self.engine.connect() as connection:
            return int(connection.execute(query).scalar_one())

    def queue_counts(self) -> dict[str, dict[JobState, int]]:
        """Per queue, how many jobs are in each state (finished ones not counted): the
        queues a broker that cannot list its own (RabbitMQ) has had jobs on."""
        self.ensure_schema()
        table = schema.jobs
        query = (
            sa.select(table.c.queue, table.c.state, sa.func.count())
            .where(table.c.state != JobState.FINISHED.value)
            .group_by(table.c.queue, table.c.state)
        )
        counts: dict[str, dict[JobState, int]] = {}
        with self.engine.connect() as connection:
            for queue, state, number in connection.execute(query):
                counts.setdefault(queue, {})[JobState(state)] = int(number)
        return counts

    def ended_since(self, since: datetime) -> list[Ended]:
        """The executions that ended (finished or failed) at ``since`` or later, with their
        timings: what the dashboard's throughput and latency charts are drawn from."""
        self.ensure_schema()
        table = schema.jobs
        query = sa.select(
            table.c.queue,
            table.c.state,
            table.c.enqueued_at,
            table.c.scheduled_at,
            table.c.started_at,
            table.c.finished_at,
        ).where(
            table.c.state.in_([JobState.FINISHED.value, JobState.FAILED.value]),
            table.c.finished_at >= _utc(since),
        )
        with self.engine.connect() as connection:
            return [
                Ended(queue, JobState(state), _utc(enqueued), _utc(scheduled), _utc(started), _utc(finished))
                for queue, state, enqueued, scheduled, started, finished in connection.execute(query)
            ]

    # -- operator writes -----------------------------------------------------------------

    @contextmanager
    def _durable(self) -> Iterator[Connection]:
        """A transaction whose commit waits for the server's disk (operator writes)."""
        with self.engine.begin() as connection:
            if self.dialect == "postgresql":
                connection.exec_driver_sql("SET LOCAL synchronous_commit TO on")
            yield connection

    def record(self, job_id: str, **fields: Any) -> None:
        """Set these fields of ``job_id``'s row now (created if missing), e.g. ``state=JobState.PENDING``
        after an operator's retry. The job's next event is recorded whatever it is."""
        self.record_many([(job_id, fields)])

    def record_many(self, rows: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        """`record` for many jobs in one transaction (``jobadapter migrate`` writes where a batch
        went); every row sets the same fields."""
        if not rows:
            return
        names = set(rows[0][1])
        unknown = names - RECORD_FIELDS
        if unknown:
            raise ValueError(
                f"the journal has no field {', '.join(sorted(unknown))}; fields are "
                f"{', '.join(sorted(RECORD_FIELDS))}"
            )
        if any(set(fields) != names for _, fields in rows):
            raise ValueError("record_many needs the same fields in every row")
        now = _now()
        written = []
        for job_id, fields in rows:
            values = {name: _stored(name, value) for name, value in fields.items()}
            if "arguments" in values or "keyword_arguments" in values:
                values["search"] = search_text(
                    values.get("arguments", []), values.get("keyword_arguments", {})
                )
            values.update(step=-1, updated_at=now)
            written.append(
                {
                    "job_id": job_id,
                    "job_class": "?",
                    "queue": "",
                    "state": JobState.PENDING.value,
                    "arguments": [],
                    "keyword_arguments": {},
                    "search": "",
                    "executions": 0,
                    "has_result": False,
                    **values,
                }
            )
        self.ensure_schema()
        statement = self._insert(schema.jobs)
        changed = names | {"step", "updated_at"}
        if names & {"arguments", "keyword_arguments"}:
            changed.add("search")
        updated = {name: statement.excluded[name] for name in changed}
        statement = statement.on_conflict_do_update(index_elements=[schema.jobs.c.job_id], set_=updated)
        with self._durable() as connection:
            connection.execute(statement, written)

    def tombstone(self, key: str) -> None:
        """Mark ``key`` (a job_id, or a job_id and schedule) as never to run; visible to every
        process once this returns."""
        self.ensure_schema()
        statement = self._insert(schema.tombstones).values(key=key, created_at=_now())
        with self._durable() as connection:
            connection.execute(statement.on_conflict_do_nothing(index_elements=[schema.tombstones.c.key]))

    def is_tombstoned(self, key: str) -> bool:
        """Whether ``key`` was tombstoned (False, logged, while the store is unreachable)."""
        table = schema.tombstones
        try:
            self.ensure_schema()
            with self.engine.connect() as connection:
                found = connection.execute(sa.select(table.c.key).where(table.c.key == key)).first()
        except sa.exc.DBAPIError as error:
            self._unreachable("tombstone check", error)
            return False
        return found is not None

    def pause(self, queue: str) -> None:
        """Record ``queue`` as paused (workers poll `paused`)."""
        self.ensure_schema()
        statement = self._insert(schema.paused).values(queue=queue, paused_at=_now())
        with self._durable() as connection:
            connection.execute(statement.on_conflict_do_nothing(index_elements=[schema.paused.c.queue]))

    def resume(self, queue: str) -> None:
        """Undo `pause`."""
        self.ensure_schema()
        with self._durable() as connection:
            connection.execute(schema.paused.delete().where(schema.paused.c.queue == queue))

    def paused(self) -> frozenset[str]:
        """The paused queues (the last known set, logged, while the store is unreachable)."""
        try:
            self.ensure_schema()
            with self.engine.connect() as connection:
                self._paused = frozenset(connection.execute(sa.select(schema.paused.c.queue)).scalars())
        except sa.exc.DBAPIError as error:
            self._unreachable("paused queues", error)
        return self._paused

    def _unreachable(self, what: str, error: BaseException) -> None:
        with self._lock:
            if self._down_since is not None:
                return
            self._down_since = time.monotonic()
        _logger.error("Job journal %s is unavailable (%s): %s", self.url, what, _first_line(error))


def _parse(url: str) -> tuple[URL, float]:
    days = urls.check(url)
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError as error:
        raise ConfigurationError(
            f"{url!r} is not a journal URL: expected e.g. sqlite:///jobs.db or "
            "postgresql+psycopg://user@host/db"
        ) from error
    return parsed.difference_update_query(["retention_days"]), days


def _build_engine(url: URL) -> Engine:
    if url.get_backend_name() == "sqlite":
        # How long a write waits for another process's lock (?timeout=S in the URL; default 10 s).
        engine = sa.create_engine(url, connect_args={} if "timeout" in url.query else {"timeout": 10})

        @sa.event.listens_for(engine, "connect")
        def _configure(connection: Any, record: Any) -> None:
            cursor = connection.cursor()
            # WAL: readers (workers checking tombstones) never wait for the writer.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    # No pre-ping (a round trip per transaction): a batch on a dropped connection fails, the
    # pool discards it, and the batch is written again on a new one.
    engine = sa.create_engine(url, connect_args={"connect_timeout": 5})

    @sa.event.listens_for(engine, "connect")
    def _asynchronous_commits(connection: Any, record: Any) -> None:
        # For event batches: losing their last few ms in a server crash is acceptable, waiting
        # for the WAL flush on every batch is not. Operator writes turn it on again (`_durable`).
        with connection.cursor() as cursor:
            cursor.execute("SET synchronous_commit TO off")
        connection.commit()

    return engine


def _before_fork(reference: weakref.ref[Journal]) -> None:
    """Wait (bounded) until the writer is out of the database client before the process forks.

    A child forked while another thread is inside SQLite (or a driver) can inherit a lock that
    thread held and never released: the child's first connect then hangs for ever.
    """
    journal = reference()
    if journal is not None:
        journal._io_held_for_fork = journal._io.acquire(timeout=EXIT_FLUSH_TIMEOUT)
        if not journal._closed:
            journal._link.before_fork()


def _after_fork_in_parent(reference: weakref.ref[Journal]) -> None:
    journal = reference()
    if journal is None:
        return
    if journal._io_held_for_fork:
        journal._io_held_for_fork = False
        journal._io.release()
    journal._link.after_fork_in_parent()


def _after_fork(reference: weakref.ref[Journal]) -> None:
    journal = reference()
    if journal is not None:
        journal._reset_writer()
        journal._link.after_fork_in_child()


def _flush_at_exit(reference: weakref.ref[Journal]) -> None:
    journal = reference()
    if journal is not None and not journal._closed:
        journal.close(EXIT_FLUSH_TIMEOUT)


def _is_bad_data(error: Exception) -> bool:
    """A batch the store refuses for what it holds (retrying would never succeed), as opposed
    to a store that is unreachable."""
    if isinstance(error, (sa.exc.DataError, sa.exc.IntegrityError)):
        return True
    return not isinstance(error, sa.exc.DBAPIError)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _stored(name: str, value: Any) -> Any:
    if name == "state":
        return JobState(value).value
    if isinstance(value, datetime):
        return _utc(value)
    return value


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _utc(moment: datetime | None) -> datetime | None:
    """Aware UTC: SQLite hands back the naive UTC text it was given."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def _record(row: RowMapping) -> JobRecord:
    error = (
        JobError(row["error_class"], row["error_message"] or "", row["error_traceback"])
        if row["error_class"]
        else None
    )
    return JobRecord(
        job_id=row["job_id"],
        job_class=row["job_class"],
        queue=row["queue"],
        state=JobState(row["state"]),
        priority=row["priority"],
        arguments=list(row["arguments"] or []),
        keyword_arguments=dict(row["keyword_arguments"] or {}),
        executions=row["executions"],
        enqueued_at=_utc(row["enqueued_at"]),
        scheduled_at=_utc(row["scheduled_at"]),
        started_at=_utc(row["started_at"]),
        finished_at=_utc(row["finished_at"]),
        error=error,
        outcome=row["outcome"],
        worker=row["worker"],
        provider_job_id=row["provider_job_id"],
        result=row["result"],
        has_result=bool(row["has_result"]),
    )


def _execution(number: int, row: RowMapping) -> Execution:
    error = (
        JobError(row["error_class"], row["error_message"] or "", row["error_traceback"])
        if row["error_class"]
        else None
    )
    return Execution(
        number,
        _utc(row["started_at"]),
        _utc(row["finished_at"]),
        row["outcome"],
        row["worker"],
        error,
    )
