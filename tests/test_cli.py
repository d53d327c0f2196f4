from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from jobadapter.cli import main


def test_worker_on_an_in_process_adapter_explains_why_not(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker", "--url", "async://", "--app", "tests.jobs_for_tests"]) == 2
    assert "runs jobs in the enqueuing process; it has no separate worker" in capsys.readouterr().err


def test_worker_names_an_app_module_that_does_not_import(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker", "--url", "inline://", "--app", "tests.jobs_for_tests,no_such_module_xyz"]) == 2
    assert "--app 'no_such_module_xyz' could not be imported" in capsys.readouterr().err


def test_worker_refuses_bad_concurrency_and_urls(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker", "--url", "inline://", "--app", "x", "--concurrency", "0"]) == 2
    assert "--concurrency must be at least 1" in capsys.readouterr().err
    assert main(["worker", "--url", "nosuch://", "--app", "x"]) == 2
    assert "no adapter for URL scheme 'nosuch'" in capsys.readouterr().err


def test_only_the_conformance_command_passes_unknown_options_on(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["worker", "--url", "inline://", "--app", "x", "--jobadapter-timeout", "30"])
    assert exited.value.code == 2
    assert "unrecognized arguments: --jobadapter-timeout 30" in capsys.readouterr().err


def test_a_plugin_module_that_does_not_import_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker", "--url", "inline://", "--app", "x", "--plugin", "no_such_plugin_xyz"]) == 2
    assert "plugin module 'no_such_plugin_xyz' could not be imported" in capsys.readouterr().err


def test_worker_takes_its_url_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JOBADAPTER_URL", raising=False)
    assert main(["worker", "--app", "x"]) == 2
    assert "no adapter URL: pass --url or set JOBADAPTER_URL" in capsys.readouterr().err
    monkeypatch.setenv("JOBADAPTER_URL", "async://")
    assert main(["worker", "--app", "tests.jobs_for_tests"]) == 2
    assert "runs jobs in the enqueuing process" in capsys.readouterr().err


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "worker" in capsys.readouterr().out


HELP_COMMANDS = [
    [],
    *([name] for name in ("worker", "conformance", "faults", "matrix", "journal", "queues", "jobs", "job")),
    *([name] for name in ("retry", "discard", "run-now", "pause", "resume")),
    ["journal", "migrate"],
]


@pytest.mark.parametrize("command", HELP_COMMANDS, ids=lambda command: " ".join(command) or "jobadapter")
def test_help_is_plain_text(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    shown = capsys.readouterr().out
    assert shown.startswith("usage: jobadapter")
    for markup in ("``", ":class:", ":func:", ":meth:", "`jobadapter"):
        assert markup not in shown, f"reStructuredText {markup!r} in: {shown}"


FORKING_PROGRAM = """
import logging, os
from jobadapter.worker_logging import queued_output

with queued_output("INFO", "%(levelname)s %(message)s"):
    log = logging.getLogger("jobadapter")
    log.info("parent before the fork")
    child = os.fork()
    if child == 0:
        log.info("child %d", os.getpid())
        os._exit(0)  # as RQ's work horse and Celery's pool processes end: no atexit, no flush
    os.waitpid(child, 0)
    log.info("parent after the fork")
print(child)
"""


def test_worker_log_output_reaches_stderr_from_the_parent_and_from_a_forked_child() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", FORKING_PROGRAM], capture_output=True, text=True, timeout=30, check=True
    )
    child = completed.stdout.strip()
    assert sorted(completed.stderr.splitlines()) == sorted(
        ["INFO parent before the fork", f"INFO child {child}", "INFO parent after the fork"]
    )


def test_conformance_shows_a_line_per_scenario_and_where_the_results_went(tmp_path: Path) -> None:
    results = tmp_path / "inline.json"
    command = [sys.executable, "-m", "jobadapter.cli", "conformance", "--url", "inline://"]
    command += ["-k", "perform_later_with_arguments or priority_order", "--results", str(results)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    first = r"\s+1/2\s+passed\s+\d+\.\d s\s+inline://\s+test_perform_later_with_arguments$"
    second = r"\s+2/2\s+unsupported\s+\d+\.\d s\s+inline://\s+test_priority_order$"
    assert any(re.match(first, line) for line in lines), done.stdout
    assert any(re.match(second, line) for line in lines), done.stdout
    assert not any(line and set(line) <= {".", "U"} for line in lines), "pytest's letters are shown too"
    assert lines[-1] == f"Results: {results}"
