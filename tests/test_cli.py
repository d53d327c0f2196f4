from __future__ import annotations

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


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "worker" in capsys.readouterr().out
