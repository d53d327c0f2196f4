"""What the core costs per job, without any backend: µs per job for a 3-argument job.

- enqueue side: ``perform_later`` through a no-op adapter (build the job, run the
  enqueue path, serialize the arguments, build and encode the envelope);
- worker side: ``execute(payload)`` (decode and validate the envelope, look the
  class up, load the arguments, run the perform path of a no-op ``perform``).

    uv run nox -s benchmarks      # or: uv run python benchmarks/core_overhead.py
"""

from __future__ import annotations

import statistics
import timeit
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from jobadapter import Job, config
from jobadapter.adapters.base import Adapter, AdapterURL
from jobadapter.envelope import Envelope
from jobadapter.execution import execute

ROUNDS = 7
NUMBER = 20_000


class NullAdapter(Adapter):
    """Accepts every envelope (encoding it, as a real adapter must) and keeps the last one."""

    name = "Null"

    def __init__(self) -> None:
        super().__init__(AdapterURL.parse("null://"))
        self.last = ""

    def enqueue(self, envelope: Envelope, options: Mapping[str, Any]) -> str | None:
        self.last = envelope.encode()
        return envelope.job_id

    def enqueue_at(self, envelope: Envelope, at: datetime, options: Mapping[str, Any]) -> str | None:
        return self.enqueue(envelope, options)


class ThreeArgumentJob(Job):
    def perform(self, record_id: int, name: str, ratio: float) -> None:
        pass


def _microseconds(statement: Any) -> float:
    runs = timeit.repeat(statement, number=NUMBER, repeat=ROUNDS)
    return statistics.median(runs) / NUMBER * 1e6


def main() -> None:
    import logging

    logging.getLogger("jobadapter").setLevel(logging.WARNING)
    adapter = NullAdapter()
    with config.override(adapter):
        enqueue = _microseconds(lambda: ThreeArgumentJob.perform_later(42, "name", 0.5))
        payload = adapter.last
        dispatch = _microseconds(lambda: execute(payload, adapter))
    print(f"enqueue (perform_later → encoded envelope): {enqueue:6.1f} µs/job")
    print(f"dispatch (payload → decoded → performed):   {dispatch:6.1f} µs/job")
    print(f"(median of {ROUNDS} rounds of {NUMBER:,} jobs, logging at WARNING)")


if __name__ == "__main__":
    main()
