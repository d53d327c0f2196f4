"""Taking a job off the priority bands without ever holding it only in a worker's memory.

RQ's worker fetches from several queues with BLPOP (``Queue.dequeue_any``):
the id leaves Redis the moment it is popped, and reaches the started registry
only once the worker has prepared the execution. A worker killed between the
two loses the job (RQ's intermediate-queue safety net covers only the
single-queue BLMOVE path). A jobadapter worker always listens to ten queues
or more (the priority bands), so it fetches differently:

- `Fetcher.take` runs one Lua script that looks at the bands in order and
  moves the first waiting id into the worker's *processing list*
  (``jobadapter:rq:processing:<worker name>``), so the job is in its queue or
  in that list at every instant. The worker removes the entry in the same
  transaction that puts the job in RQ's started registry
  (`JobAdapterWorker.prepare_execution`), from where the abandoned-job sweep
  takes over.
- When every band is empty, `Fetcher.wait` blocks on the bands' *wake lists*
  (BLPOP, at most ``WAIT_SECONDS``): every jobadapter enqueue pushes a token
  there in the same transaction as the job, so an idle worker wakes at once;
  jobs that arrive another way (RQ's scheduler moving a delayed job, ``rq
  requeue``, a plain ``Queue.enqueue``) are found by the next look, at most
  ``WAIT_SECONDS`` later. No busy loop: an idle worker runs the script about
  twice a second.
- A queue an operator paused (its jobadapter name in ``PAUSED_SET``) is
  passed over by the same script, so pausing takes effect the moment
  ``pause`` returns, for every worker, running or started later.
- `give_back_dead` empties the processing lists of dead workers back onto the
  front of their queues, atomically per list.

Entries in a processing list are ``<queue key>\\0<job id>``: queue keys come
from the worker's own command line, which cannot hold a NUL byte, so the first
NUL splits them whatever bytes a planted job id holds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from redis import Redis
from redis.client import Pipeline
from rq import Queue

from jobadapter_rq.names import base_queue_name

PREFIX = "jobadapter:rq"
PROCESSING_SET = f"{PREFIX}:processing"
"""The names of workers that may have a processing list (each adds itself when it takes a job)."""
PAUSED_SET = f"{PREFIX}:paused"
"""The jobadapter queue names (all their bands) no worker takes jobs from (``RQAdapter.pause``)."""
WAIT_SECONDS = 0.5
"""Longest an idle worker blocks before it looks at its queues again."""
WAKE_TOKENS = 64
"""Wake lists are trimmed to this many tokens, so a queue nobody consumes keeps no more."""

_TAKE = """
local held = redis.call('LINDEX', KEYS[1], 0)
if held then
  local split = string.find(held, '\\0', 1, true)
  if split then
    return {string.sub(held, 1, split - 1), string.sub(held, split + 1)}
  end
  redis.call('LPOP', KEYS[1])
end
for i = 4, #KEYS do
  if redis.call('SISMEMBER', KEYS[3], ARGV[i - 2]) == 0 then
    local id = redis.call('LPOP', KEYS[i])
    if id then
      redis.call('RPUSH', KEYS[1], KEYS[i] .. '\\0' .. id)
      redis.call('SADD', KEYS[2], ARGV[1])
      return {KEYS[i], id}
    end
  end
end
return false
"""
"""KEYS: the processing list, the processing set, the paused set, then the queue keys most urgent
first; ARGV: worker name, then the jobadapter queue name of each queue key.

A worker holds at most one taken job, and takes only when it holds none. So an
entry already in its list is a take whose reply never reached it (Redis died
after running the script, or redis-py retried the call on a connection error
and the retry took a second job): that one is returned again instead of
taking another, so no id is ever stranded in a live worker's list.

A queue whose jobadapter name is in the paused set is passed over in the same
script, so no worker takes its jobs once ``pause`` has returned."""

_GIVE_BACK = """
local given = 0
while true do
  local entry = redis.call('RPOP', KEYS[1])
  if not entry then break end
  local split = string.find(entry, '\\0', 1, true)
  if split then
    local queue = string.sub(entry, 1, split - 1)
    redis.call('LPUSH', queue, string.sub(entry, split + 1))
    redis.call('RPUSH', ARGV[2] .. queue, '1')
    redis.call('LTRIM', ARGV[2] .. queue, -ARGV[3], -1)
    given = given + 1
  end
end
redis.call('SREM', KEYS[2], ARGV[1])
return given
"""
"""KEYS: a dead worker's processing list, the processing set; ARGV: its name, the wake-key prefix,
the wake-token cap. Entries popped from the tail and pushed on the front keep their order."""


def processing_key(worker_name: str) -> str:
    return f"{PROCESSING_SET}:{worker_name}"


WAKE_PREFIX = f"{PREFIX}:wake:"


def wake_key(queue_key: str) -> str:
    """The list an enqueue on ``queue_key`` pushes a token to, which an idle worker blocks on."""
    return WAKE_PREFIX + queue_key


def entry(queue_key: bytes, job_id: bytes) -> bytes:
    """A processing-list entry, exactly as the take script writes it."""
    return queue_key + b"\0" + job_id


class Fetcher:
    """One worker's fetch over its queue keys, most urgent first."""

    def __init__(self, connection: Redis, worker_name: str, queue_keys: Sequence[str]) -> None:
        self.connection = connection
        self.worker_name = worker_name
        self.processing_key = processing_key(worker_name)
        self._keys = [self.processing_key, PROCESSING_SET, PAUSED_SET, *queue_keys]
        prefix = Queue.redis_queue_namespace_prefix
        self._names = [base_queue_name(key.removeprefix(prefix)) for key in queue_keys]
        self._wake_keys = [wake_key(key) for key in queue_keys]
        self._take: Callable[..., Any] = connection.register_script(_TAKE)

    def take(self) -> tuple[bytes, bytes] | None:
        """Move the first waiting id of the most urgent non-empty queue that is not paused to the
        processing list; returns ``(queue key, job id)``, or None when there is none."""
        found: list[bytes] | None = self._take(keys=self._keys, args=[self.worker_name, *self._names])
        if not found:
            return None
        queue_key, job_id = found
        return queue_key, job_id

    def wait(self, seconds: float = WAIT_SECONDS) -> None:
        """Block until an enqueue on one of the queues wakes this worker, or ``seconds`` pass."""
        self.connection.blpop(self._wake_keys, seconds)


def give_back_dead(connection: Redis, alive: Callable[[str], bool]) -> int:
    """Put the ids in dead workers' processing lists back on the front of their queues."""
    given = 0
    script = connection.register_script(_GIVE_BACK)
    names: set[bytes] = connection.smembers(PROCESSING_SET)  # type: ignore[assignment]
    for raw_name in names:
        name = raw_name.decode(errors="replace")
        if alive(name):
            continue
        keys = [processing_key(name), PROCESSING_SET]
        given += int(script(keys=keys, args=[raw_name, WAKE_PREFIX, WAKE_TOKENS]))
    return given


def push_wake(pipeline: Pipeline, queue_key: str, count: int) -> None:
    """Add ``count`` wake tokens (capped) for ``queue_key`` to a transaction that enqueues there."""
    key = wake_key(queue_key)
    pipeline.rpush(key, *["1"] * min(count, WAKE_TOKENS))
    pipeline.ltrim(key, -WAKE_TOKENS, -1)
