"""The jobs tests/test_otel_workers.py runs in real workers (``--app tests.otel_worker_jobs``)."""

from __future__ import annotations

from jobadapter import Job, retry_on


class Greeting(Job):
    def perform(self, name: str) -> str:
        return f"hello {name}"


@retry_on(TimeoutError, wait=0, attempts=3, jitter=0)
class SlowTwice(Job):
    """Fails its first two executions, then succeeds."""

    def perform(self) -> None:
        if self.executions <= 2:
            raise TimeoutError(f"slow on {self.executions}")
