"""jobadapter's side of ``worker_drain.py``: ``jobadapter worker --app _drain_jobs``."""

from __future__ import annotations

from _drain import QUEUE, drained, pinged

from jobadapter import Job


class DrainJob(Job):
    queue_as = QUEUE

    def perform(self) -> None:
        drained()


class PingJob(Job):
    queue_as = QUEUE

    def perform(self) -> None:
        pinged()
