from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from jobadapter import (
    Abort,
    AdapterClosedError,
    ConfigurationError,
    EnqueueError,
    Job,
    SerializationError,
    before_enqueue,
    config,
    perform_all_later,
)
from jobadapter.adapters.base import Adapter
from jobadapter.testing import JobRecorder
from tests.jobs_for_tests import LOG, AsyncRecordingJob, RecordingJob


class ReportJob(Job):
    queue_as = "reports"
    priority = 5

    def perform(self, record_id: int, *, lang: str = "en") -> None:
        LOG.append(("report", record_id))


class DynamicQueueJob(Job):
    def queue_as(self) -> str:  # type: ignore[override]
        return "urgent" if self.arguments[0] > 10 else "relaxed"

    def perform(self, size: int) -> None: ...


class LambdaQueueJob(Job):
    queue_as = staticmethod(lambda job: f"q{job.arguments[0]}")

    def perform(self, n: int) -> None: ...


def test_perform_later_returns_the_job_with_its_attributes(jobs: JobRecorder) -> None:
    before = datetime.now(timezone.utc)
    job = ReportJob.perform_later(42, lang="fr")
    assert isinstance(job, ReportJob)
    assert len(job.job_id) == 36 and job.job_id.count("-") == 4
    assert job.provider_job_id == "test-0"
    assert job.arguments == [42]
    assert job.keyword_arguments == {"lang": "fr"}
    assert job.queue_name == "reports"
    assert job.priority == 5
    assert job.enqueued_at is not None and job.enqueued_at >= before
    assert job.enqueued_at.tzinfo is timezone.utc
    assert job.scheduled_at is None
    assert job.executions == 0
    assert job.exception_executions == {}
    assert job.successfully_enqueued is True
    assert job.enqueue_error is None


def test_set_overrides_queue_priority_and_schedules(jobs: JobRecorder) -> None:
    job = ReportJob.set(queue="low", priority=10, wait=timedelta(weeks=1)).perform_later(1)
    assert job.queue_name == "low" and job.priority == 10
    assert job.scheduled_at is not None
    expected = datetime.now(timezone.utc) + timedelta(weeks=1)
    assert abs(job.scheduled_at - expected) < timedelta(seconds=2)
    seconds = ReportJob.set(wait=30).perform_later(2)
    assert seconds.scheduled_at is not None
    assert abs(seconds.scheduled_at - (datetime.now(timezone.utc) + timedelta(seconds=30))) < timedelta(
        seconds=2
    )
    noon = datetime(2030, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    until = ReportJob.set(wait_until=noon).perform_later(3)
    assert until.scheduled_at == noon and until.scheduled_at.tzinfo is timezone.utc
    jobs.assert_enqueued(ReportJob, args=[3], at=noon, queue="reports")


def test_queue_as_callable_sees_the_job_arguments(jobs: JobRecorder) -> None:
    assert DynamicQueueJob.perform_later(11).queue_name == "urgent"
    assert DynamicQueueJob.perform_later(1).queue_name == "relaxed"
    assert LambdaQueueJob.perform_later(7).queue_name == "q7"


def test_perform_now_runs_here_and_returns_the_result() -> None:
    LOG.clear()
    assert RecordingJob.perform_now(1, b=2) == "done"
    assert LOG == [("performed", ((1,), {"b": 2}))]
    assert AsyncRecordingJob.perform_now(21) == 42


def test_perform_now_of_an_async_job_inside_a_running_loop() -> None:
    async def caller() -> Any:
        return AsyncRecordingJob.perform_now(5)

    assert asyncio.run(caller()) == 10


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"wait": 1, "wait_until": datetime.now(timezone.utc)}, "not both"),
        ({"wait": -1}, "must not be negative"),
        ({"wait": "soon"}, "wait must be seconds"),
        ({"wait_until": datetime(2030, 1, 1)}, "timezone-aware"),
        ({"queue": ""}, "non-empty queue name"),
        ({"priority": "high"}, "must be an int or None"),
    ],
)
def test_bad_set_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        ReportJob.set(**options)


def test_a_bad_static_queue_as_is_refused_at_class_definition() -> None:
    with pytest.raises(ConfigurationError, match="queue_as must be a non-empty queue name"):

        class Broken(Job):
            queue_as = ""


def test_a_callable_queue_as_returning_garbage_is_refused(jobs: JobRecorder) -> None:
    class Garbage(Job):
        queue_as = staticmethod(lambda job: 3)

        def perform(self) -> None: ...

    with pytest.raises(ConfigurationError, match=r"queue_as\(job\) must be a non-empty queue name"):
        Garbage.perform_later()


def test_unserializable_argument_fails_at_perform_later_naming_where(jobs: JobRecorder) -> None:
    with pytest.raises(SerializationError, match=r"object.*arguments\[0\]\['user'\]"):
        RecordingJob.perform_later({"user": object()})
    assert jobs.enqueued == []


def test_enqueue_on_a_closed_adapter_is_refused() -> None:
    adapter = config.configure(url="inline://")
    adapter.close()
    with pytest.raises(AdapterClosedError, match="closed"):
        RecordingJob.perform_later(1)
    assert issubclass(AdapterClosedError, EnqueueError)


def test_before_enqueue_abort_leaves_the_job_unenqueued(jobs: JobRecorder) -> None:
    class Guarded(Job):
        @before_enqueue
        def refuse(self) -> None:
            raise Abort

        def perform(self) -> None: ...

    job = Guarded.perform_later()
    assert job.successfully_enqueued is False
    assert jobs.enqueued == []


def test_adapter_options_unknown_to_the_adapter_are_refused(jobs: JobRecorder) -> None:
    with pytest.raises(ConfigurationError, match="does not know adapter_options ttl"):
        ReportJob.set(adapter_options={"ttl": 5}).perform_later(1)


def test_perform_all_later_enqueues_every_job_and_runs_hooks(jobs: JobRecorder) -> None:
    seen: list[str] = []

    class Hooked(Job):
        @before_enqueue
        def note(self) -> None:
            seen.append(f"before {self.arguments[0]}")
            if self.arguments[0] == "skip":
                raise Abort

        def perform(self, name: str) -> None: ...

    batch: list[Job] = [Hooked("a"), ReportJob(1), Hooked("skip"), Hooked("b")]
    assert perform_all_later(batch) == 3
    assert seen == ["before a", "before skip", "before b"]
    assert [j.successfully_enqueued for j in batch] == [True, True, False, True]
    assert [type(j).__name__ for j in jobs.enqueued] == ["Hooked", "ReportJob", "Hooked"]
    assert batch[0].provider_job_id is not None


def test_perform_all_later_marks_jobs_and_raises_when_the_backend_refuses() -> None:
    from jobadapter.adapters.base import EnqueueRequest
    from jobadapter.adapters.test import TestAdapter

    class Refusing(TestAdapter):
        def enqueue_all(self, requests: Any) -> list[str | None]:
            raise EnqueueError("backend down")

    adapter = Refusing()
    batch = [ReportJob(1), ReportJob(2)]
    with config.override(adapter), pytest.raises(EnqueueError, match="backend down"):
        perform_all_later(batch)
    assert all(not j.successfully_enqueued and isinstance(j.enqueue_error, EnqueueError) for j in batch)
    assert EnqueueRequest  # the request type adapters receive is public


def test_perform_all_later_marks_each_job_by_its_own_result() -> None:
    # Rails: activejob/test/cases/queuing_test.rb, "perform_all_later ... successfully_enqueued"
    # per job: a job the backend took before the batch failed is enqueued, not failed.
    from jobadapter.adapters.test import TestAdapter

    class SecondFails(TestAdapter):
        def enqueue(self, envelope: Any, options: Any) -> str | None:
            if envelope.arguments == [2]:
                raise EnqueueError("the broker went away")
            return super().enqueue(envelope, options)

        def enqueue_all(self, requests: Any) -> list[str | None]:
            return Adapter.enqueue_all(self, requests)  # the default: one publish per job

    adapter = SecondFails()
    batch = [ReportJob(1), ReportJob(2), ReportJob(3)]
    with config.override(adapter), pytest.raises(EnqueueError, match="went away") as raised:
        perform_all_later(batch)
    assert raised.value.taken == [batch[0].provider_job_id] and batch[0].provider_job_id is not None
    assert [job.successfully_enqueued for job in batch] == [True, False, False]
    assert batch[0].enqueue_error is None
    assert all(job.enqueue_error is raised.value for job in batch[1:])


def test_perform_all_later_tries_every_adapter_when_one_is_closed() -> None:
    from jobadapter.adapters.test import TestAdapter

    class Elsewhere(Job):
        queue_adapter = "closed-one"

        def perform(self) -> None: ...

    config.configure(url="inline://", name="closed-one").close()
    recorder = config.configure(url="test://")
    assert isinstance(recorder, TestAdapter)
    try:
        lost, kept = Elsewhere(), ReportJob(9)
        with pytest.raises(AdapterClosedError):
            perform_all_later([lost, kept])
        assert kept.successfully_enqueued and [e.job_id for e in recorder.pending] == [kept.job_id]
        assert isinstance(lost.enqueue_error, AdapterClosedError) and not lost.successfully_enqueued
    finally:
        config.reset()


def test_decimal_and_datetime_arguments_survive_the_test_adapter(jobs: JobRecorder) -> None:
    moment = datetime(2026, 5, 1, 12, 30, tzinfo=timezone.utc)
    RecordingJob.perform_later(Decimal("1.50"), when=moment)
    enqueued = jobs.enqueued[0]
    assert enqueued.arguments == [Decimal("1.50")]
    assert str(enqueued.arguments[0]) == "1.50"
    assert enqueued.keyword_arguments == {"when": moment}


def test_perform_all_later_leaves_out_a_job_whose_around_hook_does_not_proceed(jobs: JobRecorder) -> None:
    from jobadapter import around_enqueue

    class Withheld(Job):
        @around_enqueue
        def hold(self, proceed: Any) -> None:
            if self.arguments[0] != "held":
                proceed()

        def perform(self, name: str) -> None: ...

    batch = [Withheld("a"), Withheld("held"), Withheld("b")]
    assert perform_all_later(batch) == 2
    assert [j.successfully_enqueued for j in batch] == [True, False, True]
    assert [j.arguments for j in jobs.enqueued] == [["a"], ["b"]]


def test_an_abstract_base_is_not_registered_and_its_subclasses_are() -> None:
    from jobadapter import registry

    class ApplicationJob(Job):
        abstract = True

    class Charge(ApplicationJob):
        def perform(self) -> None: ...

    names = registry.registered()
    assert ApplicationJob.job_name not in names and names[Charge.job_name] is Charge
