"""Jobs (and a native Celery app) for the celery adapter's own tests: the workers' ``--app``.

Jobs report through the conformance probe (``JOBADAPTER_PROBE``), so a test
sees what a worker process did without a server of its own.
"""

from __future__ import annotations

import os
from pathlib import Path

from celery import Celery, current_task  # type: ignore[import-untyped]

from jobadapter import Job, retry_on
from jobadapter.conformance.probe import ENVIRONMENT_VARIABLE, record
from jobadapter.faults.brokers import shared_amqp, shared_redis_db

ATTACH_BROKER = shared_redis_db(2)

native_app = Celery("native", broker=ATTACH_BROKER, backend=ATTACH_BROKER, set_as_current=False)
native_app.conf.update(task_serializer="json", accept_content=["json"], worker_hijack_root_logger=False)

native_amqp_app = Celery("native-amqp", broker=shared_amqp(), set_as_current=False)
native_amqp_app.conf.update(task_serializer="json", accept_content=["json"], worker_hijack_root_logger=False)
"""An existing Celery app on RabbitMQ that declares its queues without priorities."""


@native_app.task(name="native.add")  # type: ignore[untyped-decorator]
def add(label: str, a: int, b: int) -> int:
    """A task of the application being ported, untouched."""
    record(label, "native", None, {"sum": a + b})
    return a + b


class Flaky(Exception):
    pass


class NoteJob(Job):
    def perform(self, label: str) -> None:
        record(label, "performed", self)


class LimitsJob(Job):
    """Records the time limits and expiry of the Celery message that ran it."""

    def perform(self, label: str) -> None:
        request = current_task.request
        detail = {"timelimit": request.timelimit, "expires": request.expires, "argsrepr": request.argsrepr}
        record(label, "performed", self, detail)


@retry_on(Flaky, wait=0.2, attempts=3, jitter=0)
class RetryOnceJob(Job):
    def perform(self, label: str) -> None:
        record(label, "performed", self, {"argsrepr": current_task.request.argsrepr})  # what Flower shows
        if self.executions == 1:
            raise Flaky(f"{label} first attempt")


class FailOnceJob(Job):
    """Fails unhandled the first time its label runs: a dead-lettered job retried later succeeds."""

    def perform(self, label: str) -> None:
        record(label, "performed", self)
        marker = Path(os.environ[ENVIRONMENT_VARIABLE]).with_name(f"{label}.failed-once")
        if not marker.exists():
            marker.touch()
            raise Flaky(f"{label} fails once")
