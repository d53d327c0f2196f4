"""The conformance suite passes on the in-process adapters, and catches a broken adapter."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from jobadapter import config
from jobadapter.conformance.matrix import load_runs, render


def _run_suite(tmp_path: Path, *arguments: str) -> tuple[int, list[dict[str, Any]]]:
    results = tmp_path / "results.json"
    completed = subprocess.run(
        [sys.executable, "-m", "jobadapter.cli", "conformance", *arguments, "--results", str(results)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert results.exists(), completed.stdout + completed.stderr
    return completed.returncode, json.loads(results.read_text())["runs"]


def _outcomes(run: dict[str, Any]) -> dict[str, str]:
    return {name: result["outcome"] for name, result in run["scenarios"].items()}


def test_inline_and_async_pass_every_scenario_they_declare(tmp_path: Path) -> None:
    code, runs = _run_suite(tmp_path, "--url", "async://?workers=4", "--url", "inline://")
    assert code == 0
    for run in runs:
        capabilities = set(run["capabilities"])
        for name, result in run["scenarios"].items():
            if set(result["requires"]) <= capabilities:
                assert result["outcome"] == "passed", f"{run['label']} {name}: {result['message']}"
            else:
                assert result["outcome"] == "unsupported", f"{run['label']} {name}"
    async_run, inline_run = runs
    assert _outcomes(async_run)["test_wait_delays_the_job"] == "passed"
    assert _outcomes(inline_run)["test_wait_delays_the_job"] == "unsupported"
    assert _outcomes(async_run)["test_job_survives_a_killed_worker"] == "unsupported"
    matrix = render(runs)
    assert "| async / in-process | inline / in-process |" in matrix
    assert re.search(
        r"\| set\(wait=…\) runs the job no sooner .* \| ✅(\[\^\d+\])? \| ➖(\[\^\d+\])? \|", matrix
    )


BROKEN_ADAPTER = textwrap.dedent(
    '''
    """An adapter that loses delayed jobs and retries: the suite must catch it."""
    from jobadapter import config
    from jobadapter.adapters.async_ import AsyncAdapter
    from jobadapter.adapters.base import Capability


    class DropsDelayedJobs(AsyncAdapter):
        name = "Broken"
        capabilities = AsyncAdapter.capabilities | {Capability.DELAYED}

        def enqueue_at(self, envelope, at, options):
            return envelope.job_id


    config.register_adapter("broken", DropsDelayedJobs)
    '''
)


def test_a_broken_adapter_fails_the_right_scenarios(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken_adapter.py").write_text(BROKEN_ADAPTER)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    results = tmp_path / "results.json"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "broken_adapter",
            "-p",
            "jobadapter.conformance",
            "--jobadapter-url",
            "broken://",
            "--jobadapter-results",
            str(results),
            "--jobadapter-timeout",
            "3",
            "-q",
            "-p",
            "no:cacheprovider",
            "-k",
            "wait or retry or arguments",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 1, completed.stdout[-3000:]
    (run,) = json.loads(results.read_text())["runs"]
    outcomes = _outcomes(run)
    failed = sorted(name for name, outcome in outcomes.items() if outcome == "failed")
    assert failed == [
        "test_retry_callable_delay",
        "test_retry_fixed_delay",
        "test_retry_on_attempt_counts_and_stable_job_id",
        "test_retry_polynomial_delay",
        "test_wait_delays_the_job",
        "test_wait_until_schedules_the_job",
    ]
    assert outcomes["test_perform_later_with_arguments"] == "passed"
    assert "timed out" in run["scenarios"]["test_wait_delays_the_job"]["message"]
    assert "❌" in render(load_runs([results]))


def test_matrix_command_renders_results_files(tmp_path: Path) -> None:
    results = tmp_path / "r.json"
    run = {
        "adapter": "demo",
        "transport": "memory",
        "label": "demo / memory",
        "slug": "demo-memory",
        "url": "demo://",
        "date": "2026-11-29",
        "versions": {"jobadapter": "0.1.0"},
        "capabilities": ["delayed"],
        "notes": {"delayed": "a sorted set"},
        "scenarios": {
            "test_a": {"feature": "Scheduling", "requires": ["delayed"], "doc": "waits", "outcome": "passed"},
            "test_b": {
                "feature": "Routing",
                "requires": ["queues"],
                "doc": "routes",
                "outcome": "unsupported",
            },
            "test_c": {"feature": "Routing", "requires": [], "doc": "breaks", "outcome": "failed"},
        },
    }
    results.write_text(json.dumps({"jobadapter_conformance": 1, "runs": [run]}))
    completed = subprocess.run(
        [sys.executable, "-m", "jobadapter.cli", "matrix", str(results)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "| waits | ✅[^1] |" in completed.stdout
    assert "| routes | ➖ |" in completed.stdout
    assert "| breaks | ❌ |" in completed.stdout
    assert "[^1]: demo / memory, delayed: a sorted set" in completed.stdout
    assert "| **Routing** |" in completed.stdout


def test_register_adapter_refuses_non_adapters() -> None:
    from jobadapter import ConfigurationError

    with pytest.raises(ConfigurationError, match="is not an Adapter class"):
        config.register_adapter("bad", dict)  # type: ignore[arg-type]
