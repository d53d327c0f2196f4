"""Queue names, priorities, job defaults and instance methods, case by case after Rails'
activejob tests (each test names the Rails file and case it follows)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from jobadapter import ConfigurationError, Job, before_enqueue, config, defaults, registry, retry_on
from jobadapter.testing import JobRecorder

PERFORMED: list[tuple[str, object]] = []


@pytest.fixture(autouse=True)
def fresh_defaults() -> Iterator[None]:
    """Every test starts from Rails' defaults, and leaves them so."""
    defaults.reset()
    PERFORMED.clear()
    yield
    defaults.reset()


class HelloJob(Job):
    def perform(self, greeter: str = "David") -> str:
        PERFORMED.append(("hello", greeter))
        return f"{greeter} says hello"


class LowJob(Job):
    queue_as = "low"

    def perform(self) -> None: ...


class NoneQueueJob(Job):
    queue_as = None

    def perform(self) -> None: ...


class ArgumentQueueJob(Job):
    queue_as = staticmethod(lambda job: "one" if job.arguments[0] == "1" else "two")

    def perform(self, which: str) -> None: ...


class FixedPriorityJob(Job):
    priority = 90

    def perform(self) -> None: ...


class ComputedPriorityJob(Job):
    def priority_as(self) -> int:  # type: ignore[override]
        return 99 if self.arguments[0] == "1" else 11

    def perform(self, which: str) -> None: ...


class LambdaPriorityJob(Job):
    priority_as = staticmethod(lambda job: 25)

    def perform(self) -> None: ...


class UrgentLambdaJob(LambdaPriorityJob):
    priority = 3  # a subclass's fixed priority wins over the inherited callable

    def perform(self) -> None: ...


class Flaky(Exception):
    pass


@retry_on(Flaky, wait=10, attempts=2)
class DefaultJitterJob(Job):
    def perform(self) -> None:
        raise Flaky("again")


@retry_on(Flaky, wait=10, attempts=2, jitter=0)
class NoJitterJob(Job):
    def perform(self) -> None:
        raise Flaky("again")


@retry_on(Flaky, wait=0, attempts=2, queue="retries")
class RetryElsewhereJob(Job):
    def perform(self) -> None:
        raise Flaky("again")


class CountingEnqueueJob(Job):
    """Rails' RetriesJob: a before_enqueue hook that sees the job object being enqueued."""

    @before_enqueue
    def note(self) -> None:
        PERFORMED.append(("before_enqueue", id(self)))

    def perform(self) -> None: ...


# -- queue naming: activejob/test/cases/queue_naming_test.rb ---------------------------


def test_name_derived_from_base() -> None:
    # queue_naming_test.rb: "name derived from base"
    assert HelloJob().queue_name == "default"


def test_does_not_use_a_nil_queue_name() -> None:
    # queue_naming_test.rb: "does not use a nil queue name"
    assert NoneQueueJob().queue_name == "default"


def test_can_use_arguments_to_determine_queue_name_in_queue_as_block() -> None:
    # queue_naming_test.rb: "can use arguments to determine queue_name in queue_as block"
    assert ArgumentQueueJob("1").queue_name == "one"
    assert ArgumentQueueJob("3").queue_name == "two"


def test_queue_name_prefix_prepended_to_the_queue_name_with_default_delimiter() -> None:
    # queue_naming_test.rb: "queue_name_prefix prepended to the queue name with default delimiter"
    config.configure("async://", name="prefix-test", queue_name_prefix="aj")
    assert LowJob().queue_name == "aj_low"
    assert HelloJob().queue_name == "aj_default"
    assert ArgumentQueueJob("1").queue_name == "aj_one"


def test_queue_name_prefix_prepended_to_the_queue_name_with_custom_delimiter() -> None:
    # queue_naming_test.rb: "queue_name_prefix prepended to the queue name with custom delimiter"
    config.configure("async://", name="prefix-test", queue_name_prefix="aj", queue_name_delimiter=".")
    assert LowJob().queue_name == "aj.low"


def test_uses_queue_passed_to_set(jobs: JobRecorder) -> None:
    # queue_naming_test.rb: "uses queue passed to #set" (with a prefix, as Rails' set prefixes too)
    assert HelloJob.set(queue="some_queue").perform_later().queue_name == "some_queue"
    defaults.update(queue_name_prefix="aj")
    assert HelloJob.set(queue="some_queue").perform_later().queue_name == "aj_some_queue"


def test_a_default_queue_name_for_classes_that_name_none() -> None:
    # Rails' config.active_job.default_queue_name
    defaults.update(default_queue_name="background")
    assert HelloJob().queue_name == "background"
    assert LowJob().queue_name == "low"


def test_a_retry_to_another_queue_and_the_workers_default_queues_are_prefixed(jobs: JobRecorder) -> None:
    # A retry_on queue goes through Rails' queue_name_from_part too (retry_job → set(queue:)).
    defaults.update(queue_name_prefix="staging")
    RetryElsewhereJob.perform_now()
    (retry,) = jobs.enqueued
    assert retry.queue_name == "staging_retries"
    assert {"staging_default", "staging_low", "staging_retries"} <= set(registry.declared_queues())
    assert "low" not in registry.declared_queues()


def test_a_queue_name_off_the_wire_is_never_prefixed_again(jobs: JobRecorder) -> None:
    defaults.update(queue_name_prefix="aj")
    job = LowJob.perform_later()
    loaded = LowJob.from_envelope(job.to_envelope())
    assert loaded.queue_name == "aj_low"


# -- priority: activejob/test/cases/queue_priority_test.rb ------------------------------


def test_priority_unset_by_default() -> None:
    # queue_priority_test.rb: "priority unset by default"
    assert HelloJob().priority is None


def test_using_a_custom_default_priority() -> None:
    # queue_priority_test.rb: "using a custom default_priority"
    config.configure("async://", name="priority-test", default_priority=8)
    assert HelloJob().priority == 8
    assert FixedPriorityJob().priority == 90  # a class's own priority wins


def test_uses_given_priority() -> None:
    # queue_priority_test.rb: "uses given priority"
    assert FixedPriorityJob().priority == 90


def test_evals_block_given_to_priority_to_determine_priority() -> None:
    # queue_priority_test.rb: "evals block given to priority to determine priority"
    assert LambdaPriorityJob().priority == 25
    assert UrgentLambdaJob().priority == 3


def test_can_use_arguments_to_determine_priority_in_priority_block() -> None:
    # queue_priority_test.rb: "can use arguments to determine priority in priority block"
    assert ComputedPriorityJob("1").priority == 99
    assert ComputedPriorityJob("3").priority == 11


def test_is_assigned_when_perform_now_and_perform_later(jobs: JobRecorder) -> None:
    # queue_priority_test.rb: "is assigned when perform_now", "is assigned when perform_later"
    assert ComputedPriorityJob.set(priority=123).perform_later("1").priority == 123
    job = HelloJob("x").set(priority=123)
    job.perform_now()
    assert job.priority == 123


def test_a_callable_priority_names_priority_as_and_a_bad_result_is_refused(jobs: JobRecorder) -> None:
    with pytest.raises(ConfigurationError, match="priority_as"):

        class Wrong(Job):
            priority = staticmethod(lambda job: 1)  # type: ignore[assignment]

            def perform(self) -> None: ...

    class Garbage(Job):
        priority_as = staticmethod(lambda job: "high")

        def perform(self) -> None: ...

    with pytest.raises(ConfigurationError, match=r"Garbage.priority_as\(job\) must be an int or None"):
        Garbage.perform_later()


# -- retry jitter: activejob/test/cases/exceptions_test.rb ------------------------------


def test_retry_jitter_uses_the_configured_value_by_default(
    jobs: JobRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # exceptions_test.rb: "retry jitter uses value from ActiveJob::Base.retry_jitter by default"
    monkeypatch.setattr(random, "random", lambda: 1.0)
    config.configure("async://", name="jitter-test", retry_jitter=0.5)
    before = datetime.now(timezone.utc)
    DefaultJitterJob.perform_now()
    (retry,) = jobs.enqueued
    assert retry.scheduled_at is not None
    assert timedelta(seconds=14.9) < retry.scheduled_at - before < timedelta(seconds=15.5)  # 10 + 10 * 0.5


def test_retry_jitter_disabled_with_zero(jobs: JobRecorder, monkeypatch: pytest.MonkeyPatch) -> None:
    # exceptions_test.rb: "retry jitter disabled with zero"
    monkeypatch.setattr(random, "random", lambda: 1.0)
    defaults.update(retry_jitter=4.0)
    before = datetime.now(timezone.utc)
    NoJitterJob.perform_now()
    (retry,) = jobs.enqueued
    assert retry.scheduled_at is not None
    assert timedelta(seconds=9.9) < retry.scheduled_at - before < timedelta(seconds=10.5)


def test_bad_defaults_are_refused_by_name() -> None:
    with pytest.raises(ConfigurationError, match="retry_jitter must be a number >= 0"):
        config.configure("async://", name="bad", retry_jitter=-1)
    with pytest.raises(ConfigurationError, match="default_priority must be an int or None"):
        defaults.update(default_priority="high")
    with pytest.raises(ConfigurationError, match="no job default queue_prefix"):
        defaults.update(queue_prefix="aj")
    assert defaults.active == defaults.JobDefaults()  # nothing changed by a refused update


# -- instance methods: ActiveJob::Execution#perform_now, ActiveJob::Enqueuing#enqueue ---


def test_perform_now_on_an_instance_runs_that_job_with_its_arguments() -> None:
    # Rails: HelloJob.new("Jamie").perform_now (ActiveJob::Execution#perform_now)
    assert HelloJob("Jamie").perform_now() == "Jamie says hello"
    assert PERFORMED == [("hello", "Jamie")]


def test_enqueue_on_an_instance_enqueues_that_job_object(jobs: JobRecorder) -> None:
    # exceptions_test.rb: "retrying a job when before_enqueue raised uses the same job object"
    job = CountingEnqueueJob()
    assert job.enqueue() is job
    assert [("before_enqueue", id(job))] == PERFORMED
    (enqueued,) = jobs.enqueued
    assert enqueued.job_id == job.job_id and job.successfully_enqueued


def test_set_on_an_instance_changes_that_job(jobs: JobRecorder) -> None:
    # Rails: job.set(wait: ...).enqueue / job.enqueue(queue: ...)
    job = HelloJob("Jamie")
    assert job.set(wait=60, priority=4) is job
    assert job.scheduled_at is not None and job.priority == 4
    job.enqueue(queue="greetings")
    (enqueued,) = jobs.enqueued
    assert (enqueued.queue_name, enqueued.priority, enqueued.arguments) == ("greetings", 4, ["Jamie"])
    assert enqueued.scheduled_at == job.scheduled_at


def test_perform_later_on_an_instance_is_an_error_not_a_job_without_arguments(jobs: JobRecorder) -> None:
    # Calling the class-level method on an instance used to enqueue a second job with no
    # arguments; now it says what to call instead.
    with pytest.raises(TypeError, match=r"HelloJob.perform_later\(...\).*call job.enqueue\(\)"):
        HelloJob("Jamie").perform_later("Jamie")  # type: ignore[call-arg]
    assert jobs.enqueued == []
