"""The conformance scenarios. Each runs against every ``--jobadapter-url``.

Jobs go through the adapter under test to real worker processes (or, for
in-process adapters, to the suite's own process) and report back through the
probe. Every wait is bounded; a scenario that times out fails and says what it
was waiting for.
"""

from __future__ import annotations

import itertools
import json
import time
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import pytest

from jobadapter import envelope as envelope_format
from jobadapter import perform_all_later
from jobadapter.adapters.base import Capability
from jobadapter.conformance import UNSUPPORTED, scenario
from jobadapter.conformance.jobs import (
    ArgumentsJob,
    AsyncJob,
    CallableRetryJob,
    DeclaredQueueJob,
    DiscardJob,
    ExhaustedJob,
    FailingJob,
    FixedRetryJob,
    HooksJob,
    MissingRecordJob,
    PingJob,
    PolynomialRetryJob,
    ProviderIdJob,
    Record,
    RecordJob,
    RescueJob,
    RetriedByHandJob,
    RetryElsewhereJob,
    SlowJob,
    argument_samples,
)
from jobadapter.faults.hostile import valid_document

if TYPE_CHECKING:
    from jobadapter.conformance.harness import Backend

EARLY = 0.05
"""How much sooner than asked a delayed job may run (clock granularity)."""
LATE = 2.0
"""How much later than asked a delayed job may run."""


def _started(backend: Backend) -> Backend:
    backend.shared_worker()
    return backend


# -- Enqueue -------------------------------------------------------------------------


@scenario("Enqueue")
def test_perform_later_with_arguments(backend: Backend) -> None:
    """perform_later with positional and keyword arguments"""
    _started(backend)
    label = backend.label_for("arguments")
    job = RecordJob.set(queue=backend.main_queue).perform_later(label, 1, "two", flag=True)
    assert job.successfully_enqueued and job.provider_job_id
    (row,) = backend.probe.wait_for_count(label, 1, backend.timeout)
    assert row.detail == {"args": [1, "two"], "kwargs": {"flag": True}}
    assert row.job_id == job.job_id and row.executions == 1


@scenario("Enqueue")
def test_provider_job_id_is_known_to_the_enqueuer_and_the_job(backend: Backend) -> None:
    """provider_job_id is set by perform_later and is the same inside perform"""
    _started(backend)
    label = backend.label_for("provider-id")
    job = ProviderIdJob.set(queue=backend.main_queue).perform_later(label)
    assert job.provider_job_id, "perform_later left provider_job_id unset"
    (row,) = backend.probe.wait_for_count(label, 1, backend.timeout)
    assert row.detail == {"provider_job_id": job.provider_job_id}


@scenario("Enqueue")
def test_every_argument_type_round_trips(backend: Backend) -> None:
    """every supported argument type arrives with its exact type"""
    _started(backend)
    label = backend.label_for("types")
    samples = argument_samples()
    ArgumentsJob.set(queue=backend.main_queue).perform_later(label, *samples, sample=samples[-3])
    (row,) = backend.probe.wait_for_count(label, 1, backend.timeout)
    assert row.detail == {"differences": []}


@scenario("Enqueue")
def test_async_perform(backend: Backend) -> None:
    """an async def perform runs to completion"""
    _started(backend)
    label = backend.label_for("async")
    AsyncJob.set(queue=backend.main_queue).perform_later(label, 21)
    (row,) = backend.probe.wait_for_count(label, 1, backend.timeout)
    assert row.detail == {"value": 21}


@scenario("Enqueue")
def test_bulk_enqueue_of_1000_jobs_runs_each_once(backend: Backend) -> None:
    """perform_all_later of 1,000 jobs: each performed exactly once"""
    _started(backend)
    label = backend.label_for("bulk")
    batch = [RecordJob(label, n) for n in range(1000)]
    for job in batch:
        job.queue_name = backend.main_queue
    assert perform_all_later(batch) == 1000
    assert all(job.successfully_enqueued for job in batch)
    # A bound, not a speed check (benchmarks measure speed): RQ forks a process per job, and
    # with the suite's journal each of them writes its rows, which on a loaded machine takes
    # longer than a minute for 1,000 jobs.
    backend.probe.wait_for_count(label, 1000, 180)
    time.sleep(0.5)
    rows = backend.probe.rows(label, "performed")
    numbers = sorted(row.detail["args"][0] for row in rows)
    assert numbers == list(range(1000)), f"{len(rows)} performs for 1000 jobs"


@scenario("Enqueue")
def test_hooks_run_in_order(backend: Backend) -> None:
    """enqueue and perform hooks run in order around their action"""
    _started(backend)
    label = backend.label_for("hooks")
    HooksJob.set(queue=backend.main_queue).perform_later(label)
    backend.probe.wait_for_count(label, 1, backend.timeout, kind="hook")
    backend.probe.wait_for(
        lambda: any(r.detail["hook"] == "after_perform" for r in backend.probe.rows(label, "hook")),
        backend.timeout,
        "the after_perform hook",
    )
    order = [row.detail["hook"] for row in backend.probe.rows(label, "hook")]
    enqueue_side = [h for h in order if "enqueue" in h]
    perform_side = [h for h in order if "enqueue" not in h]
    assert enqueue_side == ["before_enqueue", "around_enqueue:in", "around_enqueue:out", "after_enqueue"]
    assert perform_side == [
        "before_perform",
        "around_perform:in",
        "perform",
        "around_perform:out",
        "after_perform",
    ]


# -- Scheduling ----------------------------------------------------------------------


def _assert_ran_on_time(backend: Backend, label: str, due: float) -> None:
    (row,) = backend.probe.wait_for_count(label, 1, backend.timeout + 5)
    assert row.at >= due - EARLY, f"ran {due - row.at:.3f} s before its time"
    assert row.at <= due + LATE, f"ran {row.at - due:.3f} s after its time"


@scenario("Scheduling", Capability.DELAYED)
def test_wait_delays_the_job(backend: Backend) -> None:
    """set(wait=…) runs the job no sooner (−50 ms) and not much later (+2 s)"""
    _started(backend)
    label = backend.label_for("wait")
    job = RecordJob.set(queue=backend.main_queue, wait=1.5).perform_later(label)
    assert job.scheduled_at is not None
    _assert_ran_on_time(backend, label, job.scheduled_at.timestamp())


@scenario("Scheduling", Capability.DELAYED)
def test_wait_until_schedules_the_job(backend: Backend) -> None:
    """set(wait_until=…) runs the job at that time"""
    _started(backend)
    label = backend.label_for("wait-until")
    due = datetime.now(timezone.utc) + timedelta(seconds=1.5)
    RecordJob.set(queue=backend.main_queue, wait_until=due).perform_later(label)
    _assert_ran_on_time(backend, label, due.timestamp())


# -- Routing -------------------------------------------------------------------------


@scenario("Routing", Capability.QUEUES, Capability.EXTERNAL_WORKER)
def test_queue_routing(backend: Backend) -> None:
    """a worker on one queue leaves another queue's jobs untouched"""
    served, ignored = backend.queue("routing-a"), backend.queue("routing-b")
    label = backend.label_for("routing")
    with backend.worker([served]):
        RecordJob.set(queue=ignored).perform_later(label, "ignored")
        RecordJob.set(queue=served).perform_later(label, "served")
        backend.probe.wait_for_count(label, 1, backend.timeout)
        time.sleep(1.0)
        assert [row.detail["args"] for row in backend.probe.rows(label)] == [["served"]]
    with backend.worker([ignored]):
        backend.probe.wait_for_count(label, 2, backend.timeout)


@scenario("Routing", Capability.QUEUES, Capability.EXTERNAL_WORKER)
def test_a_worker_without_queues_consumes_the_declared_ones(backend: Backend) -> None:
    """a worker started without --queues runs a job whose class declares its queue_as"""
    label = backend.label_for("declared")
    with backend.worker(None):
        # The class says DeclaredQueueJob.queue_as; only the workers know this run's name for it.
        DeclaredQueueJob.set(queue=backend.declared_queue).perform_later(label, "declared")
        backend.probe.wait_for_count(label, 1, backend.timeout)


@scenario("Routing", Capability.PRIORITY, Capability.EXTERNAL_WORKER)
def test_priority_order(backend: Backend) -> None:
    """with the worker stopped, jobs enqueued low then high run high first"""
    queue = backend.queue("priority")
    label = backend.label_for("priority")
    RecordJob.set(queue=queue, priority=10).perform_later(label, "low")
    RecordJob.set(queue=queue, priority=10).perform_later(label, "low")
    RecordJob.set(queue=queue, priority=1).perform_later(label, "high")
    RecordJob.set(queue=queue, priority=1).perform_later(label, "high")
    time.sleep(0.5)
    worker = backend.start_worker([queue], concurrency=1, wait=False)
    try:
        backend.probe.wait_for_count(label, 4, backend.timeout + 30)
    finally:
        worker.terminate()
    assert [row.detail["args"][0] for row in backend.probe.rows(label)] == ["high", "high", "low", "low"]


# -- Retries -------------------------------------------------------------------------


def _gaps(backend: Backend, label: str, count: int) -> list[float]:
    rows = backend.probe.wait_for_count(label, count, backend.timeout)
    return [later.at - earlier.at for earlier, later in itertools.pairwise(rows)]


@scenario("Retries")
def test_retry_on_attempt_counts_and_stable_job_id(backend: Backend) -> None:
    """retry_on: failing twice then succeeding is three executions of one job id"""
    _started(backend)
    label = backend.label_for("retry-count")
    job = FixedRetryJob.set(queue=backend.main_queue).perform_later(label, 2)
    rows = backend.probe.wait_for_count(label, 3, backend.timeout)
    time.sleep(0.7)
    rows = backend.probe.rows(label)
    assert [row.executions for row in rows] == [1, 2, 3]
    assert {row.job_id for row in rows} == {job.job_id}


@scenario("Retries", Capability.DELAYED)
def test_retry_fixed_delay(backend: Backend) -> None:
    """retry_on(wait=0.5): each retry waits 0.5 s"""
    _started(backend)
    label = backend.label_for("retry-fixed")
    FixedRetryJob.set(queue=backend.main_queue).perform_later(label, 2)
    for gap in _gaps(backend, label, 3):
        assert 0.5 - EARLY <= gap <= 0.5 + LATE


@scenario("Retries", Capability.DELAYED)
def test_retry_callable_delay(backend: Backend) -> None:
    """retry_on(wait=callable): the delay is what the callable returns for each execution"""
    _started(backend)
    label = backend.label_for("retry-callable")
    CallableRetryJob.set(queue=backend.main_queue).perform_later(label, 2)
    first, second = _gaps(backend, label, 3)
    assert 0.3 - EARLY <= first <= 0.3 + LATE
    assert 0.6 - EARLY <= second <= 0.6 + LATE


@scenario("Retries", Capability.DELAYED)
def test_retry_polynomial_delay(backend: Backend) -> None:
    """retry_on(wait="polynomially_longer"): the first retry waits 1**4 + 2 = 3 s"""
    _started(backend)
    label = backend.label_for("retry-polynomial")
    PolynomialRetryJob.set(queue=backend.main_queue).perform_later(label, 1)
    (gap,) = _gaps(backend, label, 2)
    assert 3 - EARLY <= gap <= 3 + LATE


@scenario("Retries", Capability.QUEUES)
def test_retry_onto_another_queue(backend: Backend) -> None:
    """retry_on(queue=…, priority=…): the retry runs from that queue"""
    _started(backend)
    label = backend.label_for("retry-queue")
    RetryElsewhereJob.set(queue=backend.main_queue).perform_later(label, 1)
    first, second = backend.probe.wait_for_count(label, 2, backend.timeout)
    assert first.queue == backend.main_queue
    assert second.queue == backend.retry_queue
    assert second.priority == 1


@scenario("Retries")
def test_retry_job_from_a_rescue_handler(backend: Backend) -> None:
    """rescue_from + retry_job(wait=…): the job runs again, same job_id, executions counted"""
    _started(backend)
    label = backend.label_for("retry-job")
    job = RetriedByHandJob.set(queue=backend.main_queue).perform_later(label)
    first, second = backend.probe.wait_for_count(label, 2, backend.timeout)
    assert (first.job_id, second.job_id) == (job.job_id, job.job_id)
    assert (first.executions, second.executions) == (1, 2)
    if Capability.DELAYED in backend.capabilities:  # inline:// runs a retry without its wait
        assert second.at - first.at >= 0.2 - 0.05
    time.sleep(0.3)
    assert backend.probe.count(label) == 2


@scenario("Retries")
def test_on_exhausted_then_after_discard(backend: Backend) -> None:
    """retry_on(on_exhausted=…): called once attempts are spent, then after_discard"""
    _started(backend)
    label = backend.label_for("exhausted")
    ExhaustedJob.set(queue=backend.main_queue).perform_later(label)
    backend.probe.wait_for_count(label, 1, backend.timeout, kind="after_discard")
    time.sleep(0.3)
    kinds = [row.kind for row in backend.probe.rows(label)]
    assert kinds == ["performed", "performed", "on_exhausted", "after_discard"]


# -- Failures ------------------------------------------------------------------------


@scenario("Failures", Capability.FAILED_STORE)
def test_unhandled_failure_is_recorded_by_the_backend(backend: Backend) -> None:
    """an unhandled error lands in the backend's failed store; its reason reads "ErrorClass: message" """
    _started(backend)
    label = backend.label_for("failure")
    FailingJob.set(queue=backend.main_queue).perform_later(label)
    backend.probe.wait_for_count(label, 1, backend.timeout)
    reasons: list[str] = []

    def listed() -> bool:
        reasons[:] = [reason for payload, reason in backend.adapter.failed() if label in payload]
        return bool(reasons)

    backend.probe.wait_for(listed, backend.timeout, "the failed job in the backend's failed store")
    # One shape on every backend (the traceback is kept apart: find(job_id).error.traceback).
    assert reasons == [f"Doomed: conformance failure {label}"]
    assert backend.probe.count(label) == 1, "a failed job must not be run again"


@scenario("Failures")
def test_discard_on_and_after_discard(backend: Backend) -> None:
    """discard_on: on_discard then after_discard run, no retry"""
    _started(backend)
    label = backend.label_for("discard")
    DiscardJob.set(queue=backend.main_queue).perform_later(label)
    backend.probe.wait_for_count(label, 1, backend.timeout, kind="after_discard")
    time.sleep(0.3)
    assert [row.kind for row in backend.probe.rows(label)] == ["performed", "on_discard", "after_discard"]


@scenario("Failures")
def test_rescue_from_handles_the_error(backend: Backend) -> None:
    """rescue_from: the handler runs, after_discard does not"""
    _started(backend)
    label = backend.label_for("rescue")
    RescueJob.set(queue=backend.main_queue).perform_later(label)
    backend.probe.wait_for_count(label, 1, backend.timeout, kind="rescued")
    time.sleep(0.3)
    assert [row.kind for row in backend.probe.rows(label)] == ["performed", "rescued"]


@scenario("Failures")
def test_deserialization_error_is_discarded(backend: Backend) -> None:
    """a deleted record raises RecordNotFound at load; discard_on(DeserializationError) drops it"""
    _started(backend)
    job = MissingRecordJob.set(queue=backend.main_queue).perform_later(Record("missing-7"))
    (row,) = backend.probe.wait_for_count(job.job_id, 1, backend.timeout, kind="discarded")
    assert row.detail == {"error": "RecordNotFound"}
    assert backend.probe.count(job.job_id) == 0


def _poison(backend: Backend, payload: str, reason: str) -> None:
    _started(backend)
    marker = backend.label_for("poison")
    backend.adapter.enqueue_payload(payload.replace("MARKER", marker), backend.main_queue)
    backend.probe.wait_for(
        lambda: any(marker in body and reason in why for body, why in backend.adapter.failed()),
        backend.timeout,
        f"the poison payload in the failed store with a reason containing {reason!r}",
    )
    label = backend.label_for("after-poison")
    PingJob.set(queue=backend.main_queue).perform_later(label)
    backend.probe.wait_for_count(label, 1, backend.timeout)


def _valid_document(marker: str) -> dict[str, object]:
    return valid_document(marker, "jobadapter.conformance.jobs.PingJob")


@scenario("Poison payloads", Capability.FAILED_STORE)
def test_malformed_payload(backend: Backend) -> None:
    """a payload that is not JSON goes to the failed store; the worker keeps running"""
    _poison(backend, '{"jobadapter": 1, MARKER', "not JSON")


@scenario("Poison payloads", Capability.FAILED_STORE)
def test_future_version_payload(backend: Backend) -> None:
    """an envelope of a future version goes to the failed store; the worker keeps running"""
    document = _valid_document("MARKER") | {"jobadapter": envelope_format.VERSION + 1}
    _poison(backend, json.dumps(document), "newer than this worker reads")


@scenario("Poison payloads", Capability.FAILED_STORE)
def test_unregistered_class_payload(backend: Backend) -> None:
    """an envelope naming an unregistered class goes to the failed store, nothing imported"""
    document = _valid_document("MARKER") | {"job_class": "os.system"}
    _poison(backend, json.dumps(document), "not registered")


@scenario("Poison payloads", Capability.FAILED_STORE, Capability.EXTERNAL_WORKER)
def test_backend_level_hostile_messages(backend: Backend) -> None:
    """backend-level malformed messages (hostile_messages()) reach the failed store; the worker goes on

    Kinds whose fate is "performed" or "dropped" are left to the fault suite."""
    try:
        kinds = list(backend.adapter.hostile_messages())
    except NotImplementedError:
        pytest.skip(f"{UNSUPPORTED} the adapter supplies no hostile_messages() in its own wire format")
    _started(backend)
    markers = {}
    for kind in kinds:
        if kind.fate == "failed":  # "performed" needs the fault suite's jobs; "dropped" leaves no trace
            markers[backend.label_for(f"hostile-{kind.kind}")] = kind
    for marker, kind in markers.items():
        kind.send(backend.main_queue, marker)
    missing = set(markers)

    def all_failed() -> bool:
        entries = backend.adapter.failed()
        missing.difference_update({m for m in missing if any(m in body or m in why for body, why in entries)})
        return not missing

    deadline = time.monotonic() + backend.timeout
    while not all_failed() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not missing, f"not in the failed store after {backend.timeout:g} s: " + ", ".join(
        f"{markers[m].kind} ({markers[m].description})" for m in sorted(missing)
    )
    label = backend.label_for("after-hostile")
    PingJob.set(queue=backend.main_queue).perform_later(label)
    backend.probe.wait_for_count(label, 1, backend.timeout)


# -- Reliability ---------------------------------------------------------------------


@scenario("Reliability", Capability.AT_LEAST_ONCE, Capability.EXTERNAL_WORKER)
def test_job_survives_a_killed_worker(backend: Backend) -> None:
    """at-least-once: SIGKILL the worker mid-job; a new worker completes the job"""
    queue = backend.queue("kill")
    label = backend.label_for("kill")
    with backend.worker([queue]) as worker:
        assert worker is not None
        SlowJob.set(queue=queue).perform_later(label, 1.5)
        backend.probe.wait_for_count(label, 1, backend.timeout, kind="started")
        worker.kill()
    assert backend.probe.count(label, "finished") == 0
    with backend.worker([queue]):
        backend.probe.wait_for_count(label, 1, 60, kind="finished")


@scenario("Reliability", Capability.GRACEFUL_SHUTDOWN, Capability.EXTERNAL_WORKER)
def test_sigterm_lets_the_running_job_finish(backend: Backend) -> None:
    """graceful shutdown: SIGTERM mid-job loses nothing (the job finishes or is requeued)"""
    queue = backend.queue("shutdown")
    label = backend.label_for("shutdown")
    with backend.worker([queue]) as worker:
        assert worker is not None
        SlowJob.set(queue=queue).perform_later(label, 1.0)
        backend.probe.wait_for_count(label, 1, backend.timeout, kind="started")
        code = worker.terminate()
        assert code == 0, f"worker exited with {code} on SIGTERM\n{worker.log_tail()}"
    if backend.probe.count(label, "finished") == 0:
        with backend.worker([queue]):
            backend.probe.wait_for_count(label, 1, backend.timeout, kind="finished")


@scenario("Reliability", Capability.EXTERNAL_WORKER)
def test_idle_worker_stops_cleanly_on_sigterm(backend: Backend) -> None:
    """an idle worker exits with status 0 within the bound after SIGTERM"""
    worker = backend.start_worker([backend.queue("idle")])
    code = worker.terminate()
    assert code == 0, f"worker exited with {code}\n{worker.log_tail()}"
