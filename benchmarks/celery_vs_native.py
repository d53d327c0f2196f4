"""jobadapter on Celery vs native Celery publishing, on the same broker, app and run.

    uv run --frozen python benchmarks/celery_vs_native.py [--single 500] [--bulk 1000] [--runs 5]

For each broker (RabbitMQ, Redis DB 7): ``perform_later`` vs ``apply_async`` of a
no-op task, one at a time; and ``perform_all_later`` vs the fastest native way
to publish many (one producer inside kombu's ``Producer.batch()``). Runs
alternate so drift hits both sides alike; each ratio is the median of the runs
(jobadapter time / native time: 1.00 is parity). Nothing consumes the
messages: the queue is deleted at the end.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

from jobadapter_celery.adapter import CeleryAdapter
from kombu.entity import Queue

from jobadapter import Job, config, perform_all_later

BROKERS = {
    "amqp": "celery+amqp://guest:guest@127.0.0.1:5672//",
    "redis": "celery+redis://127.0.0.1:6379/7",
}


class BenchJob(Job):
    job_name = "benchmarks.celery_vs_native.BenchJob"  # a script's class, only ever enqueued

    def perform(self, n: int) -> None:
        """A no-op: only publishing is measured."""


def timed(action: Callable[[], None]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def ratios(ours: Callable[[], None], native: Callable[[], None], runs: int) -> list[float]:
    """ours/native per run, the side that goes first alternating: a burst of publishes leaves
    the broker busy for a moment, which would otherwise always slow down the same side."""
    found = []
    for run in range(runs):
        if run % 2:
            native_time = timed(native)
            ours_time = timed(ours)
        else:
            ours_time = timed(ours)
            native_time = timed(native)
        found.append(ours_time / native_time)
        time.sleep(0.2)
    return found


def measure(url: str, single: int, bulk: int, runs: int) -> tuple[float, float]:
    adapter = config.build_adapter(url)
    assert isinstance(adapter, CeleryAdapter)
    app = adapter.app
    queue = f"jac-bench-{uuid.uuid4().hex[:8]}"

    @app.task(name="bench.noop", shared=False)  # type: ignore[untyped-decorator]
    def noop(n: int) -> None:
        """The native counterpart of BenchJob."""

    def native_single() -> None:
        for n in range(single):
            noop.apply_async((n,), queue=queue)

    def ours_single() -> None:
        for n in range(single):
            BenchJob.set(queue=queue).perform_later(n)

    def native_bulk() -> None:
        with app.producer_or_acquire() as producer, producer.batch():
            for n in range(bulk):
                noop.apply_async((n,), queue=queue, producer=producer)

    def ours_bulk() -> None:
        jobs = [BenchJob(n) for n in range(bulk)]
        for job in jobs:
            job.queue_name = queue
        perform_all_later(jobs)

    try:
        with config.override(adapter):
            native_single()  # warm up connections, queue declaration, code paths
            ours_single()
            singles = ratios(ours_single, native_single, runs)
            bulks = ratios(ours_bulk, native_bulk, runs)
    finally:
        with app.connection_for_write() as connection:
            bound: Any = Queue(queue)(connection.default_channel)  # type: ignore[no-untyped-call]
            bound.delete()
        adapter.close()
    return statistics.median(singles), statistics.median(bulks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--single", type=int, default=500, help="jobs per single-enqueue run")
    parser.add_argument("--bulk", type=int, default=1000, help="jobs per bulk run")
    parser.add_argument("--runs", type=int, default=7, help="runs per measurement (median)")
    options = parser.parse_args()
    for broker, url in BROKERS.items():
        single, bulk = measure(url, options.single, options.bulk, options.runs)
        print(f"{broker:5}  perform_later / apply_async:            {single:.2f}")
        print(f"{broker:5}  perform_all_later / batched apply_async: {bulk:.2f}")


if __name__ == "__main__":
    main()
