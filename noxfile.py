"""Project sessions: ``uv run nox -s tests lint typecheck`` (and benchmarks, conformance)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nox

# The suites start hundreds of worker processes: let them cache bytecode (see conftest.py).
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

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
    """Benchmarks; each prints its figures (µs per job, or ratios against the native library).

    Files whose name starts with ``_`` are helpers the scripts import (or their
    workers run), not scripts.
    """
    for script in sorted(Path("benchmarks").glob("[!_]*.py")):
        session.run("python", str(script), *session.posargs)


DJANGO_TESTS = [
    "tests/test_django_tasks.py",
    "tests/test_django_app.py",
    "tests/test_django_workers.py",
    "tests/test_after_commit.py",
    "tests/test_mail.py",
    "tests/test_django_example.py",
]
"""The tests of jobadapter.django, jobadapter.sqlalchemy and jobadapter.mail, and the example."""
DJANGO_6_PYTHONS = ("3.13", "3.12")


@nox.session
def django6(session: nox.Session) -> None:
    """The Django tests on Django 6 (its own django.tasks, no backport), on Python 3.12 or later:
    a virtualenv of its own in .nox/django6, from the first such interpreter found."""
    python = _python_at_least_312()
    if python is None:
        session.error(f"no Python {' or '.join(DJANGO_6_PYTHONS)} found (PATH, pyenv): Django 6 needs one")
    folder = Path(".nox/django6")
    interpreter = folder / "bin" / "python"
    if not interpreter.exists():
        session.run("uv", "venv", "--quiet", "--python", python, str(folder))
    requirements = ["django>=6.1,<6.2", "pytest>=8", "pytest-xdist>=3.6", "pytest-timeout>=2.3"]
    requirements += ["psycopg[binary]>=3.1", "sqlalchemy>=2.0", "aiosmtpd>=1.4"]
    workspace = ["-e", ".", "-e", "adapters/rq", "-e", "adapters/celery", "-e", "adapters/dramatiq"]
    session.run("uv", "pip", "install", "--quiet", "--python", str(interpreter), *requirements, *workspace)
    session.run(str(interpreter), "-m", "pytest", "-n", "2", *DJANGO_TESTS, *session.posargs)


def _python_at_least_312() -> str | None:
    """A Python 3.12+ interpreter: one pyenv installed, or one on PATH (not a pyenv shim, which
    answers only for the versions pyenv has activated)."""
    import shutil

    for version in DJANGO_6_PYTHONS:
        installed = sorted(Path.home().glob(f".pyenv/versions/{version}*/bin/python{version}"))
        if installed:
            return str(installed[-1])
        found = shutil.which(f"python{version}")
        if found and "/shims/" not in found:
            return found
    return None


CONFORMANCE_URLS = [
    "inline://",
    "async://?workers=4",
    "rq+redis://127.0.0.1:6379/13",
    "celery+amqp://guest:guest@127.0.0.1:5672//",
    "celery+redis://127.0.0.1:6379/14",
    "dramatiq+amqp://guest:guest@127.0.0.1:5672",
    "dramatiq+redis://127.0.0.1:6379/15",
]


AT_ONCE = 3
SHARED_DEAD_LETTERS = "celery+amqp://"
"""Runs on these URLs share one dead-letter queue (Celery's ``jobadapter.dead`` in RabbitMQ's
vhost), which each walks holding its letters unacknowledged for a moment, hiding them from
the others: such runs go one at a time (`_next_run`), the rest side by side."""


def _next_run(waiting: list[Any], urls_of: Any, running_urls: list[str]) -> Any | None:
    """Take the first waiting run that shares no dead-letter queue with a running one."""
    busy = any(url.startswith(SHARED_DEAD_LETTERS) for url in running_urls)
    for index, run in enumerate(waiting):
        if not (busy and any(url.startswith(SHARED_DEAD_LETTERS) for url in urls_of(run))):
            return waiting.pop(index)
    return None


UNREACHABLE_PORT = 1
"""Where no broker listens (a privileged port): the contract scenario's unreachable broker."""
"""Conformance runs side by side: more starve each other's workers on two cores."""


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


def _suite_per_url(session: nox.Session, suite: str, urls: list[str], results: Path) -> None:
    """``jobadapter SUITE --url URL`` for each URL available here, one after the other (each
    writes its results file into ``results``), then that suite's section of compat_matrix.md."""
    failures = []
    for url in _fresh_results(session, urls, results):
        try:
            session.run("jobadapter", suite, "--url", url, *session.posargs)
        except nox.command.CommandFailed:
            failures.append(url)
    _update_matrix(session, suite, results, failures)


def _fresh_results(session: nox.Session, urls: list[str], results: Path) -> list[str]:
    """Empty ``results``; the URLs whose adapter and broker are available here."""
    results.mkdir(exist_ok=True)
    for old in results.glob("*.json"):
        old.unlink()
    available = [url for url in urls if _available(url)]
    for url in sorted(set(urls) - set(available)):
        session.log(f"skipping {url}: adapter or broker not available")
    return available


def _update_matrix(session: nox.Session, suite: str, results: Path, failures: list[str]) -> None:
    files = sorted(str(path) for path in results.glob("*.json"))
    session.run("jobadapter", "matrix", "--update", "compat_matrix.md", *files)
    if failures:
        session.error(f"{suite} failures on: {', '.join(failures)}")


@nox.session
def conformance(session: nox.Session) -> None:
    """The conformance suite on every adapter URL available here, `AT_ONCE` at a time (it is
    mostly waiting); files each run in compat/results/ and regenerates compat_matrix.md from them.

    Redis URLs run on a redis-server of their own (`PrivateRedis`), so the run
    touches no database of the shared server; RabbitMQ runs use queue names
    unique to the run. Each URL's output is printed when it ends.
    """
    results = Path("conformance-results")
    urls = _fresh_results(session, CONFORMANCE_URLS, results)
    failures = _conformance_side_by_side(session, [(url, "jobadapter", url, None) for url in urls])
    for path in sorted(results.glob("*.json")):  # into compat/results/, as a third party's column goes
        session.run("jobadapter", "matrix", "--add", str(path))
    if failures:
        session.error(f"conformance failures on: {', '.join(failures)}")


def _conformance_side_by_side(
    session: nox.Session, runs: list[tuple[str, str, str, Path | None]]
) -> list[str]:
    """Run ``(name, jobadapter executable, url, results file or None)`` conformance runs, `AT_ONCE`
    at a time; Redis URLs on a redis-server of their own, each backend's unreachable-broker
    scenario at `UNREACHABLE_PORT`. Prints each run's output when it ends; returns the names of
    the runs that failed."""
    from jobadapter.adapters.base import AdapterURL
    from jobadapter.faults.brokers import PrivateRedis, with_address

    failures = []
    with contextlib.ExitStack() as stack:
        waiting = list(runs)
        running: list[tuple[str, Any, subprocess.Popen[bytes]]] = []
        urls: dict[str, list[str]] = {}
        while waiting or running:
            while waiting and len(running) < AT_ONCE:
                chosen = _next_run(waiting, lambda run: [run[2]], [u for r in running for u in urls[r[0]]])
                if chosen is None:
                    break
                name, executable, url, results = chosen
                urls[name] = [url]
                served = url
                if AdapterURL.parse(url).transport == "redis":
                    server = stack.enter_context(PrivateRedis(persistent=False))
                    served = with_address(url, server.port)
                log = stack.enter_context(tempfile.TemporaryFile())
                command = [executable, "conformance", "--url", served, *session.posargs]
                if results is not None:
                    command += ["--results", str(results)]
                if AdapterURL.parse(url).transport:  # the same broker at a port nobody listens on
                    command += ["--jobadapter-unreachable-url", with_address(url, UNREACHABLE_PORT)]
                running.append((name, log, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)))
            time.sleep(0.2)
            for entry in [entry for entry in running if entry[2].poll() is not None]:
                running.remove(entry)
                name, log, process = entry
                log.seek(0)
                session.log(f"{name}: exit {process.returncode}\n{log.read().decode(errors='replace')}")
                if process.returncode:
                    failures.append(name)
    return failures


COMPAT_LIBRARIES = ["rq", "celery", "dramatiq"]
"""The backend libraries ``nox -s compat`` tests, each by the adapter of the same name."""


def _supported_range(library: str) -> tuple[str, str]:
    """The adapter's requirement on ``library`` as its package pins it (``rq>=2.12,<4``), and its
    oldest version (``rq==2.12``): the pins are the one place the supported versions are written."""
    text = Path(f"adapters/{library}/pyproject.toml").read_text()
    found = re.search(rf'"({re.escape(library)}(?:\[[^\]]*\])?)(>=([0-9.]+)[^"]*)"', text)
    if found is None:
        raise ValueError(f"adapters/{library}/pyproject.toml pins no lower bound on {library}")
    name, bounds, lowest = found.groups()
    return name + bounds, f"{name}=={lowest}"


@nox.session
def compat(session: nox.Session) -> None:
    """The whole conformance suite against the oldest and the newest version of each backend
    library the adapters support (read from their pins), `AT_ONCE` runs at a time; rewrites the
    "Library versions" section of compat_matrix.md.

    Each library version gets a virtualenv of its own (``.nox/compat-versions/``), with the
    workspace's core and that adapter installed editable and the library pinned; its
    ``jobadapter conformance`` runs on each of the adapter's URLs as in the ``conformance``
    session (private redis-servers, unique RabbitMQ queue names).
    """
    from jobadapter.conformance import versions

    results = Path("compat-results")
    shutil.rmtree(results, ignore_errors=True)
    results.mkdir()
    runs = []
    for library in COMPAT_LIBRARIES:
        urls = [url for url in CONFORMANCE_URLS if url.startswith(f"{library}+") and _available(url)]
        if not urls:
            session.log(f"skipping {library}: adapter or broker not available")
            continue
        newest, oldest = _supported_range(library)
        for which, requirement in (("oldest", oldest), ("newest", newest)):
            venv = Path(".nox", "compat-versions", f"{library}-{which}")
            session.run("uv", "venv", "--quiet", "--allow-existing", "--python", sys.executable, str(venv))
            session.run(
                "uv", "pip", "install", "--quiet", "--python", str(venv),
                "-e", ".[conformance]", "-e", f"adapters/{library}", requirement,
            )  # fmt: skip
            executable = str(venv / "bin" / "jobadapter")
            for url in urls:
                name = f"{requirement} on {url}"
                runs.append((name, executable, url, results / f"{library}-{which}-{url.split(':')[0]}.json"))
    failures = _conformance_side_by_side(session, runs)
    bundle = results / "compat.json"
    versions.write(bundle, [run for path in sorted(results.glob("*-*.json")) for run in _runs_in(path)])
    session.run("jobadapter", "matrix", "--update", "compat_matrix.md", str(bundle))
    if failures:
        session.error(f"compat failures on: {', '.join(failures)}")


def _runs_in(path: Path) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = json.loads(path.read_text())["runs"]
    return runs


FAULT_URLS = [url for url in CONFORMANCE_URLS if "+" in url]
"""The backend adapters: the in-process ones have no worker to kill."""


@nox.session
def faults(session: nox.Session) -> None:
    """The fault suite (kill storm, broker outage, hostile messages) on every backend adapter
    available here; rewrites the "Faults" section of compat_matrix.md."""
    _suite_per_url(session, "faults", FAULT_URLS, Path("fault-results"))


MIGRATE_URLS = [
    "rq+redis://127.0.0.1:6379/0",
    "celery+amqp://guest:guest@127.0.0.1:5672//",
    "celery+redis://127.0.0.1:6379/0",
    "dramatiq+amqp://guest:guest@127.0.0.1:5672",
    "dramatiq+redis://127.0.0.1:6379/0",
]
"""The five broker configurations; ``nox -s migrate`` moves jobs between every two of them."""


@nox.session
def migrate(session: nox.Session) -> None:
    """``jobadapter migrate`` between every source and target (20 pairs), `AT_ONCE` at a time:
    the proof of `jobadapter.migrate.proof` per pair; rewrites the "Migration" section of
    compat_matrix.md.

    A pair with a Redis URL gets a redis-server of its own (`PrivateRedis`: the source on
    database 0, the target on database 1); RabbitMQ queues are ``jac-migrate-…``, deleted
    at the end of each pair.
    """
    from jobadapter.adapters.base import AdapterURL
    from jobadapter.faults.brokers import PrivateRedis, with_address

    results = Path("migrate-results")
    urls = _fresh_results(session, MIGRATE_URLS, results)
    pairs = [(source, target) for source in urls for target in urls if source != target]
    failures = []
    with contextlib.ExitStack() as stack:
        running: list[tuple[str, Any, subprocess.Popen[bytes]]] = []
        while pairs or running:
            while pairs and len(running) < AT_ONCE:
                busy = [url for entry in running for url in entry[0].split(" -> ")]
                chosen = _next_run(pairs, list, busy)
                if chosen is None:
                    break
                source, target = chosen
                served = [source, target]
                if any(AdapterURL.parse(url).transport == "redis" for url in served):
                    server = stack.enter_context(PrivateRedis(persistent=False))
                    served = [
                        with_address(url, server.port).rsplit("/", 1)[0] + f"/{db}"
                        if AdapterURL.parse(url).transport == "redis"
                        else url
                        for db, url in enumerate(served)
                    ]
                log = stack.enter_context(tempfile.TemporaryFile())
                command = ["python", "-m", "jobadapter.migrate.proof", "--results", str(results), *served]
                name = f"{source} -> {target}"
                running.append((name, log, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)))
            time.sleep(0.2)
            for entry in [entry for entry in running if entry[2].poll() is not None]:
                running.remove(entry)
                name, log, process = entry
                log.seek(0)
                session.log(
                    f"{name}: exit {process.returncode}\n{log.read().decode(errors='replace')[-3000:]}"
                )
                if process.returncode:
                    failures.append(name)
    _update_matrix(session, "migrate", results, failures)
