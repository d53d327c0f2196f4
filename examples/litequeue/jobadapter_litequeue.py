"""``litequeue+sqlite:////path/to/queue.db``: a worked example of an adapter jobadapter does not ship.

A queue in one SQLite file, through the standard library only: no server. It is the subject
of docs/certify.md's worked example and of the test that certifies an out-of-tree adapter
with a separate worker process, so it shows every part of the adapter contract the
conformance suite checks, and nothing more:

* ``enqueue``/``enqueue_at`` insert the envelope's JSON text (``encode()``) with its queue,
  priority (lower is more urgent, None is 0) and due time; ``enqueue_all`` inserts a whole
  batch in one transaction (`Capability.BULK`).
* ``run_worker`` runs on the main thread: ``concurrency`` threads each take the most urgent
  due job of their queues (deleting its row in the same transaction, so two workers never
  take one job) and ``execute`` it. SIGTERM stops the taking, lets running jobs finish, and
  returns, so ``jobadapter worker`` exits 0.
* A job that fails unhandled, and a payload that is no runnable envelope, go to the
  ``failed`` table with the payload and the reason ``"ErrorClass: message"``: the failed
  store SQLite itself does not have.

Each operation opens its own connection, which makes the adapter safe to call from the
worker's threads (``schedule_retry`` is called on them).
"""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from datetime import datetime, timezone
from types import FrameType
from typing import Any, ClassVar

from jobadapter import config, registry
from jobadapter.adapters.base import Adapter, AdapterURL, Capability, EnqueueRequest
from jobadapter.envelope import Envelope
from jobadapter.errors import ConfigurationError
from jobadapter.execution import execute

POLL_SECONDS = 0.05
"""How long an idle worker thread sleeps between looks at the table: delayed jobs run at most
this late, well inside the suite's 2 s bound."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL,
    due REAL NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_queue ON jobs (queue, priority, id);
CREATE TABLE IF NOT EXISTS failed (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    payload TEXT NOT NULL,
    reason TEXT NOT NULL
);
"""


class LiteQueueAdapter(Adapter):
    name: ClassVar[str] = "LiteQueue"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.EXTERNAL_WORKER,
            Capability.DELAYED,
            Capability.QUEUES,
            Capability.PRIORITY,
            Capability.BULK,
            Capability.FAILED_STORE,
            Capability.GRACEFUL_SHUTDOWN,
        }
    )
    notes: ClassVar[Mapping[str, str]] = {
        Capability.DELAYED.value: "a due time on each row; idle workers look every 50 ms",
        Capability.BULK.value: "the whole batch in one SQLite transaction",
        Capability.FAILED_STORE.value: "a `failed` table the adapter keeps: payload and reason",
        Capability.AT_LEAST_ONCE.value: "a worker deletes the row it takes: a killed worker loses the job",
    }
    backend_packages: ClassVar[tuple[str, ...]] = ()  # the standard library's sqlite3 only

    def __init__(self, url: AdapterURL, **options: Any) -> None:
        super().__init__(url, **options)
        if url.transport != "sqlite" or not url.target.startswith("sqlite:///"):
            raise ConfigurationError(
                f"litequeue wants litequeue+sqlite:///relative.db or litequeue+sqlite:////absolute.db, "
                f"not {url.redacted!r}"
            )
        self.path = url.target_without(()).removeprefix("sqlite:///").partition("?")[0]
        with self._connection() as connection:
            connection.executescript(SCHEMA)

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """One connection per operation, in autocommit mode: ``BEGIN IMMEDIATE`` where a
        transaction is wanted. Safe from any thread."""
        with closing(sqlite3.connect(self.path, timeout=30, isolation_level=None)) as connection:
            yield connection

    # -- publishing ----------------------------------------------------------------------

    def enqueue(self, envelope: Envelope, options: Mapping[str, Any]) -> str | None:
        self._insert([_row(envelope, None)])
        return envelope.job_id

    def enqueue_at(self, envelope: Envelope, at: datetime, options: Mapping[str, Any]) -> str | None:
        self._insert([_row(envelope, at)])
        return envelope.job_id

    def enqueue_all(self, requests: Sequence[EnqueueRequest]) -> list[str | None]:
        self._insert([_row(request.envelope, request.envelope.scheduled_at) for request in requests])
        self.published_batches += 1  # one transaction: what the bulk scenario checks
        return [request.envelope.job_id for request in requests]

    def _insert(self, rows: list[tuple[str, int, float, str]]) -> None:
        with self._connection() as connection:
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany(
                "INSERT INTO jobs (queue, priority, due, payload) VALUES (?, ?, ?, ?)", rows
            )
            connection.execute("COMMIT")

    def enqueue_payload(self, payload: str, queue_name: str) -> None:
        with self._connection() as connection:
            connection.execute(
                "INSERT INTO jobs (queue, priority, due, payload) VALUES (?, 0, 0, ?)", (queue_name, payload)
            )

    def purge(self, queue_names: Sequence[str]) -> None:
        marks = ", ".join("?" for _ in queue_names)
        with self._connection() as connection:
            connection.execute(f"DELETE FROM jobs WHERE queue IN ({marks})", list(queue_names))
            connection.execute(f"DELETE FROM failed WHERE queue IN ({marks})", list(queue_names))

    def failed(self) -> list[tuple[str, str]]:
        with self._connection() as connection:
            return [(str(p), str(r)) for p, r in connection.execute("SELECT payload, reason FROM failed")]

    # -- the worker ----------------------------------------------------------------------

    def run_worker(
        self, *, queues: Sequence[str] | None = None, concurrency: int = 1, burst: bool = False
    ) -> None:
        """Run jobs from ``queues`` (None: ``default`` and every queue the registered job classes
        declare, as on every adapter) until SIGTERM or SIGINT; with ``burst``, until no job of
        them is due (jobs scheduled for later are left for the next worker)."""
        wanted = list(queues or registry.declared_queues())
        stopping = threading.Event()

        def stop(signum: int, frame: FrameType | None) -> None:
            stopping.set()

        for each in (signal.SIGTERM, signal.SIGINT):
            signal.signal(each, stop)
        threads = [
            threading.Thread(target=self._work, args=(wanted, stopping, burst), name=f"litequeue-{n}")
            for n in range(concurrency)
        ]
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):  # the main thread stays free for signals
            for thread in threads:
                thread.join(0.1)

    def _work(self, queues: list[str], stopping: threading.Event, burst: bool) -> None:
        while not stopping.is_set():
            taken = self._take(queues)
            if taken is None:
                if burst:
                    return
                stopping.wait(POLL_SECONDS)
                continue
            queue, payload = taken
            try:
                execute(payload, self)
            except Exception as error:  # the job's own error, or a payload no worker can run
                with self._connection() as connection:
                    connection.execute(
                        "INSERT INTO failed (queue, payload, reason) VALUES (?, ?, ?)",
                        (queue, payload, f"{type(error).__name__}: {error}"),
                    )

    def _take(self, queues: list[str]) -> tuple[str, str] | None:
        """The most urgent due job of ``queues``, its row deleted in the same transaction."""
        marks = ", ".join("?" for _ in queues)
        with self._connection() as connection:
            connection.execute("BEGIN IMMEDIATE")
            row = connection.execute(
                f"SELECT id, queue, payload FROM jobs WHERE queue IN ({marks}) AND due <= ? "
                "ORDER BY priority, id LIMIT 1",
                [*queues, time.time()],
            ).fetchone()
            if row is not None:
                connection.execute("DELETE FROM jobs WHERE id = ?", (row[0],))
            connection.execute("COMMIT")
        return None if row is None else (str(row[1]), str(row[2]))


def _row(envelope: Envelope, at: datetime | None) -> tuple[str, int, float, str]:
    """A ``jobs`` row: the envelope's JSON text (``encode()``, since SQLite stores text), due now
    or at ``at``."""
    due = (at or datetime.now(timezone.utc)).timestamp()
    return (envelope.queue_name, envelope.priority or 0, due, envelope.encode())


config.register_adapter("litequeue", LiteQueueAdapter)
