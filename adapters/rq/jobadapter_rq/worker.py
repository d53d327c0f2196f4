"""The RQ side of a jobadapter worker: the one entry point RQ calls, and the worker class.

Every jobadapter job is an RQ job whose callable is `perform` (this module's
``ENTRY_POINT``) and whose single argument is the envelope. The worker refuses
any other callable *before* RQ resolves it, so a job planted in Redis naming
``os.system`` is failed with a reason and never imported or called.

`JobAdapterWorker` is RQ's forking worker with these changes:

- it fetches through `jobadapter_rq.fetch` (a processing list per worker)
  instead of BLPOP, so a worker killed at any instant loses no job;
- its maintenance gives back what dead workers held (`jobadapter_rq.recovery`);
- it waits out a Redis outage of any length instead of quitting, and logs it
  once (`jobadapter_rq.outage`);
- its scheduler wakes idle workers when it moves delayed jobs
  (`jobadapter_rq.scheduler`);
- it fails ids RQ cannot read (no hash, no data, garbage fields) with a reason
  instead of dropping them or crashing (`jobadapter_rq.failures`).
"""

from __future__ import annotations

import inspect
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

from redis import Redis
from redis.client import Pipeline
from rq import Queue, Worker, get_current_job
from rq.defaults import DEFAULT_FAILURE_TTL, DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.exceptions import StopRequested
from rq.executions import Execution
from rq.job import JOB_ID_PATTERN, JobStatus
from rq.job import Job as RQJob
from rq.registry import FailedJobRegistry
from rq.utils import now
from rq.worker import WorkerStatus

from jobadapter.execution import execute
from jobadapter.worker_logging import announce_ready
from jobadapter_rq.failures import (
    MAX_DATA_BYTES,
    expire_with_last_entry,
    inflate,
    record_reason,
    record_unreadable,
)
from jobadapter_rq.fetch import WAIT_SECONDS, Fetcher, entry, give_back_dead
from jobadapter_rq.outage import LONGEST_PAUSE, UNREACHABLE, Outage
from jobadapter_rq.recovery import give_back_started, give_back_taken, requeue_abandoned
from jobadapter_rq.scheduler import WakingScheduler

if TYPE_CHECKING:
    from jobadapter_rq.adapter import RQAdapter

ENTRY_POINT = "jobadapter_rq.worker.perform"
HEARTBEAT_SECONDS = 30.0
SCHEDULER_STOP_PATIENCE = 10.0
"""Seconds `JobAdapterWorker.stop_scheduler` keeps asking the scheduler process to stop
before it kills it."""
"""How often an idle worker renews its registration (RQ's expires after 480 s)."""

EXECUTION_PASSED = "execution" in inspect.signature(Worker.monitor_work_horse).parameters
"""RQ 3 hands a job's `Execution` from call to call (``monitor_work_horse``,
``handle_job_failure``, ``maintain_heartbeats``); RQ 2 keeps it in ``worker.execution``.
`JobAdapterWorker` takes it the RQ 3 way and passes it on in whichever way the installed RQ
expects, so one worker runs on both."""

_adapter: RQAdapter | None = None
_T = TypeVar("_T")


def serve(adapter: RQAdapter) -> None:
    """Make ``adapter`` the one this process's jobs retry through (set before workers start)."""
    global _adapter
    _adapter = adapter


def perform(envelope: dict[str, Any] | str) -> None:
    """What RQ calls for every jobadapter job: run the envelope through the core."""
    if _adapter is None:
        raise RuntimeError("jobadapter_rq.worker.perform runs only inside `jobadapter worker`")
    current = get_current_job()
    execute(envelope, _adapter, None if current is None else current.id)


_CALLBACKS = ("_success_callback_name", "_failure_callback_name", "_stopped_callback_name")
"""RQ imports and calls these by name; jobadapter never sets them, so a job carrying one was planted."""


def refusal(job: RQJob) -> str | None:
    """Why ``job`` must not run here, or None. Reads names only, never resolves them."""
    try:
        name = job.func_name
    except Exception as error:
        cause = error.__cause__ or error
        pickled = "; it looks pickled (RQ's default serializer), and is never unpickled here"
        hint = pickled if bytes(job.data[:1]) == b"\x80" else ""
        return f"refused: the RQ job's data cannot be decoded as JSON ({type(cause).__name__}: {cause}){hint}"
    if name != ENTRY_POINT:
        return f"refused: the RQ job calls {name!r}, not {ENTRY_POINT}; it was neither imported nor called"
    planted = [getattr(job, attribute) for attribute in _CALLBACKS if getattr(job, attribute, None)]
    if planted:
        return f"refused: the RQ job names callbacks {planted!r}; they were neither imported nor called"
    if job.webhooks:
        return "refused: the RQ job carries webhooks, which jobadapter never sets; none was sent"
    return None


def disarm(job: RQJob) -> None:
    """Strip what RQ would act on by itself from a refused job: callbacks, webhooks, RQ retries.

    An undecodable job also gets a placeholder callable name, because RQ's
    bookkeeping reads it (for the process title) and would crash the worker;
    the stored data stay as they were, for whoever inspects the failure.
    """
    try:
        job.func_name  # noqa: B018 (decodes the data, or raises)
    except Exception:
        job._func_name, job._instance, job._args, job._kwargs = "<undecodable>", None, (), {}
    for attribute in _CALLBACKS:
        setattr(job, attribute, None)
    job.webhooks = []
    job.retries_left = None


def _unreadable(job_id: str, queue: Queue, fields: dict[Any, Any]) -> str | None:
    """Why RQ could not even restore this job hash (it would drop or inflate it), or None."""
    where = f"the RQ job hash of id {job_id!r} on queue {queue.name!r}"
    if not fields:
        return f"refused: {where} does not exist (expired or deleted)"
    data = fields.get(b"data")
    if data is None:
        return f"refused: {where} has no 'data' field"
    if inflate(data) is None:
        return f"refused: the data of {where} inflates to more than {MAX_DATA_BYTES} bytes; it was not read"
    return None


def _fields_shown(fields: dict[Any, Any]) -> str:
    """A job hash's fields but its data, shortened: where the field RQ choked on shows."""
    shown = [
        f"{bytes(name).decode(errors='replace')}={bytes(value).decode(errors='replace')[:40]!r}"
        for name, value in sorted(fields.items())
        if name != b"data"
    ]
    return ", ".join(shown)


_stop_before_start = False
"""Set by a stop signal that came before the RQ worker installed its own handlers."""


def stop_before_start(signum: int, frame: FrameType | None) -> None:
    """The SIGINT/SIGTERM handler of a worker process until its RQ worker runs (see pool.py):
    remembered, so the worker stops as soon as it starts, or while it waits for Redis."""
    global _stop_before_start
    _stop_before_start = True


class JobAdapterWorker(Worker):
    """RQ's forking worker, with a loss-free fetch, the entry-point check, the abandoned-job
    sweep, and patience with Redis outages."""

    abandoned_retries = 3
    abandoned_check_interval = 5
    failure_ttl = DEFAULT_FAILURE_TTL
    """Seconds a job this worker fails stays in the failed store (the adapter's ``failure_ttl``)."""
    announces_ready = True
    """Whether this worker logs "ready" once it listens (a pool's workers leave it to the pool)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("maintenance_interval", self.abandoned_check_interval)
        self._horse_died = False
        starting = Outage(logging.getLogger("rq.worker"), "Worker starting")
        while True:  # RQ's constructor names the connection in Redis: wait for a Redis that is down
            try:
                super().__init__(*args, **kwargs)
                break
            except UNREACHABLE as error:
                if _stop_before_start:
                    raise SystemExit(0) from error
                starting.down(error)
                starting.pause()
        starting.up()
        self.outage = Outage(self.log, f"Worker {self.name}")
        self.fetcher = Fetcher(self.connection, self.name, [queue.key for queue in self.queues])
        self._queues_by_key = {queue.key.encode(): queue for queue in self.queues}
        self._taken: bytes | None = None
        """The processing-list entry of the job this worker took and has not started yet."""
        self._last_beat = 0.0

    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        super().bootstrap(*args, **kwargs)
        if self.announces_ready:
            announce_ready("RQ")

    def _set_connection(self, connection: Redis) -> Redis:
        """RQ raises the socket timeout above its BLPOP's 405 s; this worker blocks for at most
        ``WAIT_SECONDS``, so the adapter's short timeout stays and a hung Redis shows quickly."""
        kwargs = connection.connection_pool.connection_kwargs
        if kwargs.get("socket_timeout") is None or kwargs["socket_timeout"] < WAIT_SECONDS + 2:
            kwargs["socket_timeout"] = WAIT_SECONDS + 2
        return connection

    def _install_signal_handlers(self) -> None:
        super()._install_signal_handlers()
        if _stop_before_start:
            self._shutdown_requested_date = now()
            self._stop_requested = True

    def _start_scheduler(
        self,
        burst: bool = False,
        logging_level: str | None = "INFO",
        date_format: str = DEFAULT_LOGGING_DATE_FORMAT,
        log_format: str = DEFAULT_LOGGING_FORMAT,
    ) -> None:
        """RQ's scheduler, as RQ starts it (one per queue among all workers, by lock; in a
        process of its own, or one pass in burst mode), but one that wakes idle workers."""
        scheduler = WakingScheduler(
            self.queues,
            connection=self.connection,
            logging_level=logging_level if logging_level is not None else self.log.level,
            date_format=date_format,
            log_format=log_format,
            serializer=self.serializer,
        )
        self.scheduler = scheduler
        scheduler.acquire_locks()
        if not scheduler.acquired_locks:
            return
        if not burst:
            scheduler.start()
            return
        try:
            scheduler.register_birth()
            scheduler.enqueue_scheduled_jobs()
        finally:
            scheduler.release_locks()
            scheduler.register_death()

    # -- fetching ----------------------------------------------------------------------------

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[RQJob, Queue] | None:
        """The next job, most urgent band first; None in burst mode once every queue is empty."""
        self.set_state(WorkerStatus.IDLE)
        self.procline("Listening on " + ",".join(self.queue_names()))
        idle_since = time.monotonic()
        while True:
            try:
                if time.monotonic() - self._last_beat > HEARTBEAT_SECONDS:
                    super().heartbeat()
                    self._last_beat = time.monotonic()
                if self.should_run_maintenance_tasks:
                    self.run_maintenance_tasks()
                taken = self.fetcher.take()
                self.outage.up()
                if taken is not None:
                    found = self._load(*taken)
                    if found is not None:
                        return found
                    continue
                if timeout is None:
                    return None
                if max_idle_time is not None and time.monotonic() - idle_since >= max_idle_time:
                    return None
                self.fetcher.wait()
            except UNREACHABLE as error:
                self.outage.down(error)
                self.outage.pause()

    def _load(self, queue_key: bytes, job_id: bytes) -> tuple[RQJob, Queue] | None:
        """The taken job, or None when RQ cannot read it: then it is failed with the reason."""
        queue = self._queues_by_key[queue_key]
        self._taken = entry(queue_key, job_id)
        job, reason = self._restore(job_id.decode(errors="replace"), queue)
        if job is not None:
            job.origin = queue.name  # where it was taken from, whatever the hash claims
            self.log.info("Worker %s: %s: %s (%s)", self.name, queue.name, job.description, job.id)
            return job, queue
        self.log.error("Worker %s: %s", self.name, reason)
        taken = (self.fetcher.processing_key, self._taken)
        self._through_outage(
            lambda: record_unreadable(self.connection, queue, job_id, reason, taken, self.failure_ttl)
        )
        self._taken = None
        return None

    def _restore(self, job_id: str, queue: Queue) -> tuple[RQJob | None, str]:
        """The job RQ reads from the hash of ``job_id``, or None and why it cannot."""
        if not JOB_ID_PATTERN.fullmatch(job_id):
            return None, f"refused: {job_id!r} on queue {queue.name!r} is not an RQ job id"
        fields = self._through_outage(lambda: self.connection.hgetall(self.job_class.key_for(job_id)))
        reason = _unreadable(job_id, queue, fields)
        if reason is not None:
            return None, reason
        job = self.job_class(job_id, connection=self.connection, serializer=self.serializer)
        try:
            job.restore(fields)
        except Exception as error:
            shown = f"{type(error).__name__}: {error}"
            return None, f"refused: RQ cannot read the job hash of id {job_id!r} ({shown}); its fields: " + (
                _fields_shown(fields)
            )
        return job, ""

    def prepare_execution(self, job: RQJob) -> Execution:
        """RQ's own (the execution in the started registry, the worker busy), plus: the job
        leaves the processing list in the same transaction, so it is always in one of the two."""
        with self.connection.pipeline() as pipeline:
            self.execution = Execution.create(
                job, self.get_heartbeat_ttl(job), pipeline=pipeline, worker_name=self.name
            )
            self.set_state(WorkerStatus.BUSY, pipeline=pipeline)
            if self._taken is not None:
                pipeline.lrem(self.fetcher.processing_key, 1, self._taken)  # type: ignore[arg-type]
            pipeline.execute()
        self._taken = None
        return self.execution

    # -- running -----------------------------------------------------------------------------

    def execute_job(self, job: RQJob, queue: Queue) -> None:
        """Refuse a foreign job here, in the parent, before a work horse is forked for it."""
        reason = refusal(job)
        if reason is None:
            execution = self._through_outage(lambda: self.prepare_execution(job))
            self.fork_work_horse(job, queue)
            self.monitor_work_horse(job, queue, execution)
        else:
            self.log.error("Worker %s: %s (RQ job %s)", self.name, reason, job.id)
            disarm(job)
            execution = self._through_outage(lambda: self.prepare_execution(job))
            self._through_outage(lambda: self._fail(job, queue, execution, reason))
        self.set_state(WorkerStatus.IDLE)

    def _fail(self, job: RQJob, queue: Queue, execution: Execution, reason: str) -> None:
        self.prepare_job_execution(job, remove_from_intermediate_queue=False)
        job._status = JobStatus.FAILED
        self.handle_job_failure(
            job=job,
            queue=queue,
            started_job_registry=queue.started_job_registry,
            exc_string=reason,
            execution=execution,
        )

    def monitor_work_horse(self, job: RQJob, queue: Queue, execution: Execution) -> None:
        """RQ's, except that a horse ended during an outage is settled once Redis is back
        (RQ would quit on the error, leaving the job started)."""
        try:
            if EXECUTION_PASSED:
                super().monitor_work_horse(job, queue, execution)
            else:
                super().monitor_work_horse(job, queue)  # type: ignore[call-arg]
        except UNREACHABLE as error:
            self.outage.down(error)
            self._through_outage(lambda: self._settle(job, queue, execution))

    def handle_work_horse_killed(self, job: RQJob, retpid: int, ret_val: int, rusage: Any) -> None:
        """RQ's hook for a horse that ended without recording the job's outcome (SIGKILL, the
        OOM killer, a Redis outage that cut its bookkeeping). RQ fails the job next; here it is
        settled like a dead worker's job instead (`_settle`)."""
        super().handle_work_horse_killed(job, retpid, ret_val, rusage)
        self._horse_died = True

    def handle_job_failure(
        self,
        job: RQJob,
        queue: Queue,
        started_job_registry: Any = None,
        exc_string: str = "",
        execution: Execution | None = None,
    ) -> None:
        """RQ's, keeping the error's reason beside the job; a horse that died is `_settle`d.
        ``execution`` comes from RQ 3; RQ 2 reads ``self.execution``.

        A job that names no ``failure_ttl`` (enqueued elsewhere, or planted) gets the adapter's:
        RQ would keep its result stream forever. The failed registry then expires with its last
        entry (`expire_with_last_entry`)."""
        if execution is None:
            execution = self.execution
        if job.failure_ttl is None:
            job.failure_ttl = self.failure_ttl
        if self._horse_died:
            self._horse_died = False
            self._settle(job, queue, execution)
            return
        error = sys.exc_info()[1]  # RQ calls this inside the except clause around the job
        if error is not None:
            with suppress(*UNREACHABLE):
                record_reason(job, error)
        if EXECUTION_PASSED:
            super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)
        else:
            super().handle_job_failure(job, queue, started_job_registry, exc_string)
        with suppress(*UNREACHABLE):
            expire_with_last_entry(self.connection, FailedJobRegistry(queue=queue).key)

    def _settle(self, job: RQJob, queue: Queue, execution: Execution | None) -> None:
        """A job whose horse ended without recording the outcome may not have run at all (the
        horse needs Redis to start it), or may have run: it goes back to the front of its queue,
        as a dead worker's would, counted against ``abandoned_retries`` (then failed with that
        reason). At-least-once: it may run twice; it is never failed for the broker's outage."""
        if job.get_status() in (JobStatus.FINISHED, JobStatus.FAILED):
            return
        moved = None
        if execution is not None:
            moved = give_back_started(
                queue, execution.composite_key, self.abandoned_retries, self.failure_ttl
            )
            self._forget(job, execution)
        if not moved:  # not in the started registry, or its hash is gone: enqueue it again as it is
            queue.enqueue_job(job, at_front=True)
        outcome = "failed it, given back too often" if moved and moved < 0 else "gave it back to its queue"
        self.log.warning(
            "Worker %s: the work horse of job %s ended without recording the outcome; %s",
            self.name,
            job.id,
            outcome,
        )

    def _forget(self, job: RQJob, execution: Execution) -> None:
        """Drop the record of an execution that was settled rather than ended by RQ: its hash,
        its place in the job's execution registry and (RQ 3) the worker's execution index."""
        with self.connection.pipeline() as pipeline:
            execution.delete(job=job, pipeline=pipeline)
            pipeline.execute()
        self.execution = None

    # -- maintenance and bookkeeping ------------------------------------------------------------

    def run_maintenance_tasks(self) -> None:
        self._through_outage(self._maintain)

    def _maintain(self) -> None:
        give_back_taken(self.connection)
        for queue in self.queues:
            requeue_abandoned(queue, self.abandoned_retries, self.failure_ttl)
        super().run_maintenance_tasks()

    def check_for_suspension(self, burst: bool) -> None:
        self._through_outage(lambda: super(JobAdapterWorker, self).check_for_suspension(burst))

    def register_birth(self) -> None:
        self._through_outage(super().register_birth)

    def subscribe(self) -> None:
        self._through_outage(super().subscribe)

    def set_state(self, state: str, pipeline: Pipeline | None = None) -> None:
        """Best effort outside a transaction: the state shown in ``rq info`` may lag an outage."""
        if pipeline is not None:
            super().set_state(state, pipeline)
            return
        try:
            super().set_state(state)
        except UNREACHABLE as error:
            self.outage.down(error)

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        """Best effort outside a transaction: a heartbeat missed in an outage is harmless."""
        if pipeline is not None:
            super().heartbeat(timeout, pipeline)
            return
        try:
            super().heartbeat(timeout)
        except UNREACHABLE as error:
            self.outage.down(error)

    def maintain_heartbeats(self, job: RQJob, execution: Execution | None = None) -> None:
        """Best effort: a heartbeat missed in an outage is harmless (``execution``: RQ 3 only)."""
        try:
            if EXECUTION_PASSED:
                super().maintain_heartbeats(job, execution)  # type: ignore[arg-type]
            else:
                super().maintain_heartbeats(job)  # type: ignore[call-arg]
        except UNREACHABLE as error:
            self.outage.down(error)

    def set_current_job_working_time(
        self, current_job_working_time: float, pipeline: Pipeline | None = None
    ) -> None:
        """Best effort, as the heartbeat (RQ 2 only: RQ 3 no longer stores the working time)."""
        try:
            super().set_current_job_working_time(current_job_working_time, pipeline)  # type: ignore[misc]
        except UNREACHABLE as error:
            self.outage.down(error)

    def set_shutdown_requested_date(self) -> None:
        """Best effort: called from the stop signal's handler, which must not raise in an outage."""
        try:
            super().set_shutdown_requested_date()
        except UNREACHABLE as error:
            self.outage.down(error)

    def _pubsub_exception_handler(self, exc: Exception, pubsub: Any, pubsub_thread: Any) -> None:
        """RQ logs every failed reconnection of its command channel; this logs the outage once."""
        if not isinstance(exc, UNREACHABLE):
            super()._pubsub_exception_handler(exc, pubsub, pubsub_thread)
            return
        self.outage.down(exc)
        time.sleep(LONGEST_PAUSE)

    def teardown(self) -> None:
        """RQ's, plus giving back a job taken but not started; best effort while Redis is down,
        so a stop during an outage still ends the process. The scheduler process is stopped
        first, as it needs no Redis (RQ 2 stopped it from the stop signal's handler; RQ 3 only
        here, and an exit would wait for it forever)."""
        if not self.is_horse:
            self.stop_scheduler()
        try:
            if not self.is_horse:
                give_back_dead(self.connection, lambda name: name != self.name)
            super().teardown()
        except UNREACHABLE as error:
            self.log.warning(
                "Worker %s: stopped without unregistering: Redis is unreachable (%s)", self.name, error
            )

    def stop_scheduler(self) -> None:
        """Stop the scheduler process, once, and for sure. RQ sends one SIGTERM and joins for
        ever; a scheduler forked a moment before runs the worker's inherited handler until it
        installs its own, so that one signal can be lost and the worker never exits (a CI run
        saw a pool child hang so). The signal is sent again until the scheduler ends, and after
        `SCHEDULER_STOP_PATIENCE` seconds it is killed (its lock expires by itself)."""
        process = self.scheduler._process if self.scheduler is not None else None
        if process is None or process.pid is None or not process.is_alive():
            return
        deadline = time.monotonic() + SCHEDULER_STOP_PATIENCE
        while process.is_alive() and time.monotonic() < deadline:
            with suppress(OSError):
                os.kill(process.pid, signal.SIGTERM)
            process.join(0.5)
        if process.is_alive():
            self.log.warning("Worker %s: the scheduler process did not stop; killing it", self.name)
            with suppress(OSError):
                os.kill(process.pid, signal.SIGKILL)
            process.join()

    def _through_outage(self, action: Callable[[], _T]) -> _T:
        """``action()``, retried until Redis answers; a stop requested meanwhile ends the wait."""
        while True:
            try:
                result = action()
            except UNREACHABLE as error:
                self.outage.down(error)
                if self._stop_requested:
                    raise StopRequested from error
                self.outage.pause()
                continue
            self.outage.up()
            return result
