"""``rq+redis://host:port/db``: jobadapter jobs as native RQ jobs.

| jobadapter | RQ |
|---|---|
| ``perform_later`` | an RQ job on the job's queue; callable ``jobadapter_rq.worker.perform``,
  argument the envelope, description ``job_class(arguments)`` |
| ``wait`` / ``wait_until`` | ``Queue.schedule_job``: RQ's scheduled registry (whole seconds, rounded
  up so nothing runs early), moved to the queue by the worker's scheduler |
| ``perform_all_later`` | every job of the batch in one Redis transaction |
| priority | bands: RQ queues ``name`` (None, or ≤ 0) and ``name:p1`` … ``name:p9``, consumed band by band |
| retry | a new RQ job ``<job_id>-retry-<n>`` scheduled for the retry time, same jobadapter ``job_id`` |
| failure | RQ's ``FailedJobRegistry`` with the traceback |
| worker died | jobs left started by a dead worker go back to their queue (``abandoned_retries``) |

URL options: ``abandoned_retries`` (default 3), ``abandoned_check_interval`` in
seconds (default 5), ``connect_timeout`` and ``socket_timeout`` in seconds
(defaults 2 and 5, which bound how long ``perform_later`` may block on a Redis
that is down). ``set(adapter_options=...)`` accepts RQ's ``timeout``, ``ttl``,
``result_ttl`` and ``failure_ttl``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import RedisError
from rq import Queue
from rq.job import Job as RQJob
from rq.job import JobStatus
from rq.registry import FailedJobRegistry, ScheduledJobRegistry
from rq.serializers import JSONSerializer
from rq.worker_pool import WorkerPool

from jobadapter import registry
from jobadapter.adapters.base import (
    EVERY_CAPABILITY,
    Adapter,
    AdapterURL,
    Capability,
    EnqueueRequest,
    option_number,
)
from jobadapter.envelope import Envelope, from_document
from jobadapter.errors import ConfigurationError, EnqueueError, UnknownJobError
from jobadapter_rq import worker as rq_worker

BANDS = 10
"""Priority bands per queue: band 0 (no priority, or ≤ 0) up to band 9 (priority ≥ 9)."""
_OUR_OPTIONS = ("abandoned_retries", "abandoned_check_interval", "connect_timeout", "socket_timeout")


def band_queue_name(queue_name: str, priority: int | None) -> str:
    """The RQ queue holding ``queue_name`` jobs of ``priority``."""
    band = 0 if priority is None else min(max(priority, 0), BANDS - 1)
    return queue_name if band == 0 else f"{queue_name}:p{band}"


def consumed_queue_names(queue_names: Sequence[str]) -> list[str]:
    """RQ queues a worker listens to, most urgent band first, in the given order within a band."""
    return [band_queue_name(name, band) for band in range(BANDS) for name in queue_names]


def retry_id(job_id: str, executions: int) -> str:
    """The RQ id of the attempt after ``executions`` runs.

    A retry cannot reuse the running RQ job's id: when ``perform`` returns, RQ
    saves that job as finished, over whatever was scheduled under its id.
    """
    return f"{job_id}-retry-{executions}"


class RQAdapter(Adapter):
    """Publishes envelopes as native RQ jobs and runs RQ's worker on them.

    One Redis connection per adapter, with short timeouts so a Redis that is
    down turns ``perform_later`` into an ``EnqueueError`` instead of a hang.
    """

    name: ClassVar[str] = "RQ"
    capabilities: ClassVar[frozenset[Capability]] = EVERY_CAPABILITY
    notes: ClassVar[Mapping[str, str]] = {
        Capability.EXTERNAL_WORKER.value: "RQ's forking Worker (WorkerPool for --concurrency > 1), JSON only",
        Capability.DELAYED.value: "RQ's ScheduledJobRegistry + the worker's scheduler (seconds, rounded up)",
        Capability.PRIORITY.value: "ten RQ queues per queue (name, name:p1 … name:p9), listed by band",
        Capability.BULK.value: "the whole batch in one Redis transaction (MULTI/EXEC)",
        Capability.FAILED_STORE.value: "RQ's FailedJobRegistry, with the traceback or the refusal reason",
        Capability.AT_LEAST_ONCE.value: "a dead worker's started jobs are re-enqueued (3 times by default)",
        Capability.GRACEFUL_SHUTDOWN.value: "RQ's warm shutdown",
        "test_retry_on_attempt_counts_and_stable_job_id": "each retry: a scheduled RQ job <job_id>-retry-<n>",
    }
    accepted_options: ClassVar[frozenset[str]] = frozenset({"timeout", "ttl", "result_ttl", "failure_ttl"})
    backend_packages: ClassVar[tuple[str, ...]] = ("rq", "redis")

    def __init__(self, url: AdapterURL, **options: Any) -> None:
        settings = {name: options.pop(name, url.query.get(name)) for name in _OUR_OPTIONS}
        super().__init__(url, **options)
        if url.transport not in ("redis", "rediss", "unix"):
            raise ConfigurationError(f"rq URLs look like rq+redis://host:6379/0, not {url.redacted!r}")
        self.abandoned_retries = int(
            option_number("rq", "abandoned_retries", settings["abandoned_retries"], 3, whole=True)
        )
        self.abandoned_check_interval = int(
            option_number(
                "rq", "abandoned_check_interval", settings["abandoned_check_interval"], 5, whole=True
            )
        )
        self.connection = Redis.from_url(
            url.target_without(_OUR_OPTIONS),
            socket_connect_timeout=option_number("rq", "connect_timeout", settings["connect_timeout"], 2.0),
            socket_timeout=option_number("rq", "socket_timeout", settings["socket_timeout"], 5.0),
        )
        self._queues: dict[str, Queue] = {}

    def queue(self, rq_name: str) -> Queue:
        """The RQ queue object for an RQ queue name (JSON serializer, never pickle)."""
        found = self._queues.get(rq_name)
        if found is None:
            found = Queue(rq_name, connection=self.connection, serializer=JSONSerializer)
            self._queues[rq_name] = found
        return found

    # -- publishing ------------------------------------------------------------------------

    def enqueue(self, envelope: Envelope, options: Mapping[str, Any]) -> str | None:
        return self._publish_one(envelope, envelope.job_id, options, None)

    def enqueue_at(self, envelope: Envelope, at: datetime, options: Mapping[str, Any]) -> str | None:
        return self._publish_one(envelope, envelope.job_id, options, at)

    def schedule_retry(
        self, envelope: Envelope, at: datetime | None, options: Mapping[str, Any]
    ) -> str | None:
        return self._publish_one(envelope, retry_id(envelope.job_id, envelope.executions), options, at)

    def enqueue_all(self, requests: Sequence[EnqueueRequest]) -> list[str | None]:
        """Every job of the batch, due or delayed, in one Redis transaction."""
        try:
            with self.connection.pipeline() as pipeline:
                transaction = _Transaction(pipeline)
                for request in requests:
                    envelope, at = request.envelope, request.envelope.scheduled_at
                    transaction.add(*self._rq_job(envelope, envelope.job_id, request.options, at), at)
                transaction.execute()
        except RedisError as error:
            raise EnqueueError(f"Redis refused a batch of {len(requests)} jobs: {error}") from error
        return [request.envelope.job_id for request in requests]

    def enqueue_payload(self, payload: str, queue_name: str) -> None:
        queue = self.queue(queue_name)
        job = queue.create_job(rq_worker.ENTRY_POINT, args=(payload,), description="raw payload")
        queue.enqueue_job(job)

    def _publish_one(
        self, envelope: Envelope, rq_id: str, options: Mapping[str, Any], at: datetime | None
    ) -> str:
        try:
            with self.connection.pipeline() as pipeline:
                transaction = _Transaction(pipeline)
                transaction.add(*self._rq_job(envelope, rq_id, options, at), at)
                transaction.execute()
        except RedisError as error:
            raise EnqueueError(f"Redis refused {envelope.job_class} ({envelope.job_id}): {error}") from error
        return rq_id

    def _rq_job(
        self, envelope: Envelope, rq_id: str, options: Mapping[str, Any], at: datetime | None
    ) -> tuple[Queue, RQJob]:
        """The RQ job of ``envelope``, with the RQ queue (priority band) it belongs to."""
        queue = self.queue(band_queue_name(envelope.queue_name, envelope.priority))
        job = queue.create_job(
            rq_worker.ENTRY_POINT,
            args=(envelope.to_document(),),
            job_id=rq_id,
            description=_description(envelope),
            timeout=options.get("timeout"),
            ttl=options.get("ttl"),
            result_ttl=options.get("result_ttl"),
            failure_ttl=options.get("failure_ttl"),
            status=JobStatus.QUEUED if at is None else JobStatus.SCHEDULED,
        )
        return queue, job

    # -- the worker --------------------------------------------------------------------------

    def run_worker(
        self, *, queues: Sequence[str] | None = None, concurrency: int = 1, burst: bool = False
    ) -> None:
        names = consumed_queue_names(list(queues or ["default"]))
        rq_worker.serve(self)
        worker_class = type(
            "ConfiguredJobAdapterWorker",
            (rq_worker.JobAdapterWorker,),
            {
                "abandoned_retries": self.abandoned_retries,
                "abandoned_check_interval": self.abandoned_check_interval,
            },
        )
        if concurrency == 1:
            worker = worker_class(
                [self.queue(name) for name in names], connection=self.connection, serializer=JSONSerializer
            )
            worker.work(burst=burst, with_scheduler=True)
            return
        pool = WorkerPool(
            names,
            connection=self.connection,
            num_workers=concurrency,
            worker_class=worker_class,
            serializer=JSONSerializer,
        )
        pool.start(burst=burst)

    # -- inspection ----------------------------------------------------------------------------

    def purge(self, queue_names: Sequence[str]) -> None:
        """Delete the waiting jobs of every priority band of these queues (failed ones stay)."""
        for name in queue_names:
            for band in range(BANDS):
                queue = self.queue(band_queue_name(name, band))
                queue.delete(delete_jobs=True)
                self._queues.pop(queue.name, None)

    def queue_sizes(self) -> dict[str, int]:
        return {queue.name: queue.count for queue in Queue.all(connection=self.connection)}

    def scheduled(self) -> list[Envelope]:
        found = []
        for queue in Queue.all(connection=self.connection, serializer=JSONSerializer):
            for job in self._jobs(ScheduledJobRegistry(queue=queue).get_job_ids()):
                if job.func_name == rq_worker.ENTRY_POINT and isinstance(job.args[0], dict):
                    found.append(from_document(job.args[0]))
        return found

    def failed(self) -> list[tuple[str, str]]:
        found = []
        for queue in Queue.all(connection=self.connection, serializer=JSONSerializer):
            for job in self._jobs(FailedJobRegistry(queue=queue).get_job_ids()):
                try:
                    argument = job.args[0] if job.args else ""
                    payload = argument if isinstance(argument, str) else json.dumps(argument)
                except Exception:
                    payload = "<undecodable RQ job>"
                result = job.latest_result()
                reason = (result.exc_string if result is not None else None) or job.exc_info or ""
                found.append((payload, reason))
        return found

    def status(self, job_id: str) -> str | None:
        """The RQ status of the job's latest attempt (each retry is its own RQ job, see ``retry_id``)."""
        latest, attempt = job_id, 1
        while self.connection.exists(RQJob.key_for(retry_id(job_id, attempt))):
            latest, attempt = retry_id(job_id, attempt), attempt + 1
        try:
            job = RQJob.fetch(latest, connection=self.connection, serializer=JSONSerializer)
        except Exception:
            return None
        return str(job.get_status().value)

    def _jobs(self, ids: list[str]) -> Iterator[RQJob]:
        for job in RQJob.fetch_many(ids, connection=self.connection, serializer=JSONSerializer):
            if job is not None:
                yield job

    def close(self) -> None:
        super().close()
        self.connection.close()


class _Transaction:
    """RQ jobs written in one Redis transaction (MULTI/EXEC): what ``Queue.enqueue_job`` writes,
    in fewer commands.

    For each job, ``enqueue_job`` registers the queue in a round trip of its
    own, writes the job's status in a command of its own before writing the
    whole job hash (status included), and pushes the id in a command of its
    own. Here the transaction is one round trip, each queue is registered
    once, each job hash is written once, and each queue's ids are pushed in
    order by one RPUSH. RQ's own ``Queue._prepare_for_queue`` still decides
    what a queued job records, and ``test_a_due_job_is_stored_as_rq_stores_it``
    compares the result with what ``enqueue_job`` stores, field by field.
    Delayed jobs go through RQ's ``Queue.schedule_job`` unchanged.
    """

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self._due_ids: dict[str, list[str]] = {}  # RQ queue key → job ids, in enqueue order

    def add(self, queue: Queue, job: RQJob, at: datetime | None) -> None:
        if at is not None:
            queue.schedule_job(job, _whole_second_after(at), pipeline=self.pipeline)
            return
        ids = self._due_ids.get(queue.key)
        if ids is None:
            self.pipeline.sadd(queue.redis_queues_keys, queue.key)
            ids = self._due_ids[queue.key] = []
        queue._prepare_for_queue(job)
        job.save(pipeline=self.pipeline)
        job.cleanup(ttl=job.ttl, pipeline=self.pipeline)
        ids.append(job.id)

    def execute(self) -> None:
        for key, ids in self._due_ids.items():
            self.pipeline.rpush(key, *ids)
        self.pipeline.execute()


def _whole_second_after(at: datetime) -> datetime:
    """RQ's scheduled registry keeps whole seconds (truncated): round up so no job runs early."""
    if at.microsecond == 0:
        return at
    return at.replace(microsecond=0) + timedelta(seconds=1)


def _description(envelope: Envelope) -> str:
    """What RQ's worker log, ``rq info`` and rq-dashboard show: the job's own call.

    Arguments stay out of it for a job class with ``log_arguments = False``.
    """
    try:
        show_arguments = registry.lookup(envelope.job_class).log_arguments
    except UnknownJobError:
        show_arguments = False
    if not show_arguments:
        return f"{envelope.job_class}(…)"
    shown = [repr(value) for value in envelope.arguments]
    shown += [f"{name}={value!r}" for name, value in envelope.keyword_arguments.items()]
    text = f"{envelope.job_class}({', '.join(shown)})"
    return text if len(text) <= 200 else text[:199] + "…"
