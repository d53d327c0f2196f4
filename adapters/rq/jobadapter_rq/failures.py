"""The failed registry, for jobs RQ itself cannot read.

A job id on a queue may name no job hash, a hash without ``data``, data that
inflates past `MAX_DATA_BYTES` (a zip bomb), or a hash whose fields RQ's
``Job.restore`` chokes on (``timeout`` = "soon", an unknown ``status``). RQ's
fetch drops the first silently, inflates the bomb, and raises on the others.
`record_unreadable` fails such an id the way RQ fails a job (status, the
reason in ``exc_info``, the failed registry of its queue) with raw commands,
in the transaction that also drops the id from the worker's processing list,
and keeps whatever the hash held for inspection.

`failed_entries` lists a failed registry from the raw hashes too, so one
unreadable entry never hides the others or raises.
"""

from __future__ import annotations

import json
import zlib
from base64 import b64decode
from datetime import datetime, timezone

from redis import Redis
from redis.client import Pipeline
from rq import Queue
from rq.defaults import DEFAULT_FAILURE_TTL
from rq.job import Job as RQJob
from rq.registry import FailedJobRegistry
from rq.results import Result
from rq.utils import utcformat

REASON_META = "jobadapter_reason"
"""The job's ``meta`` key holding why it failed, as ``ErrorClass: message`` (the traceback stays
in RQ's result, where ``rq`` and rq-dashboard show it)."""
MAX_DATA_BYTES = 64 * 1024 * 1024
"""The most a job's data may inflate to; a worker refuses a job whose data would inflate further."""
SHOWN_BYTES = 1024 * 1024
"""``failed()`` shows a job's data up to this size, and its description beyond (inflating a
bomb on every call would make listing failures slow)."""


def record_unreadable(
    connection: Redis,
    queue: Queue,
    job_id: bytes,
    reason: str,
    processing: tuple[str, bytes] | None,
    failure_ttl: int = DEFAULT_FAILURE_TTL,
) -> None:
    """Fail the id ``job_id`` taken from ``queue`` with ``reason``, without reading its hash; the
    record expires after ``failure_ttl`` seconds."""
    now = datetime.now(timezone.utc)
    key = RQJob.redis_job_namespace_prefix.encode() + job_id
    with connection.pipeline() as pipeline:
        pipeline.hsetnx(key, "origin", queue.name)
        pipeline.hsetnx(key, "created_at", utcformat(now))
        pipeline.hsetnx(key, "description", "unreadable RQ job")
        pipeline.hset(key, mapping={"status": "failed", "ended_at": utcformat(now), "exc_info": reason})
        pipeline.expire(key, failure_ttl)
        pipeline.zadd(FailedJobRegistry(queue=queue).key, {job_id: now.timestamp() + failure_ttl})
        expire_with_last_entry(pipeline, FailedJobRegistry(queue=queue).key)
        if processing is not None:
            pipeline.lrem(processing[0], 1, processing[1])  # type: ignore[arg-type]
        pipeline.execute()


_EXPIRE_WITH_LAST_ENTRY = """
if redis.call('ZCOUNT', KEYS[1], '-inf', '(0') > 0 then return redis.call('PERSIST', KEYS[1]) end
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if #last == 0 then return 0 end
local at = tonumber(last[2])
if at == nil or at == math.huge then return redis.call('PERSIST', KEYS[1]) end
return redis.call('EXPIREAT', KEYS[1], math.floor(at) + 1)
"""
"""KEYS: a failed registry. Its entries are scored by when they expire (negative or +inf:
never); the sorted set itself had no expiry, so the registry of a queue no worker serves any
more stayed in Redis for good. This gives it the expiry of its last entry."""


def expire_with_last_entry(client: Redis | Pipeline, registry_key: str) -> None:
    """Make ``registry_key`` (a failed registry) expire when its last entry does, or never if an
    entry never does; inside ``client``'s transaction when it is a pipeline."""
    client.register_script(_EXPIRE_WITH_LAST_ENTRY)(keys=[registry_key], client=client)


def failed_entries(connection: Redis) -> list[tuple[str, str]]:
    """``(payload, reason)`` for every job in every queue's failed registry, readable or not."""
    found = []
    now = datetime.now(timezone.utc).timestamp()
    for queue in Queue.all(connection=connection):
        scored: list[tuple[bytes, float]] = connection.zrange(  # type: ignore[assignment]
            FailedJobRegistry(queue=queue).key, 0, -1, withscores=True
        )
        ids = [job_id for job_id, expiry in scored if expiry < 0 or expiry > now]  # as RQ's cleanup keeps
        with connection.pipeline(transaction=False) as pipeline:
            for job_id in ids:
                pipeline.hgetall(RQJob.redis_job_namespace_prefix.encode() + job_id)
                pipeline.xrevrange(Result.get_key(job_id.decode(errors="replace")), "+", "-", count=1)
            replies = pipeline.execute()
        for index, job_id in enumerate(ids):
            fields: dict[bytes, bytes] = replies[2 * index]
            latest: list[tuple[bytes, dict[bytes, bytes]]] = replies[2 * index + 1]
            found.append((payload_text(job_id, fields), reason_text(fields, latest)))
    return found


def payload_text(job_id: bytes, fields: dict[bytes, bytes]) -> str:
    """The envelope the job carried (its one argument), or the raw data as text."""
    raw = fields.get(b"data")
    data = None if raw is None else inflate(raw, SHOWN_BYTES)
    if data is None:
        description = fields.get(b"description", b"").decode(errors="replace")
        what = "without data" if raw is None else f"with data over {SHOWN_BYTES} bytes"
        return f"RQ job {job_id.decode(errors='replace')} {what}: {description}"
    try:
        _, _, args, _ = json.loads(data)
        argument = args[0] if args else ""
        return argument if isinstance(argument, str) else json.dumps(argument)
    except Exception:
        return data.decode(errors="replace")


def record_reason(job: RQJob, error: BaseException) -> None:
    """Keep ``ErrorClass: message`` beside the job (RQ keeps only the traceback): ``failed()``
    gives every backend's reasons one shape."""
    job.meta[REASON_META] = f"{type(error).__name__}: {error}"
    job.save_meta()


def reason_text(fields: dict[bytes, bytes], latest: list[tuple[bytes, dict[bytes, bytes]]]) -> str:
    """Why the job failed, in one line: ``ErrorClass: message`` for a job that raised
    (`record_reason`), else the first line of `failure_text`."""
    recorded = _recorded_reason(fields.get(b"meta"))
    if recorded is not None:
        return recorded
    return failure_text(fields, latest).partition("\n")[0]


def failure_text(fields: dict[bytes, bytes], latest: list[tuple[bytes, dict[bytes, bytes]]]) -> str:
    """The traceback (its last line first) or refusal of RQ's latest result, else the reason
    written in ``exc_info`` (by `record_unreadable`, or the abandoned-job sweep)."""
    if latest:
        encoded = latest[0][1].get(b"exc_string")
        if encoded:
            try:
                return _error_first(zlib.decompress(b64decode(encoded)).decode(errors="replace"))
            except Exception:
                return encoded.decode(errors="replace")
    written = fields.get(b"exc_info")
    text = inflate(written) if written else None
    return "" if text is None else text.decode(errors="replace")


def _recorded_reason(meta: bytes | None) -> str | None:
    if not meta:
        return None
    try:
        decoded = json.loads(meta)
    except (ValueError, RecursionError):
        return None
    reason = decoded.get(REASON_META) if isinstance(decoded, dict) else None
    return reason if isinstance(reason, str) else None


def _error_first(traceback: str) -> str:
    """A traceback with its last line (the error itself) repeated first, so the reason names
    the problem even when cut short."""
    lines = traceback.strip().splitlines()
    if not traceback.startswith("Traceback") or not lines:
        return traceback
    return f"{lines[-1]}\n{traceback}"


def inflate(raw: bytes, limit: int = MAX_DATA_BYTES) -> bytes | None:
    """RQ stores ``data`` and ``exc_info`` zlib-compressed, but reads plain values too; None
    when the value inflates past ``limit`` (RQ would inflate a few KB into gigabytes)."""
    as_is = raw if len(raw) <= limit else None
    inflater = zlib.decompressobj()
    try:
        inflated = inflater.decompress(raw, limit)
    except zlib.error:
        return as_is  # not zlib: RQ takes the raw bytes
    if inflater.unconsumed_tail:
        return None
    return inflated if inflater.eof else as_is  # cut short: RQ takes the raw bytes too
