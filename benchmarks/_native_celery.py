"""The native Celery app of ``worker_drain.py``: ``celery -A _native_celery worker``.

``DRAIN_SETTINGS=defaults`` is a Celery app with Celery's defaults (JSON tasks);
``DRAIN_SETTINGS=jobadapter`` is the very app jobadapter's Celery adapter builds
(late acks, started state, a result backend on Redis, prefetch 1), so that the
cost of jobadapter's settings shows apart from the cost of jobadapter's code.
"""

from __future__ import annotations

import os
from typing import Any

from _drain import drained, pinged
from celery import Celery  # type: ignore[import-untyped]
from jobadapter_celery.adapter import CeleryAdapter

from jobadapter import config


def make_app(broker: str, settings: str) -> Any:
    """A Celery app on ``broker`` with ``settings`` ("defaults" or "jobadapter") and the two tasks."""
    if settings == "jobadapter":
        adapter = config.build_adapter(f"celery+{broker}")
        assert isinstance(adapter, CeleryAdapter)
        app = adapter.app
    else:
        app = Celery("bench", broker=broker, set_as_current=False)
    app.conf.worker_enable_remote_control = False  # no pidbox queues on the shared broker
    app.task(name="bench.drain", shared=False)(drained)
    app.task(name="bench.ping", shared=False)(pinged)
    return app


app = make_app(
    os.environ.get("DRAIN_BROKER", "redis://127.0.0.1:6379/12"), os.environ.get("DRAIN_SETTINGS", "")
)
