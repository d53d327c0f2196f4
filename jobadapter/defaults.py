"""Process-wide job defaults, set with ``jobadapter.configure(...)``: ActiveJob's
``queue_name_prefix``, ``queue_name_delimiter``, ``default_queue_name``,
``default_priority`` and ``retry_jitter``.

They are read when a job is created (queue and priority) or when a retry's delay is
computed (jitter), not when a job class is defined: a class imported before the
application called ``configure()`` still gets them. A name that came off the wire (a
worker loading an envelope, a retry, a migration) is already complete and is never
prefixed again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from jobadapter.errors import ConfigurationError


@dataclass(frozen=True)
class JobDefaults:
    queue_name_prefix: str | None = None
    """Prepended to every queue name a job class or ``set(queue=...)`` gives, with the delimiter."""
    queue_name_delimiter: str = "_"
    default_queue_name: str = "default"
    """The queue of a job class that declares no ``queue_as`` (or ``queue_as = None``)."""
    default_priority: int | None = None
    """The priority of a job class that declares no ``priority``/``priority_as``."""
    retry_jitter: float = 0.15
    """What ``retry_on(jitter=None)`` (the default) adds: up to this share of each delay."""
    enqueue_after_transaction_commit: bool = False
    """Whether a class that does not say waits for the commit of an open transaction
    (`jobadapter.transactions`; Rails 7.2's setting of the same name)."""


active = JobDefaults()
"""The defaults in force; replaced (never changed in place) by `update` and `reset`."""
FIELDS = frozenset(JobDefaults.__dataclass_fields__)


def update(**changes: Any) -> None:
    """Change the named defaults, checked; the others keep their values."""
    global active
    unknown = set(changes) - FIELDS
    if unknown:
        raise ConfigurationError(
            f"no job default {', '.join(sorted(unknown))}; defaults are {', '.join(sorted(FIELDS))}"
        )
    updated = replace(active, **changes)
    _check(updated)
    active = updated


def reset() -> None:
    global active
    active = JobDefaults()


def queue_name(part: str | None) -> str:
    """The queue a job class or an enqueue option names, as Rails' ``queue_name_from_part``:
    the default queue for None, then the prefix and delimiter if a prefix is set."""
    name = active.default_queue_name if part is None else part
    prefix = active.queue_name_prefix
    return f"{prefix}{active.queue_name_delimiter}{name}" if prefix else name


def _check(defaults: JobDefaults) -> None:
    for field in ("queue_name_delimiter", "default_queue_name"):
        if not isinstance(getattr(defaults, field), str):
            raise ConfigurationError(f"{field} must be a str, not {getattr(defaults, field)!r}")
    if not defaults.default_queue_name:
        raise ConfigurationError("default_queue_name must not be empty")
    prefix = defaults.queue_name_prefix
    if prefix is not None and not isinstance(prefix, str):
        raise ConfigurationError(f"queue_name_prefix must be a str or None, not {prefix!r}")
    priority = defaults.default_priority
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        raise ConfigurationError(f"default_priority must be an int or None, not {priority!r}")
    jitter = defaults.retry_jitter
    if isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or jitter < 0:
        raise ConfigurationError(f"retry_jitter must be a number >= 0, not {jitter!r}")
    waits = defaults.enqueue_after_transaction_commit
    if not isinstance(waits, bool):
        raise ConfigurationError(f"enqueue_after_transaction_commit must be True or False, not {waits!r}")
