"""django.tasks functions the tests enqueue, and run in real workers."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from jobadapter import retry_on
from jobadapter.django.compat import TaskContext, TaskResult, task, task_finished, task_started

SIGNAL_LOG = "DJANGO_SITE_SIGNAL_LOG"
"""A file each worker appends its task_started / task_finished signals to, one JSON line each."""


class Flaky(Exception):
    """Raised by `flaky` until its attempt comes."""


@task
def add(a: int, b: int) -> int:
    return a + b


@task(queue_name="mail", priority=50)
def greet(name: str) -> str:
    return f"hello {name}"


@task
def broken() -> None:
    raise ValueError("broken on purpose")


@retry_on(Flaky, wait=0, attempts=3)
@task(takes_context=True)
def flaky(context: TaskContext, path: str, succeed_on: int) -> int:
    with Path(path).open("a") as notes:
        notes.write(f"{context.attempt}\n")
    if context.attempt < succeed_on:
        raise Flaky(f"attempt {context.attempt}")
    return context.attempt


@task
def gated(gate: str, log: str, name: str) -> str:
    """Waits (at most 20 s) for the file ``gate``, then appends ``name`` to ``log``."""
    deadline = time.monotonic() + 20
    while not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    with Path(log).open("a") as lines:
        lines.write(f"{name}\n")
    return name


def _log_signal(kind: str, task_result: TaskResult[Any]) -> None:
    path = os.environ.get(SIGNAL_LOG)
    if path:
        line = {"signal": kind, "id": task_result.id, "status": str(task_result.status)}
        with Path(path).open("a") as log:
            log.write(json.dumps(line) + "\n")


def _on_started(sender: type, task_result: TaskResult[Any], **kwargs: Any) -> None:
    _log_signal("started", task_result)


def _on_finished(sender: type, task_result: TaskResult[Any], **kwargs: Any) -> None:
    _log_signal("finished", task_result)


task_started.connect(_on_started)
task_finished.connect(_on_finished)
