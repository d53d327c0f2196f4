"""The operations contract on RQ, answered natively from RQ's own keys.

| state | where the job is |
|---|---|
| pending | the queue lists of the queue's ten priority bands (``rq:queue:<band>``) |
| scheduled | the bands' scheduled registries (``rq:scheduled:<band>``) |
| running | the started registries (``rq:wip:<band>``), the workers' processing lists (taken, not started) |
| failed | the failed registries (``rq:failed:<band>``), entries that are not envelopes included |
| finished | the finished registries (``rq:finished:<band>``), for as long as RQ's ``result_ttl`` keeps them |

Each retry of a job is an RQ job of its own (``<job_id>-retry-<n>``, see
`jobadapter_rq.names.retry_id`): ``find`` follows that chain to the latest
attempt, and a finished attempt that a later one superseded is not listed as
finished (its job is the later attempt's).

Every command that moves a job is one Lua script, so it cannot interleave
with a worker's fetch (also a script) or the scheduler's move (also one):
``discard`` removes the id from where it waits and deletes its hash in one
step, so no worker can take it afterwards and no stale copy is saved back;
``run_now`` moves the id from the schedule to its queue with the scheduler's
own script; ``retry`` takes the id out of the failed registry and pushes it
on its queue in one step. A job a worker took in the meantime is running and
is left alone. ``pause`` adds the queue's name to a set that the fetch script
consults, so no worker takes the queue's jobs once it has returned. Nothing
needs a tombstone, so ``discarded(envelope)`` keeps the base class's answer.
"""

from __future__ import annotations

import heapq
import itertools
import json
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

from redis import Redis
from rq import Queue
from rq.job import Job as RQJob
from rq.registry import FailedJobRegistry, FinishedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from rq.results import Result
from rq.utils import now, utcformat

from jobadapter.adapters.base import OPERATION_PAGE, Adapter, Progress
from jobadapter.envelope import Envelope, decode, from_document
from jobadapter.operations import (
    EVERY_JOB,
    JobError,
    JobFilter,
    JobNotFound,
    JobRecord,
    JobState,
    NotInState,
    QueueInfo,
)
from jobadapter_rq.failures import SHOWN_BYTES, failure_text, inflate
from jobadapter_rq.failures import payload_text as failed_payload_text
from jobadapter_rq.fetch import PAUSED_SET, PROCESSING_SET, WAKE_TOKENS, processing_key, wake_key
from jobadapter_rq.names import (
    BANDS,
    RETRY_SEPARATOR,
    band_queue_name,
    base_queue_name,
    consumed_queue_names,
    retry_id,
)
from jobadapter_rq.recovery import ABANDONED_COUNT
from jobadapter_rq.scheduler import make_due
from jobadapter_rq.worker import ENTRY_POINT

ATTEMPT_GAP = 16
"""``find`` looks this many attempt numbers past the last one it found: attempts in between may
have expired (a finished attempt lives ``result_ttl`` seconds, 500 by default)."""
_CHUNK = 100
"""Ids read per round trip while listing (a page of ``jobs`` may scan many more than it returns)."""
_JOB = RQJob.redis_job_namespace_prefix
_QUEUE = Queue.redis_queue_namespace_prefix
_RESULTS = Result.get_key("")
_DISCARDABLE = (JobState.PENDING, JobState.SCHEDULED, JobState.FAILED)
_NAME = re.compile(r"[A-Za-z_][\w.]*")

_ATTEMPTS = """
local found = {}
if redis.call('EXISTS', ARGV[1] .. ARGV[2]) == 1 then found[#found + 1] = ARGV[2] end
local misses, n = 0, 1
while misses < tonumber(ARGV[4]) do
  local id = ARGV[2] .. ARGV[3] .. n
  if redis.call('EXISTS', ARGV[1] .. id) == 1 then
    found[#found + 1] = id
    misses = 0
  else
    misses = misses + 1
  end
  n = n + 1
end
return found
"""
"""ARGV: the job-key prefix, the job id, the retry separator, the gap. Returns the RQ ids of the
job's attempts that still exist, oldest first."""

_DISCARD = """
local discarded, i = 0, 5
while i <= #ARGV do
  local id, earlier = ARGV[i], tonumber(ARGV[i + 1])
  local removed
  if ARGV[1] == 'list' then
    removed = redis.call('LREM', KEYS[1], 1, id)
  else
    removed = redis.call('ZREM', KEYS[1], id)
  end
  if removed > 0 then
    redis.call('DEL', ARGV[2] .. id, ARGV[3] .. id)
    for j = i + 2, i + 1 + earlier do
      local attempt = redis.call('HMGET', ARGV[2] .. ARGV[j], 'origin', 'status')
      if attempt[2] == 'finished' then
        redis.call('ZREM', ARGV[4] .. attempt[1], ARGV[j])
        redis.call('DEL', ARGV[2] .. ARGV[j], ARGV[3] .. ARGV[j])
      end
    end
    discarded = discarded + 1
  end
  i = i + 2 + earlier
end
return discarded
"""
"""KEYS: where the attempts wait (one queue list, scheduled or failed registry). ARGV: ``list`` or
``zset``, the job-key, results-key and finished-registry prefixes, then for each attempt its id,
how many earlier attempts its job had, and their ids: the finished ones are deleted with it (one
still finishing its run is left to RQ). An attempt no
longer there (a worker took it) is left alone. Returns how many were discarded."""

_REQUEUE = """
local ids
if #ARGV > 7 then
  ids = {unpack(ARGV, 8)}
else
  ids = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[5], '+inf', 'LIMIT', ARGV[6], ARGV[7])
end
local moved = 0
for _, id in ipairs(ids) do
  local job = ARGV[1] .. id
  if redis.call('EXISTS', job) == 1 and redis.call('ZREM', KEYS[1], id) == 1 then
    redis.call('HSET', job, 'status', 'queued', 'enqueued_at', ARGV[2])
    redis.call('HDEL', job, 'started_at', 'ended_at', 'exc_info', 'worker_name', 'last_heartbeat', ARGV[4])
    local ttl = tonumber(redis.call('HGET', job, 'ttl'))
    if ttl and ttl > 0 then redis.call('EXPIRE', job, ttl) else redis.call('PERSIST', job) end
    redis.call('RPUSH', KEYS[2], id)
    moved = moved + 1
  end
end
if moved > 0 then
  redis.call('SADD', KEYS[4], KEYS[2])
  for _ = 1, math.min(moved, tonumber(ARGV[3])) do redis.call('RPUSH', KEYS[3], '1') end
  redis.call('LTRIM', KEYS[3], -tonumber(ARGV[3]), -1)
end
return {moved, #ids}
"""
"""KEYS: a failed registry, its queue, the queue's wake list, RQ's set of queues. ARGV: the
job-key prefix, ``enqueued_at``, the wake cap, the abandoned-count field, then either the ids,
after three placeholders, or: the current time, an offset and a count, which take the registry's
unexpired entries from that offset (``retry_all`` without a filter: no id travels). What RQ's
``FailedJobRegistry.requeue`` writes (queued, no start, end or error, the job's own ``ttl``),
plus a fresh budget of give-backs after dead workers, in one step per batch. Returns how many
were still failed (and are now queued), and how many ids were looked at."""


@dataclass(frozen=True)
class _Source:
    """One Redis key holding jobs of one state."""

    key: str
    rq_name: str
    """The RQ queue (band) the jobs belong to; for a processing list, read from each entry."""
    kind: Literal["list", "registry", "live registry", "started", "processing"]


_LISTED_FIELDS = (
    b"data",
    b"origin",
    b"description",
    b"created_at",
    b"enqueued_at",
    b"started_at",
    b"ended_at",
    b"worker_name",
    b"exc_info",
)
"""The fields of a job hash a listed record is built from (`_record`). Read by name: a hash
has twice as many, and parsing RQ's replies is most of what a listing costs."""


@dataclass
class _Entry:
    """One id read from a source, with its job hash (`_LISTED_FIELDS` of it, for a listing)."""

    rq_id: str
    rq_name: str
    order: float | bytes
    fields: dict[bytes, bytes]
    latest: list[tuple[bytes, dict[bytes, bytes]]]
    """RQ's latest result of the job (failed sources only): where the traceback is."""


class RQOperations(Adapter):
    """The operations contract over the Redis keys RQ and the jobadapter worker keep."""

    connection: Redis

    # -- queries -------------------------------------------------------------------------------

    def queues(self) -> list[QueueInfo]:
        paused = self._paused()
        names = sorted(self._known_queues() | paused)
        moment = time.time()
        with self.connection.pipeline(transaction=False) as pipeline:
            for name in names:
                for rq_name in consumed_queue_names([name]):
                    pipeline.llen(_QUEUE + rq_name)
                    pipeline.zcard(ScheduledJobRegistry.key_template.format(rq_name))
                    pipeline.zcount(FailedJobRegistry.key_template.format(rq_name), moment, "+inf")
            counts: list[int] = pipeline.execute()
        found = []
        per_queue = 3 * BANDS
        for index, name in enumerate(names):
            mine = counts[index * per_queue : (index + 1) * per_queue]
            found.append(QueueInfo(name, sum(mine[0::3]), sum(mine[1::3]), sum(mine[2::3]), name in paused))
        return found

    def jobs(
        self,
        state: JobState,
        *,
        filter: JobFilter = EVERY_JOB,
        limit: int = 50,
        offset: int = 0,
    ) -> list[JobRecord]:
        state = JobState(state)
        if limit < 0 or offset < 0:
            raise ValueError(f"limit and offset must be >= 0, not limit={limit!r}, offset={offset!r}")
        return list(itertools.islice(self.all_jobs(state, filter), offset, offset + limit))

    def all_jobs(self, state: JobState, filter: JobFilter = EVERY_JOB) -> Iterator[JobRecord]:
        """Streamed: a page of `jobs` reads every entry up to its offset."""
        return (record for record in self._records(JobState(state), filter) if filter.matches(record))

    def find(self, job_id: str) -> JobRecord:
        rq_id, fields, state, _ = self._resolve(job_id)
        latest = self._latest_result(rq_id) if state is JobState.FAILED else []
        entry = _Entry(rq_id, _text(fields.get(b"origin")), 0.0, fields, latest)
        return _record(entry, state)[0]

    def status(self, job_id: str) -> str | None:
        """The RQ status (``queued``, ``scheduled``, ``started``, ``finished``, ``failed``) of the
        job's latest attempt, or None when no attempt is left."""
        attempts = self._attempts(job_id)
        if not attempts:
            return None
        status = self.connection.hget(_JOB + attempts[-1], "status")
        return None if status is None else _text(status)

    # -- commands ------------------------------------------------------------------------------

    def retry(self, job_ids: Sequence[str]) -> int:
        found = [self._resolve(job_id) for job_id in _ids(job_ids)]
        for job_id, (_, _, state, _) in zip(job_ids, found, strict=True):
            if state is not JobState.FAILED:
                raise NotInState(job_id, state, [JobState.FAILED])
        by_queue: dict[str, list[str]] = {}
        for rq_id, fields, _, _ in found:
            by_queue.setdefault(_text(fields.get(b"origin")), []).append(rq_id)
        return sum(self._requeue(rq_name, rq_ids) for rq_name, rq_ids in by_queue.items())

    def retry_all(self, filter: JobFilter = EVERY_JOB, *, progress: Progress | None = None) -> int:
        """Every failed job ``filter`` matches, one registry page (`OPERATION_PAGE`) in memory at
        a time; each registry is walked once, so a job failing again meanwhile is not retried
        twice by one call."""
        if filter.job_class is not None or filter.search is not None:
            return self._sweep(
                JobState.FAILED,
                filter,
                True,
                lambda source, chosen: self._requeue(source.rq_name, [rq_id for rq_id, _ in chosen]),
                progress,
            )
        retried = 0
        for source in self._sources(JobState.FAILED, filter):
            budget, offset = self._size(source), 0
            while budget > 0:
                moved, looked = self._requeue_page(source.rq_name, offset, min(OPERATION_PAGE, budget))
                if not looked:
                    break
                retried += moved
                if progress is not None:
                    progress(moved)
                budget -= looked
                offset += looked - moved  # left in place (no hash): step over them
        return retried

    def discard(self, job_ids: Sequence[str]) -> int:
        found = [self._resolve(job_id) for job_id in _ids(job_ids)]
        for job_id, (_, _, state, _) in zip(job_ids, found, strict=True):
            if state not in _DISCARDABLE:
                raise NotInState(job_id, state, _DISCARDABLE)
        return sum(
            self._discard(state, _waiting_key(state, _text(fields.get(b"origin"))), [(rq_id, earlier)])
            for rq_id, fields, state, earlier in found
        )

    def discard_all(
        self, state: JobState, filter: JobFilter = EVERY_JOB, *, progress: Progress | None = None
    ) -> int:
        """Every pending, scheduled or failed job ``filter`` matches, one page in memory at a time."""
        state = JobState(state)
        if state not in _DISCARDABLE:
            raise ValueError(f"only pending, scheduled or failed jobs can be discarded, not {state.value}")
        return self._sweep(
            state,
            filter,
            True,
            lambda source, chosen: self._discard(
                state, source.key, [(rq_id, _earlier(rq_id, envelope)) for rq_id, envelope in chosen]
            ),
            progress,
        )

    def delete_moved(self, records: Sequence[JobRecord]) -> set[str]:
        """One discard script per queue key for the whole batch, from what the listing read
        (each record's RQ id, and its band from its envelope): no lookup per job."""
        by_key: dict[str, list[tuple[str, JobRecord]]] = {}
        for record in records:
            envelope = record.envelope
            if envelope is None or record.provider_job_id is None or record.state not in _DISCARDABLE:
                raise ValueError(f"job {record.job_id!r} is not a pending, scheduled or failed job as listed")
            key = _waiting_key(record.state, band_queue_name(envelope.queue_name, envelope.priority))
            by_key.setdefault(key, []).append((record.provider_job_id, record))
        deleted: set[str] = set()
        for key, entries in by_key.items():
            state = entries[0][1].state
            attempts = [(rq_id, _earlier(rq_id, record.envelope)) for rq_id, record in entries]
            if self._discard(state, key, attempts) == len(entries):
                deleted.update(record.job_id for _, record in entries)
                continue
            with self.connection.pipeline(transaction=False) as pipeline:
                for rq_id, _ in entries:
                    pipeline.exists(_JOB + rq_id)
                left = pipeline.execute()
            deleted.update(
                record.job_id for (_, record), there in zip(entries, left, strict=True) if not there
            )
        return deleted

    def run_now(self, job_id: str) -> None:
        """The scheduler's own move, for this one job: it leaves the schedule and joins the back of
        its queue in one step, so it cannot be moved (and run) twice."""
        rq_id, fields, state, _ = self._resolve(job_id)
        if state is not JobState.SCHEDULED:
            raise NotInState(job_id, state, [JobState.SCHEDULED])
        make_due(self.connection, _text(fields.get(b"origin")), [rq_id])

    def pause(self, queue: str) -> None:
        self.connection.sadd(PAUSED_SET, _queue_name(queue))

    def resume(self, queue: str) -> None:
        """Take the name out of the paused set, and wake one idle worker per waiting job (capped)
        on each band, so they start at once instead of at their next look."""
        name = _queue_name(queue)
        keys = [_QUEUE + rq_name for rq_name in consumed_queue_names([name])]
        with self.connection.pipeline(transaction=False) as pipeline:
            for key in keys:
                pipeline.llen(key)
            waiting: list[int] = pipeline.execute()
        with self.connection.pipeline() as pipeline:
            pipeline.srem(PAUSED_SET, name)
            for key, count in zip(keys, waiting, strict=True):
                if count:
                    pipeline.rpush(wake_key(key), *["1"] * min(count, WAKE_TOKENS))
                    pipeline.ltrim(wake_key(key), -WAKE_TOKENS, -1)
            pipeline.execute()

    # -- where jobs are ------------------------------------------------------------------------

    def _attempts(self, job_id: str) -> list[str]:
        script = self.connection.register_script(_ATTEMPTS)
        found: list[bytes] = script(args=[_JOB, job_id, RETRY_SEPARATOR, ATTEMPT_GAP])
        return [_text(rq_id) for rq_id in found]

    def _resolve(self, job_id: str) -> tuple[str, dict[bytes, bytes], JobState, list[str]]:
        """The job's latest attempt: its RQ id, hash and state, and its earlier attempts' ids."""
        if not isinstance(job_id, str) or not job_id:
            raise ValueError(f"a job id is a non-empty string, not {job_id!r}")
        attempts = self._attempts(job_id)
        fields: dict[bytes, bytes] = self.connection.hgetall(_JOB + attempts[-1]) if attempts else {}  # type: ignore[assignment]
        if not fields:
            raise JobNotFound(job_id)
        rq_id = attempts[-1]
        return rq_id, fields, self._state(rq_id, fields), attempts[:-1]

    def _state(self, rq_id: str, fields: dict[bytes, bytes]) -> JobState:
        """The state of one attempt, from its RQ status and, for a queued one, whether it still
        waits on its queue (else a worker took it: it is running)."""
        status = _text(fields.get(b"status"))
        if status == "queued":
            position = self.connection.lpos(_QUEUE + _text(fields.get(b"origin")), rq_id)
            return JobState.PENDING if position is not None else JobState.RUNNING
        return _STATES.get(status, JobState.FAILED)

    def _latest_result(self, rq_id: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
        return self.connection.xrevrange(Result.get_key(rq_id), "+", "-", count=1)  # type: ignore[return-value]

    def _known_queues(self) -> set[str]:
        keys: set[bytes] = self.connection.smembers(Queue.redis_queues_keys)  # type: ignore[assignment]
        return {base_queue_name(_text(key).removeprefix(_QUEUE)) for key in keys}

    def _paused(self) -> set[str]:
        return {_text(name) for name in self.connection.smembers(PAUSED_SET)}

    def _sources(self, state: JobState, filter: JobFilter) -> list[_Source]:
        """The keys holding jobs in ``state`` (only the filtered queue's, when there is one), most
        urgent band first, empty ones left out."""
        names = [filter.queue] if filter.queue is not None else sorted(self._known_queues())
        rq_names = consumed_queue_names(names)
        if state is JobState.PENDING:
            sources = [_Source(_QUEUE + rq_name, rq_name, "list") for rq_name in rq_names]
        elif state is JobState.SCHEDULED:
            sources = [_Source(ScheduledJobRegistry.key_template.format(n), n, "registry") for n in rq_names]
        elif state is JobState.FAILED:
            sources = [
                _Source(FailedJobRegistry.key_template.format(n), n, "live registry") for n in rq_names
            ]
        elif state is JobState.FINISHED:
            sources = [
                _Source(FinishedJobRegistry.key_template.format(n), n, "live registry") for n in rq_names
            ]
        else:
            sources = [_Source(StartedJobRegistry.key_template.format(n), n, "started") for n in rq_names]
            workers: set[bytes] = self.connection.smembers(PROCESSING_SET)  # type: ignore[assignment]
            sources += [_Source(processing_key(_text(name)), "", "processing") for name in sorted(workers)]
        with self.connection.pipeline(transaction=False) as pipeline:
            for source in sources:
                pipeline.exists(source.key)
            present = pipeline.execute()
        return [source for source, exists in zip(sources, present, strict=True) if exists]

    def _read(self, source: _Source, start: int, count: int) -> list[tuple[str, str, float | None]]:
        """``(rq id, rq queue name, score)`` of up to ``count`` entries from position ``start``."""
        if source.kind in ("list", "processing"):
            raw: list[bytes] = self.connection.lrange(source.key, start, start + count - 1)  # type: ignore[assignment]
            if source.kind == "list":
                return [(_text(rq_id), source.rq_name, None) for rq_id in raw]
            read: list[tuple[str, str, float | None]] = []
            for item in raw:
                queue_key, _, rq_id = item.partition(b"\0")
                read.append((_text(rq_id), _text(queue_key).removeprefix(_QUEUE), None))
            return read
        if source.kind == "live registry":  # as RQ's cleanup keeps them: not yet expired
            scored: list[tuple[bytes, float]] = self.connection.zrangebyscore(  # type: ignore[assignment]
                source.key, time.time(), "+inf", start=start, num=count, withscores=True
            )
        else:
            scored = self.connection.zrange(source.key, start, start + count - 1, withscores=True)  # type: ignore[assignment]
        if source.kind == "started":  # entries are <job id>:<execution id>
            return [(_text(item).partition(":")[0], source.rq_name, score) for item, score in scored]
        return [(_text(item), source.rq_name, score) for item, score in scored]

    def _load(self, read: list[tuple[str, str, float | None]], *, results: bool) -> list[_Entry]:
        """The job hashes (and, with ``results``, RQ's latest result) of ids read from a source;
        ids whose hash is gone (deleted or expired meanwhile) are left out."""
        with self.connection.pipeline(transaction=False) as pipeline:
            for rq_id, _, _ in read:
                pipeline.hmget(_JOB + rq_id, _LISTED_FIELDS)
                if results:
                    pipeline.xrevrange(Result.get_key(rq_id), "+", "-", count=1)
            replies = pipeline.execute()
        step = 2 if results else 1
        entries = []
        for index, (rq_id, rq_name, score) in enumerate(read):
            values: list[bytes | None] = replies[index * step]
            fields = {
                name: value for name, value in zip(_LISTED_FIELDS, values, strict=True) if value is not None
            }
            if not fields:
                continue
            order: float | bytes = score if score is not None else fields.get(b"enqueued_at", b"")
            entries.append(
                _Entry(rq_id, rq_name, order, fields, replies[index * step + 1] if results else [])
            )
        return entries

    def _entries(self, source: _Source, state: JobState) -> Iterator[_Entry]:
        """Every entry of ``source``, in its order, a chunk at a time."""
        start = 0
        while True:
            read = self._read(source, start, _CHUNK)
            if not read:
                return
            start += len(read)
            yield from self._load(read, results=state is JobState.FAILED)

    def _records(self, state: JobState, filter: JobFilter) -> Iterator[JobRecord]:
        """Every job in ``state``, oldest first: the sources merged by time (when queued; the
        schedule's time; when it expires, which follows when it ended), a chunk of each at a time."""
        sources = self._sources(state, filter)
        if state is JobState.RUNNING:  # a handful (one per busy worker): sorted whole, by start
            entries = {entry.rq_id: entry for source in sources for entry in self._entries(source, state)}
            records = [_record(entry, state)[0] for entry in entries.values()]
            yield from sorted(records, key=lambda record: record.started_at or _EPOCH)
            return
        streams = [self._entries(source, state) for source in sources]
        merged = heapq.merge(*streams, key=lambda entry: entry.order)
        while True:
            chunk = list(itertools.islice(merged, _CHUNK))
            if not chunk:
                return
            built = [_record(entry, state) for entry in chunk]
            superseded = self._superseded(built) if state is JobState.FINISHED else set()
            yield from (record for record, _ in built if record.provider_job_id not in superseded)

    def _superseded(self, built: list[tuple[JobRecord, Envelope | None]]) -> set[str | None]:
        """The finished attempts whose next attempt exists (their job is that attempt's)."""
        candidates = [
            (record.provider_job_id, retry_id(envelope.job_id, envelope.executions + 1))
            for record, envelope in built
            if envelope is not None
        ]
        with self.connection.pipeline(transaction=False) as pipeline:
            for _, following in candidates:
                pipeline.exists(_JOB + following)
            exists = pipeline.execute()
        return {rq_id for (rq_id, _), found in zip(candidates, exists, strict=True) if found}

    def _sweep(
        self,
        state: JobState,
        filter: JobFilter,
        envelopes: bool,
        act: Callable[[_Source, list[tuple[str, Envelope | None]]], int],
        progress: Progress | None,
    ) -> int:
        """Apply ``act`` to the entries ``filter`` matches, source by source, `OPERATION_PAGE` at a
        time, with their envelopes when ``envelopes`` (else None). ``act`` takes the entries out
        of the source (or they left it on their own, taken by a worker), so the next page starts
        after the entries left in place; no source is walked past the size it had at the start,
        so entries coming back (a retried job failing again) are not acted on twice. ``progress``
        is told how many were acted on after each page."""
        done = 0
        for source in self._sources(state, filter):
            start = 0
            budget = self._size(source)
            while budget > 0:
                read = self._read(source, start, min(OPERATION_PAGE, budget))
                if not read:
                    break
                budget -= len(read)
                rq_ids = [rq_id for rq_id, _, _ in read]
                if envelopes:
                    with self.connection.pipeline(transaction=False) as pipeline:
                        for rq_id in rq_ids:
                            pipeline.hget(_JOB + rq_id, "data")
                        found = [_envelope(data) for data in pipeline.execute()]
                else:
                    found = [None] * len(rq_ids)
                queue = base_queue_name(source.rq_name)
                chosen = [
                    (rq_id, envelope)
                    for rq_id, envelope in zip(rq_ids, found, strict=True)
                    if filter.matches(
                        JobRecord("?", "?", queue, state)
                        if envelope is None
                        else JobRecord.from_envelope(envelope, state)
                    )
                ]
                acted = act(source, chosen) if chosen else 0
                done += acted
                if progress is not None:
                    progress(acted)
                start += len(read) - len(chosen)
        return done

    def _size(self, source: _Source) -> int:
        if source.kind in ("list", "processing"):
            return int(self.connection.llen(source.key))
        return int(self.connection.zcard(source.key))

    def _requeue(self, rq_name: str, rq_ids: list[str]) -> int:
        """Put these failed attempts of RQ queue ``rq_name`` back on it; returns how many were
        still failed (and are now queued)."""
        return self._run_requeue(rq_name, ["", "", "", *rq_ids])[0]

    def _requeue_page(self, rq_name: str, offset: int, count: int) -> tuple[int, int]:
        """Put up to ``count`` unexpired failed attempts of ``rq_name`` from ``offset`` on back on
        it; returns how many moved and how many were looked at."""
        return self._run_requeue(rq_name, [time.time(), offset, count])

    def _run_requeue(self, rq_name: str, selection: list[str | int | float]) -> tuple[int, int]:
        queue_key = _QUEUE + rq_name
        keys = [FailedJobRegistry.key_template.format(rq_name), queue_key, wake_key(queue_key)]
        script = self.connection.register_script(_REQUEUE)
        arguments = [_JOB, utcformat(now()), WAKE_TOKENS, ABANDONED_COUNT, *selection]
        moved, looked = script(keys=[*keys, Queue.redis_queues_keys], args=arguments)
        return int(moved), int(looked)

    def _discard(self, state: JobState, where: str, attempts: list[tuple[str, list[str]]]) -> int:
        """Discard attempts ``(rq id, earlier attempts' ids)`` waiting in ``where``; returns how
        many were still there."""
        arguments: list[str | int] = ["list" if state is JobState.PENDING else "zset", _JOB, _RESULTS]
        arguments.append(FinishedJobRegistry.key_template.format(""))
        for rq_id, earlier in attempts:
            arguments += [rq_id, len(earlier), *earlier]
        return int(self.connection.register_script(_DISCARD)(keys=[where], args=arguments))


_STATES = {
    "deferred": JobState.PENDING,
    "scheduled": JobState.SCHEDULED,
    "started": JobState.RUNNING,
    "finished": JobState.FINISHED,
    "failed": JobState.FAILED,
    "stopped": JobState.FAILED,
    "canceled": JobState.FAILED,
}
"""RQ statuses other than queued; an unknown one (a hash someone else wrote) reads as failed."""
_EPOCH = datetime.fromtimestamp(0, timezone.utc)


def _ids(job_ids: Sequence[str]) -> Sequence[str]:
    """``job_ids`` as given, refusing a lone string (it would be read as one id per character)."""
    if isinstance(job_ids, (str, bytes)):
        raise TypeError(f"job_ids is a list of job ids, not one id: use [{job_ids!r}]")
    return job_ids


def _queue_name(queue: str) -> str:
    if not isinstance(queue, str) or not queue:
        raise ValueError(f"a queue name is a non-empty string, not {queue!r}")
    return queue


def _waiting_key(state: JobState, rq_name: str) -> str:
    """Where an attempt in ``state`` (pending, scheduled or failed) waits."""
    if state is JobState.PENDING:
        return _QUEUE + rq_name
    if state is JobState.SCHEDULED:
        return ScheduledJobRegistry.key_template.format(rq_name)
    return FailedJobRegistry.key_template.format(rq_name)


def _earlier(rq_id: str, envelope: Envelope | None) -> list[str]:
    """The ids the earlier attempts of a job had (whether or not they still exist), from the
    envelope of its attempt ``rq_id``."""
    if envelope is None or rq_id != retry_id(envelope.job_id, envelope.executions):
        return []
    return [envelope.job_id, *(retry_id(envelope.job_id, n) for n in range(1, envelope.executions))]


def _text(raw: bytes | str | None) -> str:
    if raw is None:
        return ""
    return raw if isinstance(raw, str) else raw.decode(errors="replace")


def _envelope(raw: bytes | None) -> Envelope | None:
    """The envelope a job hash's ``data`` carries, or None when it carries none a worker would run."""
    data = None if raw is None else inflate(raw, SHOWN_BYTES)
    if data is None:
        return None
    try:
        function, _, arguments, _ = json.loads(data)
        if function != ENTRY_POINT or len(arguments) != 1:
            return None
        argument = arguments[0]
        return from_document(argument) if isinstance(argument, dict) else decode(argument)
    except Exception:  # anything a planted hash holds: not JSON, wrong shape, not an envelope
        return None


def _moment(fields: dict[bytes, bytes], name: bytes) -> datetime | None:
    raw = fields.get(name)
    if not raw:
        return None
    try:  # RQ's format, 2026-11-28T20:00:00.000000Z; fromisoformat is faster than strptime
        return datetime.fromisoformat(_text(raw).removesuffix("Z")).replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def _error(entry: _Entry) -> JobError | None:
    """The failure RQ recorded: the traceback's last line (the class's own name, as
    ``type(error).__name__`` gives it, and the message) and the traceback, or a reason written
    without one (``refused: …``, ``abandoned: …``)."""
    text = failure_text(entry.fields, entry.latest)
    if not text:
        return None
    first, _, rest = text.partition("\n")
    name, separator, message = first.partition(": ")
    if not _NAME.fullmatch(name):
        name, message = "Error", first
    elif not separator:
        message = ""
    return JobError(name.rpartition(".")[2], message, rest or None)


def _record(entry: _Entry, state: JobState) -> tuple[JobRecord, Envelope | None]:
    """The record of one attempt, and its envelope (None when it carries none: then the record
    has job_class ``?``, the RQ id as job_id, and the raw payload)."""
    fields = entry.fields
    known: dict[str, Any] = {
        "provider_job_id": entry.rq_id,
        "started_at": _moment(fields, b"started_at"),
        "finished_at": _moment(fields, b"ended_at")
        if state in (JobState.FINISHED, JobState.FAILED)
        else None,
        "worker": _text(fields.get(b"worker_name")) or None,
        "error": _error(entry) if state is JobState.FAILED else None,
    }
    envelope = _envelope(fields.get(b"data"))
    if envelope is None:
        origin = _text(fields.get(b"origin")) or entry.rq_name
        record = JobRecord(
            job_id=entry.rq_id,
            job_class="?",
            queue=base_queue_name(origin),
            state=state,
            enqueued_at=_moment(fields, b"enqueued_at") or _moment(fields, b"created_at"),
            payload=failed_payload_text(entry.rq_id.encode(), fields),
            **known,
        )
        return record, None
    return JobRecord.from_envelope(envelope, state, **known), envelope
