"""jobadapter for Django: a django.tasks backend onto Celery, RQ and Dramatiq.

``TASKS = {"default": {"BACKEND": "jobadapter.django.TaskBackend", ...}}`` (see
`backend.TaskBackend`). This package imports Django; the core never does.
docs/django.md has the whole story.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobadapter.django.backend import TaskBackend

__all__ = ["TaskBackend"]


def __getattr__(name: str) -> Any:
    # Lazy: INSTALLED_APPS imports this package before the app registry is ready, when the
    # backend's django.tasks imports must not run yet.
    if name == "TaskBackend":
        from jobadapter.django.backend import TaskBackend

        return TaskBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
