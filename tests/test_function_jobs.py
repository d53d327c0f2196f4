"""``@job``: a module-level function as a job, with the same name, registry, envelope and
rescue rules as a class, and a plain call that still just runs the function."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from jobadapter import ConfigurationError, JobFunction, discard_on, job, perform_all_later, registry, retry_on
from jobadapter.faults.brokers import PrivateRedis
from jobadapter.functions import FunctionJob
from jobadapter.testing import JobRecorder
from tests.function_jobs_for_tests import CALLS, Flaky, double_later, note_until, send_welcome

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _no_calls() -> None:
    CALLS.clear()


def test_a_plain_call_runs_the_function_and_enqueues_nothing(jobs: JobRecorder) -> None:
    assert send_welcome(7, lang="fr") == "welcome 7 (fr)"
    assert CALLS == [("send_welcome", (7, "fr"))]
    jobs.assert_no_enqueued_jobs()
    assert send_welcome.__name__ == "send_welcome" and send_welcome.__doc__ is None
    assert send_welcome.__wrapped__ is send_welcome.function


def test_the_job_class_is_named_and_registered_after_the_function() -> None:
    job_class = send_welcome.job_class
    assert issubclass(job_class, FunctionJob)
    assert job_class.job_name == "tests.function_jobs_for_tests.send_welcome"
    assert (job_class.__module__, job_class.__qualname__) == ("tests.function_jobs_for_tests", "send_welcome")
    assert registry.lookup(job_class.job_name) is job_class
    assert (job_class.queue_as, job_class.priority) == ("mail", 5)


def test_the_bases_of_function_jobs_are_not_jobs_a_payload_may_name() -> None:
    names = registry.registered()
    assert "jobadapter.functions.FunctionJob" not in names
    assert "jobadapter.functions.AsyncFunctionJob" not in names
    assert names["tests.function_jobs_for_tests.double_later"] is double_later.job_class


def test_perform_later_enqueues_an_envelope_that_runs_the_function(jobs: JobRecorder) -> None:
    enqueued = send_welcome.perform_later(7, lang="fr")
    assert enqueued.successfully_enqueued and CALLS == []
    jobs.assert_enqueued(send_welcome, args=[7], kwargs={"lang": "fr"}, queue="mail", priority=5, count=1)
    jobs.perform_enqueued()
    assert CALLS == [("send_welcome", (7, "fr"))]
    jobs.assert_performed(send_welcome, count=1)
    assert jobs.assert_performed_jobs(1, only=send_welcome)[0].job_id == enqueued.job_id


def test_set_applies_wait_queue_and_priority(jobs: JobRecorder) -> None:
    send_welcome.set(wait=timedelta(minutes=5), queue="low", priority=1).perform_later(8)
    [enqueued] = jobs.assert_enqueued(send_welcome, args=[8], queue="low", priority=1)
    assert enqueued.scheduled_at is not None


def test_perform_now_runs_it_as_a_job_with_its_rescue_rules(tmp_path: Path, jobs: JobRecorder) -> None:
    notes = tmp_path / "notes"
    assert note_until.perform_now(str(notes), 2) is None
    assert notes.read_text() == "attempt\n"
    [retry] = jobs.assert_enqueued(note_until, args=[str(notes), 2])  # retry_on above @job
    assert retry.exception_executions == {"[tests.function_jobs_for_tests.Flaky]": 1}
    jobs.perform_enqueued()
    assert notes.read_text() == "attempt\nattempt\ndone\n"


def test_retry_on_exhausted_raises_to_the_backend_like_a_class_job(tmp_path: Path, jobs: JobRecorder) -> None:
    note_until.perform_later(str(tmp_path / "notes"), 9)
    with pytest.raises(Flaky, match="attempt 3"):
        jobs.perform_enqueued()
    jobs.assert_performed_jobs(3, only=note_until)


def test_discard_on_stacked_on_top_discards() -> None:
    @discard_on(KeyError)
    @job
    def lookup_user(user_id: int) -> None:
        raise KeyError(user_id)

    assert lookup_user.perform_now(3) is None
    with pytest.raises(KeyError):
        lookup_user(3)  # a plain call has no rescue rules


def test_an_async_function_job_is_awaited(jobs: JobRecorder) -> None:
    assert double_later.perform_now(21) == 42
    double_later.perform_later(2)
    jobs.perform_enqueued()
    assert CALLS == [("double_later", 21), ("double_later", 2)]


def test_options_name_and_bulk_enqueue(jobs: JobRecorder) -> None:
    @job(name="billing.charge", queue="billing", store_result=True, log_arguments=False)
    def charge(amount: int) -> int:
        return amount

    assert isinstance(charge, JobFunction)
    assert (
        charge.job_class.job_name == "billing.charge"
        and registry.lookup("billing.charge") is charge.job_class
    )
    assert charge.job_class.store_result and not charge.job_class.log_arguments
    assert perform_all_later([charge.job_class(1), send_welcome.job_class(2)]) == 2
    jobs.assert_enqueued(charge, args=[1], queue="billing")
    jobs.assert_enqueued(send_welcome, args=[2], queue="mail")


def test_what_job_refuses_is_named() -> None:
    with pytest.raises(ConfigurationError, match="cannot take a lambda"):
        job(lambda: None)
    with pytest.raises(ConfigurationError, match="subclass Job"):
        job(dict)
    with pytest.raises(ConfigurationError, match="apply @job once"):
        job(send_welcome)

    class Mailer:
        def send(self) -> None: ...

    with pytest.raises(ConfigurationError, match=r"module-level functions, not the method .*Mailer.send"):
        job(Mailer.send)


def test_a_rescue_rule_below_job_says_to_write_it_above() -> None:
    def plain() -> None: ...

    with pytest.raises(ConfigurationError, match="written above @job"):
        retry_on(ValueError)(plain)


def test_a_function_job_runs_on_a_real_rq_worker(tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    with PrivateRedis(persistent=False) as redis:
        url = f"rq+{redis.url}"
        environment = {**os.environ, "JOBADAPTER_URL": url, "PYTHONPATH": str(ROOT)}
        environment.pop("JOBADAPTER_JOURNAL", None)
        enqueue = (
            "from tests.function_jobs_for_tests import note_until\n"
            f"print(note_until.perform_later({str(notes)!r}, 2).job_id)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", enqueue],
            cwd=ROOT,
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        worker = subprocess.run(
            [
                str(Path(sys.executable).parent / "jobadapter"),
                "worker",
                "--app",
                "tests.function_jobs_for_tests",
                "--burst",
            ],
            cwd=ROOT,
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
        )
        output = worker.stdout + worker.stderr
        deadline = time.monotonic() + 10
        while "done" not in (notes.read_text() if notes.exists() else "") and time.monotonic() < deadline:
            time.sleep(0.05)
    assert notes.read_text() == "attempt\nattempt\ndone\n", output[-3000:]
    assert "tests.function_jobs_for_tests.note_until" in output
