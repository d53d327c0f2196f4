"""RQ's scheduler, moving due jobs atomically and waking idle workers, and patient with Redis.

RQ's scheduler reads the due ids of a scheduled registry, fetches their job
hashes, and only then, in a transaction, saves each whole hash again and
pushes its id. An operator's ``discard`` or ``run_now`` landing between the
read and the transaction would be undone: the discarded hash saved back and
its id pushed (the job runs after all), or an id ``run_now`` already moved
pushed a second time (the job runs twice). Here each move is one Lua script
(`make_due`): the id leaves the registry, its hash is marked queued and the
id is pushed, in one step that nothing interleaves with. ``run_now`` moves
its one job with the same script.

An idle jobadapter worker blocks on wake lists (see `jobadapter_rq.fetch`),
not on the queues: the script pushes a wake token per job moved, so an idle
worker starts a delayed job (``set(wait=…)``, a retry) at once instead of at
its next look.

RQ's scheduler process also dies with a long traceback at the first Redis
error and waits for a worker's maintenance to restart it; this one skips its
ticks while Redis is unreachable, logging the outage once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from redis import Redis
from rq import Queue
from rq.job import Job as RQJob
from rq.registry import ScheduledJobRegistry
from rq.scheduler import RQScheduler
from rq.utils import now, utcformat

from jobadapter_rq.fetch import WAKE_TOKENS, wake_key
from jobadapter_rq.outage import UNREACHABLE, Outage

CHUNK = 1000
"""Ids one script moves at most (RQ's own chunk): a long backlog does not block Redis."""

_MAKE_DUE = """
local ids
if #ARGV > 5 then
  ids = {unpack(ARGV, 6)}
else
  ids = redis.call('ZRANGEBYSCORE', KEYS[1], 0, ARGV[4], 'LIMIT', 0, ARGV[5])
end
local moved = 0
for _, id in ipairs(ids) do
  if redis.call('ZREM', KEYS[1], id) == 1 then
    local job = ARGV[1] .. id
    if redis.call('EXISTS', job) == 1 then
      redis.call('HSET', job, 'status', 'queued', 'enqueued_at', ARGV[2])
      local ttl = tonumber(redis.call('HGET', job, 'ttl'))
      if ttl and ttl > 0 then redis.call('EXPIRE', job, ttl) end
      redis.call('RPUSH', KEYS[2], id)
      moved = moved + 1
    end
  end
end
if moved > 0 then
  for _ = 1, math.min(moved, tonumber(ARGV[3])) do redis.call('RPUSH', KEYS[3], '1') end
  redis.call('LTRIM', KEYS[3], -tonumber(ARGV[3]), -1)
end
return {moved, #ids}
"""
"""KEYS: the scheduled registry, its queue, the queue's wake list. ARGV: the job-key prefix,
``enqueued_at``, the wake cap, the due timestamp, the chunk size, then (for ``run_now``) the ids
to move whatever their time. What RQ's move writes, in one step: status and ``enqueued_at``, the
job's own ``ttl`` as expiry, the id at the back of the queue. An id whose hash is gone (expired)
leaves the registry, as with RQ. Returns how many were moved, and how many ids were looked at."""


def make_due(connection: Redis, rq_queue_name: str, ids: Sequence[str] = ()) -> tuple[int, int]:
    """Move jobs of ``rq_queue_name``'s scheduled registry to the queue: those due now (at most
    `CHUNK`), or exactly ``ids`` whatever their time. Returns ``(moved, looked at)``."""
    queue_key = Queue.redis_queue_namespace_prefix + rq_queue_name
    script: Callable[..., list[int]] = connection.register_script(_MAKE_DUE)
    moved, looked = script(
        keys=[ScheduledJobRegistry.key_template.format(rq_queue_name), queue_key, wake_key(queue_key)],
        args=[
            RQJob.redis_job_namespace_prefix,
            utcformat(now()),
            WAKE_TOKENS,
            int(time.time()),
            CHUNK,
            *ids,
        ],
    )
    return int(moved), int(looked)


class WakingScheduler(RQScheduler):
    """RQ's scheduler (locks, heartbeats, one per queue among all workers), moving due jobs with
    `make_due`."""

    _outage: Outage | None = None

    def heartbeat(self) -> None:
        self._patiently(super().heartbeat)

    def enqueue_scheduled_jobs(self) -> None:
        self._patiently(self._move_due)

    def stop(self) -> None:
        self._patiently(super().stop)

    def register_birth(self) -> None:
        self._patiently(super().register_birth)

    def acquire_locks(self, auto_start: bool = False) -> set[str]:
        """RQ's; during an outage no lock is acquired (the next tick or maintenance retries)."""
        acquired: set[str] = set()

        def acquire() -> None:
            acquired.update(super(WakingScheduler, self).acquire_locks(auto_start))

        self._patiently(acquire)
        return acquired

    def _patiently(self, tick: Callable[[], None]) -> None:
        """Run one tick; while Redis is unreachable, skip it (the next one comes a second later)."""
        if self._outage is None:
            self._outage = Outage(self.log, f"Scheduler {self.name}")
        try:
            tick()
        except UNREACHABLE as error:
            self._outage.down(error)
        else:
            self._outage.up()

    def _move_due(self) -> None:
        """RQ's ``enqueue_scheduled_jobs``, one atomic script per chunk of due jobs."""
        self._status = self.Status.WORKING
        if not self._scheduled_job_registries and self._acquired_locks:
            self.prepare_registries()
        for registry in self._scheduled_job_registries:
            looked = CHUNK
            while looked == CHUNK:  # a full chunk: more may be due
                _, looked = make_due(self.connection, registry.name)
        self._status = self.Status.STARTED
