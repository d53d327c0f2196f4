"""What the journal and results tests share: the two stores, and jobs a worker process can run.

``stores`` yields a journal URL per store: a SQLite file in the test's
folder, and a PostgreSQL database ``jobadapter_test_<hex>`` created for the
test and dropped at its end (the shared server's only claim, see README).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from jobadapter import Job, discard_on, retry_on
from jobadapter.faults.brokers import scratch_postgresql

STORES = ("sqlite", "postgresql")


@contextmanager
def store_url(kind: str, folder: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'journal.db'}"
        return
    with scratch_postgresql() as name:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def wait_for(check: Callable[[], Any], timeout: float = 10.0, what: str = "the condition") -> Any:
    """Poll ``check`` until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Boom(Exception):
    pass


class Gone(Exception):
    pass


class Add(Job):
    store_result = True

    def perform(self, a: int, b: int) -> int:
        return a + b


class LoadedDatabaseModules(Job):
    """Which database modules the process that runs it has loaded (in RQ's work horse: what
    its worker had, as the horse is a fork of it)."""

    store_result = True

    def perform(self) -> list[str]:
        return sorted(name for name in ("sqlalchemy", "psycopg", "sqlite3") if name in sys.modules)


class Explodes(Job):
    store_result = True

    def perform(self, who: str) -> None:
        raise Boom(f"no {who}")


@retry_on(Boom, wait=0, attempts=3, jitter=0)
class FlakyOnce(Job):
    """Fails its first execution, then succeeds."""

    def perform(self, name: str) -> str:
        if self.executions == 1:
            raise Boom("first time")
        return name


@discard_on(Gone)
class Vanishes(Job):
    def perform(self) -> None:
        raise Gone("row deleted")
