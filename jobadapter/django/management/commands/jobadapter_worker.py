"""``python manage.py jobadapter_worker``: ``jobadapter worker`` with Django set up.

The job modules are the ``jobs`` and ``tasks`` modules of the installed apps (plus
``--app``), the URL is ``--url``, else ``settings.JOBADAPTER["URL"]``, else
``$JOBADAPTER_URL``. Every job runs between two ``close_old_connections()``, as a
request does, so a worker that runs for days drops connections the database closed.
"""

from __future__ import annotations

import importlib
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import close_old_connections
from django.utils.module_loading import autodiscover_modules

from jobadapter import cli, events, registry
from jobadapter.django import settings

WORKER_MODULES = ("jobs", "tasks")
"""Modules the worker imports from every installed app: job classes and django.tasks tasks."""


class Command(BaseCommand):
    help = "Run a jobadapter worker (Celery, RQ or Dramatiq, by URL) with Django set up."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--url", help="adapter URL (default: settings.JOBADAPTER['URL'], $JOBADAPTER_URL)"
        )
        parser.add_argument("--app", action="append", default=[], help="more job modules to import")
        parser.add_argument("--queues", help="comma-separated queues (default: every declared queue)")
        parser.add_argument("--concurrency", type=int, default=1, help="jobs run at once (default 1)")
        parser.add_argument("--burst", action="store_true", help="exit once the queues are empty")
        parser.add_argument("--log-level", default="INFO", help="log level (default INFO)")

    def handle(self, *args: Any, **options: Any) -> None:
        autodiscover_modules(*WORKER_MODULES)
        importlib.import_module("jobadapter.mail")  # DeliverMailJob: deliver_later and QueuedEmailBackend
        arguments = ["worker", "--app", ",".join(_job_modules() + list(options["app"]))]
        url = options["url"] or settings.read().url
        if url:
            arguments += ["--url", url]
        if options["queues"]:
            arguments += ["--queues", options["queues"]]
        arguments += ["--concurrency", str(options["concurrency"]), "--log-level", options["log_level"]]
        if options["burst"]:
            arguments.append("--burst")
        close_old_connections()  # none may cross the fork into a backend's work process
        unsubscribe = [
            events.subscribe(name, _close_old_connections) for name in ("perform_start", "perform")
        ]
        try:
            status = cli.main(arguments)
        finally:
            for each in unsubscribe:
                each()
        if status:
            raise CommandError(f"the worker stopped with status {status}", returncode=status)


def _job_modules() -> list[str]:
    """The modules that define the registered job classes, for the worker's ``--app``."""
    return sorted({job_class.__module__ for job_class in registry.registered().values()})


def _close_old_connections(event: events.Event) -> None:
    close_old_connections()
