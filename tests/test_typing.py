"""``perform_later`` is typed from ``perform``: mypy reports a wrong argument at the call site."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SNIPPET = textwrap.dedent(
    """
    from datetime import timedelta
    from jobadapter import Job

    class RemoteServiceJob(Job):
        def perform(self, record_id: int, *, lang: str = "en") -> None: ...

    class AsyncJob(Job):
        async def perform(self, name: str) -> None: ...

    job: RemoteServiceJob = RemoteServiceJob.perform_later(42, lang="fr")
    RemoteServiceJob.set(wait=timedelta(seconds=3)).perform_later(1)
    AsyncJob.perform_later("ok")

    RemoteServiceJob.perform_later("42")
    RemoteServiceJob.set(queue="low").perform_later(1, lang=2)
    AsyncJob.perform_later(3)
    RemoteServiceJob.perform_later()

    one: RemoteServiceJob = RemoteServiceJob(1).set(wait=5)
    one.enqueue(queue="low")
    RemoteServiceJob(1).perform_now()
    RemoteServiceJob.perform_now(1)
    RemoteServiceJob.set(priority=1).perform_now(2)

    RemoteServiceJob.perform_now("1")
    RemoteServiceJob(1).perform_now(2)
    RemoteServiceJob(1).set(wait="soon")
    """
)


FUNCTION_SNIPPET = textwrap.dedent(
    """
    from jobadapter import Job, job, retry_on

    @retry_on(TimeoutError)
    @job(queue="mail")
    def send_welcome(user_id: int, *, lang: str = "en") -> str: return lang

    @job
    async def refresh(name: str) -> None: ...

    text: str = send_welcome(1)
    queued: Job = send_welcome.perform_later(7, lang="fr")
    send_welcome.set(wait=3).perform_later(1)
    send_welcome.perform_now(2)
    refresh.perform_later("ok")

    send_welcome.perform_later("7")
    send_welcome.set(queue="low").perform_later(1, lang=2)
    send_welcome.perform_now()
    refresh.perform_later(3)
    number: int = send_welcome(1)
    """
)


def test_mypy_reports_wrong_arguments_and_accepts_right_ones(tmp_path: Path) -> None:
    result = _mypy(tmp_path, SNIPPET)
    errors = [line for line in result.splitlines() if ": error:" in line]
    lines = sorted(int(line.split(":")[1]) for line in errors)
    assert lines == [15, 16, 17, 18, 26, 27, 28], result
    assert 'incompatible type "str"; expected "int"' in result
    assert 'Argument "lang" to "perform_later" of "ConfiguredJob" has incompatible type "int"' in result


def test_mypy_types_a_function_job_from_its_function(tmp_path: Path) -> None:
    result = _mypy(tmp_path, FUNCTION_SNIPPET)
    errors = [line for line in result.splitlines() if ": error:" in line]
    lines = sorted(int(line.split(":")[1]) for line in errors)
    assert lines == [17, 18, 19, 20, 21], result
    assert (
        'Argument 1 to "perform_later" of "JobFunction" has incompatible type "str"; expected "int"' in result
    )
    assert 'Incompatible types in assignment (expression has type "str", variable has type "int")' in result


def _mypy(tmp_path: Path, snippet: str) -> str:
    source = tmp_path / "snippet.py"
    source.write_text(snippet)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--cache-dir",
            str(tmp_path / "cache"),
            str(source),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout
