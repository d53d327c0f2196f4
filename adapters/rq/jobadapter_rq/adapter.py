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
| worker died | jobs it had taken or started go back to their queue (``abandoned_retries``), see
  ``fetch.py`` and ``recovery.py`` |

URL options: ``abandoned_retries`` (default 3), ``abandoned_check_interval`` in
seconds (default 5), ``connect_timeout`` and ``socket_timeout`` in seconds
(defaults 2 and 5, which bound how long ``perform_later`` may block on a Redis
that is down). ``set(adapter_options=...)`` accepts RQ's ``timeout``, ``ttl``,
``result_ttl`` and ``failure_ttl``.
"""

from __future__ import annotations

import signal
from collections.abc import Collection, Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, ClassVar

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import RedisError
from rq import Queue
from rq.defaults import DEFAULT_FAILURE_TTL
from rq.job import Job as RQJob
from rq.job import JobStatus
from rq.registry import (
    CanceledJobRegistry,
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.results import Result
from rq.serializers import JSONSerializer
from rq.worker import Worker

from jobadapter import registry
from jobadapter.adapters.base import (
    JOB_CAPABILITIES,
    OPERATION_CAPABILITIES,
    AdapterURL,
    Capability,
    EnqueueRequest,
    option_number,
)
from jobadapter.envelope import Envelope, from_document
from jobadapter.errors import ConfigurationError, EnqueueError, UnknownJobError
from jobadapter.faults.hostile import HostileMessage
from jobadapter.operations import JobError
from jobadapter_rq import worker as rq_worker
from jobadapter_rq.failures import expire_with_last_entry, failed_entries
from jobadapter_rq.fetch import push_wake, wake_key
from jobadapter_rq.hostile import native_kinds
from jobadapter_rq.names import band_queue_name, base_queue_name, consumed_queue_names, retry_id
from jobadapter_rq.operations import RQOperations
from jobadapter_rq.pool import JobAdapterPool

if TYPE_CHECKING:
    from jobadapter.migrate.ledger import Ledger

_OUR_OPTIONS = (
    "abandoned_retries",
    "abandoned_check_interval",
    "connect_timeout",
    "socket_timeout",
    "failure_ttl",
)


class RQAdapter(RQOperations):
    """Publishes envelopes as native RQ jobs and runs RQ's worker on them.

    One Redis connection per adapter, with short timeouts so a Redis that is
    down turns ``perform_later`` into an ``EnqueueError`` instead of a hang.
    """

    name: ClassVar[str] = "RQ"
    capabilities: ClassVar[frozenset[Capability]] = JOB_CAPABILITIES | OPERATION_CAPABILITIES
    notes: ClassVar[Mapping[str, str]] = {
        Capability.EXTERNAL_WORKER.value: "RQ's forking Worker (WorkerPool for --concurrency > 1), JSON only",
        Capability.DELAYED.value: "RQ's ScheduledJobRegistry + the worker's scheduler (seconds, rounded up)",
        Capability.PRIORITY.value: "ten RQ queues per queue (name, name:p1 … name:p9), listed by band",
        Capability.BULK.value: "the whole batch in one Redis transaction (MULTI/EXEC)",
        Capability.FAILED_STORE.value: "RQ's FailedJobRegistry, with the traceback or the refusal reason",
        Capability.AT_LEAST_ONCE.value: "a dead worker's taken and started jobs go back (started: 3 times)",
        Capability.GRACEFUL_SHUTDOWN.value: "RQ's warm shutdown",
        "test_retry_on_attempt_counts_and_stable_job_id": "each retry: a scheduled RQ job <job_id>-retry-<n>",
        Capability.INSPECT.value: (
            "natively from RQ's keys: the bands' queue lists, scheduled, started and failed registries, "
            "the workers' processing lists; finished jobs for RQ's result_ttl (500 s by default)"
        ),
        Capability.RETRY.value: "the failed RQ job back on its queue (same RQ id), in one Lua script",
        Capability.DISCARD.value: (
            "the id leaves its queue list or registry and its hash is deleted, in one Lua script"
        ),
        Capability.RUN_NOW.value: "the scheduler's own atomic move (Lua) of that one job to its queue",
        Capability.PAUSE.value: (
            "a Redis set of paused queues that the fetch script checks: in effect when pause() returns"
        ),
        Capability.MIGRATE_FROM.value: "listed and deleted natively; running workers from RQ's registry",
        Capability.MIGRATE_TO.value: (
            "one Redis transaction per batch; a failed job is an RQ job in the FailedJobRegistry, "
            "its error in exc_info"
        ),
    }
    accepted_options: ClassVar[frozenset[str]] = frozenset({"timeout", "ttl", "result_ttl", "failure_ttl"})
    forks_per_job: ClassVar[bool] = True
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
        self.failure_ttl = int(
            option_number("rq", "failure_ttl", settings["failure_ttl"], DEFAULT_FAILURE_TTL, whole=True)
        )
        """Seconds a failed job stays in the failed store: its hash, its failed-registry entry and
        its result stream (RQ gives the stream no expiry when a job sets no ``failure_ttl``)."""
        if self.failure_ttl < 1:
            raise ConfigurationError("rq option failure_ttl must be 1 second or more (Redis deletes at 0)")
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
            raise EnqueueError(f"Redis refused a batch of {len(requests)} jobs: {error}", taken=[]) from error
        self.published_batches += 1
        return [request.envelope.job_id for request in requests]

    def enqueue_failed(self, envelopes: Sequence[tuple[Envelope, JobError]]) -> None:
        """Each job as RQ keeps a job that failed: status ``failed``, the error in ``exc_info``
        (where `failures.reason_text` reads it), its id in the band's FailedJobRegistry for
        the adapter's ``failure_ttl``; all in one Redis transaction."""
        now = datetime.now(timezone.utc)
        try:
            with self.connection.pipeline() as pipeline:
                for envelope, error in envelopes:
                    queue, job = self._rq_job(envelope, envelope.job_id, {}, None)
                    job.set_status(JobStatus.FAILED, pipeline=pipeline)
                    job.ended_at = now
                    pipeline.sadd(queue.redis_queues_keys, queue.key)
                    job.save(pipeline=pipeline)
                    pipeline.hset(job.key, "exc_info", _error_text(error))
                    pipeline.expire(job.key, self.failure_ttl)
                    failed_registry = FailedJobRegistry(queue=queue)
                    pipeline.zadd(failed_registry.key, {job.id: now.timestamp() + self.failure_ttl})
                    expire_with_last_entry(pipeline, failed_registry.key)
                pipeline.execute()
        except RedisError as error:
            raise EnqueueError(f"Redis refused {len(envelopes)} failed jobs: {error}") from error

    def migration_ledger(self, move: str) -> Ledger | None:
        """A Redis hash next to the jobs (`jobadapter.migrate.ledger.RedisLedger`)."""
        from jobadapter.migrate.ledger import REDIS_KEY, RedisLedger

        return RedisLedger(self.connection, REDIS_KEY.format(move=move))

    def running_workers(self, queues: Collection[str]) -> list[str]:
        """RQ's worker registry: each live worker lists the RQ queues (bands) it consumes."""
        return sorted(
            worker.name
            for worker in Worker.all(connection=self.connection)
            if any(base_queue_name(name) in queues for name in worker.queue_names())
        )

    def enqueue_payload(self, payload: str, queue_name: str) -> None:
        queue = self.queue(queue_name)
        job = queue.create_job(rq_worker.ENTRY_POINT, args=(payload,), description="raw payload")
        with self.connection.pipeline() as pipeline:
            queue.enqueue_job(job, pipeline=pipeline)
            push_wake(pipeline, queue.key, 1)
            pipeline.execute()

    def hostile_messages(self) -> Sequence[HostileMessage]:
        return native_kinds(self.connection)

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
            failure_ttl=options.get("failure_ttl", self.failure_ttl),
            status=JobStatus.QUEUED if at is None else JobStatus.SCHEDULED,
        )
        return queue, job

    # -- the worker --------------------------------------------------------------------------

    def run_worker(
        self, *, queues: Sequence[str] | None = None, concurrency: int = 1, burst: bool = False
    ) -> None:
        names = consumed_queue_names(list(queues or registry.declared_queues()))
        rq_worker.serve(self)
        worker_class = type(
            "ConfiguredJobAdapterWorker",
            (rq_worker.JobAdapterWorker,),
            {
                "abandoned_retries": self.abandoned_retries,
                "abandoned_check_interval": self.abandoned_check_interval,
                "failure_ttl": self.failure_ttl,
                "announces_ready": concurrency == 1,
            },
        )
        if concurrency == 1:
            # A stop before RQ's handlers are in place (the worker waits for a Redis that is down)
            # still ends the worker cleanly.
            for stop in (signal.SIGINT, signal.SIGTERM):
                signal.signal(stop, rq_worker.stop_before_start)
            worker = worker_class(
                [self.queue(name) for name in names], connection=self.connection, serializer=JSONSerializer
            )
            worker.work(burst=burst, with_scheduler=True)
            return
        pool = JobAdapterPool(
            names,
            connection=self.connection,
            num_workers=concurrency,
            worker_class=worker_class,
            serializer=JSONSerializer,
        )
        pool.start(burst=burst)

    # -- inspection ----------------------------------------------------------------------------

    def purge(self, queue_names: Sequence[str]) -> None:
        """Delete every priority band of these queues: the waiting jobs, and the finished,
        started, scheduled, deferred and canceled ones with their registries and results, so a
        conformance run leaves nothing of its queues behind. Failed jobs stay (the failed store
        keeps them until RQ's failure TTL)."""
        for name in queue_names:
            for rq_name in consumed_queue_names([name]):
                queue = self.queue(rq_name)
                queue.delete(delete_jobs=True)
                self._forget_registries(queue)
                self.connection.delete(wake_key(queue.key), f"rq:workers:{queue.name}")
                self._queues.pop(queue.name, None)

    def _forget_registries(self, queue: Queue) -> None:
        for registry_class in (
            FinishedJobRegistry,
            StartedJobRegistry,
            ScheduledJobRegistry,
            DeferredJobRegistry,
            CanceledJobRegistry,
        ):
            key = registry_class(queue=queue).key
            # A started registry's members are "job_id:execution_id"; RQ's job ids hold no colon.
            members: list[bytes] = self.connection.zrange(key, 0, -1)  # type: ignore[assignment]
            ids = [member.decode().split(":", 1)[0] for member in members]
            with self.connection.pipeline(transaction=False) as pipeline:
                for start in range(0, len(ids), 500):
                    chunk = ids[start : start + 500]
                    pipeline.delete(*(RQJob.key_for(job_id) for job_id in chunk))
                    pipeline.delete(*(Result.get_key(job_id) for job_id in chunk))
                pipeline.delete(key)
                pipeline.execute()

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
        """Every failed RQ job as ``(payload, reason)``, read from the raw hashes: an entry RQ
        cannot decode is listed as text, never raised."""
        return failed_entries(self.connection)

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
            push_wake(self.pipeline, key, len(ids))
        self.pipeline.execute()


def _error_text(error: JobError) -> str:
    """An error as RQ's ``exc_info`` holds it: the error line first, then the traceback."""
    line = f"{error.error_class}: {error.message}" if error.message else error.error_class
    return f"{line}\n{error.traceback}" if error.traceback else line


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
