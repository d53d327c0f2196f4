"""The conformance scenarios of the operations contract (`jobadapter.operations`).

Every adapter answers the same queries and commands, natively or through the
journal; these scenarios hold each one to the same behaviour. Listings may lag
a moment behind the jobs (a journal writes in batches), so a scenario polls a
listing until it shows what it expects, within the backend's timeout.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from typing import TYPE_CHECKING

import pytest

from jobadapter import journal
from jobadapter.adapters.base import PAUSE_BOUND, Capability
from jobadapter.conformance import UNSUPPORTED, scenario
from jobadapter.conformance.jobs import FailingJob, HeldJob, RecordJob, SumJob, UntilAllowedJob
from jobadapter.conformance.probe import record
from jobadapter.operations import JobFilter, JobNotFound, JobRecord, JobState

if TYPE_CHECKING:
    from jobadapter.conformance.harness import Backend

LATE = 2.0
"""How much later than asked a delayed job may run."""
SOON = 3.0
"""A delay long enough to discard the job before it is due."""
LATER = 3600
"""A delay no scenario waits out: the job stays scheduled unless an operation moves it."""


@contextmanager
def _held(backend: Backend, name: str) -> Iterator[str]:
    """A queue whose jobs stay pending: no worker consumes it, or (in-process) it is paused."""
    queue = backend.queue(name)
    if backend.external:
        yield queue
        return
    if Capability.PAUSE not in backend.capabilities:
        pytest.skip(f"{UNSUPPORTED} an in-process adapter holds jobs pending only with pause")
    backend.adapter.pause(queue)
    yield queue


@contextmanager
def _released(backend: Backend, queue: str) -> Iterator[None]:
    """Let the held ``queue``'s jobs run: a worker on it, or (in-process) resume it. The
    worker takes two jobs at once, so a held job cannot keep its readiness ping waiting."""
    if backend.external:
        with backend.worker([queue], concurrency=2):
            yield
        return
    backend.adapter.resume(queue)
    yield


def _listed(backend: Backend, state: JobState, filter: JobFilter) -> list[JobRecord]:
    return backend.adapter.jobs(state, filter=filter, limit=100)


def _wait_listed(backend: Backend, state: JobState, filter: JobFilter, job_ids: set[str]) -> None:
    backend.probe.wait_for(
        lambda: job_ids <= {r.job_id for r in _listed(backend, state, filter)},
        backend.timeout,
        f"{sorted(job_ids)} listed as {state.value}",
    )


def _wait_state(backend: Backend, job_id: str, state: JobState) -> JobRecord:
    found: list[JobRecord] = []

    def reached() -> bool:
        try:
            found[:] = [backend.adapter.find(job_id)]
        except JobNotFound:
            return False
        return found[0].state == state

    backend.probe.wait_for(reached, backend.timeout, f"find({job_id!r}) to say {state.value}")
    return found[0]


def _stays(condition: Callable[[], bool], seconds: float) -> bool:
    """Whether ``condition`` holds all through the next ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not condition():
            return False
        time.sleep(0.05)
    return condition()


@scenario("Operations", Capability.INSPECT)
def test_queues_count_pending_and_scheduled_jobs(backend: Backend) -> None:
    """queues() counts a queue's pending and scheduled jobs"""
    label = backend.label_for("ops-counts")
    with _held(backend, "ops-counts") as queue:
        for _ in range(3):
            RecordJob.set(queue=queue).perform_later(label)
        for _ in range(2):
            RecordJob.set(queue=queue, wait=LATER).perform_later(label)

        def counted() -> bool:
            info = {each.name: each for each in backend.adapter.queues()}.get(queue)
            return info is not None and (info.pending, info.scheduled) == (3, 2)

        what = f"queues() to count 3 pending and 2 scheduled jobs in {queue}"
        backend.probe.wait_for(counted, backend.timeout, what)


@scenario("Operations", Capability.INSPECT)
def test_jobs_lists_each_state_and_search_matches_arguments(backend: Backend) -> None:
    """jobs() lists pending, scheduled, running, failed and finished jobs; search matches arguments"""
    backend.shared_worker()
    label = backend.label_for("ops-states")
    with _held(backend, "ops-states") as held:
        alice = RecordJob.set(queue=held).perform_later(label, f"Alice-{label}")
        bob = RecordJob.set(queue=held).perform_later(label, f"Bob-{label}")
        later = RecordJob.set(queue=held, wait=LATER).perform_later(label, "later")
        _wait_listed(backend, JobState.PENDING, JobFilter(queue=held), {alice.job_id, bob.job_id})
        _wait_listed(backend, JobState.SCHEDULED, JobFilter(queue=held), {later.job_id})
        searched = _listed(backend, JobState.PENDING, JobFilter(queue=held, search=f"alice-{label}"))
        assert [r.job_id for r in searched] == [alice.job_id], "search is case-insensitive and exact"
        (found,) = searched
        assert (found.job_class, found.queue, found.arguments) == (
            RecordJob.job_name,
            held,
            [label, f"Alice-{label}"],
        )
        assert _listed(backend, JobState.PENDING, JobFilter(queue=held, job_class="no.such.Job")) == []

    running = HeldJob.set(queue=backend.main_queue).perform_later(label)
    backend.probe.wait_for_count(label, 1, backend.timeout, kind="started")
    mine = JobFilter(search=label)
    _wait_listed(backend, JobState.RUNNING, mine, {running.job_id})
    record(label, "release")
    _wait_listed(backend, JobState.FINISHED, mine, {running.job_id})
    failed = FailingJob.set(queue=backend.main_queue).perform_later(label)
    _wait_listed(backend, JobState.FAILED, mine, {failed.job_id})


@scenario("Operations", Capability.INSPECT)
def test_find_follows_a_job_through_its_life(backend: Backend) -> None:
    """find(job_id) says pending, then running, then finished; a failed job keeps its error"""
    label = backend.label_for("ops-find")
    with _held(backend, "ops-find") as queue:
        job = HeldJob.set(queue=queue).perform_later(label)
        failing = FailingJob.set(queue=queue).perform_later(label)
        pending = _wait_state(backend, job.job_id, JobState.PENDING)
        assert (pending.job_class, pending.queue, pending.arguments) == (HeldJob.job_name, queue, [label])
        assert pending.executions == 0, "a job that never ran counts no executions"
        with _released(backend, queue):
            running = _wait_state(backend, job.job_id, JobState.RUNNING)
            record(label, "release")
            finished = _wait_state(backend, job.job_id, JobState.FINISHED)
            failed = _wait_state(backend, failing.job_id, JobState.FAILED)
    assert failed.error is not None and failed.error.error_class == "Doomed"
    assert label in failed.error.message
    ran = (running.executions, finished.executions, failed.executions)
    assert ran == (1, 1, 1), f"executions while running, once finished and once failed: {ran}"
    listed = _listed(backend, JobState.FAILED, JobFilter(search=label))
    assert [r.executions for r in listed if r.job_id == failing.job_id] == [1], "jobs() and find() disagree"


@scenario("Operations", Capability.INSPECT)
def test_an_unknown_job_id_is_a_clear_error(backend: Backend) -> None:
    """find, retry and discard of an id nobody knows raise JobNotFound, naming the id"""
    with pytest.raises(JobNotFound, match="no-such-job"):
        backend.adapter.find("no-such-job")
    if Capability.RETRY in backend.capabilities:
        with pytest.raises(JobNotFound, match="no-such-job"):
            backend.adapter.retry(["no-such-job"])
    if Capability.DISCARD in backend.capabilities:
        with pytest.raises(JobNotFound, match="no-such-job"):
            backend.adapter.discard(["no-such-job"])


@scenario("Operations", Capability.INSPECT, Capability.RETRY)
def test_retry_runs_a_failed_job_again_with_its_id(backend: Backend) -> None:
    """retry() publishes a failed job again; it runs with the same job_id and leaves the failed list"""
    backend.shared_worker()
    label = backend.label_for("ops-retry")
    job = UntilAllowedJob.set(queue=backend.main_queue).perform_later(label)
    mine = JobFilter(search=label)
    _wait_listed(backend, JobState.FAILED, mine, {job.job_id})
    record(label, "allowed")
    assert backend.adapter.retry([job.job_id]) == 1
    rows = backend.probe.wait_for_count(label, 2, backend.timeout)
    assert [row.job_id for row in rows] == [job.job_id, job.job_id]
    _wait_state(backend, job.job_id, JobState.FINISHED)
    assert _listed(backend, JobState.FAILED, mine) == []


@scenario("Operations", Capability.INSPECT, Capability.DISCARD)
def test_discarded_jobs_never_run(backend: Backend) -> None:
    """discard() removes a failed, a scheduled and a pending job: none of them runs afterwards"""
    backend.shared_worker()
    label = backend.label_for("ops-discard")
    mine = JobFilter(search=label)
    scheduled = RecordJob.set(queue=backend.main_queue, wait=SOON).perform_later(label, "scheduled")
    due = time.monotonic() + SOON
    failed = FailingJob.set(queue=backend.main_queue).perform_later(label)
    _wait_listed(backend, JobState.SCHEDULED, mine, {scheduled.job_id})
    _wait_listed(backend, JobState.FAILED, mine, {failed.job_id})
    assert backend.adapter.discard([failed.job_id, scheduled.job_id]) == 2
    assert failed.job_id not in {r.job_id for r in _listed(backend, JobState.FAILED, mine)}
    control = backend.label_for("ops-discard-control")
    with _held(backend, "ops-discard") as queue:
        pending = RecordJob.set(queue=queue).perform_later(label, "pending")
        _wait_listed(backend, JobState.PENDING, JobFilter(queue=queue), {pending.job_id})
        assert backend.adapter.discard([pending.job_id]) == 1
        RecordJob.set(queue=queue).perform_later(control)
        with _released(backend, queue):
            backend.probe.wait_for_count(control, 1, backend.timeout)
            time.sleep(max(0.0, due + LATE - time.monotonic()))
    assert backend.probe.count(label) == 1, "only the failed job's first run may be recorded"


@scenario("Operations", Capability.INSPECT, Capability.RUN_NOW)
def test_run_now_runs_a_scheduled_job_at_once_and_once(backend: Backend) -> None:
    """run_now() makes a job scheduled an hour ahead run at once, with its job_id, exactly once"""
    backend.shared_worker()
    label = backend.label_for("ops-run-now")
    job = RecordJob.set(queue=backend.main_queue, wait=LATER).perform_later(label)
    _wait_listed(backend, JobState.SCHEDULED, JobFilter(search=label), {job.job_id})
    backend.adapter.run_now(job.job_id)
    (row,) = backend.probe.wait_for_count(label, 1, backend.timeout)
    assert row.job_id == job.job_id
    assert _stays(lambda: backend.probe.count(label) == 1, 1.0), "the job ran twice"


@scenario("Operations", Capability.PAUSE)
def test_pause_holds_a_queue_and_resume_releases_it(backend: Backend) -> None:
    """pause() stops every worker taking a queue's jobs within the bound; resume() runs them"""
    label = backend.label_for("ops-pause")
    queue = backend.queue("ops-pause")
    with backend.worker([queue]):
        backend.adapter.pause(queue)
        try:
            time.sleep(PAUSE_BOUND)
            RecordJob.set(queue=queue).perform_later(label)
            assert _stays(lambda: backend.probe.count(label) == 0, 1.0), "a paused queue's job ran"
            if Capability.INSPECT in backend.capabilities:
                (info,) = [each for each in backend.adapter.queues() if each.name == queue]
                assert info.paused
        finally:
            backend.adapter.resume(queue)
        backend.probe.wait_for_count(label, 1, backend.timeout)


@scenario("Operations")
def test_a_stored_result_is_read_back_by_job_id(backend: Backend) -> None:
    """a store_result job's return value comes back from job.result() and lookup(job_id)"""
    if journal.active() is None:
        pytest.skip(f"{UNSUPPORTED} results are kept in the journal, and none is configured")
    backend.shared_worker()
    label = backend.label_for("ops-result")
    job = SumJob.set(queue=backend.main_queue).perform_later(label, 2, 3)
    expected = {"label": label, "sum": 5, "at": date(2026, 11, 29)}
    assert job.result(timeout=backend.timeout) == expected, "the value keeps its types"
    found = SumJob.lookup(job.job_id)
    assert (found.state, found.has_result) == (JobState.FINISHED, True)
