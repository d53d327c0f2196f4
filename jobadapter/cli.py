"""The ``jobadapter`` command: ``jobadapter worker --url URL --app myapp.jobs``.

``worker`` imports the ``--app`` modules (which registers their job classes:
the only classes the worker will run) and starts the backend's own worker
through the adapter's ``run_worker``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from jobadapter import config
from jobadapter.adapters.base import redact
from jobadapter.errors import ConfigurationError

_logger = logging.getLogger("jobadapter")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    options = parser.parse_args(argv)
    if not hasattr(options, "command"):
        parser.print_help()
        return 2
    try:
        return int(options.command(options))
    except ConfigurationError as error:
        print(f"jobadapter: {error}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobadapter", description=__doc__.splitlines()[0] if __doc__ else None
    )
    commands = parser.add_subparsers()
    worker = commands.add_parser("worker", help="run a backend worker for jobadapter jobs")
    worker.add_argument("--url", required=True, help="adapter URL, e.g. rq+redis://127.0.0.1:6379/0")
    worker.add_argument(
        "--app",
        action="append",
        required=True,
        help="module(s) defining the job classes (repeat or comma-separate)",
    )
    worker.add_argument("--queues", help="comma-separated queues to consume (default: all known)")
    worker.add_argument("--concurrency", type=int, default=1, help="jobs run at once (default 1)")
    worker.add_argument("--burst", action="store_true", help="exit once the queues are empty")
    worker.add_argument("--log-level", default="INFO", help="log level (default INFO)")
    worker.set_defaults(command=_worker)

    conformance = commands.add_parser("conformance", help="run the conformance suite against adapters")
    conformance.add_argument("--url", action="append", required=True, help="adapter URL (repeatable)")
    conformance.add_argument(
        "--results", help="results file (default conformance-results/<adapter>-<transport>.json)"
    )
    conformance.add_argument("-k", dest="keyword", help="only scenarios matching this pytest -k expression")
    conformance.set_defaults(command=_conformance)

    matrix = commands.add_parser("matrix", help="print compat_matrix.md from conformance results files")
    matrix.add_argument("results", nargs="+", help="results files written by the conformance suite")
    matrix.set_defaults(command=_matrix)
    return parser


def _worker(options: argparse.Namespace) -> int:
    logging.basicConfig(
        level=options.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if options.concurrency < 1:
        raise ConfigurationError(f"--concurrency must be at least 1, not {options.concurrency}")
    adapter = config.configure(url=options.url)
    for module in _split(options.app):
        try:
            importlib.import_module(module)  # a name from the command line, never from a payload
        except ImportError as error:
            raise ConfigurationError(f"--app {module!r} could not be imported: {error}") from error
    queues = _split([options.queues]) if options.queues else None
    _logger.info("Starting %s worker on %s", adapter.name, redact(options.url))
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

    with tempfile.TemporaryDirectory() as folder:
        results = Path(options.results or Path(folder) / "results.json")
        arguments = ["-p", "jobadapter.conformance", "-p", "no:cacheprovider", "-q", "-rfE"]
        arguments += ["-W", "ignore::pytest.PytestAssertRewriteWarning"]
        for url in options.url:
            arguments += ["--jobadapter-url", url]
        arguments += ["--jobadapter-results", str(results)]
        if options.keyword:
            arguments += ["-k", options.keyword]
        code = int(pytest.main(arguments))
        runs = json.loads(results.read_text())["runs"] if results.exists() else []
        if not options.results:
            for run in runs:
                target = Path("conformance-results") / f"{run['slug']}.json"
                target.parent.mkdir(exist_ok=True)
                target.write_text(json.dumps({"jobadapter_conformance": 1, "runs": [run]}, indent=2) + "\n")
    for run in runs:
        counts: dict[str, int] = {}
        for result in run["scenarios"].values():
            counts[result["outcome"]] = counts.get(result["outcome"], 0) + 1
        print(f"\n{run['label']}: " + ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())))
        for name, result in run["scenarios"].items():
            print(f"  {result['outcome']:<12} {result['feature']:<16} {name}")
    return code


def _matrix(options: argparse.Namespace) -> int:
    from pathlib import Path

    from jobadapter.conformance.matrix import load_runs, render

    sys.stdout.write(render(load_runs([Path(path) for path in options.results])))
    return 0


def _split(values: Sequence[str]) -> list[str]:
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


if __name__ == "__main__":
    raise SystemExit(main())
