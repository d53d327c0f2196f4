"""Project sessions: ``uv run nox -s tests lint typecheck`` (and benchmarks, conformance)."""

from __future__ import annotations

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
    """Microbenchmarks; each prints its figures (µs per job, or ratios against native)."""
    session.run("python", "benchmarks/core_overhead.py", *session.posargs)
