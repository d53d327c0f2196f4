"""The RQ adapter under faults: killed workers, Redis outages, hostile messages.

Each test runs on a redis-server of its own (`PrivateRedis`), so it may kill
it and read every key without touching what other tests use.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from jobadapter_rq.adapter import RQAdapter
from jobadapter_rq.fetch import PROCESSING_SET, Fetcher, entry, processing_key
from jobadapter_rq.names import band_queue_name
from jobadapter_rq.pool import JobAdapterPool
from jobadapter_rq.recovery import give_back_taken
from jobadapter_rq.worker import JobAdapterWorker
from redis import Redis
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from jobadapter import config
from jobadapter.conformance.probe import ENVIRONMENT_VARIABLE, Probe
from jobadapter.faults.brokers import PrivateRedis
from jobadapter.faults.canary import CANARY_VARIABLE
from jobadapter.faults.hostile import envelope_kinds
from jobadapter.faults.jobs import DyingJob, ProbeJob, StormJob
from jobadapter.faults.processes import kill_tree, wait_gone


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    with PrivateRedis() as server:
        yield server


@pytest.fixture
def adapter(private_redis: PrivateRedis) -> Iterator[RQAdapter]:
    built = config.configure(url=f"rq+{private_redis.url}?abandoned_check_interval=1")
    assert isinstance(built, RQAdapter)
    yield built
    built.close()


class Workers:
    """``jobadapter worker`` subprocesses on one queue, with a probe and a canary file."""

    def __init__(self, adapter: RQAdapter, folder: Path) -> None:
        self.url = f"rq+{adapter.url.target}"
        self.queue = f"faults-{uuid.uuid4().hex[:8]}"
        self.folder = folder
        self.canary = folder / "canary"
        self.probe = Probe(folder / "probe.db")
        self.environment = dict(os.environ)
        self.environment[ENVIRONMENT_VARIABLE] = str(folder / "probe.db")
        self.environment[CANARY_VARIABLE] = str(self.canary)
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, concurrency: int = 2) -> subprocess.Popen[bytes]:
        with open(self.folder / f"worker-{len(self.started)}.log", "wb") as log:
            process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "jobadapter.cli", "worker", "--url", self.url),
                    *("--app", "jobadapter.faults.jobs", "--queues", self.queue),
                    *("--concurrency", str(concurrency)),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self.environment,
            )
        self.started.append(process)
        return process

    def log(self, process: subprocess.Popen[bytes]) -> str:
        return (self.folder / f"worker-{self.started.index(process)}.log").read_text(errors="replace")

    def wait_for(self, labels: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not all(self.probe.count(label) for label in labels):
            assert time.monotonic() < deadline, [label for label in labels if not self.probe.count(label)]
            time.sleep(0.1)

    def control(self, timeout: float = 30) -> None:
        """A ProbeJob enqueued now runs (the workers consume and are not wedged)."""
        label = f"control-{uuid.uuid4().hex[:8]}"
        ProbeJob.set(queue=self.queue).perform_later(label)
        self.wait_for([label], timeout)

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                kill_tree(process.pid)
                process.wait()


@pytest.fixture
def workers(adapter: RQAdapter, tmp_path: Path) -> Iterator[Workers]:
    running = Workers(adapter, tmp_path)
    yield running
    running.stop_all()


def _registered_worker(connection: Redis, name: str, pid: int) -> None:
    connection.hset(f"rq:worker:{name}", mapping={"hostname": socket.gethostname(), "pid": pid})


def test_the_fetch_takes_by_priority_and_a_dead_workers_taken_job_goes_back(adapter: RQAdapter) -> None:
    connection = adapter.connection
    ProbeJob.set(queue="mail", priority=3).perform_later("urgent-later")
    plain = ProbeJob.set(queue="mail").perform_later("plain")
    bands = [adapter.queue(band_queue_name("mail", band)).key for band in range(10)]
    alive = Fetcher(connection, "alive-worker", bands)
    _registered_worker(connection, "alive-worker", os.getpid())
    dying = Fetcher(connection, "dying-worker", bands)
    _registered_worker(connection, "dying-worker", 2**22 + 1)  # above pid_max: no such process

    taken = dying.take()  # the worker is killed right after this move
    assert taken == (adapter.queue("mail").key.encode(), plain.job_id.encode())
    assert connection.llen(adapter.queue("mail").key) == 0
    assert connection.lrange(processing_key("dying-worker"), 0, -1) == [taken[0] + b"\0" + taken[1]]
    assert alive.take() is not None  # the other band's job, held by a live worker
    assert give_back_taken(connection) == 1
    assert adapter.queue("mail").job_ids == [plain.job_id]
    assert connection.llen(processing_key("dying-worker")) == 0
    assert connection.llen(processing_key("alive-worker")) == 1
    assert connection.smembers(PROCESSING_SET) == {b"alive-worker"}


def test_starting_a_job_moves_it_from_the_processing_list_to_the_started_registry(adapter: RQAdapter) -> None:
    job = ProbeJob.set(queue="mail").perform_later("started")
    queue = adapter.queue("mail")
    worker = JobAdapterWorker([queue], connection=adapter.connection, serializer=JSONSerializer)
    worker.register_birth()
    found = worker._load(*(worker.fetcher.take() or (b"", b"")))
    assert found is not None and found[0].id == job.job_id
    assert adapter.connection.llen(worker.fetcher.processing_key) == 1
    worker.prepare_execution(found[0])
    assert adapter.connection.llen(worker.fetcher.processing_key) == 0
    assert [entry.partition(":")[0] for entry in StartedJobRegistry(queue=queue).get_job_ids()] == [
        job.job_id
    ]


def test_a_job_whose_horse_ended_in_an_outage_goes_back_to_its_queue(adapter: RQAdapter) -> None:
    """Its outcome is unknown (the horse may not even have started it): at-least-once gives it
    back, counted like a dead worker's job, instead of failing it for the broker's outage."""
    job = ProbeJob.set(queue="mail").perform_later("unsettled")
    queue = adapter.queue("mail")
    worker = JobAdapterWorker([queue], connection=adapter.connection, serializer=JSONSerializer)
    worker.register_birth()
    found = worker._load(*(worker.fetcher.take() or (b"", b"")))
    assert found is not None
    execution = worker.prepare_execution(found[0])
    worker._settle(found[0], queue, execution)
    assert queue.job_ids == [job.job_id]
    assert StartedJobRegistry(queue=queue).get_job_ids() == []
    assert not adapter.connection.exists(execution.key)  # the execution record goes with it
    assert adapter.connection.hget(f"rq:job:{job.job_id}", "jobadapter_abandoned") == b"1"
    assert adapter.status(job.job_id) == "queued"


def test_a_job_whose_horse_dies_runs_again_then_fails_as_abandoned(
    adapter: RQAdapter, workers: Workers
) -> None:
    """A horse SIGKILLed under its job is a dead worker on a small scale: the job goes back to its
    queue (``abandoned_retries``, 3 here), then fails with that reason, instead of RQ failing it
    at the first death."""
    job = DyingJob.set(queue=workers.queue).perform_later("dies")
    workers.start(concurrency=1)
    workers.probe.wait_for_count("dies", 4, 30, kind="started")
    workers.probe.wait_for(lambda: adapter.status(job.job_id) == "failed", 10, "the job failed")
    (reason,) = [why for payload, why in adapter.failed() if job.job_id in payload]
    assert "abandoned: its worker died 4 times" in reason
    time.sleep(0.5)
    assert workers.probe.count("dies", "started") == 4


def test_a_kill_storm_loses_no_job(workers: Workers) -> None:
    labels = [f"storm-{n}" for n in range(60)]
    for label in labels:
        StormJob.set(queue=workers.queue).perform_later(label, random.randint(20, 80))
    running = [workers.start(), workers.start()]
    for kill in range(4):
        time.sleep(0.4 + 0.3 * kill)
        victim = running[kill % 2]
        killed = kill_tree(victim.pid)
        victim.wait()
        assert not wait_gone(killed)
        running[kill % 2] = workers.start()
    workers.wait_for(labels, timeout=45)


def test_a_pool_rides_out_a_redis_outage_and_stops_on_sigterm(
    private_redis: PrivateRedis, workers: Workers
) -> None:
    pool = workers.start(concurrency=2)
    workers.control()
    private_redis.kill()
    time.sleep(3)
    private_redis.start()
    workers.control(timeout=15)
    assert pool.poll() is None
    log = workers.log(pool)
    # once per worker and per scheduler process (two each at most), not once per retry
    assert 1 <= log.count("Redis is unreachable") <= 4
    assert "Redis is reachable again" in log
    assert "Traceback" not in log
    private_redis.kill()  # and SIGTERM in the middle of a second outage
    time.sleep(1)
    pool.send_signal(signal.SIGTERM)
    assert pool.wait(20) == 0


def test_a_take_whose_reply_never_arrived_is_taken_again(adapter: RQAdapter, workers: Workers) -> None:
    """Redis ran the take script but the reply never reached the worker (Redis died, or redis-py
    retried the call): the id sits in a live worker's processing list, which no sweep of dead
    workers empties. The worker's next take returns it."""
    worker = workers.start(concurrency=1)
    workers.control()
    connection = adapter.connection
    (worker_key,) = connection.smembers("rq:workers")  # type: ignore[misc]
    name = worker_key.decode().removeprefix("rq:worker:")
    job = ProbeJob.set(queue=workers.queue, wait=3600).perform_later("swallowed")  # a hash, in no queue
    connection.rpush(
        processing_key(name), entry(adapter.queue(workers.queue).key.encode(), job.job_id.encode())
    )
    workers.wait_for(["swallowed"], timeout=15)
    assert connection.llen(processing_key(name)) == 0
    assert worker.poll() is None


def test_hostile_messages_end_in_the_failed_registry_and_import_nothing(
    adapter: RQAdapter, workers: Workers
) -> None:
    kinds = [*envelope_kinds(adapter), *adapter.hostile_messages()]
    assert len(kinds) >= 15
    pool = workers.start(concurrency=2)
    markers = {kind.kind: f"marker-{uuid.uuid4().hex}" for kind in kinds}
    for kind in kinds:
        kind.send(workers.queue, markers[kind.kind])
    workers.control()
    performed = [kind for kind in kinds if kind.fate == "performed"]
    workers.wait_for([markers[kind.kind] for kind in performed], timeout=10)
    expected = [kind for kind in kinds if kind.fate == "failed"]
    deadline = time.monotonic() + 10
    while len(failed := adapter.failed()) < len(expected) and time.monotonic() < deadline:
        time.sleep(0.1)  # the other worker process may still be refusing the last ones
    assert len(failed) == len(expected), failed
    for kind in expected:
        entries = [(payload, reason) for payload, reason in failed if markers[kind.kind] in payload + reason]
        assert len(entries) == 1, kind.kind
    for _, reason in failed:
        assert any(name in reason for name in ("InvalidEnvelope", "UnknownJobError", "refused: ")), reason
    assert pool.poll() is None
    assert not workers.canary.exists()
    assert "unhandled exception" not in workers.log(pool)


def test_a_pool_worker_stopped_right_after_its_fork_stops(adapter: RQAdapter) -> None:
    """The stop a pool sends a child it has just forked must not be lost to the pool's own
    handler, inherited by the child (the pool then waited forever)."""
    pool = JobAdapterPool(
        ["forked"], connection=adapter.connection, num_workers=1, worker_class=JobAdapterWorker
    )
    previous = {stop: signal.getsignal(stop) for stop in (signal.SIGINT, signal.SIGTERM)}
    pool._install_signal_handlers()
    try:
        pool.start_worker(burst=False)
    finally:
        for stop, handler in previous.items():
            signal.signal(stop, handler)
    (child,) = pool.worker_dict.values()
    os.kill(child.pid, signal.SIGINT)
    child.process.join(15)
    assert not child.process.is_alive()
