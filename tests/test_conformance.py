"""The conformance suite passes on the in-process adapters, and catches a broken adapter."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from jobadapter import config
from jobadapter.cli import main
from jobadapter.conformance.matrix import load_runs, render
from tests.journal_support import store_url

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "litequeue"


def _run_suite(tmp_path: Path, *arguments: str) -> tuple[int, list[dict[str, Any]]]:
    (ran,) = _run_suites(tmp_path, list(arguments))
    return ran


def _run_suites(tmp_path: Path, *argument_lists: list[str]) -> list[tuple[int, list[dict[str, Any]]]]:
    """``jobadapter conformance`` once per argument list, all at once (each its own folder)."""
    started = []
    for index, arguments in enumerate(argument_lists):
        folder = tmp_path / f"run-{index}"
        folder.mkdir()
        results = folder / "results.json"
        command = [
            sys.executable,
            "-m",
            "jobadapter.cli",
            "conformance",
            *arguments,
            "--results",
            str(results),
        ]
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=folder
        )
        started.append((process, results))
    finished = []
    for process, results in started:
        output, _ = process.communicate(timeout=300)
        assert results.exists(), output
        finished.append((process.returncode, json.loads(results.read_text())["runs"]))
    return finished


def _outcomes(run: dict[str, Any]) -> dict[str, str]:
    return {name: result["outcome"] for name, result in run["scenarios"].items()}


def test_inline_and_async_pass_every_scenario_they_declare(tmp_path: Path) -> None:
    code, runs = _run_suite(tmp_path, "--url", "async://?workers=4", "--url", "inline://")
    assert code == 0
    for run in runs:
        capabilities = set(run["capabilities"])
        for name, result in run["scenarios"].items():
            if name == "test_an_unreachable_broker_raises_enqueue_error_in_time":
                assert result["outcome"] == "unsupported", "an in-process adapter has no broker to lose"
            elif set(result["requires"]) <= capabilities:
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
            "(wait or retry or arguments) and not scenarios_operations",
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
        "test_retry_job_from_a_rescue_handler",
        "test_retry_on_attempt_counts_and_stable_job_id",
        "test_retry_polynomial_delay",
        "test_wait_delays_the_job",
        "test_wait_until_schedules_the_job",
    ]
    assert outcomes["test_perform_later_with_arguments"] == "passed"
    assert "timed out" in run["scenarios"]["test_wait_delays_the_job"]["message"]
    assert "❌" in render(load_runs([results]))


OVERCLAIMING_ADAPTER = textwrap.dedent(
    '''
    """Adapters that claim what they do not do: bulk without batching, a close() that does not
    close, any option accepted, hostile messages that never reach the failed store."""
    from jobadapter import config
    from jobadapter.adapters.async_ import AsyncAdapter
    from jobadapter.adapters.base import Capability
    from jobadapter.faults.hostile import HostileMessage
    from jobadapter_litequeue import LiteQueueAdapter


    class Overclaims(AsyncAdapter):
        name = "Overclaims"
        capabilities = AsyncAdapter.capabilities | {Capability.BULK}

        def close(self, timeout=None):
            pass

        def check_options(self, options):
            pass


    config.register_adapter("overclaims", Overclaims)


    class LosesHostileMessages(LiteQueueAdapter):
        """Says a malformed message of its wire format reaches the failed store; it never does."""

        def hostile_messages(self):
            return [HostileMessage("lost", "a message the adapter never publishes", lambda q, m: None)]


    config.register_adapter("loseshostile", LosesHostileMessages)
    '''
)


def test_claims_an_adapter_does_not_keep_fail_their_scenarios(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "overclaiming_adapter.py").write_text(OVERCLAIMING_ADAPTER)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), str(EXAMPLE)]))
    results = tmp_path / "results.json"
    completed = subprocess.run(
        [
            *(sys.executable, "-m", "jobadapter.cli", "conformance", "--plugin", "overclaiming_adapter"),
            *("--url", "overclaims://", "--url", f"loseshostile+sqlite:///{tmp_path}/queue.db"),
            *("--results", str(results), "--jobadapter-timeout", "3"),
            *("-k", "scenarios_contract and overclaims or backend_level_hostile and loseshostile"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 1, completed.stdout[-3000:]
    run, hostile = json.loads(results.read_text())["runs"]
    assert _outcomes(run) == {
        "test_enqueue_all_publishes_a_batch_in_one_round_trip": "failed",
        "test_an_unreachable_broker_raises_enqueue_error_in_time": "unsupported",
        "test_a_closed_adapter_refuses_jobs": "failed",
        "test_unknown_adapter_options_are_refused": "failed",
    }
    message = run["scenarios"]["test_enqueue_all_publishes_a_batch_in_one_round_trip"]["message"]
    assert "counted 0 batches in published_batches" in message
    assert _outcomes(hostile) == {"test_backend_level_hostile_messages": "failed"}
    message = hostile["scenarios"]["test_backend_level_hostile_messages"]["message"]
    assert "not in the failed store after 3 s: lost (a message the adapter never publishes)" in message


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


def _demo_run(adapter: str, outcome: str) -> dict[str, Any]:
    return {
        "adapter": adapter,
        "transport": "file",
        "label": f"{adapter} / file",
        "date": "2026-11-29",
        "versions": {"jobadapter": "0.1.0"},
        "capabilities": [],
        "notes": {},
        "scenarios": {
            "test_a": {"feature": "Enqueue", "requires": [], "doc": "enqueues", "outcome": outcome}
        },
    }


def test_matrix_add_files_a_new_column_beside_the_published_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # compat/results/ and compat_matrix.md are the current folder's
    published = tmp_path / "compat" / "results"
    published.mkdir(parents=True)
    (published / "kept-file.json").write_text(
        json.dumps({"jobadapter_conformance": 1, "runs": [_demo_run("kept", "passed")]})
    )
    (tmp_path / "compat_matrix.md").write_text("# Compatibility matrix\n\nold\n\n## Faults\n\nkept section\n")
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps({"jobadapter_conformance": 1, "runs": [_demo_run("../../Mine", "failed")]}))

    assert main(["matrix", "--add", str(mine)]) == 0
    assert "added compat/results/mine-file.json" in capsys.readouterr().err
    assert sorted(path.name for path in published.iterdir()) == ["kept-file.json", "mine-file.json"]
    text = (tmp_path / "compat_matrix.md").read_text()
    assert "| enqueues | ✅ | ❌ |" in text
    assert "| scenario | kept / file | ../../Mine / file |" in text
    assert "## Faults\n\nkept section" in text
    (tmp_path / "other.json").write_text("{}")
    assert main(["matrix", "--add", "other.json"]) == 2
    assert "other.json is not a conformance results file" in capsys.readouterr().err
    assert main(["matrix"]) == 2
    assert "give results files to render, or --add RESULTS" in capsys.readouterr().err


def test_register_adapter_refuses_non_adapters() -> None:
    from jobadapter import ConfigurationError

    with pytest.raises(ConfigurationError, match="is not an Adapter class"):
        config.register_adapter("bad", dict)  # type: ignore[arg-type]


def test_shards_split_the_scenarios_without_overlap(tmp_path: Path) -> None:
    *parts, (_, (whole,)) = _run_suites(
        tmp_path,
        *[["--url", "inline://", "--shard", f"{index}/3"] for index in (1, 2, 3)],
        ["--url", "inline://"],
    )
    assert [code for code, _ in parts] == [0, 0, 0]
    shares = [set(run["scenarios"]) for _, (run,) in parts]
    assert shares[0] | shares[1] | shares[2] == set(whole["scenarios"])
    assert sum(len(share) for share in shares) == len(whole["scenarios"])
    assert all(len(share) >= len(whole["scenarios"]) // 3 for share in shares)


def test_the_operations_group_passes_with_a_postgresql_journal(tmp_path: Path) -> None:
    """The Operations scenarios (a stored result among them) with the journal on PostgreSQL,
    as the default run has it on SQLite."""
    with store_url("postgresql", tmp_path) as url:
        code, (run,) = _run_suite(
            tmp_path, "--url", "async://?workers=4", "-k", "scenarios_operations", "--journal", url
        )
    assert code == 0
    assert len(run["scenarios"]) >= 9
    assert set(_outcomes(run).values()) == {"passed"}
