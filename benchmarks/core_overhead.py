"""What the core costs per job, without any backend: µs per job for a 3-argument job.

- enqueue side: ``perform_later`` through a no-op adapter (build the job, run the
  enqueue path, serialize the arguments, build and encode the envelope);
- worker side: ``execute(payload)`` (decode and validate the envelope, look the
  class up, load the arguments, run the perform path of a no-op ``perform``),
  with the ``jobadapter`` logger at WARNING (no log line is even built), at
  INFO with a handler writing its "Performing…" and "Performed…" lines to a
  file (in ``jobadapter worker``'s format), and at INFO through the queue
  handler ``jobadapter worker`` installs (`jobadapter.logging.queued_output`),
  its listener thread writing to the same file.

    uv run nox -s benchmarks      # or: uv run python benchmarks/core_overhead.py
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import tempfile
import time
import timeit
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from jobadapter import Job, config
from jobadapter.adapters.base import Adapter, AdapterURL
from jobadapter.envelope import Envelope
from jobadapter.execution import execute
from jobadapter.worker_logging import queued_output

ROUNDS = 7
NUMBER = 20_000
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""The format of ``jobadapter worker``'s log lines."""


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


def _cpu_microseconds(statement: Any) -> tuple[float, float]:
    """µs per run of ``statement`` in CPU time: of this thread (the job's), and of the whole
    process (every thread). CPU time, unlike wall time, hardly moves with the machine's load."""
    thread, process = time.thread_time(), time.process_time()
    for _ in range(NUMBER):
        statement()
    return (time.thread_time() - thread) / NUMBER * 1e6, (time.process_time() - process) / NUMBER * 1e6


def main() -> None:
    logger = logging.getLogger("jobadapter")
    logger.setLevel(logging.WARNING)
    adapter = NullAdapter()
    with config.override(adapter):
        enqueue = _microseconds(lambda: ThreeArgumentJob.perform_later(42, "name", 0.5))
        payload = adapter.last

        def run() -> None:
            execute(payload, adapter)

        dispatch = _microseconds(run)
        quiet = _cpu_microseconds(run)
        logger.setLevel(logging.INFO)
        with tempfile.TemporaryDirectory() as folder:
            handler = logging.FileHandler(Path(folder) / "direct.log")
            handler.setFormatter(logging.Formatter(LOG_FORMAT))
            logger.addHandler(handler)
            try:
                direct = _cpu_microseconds(run)
            finally:
                logger.removeHandler(handler)
                handler.close()
            with open(Path(folder) / "queued.log", "w") as output, contextlib.redirect_stderr(output):
                with queued_output(
                    logging.INFO, LOG_FORMAT
                ):  # the listener writes every line before it stops
                    started = time.process_time()
                    queued = _cpu_microseconds(run)
                queued = queued[0], (time.process_time() - started) / NUMBER * 1e6
        logger.setLevel(logging.WARNING)
    print(f"enqueue (perform_later → encoded envelope):    {enqueue:6.1f} µs/job")
    print(f"dispatch (payload → decoded → performed):      {dispatch:6.1f} µs/job   (logger at WARNING)")
    print("dispatch, CPU µs/job:                           job's thread / all threads")
    print(f"  logger at WARNING:                           {quiet[0]:6.1f} / {quiet[1]:5.1f}")
    print(f"  INFO, a file handler on the logger:          {direct[0]:6.1f} / {direct[1]:5.1f}")
    print(f"  INFO, jobadapter worker's queue handler:     {queued[0]:6.1f} / {queued[1]:5.1f}")
    print(f"(wall: median of {ROUNDS} rounds of {NUMBER:,} jobs; CPU: one run of {NUMBER:,})")


if __name__ == "__main__":
    main()
