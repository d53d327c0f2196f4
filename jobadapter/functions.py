"""``@job``: a module-level function made into a job, for ports of Celery, RQ and Dramatiq tasks.

Python users write tasks as functions (``@shared_task``, ``@dramatiq.actor``,
``queue.enqueue(fn, ...)``). ``@job`` builds a `Job` subclass for the
function, named after it (``module.function``, so it looks native in Flower,
rq-dashboard and Dramatiq's logs), registered like any job class, and returns
a `JobFunction`: the function still runs when called, and gains
``perform_later``, ``set`` and ``perform_now`` typed from its parameters.
Rescue rules stack on top (``@retry_on(...)`` above ``@job``) and land on the
generated class, so a function job follows exactly the rules a class does.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, ClassVar, Generic, TypeVar, overload

from typing_extensions import ParamSpec

from jobadapter.errors import ConfigurationError
from jobadapter.job import _UNSET, ConfiguredJob, EnqueueOptions, Job

P = ParamSpec("P")
R = TypeVar("R")
_FUNCTION_JOB = "__jobadapter_job__"
"""The attribute of a plain function that holds the job class made for it."""


class FunctionJob(Job):
    """The base of every class ``@job`` makes: ``perform`` calls the function."""

    abstract = True
    function: ClassVar[Callable[..., Any]]

    def perform(self, *args: Any, **kwargs: Any) -> Any:
        return type(self).function(*args, **kwargs)


class AsyncFunctionJob(FunctionJob):
    """The base for an ``async def`` function: ``perform`` awaits it."""

    abstract = True

    async def perform(self, *args: Any, **kwargs: Any) -> Any:
        return await type(self).function(*args, **kwargs)


class JobFunction(Generic[P, R]):
    """What ``@job`` returns: the function, callable as before, with the job API beside it.

    ``fn(...)`` runs the function and nothing else (no hooks, no rescue rules), as
    Celery's task ``__call__`` does; ``fn.perform_now(...)`` runs it as a job.
    ``job_class`` is the generated `Job` subclass (``fn.job_class(1, 2)`` builds an
    unenqueued job for `perform_all_later`).
    """

    def __init__(self, function: Callable[P, R], job_class: type[FunctionJob]) -> None:
        self.function = function
        self.job_class = job_class
        functools.update_wrapper(self, function)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.function(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<job function {self.job_class.job_name}>"

    def perform_later(self, *args: P.args, **kwargs: P.kwargs) -> FunctionJob:
        """Enqueue a call of the function; returns the job (see `Job.perform_later`)."""
        return self.job_class.perform_later(*args, **kwargs)

    def perform_now(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        """Run the function here as a job, with its hooks and rescue rules (`Job.perform_now`)."""
        return self.job_class.perform_now(*args, **kwargs)

    def set(
        self,
        *,
        wait: float | timedelta | None = None,
        wait_until: datetime | None = None,
        queue: str | None = None,
        priority: int | None = _UNSET,
        adapter_options: dict[str, Any] | None = None,
    ) -> ConfiguredJob[P, FunctionJob]:
        """Options for the next enqueue, as `Job.set`."""
        options = EnqueueOptions.build(wait, wait_until, queue, priority, adapter_options)
        return ConfiguredJob(self.job_class, options)


@overload
def job(function: Callable[P, R], /) -> JobFunction[P, R]: ...


@overload
def job(
    *,
    queue: str = "default",
    priority: int | None = None,
    name: str | None = None,
    log_arguments: bool = True,
    queue_adapter: str | None = None,
    store_result: bool = False,
) -> Callable[[Callable[P, R]], JobFunction[P, R]]: ...


def job(
    function: Callable[..., Any] | None = None,
    /,
    *,
    queue: str = "default",
    priority: int | None = None,
    name: str | None = None,
    log_arguments: bool = True,
    queue_adapter: str | None = None,
    store_result: bool = False,
) -> Any:
    """Make a module-level function a job: ``@job`` or ``@job(queue="mail", priority=5)``.

    The options are the class attributes of a `Job` (``queue`` is its ``queue_as``,
    ``name`` its ``job_name``, by default the function's ``module.qualname``).
    """

    def decorate(target: Callable[..., Any]) -> JobFunction[Any, Any]:
        job_class = job_class_for(
            target,
            queue=queue,
            priority=priority,
            name=name,
            log_arguments=log_arguments,
            queue_adapter=queue_adapter,
            store_result=store_result,
        )
        return JobFunction(target, job_class)

    if function is None:
        return decorate
    return decorate(function)


def job_class_for(
    function: Callable[..., Any],
    *,
    queue: str = "default",
    priority: int | None = None,
    name: str | None = None,
    log_arguments: bool = True,
    queue_adapter: str | None = None,
    store_result: bool = False,
    base: type[FunctionJob] | None = None,
    attributes: dict[str, Any] | None = None,
) -> type[FunctionJob]:
    """The job class for ``function``, made and registered on first use, the same one after.

    Integrations that wrap functions their own way (a django.tasks ``@task``) call it
    too, with a ``base`` whose ``perform`` calls the function their way and class
    ``attributes`` of their own, so ``@retry_on`` on their wrapper and the enqueue
    through them meet on one class.
    """
    if isinstance(function, JobFunction):
        raise ConfigurationError(f"{function!r} is already a job function: apply @job once")
    existing = getattr(function, _FUNCTION_JOB, None)
    if isinstance(existing, type) and issubclass(existing, FunctionJob):
        return existing
    _check_function(function)
    if base is None:
        base = AsyncFunctionJob if inspect.iscoroutinefunction(function) else FunctionJob
    namespace: dict[str, Any] = {
        **(attributes or {}),
        "__module__": function.__module__,
        "__qualname__": function.__qualname__,
        "__doc__": function.__doc__,
        "queue_as": queue,
        "priority": priority,
        "log_arguments": log_arguments,
        "queue_adapter": queue_adapter,
        "store_result": store_result,
        "function": staticmethod(function),
    }
    if name is not None:
        namespace["job_name"] = name
    job_class = type(function.__name__, (base,), namespace)
    setattr(function, _FUNCTION_JOB, job_class)
    return job_class


def job_class_of(target: object) -> type[Job] | None:
    """The job class behind a decorated target: a `Job` subclass itself, a `JobFunction`'s
    class, or, for a wrapper with a ``func`` attribute (a django.tasks ``Task``), the class
    made for that function. None for anything else."""
    if isinstance(target, type) and issubclass(target, Job):
        return target
    if isinstance(target, JobFunction):
        return target.job_class
    wrapped = getattr(target, "func", None)
    if inspect.isfunction(wrapped):
        return job_class_for(wrapped)
    return None


def _check_function(function: object) -> None:
    if not inspect.isfunction(function):
        raise ConfigurationError(
            f"@job decorates functions defined with def, not {function!r}: for a class, subclass Job"
        )
    if function.__name__ == "<lambda>":
        raise ConfigurationError(
            "@job cannot take a lambda: a worker finds a job by its name, and a lambda has none"
        )
    owner, _, _ = function.__qualname__.rpartition(".")
    if owner and not owner.endswith("<locals>"):
        raise ConfigurationError(
            f"@job decorates module-level functions, not the method {function.__qualname__}: "
            "a plain call would pass no self; move it to module level or make it a Job class"
        )
