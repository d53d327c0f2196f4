"""jobadapter on Dramatiq vs Dramatiq itself: the cost of ``perform_later`` over a native ``send``.

    uv run --frozen python benchmarks/dramatiq_vs_native.py

For each broker (RabbitMQ on 127.0.0.1:5672, Redis database 11) it times, on
the same broker object and in the same run, alternating to share the noise:

- single: ``NoOpJob.perform_later()`` vs ``noop.send()`` of a no-op actor;
- bulk: ``perform_all_later`` of a batch vs native ``send`` in a loop (Dramatiq
  has no bulk publish; ``group(...).run()`` is that same loop).

Rounds alternate which side goes first, so drift in the machine's load hits
both alike. Each figure is the median over the rounds, and the ratio is the
median of the per-round ratios jobadapter / native (1.00 = as fast as native).
Queues are private to the run and deleted after.
"""

from __future__ import annotations

import statistics
import sys
import time
import uuid
from collections.abc import Callable

import dramatiq
from jobadapter_dramatiq.adapter import DramatiqAdapter, RabbitmqAdapter

from jobadapter import Job, config, perform_all_later

URLS = ("dramatiq+amqp://guest:guest@127.0.0.1:5672", "dramatiq+redis://127.0.0.1:6379/11")
ROUNDS = 15
SINGLE = 300
BATCH = 1000
QUEUE = f"dq-bench-{uuid.uuid4().hex[:8]}"


class NoOpJob(Job):
    job_name = "benchmarks.dramatiq_vs_native.NoOpJob"  # a script's class, only ever enqueued
    queue_as = QUEUE

    def perform(self) -> None:
        """Nothing: only the enqueue is measured."""


def _timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _purge(adapter: DramatiqAdapter) -> None:
    adapter.broker.flush(QUEUE)


def _drop(adapter: DramatiqAdapter) -> None:
    if isinstance(adapter, RabbitmqAdapter):
        channel = adapter.broker.connection.channel()
        for suffix in ("", ".DQ", ".XQ"):
            channel.queue_delete(QUEUE + suffix)
        channel.close()
    else:
        _purge(adapter)


def bench(url: str) -> dict[str, tuple[float, float, float]]:
    """Per comparison: (jobadapter µs/job, native µs/job, median of the per-round ratios)."""
    adapter = config.build_adapter(url)
    assert isinstance(adapter, DramatiqAdapter)
    noop = dramatiq.actor(lambda: None, actor_name="bench_noop", queue_name=QUEUE, broker=adapter.broker)

    def ours_single() -> None:
        for _ in range(SINGLE):
            NoOpJob.perform_later()

    def native_single() -> None:
        for _ in range(SINGLE):
            noop.send()

    def ours_bulk() -> None:
        perform_all_later([NoOpJob() for _ in range(BATCH)])

    def native_bulk() -> None:
        for _ in range(BATCH):
            noop.send()

    comparisons = {"single": (ours_single, native_single, SINGLE), "bulk": (ours_bulk, native_bulk, BATCH)}
    samples: dict[str, tuple[list[float], list[float], list[float]]] = {
        name: ([], [], []) for name in comparisons
    }
    with config.override(adapter):
        NoOpJob.perform_later()  # connect and declare before timing
        noop.send()
        for round_number in range(ROUNDS):
            for name, (ours, theirs, count) in comparisons.items():
                first, second = (ours, theirs) if round_number % 2 == 0 else (theirs, ours)
                elapsed = {first: _timed(first), second: _timed(second)}
                ours_us, theirs_us, ratios = samples[name]
                ours_us.append(elapsed[ours] / count * 1e6)
                theirs_us.append(elapsed[theirs] / count * 1e6)
                ratios.append(elapsed[ours] / elapsed[theirs])
                _purge(adapter)
    _drop(adapter)
    adapter.close()
    return {
        name: (statistics.median(ours_us), statistics.median(theirs_us), statistics.median(ratios))
        for name, (ours_us, theirs_us, ratios) in samples.items()
    }


def main() -> int:
    print(f"median of {ROUNDS} rounds; single = {SINGLE} enqueues, bulk = {BATCH} jobs")
    for url in URLS:
        scheme = url.split("://")[0]
        for name, (ours_us, native_us, ratio) in bench(url).items():
            print(
                f"{scheme:<15} {name:6}  jobadapter {ours_us:7.1f} µs/job  native {native_us:7.1f} µs/job"
                f"  ratio {ratio:.3f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
