from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from jobadapter import Job
from jobadapter.testing import JobRecorder


class WelcomeJob(Job):
    def perform(self, user_id: int, *, lang: str = "en") -> None:
        if user_id == 99:
            FollowUpJob.set(wait=60).perform_later(user_id)


class FollowUpJob(Job):
    queue_as = "later"

    def perform(self, user_id: int) -> None: ...


def test_the_design_example(jobs: JobRecorder) -> None:
    WelcomeJob.perform_later(7, lang="en")
    jobs.assert_enqueued(WelcomeJob, args=(7,), kwargs={"lang": "en"}, queue="default")
    jobs.perform_enqueued()
    jobs.assert_performed(WelcomeJob, count=1)
    assert [type(j) for j in jobs.enqueued] == [WelcomeJob]
    assert [type(j) for j in jobs.performed] == [WelcomeJob]


def test_perform_enqueued_runs_what_jobs_enqueue_in_scheduled_order(jobs: JobRecorder) -> None:
    FollowUpJob.set(wait=120).perform_later(1)
    WelcomeJob.perform_later(99)
    assert [e.job_class for e in jobs.adapter.pending] == [WelcomeJob.job_name, FollowUpJob.job_name]
    jobs.perform_enqueued()
    assert jobs.adapter.pending == []
    assert [(type(j).__name__, j.arguments) for j in jobs.performed] == [
        ("WelcomeJob", [99]),
        ("FollowUpJob", [99]),
        ("FollowUpJob", [1]),
    ]
    jobs.assert_enqueued(FollowUpJob, at=datetime.now(timezone.utc) + timedelta(seconds=60), args=[99])


def test_assertions_fail_with_a_listing(jobs: JobRecorder) -> None:
    WelcomeJob.perform_later(1)
    with pytest.raises(
        AssertionError, match=r"expected at least one WelcomeJob enqueued with \{'args': \(2,\)\}, found 0"
    ):
        jobs.assert_enqueued(WelcomeJob, args=(2,))
    with pytest.raises(AssertionError, match="exactly 2"):
        jobs.assert_enqueued(WelcomeJob, count=2)
    with pytest.raises(AssertionError, match="WelcomeJob args=\\[1\\]"):
        jobs.assert_enqueued(WelcomeJob, queue="other")
    jobs.assert_enqueued(FollowUpJob, count=0)
    jobs.assert_performed(WelcomeJob, count=0)


def test_unserializable_argument_fails_under_the_fixture(jobs: JobRecorder) -> None:
    from jobadapter import SerializationError

    with pytest.raises(SerializationError):
        WelcomeJob.perform_later(object())  # type: ignore[arg-type]


def test_the_fixture_is_registered_through_pytest11(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from jobadapter import Job

        class Ping(Job):
            def perform(self, n):
                pass

        def test_ping(jobs):
            Ping.perform_later(3)
            jobs.assert_enqueued(Ping, args=[3])
            jobs.perform_enqueued()
            jobs.assert_performed(Ping, count=1)

        def test_ping_fails(jobs):
            jobs.assert_enqueued(Ping)
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
