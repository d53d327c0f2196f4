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


# Rails: activejob/test/cases/test_helper_test.rb, EnqueuedJobsTest and PerformedJobsTest.


def test_assert_enqueued_jobs_with_only_and_except(jobs: JobRecorder) -> None:
    # test_assert_enqueued_jobs_with_only_option / _with_except_option / _with_only_and_queue_option
    WelcomeJob.perform_later(1)
    WelcomeJob.perform_later(2)
    FollowUpJob.perform_later(3)
    assert len(jobs.assert_enqueued_jobs(3)) == 3
    jobs.assert_enqueued_jobs(2, only=WelcomeJob)
    jobs.assert_enqueued_jobs(1, except_=WelcomeJob)
    jobs.assert_enqueued_jobs(3, only=[WelcomeJob, FollowUpJob])
    jobs.assert_enqueued_jobs(1, only=lambda job: job.arguments == [2])
    jobs.assert_enqueued_jobs(1, only=FollowUpJob, queue="later")
    jobs.assert_no_enqueued_jobs(only=WelcomeJob, queue="later")
    with pytest.raises(AssertionError, match="expected 1 job"):
        jobs.assert_enqueued_jobs(1, only=WelcomeJob)


def test_block_forms_count_only_what_the_block_did(jobs: JobRecorder) -> None:
    # test_assert_enqueued_jobs_with_block / test_assert_performed_jobs_with_block
    WelcomeJob.perform_later(1)
    with jobs.assert_enqueues(2, only=WelcomeJob):
        WelcomeJob.perform_later(2)
        WelcomeJob.perform_later(3)
        FollowUpJob.perform_later(4)
    with pytest.raises(AssertionError, match="expected 1 job"), jobs.assert_enqueues(1):
        pass
    with jobs.assert_performs(1, only=FollowUpJob):
        jobs.perform_enqueued()


def test_args_may_be_a_predicate(jobs: JobRecorder) -> None:
    # test_assert_enqueued_with_with_proc_args (a proc receives the job's arguments)
    WelcomeJob.perform_later(7, lang="fr")
    jobs.assert_enqueued(WelcomeJob, args=lambda args: args[0] > 5)
    with pytest.raises(AssertionError):
        jobs.assert_enqueued(WelcomeJob, args=lambda args: args[0] > 10)


def test_perform_enqueued_with_only_except_and_at(jobs: JobRecorder) -> None:
    # test_perform_enqueued_jobs_with_only / _with_except / _with_at
    now = datetime.now(timezone.utc)
    WelcomeJob.perform_later(1)
    FollowUpJob.set(wait=60).perform_later(2)
    FollowUpJob.set(wait=3600).perform_later(3)
    ran = jobs.perform_enqueued(except_=WelcomeJob, at=now + timedelta(minutes=5))
    assert [(type(job), job.arguments) for job in ran] == [(FollowUpJob, [2])]
    assert [e.arguments for e in jobs.adapter.pending] == [[1], [3]]  # still waiting
    assert [job.arguments for job in jobs.perform_enqueued(only=WelcomeJob)] == [[1]]
    jobs.assert_performed_jobs(2)
    jobs.assert_no_performed_jobs(only=lambda job: job.arguments == [3])
