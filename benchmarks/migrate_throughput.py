"""``jobadapter migrate`` throughput: 10,000 pending jobs from RQ to Celery on RabbitMQ.

Beside the move, the same run measures what the target can take at best:
Celery-on-RabbitMQ's bulk enqueue (``enqueue_all`` in batches of the move's
size) and its single enqueue, so the move's rate reads against both. RQ runs on
a redis-server of its own; the RabbitMQ queues are ``jac-migrate-bench-…`` and
deleted at the end.

    uv run --frozen python benchmarks/migrate_throughput.py [--jobs 10000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from jobadapter import config
from jobadapter.adapters.base import Adapter, EnqueueRequest
from jobadapter.envelope import Envelope
from jobadapter.faults.brokers import PrivateRedis
from jobadapter.migrate import DEFAULT_BATCH, Plan, move, move_name
from jobadapter.migrate.ledger_sql import SqlLedger

AMQP = "celery+amqp://guest:guest@127.0.0.1:5672//"
SINGLE = 1000
"""Single enqueues timed per round (the rate, not the count, is what matters)."""


def envelopes(queue: str, count: int) -> list[Envelope]:
    now = datetime.now(timezone.utc)
    return [
        Envelope("benchmarks.Noop", str(uuid.uuid4()), queue, None, [n, "x" * 40], {}, 0, {}, now)
        for n in range(count)
    ]


def timed_bulk(adapter: Adapter, jobs: list[Envelope]) -> float:
    started = time.perf_counter()
    for start in range(0, len(jobs), DEFAULT_BATCH):
        adapter.enqueue_all([EnqueueRequest(e) for e in jobs[start : start + DEFAULT_BATCH]])
    return len(jobs) / (time.perf_counter() - started)


def timed_single(adapter: Adapter, jobs: list[Envelope]) -> float:
    started = time.perf_counter()
    for envelope in jobs:
        adapter.enqueue(envelope, {})
    return len(jobs) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    prefix = f"jac-migrate-bench-{uuid.uuid4().hex[:8]}"
    moved, bulk, single = [], [], []
    with PrivateRedis(persistent=False) as server, tempfile.TemporaryDirectory() as folder:
        source = config.build_adapter(f"rq+redis://127.0.0.1:{server.port}/0")
        target = config.build_adapter(AMQP)
        queues = [f"{prefix}-move", f"{prefix}-bulk", f"{prefix}-single"]
        try:
            for round_number in range(options.rounds):
                bulk.append(timed_bulk(target, envelopes(queues[1], options.jobs)))
                single.append(timed_single(target, envelopes(queues[2], SINGLE)))
                source.enqueue_all([EnqueueRequest(e) for e in envelopes(queues[0], options.jobs)])
                ledger = SqlLedger(f"sqlite:///{Path(folder) / f'ledger-{round_number}.sqlite'}", "bench")
                report = move(source, target, Plan(queues=(queues[0],)), ledger)
                ledger.close()
                assert report.moved == options.jobs, f"moved {report.moved} of {options.jobs}"
                moved.append(report.rate)
                target.purge(queues)
        finally:
            target.purge(queues)
            source.close()
            target.close()
    print(f"{move_name(source, target)}: {options.jobs:,} pending jobs, {options.rounds} rounds (median)")
    print(f"  move (list, publish, ledger, delete) {statistics.median(moved):8,.0f} jobs/s")
    print(f"  target bulk enqueue_all ({DEFAULT_BATCH} a call) {statistics.median(bulk):8,.0f} jobs/s")
    print(f"  target single enqueue             {statistics.median(single):8,.0f} jobs/s")


if __name__ == "__main__":
    main()
