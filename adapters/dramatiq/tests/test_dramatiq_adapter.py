"""The Dramatiq adapter against the real RabbitMQ (127.0.0.1:5672) and a private redis-server per test."""

from __future__ import annotations

import json
import queue
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pika  # type: ignore[import-untyped]
import pytest
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker
from jobadapter_dramatiq.adapter import ETA_OPTION, DramatiqAdapter, RabbitmqAdapter, RedisAdapter
from jobadapter_dramatiq.consumers import _arrived, _RedisProxy
from redis import Redis

from jobadapter import ConfigurationError, EnqueueError, Job, config, perform_all_later
from jobadapter.adapters.base import Capability
from jobadapter.conformance.harness import Backend
from jobadapter.conformance.jobs import FailingJob, RecordJob
from jobadapter.conformance.probe import Probe
from jobadapter.envelope import from_document
from jobadapter.faults.brokers import PrivateRedis, shared_amqp

AMQP = shared_amqp("dramatiq")


class Greet(Job):
    queue_as = "dq-test-greetings"

    def perform(self, name: str, *, punctuation: str = "!") -> None: ...


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A redis-server of this test's own: nothing to flush, nothing shared with parallel runs."""
    with PrivateRedis(persistent=False) as server:
        yield server


@pytest.fixture
def redis_url(private_redis: PrivateRedis) -> str:
    return f"dramatiq+{private_redis.url}"


@pytest.fixture
def redis_db(private_redis: PrivateRedis) -> Iterator[Redis]:
    connection = Redis.from_url(private_redis.url)
    yield connection
    connection.close()


@pytest.fixture
def redis_adapter(redis_url: str) -> Iterator[RedisAdapter]:
    adapter = config.build_adapter(redis_url)
    assert isinstance(adapter, RedisAdapter)
    with config.override(adapter):
        yield adapter
    adapter.close()


@pytest.fixture
def amqp_adapter() -> Iterator[RabbitmqAdapter]:
    adapter = config.build_adapter(AMQP)
    assert isinstance(adapter, RabbitmqAdapter)
    with config.override(adapter):
        yield adapter
    channel = adapter.broker.connection.channel()
    for name in adapter.known_queues():
        if name.startswith("dq-test-"):
            for suffix in ("", ".DQ", ".XQ"):
                channel.queue_delete(name + suffix)
    adapter.close()


def _stored(redis_db: Redis, queue: str) -> list[Message[object]]:
    stored = redis_db.hvals(f"dramatiq:{queue}.msgs")
    return [Message.decode(data if isinstance(data, bytes) else data.encode()) for data in stored]


def test_a_job_is_a_native_dramatiq_message(redis_adapter: RedisAdapter, redis_db: Redis) -> None:
    job = Greet.perform_later("Ada", punctuation="?")
    (message,) = _stored(redis_db, "dq-test-greetings")
    assert job.provider_job_id == job.job_id == message.message_id
    assert message.actor_name == Greet.job_name
    assert message.queue_name == "dq-test-greetings"
    (document,) = message.args
    assert from_document(document).job_id == job.job_id
    assert redis_adapter.queue_sizes() == {"dq-test-greetings": 1}


def test_delays_use_the_delay_queue(redis_adapter: RedisAdapter, redis_db: Redis) -> None:
    job = Greet.set(wait=30).perform_later("later")
    (message,) = _stored(redis_db, "dq-test-greetings.DQ")
    assert job.scheduled_at is not None
    assert message.queue_name == "dq-test-greetings.DQ"
    assert message.options["eta"] >= job.scheduled_at.timestamp() * 1000
    assert ETA_OPTION not in message.options


def test_a_long_wait_is_cut_into_hops_of_the_horizon(redis_url: str) -> None:
    adapter = config.build_adapter(redis_url + "?delay_horizon=60")
    assert isinstance(adapter, DramatiqAdapter)
    due = datetime.now(timezone.utc) + timedelta(weeks=1)
    message, delay = adapter.delayed(Message("q", "a", (), {}, {}), due)
    assert delay == 60_000
    assert message.options[ETA_OPTION] >= due.timestamp() * 1000
    adapter.close()


def test_a_retry_is_a_delayed_copy_counted_in_retries(redis_adapter: RedisAdapter, redis_db: Redis) -> None:
    job = Greet.perform_later("again")
    envelope = job.to_envelope().evolve(executions=1)
    at = datetime.now(timezone.utc) + timedelta(seconds=30)
    try:
        raise TimeoutError("slow service")
    except TimeoutError:
        provider_id = redis_adapter.schedule_retry(envelope, at, {})
    (retry,) = _stored(redis_db, "dq-test-greetings.DQ")
    assert provider_id == retry.message_id == job.job_id
    assert retry.options["retries"] == 1
    assert "TimeoutError: slow service" in retry.options["traceback"]


def test_adapter_options_become_message_options(redis_adapter: RedisAdapter, redis_db: Redis) -> None:
    Greet.set(adapter_options={"time_limit": 5000}).perform_later("quick")
    (message,) = _stored(redis_db, "dq-test-greetings")
    assert message.options["time_limit"] == 5000
    with pytest.raises(ConfigurationError, match="max_retries"):
        Greet.set(adapter_options={"max_retries": 3}).perform_later("no")


def test_bulk_is_one_transaction_of_native_messages(redis_adapter: RedisAdapter, redis_db: Redis) -> None:
    jobs = [Greet(f"n{n}") for n in range(50)]
    jobs.append(Greet("later"))
    jobs[-1].scheduled_at = datetime.now(timezone.utc) + timedelta(seconds=60)
    assert perform_all_later(jobs) == 51
    assert redis_db.llen("dramatiq:dq-test-greetings") == 50
    assert len(_stored(redis_db, "dq-test-greetings.DQ")) == 1
    assert {m.message_id for m in _stored(redis_db, "dq-test-greetings")} == {j.job_id for j in jobs[:50]}


def test_attaching_to_an_application_broker(private_redis: PrivateRedis, redis_db: Redis) -> None:
    app_broker = RedisBroker(url=private_redis.url, namespace="app")  # type: ignore[no-untyped-call]
    adapter = config.build_adapter("dramatiq://", broker=app_broker)
    assert isinstance(adapter, RedisAdapter) and adapter.broker is app_broker
    with config.override(adapter):
        Greet.perform_later("shared")
    assert redis_db.llen("app:dq-test-greetings") == 1
    adapter.close()
    assert redis_db.ping()


def test_priorities_map_onto_rabbitmq_message_priorities(amqp_adapter: RabbitmqAdapter) -> None:
    assert Capability.PRIORITY in amqp_adapter.capabilities
    assert [amqp_adapter.broker_priority(p) for p in (None, 0, 1, 5, 10, 99, -3)] == [10, 10, 9, 5, 0, 0, 10]
    assert Capability.PRIORITY not in RedisAdapter.JOB_FEATURES


def test_rabbitmq_bulk_is_one_transaction(amqp_adapter: RabbitmqAdapter) -> None:
    queue = f"dq-test-{uuid.uuid4().hex[:8]}"
    jobs = [Greet(n) for n in range(20)]
    for job in jobs:
        job.queue_name = queue
    assert perform_all_later(jobs) == 20
    assert amqp_adapter.queue_sizes()[queue] == 20


def test_broker_down_is_an_enqueue_error_within_bounds() -> None:
    for url in ("dramatiq+amqp://guest:guest@127.0.0.1:1", "dramatiq+redis://127.0.0.1:1/10"):
        adapter = config.build_adapter(url)
        started = time.monotonic()
        with config.override(adapter), pytest.raises(EnqueueError) as caught:
            Greet.perform_later("nobody home")
        assert time.monotonic() - started < 15
        assert caught.value.__cause__ is not None
        adapter.close()


def test_bad_urls_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="dramatiq URLs look like"):
        config.build_adapter("dramatiq+sqs://somewhere")
    with pytest.raises(ConfigurationError, match="could not be loaded"):
        config.build_adapter("dramatiq://?broker=no_such_module:broker")
    with pytest.raises(ConfigurationError, match="delay_horizon"):
        config.build_adapter("dramatiq+redis://127.0.0.1:6379/0?delay_horizon=soon")


@pytest.fixture
def horizon_backend(tmp_path: Path) -> Iterator[Backend]:
    """RabbitMQ with a one-second horizon: every delay longer than that hops."""
    backend = Backend(AMQP + "?delay_horizon=1", Probe(tmp_path / "probe.sqlite"), tmp_path, 20.0)
    yield backend
    adapter = backend.adapter
    assert isinstance(adapter, RabbitmqAdapter)
    channel = pika.BlockingConnection(pika.URLParameters(AMQP.split("+", 1)[1])).channel()
    for name in adapter.known_queues():
        for suffix in ("", ".DQ", ".XQ"):
            channel.queue_delete(name + suffix)
    channel.connection.close()
    backend.close()


def test_long_waits_hop_and_still_run_on_time(horizon_backend: Backend) -> None:
    queue = horizon_backend.queue("hops")
    label = horizon_backend.label_for("hops")
    with horizon_backend.worker([queue]) as worker, config.override(horizon_backend.adapter):
        assert worker is not None
        job = RecordJob.set(queue=queue, wait=2.6).perform_later(label)
        (row,) = horizon_backend.probe.wait_for_count(label, 1, 15)
        assert job.scheduled_at is not None
        assert job.scheduled_at.timestamp() - 0.05 <= row.at <= job.scheduled_at.timestamp() + 2
        assert "was skipped" in worker.log_tail(200), "the wait did not hop"


def test_failed_jobs_are_dead_lettered_with_their_error(horizon_backend: Backend) -> None:
    queue = horizon_backend.queue("dead")
    label = horizon_backend.label_for("dead")
    with horizon_backend.worker([queue]), config.override(horizon_backend.adapter):
        FailingJob.set(queue=queue).perform_later(label)
        horizon_backend.probe.wait_for(
            lambda: any(label in payload for payload, _ in horizon_backend.adapter.failed()),
            15,
            "dead letter",
        )
    ((payload, reason),) = [f for f in horizon_backend.adapter.failed() if label in f[0]]
    assert json.loads(payload)["job_class"] == FailingJob.job_name
    assert reason.startswith("Doomed: conformance failure")
    assert horizon_backend.probe.count(label) == 1


def test_processes_run_jobs_and_stop_warmly(redis_url: str, redis_db: Redis, tmp_path: Path) -> None:
    backend = Backend(f"{redis_url}?processes=2", Probe(tmp_path / "probe.sqlite"), tmp_path, 20.0)
    queue = backend.queue("processes")
    label = backend.label_for("processes")
    try:
        with config.override(backend.adapter):
            worker = backend.start_worker([queue], concurrency=2)
            children = subprocess.run(
                ["pgrep", "-P", str(worker.process.pid)], capture_output=True, text=True, check=False
            ).stdout.split()
            assert len(children) == 2
            jobs = [RecordJob(label, n) for n in range(20)]
            for job in jobs:
                job.queue_name = queue
            perform_all_later(jobs)
            backend.probe.wait_for_count(label, 20, 15)
            # each worker process heartbeats under its own id (and this process under its own)
            assert redis_db.zcard("dramatiq:__heartbeats__") == 3
            assert worker.terminate() == 0
    finally:
        backend.close()


def test_prefetched_messages_of_equal_priority_keep_their_arrival_order() -> None:
    """A worker queues prefetched messages by (priority, message); Dramatiq before 2.2 compared
    two proxies as always "less", so ties came out in no fixed order and the broker's order (a
    queue's FIFO, RabbitMQ's priorities) was lost. The worker's proxies sort by arrival."""
    work: queue.PriorityQueue[tuple[int, object]] = queue.PriorityQueue()
    for n in range(6):
        work.put((0, _arrived(_RedisProxy(Message("q", "a", (n,), {}, {})))))
    assert [work.get()[1].args for _ in range(6)] == [(n,) for n in range(6)]  # type: ignore[attr-defined]
