"""``jobadapter.django.TaskBackend``: django.tasks on Celery, RQ and Dramatiq, through jobadapter.

::

    TASKS = {"default": {"BACKEND": "jobadapter.django.TaskBackend",
                         "QUEUES": ["default", "mail"],
                         "OPTIONS": {"url": "rq+redis://127.0.0.1:6379/0"}}}

Each ``@task`` function runs as a jobadapter job of the same name (`tasks.TaskJob`),
through the adapter the URL names (the default adapter when there is none: ``JOBADAPTER_URL``
or ``settings.JOBADAPTER``). Results come from the adapter and the journal.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone
from typing_extensions import ParamSpec

from jobadapter import config, journal
from jobadapter.adapters.base import Adapter, AdapterURL, Capability
from jobadapter.django.compat import (
    BaseTaskBackend,
    InvalidTask,
    Task,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
)
from jobadapter.django.tasks import job_priority, result_from_record, task_job_class
from jobadapter.errors import ConfigurationError
from jobadapter.operations import JobNotFound, look_up

P = ParamSpec("P")
T = TypeVar("T")
OPTIONS = frozenset({"url"})
"""The keys ``OPTIONS`` may hold."""
DEFAULT_PORTS = {"redis": 6379, "rediss": 6380, "amqp": 5672, "amqps": 5671, "pyamqp": 5672}
REACH_TIMEOUT = 1.0
"""Seconds the system check waits for the broker to accept a connection."""


class TaskBackend(BaseTaskBackend):
    """The django.tasks backend contract, carried out by a jobadapter adapter.

    ``OPTIONS``: ``url``, the adapter URL (``rq+redis://…``, ``celery+amqp://…``,
    ``dramatiq+redis://…``); without it, the default adapter. Priorities map onto
    jobadapter's (`tasks.job_priority`); ``run_after`` is a delayed enqueue.
    """

    supports_defer = True
    supports_priority = True
    supports_async_task = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        options: Mapping[str, Any] = self.options
        unknown = set(options) - OPTIONS
        if unknown:
            raise ImproperlyConfigured(
                f"TASKS[{alias!r}]['OPTIONS'] has unknown key(s) {', '.join(sorted(unknown))}; "
                f"jobadapter.django.TaskBackend takes {', '.join(sorted(OPTIONS))}"
            )
        url = options.get("url")
        if url is not None:
            try:
                AdapterURL.parse(url)
            except ConfigurationError as error:
                raise ImproperlyConfigured(f"TASKS[{alias!r}]['OPTIONS']['url']: {error}") from error
        self.url: str | None = url

    @property
    def supports_get_result(self) -> bool:  # type: ignore[override]
        """Results are there to read where a journal is configured or the adapter looks jobs up."""
        if journal.active() is not None:
            return True
        try:
            return Capability.INSPECT in self.adapter().capabilities
        except ConfigurationError:
            return False

    def adapter(self) -> Adapter:
        """The adapter this backend's tasks go to."""
        return config.adapter(self.url or "default")

    def validate_task(self, task: Task[Any, Any]) -> None:
        super().validate_task(task)
        try:
            task_job_class(task, self.url)
        except ConfigurationError as error:
            raise InvalidTask(str(error)) from error

    def enqueue(
        self,
        task: Task[P, T],
        args: P.args,  # type: ignore[valid-type]
        kwargs: P.kwargs,  # type: ignore[valid-type]
    ) -> TaskResult[T]:
        self.validate_task(task)
        job_class = task_job_class(task, self.url)
        run_after = task.run_after
        if run_after is not None and timezone.is_naive(run_after):
            run_after = timezone.make_aware(run_after)  # USE_TZ = False: the project's local time
        job = job_class.set(
            queue=task.queue_name, priority=job_priority(task.priority), wait_until=run_after
        ).perform_later(*args, **kwargs)
        return job.task_result(TaskResultStatus.READY, args, kwargs, worker_ids=[])

    def get_result(self, result_id: str) -> TaskResult[Any]:
        try:
            record = look_up(self.adapter(), result_id)
        except JobNotFound:
            raise TaskResultDoesNotExist(result_id) from None
        return result_from_record(record, self)

    def check(self, **kwargs: Any) -> Iterable[checks.CheckMessage]:
        """An adapter that cannot be built (a missing package, a bad URL) or a broker that does
        not accept a connection is an error of ``manage.py check``."""
        yield from super().check(**kwargs)
        try:
            adapter = self.adapter()
        except ConfigurationError as error:
            yield checks.Error(str(error), obj=f"TASKS[{self.alias!r}]", id="jobadapter.E001")
            return
        reached = _unreachable(adapter.url)
        if reached is not None:
            yield checks.Error(
                f"the broker of {adapter.url.redacted} does not accept connections: {reached}",
                hint="start the broker, or fix TASKS['OPTIONS']['url'] / JOBADAPTER_URL",
                obj=f"TASKS[{self.alias!r}]",
                id="jobadapter.E002",
            )


def _unreachable(url: AdapterURL) -> str | None:
    """Why the broker at ``url`` refused a TCP connection, or None when it accepted one (or the
    URL names no network broker: an in-process adapter, an attached Celery app)."""
    if not url.target:
        return None
    parts = urlsplit(url.target)
    port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    if not parts.hostname or port is None:
        return None
    try:
        with socket.create_connection((parts.hostname, port), timeout=REACH_TIMEOUT):
            return None
    except OSError as error:
        return f"{parts.hostname}:{port}: {os.strerror(error.errno) if error.errno else error}"
