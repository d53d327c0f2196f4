"""What a journal URL must be, checked without SQLAlchemy: a worker that forwards its writes
(`forward`) refuses a wrong URL at start-up, before any writer process would fail on it."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

from jobadapter.errors import ConfigurationError

DEFAULT_RETENTION_DAYS = 7.0
_URL = re.compile(r"[A-Za-z][A-Za-z0-9]*(\+[A-Za-z0-9_]+)?://")


def check(url: str) -> float:
    """The retention in days ``url`` asks for (``?retention_days=N``, default 7); raises
    `ConfigurationError` naming what is wrong with it."""
    if not _URL.match(url):
        raise ConfigurationError(
            f"{url!r} is not a journal URL: expected e.g. sqlite:///jobs.db or "
            "postgresql+psycopg://user@host/db"
        )
    parts = urlsplit(url)
    backend = parts.scheme.partition("+")[0].lower()
    if backend not in ("sqlite", "postgresql"):
        raise ConfigurationError(f"the journal supports sqlite and postgresql URLs, not {backend!r}")
    if backend == "sqlite" and parts.path[1:] in ("", ":memory:"):
        raise ConfigurationError(
            "the journal needs a SQLite file, e.g. sqlite:///jobs.db: an in-memory database is private "
            "to one connection, so workers and the writer thread would not share it"
        )
    given = parse_qs(parts.query).get("retention_days")
    text = given[-1] if given else str(DEFAULT_RETENTION_DAYS)
    try:
        days = float(text)
    except ValueError:
        days = -1.0
    if not days >= 0:
        raise ConfigurationError(f"journal retention_days must be a number of days >= 0, not {text!r}")
    return days
