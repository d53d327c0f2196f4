"""Project sessions: ``uv run nox -s tests lint typecheck`` (and benchmarks, conformance)."""

from __future__ import annotations

import socket
from pathlib import Path

import nox

nox.options.default_venv_backend = "none"
nox.options.sessions = ["tests", "lint", "typecheck"]


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite, against the services on this machine."""
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the core and the adapters."""
    session.run("mypy")


@nox.session
def benchmarks(session: nox.Session) -> None:
    """Benchmarks; each prints its figures (µs per job, or ratios against the native library)."""
    for script in sorted(Path("benchmarks").glob("*.py")):
        session.run("python", str(script), *session.posargs)


CONFORMANCE_URLS = [
    "inline://",
    "async://?workers=4",
    "rq+redis://127.0.0.1:6379/13",
    "celery+amqp://guest:guest@127.0.0.1:5672//",
    "celery+redis://127.0.0.1:6379/14",
    "dramatiq+amqp://guest:guest@127.0.0.1:5672",
    "dramatiq+redis://127.0.0.1:6379/15",
]


def _available(url: str) -> bool:
    """The adapter is installed and importable, and its broker port answers."""
    from jobadapter import config
    from jobadapter.adapters.base import AdapterURL
    from jobadapter.errors import ConfigurationError

    parsed = AdapterURL.parse(url)
    try:
        config.adapter_class_for(parsed.adapter)
    except ConfigurationError:
        return False
    if parsed.transport is None:
        return True
    port = {"redis": 6379, "amqp": 5672}[parsed.transport]
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@nox.session
def conformance(session: nox.Session) -> None:
    """Run the conformance suite on every adapter URL available here; regenerate compat_matrix.md."""
    results = Path("conformance-results")
    results.mkdir(exist_ok=True)
    for old in results.glob("*.json"):
        old.unlink()
    failures = []
    for url in CONFORMANCE_URLS:
        if not _available(url):
            session.log(f"skipping {url}: adapter or broker not available")
            continue
        try:
            session.run("jobadapter", "conformance", "--url", url)
        except nox.command.CommandFailed:
            failures.append(url)
    files = sorted(str(path) for path in results.glob("*.json"))
    with open("compat_matrix.md", "w") as matrix:
        session.run("jobadapter", "matrix", *files, stdout=matrix)
    if failures:
        session.error(f"conformance failures on: {', '.join(failures)}")
