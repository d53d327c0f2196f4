"""The operations contract's core: filters, records, bulk paging, and async://'s book of jobs.

The behaviour every adapter shares is held by the conformance suite's
Operations group; these are the edges it does not walk: wrong states, bounds,
unreadable payloads, and paging that must end.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone

import pytest

from jobadapter import Job, config
from jobadapter.adapters.async_ import AsyncAdapter
from jobadapter.adapters.base import Adapter, AdapterURL
from jobadapter.operations import (
    EVERY_JOB,
    JobFilter,
    JobNotFound,
    JobRecord,
    JobState,
    NotInState,
    OperationUnsupported,
)

RAN: list[str] = []


class NoteJob(Job):
    def perform(self, note: str) -> str:
        RAN.append(note)
        return note


class BrokenJob(Job):
    def perform(self, note: str) -> None:
        raise ValueError(f"broken {note}")


@pytest.fixture
def pool() -> Iterator[AsyncAdapter]:
    adapter = AsyncAdapter(AdapterURL.parse("async://?workers=1&history=2"))
    try:
        with config.override(adapter):
            yield adapter
    finally:
        adapter.close(timeout=1)


def _wait(condition: object, what: str) -> None:
    deadline = time.monotonic() + 5
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_a_filter_matches_queue_class_and_argument_text() -> None:
    record = JobRecord(
        "id-1",
        "app.Mail",
        "mail",
        JobState.PENDING,
        arguments=["Alice@Example.com"],
        keyword_arguments={"n": 3},
    )
    assert EVERY_JOB.matches(record)
    assert JobFilter(queue="mail", job_class="app.Mail", search="alice@example").matches(record)
    assert JobFilter(search='"n":3').matches(record), "keyword arguments are searched too"
    assert not JobFilter(queue="default").matches(record)
    assert not JobFilter(job_class="app.Other").matches(record)
    assert not JobFilter(search="bob").matches(record)


def test_a_record_is_json_ready() -> None:
    moment = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
    record = JobRecord("id-1", "app.Mail", "mail", JobState.FAILED, enqueued_at=moment)
    document = record.to_dict()
    assert document["state"] == "failed"
    assert document["enqueued_at"] == "2026-11-29T12:00:00+00:00"
    assert "result" not in document, "a job without a stored result shows none"


def test_an_adapter_without_operations_says_so() -> None:
    adapter = Adapter(AdapterURL.parse("none://"))
    with pytest.raises(OperationUnsupported, match="the Adapter adapter cannot list pending jobs"):
        adapter.jobs(JobState.PENDING)
    with pytest.raises(OperationUnsupported, match="cannot pause queues"):
        adapter.pause("default")
    with pytest.raises(ValueError, match="not running"):
        adapter.discard_all(JobState.RUNNING)


class _Paged(Adapter):
    """An adapter whose failed store holds ``size`` ids, of which ``stuck`` cannot be retried."""

    def __init__(self, size: int, stuck: set[str]) -> None:
        super().__init__(AdapterURL.parse("paged://"))
        self.failed_ids = [f"job-{n}" for n in range(size)]
        self.stuck = stuck
        self.largest_page = 0

    def jobs(
        self, state: JobState, *, filter: JobFilter = EVERY_JOB, limit: int = 50, offset: int = 0
    ) -> list[JobRecord]:
        page = self.failed_ids[offset : offset + limit]
        self.largest_page = max(self.largest_page, len(page))
        return [JobRecord(job_id, "Job", "q", JobState.FAILED) for job_id in page]

    def retry(self, job_ids: Sequence[str]) -> int:
        retried = [job_id for job_id in job_ids if job_id not in self.stuck]
        self.failed_ids = [job_id for job_id in self.failed_ids if job_id not in retried]
        return len(retried)


def test_retry_all_pages_through_and_steps_over_what_stays() -> None:
    adapter = _Paged(1203, stuck={"job-7", "job-900"})
    assert adapter.retry_all() == 1201
    assert adapter.failed_ids == ["job-7", "job-900"]
    assert adapter.largest_page == 500, "never more than one page in memory"


def test_async_operations_refuse_jobs_in_the_wrong_state(pool: AsyncAdapter) -> None:
    pool.pause("held")
    job = NoteJob.set(queue="held").perform_later("held")
    with pytest.raises(NotInState, match="is pending; this needs it failed"):
        pool.retry([job.job_id])
    with pytest.raises(NotInState, match="needs it scheduled"):
        pool.run_now(job.job_id)
    with pytest.raises(JobNotFound):
        pool.find("unknown")
    pool.enqueue_payload("not an envelope", "held")
    _wait(lambda: pool.jobs(JobState.FAILED), "the unreadable payload to fail")
    (unreadable,) = pool.jobs(JobState.FAILED)
    assert (unreadable.job_class, unreadable.payload) == ("?", "not an envelope")
    with pytest.raises(Exception, match="unreadable payload: it can only be discarded"):
        pool.retry([unreadable.job_id])
    assert pool.discard([unreadable.job_id]) == 1
    assert pool.failed() == []


def test_async_keeps_a_bounded_history_and_a_retried_failure(pool: AsyncAdapter) -> None:
    for note in ("a", "b", "c"):
        NoteJob.perform_later(note)
    broken = BrokenJob.perform_later("x")
    _wait(lambda: len(pool.jobs(JobState.FAILED)) == 1, "the broken job to fail")
    finished = pool.jobs(JobState.FINISHED)
    assert [record.arguments for record in finished] == [["b"], ["c"]], "history=2 keeps the last two"
    failed = pool.find(broken.job_id)
    assert failed.error is not None and failed.error.message == "broken x"
    assert "ValueError: broken x" in (failed.error.traceback or "")
    pool.pause(broken.queue_name)
    assert pool.retry_all(JobFilter(job_class=BrokenJob.job_name)) == 1
    assert pool.find(broken.job_id).state == JobState.PENDING
    assert pool.failed() == []
    pool.resume(broken.queue_name)
    _wait(lambda: pool.find(broken.job_id).state == JobState.FAILED, "the retried job to fail again")
    assert [info.failed for info in pool.queues()] == [1]
