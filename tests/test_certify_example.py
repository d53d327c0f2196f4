"""An adapter in a separate, uninstalled package, with its own worker processes, is certified
the way docs/certify.md says: ``jobadapter conformance --plugin MODULE`` and ``pytest -p MODULE``.

The subject is examples/litequeue (a SQLite-file queue). Each form runs a few scenarios here;
``jobadapter conformance`` on the whole suite is what docs/certify.md shows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "litequeue"
SCENARIOS = "test_perform_later_with_arguments or test_malformed_payload or test_enqueue_all_publishes"


def _start(command: list[str], folder: Path) -> subprocess.Popen[str]:
    environment = dict(os.environ, PYTHONPATH=str(EXAMPLE))  # importable, not installed: no entry point
    environment.pop("JOBADAPTER_PLUGINS", None)
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=folder, env=environment
    )


def _finish(process: subprocess.Popen[str], results: Path) -> tuple[str, dict[str, Any]]:
    output, _ = process.communicate(timeout=180)
    assert process.returncode == 0, output[-4000:]
    (run,) = json.loads(results.read_text())["runs"]
    return output, run


def test_an_uninstalled_adapter_with_its_own_workers_is_certified(tmp_path: Path) -> None:
    cli_folder, pytest_folder = tmp_path / "cli", tmp_path / "pytest"
    cli_folder.mkdir()
    pytest_folder.mkdir()
    cli = _start(
        [
            sys.executable,
            "-m",
            "jobadapter.cli",
            "conformance",
            "--plugin",
            "jobadapter_litequeue",
            "--url",
            f"litequeue+sqlite:///{cli_folder}/queue.db",
            "--results",
            "cli.json",
            "-k",
            SCENARIOS,
            "--jobadapter-timeout",
            "10",  # a pytest option, passed on
        ],
        cli_folder,
    )
    plugin = _start(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "jobadapter_litequeue",
            "-p",
            "jobadapter.conformance",
            "-p",
            "no:cacheprovider",
            "--jobadapter-url",
            f"litequeue+sqlite:///{pytest_folder}/queue.db",
            "--jobadapter-results",
            "pytest.json",
            "-k",
            SCENARIOS,
            "-q",
        ],
        pytest_folder,
    )
    cli_output, cli_run = _finish(cli, cli_folder / "cli.json")
    _, pytest_run = _finish(plugin, pytest_folder / "pytest.json")
    for run in (cli_run, pytest_run):
        assert run["label"] == "litequeue / sqlite"
        assert "external_worker" in run["capabilities"]
        outcomes = {name: result["outcome"] for name, result in run["scenarios"].items()}
        assert outcomes == {
            "test_perform_later_with_arguments": "passed",
            "test_malformed_payload": "passed",
            "test_enqueue_all_publishes_a_batch_in_one_round_trip": "passed",
        }
    assert "litequeue / sqlite: 3 passed" in cli_output


def test_a_worker_without_the_plugin_names_the_way_to_load_it(tmp_path: Path) -> None:
    environment = dict(os.environ, PYTHONPATH=str(EXAMPLE))
    environment.pop("JOBADAPTER_PLUGINS", None)
    url = f"litequeue+sqlite:///{tmp_path}/queue.db"
    command = [sys.executable, "-m", "jobadapter.cli", "worker", "--url", url, "--app", "json", "--burst"]
    missing = subprocess.run(
        command, capture_output=True, text=True, env=environment, timeout=60, check=False
    )
    assert missing.returncode == 2
    assert "no adapter for URL scheme 'litequeue'" in missing.stderr
    assert "--plugin MODULE or JOBADAPTER_PLUGINS" in missing.stderr
    loaded = subprocess.run(
        [*command, "--plugin", "jobadapter_litequeue"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=False,
    )
    assert loaded.returncode == 0, loaded.stderr
    assert "LiteQueue" in loaded.stderr + loaded.stdout
