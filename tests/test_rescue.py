from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from jobadapter import (
    ConfigurationError,
    DeserializationError,
    Job,
    RecordNotFound,
    after_discard,
    discard_on,
    exponentially_longer,
    rescue_from,
    retry_on,
)
from jobadapter.rescue import RetryRule
from jobadapter.testing import JobRecorder

CALLS: list[Any] = []


class Flaky(Exception):
    pass


class Permanent(Exception):
    pass


@retry_on(Flaky, wait=1, attempts=3, jitter=0)
class FlakyJob(Job):
    def perform(self, failures: int) -> None:
        CALLS.append(self.executions)
        if self.executions <= failures:
            raise Flaky(f"attempt {self.executions}")


def test_retry_on_retries_until_success_keeping_the_job_id(jobs: JobRecorder) -> None:
    CALLS.clear()
    job = FlakyJob.perform_later(2)
    jobs.perform_enqueued()
    assert CALLS == [1, 2, 3]
    assert {j.job_id for j in jobs.performed} == {job.job_id}
    assert [j.outcome for j in jobs.performed] == ["retried", "retried", "performed"]
    retries = jobs.enqueued[1:]
    assert [j.executions for j in retries] == [1, 2]
    assert [j.exception_executions for j in retries] == [
        {f"[{Flaky.__module__}.Flaky]": 1},
        {f"[{Flaky.__module__}.Flaky]": 2},
    ]
    for retry in retries:
        assert retry.enqueued_at is not None and retry.scheduled_at is not None
        assert abs((retry.scheduled_at - retry.enqueued_at).total_seconds() - 1) < 0.05


def test_exhausted_retries_raise_to_the_backend_after_discard_hooks(jobs: JobRecorder) -> None:
    CALLS.clear()
    seen: list[str] = []

    @retry_on(Flaky, wait=0, attempts=2)
    class Doomed(Job):
        def perform(self) -> None:
            raise Flaky("always")

        @after_discard
        def note(self, error: BaseException) -> None:
            seen.append(f"discarded after {self.executions}: {error}")

    Doomed.perform_later()
    with pytest.raises(Flaky, match="always"):
        jobs.perform_enqueued()
    assert seen == ["discarded after 2: always"]
    assert [j.outcome for j in jobs.performed] == ["retried", "exhausted"]


def test_on_exhausted_handles_the_error_then_after_discard_runs(jobs: JobRecorder) -> None:
    order: list[str] = []

    def notify(job: Job, error: BaseException) -> None:
        order.append(f"on_exhausted {job.executions} {error}")

    @retry_on(Flaky, wait=0, attempts=3, on_exhausted=notify)
    class Notifying(Job):
        def perform(self) -> None:
            raise Flaky("x")

        @after_discard
        def note(self, error: BaseException) -> None:
            order.append("after_discard")

    Notifying.perform_later()
    jobs.perform_enqueued()
    assert order == ["on_exhausted 3 x", "after_discard"]


def test_each_declaration_counts_its_own_attempts(jobs: JobRecorder) -> None:
    raised = iter([Flaky, Permanent, Flaky, Permanent, None])

    @retry_on(Flaky, wait=0, attempts=3)
    @retry_on(Permanent, wait=0, attempts=3)
    class Mixed(Job):
        def perform(self) -> None:
            error = next(raised)
            if error is not None:
                raise error()

    Mixed.perform_later()
    jobs.perform_enqueued()
    last = jobs.performed[-1]
    assert last.executions == 5
    assert last.exception_executions == {
        f"[{Flaky.__module__}.Flaky]": 2,
        f"[{Permanent.__module__}.Permanent]": 2,
    }


def test_wait_strategies() -> None:
    def rule(wait: Any, jitter: float = 0.0) -> RetryRule:
        return RetryRule((Flaky,), wait, 5, None, None, jitter, None)

    assert rule(3).delay(1) == 3
    assert rule(timedelta(minutes=2)).delay(4) == 120
    assert rule(lambda executions: executions * 2, jitter=0.5).delay(3) == 6  # no jitter on callables
    assert [rule("polynomially_longer").delay(n) for n in (1, 2, 3)] == [3, 18, 83]
    random.seed(7)
    jittered = [rule(10, jitter=0.15).delay(1) for _ in range(200)]
    assert all(10 <= d <= 11.5 for d in jittered) and len(set(jittered)) > 100
    poly = [rule("polynomially_longer", jitter=0.15).delay(2) for _ in range(200)]
    assert all(18 <= d <= 18 + 16 * 0.15 for d in poly) and max(poly) > 19.5


class RetryAfter(Exception):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"come back in {seconds} s")
        self.seconds = seconds


def test_a_wait_can_take_the_error(jobs: JobRecorder) -> None:
    # Rails: activejob/test/cases/exceptions_test.rb, "custom wait retrying with exception":
    # retry_on ..., wait: ->(executions, error) { ... } reads the delay off the error.
    @retry_on(RetryAfter, wait=lambda executions, error: error.seconds * executions, attempts=3, jitter=0)
    class Throttled(Job):
        def perform(self) -> None:
            if self.executions == 1:
                raise RetryAfter(42)

    started = datetime.now(timezone.utc)
    Throttled.perform_later()
    jobs.perform_enqueued()
    retried = jobs.enqueued[-1]  # the retry, after the first enqueue
    assert retried.scheduled_at is not None
    assert 41 <= (retried.scheduled_at - started).total_seconds() <= 43


def test_a_wait_that_cannot_be_called_either_way_is_refused_when_declared() -> None:
    with pytest.raises(ConfigurationError, match=r"must take \(executions\) or \(executions, error\)"):
        retry_on(Flaky, wait=lambda: 3)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="must take"):
        retry_on(Flaky, wait=lambda executions, error, extra: 3)  # type: ignore[arg-type]


def test_unlimited_attempts_keep_retrying(jobs: JobRecorder) -> None:
    @retry_on(Flaky, wait=0, attempts="unlimited")
    class Stubborn(Job):
        def perform(self) -> None:
            if self.executions < 30:
                raise Flaky

    Stubborn.perform_later()
    jobs.perform_enqueued()
    assert len(jobs.performed) == 30 and jobs.performed[-1].outcome == "performed"


def test_retry_onto_another_queue_and_priority(jobs: JobRecorder) -> None:
    @retry_on(Flaky, wait=5, attempts=2, queue="retries", priority=-1)
    class Moving(Job):
        def perform(self) -> None:
            if self.executions == 1:
                raise Flaky

    Moving.perform_later()
    jobs.perform_enqueued()
    jobs.assert_enqueued(Moving, queue="retries", priority=-1, count=1)
    jobs.assert_performed(Moving, queue="retries", count=1)


def test_discard_on_ends_the_job_and_runs_on_discard_then_after_discard(jobs: JobRecorder) -> None:
    order: list[str] = []

    @discard_on(RecordNotFound, on_discard=lambda job, error: order.append(f"on_discard {error}"))
    class Discarding(Job):
        def perform(self) -> None:
            raise RecordNotFound("gone")

        @after_discard
        def note(self, error: BaseException) -> None:
            order.append("after_discard")

    Discarding.perform_later()
    jobs.perform_enqueued()
    assert order == ["on_discard gone", "after_discard"]
    assert jobs.performed[0].outcome == "discarded"
    assert len(jobs.enqueued) == 1


def test_rescue_from_handles_and_skips_after_discard(jobs: JobRecorder) -> None:
    order: list[str] = []

    class Handling(Job):
        def perform(self) -> None:
            raise KeyError("k")

        @rescue_from(KeyError)
        def handle(self, error: Exception) -> None:
            order.append(f"handled {error!r}")

        @after_discard
        def note(self, error: BaseException) -> None:
            order.append("after_discard")

    Handling.perform_later()
    jobs.perform_enqueued()
    assert order == ["handled KeyError('k')"]


def test_unhandled_error_runs_after_discard_once_and_raises(jobs: JobRecorder) -> None:
    order: list[str] = []

    class Failing(Job):
        def perform(self) -> None:
            raise ValueError("bad")

        @after_discard
        def first(self, error: BaseException) -> None:
            order.append("first")
            raise RuntimeError("hook broke")

        @after_discard
        def second(self, error: BaseException) -> None:
            order.append(f"second {error}")

    Failing.perform_later()
    with pytest.raises(RuntimeError, match="hook broke"):
        jobs.perform_enqueued()
    assert order == ["first", "second bad"]


def test_cause_is_matched_when_the_error_itself_is_not(jobs: JobRecorder) -> None:
    handled: list[BaseException] = []

    @discard_on(ConnectionError, on_discard=lambda job, error: handled.append(error))
    class Wrapped(Job):
        def perform(self) -> None:
            try:
                raise ConnectionError("refused")
            except ConnectionError as error:
                raise RuntimeError("wrapper") from error

    Wrapped.perform_later()
    jobs.perform_enqueued()
    assert len(handled) == 1 and isinstance(handled[0], ConnectionError)


def test_precedence_top_decorator_then_rescue_from_then_base_class(jobs: JobRecorder) -> None:
    picked: list[str] = []

    @discard_on(Exception, on_discard=lambda job, error: picked.append("base discard_on"))
    class ApplicationJob(Job):
        pass

    @discard_on(LookupError, on_discard=lambda job, error: picked.append("top"))
    @discard_on(KeyError, on_discard=lambda job, error: picked.append("lower"))
    class Specific(ApplicationJob):
        def perform(self, error: str) -> None:
            raise {"key": KeyError, "os": OSError, "value": ValueError}[error]()

        @rescue_from(OSError)
        def on_os(self, error: Exception) -> None:
            picked.append("rescue_from")

    for name in ("key", "os", "value"):
        Specific.perform_later(name)
    jobs.perform_enqueued()
    assert picked == ["top", "rescue_from", "base discard_on"]


def test_deserialization_errors_are_rescuable(jobs: JobRecorder) -> None:
    handled: list[str] = []

    @discard_on(RecordNotFound, on_discard=lambda job, error: handled.append("not found"))
    @retry_on(DeserializationError, wait=0, attempts=2)
    class Loading(Job):
        def perform(self, record: object) -> None: ...

    from jobadapter.envelope import decode

    job = Loading(1)
    envelope = job.to_envelope().evolve(arguments=[{"no-such-tag": 1}])
    jobs.adapter.enqueue(envelope, {})
    with pytest.raises(DeserializationError):
        jobs.perform_enqueued()
    assert [j.outcome for j in jobs.performed] == ["retried", "exhausted"]
    assert decode(envelope.encode()).arguments == [{"no-such-tag": 1}]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attempts": 0}, "attempts must be an int >= 1"),
        ({"attempts": "forever"}, "attempts must be an int >= 1"),
        ({"wait": -1}, "must not be negative"),
        ({"wait": "later"}, "retry_on wait must be seconds"),
        ({"jitter": -0.1}, "jitter must be a number >= 0"),
        ({"queue": ""}, "queue must be a non-empty string"),
    ],
)
def test_bad_retry_declarations_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        retry_on(Flaky, **kwargs)


def test_declarations_need_exception_classes() -> None:
    with pytest.raises(ConfigurationError, match="at least one exception"):
        discard_on()
    with pytest.raises(ConfigurationError, match="is not an exception class"):
        retry_on("Flaky")  # type: ignore[arg-type]


@pytest.mark.parametrize("declare", [retry_on, discard_on, rescue_from], ids=lambda d: d.__name__)
@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit, GeneratorExit])
def test_a_rule_for_a_base_exception_that_could_never_run_is_refused(declare: Any, error: type) -> None:
    # Rails rescues StandardError only (activejob/test/cases/exceptions_test.rb); here perform
    # catches Exception, so a declaration for a BaseException-only class is refused at once
    # instead of being accepted and never honoured.
    with pytest.raises(ConfigurationError, match=f"{error.__name__} is not an Exception subclass"):
        declare(error)


def test_exponentially_longer_is_celerys_retry_backoff_draw_for_draw() -> None:
    """wait="exponentially_longer" is Celery's autoretry with retry_backoff=True (base 1 s, cap
    600 s, full jitter): the same seed gives the same countdowns as Celery's own function."""
    from celery.utils.time import get_exponential_backoff_interval  # type: ignore[import-untyped]

    rule = RetryRule((ValueError,), "exponentially_longer", 30, None, None, 0.15, None)
    for count in range(1, 16):  # count attempts failed: Celery's request.retries is count - 1
        random.seed(count)
        ours = rule.delay(count)
        random.seed(count)
        assert ours == get_exponential_backoff_interval(1, count - 1, 600, True)
    plain = exponentially_longer(base=5, cap=300, jitter=None)
    assert [plain(count) for count in range(1, 9)] == [5, 10, 20, 40, 80, 160, 300, 300]
    assert [get_exponential_backoff_interval(5, n, 300, False) for n in range(8)] == [
        plain(n + 1) for n in range(8)
    ]


def test_exponentially_longer_is_the_installed_dramatiqs_retries_middleware() -> None:
    """Dramatiq's defaults (min_backoff 15 s, max_backoff 7 days) with its jitter: "half" on
    Dramatiq 1, "double" on Dramatiq 2, draw for draw."""
    import dramatiq
    from dramatiq.common import compute_backoff

    jitter = "double" if int(dramatiq.__version__.split(".")[0]) >= 2 else "half"
    dramatiq_like = exponentially_longer(base=15, cap=7 * 86400, jitter=jitter)
    for count in range(1, 30):  # past the cap: 15 * 2**15 s is more than 7 days
        random.seed(count)
        ours = dramatiq_like(count)
        random.seed(count)
        _, theirs_ms = compute_backoff(count - 1, factor=15_000, max_backoff=7 * 86400 * 1000)
        assert ours == theirs_ms / 1000
    half = exponentially_longer(base=15, cap=7 * 86400, jitter="half")
    double = exponentially_longer(base=15, cap=7 * 86400, jitter="double")
    assert 7.5 <= half(1) <= 15 and 15 <= half(2) <= 30
    assert 15 <= double(1) <= 30 and 30 <= double(2) <= 60


def test_exponentially_longer_refuses_what_it_cannot_mean() -> None:
    with pytest.raises(ConfigurationError, match="cap must be a number"):
        exponentially_longer(cap=-1)
    with pytest.raises(ConfigurationError, match="jitter must be 'full', 'half', 'double' or None"):
        exponentially_longer(jitter="equal")  # type: ignore[arg-type]


def test_retry_job_from_a_rescue_handler_enqueues_the_job_again(
    jobs: JobRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    # Rails: activejob/test/cases/exceptions_test.rb and test/jobs/retry_job.rb's pattern
    # `rescue_from(E) { retry_job(wait: …) }`: the same job, executions kept, and the run counts
    # as retried (a "Retrying …" line), not as rescued.
    class Polite(Job):
        @rescue_from(Flaky)
        def later(self, error: Flaky) -> None:
            self.retry_job(wait=timedelta(minutes=5), queue="later", priority=3)

        def perform(self) -> None:
            if self.executions == 1:
                raise Flaky("busy")

    started = datetime.now(timezone.utc)
    with caplog.at_level("INFO", logger="jobadapter"):
        first = Polite.perform_later()
        jobs.perform_enqueued()
    retried = jobs.enqueued[1]
    assert (retried.job_id, retried.executions, retried.queue_name, retried.priority) == (
        first.job_id,
        1,
        "later",
        3,
    )
    assert retried.scheduled_at is not None
    assert 299 <= (retried.scheduled_at - started).total_seconds() <= 301
    assert jobs.performed[0].outcome == "retried"
    assert "after 1 attempts in 300 seconds, due to a Flaky (busy)." in caplog.text
