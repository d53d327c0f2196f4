"""Run the fault experiments on one adapter URL, and render their results.

A results file holds ``{"jobadapter_faults": 1, "runs": [...]}``, one run per
adapter URL, each with an entry per experiment (``outcome`` passed, failed or
unsupported, a ``message`` saying what failed, and the measured figures).
``jobadapter matrix`` renders these files as the "Faults" table of
``compat_matrix.md``, beside the conformance results.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from jobadapter import config
from jobadapter.faults import EXPERIMENTS, barrage, outage, storm
from jobadapter.faults.setup import stage


def run_url(
    url: str,
    *,
    experiments: Sequence[str] = EXPERIMENTS,
    jobs: int = 300,
    kills: int = 15,
    interval: float = 2.0,
    outage_seconds: float = 5.0,
    control_bound: float = 1.0,
) -> dict[str, Any]:
    """Every experiment asked for, each on a fresh stage; the run's results entry."""
    adapter = config.build_adapter(url)
    try:
        parsed = adapter.url
        packages = ("jobadapter", *adapter.backend_packages)
        entry: dict[str, Any] = {
            "adapter": parsed.adapter,
            "transport": parsed.transport or "in-process",
            "label": f"{parsed.adapter} / {parsed.transport or 'in-process'}",
            "slug": f"{parsed.adapter}-{parsed.transport or 'in-process'}",
            "url": parsed.redacted,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            "versions": {name: _version(name) for name in packages},
        }
    finally:
        adapter.close()
    for name in experiments:
        started = time.monotonic()
        with (
            tempfile.TemporaryDirectory(prefix=f"jobadapter-faults-{name}-") as folder,
            stage(url, Path(folder), persistent=name == "outage") as where,
            config.override(where.backend.adapter),
        ):
            if name == "storm":
                result = storm.run(where, jobs=jobs, kills=kills, interval=interval)
            elif name == "outage":
                result = outage.run(where, seconds=outage_seconds)
            else:
                result = barrage.run(where, control_bound=control_bound)
        result["seconds"] = result.get("seconds", round(time.monotonic() - started, 1))
        entry[name] = result
    return entry


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def write(path: Path, runs: Sequence[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"jobadapter_faults": 1, "runs": list(runs)}, indent=2) + "\n")


def is_results(document: object) -> bool:
    return isinstance(document, dict) and document.get("jobadapter_faults") == 1


def summary(run: dict[str, Any]) -> str:
    """A few lines for the terminal: each experiment's outcome, figures and problems."""
    lines = [f"{run['label']}:"]
    for name in EXPERIMENTS:
        result = run.get(name)
        if result is None:
            continue
        lines.append(f"  {result['outcome']:<12} {name:<8} {_figures(name, result)}")
        if result.get("message") and result["outcome"] != "unsupported":
            lines += [f"      {line}" for line in str(result["message"]).splitlines()[:12]]
    return "\n".join(lines)


def _figures(name: str, result: dict[str, Any]) -> str:
    if result["outcome"] == "unsupported":
        return str(result.get("message", ""))
    if name == "storm":
        return (
            f"{result['jobs']} jobs, {result['kills']} whole-tree kills: {result['lost']} lost, "
            f"{result['duplicates']} duplicates, {result['seconds']} s"
        )
    if name == "outage":
        return (
            f"{result['outage_seconds']:g} s down: {result['calls']} enqueues "
            f"({result['returned']} returned, {result['enqueue_errors']} EnqueueError, slowest "
            f"{result['slowest_call_seconds']} s), {result['lost']} lost, "
            f"{result['worker_log_lines_during_outage']} log lines, SIGTERM during/after "
            f"{result['sigterm_during_seconds']}/{result['sigterm_after_seconds']} s"
        )
    controls = [row["control_seconds"] for row in result["kinds"] if row["control_seconds"] is not None]
    slowest = f", slowest control job {max(controls):.2f} s" if controls else ""
    return f"{result['passed']}/{result['total']} kinds handled, {result['imports']} imports{slowest}"


HEADING = "## Faults\n"
"""Where the fault section of ``compat_matrix.md`` starts (``jobadapter matrix --update``)."""


def render(runs: Sequence[dict[str, Any]]) -> str:
    """The "Faults" section of ``compat_matrix.md``."""
    symbols = {"passed": "✅", "failed": "❌", "unsupported": "➖"}
    header = "| experiment | " + " | ".join(run["label"] for run in runs) + " |"
    lines = [
        HEADING.rstrip("\n"),
        "",
        "Generated by `jobadapter matrix` from `jobadapter faults` results (`nox -s faults`).",
        "",
        header,
        "|---|" + "---|" * len(runs),
    ]
    for name, title in (
        ("storm", "kill storm: jobs lost / duplicates (jobs, whole-tree SIGKILLs)"),
        ("outage", "broker outage: jobs lost; perform_later bounded; worker recovers"),
        ("hostile", "hostile messages: handled / kinds (imports)"),
    ):
        cells = []
        for run in runs:
            result = run.get(name)
            if result is None:
                cells.append("⚪")
                continue
            cell = symbols.get(result["outcome"], "⚪")
            if result["outcome"] != "unsupported":
                cell += " " + _cell(name, result)
            cells.append(cell)
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(name: str, result: dict[str, Any]) -> str:
    if name == "storm":
        return f"{result['lost']} / {result['duplicates']} ({result['jobs']}, {result['kills']})"
    if name == "outage":
        return f"{result['lost']} lost, slowest call {result['slowest_call_seconds']} s"
    return f"{result['passed']}/{result['total']} ({result['imports']})"
