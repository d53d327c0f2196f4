"""The ``jobadapter`` command: ``jobadapter worker --url URL --app myapp.jobs``.

The operations verbs (``queues``, ``jobs``, ``job``, ``retry``, ``discard``,
``run-now``, ``pause``, ``resume``) live in `jobadapter.cli_operations`, and
``migrate`` in `jobadapter.cli_migrate`, and ``dashboard`` in `jobadapter.cli_dashboard`.

``worker`` imports the ``--app`` modules (which registers their job classes:
the only classes the worker will run) and starts the backend's own worker
through the adapter's ``run_worker``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from jobadapter import config, journal, registry
from jobadapter.adapters.base import AdapterURL, redact
from jobadapter.cli_dashboard import add_command as add_dashboard_command
from jobadapter.cli_migrate import add_command as add_migrate
from jobadapter.cli_operations import URL_VARIABLE, Refused, add_commands
from jobadapter.errors import ConfigurationError
from jobadapter.faults import EXPERIMENTS
from jobadapter.worker_logging import announce_start, queued_output, quiet_backend_start_up

_logger = logging.getLogger("jobadapter")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    options, passed_on = parser.parse_known_args(argv)
    if not hasattr(options, "command"):
        parser.print_help()
        return 2
    if passed_on and options.command is not _conformance:  # only the suite hands options on, to pytest
        parser.error(f"unrecognized arguments: {' '.join(passed_on)}")
    options.pytest_options = passed_on
    try:
        return int(options.command(options))
    except ConfigurationError as error:
        print(f"jobadapter: {error}", file=sys.stderr)
        return 2
    except Refused as refused:
        print(f"jobadapter: {refused}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobadapter",
        description="Run workers, operate jobs and certify adapters: the same commands on every backend.",
        epilog="Each command has its own --help. Example: jobadapter worker --app myapp.jobs",
    )
    commands = parser.add_subparsers()
    worker = commands.add_parser("worker", help="run a backend worker for jobadapter jobs")
    worker.add_argument(
        "--url", help="adapter URL, e.g. rq+redis://127.0.0.1:6379/0 (default: $JOBADAPTER_URL)"
    )
    worker.add_argument(
        "--app",
        action="append",
        required=True,
        help="module(s) defining the job classes (repeat or comma-separate)",
    )
    worker.add_argument(
        "--queues",
        help="comma-separated queues to consume (default: 'default' and every queue that the --app job "
        "classes declare)",
    )
    worker.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help=f"module to import first that registers an adapter not installed with an entry point "
        f"(repeat or comma-separate; also read from ${config.PLUGINS_VARIABLE})",
    )
    worker.add_argument("--concurrency", type=int, default=1, help="jobs run at once (default 1)")
    worker.add_argument("--burst", action="store_true", help="exit once the queues are empty")
    worker.add_argument("--log-level", default="INFO", help="log level (default INFO)")
    worker.set_defaults(command=_worker)

    conformance = commands.add_parser(
        "conformance",
        help="run the conformance suite against adapters",
        description="Run the conformance suite against adapters. Options it does not know go to pytest "
        "unchanged, e.g. --jobadapter-timeout 30, --jobadapter-unreachable-url URL, -x, -p my_pytest_plugin.",
    )
    conformance.add_argument("--url", action="append", required=True, help="adapter URL (repeatable)")
    conformance.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="module that registers an adapter not installed with an entry point (config.register_adapter);"
        " the suite and every worker it starts import it (repeat or comma-separate)",
    )
    conformance.add_argument(
        "--results", help="results file (default conformance-results/<adapter>-<transport>.json)"
    )
    conformance.add_argument("-k", dest="keyword", help="only scenarios matching this pytest -k expression")
    conformance.add_argument(
        "--shard", metavar="K/N", help="only the K-th of N equal shares of the scenarios"
    )
    conformance.add_argument(
        "--journal",
        metavar="URL",
        help="the journal the suite and its workers share (default: SQLite in a temporary folder)",
    )
    conformance.set_defaults(command=_conformance)

    faults = commands.add_parser("faults", help="run the fault suite (kill storm, outage, hostile messages)")
    faults.add_argument("--url", action="append", required=True, help="adapter URL (repeatable)")
    faults.add_argument(
        "--only", help=f"comma-separated experiments (default: all of {', '.join(EXPERIMENTS)})"
    )
    faults.add_argument("--jobs", type=int, default=300, help="kill storm: jobs (default 300)")
    faults.add_argument("--kills", type=int, default=15, help="kill storm: whole-tree SIGKILLs (default 15)")
    faults.add_argument(
        "--kill-interval", type=float, default=2.0, help="kill storm: mean seconds between kills (default 2)"
    )
    faults.add_argument(
        "--outage-seconds", type=float, default=5.0, help="broker outage: how long it lasts (default 5)"
    )
    faults.add_argument("--results", help="results file (default fault-results/<adapter>-<transport>.json)")
    faults.set_defaults(command=_faults)

    add_commands(commands)
    add_migrate(commands)
    add_dashboard_command(commands)

    matrix = commands.add_parser(
        "matrix", help="print compat_matrix.md from conformance, fault and migration results"
    )
    matrix.add_argument(
        "results", nargs="*", help="results files of the conformance and fault suites and nox -s migrate"
    )
    matrix.add_argument(
        "--add",
        metavar="RESULTS",
        help="file a conformance results file's runs in compat/results/ (the published results, one "
        "per adapter / transport) and rewrite compat_matrix.md's conformance section from all of them",
    )
    matrix.add_argument(
        "--update",
        metavar="PATH",
        help="rewrite PATH (compat_matrix.md) in place: the sections given results are regenerated, "
        "the others kept",
    )
    matrix.set_defaults(command=_matrix)

    journal_parser = commands.add_parser("journal", help="manage the job journal (docs/journal.md)")
    journal_commands = journal_parser.add_subparsers()
    migrate = journal_commands.add_parser("migrate", help="create the journal's tables and indexes")
    migrate.add_argument("--url", help="the journal's SQLAlchemy URL (default: $JOBADAPTER_JOURNAL)")
    migrate.set_defaults(command=_journal_migrate)
    return parser


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _worker(options: argparse.Namespace) -> int:
    with queued_output(options.log_level.upper(), LOG_FORMAT):
        return _run_worker(options)


def _run_worker(options: argparse.Namespace) -> int:
    if options.concurrency < 1:
        raise ConfigurationError(f"--concurrency must be at least 1, not {options.concurrency}")
    options.url = options.url or os.environ.get(URL_VARIABLE)
    if not options.url:
        raise ConfigurationError(f"no adapter URL: pass --url or set {URL_VARIABLE}")
    if os.getcwd() not in sys.path:  # --app names a module of the project it runs in, as celery -A does
        sys.path.insert(0, os.getcwd())
    config.load_plugins(_split(options.plugin))
    if config.adapter_class_for(AdapterURL.parse(options.url).adapter).forks_per_job:
        journal.forward_writes()  # before the adapter is built: that configures the journal
    adapter = config.configure(url=options.url)
    for module in _split(options.app):
        try:
            importlib.import_module(module)  # a name from the command line, never from a payload
        except ImportError as error:
            raise ConfigurationError(f"--app {module!r} could not be imported: {error}") from error
    queues = _split([options.queues]) if options.queues else registry.declared_queues()
    quiet_backend_start_up()
    announce_start(
        adapter.name, redact(options.url), queues, options.concurrency, sorted(registry.registered())
    )
    try:
        adapter.run_worker(queues=queues, concurrency=options.concurrency, burst=options.burst)
    finally:
        adapter.close()
    return 0


def _conformance(options: argparse.Namespace) -> int:
    import json
    import tempfile
    from pathlib import Path

    import pytest

    if os.getcwd() not in sys.path:  # a plugin module in the current folder, as for worker --app
        sys.path.insert(0, os.getcwd())
    config.load_plugins(_split(options.plugin))  # and in $JOBADAPTER_PLUGINS for the workers
    with tempfile.TemporaryDirectory() as folder:
        results = Path(options.results or Path(folder) / "results.json")
        # -c os.devnull: the suite runs as itself, whatever pytest options the current project sets.
        arguments = ["-c", os.devnull, "--rootdir", os.getcwd()]
        arguments += ["-p", "jobadapter.conformance", "-p", "no:cacheprovider", "-q", "-rfE"]
        arguments += ["-W", "ignore::pytest.PytestAssertRewriteWarning"]
        for url in options.url:
            arguments += ["--jobadapter-url", url]
        # -s: nothing to capture (workers write to log files), and the "still running" lines must
        # reach the terminal while a scenario runs.
        arguments += ["--jobadapter-results", str(results), "--jobadapter-progress", "-s"]
        if options.keyword:
            arguments += ["-k", options.keyword]
        if options.shard:
            arguments += ["--jobadapter-shard", options.shard]
        if options.journal:
            arguments += ["--jobadapter-journal", options.journal]
        arguments += options.pytest_options
        code = int(pytest.main(arguments))
        runs = json.loads(results.read_text())["runs"] if results.exists() else []
        written = [results] if options.results else []
        if not options.results:
            for run in runs:
                target = Path("conformance-results") / f"{run['slug']}.json"
                target.parent.mkdir(exist_ok=True)
                target.write_text(json.dumps({"jobadapter_conformance": 1, "runs": [run]}, indent=2) + "\n")
                written.append(target)
    for run in runs:
        counts: dict[str, int] = {}
        for result in run["scenarios"].values():
            counts[result["outcome"]] = counts.get(result["outcome"], 0) + 1
        print(f"\n{run['label']}: " + ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())))
        for name, result in run["scenarios"].items():
            print(f"  {result['outcome']:<12} {result['feature']:<16} {name}")
    if written:
        print("\nResults: " + ", ".join(str(path) for path in written))
    return code


def _faults(options: argparse.Namespace) -> int:
    from pathlib import Path

    from jobadapter.faults import report

    experiments = _split([options.only]) if options.only else list(EXPERIMENTS)
    unknown = sorted(set(experiments) - set(EXPERIMENTS))
    if unknown:
        known = ", ".join(EXPERIMENTS)
        raise ConfigurationError(f"no fault experiment {', '.join(unknown)} (known: {known})")
    logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The experiments provoke enqueue failures on purpose; their summary says what counted.
    for provoked in ("jobadapter", "pika"):  # the producer's own errors while the broker is down
        logging.getLogger(provoked).setLevel(logging.CRITICAL)
    runs = []
    for url in options.url:
        run = report.run_url(
            url,
            experiments=experiments,
            jobs=options.jobs,
            kills=options.kills,
            interval=options.kill_interval,
            outage_seconds=options.outage_seconds,
        )
        print(report.summary(run), flush=True)
        runs.append(run)
        if not options.results:
            report.write(Path("fault-results") / f"{run['slug']}.json", [run])
    if options.results:
        report.write(Path(options.results), runs)
    failed = any(run.get(name, {}).get("outcome") == "failed" for run in runs for name in EXPERIMENTS)
    return 1 if failed else 0


def _matrix(options: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from jobadapter.conformance import published, versions
    from jobadapter.conformance.matrix import load_runs, render
    from jobadapter.faults import report
    from jobadapter.migrate import matrix as migration

    if not options.results and not options.add:
        raise ConfigurationError("give results files to render, or --add RESULTS to add a column")
    if options.add:  # the column joins the published results; the matrix is rebuilt from them all
        for path in published.add(Path(options.add)):
            print(f"added {path}", file=sys.stderr)
        options.results = [*options.results, *map(str, published.results_files())]
        options.update = options.update or str(published.MATRIX)
    conformance: list[Path] = []
    version_runs: list[dict[str, Any]] = []
    fault_runs: list[dict[str, object]] = []
    migration_runs: list[dict[str, object]] = []
    for path in map(Path, options.results):
        document = json.loads(path.read_text())
        if report.is_results(document):
            fault_runs += document["runs"]
        elif migration.is_results(document):
            migration_runs += document["runs"]
        elif versions.is_results(document):
            version_runs += document["runs"]
        else:
            conformance.append(path)
    old_scenarios, old_versions, old_faults, old_migration = "", "", "", ""
    if options.update and Path(options.update).exists():  # sections in this order; each optional
        head, marker, rest = Path(options.update).read_text().partition(migration.HEADING)
        old_migration = marker + rest
        head, marker, rest = head.partition(report.HEADING)
        old_faults = marker + rest
        old_scenarios, marker, rest = head.partition(versions.HEADING)
        old_versions = marker + rest
    scenarios = render(load_runs(conformance)) if conformance else old_scenarios.rstrip("\n") + "\n"
    versions_text = versions.render(version_runs) if version_runs else old_versions
    faults_text = report.render(fault_runs) if fault_runs else old_faults
    migration_text = migration.render(migration_runs) if migration_runs else old_migration
    text = scenarios
    for section in (versions_text, faults_text, migration_text):
        if section.strip():
            text += "\n" + section.rstrip("\n") + "\n"
    if options.update:
        Path(options.update).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _journal_migrate(options: argparse.Namespace) -> int:
    from jobadapter.journal import ENVIRONMENT_VARIABLE

    url = options.url or os.environ.get(ENVIRONMENT_VARIABLE)
    if not url:
        raise ConfigurationError(f"give the journal's URL: --url URL, or set {ENVIRONMENT_VARIABLE}")
    from jobadapter.journal.store import Journal  # SQLAlchemy, only once there is something to do

    journal = Journal(url)
    try:
        journal.ensure_schema()
    finally:
        journal.close()
    print(f"journal {journal.url}: tables and indexes are in place")
    return 0


def _split(values: Sequence[str]) -> list[str]:
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


if __name__ == "__main__":
    raise SystemExit(main())
