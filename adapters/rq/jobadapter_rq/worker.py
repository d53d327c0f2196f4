"""The RQ side of a jobadapter worker: the one entry point RQ calls, and the worker class.

Every jobadapter job is an RQ job whose callable is `perform` (this module's
``ENTRY_POINT``) and whose single argument is the envelope. The worker refuses
any other callable *before* RQ resolves it, so a job planted in Redis naming
``os.system`` is failed with a reason and never imported or called.

The worker also re-enqueues *abandoned* jobs: those left in a started registry
by a worker that died (SIGKILL, OOM, power loss). RQ itself would move them to
the failed registry once their heartbeat expires; jobadapter gives them back
to their queue, at most ``abandoned_retries`` times per job.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from redis import Redis
from rq import Queue, Worker
from rq.executions import Execution
from rq.job import Job as RQJob
from rq.job import JobStatus
from rq.registry import StartedJobRegistry
from rq.worker import WorkerStatus

from jobadapter.execution import execute

if TYPE_CHECKING:
    from jobadapter_rq.adapter import RQAdapter

ENTRY_POINT = "jobadapter_rq.worker.perform"
ABANDONED_COUNT = "jobadapter_abandoned"
"""The ``job.meta`` key counting how often a job was given back after its worker died."""

_adapter: RQAdapter | None = None


def serve(adapter: RQAdapter) -> None:
    """Make ``adapter`` the one this process's jobs retry through (set before workers start)."""
    global _adapter
    _adapter = adapter


def perform(envelope: dict[str, Any] | str) -> None:
    """What RQ calls for every jobadapter job: run the envelope through the core."""
    if _adapter is None:
        raise RuntimeError("jobadapter_rq.worker.perform runs only inside `jobadapter worker`")
    execute(envelope, _adapter)


_CALLBACKS = ("_success_callback_name", "_failure_callback_name", "_stopped_callback_name")
"""RQ imports and calls these by name; jobadapter never sets them, so a job carrying one was planted."""


def refusal(job: RQJob) -> str | None:
    """Why ``job`` must not run here, or None. Reads names only, never resolves them."""
    try:
        name = job.func_name
    except Exception as error:
        cause = error.__cause__ or error
        return f"refused: the RQ job's data cannot be decoded as JSON ({type(cause).__name__}: {cause})"
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


class JobAdapterWorker(Worker):
    """RQ's forking worker, with the entry-point check and the abandoned-job sweep."""

    abandoned_retries = 3
    abandoned_check_interval = 5

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("maintenance_interval", self.abandoned_check_interval)
        super().__init__(*args, **kwargs)

    def execute_job(self, job: RQJob, queue: Queue) -> None:
        """Refuse a foreign job here, in the parent, before a work horse is forked for it."""
        reason = refusal(job)
        if reason is None:
            super().execute_job(job, queue)
            return
        self.log.error("Worker %s: %s (RQ job %s)", self.name, reason, job.id)
        disarm(job)
        self.prepare_execution(job)
        self.prepare_job_execution(job, remove_from_intermediate_queue=len(self.queues) == 1)
        job._status = JobStatus.FAILED
        self.handle_job_failure(
            job=job, queue=queue, started_job_registry=queue.started_job_registry, exc_string=reason
        )
        self.set_state(WorkerStatus.IDLE)

    def run_maintenance_tasks(self) -> None:
        for queue in self.queues:
            requeue_abandoned(queue, self.abandoned_retries)
        super().run_maintenance_tasks()


def requeue_abandoned(queue: Queue, limit: int) -> int:
    """Give back to ``queue`` the jobs its dead workers left started; returns how many.

    A worker counts as dead when its registration expired, when its heartbeat
    for the job expired, or when it ran on this host and its process is gone.
    """
    registry = StartedJobRegistry(queue=queue)
    connection: Redis = queue.connection
    now = datetime.now(timezone.utc).timestamp()
    given_back = 0
    entries: list[tuple[bytes, float]] = connection.zrange(registry.key, 0, -1, withscores=True)  # type: ignore[assignment]
    for composite, expiry in entries:
        job_id, _, execution_id = composite.decode().partition(":")
        execution = Execution(execution_id, job_id, connection)
        try:
            execution.refresh()
        except Exception:
            worker_name = ""
        else:
            worker_name = execution.worker_name
        if expiry > now and _worker_alive(connection, worker_name):
            continue
        if connection.zrem(registry.key, composite) == 0:
            continue  # another worker's sweep took it
        try:
            job = queue.fetch_job(job_id)
        except Exception:
            job = None
        if job is None:
            continue
        count = int(job.meta.get(ABANDONED_COUNT, 0)) + 1
        job.meta[ABANDONED_COUNT] = count
        job.save_meta()
        with connection.pipeline() as pipeline:
            if count > limit:
                job.set_status(JobStatus.FAILED, pipeline=pipeline)
                job._handle_failure(
                    f"abandoned: its worker died {count} times while running it", pipeline, worker_name=""
                )
            else:
                queue.enqueue_job(job, pipeline=pipeline, at_front=True)
                given_back += 1
            pipeline.execute()
    return given_back


def _worker_alive(connection: Redis, worker_name: str) -> bool:
    if not worker_name:
        return False
    fields: list[bytes | None] = connection.hmget(  # type: ignore[assignment]
        f"{Worker.redis_worker_namespace_prefix}{worker_name}", ["hostname", "pid"]
    )
    hostname, pid = (value.decode() if value is not None else None for value in fields)
    if hostname is None:
        return False
    if hostname != socket.gethostname() or not pid:
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
