"""jobadapter on Dramatiq vs Dramatiq itself: the cost of ``perform_later`` over a native ``send``.

    uv run --frozen python benchmarks/dramatiq_vs_native.py

For each broker (RabbitMQ on 127.0.0.1:5672, Redis database 11) it times, on
the same broker object and in the same run, alternating to share the noise:

- single: ``NoOpJob.perform_later()`` vs ``noop.send()`` of a no-op actor;
- bulk: ``perform_all_later`` of a batch vs native ``send`` in a loop (Dramatiq
  has no bulk publish; ``group(...).run()`` is that same loop).

Each figure is the median of several rounds; the ratio is jobadapter / native
(1.00 = as fast as native). Queues are private to the run and deleted after.
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
ROUNDS = 7
SINGLE = 300
BATCH = 1000
QUEUE = f"dq-bench-{uuid.uuid4().hex[:8]}"


class NoOpJob(Job):
    queue_as = QUEUE

    def perform(self) -> None:
        """Nothing: only the enqueue is measured."""


def _timed(action: Callable[[], object], times: int) -> float:
    started = time.perf_counter()
    for _ in range(times):
        action()
    return (time.perf_counter() - started) / times


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


def bench(url: str) -> tuple[float, float, float, float]:
    adapter = config.build_adapter(url)
    assert isinstance(adapter, DramatiqAdapter)
    noop = dramatiq.actor(lambda: None, actor_name="bench_noop", queue_name=QUEUE, broker=adapter.broker)
    singles: dict[str, list[float]] = {"jobadapter": [], "native": []}
    bulks: dict[str, list[float]] = {"jobadapter": [], "native": []}
    with config.override(adapter):
        NoOpJob.perform_later()  # connect and declare before timing
        noop.send()
        for _ in range(ROUNDS):
            singles["native"].append(_timed(noop.send, SINGLE))
            singles["jobadapter"].append(_timed(NoOpJob.perform_later, SINGLE))
            _purge(adapter)
            started = time.perf_counter()
            for _ in range(BATCH):
                noop.send()
            bulks["native"].append(time.perf_counter() - started)
            batch = [NoOpJob() for _ in range(BATCH)]
            started = time.perf_counter()
            perform_all_later(batch)
            bulks["jobadapter"].append(time.perf_counter() - started)
            _purge(adapter)
    _drop(adapter)
    adapter.close()
    return (
        statistics.median(singles["jobadapter"]),
        statistics.median(singles["native"]),
        statistics.median(bulks["jobadapter"]),
        statistics.median(bulks["native"]),
    )


def main() -> int:
    print(f"median of {ROUNDS} rounds; single = {SINGLE} enqueues, bulk = {BATCH} jobs")
    for url in URLS:
        ja_single, native_single, ja_bulk, native_bulk = bench(url)
        scheme = url.split("://")[0]
        print(
            f"{scheme:<15} single: {ja_single * 1e6:7.1f} µs vs native {native_single * 1e6:7.1f} µs"
            f"  ratio {ja_single / native_single:.2f}   |   bulk: {ja_bulk * 1e3:7.1f} ms vs native loop "
            f"{native_bulk * 1e3:7.1f} ms  ratio {ja_bulk / native_bulk:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
