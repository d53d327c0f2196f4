"""The operations contract on the celery adapter, with real workers.

Redis runs on a private redis-server; RabbitMQ queues are named
``jac-celery-ops-<test>-<suffix>`` and deleted at the end.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from jobadapter_celery.adapter import CeleryAdapter
from jobadapter_celery_testjobs import FailOnceJob, NoteJob  # type: ignore[import-not-found]
from test_celery_adapter import worker  # type: ignore[import-not-found]  # conftest puts it on sys.path

from jobadapter import config, journal
from jobadapter.adapters.base import Capability
from jobadapter.conformance.probe import ENVIRONMENT_VARIABLE, Probe
from jobadapter.envelope import Envelope
from jobadapter.faults.brokers import PrivateRedis, shared_amqp
from jobadapter.operations import JobFilter, JobNotFound, JobState, NotInState, OperationUnsupported

AMQP = shared_amqp("celery")
TIMEOUT = 20.0


def unique(name: str) -> str:
    return f"jac-celery-ops-{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Probe]:
    path = tmp_path / "probe.sqlite"
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, str(path))
    found = Probe(path)
    yield found
    found.close()


def ids(adapter: CeleryAdapter, state: JobState, **filter: str) -> set[str]:
    return {record.job_id for record in adapter.jobs(state, filter=JobFilter(**filter), limit=1000)}


def never_runs(probe: Probe, labels: list[str], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ran = [label for label in labels if probe.count(label)]
        assert not ran, f"discarded or paused jobs ran: {ran}"
        time.sleep(0.1)


def test_every_operation_on_redis(probe: Probe) -> None:
    with PrivateRedis(persistent=False) as server:
        # horizon 2 s: scheduled jobs hop while the test runs, as a long wait would.
        url = f"celery+{server.url}?results=1&horizon=2&visibility_timeout=30"
        adapter = config.build_adapter(url)
        assert isinstance(adapter, CeleryAdapter)
        assert {Capability.INSPECT, Capability.RETRY, Capability.DISCARD} <= adapter.capabilities
        assert {Capability.RUN_NOW, Capability.PAUSE} <= adapter.capabilities
        queue, ping = unique("work"), unique("ping")
        label = {name: unique(name) for name in ("p1", "p2", "s1", "s2", "s3", "f1", "p4")}
        try:
            with config.override(adapter):
                p1 = NoteJob.set(queue=queue).perform_later(label["p1"] + " alice@example.com")
                p2 = NoteJob.set(queue=queue, priority=5).perform_later(label["p2"])
                s1 = NoteJob.set(queue=queue, wait=timedelta(hours=1)).perform_later(label["s1"])
                s2 = NoteJob.set(queue=queue, wait=timedelta(hours=1)).perform_later(label["s2"])
                f1 = FailOnceJob.set(queue=queue).perform_later(label["f1"])
            # Nothing consumes yet: every job waits in its list.
            assert ids(adapter, JobState.PENDING, queue=queue) == {p1.job_id, p2.job_id, f1.job_id}
            assert ids(adapter, JobState.PENDING, search="ALICE@example") == {p1.job_id}
            assert ids(adapter, JobState.SCHEDULED) == {s1.job_id, s2.job_id}
            assert adapter.find(s1.job_id).state is JobState.SCHEDULED
            assert adapter.find(p2.job_id).priority == 5
            (info,) = [q for q in adapter.queues() if q.name == queue]
            assert (info.pending, info.scheduled, info.failed, info.paused) == (3, 2, 0, False)
            with pytest.raises(JobNotFound, match="no job with id 'nope'"):
                adapter.find("nope")
            with pytest.raises(NotInState, match="pending"):
                adapter.run_now(p1.job_id)
            # Discarding waiting jobs removes them.
            assert adapter.discard([p2.job_id, s2.job_id]) == 2
            assert ids(adapter, JobState.PENDING, queue=queue) == {p1.job_id, f1.job_id}
            with pytest.raises(JobNotFound):
                adapter.discard([p2.job_id])
            # A worker started while its queue is paused leaves the queue alone.
            adapter.pause(queue)
            assert [q.paused for q in adapter.queues() if q.name == queue] == [True]
            with worker(url, [ping, queue], probe, adapter, ping=[ping]):
                never_runs(probe, [label["p1"]], 1.5)
                adapter.resume(queue)
                probe.wait_for_count(label["p1"] + " alice@example.com", 1, TIMEOUT)
                # The scheduled job is now held by the worker (or hopping): discard it there.
                with config.override(adapter):
                    s3 = NoteJob.set(queue=queue, wait=timedelta(seconds=4)).perform_later(label["s3"])
                probe.wait_for(lambda: adapter.find(s3.job_id).worker is not None, 5, "s3 held by the worker")
                assert adapter.discard([s3.job_id]) == 1
                assert s3.job_id not in ids(adapter, JobState.SCHEDULED)
                # run_now: at once, once, same id.
                adapter.run_now(s1.job_id)
                (row,) = probe.wait_for_count(label["s1"], 1, 5)
                assert row.job_id == s1.job_id
                # The failed job: listed, found, retried with its id, then finished.
                probe.wait_for(lambda: f1.job_id in ids(adapter, JobState.FAILED), TIMEOUT, "f1 failed")
                failed = adapter.find(f1.job_id)
                assert failed.state is JobState.FAILED and failed.error is not None
                assert failed.error.error_class == "Flaky"
                with pytest.raises(NotInState):
                    adapter.retry([p1.job_id])
                assert adapter.retry([f1.job_id]) == 1
                rows = probe.wait_for_count(label["f1"], 2, TIMEOUT)
                assert {r.job_id for r in rows} == {f1.job_id}
                probe.wait_for(
                    lambda: adapter.find(f1.job_id).state is JobState.FINISHED, 5, "the retried job finished"
                )
                assert f1.job_id in ids(adapter, JobState.FINISHED, search=label["f1"])
                assert adapter.find(p1.job_id).state is JobState.FINISHED
                # Pausing a queue a running worker consumes: new jobs wait until resume.
                adapter.pause(queue)
                time.sleep(0.5)
                with config.override(adapter):
                    p4 = NoteJob.set(queue=queue).perform_later(label["p4"])
                never_runs(probe, [label["p4"]], 2.0)
                assert adapter.find(p4.job_id).state is JobState.PENDING
                adapter.resume(queue)
                probe.wait_for_count(label["p4"], 1, 5)
                never_runs(probe, [label["p2"], label["s2"], label["s3"]], 1.0)
                assert probe.count(label["s1"]) == 1, "run_now ran the job twice"
            assert ids(adapter, JobState.SCHEDULED) == set()
            assert ids(adapter, JobState.FAILED) == set()
        finally:
            adapter.close()


def test_bulk_retry_and_discard_stream_through_the_dead_letter_queue(probe: Probe) -> None:
    """retry_all and discard_all walk each list once, a chunk at a time (more than one chunk)."""
    with PrivateRedis(persistent=False) as server:
        url = f"celery+{server.url}"
        adapter = config.build_adapter(url)
        assert isinstance(adapter, CeleryAdapter)
        queue = unique("bulk")
        now = datetime.now(timezone.utc)
        try:
            for n in range(1200):
                kind = "keep" if n % 3 else "mail"
                envelope = Envelope(
                    NoteJob.job_name, str(uuid.uuid4()), queue, None, [f"{kind}-{n}"], {}, 1, {}, now
                )
                text = envelope.encode()
                adapter.dead_letter_publish(text, "Flaky: boom", NoteJob.job_name, envelope.job_id)
            assert len(adapter.jobs(JobState.FAILED, limit=50, offset=1190)) == 10
            assert adapter.retry_all(JobFilter(search="mail-")) == 400
            assert len(ids(adapter, JobState.PENDING, queue=queue)) == 400
            assert adapter.discard_all(JobState.FAILED) == 800
            assert adapter.discard_all(JobState.PENDING, JobFilter(queue=queue)) == 400
            assert adapter.queues() and all(q.pending == 0 for q in adapter.queues())
            with pytest.raises(ValueError, match="running"):
                adapter.discard_all(JobState.RUNNING)
        finally:
            adapter.close()


def test_rabbitmq_without_a_journal_reads_its_dead_letters_and_says_what_needs_one() -> None:
    dead, queue = unique("dead"), unique("work")
    adapter = config.build_adapter(f"{AMQP}?dead_letter_queue={dead}")
    assert isinstance(adapter, CeleryAdapter)
    now = datetime.now(timezone.utc)
    try:
        assert Capability.RETRY in adapter.capabilities
        assert not {Capability.INSPECT, Capability.DISCARD, Capability.PAUSE} & adapter.capabilities
        assert "JOBADAPTER_JOURNAL" in adapter.notes[Capability.PAUSE.value]
        with pytest.raises(OperationUnsupported, match="JOBADAPTER_JOURNAL"):
            adapter.jobs(JobState.PENDING)
        with pytest.raises(OperationUnsupported, match="JOBADAPTER_JOURNAL"):
            adapter.pause(queue)
        envelopes = [
            Envelope(NoteJob.job_name, str(uuid.uuid4()), queue, None, [name], {}, 1, {}, now)
            for name in ("carol@example.com", "dave")
        ]
        for envelope in envelopes:
            adapter.dead_letter_publish(envelope.encode(), "Flaky: boom", NoteJob.job_name, envelope.job_id)
        carol, dave = (envelope.job_id for envelope in envelopes)
        assert [r.job_id for r in adapter.jobs(JobState.FAILED)] == [carol, dave]
        assert [r.job_id for r in adapter.jobs(JobState.FAILED, filter=JobFilter(search="CAROL"))] == [carol]
        assert adapter.find(dave).error is not None
        with pytest.raises(OperationUnsupported, match="JOBADAPTER_JOURNAL"):
            adapter.find("nope")
        assert adapter.retry([carol]) == 1
        assert [r.job_id for r in adapter.jobs(JobState.FAILED)] == [dave]
        with adapter.app.connection_for_write() as connection:
            _name, waiting, _consumers = connection.default_channel.queue_declare(queue, passive=True)
        assert waiting == 1  # carol, published again to her queue
        assert adapter.discard_all(JobState.FAILED) == 1
        assert adapter.jobs(JobState.FAILED) == []
    finally:
        with adapter.app.connection_for_write() as connection:
            for name in (dead, queue):
                connection.default_channel.queue_delete(name)
        adapter.close()


def test_a_retried_job_that_finishes_at_once_is_not_journaled_as_pending_again(tmp_path: Path) -> None:
    """The operator's "pending again" row lands before the job is published: a worker that
    runs the job at once journals over it, never under it (a CI run saw find() say
    pending forever after the retried job had finished)."""
    dead, queue = unique("dead"), unique("work")
    adapter = config.build_adapter(f"{AMQP}?dead_letter_queue={dead}")
    assert isinstance(adapter, CeleryAdapter)
    store = journal.configure(f"sqlite:///{tmp_path / 'journal.db'}")
    envelope = Envelope(
        NoteJob.job_name, str(uuid.uuid4()), queue, None, ["fast"], {}, 1, {}, datetime.now(timezone.utc)
    )
    publish = adapter.enqueue

    def published_then_run_at_once(envelope: Envelope, options: dict[str, object]) -> str | None:
        provider_id = publish(envelope, options)
        store.record(envelope.job_id, state=JobState.FINISHED)  # as the fastest worker would
        return provider_id

    try:
        adapter.dead_letter_publish(envelope.encode(), "Flaky: boom", NoteJob.job_name, envelope.job_id)
        store.record(envelope.job_id, state=JobState.FAILED)
        adapter.enqueue = published_then_run_at_once  # type: ignore[method-assign]
        assert adapter.retry([envelope.job_id]) == 1
        found = store.find(envelope.job_id)
        assert found is not None and found.state is JobState.FINISHED
    finally:
        journal.close()
        with adapter.app.connection_for_write() as connection:
            for name in (dead, queue):
                connection.default_channel.queue_delete(name)
        adapter.close()


def test_a_dead_letter_held_by_another_walk_is_still_discarded_and_retried(tmp_path: Path) -> None:
    """A listing (another operator, the dashboard) takes each dead letter unacknowledged for a
    moment: a discard or retry that walks the queue then must look again, not miss it."""
    dead, queue = unique("dead"), unique("work")
    adapter = config.build_adapter(f"{AMQP}?dead_letter_queue={dead}")
    assert isinstance(adapter, CeleryAdapter)
    journal.configure(f"sqlite:///{tmp_path / 'journal.db'}")
    now = datetime.now(timezone.utc)
    envelopes = [
        Envelope(NoteJob.job_name, str(uuid.uuid4()), queue, None, [name], {}, 1, {}, now) for name in "ab"
    ]
    try:
        for envelope in envelopes:
            adapter.dead_letter_publish(envelope.encode(), "Flaky: boom", NoteJob.job_name, envelope.job_id)
        for envelope, command in zip(envelopes, (adapter.discard, adapter.retry), strict=True):
            with adapter.app.connection_for_write() as connection:
                holder = connection.channel()
                held = []
                while True:  # hold every dead letter, as a walk in progress does
                    message = adapter.dead_letter(holder).get(no_ack=False)
                    if message is None:
                        break
                    held.append(message)
                threading.Timer(0.3, holder.close).start()  # the walk ends: the letters come back
                assert command([envelope.job_id]) == 1
        assert adapter.jobs(JobState.FAILED) == []
    finally:
        journal.close()
        with adapter.app.connection_for_write() as connection:
            for name in (dead, queue):
                connection.default_channel.queue_delete(name)
        adapter.close()


def test_a_dead_letter_is_discarded_even_while_the_journal_still_says_pending(tmp_path: Path) -> None:
    """The worker's last journal rows may still be on their way when its dead letter is
    already there: discard must remove the dead letter, not tombstone a "pending" job and
    leave the failure behind (a CI run saw the failed job listed after discard said 2)."""
    dead, queue = unique("dead"), unique("work")
    adapter = config.build_adapter(f"{AMQP}?dead_letter_queue={dead}")
    assert isinstance(adapter, CeleryAdapter)
    store = journal.configure(f"sqlite:///{tmp_path / 'journal.db'}")
    envelope = Envelope(
        NoteJob.job_name, str(uuid.uuid4()), queue, None, ["late"], {}, 1, {}, datetime.now(timezone.utc)
    )
    try:
        store.record(envelope.job_id, state=JobState.PENDING)  # the enqueue's row, and no later one
        adapter.dead_letter_publish(envelope.encode(), "Doomed: late rows", NoteJob.job_name, envelope.job_id)
        assert adapter.discard([envelope.job_id]) == 1
        assert adapter.jobs(JobState.FAILED) == []
    finally:
        journal.close()
        with adapter.app.connection_for_write() as connection:
            for name in (dead, queue):
                connection.default_channel.queue_delete(name)
        adapter.close()


def test_redis_queues_lists_a_queue_known_only_by_its_dead_letters() -> None:
    """A failed job moved in by ``jobadapter migrate`` (or one whose queue's binding is gone)
    still shows its queue in ``queues()``, with its failed count."""
    from jobadapter.operations import JobError

    with PrivateRedis(persistent=False) as server:
        adapter = config.build_adapter(f"celery+{server.url}")
        assert isinstance(adapter, CeleryAdapter)
        queue = unique("only-dead")
        envelope = Envelope(
            NoteJob.job_name, str(uuid.uuid4()), queue, None, ["x"], {}, 1, {}, datetime.now(timezone.utc)
        )
        try:
            adapter.enqueue_failed([(envelope, JobError("Doomed", "moved in failed"))])
            listed = {info.name: info for info in adapter.queues()}
            assert queue in listed and (listed[queue].pending, listed[queue].failed) == (0, 1)
            assert adapter.settings.dead_letter_queue not in listed
        finally:
            adapter.close()


def test_rabbitmq_queues_asks_the_workers_at_most_every_few_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``inspect active_queues`` waits its whole timeout (1 s) for replies: a dashboard that
    reloads its queues page pays it once per `WORKER_QUEUES_TTL`, not on every load."""
    from jobadapter_celery import operations

    dead = unique("dead")
    adapter = config.build_adapter(f"{AMQP}?dead_letter_queue={dead}")
    assert isinstance(adapter, CeleryAdapter)
    journal.configure(f"sqlite:///{tmp_path / 'journal.db'}")
    asked: list[float] = []
    inspect = adapter.app.control.inspect

    def counted(**options: object) -> object:
        asked.append(time.monotonic())
        return inspect(**options)

    monkeypatch.setattr(adapter.app.control, "inspect", counted)
    try:
        adapter.queues()
        adapter.queues()
        assert len(asked) == 1
        monkeypatch.setattr(operations, "WORKER_QUEUES_TTL", 0.0)
        adapter.queues()
        assert len(asked) == 2
    finally:
        journal.close()
        with adapter.app.connection_for_write() as connection:
            connection.default_channel.queue_delete(dead)
        adapter.close()


@pytest.mark.parametrize("transport", ["amqp", "redis"])
def test_dead_letters_expire_after_dead_letter_ttl(transport: str) -> None:
    """Failed jobs are kept ``dead_letter_ttl`` seconds (7 days unless set), then dropped:
    RabbitMQ by its per-message TTL, Redis at the next dead letter's write."""
    from jobadapter.operations import JobError

    def letter(name: str) -> Envelope:
        return Envelope(
            NoteJob.job_name,
            str(uuid.uuid4()),
            unique("ttl"),
            None,
            [name],
            {},
            1,
            {},
            datetime.now(timezone.utc),
        )

    dead = unique("dead")
    with PrivateRedis(persistent=False) as server:
        broker = AMQP if transport == "amqp" else f"celery+{server.url}"
        adapter = config.build_adapter(f"{broker}?dead_letter_queue={dead}&dead_letter_ttl=0.5")
        assert isinstance(adapter, CeleryAdapter)
        try:
            old = letter("old")
            adapter.enqueue_failed([(old, JobError("Doomed", "long ago"))])
            assert ids(adapter, JobState.FAILED) == {old.job_id}
            time.sleep(0.7)
            new = letter("new")
            adapter.enqueue_failed([(new, JobError("Doomed", "just now"))])
            assert ids(adapter, JobState.FAILED) == {new.job_id}
        finally:
            if transport == "amqp":
                with adapter.app.connection_for_write() as connection:
                    connection.default_channel.queue_delete(dead)
            adapter.close()
