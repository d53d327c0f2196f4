"""The RQ adapter against a redis-server of the module's own (the conformance run: 6379/5).

A private server, not a shared database, because the tests empty it between
themselves: two checkouts running them at once must not empty each other's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from jobadapter_rq.adapter import RQAdapter
from jobadapter_rq.names import band_queue_name, consumed_queue_names
from jobadapter_rq.recovery import requeue_abandoned
from jobadapter_rq.worker import ENTRY_POINT
from redis import Redis
from rq import Queue
from rq.job import Callback
from rq.job import Job as RQJob
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry
from rq.results import Result
from rq.serializers import JSONSerializer
from rq.webhook import Webhook

from jobadapter import ConfigurationError, EnqueueError, Job, config, perform_all_later, retry_on
from jobadapter.envelope import decode
from jobadapter.faults.brokers import PrivateRedis


class Greet(Job):
    queue_as = "greetings"

    def perform(self, name: str, *, punctuation: str = "!") -> None: ...


class Secret(Job):
    log_arguments = False

    def perform(self, token: str) -> None: ...


@retry_on(KeyError, wait=30, attempts=3)
class Flaky(Job):
    def perform(self) -> None:
        raise KeyError("again")


@pytest.fixture(scope="module")
def server() -> Iterator[PrivateRedis]:
    with PrivateRedis(persistent=False) as private:
        yield private


@pytest.fixture
def url(server: PrivateRedis) -> str:
    return f"rq+{server.url}"


@pytest.fixture
def redis(server: PrivateRedis) -> Iterator[Redis]:
    connection = Redis.from_url(server.url)
    connection.flushdb()
    yield connection
    connection.close()


@pytest.fixture
def adapter(redis: Redis, url: str) -> RQAdapter:
    built = config.configure(url=url)
    assert isinstance(built, RQAdapter)
    return built


def test_a_job_is_a_native_rq_job(adapter: RQAdapter) -> None:
    job = Greet.perform_later("Ada", punctuation="?")
    assert job.provider_job_id == job.job_id
    rq_job = RQJob.fetch(job.job_id, connection=adapter.connection, serializer=JSONSerializer)
    assert rq_job.func_name == "jobadapter_rq.worker.perform"
    assert rq_job.origin == "greetings"
    assert rq_job.description == f"{Greet.job_name}('Ada', punctuation='?')"
    assert decode(json.dumps(rq_job.args[0])).job_id == job.job_id
    hidden = Secret.perform_later("s3cr3t")
    hidden_rq_job = RQJob.fetch(hidden.job_id, connection=adapter.connection, serializer=JSONSerializer)
    assert hidden_rq_job.description == f"{Secret.job_name}(…)"
    assert adapter.status(job.job_id) == "queued"
    assert adapter.queue_sizes()["greetings"] == 1


def test_a_due_job_is_stored_as_rq_stores_it(adapter: RQAdapter) -> None:
    """The adapter writes due jobs itself (one transaction); RQ's ``enqueue_job`` must agree."""
    ours = Greet.set(adapter_options={"ttl": 600, "result_ttl": 60}).perform_later("Ada")
    queue = adapter.queue("greetings")
    envelope = decode(
        json.dumps(RQJob.fetch(ours.job_id, connection=adapter.connection, serializer=JSONSerializer).args[0])
    )
    native = queue.enqueue_job(
        queue.create_job(
            ENTRY_POINT,
            args=(envelope.to_document(),),
            job_id="native-twin",
            description=f"{Greet.job_name}('Ada')",
            ttl=600,
            result_ttl=60,
            failure_ttl=adapter.failure_ttl,
        )
    )
    stored = adapter.connection.hgetall(RQJob.key_for(ours.job_id))
    twin = adapter.connection.hgetall(RQJob.key_for(native.id))
    assert sorted(stored) == sorted(twin)
    differing = {field for field in stored if stored[field] != twin[field]}
    assert differing <= {b"created_at", b"enqueued_at"}
    assert stored[b"status"] == b"queued"
    assert 0 < adapter.connection.ttl(RQJob.key_for(ours.job_id)) <= 600
    assert adapter.connection.lrange(queue.key, 0, -1) == [ours.job_id.encode(), b"native-twin"]
    assert queue.key.encode() in adapter.connection.smembers(queue.redis_queues_keys)


def test_delays_use_the_scheduled_registry_rounded_up(adapter: RQAdapter) -> None:
    job = Greet.set(wait=60).perform_later("later")
    assert adapter.status(job.job_id) == "scheduled"
    (envelope,) = adapter.scheduled()
    assert envelope.job_id == job.job_id
    score = adapter.connection.zscore("rq:scheduled:greetings", job.job_id)
    assert job.scheduled_at is not None and score is not None
    assert 0 <= score - job.scheduled_at.timestamp() < 1


def test_priorities_map_onto_ordered_bands() -> None:
    assert band_queue_name("mail", None) == "mail"
    assert band_queue_name("mail", -4) == "mail"
    assert band_queue_name("mail", 3) == "mail:p3"
    assert band_queue_name("mail", 42) == "mail:p9"
    assert consumed_queue_names(["a", "b"])[:4] == ["a", "b", "a:p1", "b:p1"]


def test_bulk_enqueue_is_one_pipeline_of_native_jobs(adapter: RQAdapter) -> None:
    jobs = [Greet(str(n)) for n in range(50)]
    assert perform_all_later(jobs) == 50
    assert adapter.queue("greetings").count == 50
    assert [job.provider_job_id for job in jobs] == [job.job_id for job in jobs]
    assert adapter.queue("greetings").job_ids == [job.job_id for job in jobs]  # in enqueue order
    first = RQJob.fetch(jobs[0].job_id, connection=adapter.connection, serializer=JSONSerializer)
    assert first.get_status() == "queued" and first.origin == "greetings" and first.enqueued_at is not None


def test_bulk_enqueue_spreads_over_bands_and_the_scheduled_registry(adapter: RQAdapter) -> None:
    urgent = [Greet(str(n)) for n in range(3)]
    for job in urgent:
        job.priority = 2
    later = Greet("later")
    later.scheduled_at = datetime.now(timezone.utc) + timedelta(seconds=60)
    assert perform_all_later([Greet("plain"), *urgent, later]) == 5
    assert adapter.queue_sizes() == {"greetings": 1, "greetings:p2": 3}
    assert [envelope.job_id for envelope in adapter.scheduled()] == [later.job_id]


def test_a_retry_is_a_new_rq_job_with_the_same_jobadapter_id(adapter: RQAdapter) -> None:
    from jobadapter.execution import execute

    job = Flaky.perform_later()
    executed = execute(job.to_envelope().encode(), adapter)
    assert executed.outcome == "retried"
    retry_id = f"{job.job_id}-retry-1"
    assert adapter.status(retry_id) == "scheduled"
    assert adapter.status(job.job_id) == "scheduled"
    retried = RQJob.fetch(retry_id, connection=adapter.connection, serializer=JSONSerializer)
    assert retried.args[0]["job_id"] == job.job_id
    assert retried.args[0]["executions"] == 1


def test_redis_down_raises_enqueue_error_quickly(redis: Redis) -> None:
    config.configure(url="rq+redis://127.0.0.1:6399/0?connect_timeout=0.5")
    started = time.monotonic()
    with pytest.raises(EnqueueError, match="Redis refused") as raised:
        Greet.perform_later("nobody")
    assert time.monotonic() - started < 5
    assert raised.value.__cause__ is not None
    with pytest.raises(EnqueueError, match="Redis refused a batch of 2 jobs"):
        perform_all_later([Greet("a"), Greet("b")])
    assert time.monotonic() - started < 10


def test_bad_urls_and_options_are_named(url: str) -> None:
    with pytest.raises(ConfigurationError, match="rq URLs look like rq\\+redis://"):
        config.configure(url="rq+amqp://127.0.0.1")
    with pytest.raises(ConfigurationError, match="abandoned_retries must be a number"):
        config.configure(url=f"{url}?abandoned_retries=many")
    config.configure(url=url)
    with pytest.raises(ConfigurationError, match="does not know adapter_options"):
        Greet.set(adapter_options={"expires": 5}).perform_later("x")


def _burst_worker(url: str, queue_name: str) -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobadapter.cli",
            "worker",
            "--url",
            url,
            "--app",
            "jobadapter",
            "--queues",
            queue_name,
            "--burst",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_planted_jobs_are_refused_never_imported_and_recorded(
    redis: Redis, adapter: RQAdapter, url: str, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    queue = Queue("planted", connection=redis, serializer=JSONSerializer)
    foreign = queue.enqueue("os.system", f"touch {marker}")
    document = Greet("x").to_envelope().to_document()
    with_callback = queue.enqueue(ENTRY_POINT, document, on_success=Callback("os.system"))
    with_webhook = queue.enqueue(
        ENTRY_POINT, document, webhooks=[Webhook("http://127.0.0.1:9/leak", job_status="failed")]
    )
    # Bytes in pickle's framing, written by hand: the worker must not even try to unpickle them.
    not_json = queue.enqueue(ENTRY_POINT, document)
    redis.hset(not_json.key, "data", b"\x80\x05\x95\x10\x00posix\x94system")
    _burst_worker(url, "planted")
    assert not marker.exists()
    failed = FailedJobRegistry("planted", connection=redis, serializer=JSONSerializer)
    assert set(failed.get_job_ids()) == {foreign.id, with_callback.id, with_webhook.id, not_json.id}
    reasons = [reason for _, reason in adapter.failed()]
    assert any("refused: the RQ job calls 'os.system'" in reason for reason in reasons)
    assert any("names callbacks ['os.system']" in reason for reason in reasons)
    assert any("carries webhooks" in reason for reason in reasons)
    assert any("cannot be decoded as JSON" in reason for reason in reasons)


def test_what_a_failure_leaves_expires_after_the_failure_ttl(redis: Redis, url: str) -> None:
    """The failed store is kept on purpose, but not forever: the job hash, its failed-registry
    entry and its result stream (which RQ leaves without expiry when a job names no
    ``failure_ttl``) expire after the URL's ``failure_ttl``, for a job that raised, a planted job
    the worker refused, and an id without a hash; the registry's sorted set with its last entry."""
    adapter = config.configure(url=f"{url}?failure_ttl=120")
    assert isinstance(adapter, RQAdapter) and adapter.failure_ttl == 120
    raised = Greet.set(queue="expiring").perform_later("unknown to the worker")  # UnknownJobError
    queue = Queue("expiring", connection=redis, serializer=JSONSerializer)
    planted = queue.enqueue("os.system", "true")  # names no failure_ttl
    redis.rpush(queue.key, "no-such-hash")
    _burst_worker(f"{url}?failure_ttl=120", "expiring")
    failed = FailedJobRegistry(queue=queue)
    ids = [raised.job_id, planted.id, "no-such-hash"]
    assert sorted(failed.get_job_ids()) == sorted(ids)
    now = time.time()
    for job_id in ids:
        assert 100 < redis.ttl(RQJob.key_for(job_id)) <= 120, job_id
        expiry = redis.zscore(failed.key, job_id)
        assert expiry is not None and now + 100 < expiry <= now + 121, job_id
    assert 100 < redis.ttl(failed.key) <= 121  # the registry itself goes with its last entry
    for job_id in (raised.job_id, planted.id):  # the ones RQ ran its failure handling for
        assert redis.xlen(Result.get_key(job_id)) == 1
        assert 100 < redis.ttl(Result.get_key(job_id)) <= 120, job_id
    with pytest.raises(ConfigurationError, match="failure_ttl must be 1 second or more"):
        config.configure(url=f"{url}?failure_ttl=0")


class HorseJob(Job):
    job_name = "horse_jobs.HorseJob"
    queue_as = "horse"

    def perform(self) -> None: ...


def test_the_work_horse_log_lines_reach_the_worker_output(
    adapter: RQAdapter, url: str, tmp_path: Path
) -> None:
    """RQ runs each job in a forked work horse, where the worker's log listener thread does not
    exist: the horse's "Performing"/"Performed" lines must still be written."""
    (tmp_path / "horse_jobs.py").write_text(
        "from jobadapter import Job\n\n\nclass HorseJob(Job):\n"
        "    job_name = 'horse_jobs.HorseJob'\n\n    def perform(self) -> None: ...\n"
    )
    job = HorseJob.perform_later()
    arguments = ["--url", url, "--app", "horse_jobs", "--queues", "horse", "--burst"]
    completed = subprocess.run(
        [sys.executable, "-m", "jobadapter.cli", "worker", *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert completed.returncode == 0, completed.stderr
    assert f"Performing HorseJob (Job ID: {job.job_id}) from RQ(horse) enqueued at " in completed.stderr
    assert re.search(
        rf"Performed HorseJob \(Job ID: {job.job_id}\) from RQ\(horse\) in \d+\.\d\dms", completed.stderr
    )


def test_abandoned_jobs_go_back_a_bounded_number_of_times(adapter: RQAdapter) -> None:
    job = Greet.perform_later("interrupted")
    queue = adapter.queue("greetings")
    registry = StartedJobRegistry(queue=queue)

    def worker_dies_running_it() -> None:
        adapter.connection.lrem(queue.key, 0, job.job_id)
        adapter.connection.zadd(registry.key, {f"{job.job_id}:gone": time.time() + 60})

    worker_dies_running_it()
    assert requeue_abandoned(queue, limit=1) == 1
    assert queue.job_ids == [job.job_id]
    worker_dies_running_it()
    assert requeue_abandoned(queue, limit=1, failure_ttl=300) == 0
    assert queue.job_ids == []
    assert adapter.status(job.job_id) == "failed"
    assert 280 < adapter.connection.ttl(RQJob.key_for(job.job_id)) <= 300
    assert 280 < adapter.connection.ttl(FailedJobRegistry(queue=queue).key) <= 301
    (reason,) = [reason for _, reason in adapter.failed()]
    assert "abandoned: its worker died 2 times" in reason


def test_purge_deletes_every_band_of_the_named_queues(adapter: RQAdapter) -> None:
    Greet.set(queue="doomed", priority=3).perform_later("a")
    Greet.set(queue="doomed").perform_later("b")
    Greet.set(queue="kept").perform_later("c")
    adapter.purge(["doomed"])
    sizes = adapter.queue_sizes()
    assert sizes.get("doomed", 0) == 0 and sizes.get("doomed:p3", 0) == 0
    assert sizes["kept"] == 1


def test_purge_leaves_nothing_of_the_queue_but_its_failed_jobs(adapter: RQAdapter, redis: Redis) -> None:
    """A conformance run purges its queues at the end: no job, registry or result of theirs stays
    but the failed store's entries (which RQ expires after its failure TTL)."""
    finished = Greet.set(queue="spent").perform_later("done")
    later = Greet.set(queue="spent", wait=3600).perform_later("later")
    failed = Greet.set(queue="spent", priority=2).perform_later("failed")
    queue = Queue("spent", connection=redis, serializer=JSONSerializer)
    band = Queue(band_queue_name("spent", 2), connection=redis, serializer=JSONSerializer)
    spent = RQJob.fetch(finished.job_id, connection=redis, serializer=JSONSerializer)
    queue.remove(spent)
    FinishedJobRegistry(queue=queue).add(spent, ttl=-1)  # as a worker leaves a finished job
    broken = RQJob.fetch(failed.job_id, connection=redis, serializer=JSONSerializer)
    band.remove(broken)
    FailedJobRegistry(queue=band).add(broken, ttl=-1, exc_string="Doomed: no")
    adapter.purge(["spent"])
    left = sorted(key.decode() for key in redis.keys("*spent*"))
    assert left == [FailedJobRegistry(queue=band).key]
    assert not redis.exists(RQJob.key_for(finished.job_id), RQJob.key_for(later.job_id))
    assert redis.exists(RQJob.key_for(failed.job_id))
