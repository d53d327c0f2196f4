"""Job classes by name: the only way a worker turns a payload into code.

A worker never imports a name it reads from a payload. Job classes register
themselves when their module is imported (``Job.__init_subclass__``), so the
set of runnable classes is exactly what the worker's ``--app`` modules define.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from jobadapter.errors import ConfigurationError, UnknownJobError

if TYPE_CHECKING:
    from jobadapter.job import Job

_logger = logging.getLogger("jobadapter")
_classes: dict[str, type[Job]] = {}


def register(job_class: type[Job]) -> None:
    """Make ``job_class`` runnable under its ``job_name``.

    A later class with the same name replaces the earlier one: that is what a
    module reload or a test that defines its job inside a function does. A class
    whose own body sets ``abstract = True`` is a base for job classes (an
    ``ApplicationJob``), not a job a payload may name: it is not registered.
    """
    if vars(job_class).get("abstract") is True:
        return
    name = job_class.job_name
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"{job_class.__qualname__}.job_name must be a non-empty string")
    previous = _classes.get(name)
    if previous is not None and previous is not job_class:
        _logger.debug("job name %s now refers to a new class %r", name, job_class)
    _classes[name] = job_class


def lookup(name: str) -> type[Job]:
    """The class registered as ``name``; `UnknownJobError` if there is none."""
    try:
        return _classes[name]
    except KeyError:
        raise UnknownJobError(
            f"job class {name!r} is not registered in this process: "
            "pass the module that defines it to the worker's --app"
        ) from None


def registered() -> dict[str, type[Job]]:
    """A snapshot of every registered job class by name."""
    return dict(_classes)


def declared_queues() -> list[str]:
    """The queues a worker consumes when it is given none: the default queue, every registered
    job class's ``queue_as`` (when it is a name, not a callable) and every queue its ``retry_on``
    rules move a retry to, each with the configured ``queue_name_prefix``. The same on every
    adapter, so that a job whose class declares ``queue_as = "mail"`` runs on a worker started
    with ``--app`` and no ``--queues``."""
    from jobadapter import defaults
    from jobadapter.rescue import RetryRule

    names = {defaults.queue_name(None)}
    for job_class in _classes.values():
        if isinstance(job_class._queue_as, str):
            names.add(defaults.queue_name(job_class._queue_as))
        for klass in job_class.__mro__:
            for rule in vars(klass).get("_own_rules", ()):
                if isinstance(rule, RetryRule) and rule.queue is not None:
                    names.add(defaults.queue_name(rule.queue))
    return sorted(names)
