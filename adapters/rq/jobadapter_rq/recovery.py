"""Giving back what dead workers held: started jobs, and ids taken but not yet started.

RQ moves a job whose worker died to the failed registry once its heartbeat
expires; a jobadapter worker gives it back to the front of its queue instead,
at most ``limit`` times per job (counted in the job hash's
``jobadapter_abandoned`` field), and fails it after that. Each move is one Lua
script, so a sweeper killed half-way leaves the job where it was, never
nowhere, and two workers sweeping at once cannot both give it back.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timezone

from redis import Redis
from rq import Queue, Worker
from rq.defaults import DEFAULT_FAILURE_TTL
from rq.executions import Execution
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.utils import utcformat

from jobadapter_rq.failures import expire_with_last_entry
from jobadapter_rq.fetch import WAKE_TOKENS, give_back_dead, wake_key

ABANDONED_COUNT = "jobadapter_abandoned"
"""The job-hash field counting how often a job was given back after its worker died."""

_REQUEUE_STARTED = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return false end
if redis.call('EXISTS', KEYS[3]) == 0 then return 0 end
local count = redis.call('HINCRBY', KEYS[3], ARGV[8], 1)
if count > tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[3], 'status', 'failed', 'ended_at', ARGV[5],
    'exc_info', 'abandoned: its worker died ' .. count .. ' times while running it')
  redis.call('ZADD', KEYS[4], ARGV[4], ARGV[2])
  redis.call('EXPIRE', KEYS[3], ARGV[6])
  return -count
end
redis.call('HSET', KEYS[3], 'status', 'queued')
redis.call('LPUSH', KEYS[2], ARGV[2])
redis.call('RPUSH', KEYS[5], '1')
redis.call('LTRIM', KEYS[5], -ARGV[7], -1)
return count
"""
"""KEYS: started registry, queue, job hash, failed registry, wake list. ARGV: registry entry,
job id, limit, failed score, now, failure TTL, wake cap, count field. Returns false when another
sweep took the entry, 0 for a job whose hash is gone, -n when it failed, n when given back."""


def requeue_abandoned(queue: Queue, limit: int, failure_ttl: int = DEFAULT_FAILURE_TTL) -> int:
    """Give back to ``queue`` the jobs its dead workers left started; returns how many.

    A started job counts as abandoned when its heartbeat expired, when its
    worker's registration expired, or when that worker ran on this host and
    its process is gone.
    """
    connection: Redis = queue.connection
    now = datetime.now(timezone.utc).timestamp()
    given_back = 0
    entries: list[tuple[bytes, float]] = connection.zrange(
        StartedJobRegistry(queue=queue).key, 0, -1, withscores=True
    )  # type: ignore[assignment]
    for composite, expiry in entries:
        job_id, _, execution_id = composite.decode(errors="replace").partition(":")
        if expiry > now and worker_alive(connection, _execution_worker(connection, job_id, execution_id)):
            continue
        moved = give_back_started(queue, composite, limit, failure_ttl)
        if moved is not None and moved > 0:
            given_back += 1
    return given_back


def give_back_started(
    queue: Queue, composite: bytes | str, limit: int, failure_ttl: int = DEFAULT_FAILURE_TTL
) -> int | None:
    """Move one started-registry entry (``<job id>:<execution id>``) back to the front of
    ``queue``, or to the failed registry (for ``failure_ttl`` seconds) once it was given back
    ``limit`` times.

    Returns None when the entry is no longer in the started registry (another
    sweep took it), 0 when the job's hash is gone, -n when the job failed for
    good, n when it was given back for the n-th time.
    """
    key = composite if isinstance(composite, str) else composite.decode(errors="replace")
    job_id = key.partition(":")[0]
    connection: Redis = queue.connection
    now = datetime.now(timezone.utc)
    script = connection.register_script(_REQUEUE_STARTED)
    moved = script(
        keys=[
            StartedJobRegistry(queue=queue).key,
            queue.key,
            queue.job_class.key_for(job_id),
            FailedJobRegistry(queue=queue).key,
            wake_key(queue.key),
        ],
        args=[
            key,
            job_id,
            limit,
            now.timestamp() + failure_ttl,
            utcformat(now),
            failure_ttl,
            WAKE_TOKENS,
            ABANDONED_COUNT,
        ],
    )
    if isinstance(moved, int) and moved < 0:
        expire_with_last_entry(connection, FailedJobRegistry(queue=queue).key)
    return moved if isinstance(moved, int) else None


def give_back_taken(connection: Redis) -> int:
    """Put back on their queues the ids dead workers had taken but not yet started."""
    return give_back_dead(connection, lambda name: worker_alive(connection, name))


def _execution_worker(connection: Redis, job_id: str, execution_id: str) -> str:
    execution = Execution(execution_id, job_id, connection)
    try:
        execution.refresh()
    except Exception:
        return ""
    return execution.worker_name


def worker_alive(connection: Redis, worker_name: str) -> bool:
    """False when the worker's registration expired or recorded its death, or when it ran on
    this host and its process is gone; True otherwise (another host's worker is trusted while
    its registration lives)."""
    if not worker_name:
        return False
    fields: list[bytes | None] = connection.hmget(  # type: ignore[assignment]
        f"{Worker.redis_worker_namespace_prefix}{worker_name}", ["hostname", "pid", "death"]
    )
    hostname, pid, death = (value.decode(errors="replace") if value is not None else None for value in fields)
    if hostname is None or death is not None:
        return False
    if hostname != socket.gethostname() or not pid:
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True
