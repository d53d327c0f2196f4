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

import inspect
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from jobadapter import defaults
from jobadapter.errors import ConfigurationError

if TYPE_CHECKING:
    pass

ExceptionTypes = tuple[type[BaseException], ...]
WaitStrategy = (
    float
    | timedelta
    | Callable[[int], float]
    | Callable[[int, BaseException], float]
    | Literal["polynomially_longer", "exponentially_longer"]
)
Attempts = int | Literal["unlimited"]
ErrorCallback = Callable[[Any, BaseException], object]
RESCUE_ATTRIBUTE = "__jobadapter_rescue__"
Decorated = TypeVar("Decorated")
"""A `Job` subclass, a ``@job`` function, or a wrapper of one (see `functions.job_class_of`)."""


Jitter = Literal["full", "half", "double"] | None
_MAX_EXPONENT = 32


@dataclass(frozen=True)
class ExponentialBackoff:
    """Wait ``base * 2**(n - 1)`` seconds before retry ``n``, at most ``cap``, as Celery's
    ``retry_backoff`` and Dramatiq's ``Retries`` middleware do, jittered their way:

    - ``"full"`` (Celery's ``retry_jitter=True``): a random whole number of seconds from 0 to
      the delay (any value in between when ``base`` is not a whole number);
    - ``"half"`` (Dramatiq 1's): from half the delay to the delay, to the millisecond;
    - ``"double"`` (Dramatiq 2's): from the delay to twice it, to the millisecond, and from
      half the cap to the cap where that passes the cap;
    - ``None``: the delay itself.

    Built by `exponentially_longer`; ``wait="exponentially_longer"`` is Celery's default
    (``base=1, cap=600, jitter="full"``).
    """

    base: float = 1.0
    cap: float = 600.0
    jitter: Jitter = "full"

    def __call__(self, count: int) -> float:
        """Seconds before attempt ``count + 1`` (``count`` attempts have failed)."""
        retries = min(max(count - 1, 0), _MAX_EXPONENT)
        if self.jitter == "double":
            cap_ms = self.cap * 1000
            drawn_ms = int(self.base * 1000 * 2**retries * random.uniform(1, 2))
            if drawn_ms > cap_ms:
                drawn_ms = int(cap_ms * random.uniform(0.5, 1))
            return drawn_ms / 1000
        delay = min(self.cap, self.base * 2**retries)
        if self.jitter == "full":
            if float(delay).is_integer():
                return float(random.randrange(int(delay) + 1))  # as Celery draws it
            return random.uniform(0, delay)
        if self.jitter == "half":
            half_ms = delay * 1000 / 2
            return int(half_ms + random.uniform(0, half_ms)) / 1000  # as Dramatiq draws it, in ms
        return float(delay)


def exponentially_longer(
    base: float = 1.0, cap: float = 600.0, jitter: Jitter = "full"
) -> ExponentialBackoff:
    """An exponential ``retry_on`` wait: Celery's ``retry_backoff=base, retry_backoff_max=cap``
    (``jitter="full"`` or None) or Dramatiq's ``min_backoff``/``max_backoff`` in seconds
    (``jitter="half"`` for Dramatiq 1, ``"double"`` for Dramatiq 2). See `ExponentialBackoff`."""
    for name, value in (("base", base), ("cap", cap)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigurationError(f"exponentially_longer {name} must be a number >= 0, not {value!r}")
    if jitter not in ("full", "half", "double", None):
        raise ConfigurationError(
            f"exponentially_longer jitter must be 'full', 'half', 'double' or None, not {jitter!r}"
        )
    return ExponentialBackoff(float(base), float(cap), jitter)


CELERY_BACKOFF = ExponentialBackoff()
"""``wait="exponentially_longer"``: Celery's ``retry_backoff=True`` with its defaults."""


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
    jitter: float | None
    """None: ``configure(retry_jitter=...)``, read when each delay is computed (0.15 unless set)."""
    on_exhausted: ErrorCallback | None
    wait_takes_error: bool = False
    """Whether a callable ``wait`` is ``(executions, error)`` rather than ``(executions)``."""

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

    def delay(self, count: int, error: BaseException | None = None) -> float:
        """Seconds to wait before attempt ``count + 1`` (``count`` attempts have failed, the
        last with ``error``)."""
        wait = self.wait
        if wait == "polynomially_longer":
            base = float(count**4)
            return base + self._jitter(base) + 2
        if wait == "exponentially_longer":
            return CELERY_BACKOFF(count)
        if isinstance(wait, timedelta):
            base = wait.total_seconds()
            return base + self._jitter(base)
        if callable(wait):
            if self.wait_takes_error:
                return float(wait(count, error))  # type: ignore[call-arg, arg-type]
            return float(wait(count))  # type: ignore[call-arg]
        base = float(wait)
        return base + self._jitter(base)

    def _jitter(self, delay: float) -> float:
        share = defaults.active.retry_jitter if self.jitter is None else self.jitter
        return random.random() * delay * share if share else 0.0


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
    jitter: float | None = None,
    on_exhausted: ErrorCallback | None = None,
) -> Callable[[Decorated], Decorated]:
    """Retry the job when it raises one of ``exceptions``.

    ``wait`` is seconds, a timedelta, a callable ``(executions) -> seconds``,
    ``"polynomially_longer"`` (``executions**4 + 2`` s, as Rails) or
    ``"exponentially_longer"`` (Celery's ``retry_backoff``: 1, 2, 4… s up to 600,
    full jitter; `exponentially_longer` builds other bases, caps and jitters).
    ``jitter`` adds up to ``jitter * delay`` to numeric and polynomial delays,
    never to a callable's or an exponential one's (they jitter their own way); None,
    the default, is ``configure(retry_jitter=...)``, 0.15 unless set, as in Rails.
    Once ``attempts`` executions have failed, ``on_exhausted(job, error)`` runs
    if given (the job then counts as handled) and the ``after_discard`` hooks
    run; without ``on_exhausted`` the error is raised to the backend.
    """
    takes_error = _check_wait(wait)
    if attempts != "unlimited" and (type(attempts) is not int or attempts < 1):
        raise ConfigurationError(f"retry_on attempts must be an int >= 1 or 'unlimited', not {attempts!r}")
    if jitter is not None and (
        isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or jitter < 0
    ):
        raise ConfigurationError(f"retry_on jitter must be a number >= 0 or None, not {jitter!r}")
    _check_queue_and_priority(queue, priority)
    rule = RetryRule(
        _exception_types(exceptions),
        wait,
        attempts,
        queue,
        priority,
        None if jitter is None else float(jitter),
        on_exhausted,
        takes_error,
    )
    return _declare(rule)


def discard_on(
    *exceptions: type[BaseException], on_discard: ErrorCallback | None = None
) -> Callable[[Decorated], Decorated]:
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


def _declare(rule: Rule) -> Callable[[Decorated], Decorated]:
    def decorate(target: Decorated) -> Decorated:
        from jobadapter.functions import job_class_of

        job_class = job_class_of(target)
        if job_class is None:
            raise ConfigurationError(
                f"{type(rule).__name__} decorates Job subclasses and @job functions (written above "
                f"@job), not {target!r}"
            )
        job_class._own_rules = (rule, *vars(job_class).get("_own_rules", ()))
        return target

    return decorate


def _exception_types(exceptions: tuple[type[BaseException], ...]) -> ExceptionTypes:
    if not exceptions:
        raise ConfigurationError("name at least one exception class to rescue")
    for exception in exceptions:
        if not (isinstance(exception, type) and issubclass(exception, BaseException)):
            raise ConfigurationError(f"{exception!r} is not an exception class")
        if not issubclass(exception, Exception):
            # perform catches Exception only: KeyboardInterrupt, SystemExit and GeneratorExit must
            # stop the worker, so a rule for them could never run. Refused, not silently ignored.
            raise ConfigurationError(
                f"{exception.__qualname__} is not an Exception subclass: a job's errors are "
                "Exceptions, and BaseException-only classes (KeyboardInterrupt, SystemExit, "
                "GeneratorExit) always propagate"
            )
    return exceptions


def _check_wait(wait: object) -> bool:
    """Refuse a wait that cannot work; whether a callable one takes the error too."""
    if callable(wait):
        return _takes_error(wait)
    if wait in ("polynomially_longer", "exponentially_longer") or isinstance(wait, timedelta):
        if isinstance(wait, timedelta) and wait.total_seconds() < 0:
            raise ConfigurationError(f"retry_on wait must not be negative, not {wait!r}")
        return False
    if isinstance(wait, bool) or not isinstance(wait, (int, float)):
        raise ConfigurationError(
            "retry_on wait must be seconds, a timedelta, a callable (executions) -> seconds, "
            f"'polynomially_longer' or 'exponentially_longer', not {wait!r}"
        )
    if wait < 0:
        raise ConfigurationError(f"retry_on wait must not be negative, not {wait!r}")
    return False


def _takes_error(wait: Callable[..., Any]) -> bool:
    """Whether ``wait`` is called ``(executions, error)`` (as Rails' two-argument lambda) or
    ``(executions)``; a callable that can be called neither way is refused now, not when the
    first retry is decided."""
    try:
        signature = inspect.signature(wait)
    except (TypeError, ValueError):
        return False  # a builtin without a signature: called with the executions only
    for arguments, takes_error in (((1,), False), ((1, ValueError()), True)):
        try:
            signature.bind(*arguments)
        except TypeError:
            continue
        return takes_error
    raise ConfigurationError(
        f"retry_on wait {wait!r} must take (executions) or (executions, error), not {signature}"
    )


def _check_queue_and_priority(queue: object, priority: object) -> None:
    if queue is not None and (not isinstance(queue, str) or not queue):
        raise ConfigurationError(f"queue must be a non-empty string, not {queue!r}")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        raise ConfigurationError(f"priority must be an int or None, not {priority!r}")
