"""The operations contract on Dramatiq, against real workers: a private redis-server per test, and
the shared RabbitMQ (queues ``dq-ops-…``, deleted at the end with their .DQ/.XQ queues)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from jobadapter_dramatiq.adapter import RabbitmqAdapter, RedisAdapter
from redis import Redis

from jobadapter import config, journal
from jobadapter.adapters.base import PAUSE_BOUND, Capability
from jobadapter.conformance.harness import Backend
from jobadapter.conformance.jobs import FailingJob, RecordJob, SlowJob
from jobadapter.conformance.probe import Probe
from jobadapter.envelope import Envelope
from jobadapter.faults.brokers import PrivateRedis, shared_amqp
from jobadapter.operations import JobError, JobFilter, JobNotFound, JobState, NotInState, OperationUnsupported


@pytest.fixture
def redis_backend(tmp_path: Path) -> Iterator[Backend]:
    with PrivateRedis(persistent=False) as server:
        backend = Backend(f"dramatiq+{server.url}", Probe(tmp_path / "probe.sqlite"), tmp_path, 20.0)
        try:
            with config.override(backend.adapter):
                yield backend
        finally:
            backend.close()


def _until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _ids(records: list[object]) -> list[str]:
    return [record.job_id for record in records]  # type: ignore[attr-defined]


def _redis(backend: Backend) -> Redis:
    adapter = backend.adapter
    assert isinstance(adapter, RedisAdapter)
    client: Redis = adapter.broker.client
    return client


def test_redis_capabilities_and_bad_input(redis_backend: Backend) -> None:
    adapter = redis_backend.adapter
    wanted = {Capability.RETRY, Capability.DISCARD, Capability.RUN_NOW, Capability.PAUSE}
    assert wanted <= adapter.capabilities
    with pytest.raises(JobNotFound, match="no job with id 'nope'"):
        adapter.find("nope")
    with pytest.raises(JobNotFound):
        adapter.retry(["nope"])
    with pytest.raises(JobNotFound):
        adapter.discard(["nope"])
    with pytest.raises(JobNotFound):
        adapter.run_now("nope")
    with pytest.raises(ValueError, match="sequence of non-empty job id strings"):
        adapter.discard("a-job-id")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit"):
        adapter.jobs(JobState.PENDING, limit=-1)
    with pytest.raises(ValueError, match="queue name"):
        adapter.pause("")
    if journal.active() is None:
        assert Capability.INSPECT not in adapter.capabilities, "finished jobs need a journal"
        with pytest.raises(OperationUnsupported, match="JOBADAPTER_JOURNAL"):
            adapter.jobs(JobState.FINISHED)


def test_redis_listing_search_find_and_native_commands(redis_backend: Backend) -> None:
    """No worker: every job stays where it was put, and each command acts on the stores alone."""
    adapter = redis_backend.adapter
    queue = redis_backend.queue("list")
    other = redis_backend.queue("other")
    alice = RecordJob.set(queue=queue).perform_later("l", "alice@example.com")
    bob = RecordJob.set(queue=queue).perform_later("l", email="bob@example.com")
    later = RecordJob.set(queue=other, wait=3600).perform_later("l", "carol")
    assert _ids(adapter.jobs(JobState.PENDING, filter=JobFilter(queue=queue))) == [alice.job_id, bob.job_id]
    assert _ids(adapter.jobs(JobState.PENDING, filter=JobFilter(search="BOB@EXAMPLE"))) == [bob.job_id]
    assert _ids(adapter.jobs(JobState.PENDING, limit=1, offset=1)) == [bob.job_id]
    (scheduled,) = adapter.jobs(JobState.SCHEDULED)
    assert scheduled.job_id == later.job_id and scheduled.scheduled_at == later.scheduled_at
    assert adapter.find(alice.job_id).state is JobState.PENDING
    assert adapter.find(alice.job_id).arguments == ["l", "alice@example.com"]
    assert adapter.find(later.job_id).state is JobState.SCHEDULED
    infos = {info.name: info for info in adapter.queues()}
    assert (infos[queue].pending, infos[queue].scheduled, infos[other].scheduled) == (2, 0, 1)

    with pytest.raises(NotInState, match="is pending; this needs it failed"):
        adapter.retry([alice.job_id])
    assert adapter.discard([alice.job_id, later.job_id]) == 2
    with pytest.raises(JobNotFound):
        adapter.find(alice.job_id)
    assert _ids(adapter.jobs(JobState.PENDING)) == [bob.job_id]
    assert adapter.jobs(JobState.SCHEDULED) == []
    assert not _redis(redis_backend).exists("dramatiq:jobadapter.tombstones"), "deleted, not tombstoned"

    soon = RecordJob.set(queue=queue, wait=3600).perform_later("l", "dave")
    adapter.run_now(soon.job_id)
    record = adapter.find(soon.job_id)
    assert record.state is JobState.PENDING and record.scheduled_at is not None
    assert adapter.discard_all(JobState.PENDING, JobFilter(search="dave")) == 1
    assert _ids(adapter.jobs(JobState.PENDING)) == [bob.job_id]


def test_redis_discard_run_now_retry_with_a_worker(redis_backend: Backend) -> None:
    """Messages the worker already holds: a prefetched one and delayed ones in its memory."""
    adapter = redis_backend.adapter
    probe = redis_backend.probe
    queue = redis_backend.queue("held")
    label = redis_backend.label_for("held")
    client = _redis(redis_backend)
    with redis_backend.worker([queue]):
        slow = SlowJob.set(queue=queue).perform_later(label, 1.5)
        _until(lambda: probe.count(label, "started") == 1, "the slow job to start")
        # Enqueued once the slow job runs: Dramatiq 1.x runs prefetched jobs in no fixed order.
        held = RecordJob.set(queue=queue).perform_later(label, "prefetched")
        _until(lambda: client.llen(f"dramatiq:{queue}") == 0, "the worker to prefetch")
        running = adapter.find(slow.job_id)
        assert running.state is JobState.RUNNING and running.worker and running.started_at
        assert _ids(adapter.jobs(JobState.RUNNING)) == [slow.job_id]
        assert _ids(adapter.jobs(JobState.PENDING)) == [held.job_id]
        with pytest.raises(NotInState, match="is running"):
            adapter.discard([slow.job_id])
        assert adapter.discard([held.job_id]) == 1

        gone = RecordJob.set(queue=queue, wait=2).perform_later(label, "discarded scheduled")
        hour = RecordJob.set(queue=queue, wait=3600).perform_later(label, "an hour ahead")
        short = RecordJob.set(queue=queue, wait=2.5).perform_later(label, "two seconds ahead")
        _until(lambda: client.llen(f"dramatiq:{queue}.DQ") == 0, "the delay consumer to hold them")
        assert adapter.discard([gone.job_id]) == 1
        started = time.monotonic()
        adapter.run_now(hour.job_id)
        adapter.run_now(short.job_id)
        with pytest.raises(JobNotFound):
            adapter.run_now(gone.job_id)
        probe.wait_for(lambda: len(_performed(probe, label)) == 2, 5, "the jobs run now")
        assert time.monotonic() - started < 2.0
        probe.wait_for_count(label, 1, 5, kind="finished")  # the slow job ended normally
        time.sleep(3.5 - (time.monotonic() - started))  # past every old schedule
        ran = _performed(probe, label)
        assert sorted(ran) == sorted([hour.job_id, short.job_id]), "a discarded job ran, or one ran twice"

        failing = FailingJob.set(queue=queue).perform_later(label)
        _until(lambda: bool(adapter.jobs(JobState.FAILED)), "the failure")
        (failed,) = adapter.jobs(JobState.FAILED)
        assert failed.job_id == failing.job_id
        assert failed.error is not None and failed.error.error_class == "Doomed"
        assert adapter.retry([failing.job_id]) == 1
        _until(lambda: probe.count(label) == 4, "the retried job to run")
        _until(lambda: bool(adapter.jobs(JobState.FAILED)), "the second failure")
        assert adapter.retry_all(JobFilter(job_class=FailingJob.job_name)) == 1
        _until(lambda: probe.count(label) == 5, "the job retried by retry_all")
        rows = [row for row in probe.rows(label) if row.job_id == failing.job_id]
        assert len(rows) == 3 and {row.job_id for row in rows} == {failing.job_id}
        _until(lambda: bool(adapter.jobs(JobState.FAILED)), "the third failure")
        assert adapter.discard_all(JobState.FAILED) == 1
        assert adapter.jobs(JobState.FAILED) == []


def _performed(probe: Probe, label: str) -> list[str]:
    return [row.job_id for row in probe.rows(label, "performed")]


def test_redis_pause_and_resume_across_workers(redis_backend: Backend) -> None:
    adapter = redis_backend.adapter
    probe = redis_backend.probe
    queue = redis_backend.queue("paused")
    label = redis_backend.label_for("paused")
    client = _redis(redis_backend)
    with redis_backend.worker([queue], concurrency=1):
        SlowJob.set(queue=queue).perform_later(label, 1.0)
        _until(lambda: probe.count(label, "started") == 1, "the slow job to start")
        # Enqueued once the slow job runs: Dramatiq 1.x runs prefetched jobs in no fixed order.
        prefetched = RecordJob.set(queue=queue).perform_later(label, "prefetched")
        _until(lambda: client.llen(f"dramatiq:{queue}") == 0, "the worker to prefetch")
        adapter.pause(queue)
        paused_at = time.monotonic()
        assert {info.name: info.paused for info in adapter.queues()}[queue]
        waiting = [RecordJob.set(queue=queue).perform_later(label, n) for n in range(3)]
        other = redis_backend.queue("not-paused")
        late = redis_backend.start_worker([queue, other], wait=False)  # started while paused
        try:
            redis_backend.wait_until_consuming(late, [other])
            probe.wait_for_count(label, 1, 5, kind="finished")  # the running job finishes
            time.sleep(max(0.0, PAUSE_BOUND + 0.5 - (time.monotonic() - paused_at)))
            assert probe.count(label) == 0, "a worker took a job of a paused queue"
            pending = _ids(adapter.jobs(JobState.PENDING, filter=JobFilter(queue=queue)))
            assert sorted(pending) == sorted([prefetched.job_id] + [job.job_id for job in waiting])
            adapter.resume(queue)
            probe.wait_for_count(label, 4, PAUSE_BOUND + 5)
            assert sorted(_performed(probe, label)) == sorted(pending)
        finally:
            late.terminate()


AMQP = shared_amqp("dramatiq")


@pytest.fixture
def journal_url(tmp_path: Path) -> Iterator[str]:
    """A journal of this test's own, in this process and (through the environment) its workers."""
    url = f"sqlite:///{tmp_path}/journal.sqlite"
    journal.configure(url)
    try:
        yield url
    finally:
        journal.close()


@pytest.fixture
def amqp_queues() -> Iterator[Callable[[str], str]]:
    """Queue names ``dq-ops-<unique>-<name>``; deleted at the end with their .DQ and .XQ queues."""
    names: list[str] = []
    prefix = f"dq-ops-{uuid.uuid4().hex[:8]}"

    def name(suffix: str) -> str:
        names.append(f"{prefix}-{suffix}")
        return names[-1]

    yield name
    cleaner = config.build_adapter(AMQP)
    cleaner.purge(names)
    cleaner.close()


def test_rabbitmq_without_a_journal_offers_only_the_dead_letters(amqp_queues: Callable[[str], str]) -> None:
    if journal.active() is not None:
        pytest.skip("this process has a journal")
    adapter = config.build_adapter(AMQP)
    try:
        assert isinstance(adapter, RabbitmqAdapter)
        operations = adapter.capabilities - RabbitmqAdapter.JOB_FEATURES
        # Moving jobs drains the queues themselves (jobadapter migrate): no journal needed.
        assert operations == {Capability.RETRY, Capability.MIGRATE_FROM, Capability.MIGRATE_TO}
        assert adapter.notes[Capability.PAUSE.value].endswith("(unsupported without a journal)")
        for call in (
            lambda: adapter.jobs(JobState.PENDING),
            lambda: adapter.pause(amqp_queues("nothing")),
            lambda: adapter.run_now("some-id"),
            lambda: adapter.discard(["some-id"]),
        ):
            with pytest.raises(OperationUnsupported, match="JOBADAPTER_JOURNAL"):
                call()
        assert adapter.jobs(JobState.FAILED, filter=JobFilter(queue=amqp_queues("empty"))) == []
    finally:
        adapter.close()


def test_rabbitmq_operations_with_a_journal(
    journal_url: str, amqp_queues: Callable[[str], str], tmp_path: Path
) -> None:
    backend = Backend(
        AMQP,
        Probe(tmp_path / "probe.sqlite"),
        tmp_path,
        20.0,
        environment={journal.ENVIRONMENT_VARIABLE: journal_url},
    )
    adapter = backend.adapter
    probe = backend.probe
    queue, held = amqp_queues("work"), amqp_queues("held")
    label = backend.label_for("amqp")
    active = journal.active()
    assert active is not None
    assert {
        Capability.INSPECT,
        Capability.DISCARD,
        Capability.RUN_NOW,
        Capability.PAUSE,
    } <= adapter.capabilities
    try:
        with config.override(adapter), backend.worker([queue]):
            alice = RecordJob.set(queue=held).perform_later(label, "alice@example.com")
            bob = RecordJob.set(queue=held).perform_later(label, "bob")
            active.flush()
            assert _ids(adapter.jobs(JobState.PENDING, filter=JobFilter(queue=held))) == [
                alice.job_id,
                bob.job_id,
            ]
            assert _ids(adapter.jobs(JobState.PENDING, filter=JobFilter(search="ALICE@"))) == [alice.job_id]
            assert adapter.discard([alice.job_id]) == 1
            assert adapter.find(alice.job_id).state is JobState.FINISHED
            assert _ids(adapter.jobs(JobState.PENDING, filter=JobFilter(queue=held))) == [bob.job_id]
            assert {info.name: info.pending for info in adapter.queues()}[held] == 2  # RabbitMQ's count

            failing = FailingJob.set(queue=queue).perform_later(label)
            _until(lambda: bool(adapter.jobs(JobState.FAILED, filter=JobFilter(queue=queue))), "the failure")
            (failed,) = adapter.jobs(JobState.FAILED, filter=JobFilter(queue=queue))
            assert failed.job_id == failing.job_id and failed.error is not None
            assert failed.error.error_class == "Doomed"
            assert adapter.find(failing.job_id).state is JobState.FAILED
            assert adapter.retry([failing.job_id]) == 1
            _until(lambda: probe.count(label) == 2, "the retried job to run")
            assert {row.job_id for row in probe.rows(label)} == {failing.job_id}
            _until(
                lambda: bool(adapter.jobs(JobState.FAILED, filter=JobFilter(queue=queue))), "failing again"
            )
            assert adapter.discard_all(JobState.FAILED, JobFilter(queue=queue)) == 1
            assert adapter.jobs(JobState.FAILED, filter=JobFilter(queue=queue)) == []

            gone = RecordJob.set(queue=queue, wait=2).perform_later(label, "discarded scheduled")
            hour = RecordJob.set(queue=queue, wait=3600).perform_later(label, "an hour ahead")
            short = RecordJob.set(queue=queue, wait=2.5).perform_later(label, "two seconds ahead")
            started = time.monotonic()
            active.flush()
            assert adapter.discard([gone.job_id]) == 1
            adapter.run_now(hour.job_id)
            adapter.run_now(short.job_id)
            probe.wait_for(lambda: probe.count(label) == 4, 5, "the jobs run now")
            assert time.monotonic() - started < 2.0
            time.sleep(max(0.0, 3.5 - (time.monotonic() - started)))  # past every old schedule
            ran = [row.job_id for row in probe.rows(label)][2:]
            assert sorted(ran) == sorted([hour.job_id, short.job_id]), "a discarded job ran, or one ran twice"

            adapter.pause(queue)
            time.sleep(PAUSE_BOUND)
            waiting = RecordJob.set(queue=queue).perform_later(label, "paused")
            time.sleep(1.0)
            assert probe.count(label) == 4, "a worker took a job of a paused queue"
            assert {info.name: info.paused for info in adapter.queues()}[queue]
            adapter.resume(queue)
            _until(lambda: probe.count(label) == 5, "the job of the resumed queue")
            assert probe.rows(label)[-1].job_id == waiting.job_id
    finally:
        backend.close()


def test_rabbitmq_discards_a_dead_letter_while_the_journal_still_says_pending(
    journal_url: str, amqp_queues: Callable[[str], str]
) -> None:
    """The worker's last journal rows may still be on their way when its dead letter is
    already there: discard must remove the dead letter, not tombstone a "pending" job and
    leave the failure behind (a CI run saw this on Celery, which shares the pattern)."""
    adapter = config.build_adapter(AMQP)
    active = journal.active()
    assert isinstance(adapter, RabbitmqAdapter) and active is not None
    queue = amqp_queues("late-rows")
    envelope = Envelope(
        RecordJob.job_name, str(uuid.uuid4()), queue, None, ["x"], {}, 1, {}, datetime.now(timezone.utc)
    )
    try:
        active.record(envelope.job_id, state=JobState.PENDING)  # the enqueue's row, and no later one
        adapter.enqueue_failed([(envelope, JobError("Doomed", "late rows"))])
        assert adapter.discard([envelope.job_id]) == 1
        assert adapter.jobs(JobState.FAILED, filter=JobFilter(queue=queue)) == []
    finally:
        adapter.close()


def test_rabbitmq_reads_never_declare_a_queue(journal_url: str, amqp_queues: Callable[[str], str]) -> None:
    """Listing queues, failed jobs or finding a job reads with passive declares: a queue name the
    journal remembers (a failed row) but RabbitMQ no longer has is not created again."""
    import pika  # type: ignore[import-untyped]
    import pika.exceptions  # type: ignore[import-untyped]

    adapter = config.build_adapter(AMQP)
    active = journal.active()
    assert isinstance(adapter, RabbitmqAdapter) and active is not None
    ghost = amqp_queues("ghost")
    job_id = str(uuid.uuid4())
    active.record(job_id, state=JobState.FAILED, queue=ghost, job_class=RecordJob.job_name)
    active.flush()
    try:
        assert ghost in {info.name for info in adapter.queues()}
        assert adapter.jobs(JobState.FAILED, filter=JobFilter(queue=ghost)) == []
        assert adapter.find(job_id).state is JobState.FAILED  # the journal's row
    finally:
        adapter.close()
    connection = pika.BlockingConnection(pika.URLParameters(shared_amqp()))
    try:
        for name in (ghost, f"{ghost}.DQ", f"{ghost}.XQ"):
            channel = connection.channel()
            with pytest.raises(pika.exceptions.ChannelClosedByBroker):
                channel.queue_declare(name, passive=True)
    finally:
        connection.close()


def test_redis_bulk_commands_walk_pages_past_what_they_leave(redis_backend: Backend) -> None:
    """1,200 dead letters, every other one matching: a page-crossing walk must meet each once."""
    adapter = redis_backend.adapter
    assert isinstance(adapter, RedisAdapter)
    queue = redis_backend.queue("bulk")
    client = _redis(redis_backend)
    jobs = [RecordJob(f"{'even' if n % 2 == 0 else 'odd'}-{n}") for n in range(1200)]
    for job in jobs:
        job.queue_name = queue
    with client.pipeline(transaction=False) as pipe:
        for n, job in enumerate(jobs):
            message = adapter.message(job.to_envelope(), {}).copy(options={"redis_message_id": f"r{n}"})
            pipe.zadd(f"dramatiq:{queue}.XQ", {f"r{n}": n})
            pipe.hset(f"dramatiq:{queue}.XQ.msgs", f"r{n}", message.encode())
        pipe.execute()
    pages: list[int] = []
    assert adapter.retry_all(JobFilter(search="even-"), progress=pages.append) == 600
    assert pages == [500, 100]
    assert client.llen(f"dramatiq:{queue}") == 600 and client.zcard(f"dramatiq:{queue}.XQ") == 600
    assert all("odd" in str(r.arguments) for r in adapter.jobs(JobState.FAILED, limit=1000))
    assert adapter.discard_all(JobState.PENDING, JobFilter(queue=queue)) == 600
    assert adapter.discard_all(JobState.FAILED) == 600
    assert client.llen(f"dramatiq:{queue}") == 0 and client.zcard(f"dramatiq:{queue}.XQ") == 0
