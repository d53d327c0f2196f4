"""The probe: how the suite sees what jobs did in another process, without a server.

Jobs append rows to a SQLite file whose path is in ``JOBADAPTER_PROBE``; the
suite reads them back. SQLite's locking makes concurrent writers from several
worker processes safe, and WAL mode lets the suite read while workers write.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENVIRONMENT_VARIABLE = "JOBADAPTER_PROBE"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    label TEXT NOT NULL,
    kind TEXT NOT NULL,
    job_id TEXT,
    executions INTEGER,
    queue TEXT,
    priority INTEGER,
    at REAL NOT NULL,
    pid INTEGER NOT NULL,
    detail TEXT
)
"""
_local = threading.local()


@dataclass(frozen=True)
class Row:
    """One thing a job reported: ``kind`` (performed, started, hook:…) for a ``label``."""

    label: str
    kind: str
    job_id: str | None
    executions: int | None
    queue: str | None
    priority: int | None
    at: float
    pid: int
    detail: Any


def _connect(path: str | os.PathLike[str]) -> sqlite3.Connection:
    connection = sqlite3.connect(path, timeout=30, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA busy_timeout=30000")
    connection.execute(_SCHEMA)
    return connection


def record(label: str, kind: str, job: Any = None, detail: Any = None) -> None:
    """Append a row (called by the suite's jobs, in whatever process runs them)."""
    path = os.environ.get(ENVIRONMENT_VARIABLE)
    if not path:
        raise RuntimeError(f"{ENVIRONMENT_VARIABLE} is not set: the conformance jobs need a probe file")
    connection: sqlite3.Connection | None = getattr(_local, "connection", None)
    if connection is None or getattr(_local, "path", None) != path:
        connection = _connect(path)
        _local.connection, _local.path = connection, path
    connection.execute(
        "INSERT INTO events (label, kind, job_id, executions, queue, priority, at, pid, detail)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            label,
            kind,
            getattr(job, "job_id", None),
            getattr(job, "executions", None),
            getattr(job, "queue_name", None),
            getattr(job, "priority", None),
            time.time(),
            os.getpid(),
            json.dumps(detail),
        ),
    )


def recorded(label: str, kind: str) -> int:
    """How many ``kind`` rows ``label`` has (for jobs that wait on a signal from the suite)."""
    path = os.environ.get(ENVIRONMENT_VARIABLE)
    if not path:
        raise RuntimeError(f"{ENVIRONMENT_VARIABLE} is not set: the conformance jobs need a probe file")
    connection: sqlite3.Connection | None = getattr(_local, "connection", None)
    if connection is None or getattr(_local, "path", None) != path:
        connection = _connect(path)
        _local.connection, _local.path = connection, path
    (number,) = connection.execute(
        "SELECT COUNT(*) FROM events WHERE label = ? AND kind = ?", (label, kind)
    ).fetchone()
    return int(number)


class Probe:
    """The suite's side: read rows, and wait for a condition on them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._connection = _connect(path)

    def rows(self, label: str | None = None, kind: str | None = None) -> list[Row]:
        query = "SELECT label, kind, job_id, executions, queue, priority, at, pid, detail FROM events"
        clauses, parameters = [], []
        if label is not None:
            clauses.append("label = ?")
            parameters.append(label)
        if kind is not None:
            clauses.append("kind = ?")
            parameters.append(kind)
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        query += " ORDER BY id"
        return [
            Row(label, kind, job_id, executions, queue, priority, at, pid, json.loads(detail))
            for label, kind, job_id, executions, queue, priority, at, pid, detail in self._connection.execute(
                query, parameters
            )
        ]

    def count(self, label: str, kind: str = "performed") -> int:
        (number,) = self._connection.execute(
            "SELECT COUNT(*) FROM events WHERE label = ? AND kind = ?", (label, kind)
        ).fetchone()
        return int(number)

    def wait_for(
        self, condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
    ) -> None:
        """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
            time.sleep(interval)

    def wait_for_count(self, label: str, count: int, timeout: float, kind: str = "performed") -> list[Row]:
        self.wait_for(
            lambda: self.count(label, kind) >= count, timeout, f"{count} {kind!r} row(s) for {label!r}"
        )
        return self.rows(label, kind)

    def close(self) -> None:
        self._connection.close()
