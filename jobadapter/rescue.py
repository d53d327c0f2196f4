"""``retry_on``, ``discard_on`` and ``rescue_from``: what happens when ``perform`` raises.

Each declaration is a `Rule`. A job class keeps its own rules in
``_own_rules``, top to bottom as written: class decorators first (a decorator
applied later, that is written higher, goes in front), then ``rescue_from``
methods in definition order. `find_rule` searches a class's own rules, then
its bases', so an ``ApplicationJob`` base can hold shared rules; a rule on the
subclass wins over one on the base. If nothing matches the error, its
``__cause__`` is tried, then that error's cause, and so on.

The rules only *decide*; carrying a decision out (re-enqueueing, running the
discard hooks) is the job's, see ``execution.py``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from jobadapter.errors import ConfigurationError

if TYPE_CHECKING:
    pass

ExceptionTypes = tuple[type[BaseException], ...]
WaitStrategy = float | timedelta | Callable[[int], float] | Literal["polynomially_longer"]
Attempts = int | Literal["unlimited"]
ErrorCallback = Callable[[Any, BaseException], object]
RESCUE_ATTRIBUTE = "__jobadapter_rescue__"
JobClass = TypeVar("JobClass", bound=type)


@dataclass(frozen=True)
class Rule:
    """One declaration: the exceptions it matches and what it does with them."""

    exceptions: ExceptionTypes

    def matches(self, error: BaseException) -> bool:
        return isinstance(error, self.exceptions)


@dataclass(frozen=True)
class RetryRule(Rule):
    """``retry_on``: re-enqueue after a delay while attempts remain."""

    wait: WaitStrategy
    attempts: Attempts
    queue: str | None
    priority: int | None
    jitter: float
    on_exhausted: ErrorCallback | None

    @property
    def counter_key(self) -> str:
        """The key of this declaration's count in ``exception_executions``.

        Like ActiveJob's, it is the declaration's exception list, so two
        ``retry_on`` declarations count separately and a deploy that keeps the
        declaration keeps the count of jobs already in flight.
        """
        return "[" + ", ".join(f"{e.__module__}.{e.__qualname__}" for e in self.exceptions) + "]"

    def should_retry(self, count: int) -> bool:
        return self.attempts == "unlimited" or count < self.attempts

    def delay(self, count: int) -> float:
        """Seconds to wait before attempt ``count + 1`` (``count`` attempts have failed)."""
        wait = self.wait
        if wait == "polynomially_longer":
            base = float(count**4)
            return base + self._jitter(base) + 2
        if isinstance(wait, timedelta):
            base = wait.total_seconds()
            return base + self._jitter(base)
        if callable(wait):
            return float(wait(count))
        base = float(wait)
        return base + self._jitter(base)

    def _jitter(self, delay: float) -> float:
        return random.random() * delay * self.jitter if self.jitter else 0.0


@dataclass(frozen=True)
class DiscardRule(Rule):
    """``discard_on``: end the job without retrying; the backend sees success."""

    on_discard: ErrorCallback | None


@dataclass(frozen=True)
class HandlerRule(Rule):
    """``rescue_from``: a method ``(self, error)`` that handles the error itself."""

    method_name: str


def retry_on(
    *exceptions: type[BaseException],
    wait: WaitStrategy = 3,
    attempts: Attempts = 5,
    queue: str | None = None,
    priority: int | None = None,
    jitter: float = 0.15,
    on_exhausted: ErrorCallback | None = None,
) -> Callable[[JobClass], JobClass]:
    """Retry the job when it raises one of ``exceptions``.

    ``wait`` is seconds, a timedelta, a callable ``(executions) -> seconds`` or
    ``"polynomially_longer"`` (``executions**4 + 2`` s). Jitter adds up to
    ``jitter * delay`` to numeric and polynomial delays, never to a callable's.
    Once ``attempts`` executions have failed, ``on_exhausted(job, error)`` runs
    if given (the job then counts as handled) and the ``after_discard`` hooks
    run; without ``on_exhausted`` the error is raised to the backend.
    """
    _check_wait(wait)
    if attempts != "unlimited" and (type(attempts) is not int or attempts < 1):
        raise ConfigurationError(f"retry_on attempts must be an int >= 1 or 'unlimited', not {attempts!r}")
    if not isinstance(jitter, (int, float)) or jitter < 0:
        raise ConfigurationError(f"retry_on jitter must be a number >= 0, not {jitter!r}")
    _check_queue_and_priority(queue, priority)
    rule = RetryRule(
        _exception_types(exceptions), wait, attempts, queue, priority, float(jitter), on_exhausted
    )
    return _declare(rule)


def discard_on(
    *exceptions: type[BaseException], on_discard: ErrorCallback | None = None
) -> Callable[[JobClass], JobClass]:
    """Drop the job when it raises one of ``exceptions``; ``on_discard(job, error)`` runs first."""
    return _declare(DiscardRule(_exception_types(exceptions), on_discard))


def rescue_from(*exceptions: type[BaseException]) -> Callable[[Callable[[Any, Any], Any]], Any]:
    """Mark a job method ``(self, error)`` as the handler for ``exceptions``."""
    types = _exception_types(exceptions)

    def mark(method: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        setattr(method, RESCUE_ATTRIBUTE, types)
        return method

    return mark


def handler_rules(namespace: dict[str, Any]) -> list[Rule]:
    """The ``rescue_from`` methods of one class body, in definition order."""
    return [
        HandlerRule(getattr(value, RESCUE_ATTRIBUTE), name)
        for name, value in namespace.items()
        if callable(value) and getattr(value, RESCUE_ATTRIBUTE, None) is not None
    ]


def find_rule(job_class: type, error: BaseException) -> tuple[Rule, BaseException] | None:
    """The first rule matching ``error`` or, failing that, one of its causes."""
    seen: set[int] = set()
    candidate: BaseException | None = error
    while candidate is not None and id(candidate) not in seen:
        seen.add(id(candidate))
        for klass in job_class.__mro__:
            for rule in vars(klass).get("_own_rules", ()):
                if rule.matches(candidate):
                    return rule, candidate
        candidate = candidate.__cause__
    return None


def _declare(rule: Rule) -> Callable[[JobClass], JobClass]:
    def decorate(job_class: JobClass) -> JobClass:
        from jobadapter.job import Job

        if not (isinstance(job_class, type) and issubclass(job_class, Job)):
            raise ConfigurationError(f"{type(rule).__name__} decorates Job subclasses, not {job_class!r}")
        job_class._own_rules = (rule, *vars(job_class).get("_own_rules", ()))
        return job_class

    return decorate


def _exception_types(exceptions: tuple[type[BaseException], ...]) -> ExceptionTypes:
    if not exceptions:
        raise ConfigurationError("name at least one exception class to rescue")
    for exception in exceptions:
        if not (isinstance(exception, type) and issubclass(exception, BaseException)):
            raise ConfigurationError(f"{exception!r} is not an exception class")
    return exceptions


def _check_wait(wait: object) -> None:
    if wait == "polynomially_longer" or isinstance(wait, timedelta) or callable(wait):
        if isinstance(wait, timedelta) and wait.total_seconds() < 0:
            raise ConfigurationError(f"retry_on wait must not be negative, not {wait!r}")
        return
    if isinstance(wait, bool) or not isinstance(wait, (int, float)):
        raise ConfigurationError(
            "retry_on wait must be seconds, a timedelta, a callable (executions) -> seconds "
            f"or 'polynomially_longer', not {wait!r}"
        )
    if wait < 0:
        raise ConfigurationError(f"retry_on wait must not be negative, not {wait!r}")


def _check_queue_and_priority(queue: object, priority: object) -> None:
    if queue is not None and (not isinstance(queue, str) or not queue):
        raise ConfigurationError(f"queue must be a non-empty string, not {queue!r}")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        raise ConfigurationError(f"priority must be an int or None, not {priority!r}")
