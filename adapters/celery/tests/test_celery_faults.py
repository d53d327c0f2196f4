"""The celery adapter under faults: whole-tree kills, broker outages, hostile messages.

Redis faults run on a private redis-server (`PrivateRedis`), RabbitMQ outages
through a `TcpProxy` to the shared server; every queue name is unique to the
test. Workers are real ``jobadapter worker`` subprocesses on the fault suite's
jobs (``jobadapter.faults.jobs``).
"""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.worker.consumer.consumer import CONNECTION_RETRY  # type: ignore[import-untyped]
from jobadapter_celery.adapter import CeleryAdapter
from jobadapter_celery.consumer import OneLineConnectionLoss
from jobadapter_celery.transport import Transport
from jobadapter_celery.worker import Lifeline
from kombu import Connection

from jobadapter import EnqueueError, config
from jobadapter.conformance.probe import ENVIRONMENT_VARIABLE, Probe
from jobadapter.faults.brokers import PrivateRedis, TcpProxy, shared_amqp, with_address
from jobadapter.faults.canary import CANARY_VARIABLE
from jobadapter.faults.hostile import envelope_kinds
from jobadapter.faults.jobs import ProbeJob, StormJob
from jobadapter.faults.processes import kill_tree, wait_gone
from jobadapter.faults.setup import stage

AMQP = shared_amqp("celery")


def unique(name: str) -> str:
    return f"jac-celery-faults-{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Probe]:
    path = tmp_path / "probe.sqlite"
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, str(path))
    monkeypatch.setenv(CANARY_VARIABLE, str(tmp_path / "canary"))
    found = Probe(path)
    yield found
    found.close()


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    with PrivateRedis() as server:
        yield server


class Worker:
    """A ``jobadapter worker`` subprocess in a session of its own."""

    def __init__(self, url: str, queues: list[str], log: Path, concurrency: int = 2) -> None:
        self.log = log
        command = [sys.executable, "-m", "jobadapter.cli", "worker", "--url", url]
        command += ["--app", "jobadapter.faults.jobs", "--queues", ",".join(queues)]
        command += ["--concurrency", str(concurrency)]
        with log.open("wb") as output:
            self.process = subprocess.Popen(
                command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the whole tree, pool children included, as a dead machine would."""
        killed = kill_tree(self.process.pid)
        self.process.wait()
        assert not wait_gone(killed), "a process of the killed worker is still alive"

    def stop(self, timeout: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"worker ignored SIGTERM for {timeout:g} s\n{self.text()[-3000:]}") from None


def start_worker(url: str, queue: str, probe: Probe, adapter: CeleryAdapter, concurrency: int = 2) -> Worker:
    """A worker on ``queue``, returned once it ran a control job."""
    worker = Worker(url, [queue], probe.path.with_name(f"worker-{uuid.uuid4().hex[:6]}.log"), concurrency)
    label = unique("ready")
    with config.override(adapter):
        ProbeJob.set(queue=queue).perform_later(label)
    try:
        probe.wait_for(lambda: probe.count(label) > 0 or worker.process.poll() is not None, 60, "a worker")
    except BaseException:
        worker.kill()
        raise
    assert worker.process.poll() is None, worker.text()[-3000:]
    return worker


def test_a_kill_storm_loses_no_job(private_redis: PrivateRedis, probe: Probe) -> None:
    url = f"celery+{private_redis.url}"
    adapter = config.build_adapter(url)
    assert isinstance(adapter, CeleryAdapter)
    queue = unique("storm")
    rng = random.Random()
    workers = [start_worker(url, queue, probe, adapter) for _ in range(2)]
    labels = [f"storm-{n}-{uuid.uuid4().hex[:6]}" for n in range(60)]
    try:
        with config.override(adapter):
            for label in labels:
                StormJob.set(queue=queue).perform_later(label, rng.randint(20, 80))
        for _ in range(3):
            time.sleep(rng.uniform(0.3, 1.0))
            victim = workers.pop(rng.randrange(len(workers)))
            victim.kill()
            workers.append(start_worker(url, queue, probe, adapter))
        # A killed worker's unacknowledged jobs come back once its heartbeat lapses (10 s).
        probe.wait_for(lambda: all(probe.count(label) for label in labels), 60, "every storm job")
    finally:
        for worker in workers:
            worker.stop()
        adapter.close()
    lost = [label for label in labels if not probe.count(label)]
    assert lost == []


def _poller_connection(pool: Any) -> Any:
    """A connection taken from the pool as kombu's poller takes it (redis-py before 5.3 wants a
    command name, which later versions deprecate)."""
    try:
        return pool.get_connection()
    except TypeError:
        return pool.get_connection("_")


def test_the_fetch_records_a_message_before_the_worker_reads_it(private_redis: PrivateRedis) -> None:
    """The crash point of kombu's BRPOP: the message is popped, its reply not yet read.

    With stock kombu the message is then in no list and no hash; with the
    jobadapter transport the same pop has already put it in the unacked hash,
    and the lifeline's restore puts it back on its queue.
    """
    queue = unique("crash")
    node = uuid.uuid4().hex[:12]
    options = Lifeline.keys(node)
    client = redis.Redis(port=private_redis.port)

    def popped_and_never_read(transport: object) -> None:
        with Connection(private_redis.url, transport=transport, transport_options=options) as connection:
            channel = connection.channel()
            channel.basic_consume(queue, False, lambda message: None, "tag")
            producer = connection.Producer(channel)
            producer.publish({"hello": queue}, routing_key=queue, exchange="", declare=[])
            channel.client.connection = _poller_connection(channel.client.connection_pool)
            channel._brpop_start()  # the fetch is on the wire; its reply is never read
            deadline = time.monotonic() + 5
            while client.llen(queue) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert client.llen(queue) == 0, "the fetch did not take the message"
            channel.client.connection.disconnect()  # the worker dies here

    popped_and_never_read("redis")
    assert client.hlen(options["unacked_key"]) == 0  # stock kombu: the message is gone
    assert client.llen(queue) == 0

    popped_and_never_read(Transport)
    assert client.hlen(options["unacked_key"]) == 1
    adapter = config.build_adapter(f"celery+{private_redis.url}")
    assert isinstance(adapter, CeleryAdapter)
    try:
        Lifeline(adapter, uuid.uuid4().hex[:12]).restore(node)
    finally:
        adapter.close()
    assert client.llen(queue) == 1
    assert client.hlen(options["unacked_key"]) == 0


def test_a_fetch_whose_reply_was_lost_is_given_back_by_the_reconnected_worker(
    private_redis: PrivateRedis,
) -> None:
    """Redis goes away after the fetch script ran, before its reply arrived: the message
    is in the live worker's unacked hash. The worker's next channel (its reconnection)
    puts it back at its first fetch and receives it, instead of after visibility_timeout."""
    queue = unique("swallowed")
    node = uuid.uuid4().hex[:12]
    options = Lifeline.keys(node)
    client = redis.Redis(port=private_redis.port)
    with Connection(private_redis.url, transport=Transport, transport_options=options) as connection:
        channel = connection.channel()
        channel.basic_consume(queue, False, lambda message: None, "tag")
        connection.Producer(channel).publish({"hello": queue}, routing_key=queue, exchange="", declare=[])
        channel.client.connection = _poller_connection(channel.client.connection_pool)
        channel._brpop_start()
        deadline = time.monotonic() + 5
        while client.llen(queue) and time.monotonic() < deadline:
            time.sleep(0.01)
        channel.client.connection.disconnect()  # the connection is lost with the reply
    assert client.hlen(options["unacked_key"]) == 1

    received: list[object] = []
    with Connection(private_redis.url, transport=Transport, transport_options=options) as connection:
        consumer = connection.SimpleQueue(queue)
        message = consumer.get(timeout=2)
        received.append(message.payload)
        message.ack()
        consumer.close()
    assert received == [{"hello": queue}]
    assert client.hlen(options["unacked_key"]) == 0
    assert client.llen(queue) == 0


def test_a_reject_left_by_a_dead_worker_reaches_the_dead_letter_queue(private_redis: PrivateRedis) -> None:
    """The fetch moved an unreadable entry to the worker's rejects list, then the worker
    died before moving it on: the lifeline that restores the worker dead-letters it."""
    node = uuid.uuid4().hex[:12]
    marker = unique("reject")
    client = redis.Redis(port=private_redis.port)
    client.lpush(Lifeline.keys(node)["rejects_key"], f"{{not json {marker}".encode())
    adapter = config.build_adapter(f"celery+{private_redis.url}")
    assert isinstance(adapter, CeleryAdapter)
    try:
        Lifeline(adapter, uuid.uuid4().hex[:12]).restore(node)
        assert [reason for payload, reason in adapter.failed() if marker in payload] == [
            "InvalidMessage: the Redis queue entry is not JSON "
            "(JSONDecodeError: Expecting property name enclosed in double quotes: line 1 column 2 (char 1))"
        ]
        assert client.llen(Lifeline.keys(node)["rejects_key"]) == 0
    finally:
        adapter.close()


def test_a_list_entry_that_is_not_json_is_dead_lettered(private_redis: PrivateRedis, probe: Probe) -> None:
    url = f"celery+{private_redis.url}"
    adapter = config.build_adapter(url)
    assert isinstance(adapter, CeleryAdapter)
    queue = unique("not-json")
    marker = unique("marker")
    worker = start_worker(url, queue, probe, adapter)
    try:
        redis.Redis(port=private_redis.port).lpush(queue, b"\xff\xfe not json " + marker.encode())
        label = unique("after")
        with config.override(adapter):
            ProbeJob.set(queue=queue).perform_later(label)
        probe.wait_for(lambda: probe.count(label) > 0, 10, "the job after the bad entry")
        assert worker.process.poll() is None
        ((payload, reason),) = [(p, r) for p, r in adapter.failed() if marker in p]
        assert "not JSON" in reason
        assert payload.startswith("\ufffd\ufffd not json")  # undecodable bytes listed as text
    finally:
        assert worker.stop() == 0
        adapter.close()


def test_a_queue_key_that_is_not_a_list_stops_nothing(private_redis: PrivateRedis, probe: Probe) -> None:
    """A string where the queue's first list should be: the worker skips that key (no crash,
    no tight loop) and still runs jobs from the queue's other priority lists."""
    url = f"celery+{private_redis.url}"
    adapter = config.build_adapter(url)
    assert isinstance(adapter, CeleryAdapter)
    queue = unique("wrong-type")
    worker = start_worker(url, queue, probe, adapter)
    client = redis.Redis(port=private_redis.port)
    try:
        client.set(queue, "not a list")
        lines = len(worker.text().splitlines())
        time.sleep(1)
        label = unique("urgent-but-not-first")
        with config.override(adapter):
            ProbeJob.set(queue=queue, priority=3).perform_later(label)
        probe.wait_for(lambda: probe.count(label) > 0, 10, "a job on another priority list")
        assert worker.process.poll() is None
        assert len(worker.text().splitlines()) - lines < 20, worker.text()[-3000:]  # no loop of errors
    finally:
        client.delete(queue)
        assert worker.stop() == 0
        adapter.close()


@pytest.mark.parametrize("broker", ["redis", "amqp"])
def test_every_hostile_message_is_dead_lettered_and_the_worker_goes_on(
    broker: str, request: pytest.FixtureRequest, probe: Probe
) -> None:
    if broker == "redis":
        server = request.getfixturevalue("private_redis")
        url = f"celery+{server.url}"
    else:
        url = f"{AMQP}?dead_letter_queue={unique('dead')}"
    adapter = config.build_adapter(url)
    assert isinstance(adapter, CeleryAdapter)
    queue = unique("hostile")
    kinds = [*adapter.hostile_messages(), *envelope_kinds(adapter)]
    assert len(adapter.hostile_messages()) >= 6
    worker = start_worker(url, queue, probe, adapter)
    markers = {}
    try:
        for kind in kinds:
            markers[kind.kind] = marker = f"M-{uuid.uuid4().hex[:10]}"  # short: truncated-json keeps 90 chars
            kind.send(queue, marker)
        label = unique("after")
        with config.override(adapter):
            ProbeJob.set(queue=queue).perform_later(label)
        probe.wait_for(lambda: probe.count(label) > 0, 10, "the control job")

        def fates() -> dict[str, str]:
            failed = adapter.failed()
            found = {}
            for kind in kinds:
                marker = markers[kind.kind]
                if probe.count(marker):
                    found[kind.kind] = "performed"
                elif any(marker in payload or marker in reason for payload, reason in failed):
                    found[kind.kind] = "failed"
            return found

        expected = {kind.kind: kind.fate for kind in kinds if kind.kind != "empty-payload"}
        deadline = time.monotonic() + 10
        while fates() != expected and time.monotonic() < deadline:
            time.sleep(0.1)
        assert fates() == expected
        assert worker.process.poll() is None
        assert not Path(os.environ[CANARY_VARIABLE]).exists(), "a worker imported the canary"
        reasons = [reason for _, reason in adapter.failed()]
        assert all(reason.split(":")[0].isidentifier() for reason in reasons), reasons
    finally:
        assert worker.stop() == 0
        adapter.purge([queue])
        if broker == "amqp":
            with adapter.app.connection_for_write() as connection:
                connection.default_channel.queue_delete(adapter.settings.dead_letter_queue)
        adapter.close()


def test_enqueue_while_redis_is_down_raises_within_a_bound(private_redis: PrivateRedis) -> None:
    adapter = config.build_adapter(f"celery+{private_redis.url}?connect_timeout=0.5&publish_retries=1")
    try:
        private_redis.kill()
        started = time.monotonic()
        with config.override(adapter), pytest.raises(EnqueueError):
            ProbeJob.perform_later("never")
        assert time.monotonic() - started < 10
    finally:
        adapter.close()


def test_a_lost_connection_is_logged_in_one_line_with_its_error() -> None:
    """Celery 5.6 logs a lost broker connection with redis-py's whole chain of tracebacks; the
    worker's filter makes it the line Celery 5.7 writes: the notice and the error."""
    try:
        raise ConnectionError("Connection closed by server.")
    except ConnectionError:
        record = logging.LogRecord(
            "celery.worker.consumer.consumer",
            logging.WARNING,
            __file__,
            1,
            CONNECTION_RETRY,
            (),
            sys.exc_info(),
        )
    assert OneLineConnectionLoss().filter(record)
    assert record.exc_info is None
    assert record.getMessage() == f"{CONNECTION_RETRY} (ConnectionError('Connection closed by server.'))"
    other = logging.LogRecord("celery", logging.ERROR, __file__, 1, "consumer: Cannot connect", (), None)
    assert OneLineConnectionLoss().filter(other) and other.getMessage() == "consumer: Cannot connect"


@pytest.mark.parametrize("broker", ["redis", "amqp"])
def test_a_worker_survives_an_outage_and_runs_the_waiting_jobs(
    broker: str, request: pytest.FixtureRequest, probe: Probe
) -> None:
    """A job running when the broker goes, jobs enqueued after it is back: all run; the
    outage is logged once per component, not per retry; SIGTERM during an outage still
    stops the worker (``Worker.stop`` fails after 20 s).

    On Redis with ``results=1``: the result backend is the broker, so job states are
    written (and fail) during the outage too, the case where the worker used to exit.
    """
    proxy: TcpProxy | None = None
    server: PrivateRedis | None = None
    if broker.startswith("redis"):
        server = request.getfixturevalue("private_redis")
        url = f"celery+{server.url}?results=1"
    else:
        proxy = TcpProxy("127.0.0.1", 5672)
        proxy.start()
        url = with_address(AMQP, proxy.port)
    cut, restore = (server.kill, server.start) if server else (proxy.cut, proxy.restore)  # type: ignore[union-attr]
    adapter = config.build_adapter(url)
    assert isinstance(adapter, CeleryAdapter)
    queue = unique("outage")
    worker = start_worker(url, queue, probe, adapter)
    try:
        running = unique("running")
        with config.override(adapter):
            StormJob.set(queue=queue).perform_later(running, 1000)
        probe.wait_for(lambda: probe.count(running, "started") > 0, 10, "the running job")
        cut()
        time.sleep(2.5)
        assert worker.process.poll() is None, worker.text()[-3000:]
        restore()
        labels = [unique("after") for _ in range(3)]
        with config.override(adapter):
            for label in labels:
                ProbeJob.set(queue=queue).perform_later(label)
        probe.wait_for(lambda: all(probe.count(label) for label in labels), 30, "the jobs after the outage")
        probe.wait_for(lambda: probe.count(running) > 0, 30, "the job that ran through the outage")
        log = worker.text()
        assert log.count("Redis unreachable") <= 1
        assert log.count("result backend unreachable") <= 1
        assert log.count("Cannot connect") <= 3  # Celery's reconnection: 2 s, then 4 s
        assert "Traceback" not in log  # e.g. the running job's failed ack: one line, not 60
        cut()
        time.sleep(1)
        assert worker.stop() == 0, worker.text()[-3000:]  # SIGTERM during an outage
    finally:
        if worker.process.poll() is None:
            worker.kill()
        adapter.close()
        if proxy is not None:
            proxy.cut()
            direct = config.build_adapter(AMQP)  # the queue outlives the proxy: delete it directly
            try:
                direct.purge([queue])
            finally:
                direct.close()


def test_a_job_logs_activejobs_two_lines_not_celerys_too(tmp_path: Path) -> None:
    """Celery's own "received"/"succeeded" pair would repeat the ActiveJob lines for every job."""
    with stage("celery+redis://127.0.0.1:6379/0", tmp_path) as where, config.override(where.backend.adapter):
        queue = where.backend.queue("log-lines")
        worker = where.backend.start_worker([queue])
        job = ProbeJob.set(queue=queue).perform_later("logged")
        where.backend.probe.wait_for_count("logged", 1, 10)
        worker.terminate()
        lines = [line for line in worker.log_path.read_text().splitlines() if job.job_id in line]
    assert [line for line in lines if " jobadapter: " not in line] == []
    assert len(lines) == 2
    assert " jobadapter: Performing ProbeJob" in lines[0] and " jobadapter: Performed ProbeJob" in lines[1]
