"""The celery adapter against the real RabbitMQ and Redis on this machine, with real workers.

Redis DBs 6 (conformance), 7 (long waits, dead letters) and 8 (the attached app)
are this adapter's own; every queue and dead-letter queue name is unique to a
test run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pytest
from jobadapter_celery.adapter import CeleryAdapter
from jobadapter_celery_testjobs import (  # type: ignore[import-not-found]  # conftest puts it on sys.path
    ATTACH_BROKER,
    FailOnceJob,
    LimitsJob,
    NoteJob,
    RetryOnceJob,
    add,
)

from jobadapter import EnqueueError, Job, config
from jobadapter.adapters.base import Capability
from jobadapter.conformance.probe import ENVIRONMENT_VARIABLE, Probe
from jobadapter.faults.brokers import shared_amqp, shared_redis_db

AMQP = shared_amqp("celery")
REDIS = f"celery+{shared_redis_db(0)}"
HERE = Path(__file__).parent
TIMEOUT = 20.0


class StrayJob(Job):
    """Registered in the test process only: a worker has no task for it."""

    def perform(self) -> None:
        raise AssertionError("a worker without this class must not run it")


def unique(name: str) -> str:
    return f"jac-celery-test-{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Probe]:
    path = tmp_path / "probe.sqlite"
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, str(path))
    found = Probe(path)
    yield found
    found.close()


class Worker:
    def __init__(self, process: subprocess.Popen[bytes], log: Path) -> None:
        self.process, self.log = process, log

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def worker(
    url: str, queues: list[str], probe: Probe, adapter: CeleryAdapter, ping: list[str] | None = None
) -> Iterator[Worker]:
    """A real ``jobadapter worker`` on ``queues``, ready once it ran a job from each (or from
    each of ``ping``); stopped with SIGTERM (which must exit 0), killed if it hangs."""
    log = probe.path.with_name(f"worker-{uuid.uuid4().hex[:6]}.log")
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, "-m", "jobadapter.cli", "worker", "--url", url]
    command += ["--app", "jobadapter_celery_testjobs", "--queues", ",".join(queues), "--concurrency", "2"]
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, env=environment, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    running = Worker(process, log)
    try:
        with config.override(adapter):
            pinged = queues if ping is None else ping
            labels = [unique("ping") for _ in pinged]
            for label, queue in zip(labels, pinged, strict=True):
                NoteJob.set(queue=queue).perform_later(label)
        probe.wait_for(lambda: all(probe.count(label) for label in labels), 60, f"a worker on {pinged}")
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                code = process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                raise AssertionError(f"worker ignored SIGTERM\n{running.text()[-3000:]}") from None
            assert code == 0, running.text()[-3000:]


@pytest.mark.parametrize(
    ("url", "wait"),
    [
        # visibility_timeout 3 s, swept every second: without hops the waiting message would be
        # restored to the queue and run twice.
        (f"celery+{shared_redis_db(1)}?horizon=1&visibility_timeout=3&results=1", 6.0),
        (AMQP + "?horizon=1", 3.0),
    ],
    ids=["redis", "amqp"],
)
def test_a_wait_beyond_the_horizon_runs_once_on_time_with_its_options(
    url: str, wait: float, probe: Probe
) -> None:
    adapter = config.build_adapter(url)
    assert isinstance(adapter, CeleryAdapter)
    queue = unique("long-wait")
    label = unique("long")
    try:
        with worker(url, [queue], probe, adapter), config.override(adapter):
            options = {"time_limit": 30, "soft_time_limit": 20, "expires": 3600}
            job = LimitsJob.set(queue=queue, wait=wait, adapter_options=options).perform_later(label)
            assert job.scheduled_at is not None
            due = job.scheduled_at.timestamp()
            if adapter.has_result_backend:
                probe.wait_for(lambda: adapter.status(job.job_id) == "scheduled", 5, "a hop")
            (row,) = probe.wait_for_count(label, 1, wait + TIMEOUT)
            assert due - 0.05 <= row.at <= due + 2.0
            time.sleep(1.5)
            assert probe.count(label) == 1, "the waiting job ran twice"
            assert row.job_id == job.job_id
            assert row.detail["timelimit"] == [30, 20]  # adapter_options survived the hops
            assert row.detail["argsrepr"] == repr([label])  # and Flower's view of the arguments
            expires = datetime.fromisoformat(row.detail["expires"]).timestamp()
            assert job.enqueued_at is not None
            assert abs(expires - (job.enqueued_at.timestamp() + 3600)) < 5  # not extended by a hop
    finally:
        adapter.purge([queue])
        adapter.close()


@pytest.mark.parametrize(
    "url", ["celery+amqp://guest:guest@127.0.0.1:1//", "celery+redis://127.0.0.1:1/6"], ids=["amqp", "redis"]
)
def test_an_unreachable_broker_raises_enqueue_error_quickly(url: str) -> None:
    adapter = config.build_adapter(url + "?connect_timeout=0.5&publish_retries=1")
    started = time.monotonic()
    try:
        with config.override(adapter), pytest.raises(EnqueueError) as raised:
            NoteJob.perform_later("never")
    finally:
        adapter.close()
    assert time.monotonic() - started < 10
    assert raised.value.__cause__ is not None


def test_attached_app_runs_native_tasks_and_jobs_side_by_side(probe: Probe) -> None:
    dead = unique("dead")
    url = f"celery:///?app=jobadapter_celery_testjobs:native_app&dead_letter_queue={dead}"
    adapter = config.build_adapter(url)
    assert isinstance(adapter, CeleryAdapter) and adapter.transport == "redis"
    assert adapter.broker_url == ATTACH_BROKER
    queue = unique("attached")
    try:
        with worker(url, [queue], probe, adapter) as running, config.override(adapter):
            native_label, job_label, retry_label = unique("native"), unique("job"), unique("retry")
            add.apply_async((native_label, 2, 3), queue=queue)
            job = NoteJob.set(queue=queue).perform_later(job_label)
            retried = RetryOnceJob.set(queue=queue).perform_later(retry_label)
            stray = StrayJob.set(queue=queue).perform_later()
            (native,) = probe.wait_for_count(native_label, 1, TIMEOUT, kind="native")
            assert native.detail == {"sum": 5}
            probe.wait_for_count(job_label, 1, TIMEOUT)
            rows = probe.wait_for_count(retry_label, 2, TIMEOUT)
            assert [row.executions for row in rows] == [1, 2]
            # Flower shows the job's arguments on the retry too, not the envelope's JSON.
            assert [row.detail["argsrepr"] for row in rows] == [repr([retry_label])] * 2
            assert {row.job_id for row in rows} == {retried.job_id}
            probe.wait_for(lambda: adapter.status(retried.job_id) == "finished", 5, "SUCCESS after RETRY")
            assert adapter.status(job.job_id) == "finished"
            probe.wait_for(
                lambda: any(stray.job_id in p and "not registered" in r for p, r in adapter.failed()),
                TIMEOUT,
                "the stray job in the dead-letter queue",
            )
            log = running.text()
            # Celery's own log lines name the job class: it is a task of its own, retried natively.
            assert f"Task {RetryOnceJob.job_name}[{retried.job_id}] retry" in log
            # Its "succeeded" line is left to ActiveJob's "Performed" line, which says the same.
            assert f"Task {NoteJob.job_name}[{job.job_id}] succeeded" not in log
            assert f"Performed NoteJob (Job ID: {job.job_id})" in log
    finally:
        adapter.close()


def test_dead_lettered_jobs_can_be_retried(probe: Probe) -> None:
    url = f"celery+{shared_redis_db(1)}?results=1&dead_letter_queue={unique('dead')}"
    adapter = config.build_adapter(url)
    assert isinstance(adapter, CeleryAdapter)
    queue = unique("dead-letters")
    label = unique("fail-once")
    try:
        with worker(url, [queue], probe, adapter), config.override(adapter):
            job = FailOnceJob.set(queue=queue).perform_later(label)
            probe.wait_for(
                lambda: any(job.job_id in p and "Flaky" in r for p, r in adapter.failed()),
                TIMEOUT,
                "the failed job in the dead-letter queue",
            )
            assert adapter.status(job.job_id) == "failed"
            assert adapter.retry_failed() == 1
            probe.wait_for_count(label, 2, TIMEOUT)
            assert adapter.failed() == []
            probe.wait_for(lambda: adapter.status(job.job_id) == "finished", 5, "the retried job to finish")
    finally:
        adapter.close()


def test_options_are_checked() -> None:
    with pytest.raises(Exception, match="shorter than visibility_timeout"):
        config.build_adapter(f"celery+{shared_redis_db(1)}?horizon=10&visibility_timeout=5")
    with pytest.raises(Exception, match="needs \\?app="):
        config.build_adapter("celery:///")
    with pytest.raises(Exception, match="needs a result_backend"):
        config.build_adapter(AMQP + "?results=1")
    with pytest.raises(Exception, match="prefetch must be"):
        config.build_adapter(REDIS + "?prefetch=2.5")
    adapter = config.build_adapter(REDIS)
    try:
        assert Capability.PRIORITY in adapter.capabilities
        assert isinstance(adapter, CeleryAdapter)
        # No result writes unless asked for: status() says it has nothing to show.
        assert not adapter.has_result_backend
        assert adapter.app.conf.task_track_started is False
        with pytest.raises(NotImplementedError, match="results=1"):
            adapter.status("any")
        assert [adapter.broker_priority(p) for p in (None, 0, 1, 9, 50, -3)] == [0, 0, 1, 9, 9, 0]
    finally:
        adapter.close()
    amqp = config.build_adapter(AMQP)
    try:
        assert isinstance(amqp, CeleryAdapter)
        assert [amqp.broker_priority(p) for p in (None, 1, 9, 50)] == [9, 8, 0, 0]
    finally:
        amqp.close()
    kept = config.build_adapter(REDIS + "?results=1&prefetch=4")
    try:
        assert isinstance(kept, CeleryAdapter) and kept.has_result_backend
        assert kept.app.conf.task_track_started is True
        assert kept.app.conf.worker_prefetch_multiplier == 4
    finally:
        kept.close()


@pytest.mark.parametrize("url", [shared_amqp("celery"), f"celery+{shared_redis_db(2)}"])
def test_purge_empties_the_named_queues(url: str) -> None:
    from jobadapter import Job, config

    class Purged(Job):
        def perform(self) -> None: ...

    adapter = config.configure(url=url)
    try:
        Purged.set(queue="jobadapter-purge-test").perform_later()
        Purged.set(queue="jobadapter-purge-test", priority=4).perform_later()
        adapter.purge(["jobadapter-purge-test"])
        with adapter.app.connection_for_write() as connection:  # type: ignore[attr-defined]
            channel = connection.default_channel
            if adapter.transport == "redis":  # type: ignore[attr-defined]
                assert channel._size("jobadapter-purge-test") == 0
                assert not channel.client.keys("_kombu.binding*.jobadapter-purge-test")  # nothing left
            else:
                from amqp.exceptions import NotFound

                with pytest.raises(NotFound):  # deleted, not merely emptied
                    channel.queue_declare("jobadapter-purge-test", passive=True)
    finally:
        config.reset()


def _delete_queues(adapter: CeleryAdapter, *names: str) -> None:
    with adapter.app.connection_for_write() as connection:
        for name in names:
            connection.default_channel.queue_delete(name)


def test_a_queue_an_app_declared_without_priorities_is_used_as_it_is(probe: Probe) -> None:
    """jobadapter's own app declares x-max-priority; a queue an existing app declared without
    it must neither crash the publisher nor the worker (RabbitMQ's PRECONDITION_FAILED)."""
    queue = unique("theirs")
    adapter = config.build_adapter(AMQP)
    assert isinstance(adapter, CeleryAdapter)
    with adapter.app.connection_for_write() as connection:  # as a Celery app without priorities does
        connection.default_channel.queue_declare(queue, durable=True, auto_delete=False)
    try:
        with worker(AMQP, [queue], probe, adapter) as running, config.override(adapter):
            label = unique("job")
            NoteJob.set(queue=queue, priority=1).perform_later(label)
            probe.wait_for_count(label, 1, TIMEOUT)
            assert "PRECONDITION_FAILED" not in running.text()
        assert queue in adapter.notes[Capability.PRIORITY.value]
    finally:
        _delete_queues(adapter, queue)
        adapter.close()


def test_an_attached_app_without_priorities_uses_a_queue_jobadapter_declared(probe: Probe) -> None:
    """The reverse order: the queue exists with x-max-priority (jobadapter's own app declared
    it); an attached app that declares queues without it publishes and consumes there."""
    queue, dead = unique("ours"), unique("dead")
    ours = config.build_adapter(AMQP)
    attached_url = f"celery:///?app=jobadapter_celery_testjobs:native_amqp_app&dead_letter_queue={dead}"
    attached = config.build_adapter(attached_url)
    assert isinstance(ours, CeleryAdapter) and isinstance(attached, CeleryAdapter)
    try:
        first = unique("first")
        with config.override(ours):
            NoteJob.set(queue=queue).perform_later(first)  # declares the queue with x-max-priority
        with worker(attached_url, [queue], probe, attached) as running:
            probe.wait_for_count(first, 1, TIMEOUT)
            assert "PRECONDITION_FAILED" not in running.text()
        assert queue in attached.notes[Capability.PRIORITY.value]
    finally:
        _delete_queues(ours, queue, dead)
        ours.close()
        attached.close()
