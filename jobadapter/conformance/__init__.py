"""The conformance suite: the same scenarios against any adapter, as a pytest plugin.

    pytest -p jobadapter.conformance --jobadapter-url rq+redis://127.0.0.1:6379/9
    jobadapter conformance --url rq+redis://127.0.0.1:6379/9

Scenarios live in ``scenarios.py``, ``scenarios_contract.py`` and ``scenarios_operations.py``;
each names the feature it belongs to and the `Capability` it needs. A scenario whose capability
the adapter does not declare is reported as **unsupported** (its own outcome, distinct from pass,
fail and skip), in the terminal summary and in the results file that
``jobadapter matrix`` turns into ``compat_matrix.md``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Generator, Iterator
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pytest

from jobadapter.adapters.base import Capability

UNSUPPORTED = "unsupported:"
SCENARIOS = [
    Path(__file__).with_name(name)
    for name in ("scenarios.py", "scenarios_contract.py", "scenarios_operations.py")
]
_RESULTS_KEY = pytest.StashKey[dict[str, dict[str, Any]]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("jobadapter", "jobadapter conformance suite")
    group.addoption(
        "--jobadapter-url",
        action="append",
        default=[],
        metavar="URL",
        help="adapter URL to certify (repeat for several)",
    )
    group.addoption(
        "--jobadapter-timeout",
        type=float,
        default=20.0,
        metavar="SECONDS",
        help="how long a scenario waits for a job before failing (default 20)",
    )
    group.addoption(
        "--jobadapter-unreachable-url",
        action="append",
        default=[],
        metavar="URL",
        help="the same adapter and transport as a --jobadapter-url, at a port nobody listens on: "
        "perform_later must raise EnqueueError within 15 s (repeat for several)",
    )
    group.addoption(
        "--jobadapter-shard",
        metavar="K/N",
        help="run only the K-th of N equal shares of the scenarios (to run one adapter's suite "
        "in N processes at once)",
    )
    group.addoption(
        "--jobadapter-journal",
        metavar="URL",
        help="journal the suite and its workers write (SQLAlchemy URL; default: a SQLite file in "
        "the suite's temporary folder); the Operations group reads it where a backend keeps no state",
    )
    group.addoption(
        "--jobadapter-progress",
        action="store_true",
        help="a line per scenario as it ends (and a bar on a terminal) instead of pytest's dots",
    )
    group.addoption(
        "--jobadapter-results",
        metavar="PATH",
        help="results file (JSON) to write; default conformance-results/<adapter>-<transport>.json",
    )


def pytest_load_initial_conftests(
    early_config: pytest.Config, parser: pytest.Parser, args: list[str]
) -> None:
    """With a URL and no test path given, collect the suite's own scenarios."""
    known = early_config.known_args_namespace
    if getattr(known, "jobadapter_url", None) and not getattr(known, "file_or_dir", None):
        args.extend(str(path) for path in SCENARIOS)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "scenario(feature, requires=()): a conformance scenario and the capabilities it needs"
    )
    config.stash[_RESULTS_KEY] = {}
    if config.getoption("jobadapter_progress", False):
        from jobadapter.conformance.progress import ProgressLines

        config.pluginmanager.register(ProgressLines(config), "jobadapter-progress")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With ``--jobadapter-shard K/N``, keep every N-th scenario starting at the K-th.

    Round robin over the suite's order spreads the slow scenarios (kills,
    long waits) over the shares, and each share gets its own queues, so the
    shares of one adapter can run side by side.
    """
    shard = config.getoption("jobadapter_shard")
    if not shard:
        return
    index, total = _shard(shard)
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for position, item in enumerate(items):
        (kept if position % total == index - 1 else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def _shard(text: str) -> tuple[int, int]:
    index, _, total = text.partition("/")
    try:
        k, n = int(index), int(total)
    except ValueError:
        k = n = 0
    if not 1 <= k <= n:
        raise pytest.UsageError(f"--jobadapter-shard wants K/N with 1 <= K <= N, not {text!r}")
    return k, n


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        urls = metafunc.config.getoption("jobadapter_url")
        if not urls:
            raise pytest.UsageError("the conformance suite needs --jobadapter-url URL")
        from jobadapter.adapters.base import redact

        metafunc.parametrize(
            "backend", urls, indirect=True, ids=[redact(url) for url in urls], scope="session"
        )


@pytest.fixture(scope="session")
def probe_path(request: pytest.FixtureRequest) -> Iterator[Path]:
    """The probe file, and the journal: both set in the environment before any adapter is
    built, so the suite's process and every worker it starts share them."""
    from jobadapter import journal

    with tempfile.TemporaryDirectory(prefix="jobadapter-conformance-") as folder:
        path = Path(folder) / "probe.sqlite"
        os.environ["JOBADAPTER_PROBE"] = str(path)
        journal_url = request.config.getoption("jobadapter_journal") or f"sqlite:///{folder}/journal.sqlite"
        os.environ[journal.ENVIRONMENT_VARIABLE] = journal_url
        journal.configure(journal_url)
        try:
            yield path
        finally:
            journal.close()


@pytest.fixture(scope="session")
def unreachable_urls(request: pytest.FixtureRequest) -> list[str]:
    """``--jobadapter-unreachable-url`` values: brokers that cannot be reached."""
    return list(request.config.getoption("jobadapter_unreachable_url"))


@pytest.fixture(scope="session")
def _backends(probe_path: Path) -> Iterator[dict[str, Any]]:
    built: dict[str, Any] = {}
    yield built
    for each in built.values():
        each.close()


@pytest.fixture(scope="session")
def backend(request: pytest.FixtureRequest, probe_path: Path, _backends: dict[str, Any]) -> Any:
    from jobadapter.conformance.harness import Backend
    from jobadapter.conformance.probe import Probe

    url: str = request.param
    if url not in _backends:
        timeout = float(request.config.getoption("jobadapter_timeout"))
        _backends[url] = Backend(url, Probe(probe_path), probe_path.parent, timeout)
        _register_run(request.config, _backends[url])
    return _backends[url]


@pytest.fixture(autouse=True)
def _capabilities(request: pytest.FixtureRequest) -> Iterator[None]:
    """Report a scenario whose capability is missing as unsupported; route jobs to the backend."""
    marker = request.node.get_closest_marker("scenario")
    if marker is None or "backend" not in request.fixturenames:
        yield
        return
    backend = request.getfixturevalue("backend")
    required = marker.kwargs.get("requires", ())
    missing = [c.value for c in required if c not in backend.capabilities]
    if missing:
        pytest.skip(f"{UNSUPPORTED} the adapter does not declare {', '.join(missing)}")
    from jobadapter import config

    with config.override(backend.adapter):
        yield


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    marker = item.get_closest_marker("scenario")
    callspec = getattr(item, "callspec", None)
    if marker is None or callspec is None or "backend" not in callspec.params:
        return report
    unsupported = report.skipped and UNSUPPORTED in _message(report)
    if unsupported:
        report.user_properties.append(("jobadapter_unsupported", True))
    run = item.config.stash[_RESULTS_KEY].get(callspec.params["backend"])
    if run is not None and (report.when == "call" or report.failed or report.skipped):
        entry = run["scenarios"].setdefault(
            getattr(item, "originalname", item.name),
            {
                "feature": marker.kwargs.get("feature", "Other"),
                "requires": [c.value for c in marker.kwargs.get("requires", ())],
                "doc": _summary(item),
            },
        )
        if entry.get("outcome") in (None, "passed"):
            entry["outcome"] = "unsupported" if unsupported else report.outcome
            entry["seconds"] = round(report.duration, 2)
            entry["message"] = "" if report.passed else _message(report)[:2000]
    return report


def _summary(item: pytest.Item) -> str:
    function = getattr(item, "function", None)
    doc = (getattr(function, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else item.name


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config) -> tuple[str, str, str] | None:
    unsupported = report.skipped and dict(report.user_properties).get("jobadapter_unsupported")
    if config.getoption("jobadapter_progress", False):  # the progress lines replace pytest's letters
        if report.when == "call" or report.failed or report.skipped:
            category = "unsupported" if unsupported else report.outcome
            return ("error" if report.failed and report.when != "call" else category), "", ""
        return "", "", ""
    if unsupported:
        return "unsupported", "U", "UNSUPPORTED"
    return None


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    runs = session.config.stash.get(_RESULTS_KEY, {})
    if not runs:
        return
    explicit = session.config.getoption("jobadapter_results")
    if explicit:
        _write(Path(explicit), list(runs.values()))
    else:
        for run in runs.values():
            _write(Path("conformance-results") / f"{run['slug']}.json", [run])


def _register_run(config: pytest.Config, backend: Any) -> None:
    adapter = backend.adapter
    packages = ("jobadapter", *getattr(adapter, "backend_packages", ()))
    config.stash[_RESULTS_KEY][backend.url] = {
        "adapter": backend.name,
        "transport": backend.transport,
        "label": backend.label,
        "slug": f"{backend.name}-{backend.transport}",
        "url": adapter.url.redacted,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "versions": {name: _version(name) for name in packages},
        "capabilities": sorted(c.value for c in adapter.capabilities),
        "notes": dict(adapter.notes),
        "scenarios": {},
    }


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def _message(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple):
        return str(longrepr[2])
    return str(getattr(report, "longreprtext", "") or longrepr or "")


def _write(path: Path, runs: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"jobadapter_conformance": 1, "runs": runs}, indent=2) + "\n")


def scenario(feature: str, *requires: Capability) -> pytest.MarkDecorator:
    """Mark a scenario test with its feature and the capabilities it needs."""
    return pytest.mark.scenario(feature=feature, requires=requires)
