"""Faults on real brokers: hostile messages, dead letters that do not decode, outages, kill storms."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from jobadapter_dramatiq.adapter import DramatiqAdapter, RabbitmqAdapter, RedisAdapter
from jobadapter_dramatiq.hostile import message_fields
from redis import Redis

from jobadapter import EnqueueError, config, perform_all_later
from jobadapter.conformance.harness import Backend, WorkerProcess
from jobadapter.conformance.jobs import RecordJob
from jobadapter.conformance.probe import Probe
from jobadapter.faults.brokers import PrivateRedis, TcpProxy, shared_amqp, with_address
from jobadapter.faults.hostile import envelope_kinds
from jobadapter.faults.jobs import ProbeJob, StormJob

AMQP = shared_amqp("dramatiq")
CANARY_VARIABLE = "JOBADAPTER_FAULT_CANARY"
"""Where `jobadapter.faults.canary` records its import (named here, so this process never imports it)."""
APPS = ("jobadapter.conformance.jobs", "jobadapter.faults.jobs")


class FaultBackend(Backend):
    """A `Backend` whose workers run the fault suite's jobs too, with the import canary armed."""

    def __init__(self, url: str, workdir: Path) -> None:
        super().__init__(url, Probe(workdir / "probe.sqlite"), workdir, 20.0)
        self.canary = workdir / "canary.log"

    def environment(self) -> dict[str, str]:
        return super().environment() | {CANARY_VARIABLE: str(self.canary)}

    def start_worker(self, queues: list[str], concurrency: int = 1, wait: bool = True) -> WorkerProcess:
        handle, log_name = tempfile.mkstemp(prefix="worker-", suffix=".log", dir=self.workdir)
        apps = [argument for app in APPS for argument in ("--app", app)]
        command = [sys.executable, "-m", "jobadapter.cli", "worker", "--url", self.url, *apps]
        command += ["--queues", ",".join(queues), "--concurrency", str(concurrency)]
        process = subprocess.Popen(
            command, env=self.environment(), stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        os.close(handle)
        worker = WorkerProcess(process, Path(log_name))
        if wait:
            self.wait_until_consuming(worker, queues)
        return worker

    def log(self, worker: WorkerProcess) -> str:
        return worker.log_path.read_text(errors="replace")


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    with PrivateRedis() as server:
        yield server


@pytest.fixture
def redis_backend(private_redis: PrivateRedis, tmp_path: Path) -> Iterator[FaultBackend]:
    """Dramatiq on a private redis-server; a dead worker's messages come back after 3 s."""
    backend = FaultBackend(f"dramatiq+{private_redis.url}?heartbeat_timeout=3", tmp_path)
    yield backend
    backend.close()


@pytest.fixture
def amqp_backend(tmp_path: Path) -> Iterator[FaultBackend]:
    backend = FaultBackend(AMQP, tmp_path)
    yield backend
    backend.close()


@pytest.fixture
def proxied_amqp_backend(tmp_path: Path) -> Iterator[tuple[FaultBackend, TcpProxy]]:
    """RabbitMQ through a proxy the test can cut; the queues are removed through the real port."""
    with TcpProxy("127.0.0.1", 5672) as proxy:
        backend = FaultBackend(with_address(AMQP, proxy.port), tmp_path)
        try:
            yield backend, proxy
        finally:
            with contextlib.suppress(OSError):  # already restored: the port is taken
                proxy.restore()
            backend.close()


def _failed_with(adapter: DramatiqAdapter, marker: str) -> list[tuple[str, str]]:
    return [(payload, reason) for payload, reason in adapter.failed() if marker in payload + reason]


def _wait_for_dead_letters(adapter: DramatiqAdapter, markers: dict[str, str], timeout: float) -> list[str]:
    """Wait until each marker is in ``failed()``; the names of those still missing after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        texts = [payload + reason for payload, reason in adapter.failed()]
        missing = sorted(name for name, marker in markers.items() if not any(marker in t for t in texts))
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(0.1)


def _client(backend: FaultBackend) -> Redis:
    adapter = backend.adapter
    assert isinstance(adapter, RedisAdapter)
    client: Redis = adapter.broker.client
    return client


def _held(backend: FaultBackend) -> int:
    """Messages fetched and not yet acknowledged, by any worker (Dramatiq's ack sets)."""
    client = _client(backend)
    return sum(int(client.scard(key)) for key in client.keys("dramatiq:__acks__.*"))


def test_an_undecodable_message_in_a_batch_is_dead_lettered_and_the_rest_run(
    redis_backend: FaultBackend,
) -> None:
    adapter = redis_backend.adapter
    assert isinstance(adapter, RedisAdapter)
    queue = redis_backend.queue("batch")
    label = redis_backend.label_for("batch")
    marker = f"undecodable-{uuid.uuid4().hex}"
    with config.override(adapter):
        RecordJob.set(queue=queue).perform_later(label, 0)
        adapter.write_raw(queue, b"\xff\xfe" + marker.encode() + b"\x80")
        for n in range(1, 6):
            RecordJob.set(queue=queue).perform_later(label, n)
        # concurrency 2 prefetches 4: the bad body sits in the first batch, between good ones
        worker = redis_backend.start_worker([queue], concurrency=2, wait=False)
        try:
            redis_backend.probe.wait_for_count(label, 6, 15)
            redis_backend.probe.wait_for(lambda: bool(_failed_with(adapter, marker)), 5, "dead letter")
            control = redis_backend.label_for("control")
            RecordJob.set(queue=queue).perform_later(control)
            redis_backend.probe.wait_for_count(control, 1, 5)
            redis_backend.probe.wait_for(lambda: _held(redis_backend) == 0, 5, "nothing held")
            assert worker.process.poll() is None
        finally:
            worker.terminate()
    ((payload, reason),) = _failed_with(adapter, marker)
    assert marker in payload
    assert "not UTF-8" in reason
    assert "Consumer encountered an unexpected error" not in redis_backend.log(worker)


@pytest.fixture(params=["redis", "rabbitmq"])
def backend(request: pytest.FixtureRequest) -> FaultBackend:
    """Each broker in turn (the fixtures above, by name)."""
    name = "redis_backend" if request.param == "redis" else "amqp_backend"
    chosen: FaultBackend = request.getfixturevalue(name)
    return chosen


def test_every_hostile_kind_is_dead_lettered_with_a_reason_and_the_worker_goes_on(
    backend: FaultBackend,
) -> None:
    """All kinds at once, on one worker of concurrency 2: none wedges it, crashes it or imports anything."""
    adapter = backend.adapter
    assert isinstance(adapter, DramatiqAdapter)
    queue = backend.queue("hostile")
    kinds = [*adapter.hostile_messages(), *envelope_kinds(adapter)]
    assert len(adapter.hostile_messages()) >= 6 and len(kinds) >= 15
    markers = {kind.kind: f"{kind.kind}-{uuid.uuid4().hex[:8]}" for kind in kinds}
    worker = backend.start_worker([queue], concurrency=2)
    try:
        for kind in kinds:
            kind.send(queue, markers[kind.kind])
        control = backend.label_for("control")
        with config.override(adapter):
            ProbeJob.set(queue=queue).perform_later(control)
        backend.probe.wait_for_count(control, 1, 10)
        failing = {kind.kind for kind in kinds if kind.fate == "failed"}
        missing = _wait_for_dead_letters(adapter, {name: markers[name] for name in failing}, 10)
        assert not missing, f"not dead-lettered: {missing}"
        for kind in kinds:
            if kind.fate == "performed":
                backend.probe.wait_for_count(markers[kind.kind], 1, 10)
        assert worker.process.poll() is None
        log = backend.log(worker)
    finally:
        worker.terminate()
    for name in failing:
        ((_, reason),) = _failed_with(adapter, markers[name])
        assert reason.strip(), name
    assert "Restarting consumer" not in log
    assert "Unhandled error during post_process_message" not in log
    assert not backend.canary.exists(), backend.canary.read_text()


def test_wrong_field_types_on_rabbitmq_are_dead_lettered_not_crash_looped(amqp_backend: FaultBackend) -> None:
    adapter = amqp_backend.adapter
    assert isinstance(adapter, RabbitmqAdapter)
    queue = amqp_backend.queue("options")
    marker = f"options-{uuid.uuid4().hex}"
    worker = amqp_backend.start_worker([queue], concurrency=2)
    try:
        adapter.write_raw(queue, json.dumps(message_fields(queue, marker, options=5)).encode())
        control = amqp_backend.label_for("control")
        with config.override(adapter):
            ProbeJob.set(queue=queue).perform_later(control)
        amqp_backend.probe.wait_for_count(control, 1, 5)
        amqp_backend.probe.wait_for(lambda: bool(_failed_with(adapter, marker)), 5, "dead letter")
        log = amqp_backend.log(worker)
    finally:
        worker.terminate()
    ((payload, reason),) = _failed_with(adapter, marker)
    assert json.loads(payload)["options"] == 5
    assert "field 'options' is a number, not an object" in reason
    assert "Consumer encountered" not in log
    assert adapter.queue_sizes()[queue] == 0


def test_failed_lists_dead_letters_that_do_not_decode(
    redis_backend: FaultBackend, amqp_backend: FaultBackend
) -> None:
    """What RabbitMQ dead-letters for an older consumer, or a hand in Redis, is listed as text."""
    marker = f"raw-{uuid.uuid4().hex}"
    bodies = [b"\xff" + marker.encode(), json.dumps(message_fields("q", marker + "-5", options=5)).encode()]
    amqp = amqp_backend.adapter
    assert isinstance(amqp, RabbitmqAdapter)
    queue = amqp_backend.queue("xq")
    amqp.declare(queue)
    for body in bodies:
        amqp.broker.channel.basic_publish(exchange="", routing_key=f"{queue}.XQ", body=body)
    client = _client(redis_backend)
    redis_queue = redis_backend.queue("xq")
    redis_backend.adapter.declare(redis_queue)  # type: ignore[attr-defined]
    for n, body in enumerate(bodies):
        client.hset(f"dramatiq:{redis_queue}.XQ.msgs", f"id-{n}", body)
    for adapter in (amqp, redis_backend.adapter):
        found = _failed_with(adapter, marker)  # type: ignore[arg-type]
        assert len(found) == 2
        texts = sorted(found)
        assert texts[0][0].endswith(marker + "-5" + texts[0][0].split(marker + "-5", 1)[1])
        assert "not UTF-8" in texts[1][1] or "not UTF-8" in texts[0][1]
        assert any("'options' is a number" in reason for _, reason in found)


def _survives_an_outage(backend: FaultBackend, down: Callable[[], None], up: Callable[[], None]) -> None:
    """A worker with a delayed job in hand loses its broker for longer than Dramatiq's 3 s consumer
    restarts: enqueueing fails fast, the worker logs the outage once, runs everything once the broker
    is back, and SIGTERM stops it within 20 s during a second outage."""
    adapter = backend.adapter
    queue = backend.queue("outage")
    label = backend.label_for("outage")
    worker = backend.start_worker([queue], concurrency=2)
    try:
        with config.override(adapter):
            RecordJob.set(queue=queue, wait=1.5).perform_later(label, "delayed")
            time.sleep(0.5)  # the delay-queue consumer holds it in memory now
            down()
            started = time.monotonic()
            with pytest.raises(EnqueueError):
                RecordJob.set(queue=queue).perform_later(label, "refused")
            assert time.monotonic() - started < 10
            time.sleep(3.2)  # longer than Dramatiq's 3 s consumer restart delay: retries happen
            assert worker.process.poll() is None
            up()
            RecordJob.set(queue=queue).perform_later(label, "after")
            backend.probe.wait_for(
                lambda: {"after", "delayed"} <= {row.detail["args"][0] for row in backend.probe.rows(label)},
                15,
                "the delayed job and the one enqueued after the outage",
            )
            # A timeout is not a refusal: a frozen Redis runs the command once it thaws, so the
            # job whose perform_later raised EnqueueError may run too (at-least-once, never lost).
            ran = sorted(row.detail["args"][0] for row in backend.probe.rows(label))
            assert ran in (["after", "delayed"], ["after", "delayed", "refused"])
        down()
        time.sleep(1)
        started = time.monotonic()
        worker.terminate(timeout=20)
        stopped_in = time.monotonic() - started
    finally:
        if worker.process.poll() is None:
            worker.kill()
        up()
    log = backend.log(worker)
    # once per outage (the second may end before a frozen broker's 5 s socket timeout noticed it)
    assert 1 <= log.count("The broker is unreachable") <= 2, log[-3000:]
    assert log.count("The broker is reachable again") == 1, log[-3000:]
    assert 1 <= log.count("Consumer encountered") <= 2, log[-3000:]
    assert "unexpected error" not in log, log[-3000:]
    assert "pika" not in log, log[-3000:]
    assert stopped_in < 20


@pytest.mark.parametrize("how", ["killed", "frozen"])
def test_a_redis_outage_is_survived(
    how: str, redis_backend: FaultBackend, private_redis: PrivateRedis
) -> None:
    """Killed: connections refused. Frozen (SIGSTOP): every call times out (after 1 s here), an
    error Dramatiq does not treat as a connection error (it killed the delay-queue consumer thread)."""
    if how == "killed":
        _survives_an_outage(redis_backend, private_redis.kill, private_redis.start)
        return
    process = private_redis.process
    assert process is not None
    # the same server, with a 1 s socket timeout instead of 5 s
    backend = FaultBackend(
        f"dramatiq+{private_redis.url}?heartbeat_timeout=3&socket_timeout=1", redis_backend.workdir
    )
    try:
        _survives_an_outage(
            backend,
            lambda: process.send_signal(signal.SIGSTOP),
            lambda: process.send_signal(signal.SIGCONT),
        )
    finally:
        backend.close()


def test_a_rabbitmq_outage_is_survived(proxied_amqp_backend: tuple[FaultBackend, TcpProxy]) -> None:
    backend, proxy = proxied_amqp_backend

    def up() -> None:
        with contextlib.suppress(OSError):  # already listening
            proxy.restore()

    _survives_an_outage(backend, proxy.cut, up)


def kill_storm(backend: FaultBackend, jobs: int, kills: int, every: float) -> dict[str, tuple[int, int]]:
    """``jobs`` StormJobs of 100 ms on 2 workers of concurrency 2; every ``every`` s one worker's whole
    tree is SIGKILLed and a fresh one started. Once every job ran: how often each started and ended."""
    queue = backend.queue("storm")
    labels = [backend.label_for(f"storm{n}") for n in range(jobs)]
    workers = [backend.start_worker([queue], concurrency=2) for _ in range(2)]
    try:
        jobs_to_run = [StormJob(label, 100) for label in labels]
        for job in jobs_to_run:
            job.queue_name = queue
        with config.override(backend.adapter):
            perform_all_later(jobs_to_run)

        def in_flight() -> bool:
            return any(backend.probe.count(label, "started") > backend.probe.count(label) for label in labels)

        def all_ran() -> bool:
            return all(backend.probe.count(label) for label in labels)

        for _ in range(kills):
            time.sleep(every)
            # On a loaded machine the jobs may not have started yet: a kill must hit running work.
            backend.probe.wait_for(lambda: in_flight() or all_ran(), 10, "a storm job running", interval=0.02)
            if all_ran():
                break
            workers.pop(0).kill()  # asserts nothing of the tree is left
            workers.append(backend.start_worker([queue], concurrency=2, wait=False))
        backend.probe.wait_for(
            lambda: all(backend.probe.count(label) for label in labels), 30, f"all {jobs} storm jobs"
        )
        return {
            label: (backend.probe.count(label, "started"), backend.probe.count(label)) for label in labels
        }
    finally:
        for worker in workers:
            worker.terminate()


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_a_kill_storm_loses_no_job(broker: str, request: pytest.FixtureRequest) -> None:
    backend: FaultBackend = request.getfixturevalue(f"{'redis' if broker == 'redis' else 'amqp'}_backend")
    started = time.monotonic()
    runs = kill_storm(backend, jobs=60, kills=3, every=0.7)
    assert all(performed for _, performed in runs.values())  # none lost
    interrupted = sum(starts - performed for starts, performed in runs.values())
    duplicates = sum(performed - 1 for _, performed in runs.values())
    assert interrupted >= 1, "no kill hit a running job: the storm proved nothing"
    print(
        f"{broker}: 60 jobs, {interrupted} killed mid-run and run again, {duplicates} ran twice, "
        f"{time.monotonic() - started:.1f} s"
    )
