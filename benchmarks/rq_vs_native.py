"""jobadapter-rq against plain RQ, on the same Redis in the same run: what the adapter costs.

- single: ``NoopJob.perform_later()`` against ``queue.enqueue(noop)``;
- bulk: ``perform_all_later`` of 500 jobs against ``queue.enqueue_many`` of 500.

Both sides use RQ's JSON serializer (jobadapter never pickles, and comparing
against pickle would measure the serializer, not the adapter). Rounds alternate
between the two sides so drift in the machine's load hits both alike; each
ratio is the median over the rounds (jobadapter time / native time, so 1.05
means jobadapter is 5 % slower). Jobs are only enqueued, never run; the script
empties its Redis database (6379/5) before and after.

    uv run --frozen python benchmarks/rq_vs_native.py
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from jobadapter_rq.adapter import RQAdapter
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from jobadapter import Job, config, perform_all_later

REDIS = "redis://127.0.0.1:6379/5"
ROUNDS = 9
SINGLE = 500
BULK = 500


NOOP = "rq_vs_native.noop"
"""The native side's no-op function, by dotted name (RQ refuses functions of ``__main__``);
a name is what RQ stores anyway, and skips the function-to-name step, if anything favouring native."""


def noop() -> None:
    """The native side's job, were a worker to run it (none does here)."""


class NoopJob(Job):
    job_name = "benchmarks.rq_vs_native.NoopJob"  # a script's class, only ever enqueued
    queue_as = "bench"

    def perform(self) -> None:
        """Never run: the benchmark measures enqueueing."""


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main() -> None:
    redis = Redis.from_url(REDIS)
    redis.flushdb()
    adapter = config.configure(url=f"rq+{REDIS}")
    assert isinstance(adapter, RQAdapter)
    native = Queue("bench", connection=redis, serializer=JSONSerializer)

    def ours_single() -> None:
        for _ in range(SINGLE):
            NoopJob.perform_later()

    def native_single() -> None:
        for _ in range(SINGLE):
            native.enqueue(NOOP)

    def ours_bulk() -> None:
        perform_all_later([NoopJob() for _ in range(BULK)])

    def native_bulk() -> None:
        native.enqueue_many([Queue.prepare_data(NOOP) for _ in range(BULK)])

    comparisons = {"single": (ours_single, native_single), "bulk": (ours_bulk, native_bulk)}
    ratios: dict[str, list[float]] = {name: [] for name in comparisons}
    per_job: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in comparisons}
    try:
        for ours, theirs in comparisons.values():  # warm both paths up (connections, imports)
            ours()
            theirs()
        redis.flushdb()
        for round_number in range(ROUNDS):
            for name, (ours, theirs) in comparisons.items():
                first, second = (ours, theirs) if round_number % 2 == 0 else (theirs, ours)
                elapsed = {first: timed(first), second: timed(second)}
                count = SINGLE if name == "single" else BULK
                per_job[name][0].append(elapsed[ours] / count * 1e6)
                per_job[name][1].append(elapsed[theirs] / count * 1e6)
                ratios[name].append(elapsed[ours] / elapsed[theirs])
                redis.flushdb()
    finally:
        redis.flushdb()
        adapter.close()
        redis.close()
    for name in comparisons:
        ours_us, native_us = (statistics.median(values) for values in per_job[name])
        print(
            f"{name:6}  jobadapter {ours_us:7.1f} µs/job  native {native_us:7.1f} µs/job  "
            f"ratio {statistics.median(ratios[name]):.2f}  (median of {ROUNDS})"
        )


if __name__ == "__main__":
    main()
