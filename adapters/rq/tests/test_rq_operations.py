"""The operations contract on RQ: listing, finding, retrying, discarding, running now, pausing.

On a redis-server of the module's own (`PrivateRedis`), emptied before each
test. Where behaviour needs a worker, a real ``jobadapter worker`` subprocess
runs the conformance jobs and reports through the probe.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tracemalloc
import uuid
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import pytest
from jobadapter_rq.adapter import RQAdapter
from jobadapter_rq.failures import record_unreadable
from jobadapter_rq.worker import ENTRY_POINT
from redis import Redis
from rq.job import Job as RQJob
from rq.registry import FailedJobRegistry
from rq.utils import utcformat

from jobadapter import Job, config, retry_on
from jobadapter.conformance.jobs import FailingJob, PingJob, RecordJob, SlowJob
from jobadapter.conformance.probe import ENVIRONMENT_VARIABLE, Probe
from jobadapter.execution import execute
from jobadapter.faults.brokers import PrivateRedis
from jobadapter.faults.processes import kill_tree
from jobadapter.operations import JobFilter, JobNotFound, JobState, NotInState


@pytest.fixture(scope="module")
def server() -> Iterator[PrivateRedis]:
    with PrivateRedis(persistent=False) as private:
        yield private


@pytest.fixture
def adapter(server: PrivateRedis) -> Iterator[RQAdapter]:
    Redis.from_url(server.url).flushdb()
    built = config.configure(url=f"rq+{server.url}")
    assert isinstance(built, RQAdapter)
    yield built
    built.close()


def eventually(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> float:
    """Poll until ``condition`` holds; returns the seconds it took."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"timed out waiting for {what}"
        time.sleep(0.05)
    return time.monotonic() - started


def state_of(adapter: RQAdapter, job_id: str) -> JobState | None:
    try:
        return adapter.find(job_id).state
    except JobNotFound:
        return None


def test_listing_finding_and_searching_natively(adapter: RQAdapter) -> None:
    first = RecordJob.set(queue="ops").perform_later("first", "alice@example.com")
    urgent = RecordJob.set(queue="ops", priority=3).perform_later("urgent", {"to": "bob@example.com"})
    other = PingJob.set(queue="other").perform_later("other")
    later = RecordJob.set(queue="ops", wait=3600).perform_later("later", "alice@example.com")
    adapter.enqueue_payload("not an envelope", "ops")
    queue = adapter.queue("ops")
    planted = b"planted-" + uuid.uuid4().hex.encode()
    adapter.connection.hset(RQJob.key_for(planted.decode()), "data", b"\x80garbage")
    record_unreadable(adapter.connection, queue, planted, "refused: planted for the test", None)

    assert {info.name: info.to_dict() for info in adapter.queues()} == {
        "ops": {"name": "ops", "pending": 3, "scheduled": 1, "failed": 1, "paused": False},
        "other": {"name": "other", "pending": 1, "scheduled": 0, "failed": 0, "paused": False},
    }

    pending = adapter.jobs(JobState.PENDING)  # oldest first, across queues and bands
    assert [record.job_id for record in pending[:3]] == [first.job_id, urgent.job_id, other.job_id]
    raw = pending[3]
    assert (raw.job_class, raw.queue, raw.payload) == ("?", "ops", "not an envelope")
    assert [r.job_id for r in adapter.jobs(JobState.PENDING, limit=2, offset=1)] == [
        urgent.job_id,
        other.job_id,
    ]
    assert adapter.jobs(JobState.PENDING, offset=10) == []

    by_search = adapter.jobs(JobState.PENDING, filter=JobFilter(search="BOB@example"))
    assert [record.job_id for record in by_search] == [urgent.job_id]
    assert by_search[0].priority == 3 and by_search[0].keyword_arguments == {}
    by_class = adapter.jobs(JobState.PENDING, filter=JobFilter(job_class=PingJob.job_name))
    assert [record.job_id for record in by_class] == [other.job_id]
    in_ops = adapter.jobs(JobState.PENDING, filter=JobFilter(queue="ops", search="alice"))
    assert [record.job_id for record in in_ops] == [first.job_id]
    scheduled = adapter.jobs(JobState.SCHEDULED, filter=JobFilter(search="alice"))
    assert [record.job_id for record in scheduled] == [later.job_id]
    assert scheduled[0].scheduled_at == later.scheduled_at

    (failed,) = adapter.jobs(JobState.FAILED)
    assert (failed.job_id, failed.job_class, failed.queue) == (planted.decode(), "?", "ops")
    assert failed.error is not None and failed.error.error_class == "refused"
    assert failed.payload is not None and failed.to_dict()["payload"] == failed.payload
    assert adapter.jobs(JobState.RUNNING) == [] and adapter.jobs(JobState.FINISHED) == []

    found = adapter.find(first.job_id)
    assert (found.state, found.queue, found.arguments) == (
        JobState.PENDING,
        "ops",
        ["first", "alice@example.com"],
    )
    assert found.executions == 0 and found.provider_job_id == first.job_id
    assert adapter.find(later.job_id).state is JobState.SCHEDULED
    with pytest.raises(JobNotFound, match="no job with id 'no-such-job'"):
        adapter.find("no-such-job")


def test_bad_requests_are_refused_with_the_reason(adapter: RQAdapter) -> None:
    pending = PingJob.set(queue="ops").perform_later("pending")
    with pytest.raises(NotInState, match="is pending; this needs it failed"):
        adapter.retry([pending.job_id])
    with pytest.raises(NotInState, match="is pending; this needs it scheduled"):
        adapter.run_now(pending.job_id)
    with pytest.raises(JobNotFound, match="'gone'"):
        adapter.discard([pending.job_id, "gone"])
    assert state_of(adapter, pending.job_id) is JobState.PENDING  # nothing done before the check
    with pytest.raises(TypeError, match="not one id"):
        adapter.retry(pending.job_id)
    with pytest.raises(ValueError, match="only pending, scheduled or failed"):
        adapter.discard_all(JobState.RUNNING)
    with pytest.raises(ValueError, match="'bogus' is not a valid JobState"):
        adapter.jobs("bogus")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit and offset must be >= 0"):
        adapter.jobs(JobState.PENDING, limit=-1)
    with pytest.raises(ValueError, match="a queue name is a non-empty string"):
        adapter.pause("")


def test_discard_and_run_now_move_ids_atomically(adapter: RQAdapter) -> None:
    kept = PingJob.set(queue="ops").perform_later("kept")
    dropped = PingJob.set(queue="ops", priority=2).perform_later("dropped")
    later = PingJob.set(queue="ops", wait=3600).perform_later("later")
    sooner = PingJob.set(queue="ops", wait=3600).perform_later("sooner")
    assert adapter.discard([dropped.job_id, later.job_id]) == 2
    assert state_of(adapter, dropped.job_id) is None and state_of(adapter, later.job_id) is None
    assert not adapter.connection.exists(RQJob.key_for(dropped.job_id), RQJob.key_for(later.job_id))
    assert adapter.queue("ops:p2").job_ids == []

    adapter.run_now(sooner.job_id)
    assert adapter.queue("ops").job_ids == [kept.job_id, sooner.job_id]
    assert adapter.find(sooner.job_id).state is JobState.PENDING
    assert adapter.connection.zcard("rq:scheduled:ops") == 0
    assert adapter.connection.llen("jobadapter:rq:wake:rq:queue:ops") >= 1  # an idle worker wakes
    assert adapter.discard_all(JobState.PENDING, JobFilter(search="sooner")) == 1
    assert adapter.queue("ops").job_ids == [kept.job_id]


@retry_on(KeyError, wait=60, attempts=3)
class Flaky(Job):
    def perform(self) -> None:
        raise KeyError("again")


def test_find_and_discard_follow_the_retry_chain(adapter: RQAdapter) -> None:
    job = Flaky.perform_later()
    adapter.connection.lrem("rq:queue:default", 0, job.job_id)
    assert execute(job.to_envelope().encode(), adapter).outcome == "retried"
    adapter.connection.hset(RQJob.key_for(job.job_id), "status", "finished")  # as RQ records the run
    adapter.connection.zadd("rq:finished:default", {job.job_id: time.time() + 500})
    found = adapter.find(job.job_id)
    assert (found.state, found.provider_job_id, found.executions) == (
        JobState.SCHEDULED,
        f"{job.job_id}-retry-1",
        1,
    )
    assert adapter.jobs(JobState.FINISHED) == []  # superseded by its retry
    assert adapter.discard([job.job_id]) == 1
    assert state_of(adapter, job.job_id) is None
    assert adapter.connection.zcard("rq:finished:default") == 0


_COPY_FAILED = """
for i = 1, #ARGV, 2 do
  local job = KEYS[2] .. ARGV[i]
  redis.call('COPY', KEYS[1], job)
  redis.call('HSET', job, 'data', ARGV[i + 1])
end
"""
"""KEYS: the template job hash, the job-key prefix. ARGV: pairs of job id and data."""


def _write_failed(connection: Redis, count: int) -> None:
    """``count`` failed RQ jobs on queue ``bulk``, as RQ's worker leaves a failed jobadapter job
    (one real job's hash, marked failed, copied server-side; each with its own envelope), without
    running any."""
    marker = "JOB-ID-MARKER"  # each job gets its id as job_id and as argument
    template = RecordJob.set(queue="bulk").perform_later(marker)
    key = RQJob.key_for(template.job_id)
    connection.lrem("rq:queue:bulk", 0, template.job_id)
    ended = utcformat(datetime.now(timezone.utc))
    connection.hset(key, mapping={"status": "failed", "ended_at": ended, "exc_info": "Doomed: bulk"})
    text = json.dumps([ENTRY_POINT, None, [{**template.to_envelope().to_document(), "job_id": marker}], {}])
    registry = FailedJobRegistry("bulk", connection=connection).key
    copy = connection.register_script(_COPY_FAILED)
    expiry = time.time() + 3600
    for first in range(0, count, 10_000):
        ids = [f"bulk-{number:06d}" for number in range(first, min(first + 10_000, count))]
        arguments = []
        for job_id in ids:
            arguments += [job_id, zlib.compress(text.replace(marker, job_id).encode())]
        copy(keys=[key, RQJob.redis_job_namespace_prefix], args=arguments)
        connection.zadd(registry, dict.fromkeys(ids, expiry))
    connection.delete(key)


@contextmanager
def peak_memory() -> Iterator[list[int]]:
    """The most memory Python allocated inside the block, in bytes (``[peak]`` once it ends)."""
    peak: list[int] = []
    tracemalloc.start()
    try:
        yield peak
        peak.append(tracemalloc.get_traced_memory()[1])
    finally:
        tracemalloc.stop()


def test_retry_all_streams_a_hundred_thousand_failed_jobs(adapter: RQAdapter) -> None:
    connection = adapter.connection
    _write_failed(connection, 100_000)
    assert adapter.queues()[0].failed == 100_000
    started = time.monotonic()
    with peak_memory() as peak:
        retried = adapter.retry_all()
    took = time.monotonic() - started
    assert retried == 100_000
    assert connection.llen("rq:queue:bulk") == 100_000 and connection.zcard("rq:failed:bulk") == 0
    assert peak[0] < 2 * 1024 * 1024, f"retry_all held {peak[0] / 1e6:.1f} MB at its peak"
    assert took < 20, took
    sample = adapter.find("bulk-054321")
    assert sample.state is JobState.PENDING and sample.error is None
    assert sample.arguments == ["bulk-054321"]


def test_filtered_bulk_commands_page_through_the_envelopes(adapter: RQAdapter) -> None:
    connection = adapter.connection
    _write_failed(connection, 3_000)
    with peak_memory() as peak:
        assert adapter.retry_all(JobFilter(search="bulk-0009")) == 100  # bulk-000900 … bulk-000999
    assert peak[0] < 4 * 1024 * 1024, f"retry_all held {peak[0] / 1e6:.1f} MB at its peak"
    assert adapter.queue("bulk").job_ids == [f"bulk-{n:06d}" for n in range(900, 1000)]
    assert adapter.discard_all(JobState.FAILED, JobFilter(search="bulk-000")) == 900
    assert adapter.discard_all(JobState.PENDING, JobFilter(job_class=RecordJob.job_name)) == 100
    assert adapter.queue("bulk").job_ids == []
    assert connection.zcard("rq:failed:bulk") == 2000
    assert not connection.exists(RQJob.key_for("bulk-000950"), RQJob.key_for("bulk-000001"))
    assert adapter.find("bulk-002999").state is JobState.FAILED


class Worker:
    """A ``jobadapter worker`` subprocess running the conformance jobs, reporting to a probe."""

    def __init__(self, adapter: RQAdapter, folder: Path, queues: list[str]) -> None:
        environment = {**os.environ, ENVIRONMENT_VARIABLE: str(folder / "probe.db")}
        self.probe = Probe(folder / "probe.db")
        self.log = folder / "worker.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "jobadapter.cli", "worker", "--url", f"rq+{adapter.url.target}"),
                    *("--app", "jobadapter.conformance.jobs", "--queues", ",".join(queues)),
                    *("--concurrency", "2"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=environment,
            )

    def ran(self, label: str, kind: str = "performed") -> int:
        return self.probe.count(label, kind)

    def wait(self, label: str, kind: str = "performed", count: int = 1, timeout: float = 10.0) -> float:
        return eventually(lambda: self.ran(label, kind) >= count, f"{label} {kind} x{count}", timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            kill_tree(self.process.pid)
            self.process.wait()
        self.probe.close()


@pytest.fixture
def worker(adapter: RQAdapter, tmp_path: Path) -> Iterator[Callable[[list[str]], Worker]]:
    started: list[Worker] = []

    def start(queues: list[str]) -> Worker:
        started.append(Worker(adapter, tmp_path, queues))
        return started[-1]

    yield start
    for running in started:
        running.stop()


def test_pause_resume_and_discard_against_a_worker(
    adapter: RQAdapter, worker: Callable[[list[str]], Worker]
) -> None:
    adapter.pause("held")
    waiting = PingJob.set(queue="held", priority=4).perform_later("waiting")
    running = worker(["held", "ready"])  # started after the pause: it must honour it too
    PingJob.set(queue="ready").perform_later("ready")
    running.wait("ready", timeout=30)
    time.sleep(0.5)
    assert running.ran("waiting") == 0
    assert adapter.find(waiting.job_id).state is JobState.PENDING
    assert [info.paused for info in adapter.queues() if info.name == "held"] == [True]
    adapter.resume("held")
    assert running.wait("waiting") < 1.0  # woken at once, not at the next look

    adapter.pause("held")
    PingJob.set(queue="held").perform_later("again")
    doomed = PingJob.set(queue="held").perform_later("doomed")
    assert adapter.discard([doomed.job_id]) == 1
    time.sleep(0.5)
    assert running.ran("again") == 0
    adapter.resume("held")
    running.wait("again")
    PingJob.set(queue="held").perform_later("after")
    running.wait("after")
    assert running.ran("doomed") == 0
    assert state_of(adapter, doomed.job_id) is None


def test_find_retry_and_run_now_against_a_worker(
    adapter: RQAdapter, worker: Callable[[list[str]], Worker]
) -> None:
    running = worker(["life"])
    slow = SlowJob.set(queue="life").perform_later("slow", 1.0)
    running.wait("slow", "started", timeout=30)
    found = adapter.find(slow.job_id)
    assert found.state is JobState.RUNNING and found.worker and found.started_at is not None
    assert [record.job_id for record in adapter.jobs(JobState.RUNNING)] == [slow.job_id]
    eventually(lambda: state_of(adapter, slow.job_id) is JobState.FINISHED, "slow finished")
    (finished,) = adapter.jobs(JobState.FINISHED)
    assert finished.job_id == slow.job_id and finished.executions == 1 and finished.finished_at

    failing = FailingJob.set(queue="life").perform_later("failing")
    eventually(lambda: state_of(adapter, failing.job_id) is JobState.FAILED, "failing failed")
    failed = adapter.find(failing.job_id)
    assert failed.error is not None and failed.error.error_class == "Doomed"
    assert "conformance failure failing" in failed.error.message and failed.error.traceback
    assert adapter.retry([failing.job_id]) == 1
    running.wait("failing", count=2)
    assert {row.job_id for row in running.probe.rows("failing")} == {failing.job_id}
    eventually(lambda: state_of(adapter, failing.job_id) is JobState.FAILED, "failing failed again")

    later = PingJob.set(queue="life", wait=3600).perform_later("later")
    assert adapter.find(later.job_id).state is JobState.SCHEDULED
    adapter.run_now(later.job_id)
    assert running.wait("later") < 2.0
    PingJob.set(queue="life").perform_later("control")
    running.wait("control")
    time.sleep(0.3)
    assert running.ran("later") == 1
    assert adapter.find(later.job_id).state is JobState.FINISHED


def test_all_jobs_streams_each_job_once_where_pages_reread_up_to_their_offset(
    adapter: RQAdapter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``jobadapter discard --all`` counts the jobs first: over RQ that walk reads each job's
    hash once, not once per page before it (1,200 jobs were about 2,000 reads in pages)."""
    from jobadapter_rq import operations

    from jobadapter import perform_all_later
    from jobadapter.adapters.base import OPERATION_PAGE

    count = 2 * OPERATION_PAGE + 200
    perform_all_later([RecordJob("bulk", n).set(queue="many") for n in range(count)])
    read: list[int] = []
    load = operations.RQOperations._load

    def counted(
        self: operations.RQOperations, ids: list[tuple[str, str, float | None]], **kwargs: bool
    ) -> object:
        read.append(len(ids))
        return load(self, ids, **kwargs)

    monkeypatch.setattr(operations.RQOperations, "_load", counted)
    streamed = [record.job_id for record in adapter.all_jobs(JobState.PENDING, JobFilter(queue="many"))]
    assert len(streamed) == count and sum(read) == count
    paged = [r.job_id for r in adapter.jobs(JobState.PENDING, filter=JobFilter(queue="many"), limit=count)]
    assert streamed == paged
