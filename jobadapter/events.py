"""Instrumentation: named events that anyone can subscribe to.

The log lines of ``jobadapter.logging`` are one subscriber among others (metrics,
error reporters, tests); nothing in the core writes a log line directly.

Events: ``enqueue``, ``enqueue_at``, ``enqueue_all``, ``enqueue_retry``,
``perform_start``, ``perform``, ``retry_stopped``, ``discard``, and three that
open what a later event closes, for subscribers that measure or trace a span of
work (``jobadapter.otel``): ``enqueue_start`` (closed by the job's ``enqueue`` or
``enqueue_at``, or for a job joining a ``perform_all_later`` batch, by the
batch's ``enqueue_all``), ``enqueue_all_start`` (closed by ``enqueue_all``) and
``execution_start`` (closed by ``perform``). Publishers check ``listening``
before building a routine event and ``has_subscribers`` before building one
about a failure.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from jobadapter.adapters.base import Adapter
    from jobadapter.job import Job

NAMES = frozenset(
    {
        "enqueue_start",
        "enqueue",
        "enqueue_at",
        "enqueue_all_start",
        "enqueue_all",
        "enqueue_retry",
        "execution_start",
        "perform_start",
        "perform",
        "retry_stopped",
        "discard",
    }
)
_logger = logging.getLogger("jobadapter")


class Event(NamedTuple):
    """What happened, to which job, through which adapter (immutable, and cheap to build:
    one is built on every enqueue and perform).

    ``job`` is None only for ``enqueue_all_start`` and ``enqueue_all``, which carry
    ``jobs`` instead (``enqueue_all``: the jobs the backend took; ``error`` is set
    when it refused the batch or the rest of it). ``in_batch`` marks the
    ``enqueue_start`` of a job joining a ``perform_all_later`` batch.
    ``enqueue_start`` comes before the enqueue hooks and before the envelope is
    built: a subscriber may set optional envelope keys (``job.envelope_extras``)
    there. ``execution_start`` comes before the arguments load, so it opens every
    execution, also one whose arguments fail to load (which has no
    ``perform_start``).
    ``perform`` is published once per execution, after the rescue rules
    decided: ``duration`` (seconds) and ``outcome`` (the ``job.outcome``
    constant: performed, retried, discarded, rescued, exhausted, failed,
    aborted) are set on it, ``result`` is what ``perform`` returned when it
    returned, and ``error`` is set only when nothing handled the error (no
    matching rule, or retries exhausted without ``on_exhausted``), so a
    subscriber counting failures does not count handled errors. ``error`` is
    also set on ``enqueue_retry``, ``retry_stopped`` and ``discard``, which
    say what the rules did; ``wait`` (seconds) on ``enqueue_retry``.
    """

    name: str
    job: Job | None
    adapter: Adapter | None
    error: BaseException | None = None
    duration: float | None = None
    wait: float | None = None
    jobs: Sequence[Job] = ()
    aborted: bool = False
    outcome: str | None = None
    result: Any = None
    in_batch: bool = False


Subscriber = Callable[[Event], Any]
Silenced = Callable[[], bool]
_subscribers: dict[str, tuple[Subscriber, ...]] = {name: () for name in NAMES}
"""Replaced, never mutated: ``publish`` iterates a snapshot without copying it."""
_silencers: dict[str, tuple[Silenced | None, ...]] = {name: () for name in NAMES}
"""Each subscriber's ``silenced`` check, in the same order (None: never silenced)."""
_changing = threading.Lock()


def subscribe(name: str, subscriber: Subscriber, *, silenced: Silenced | None = None) -> Callable[[], None]:
    """Call ``subscriber(event)`` on every ``name`` event; returns a function that unsubscribes.

    ``silenced`` is a cheap check saying that the subscriber would do nothing
    with a routine event right now, e.g. ``lambda: not logger.isEnabledFor(INFO)``.
    When every subscriber of ``name`` is silenced, the hot paths do not even
    build routine events (a job enqueued or performed without error), as Rails
    skips instrumenting for silenced log subscribers. Events about failures
    are always built and delivered.
    """
    if name not in NAMES:
        raise ValueError(f"unknown event {name!r}; events are {', '.join(sorted(NAMES))}")
    with _changing:
        _subscribers[name] += (subscriber,)
        _silencers[name] += (silenced,)

    def unsubscribe() -> None:
        with _changing:
            current = _subscribers[name]
            if subscriber in current:
                index = current.index(subscriber)
                _subscribers[name] = current[:index] + current[index + 1 :]
                checks = _silencers[name]
                _silencers[name] = checks[:index] + checks[index + 1 :]

    return unsubscribe


def has_subscribers(name: str) -> bool:
    """Whether publishing ``name`` would reach anyone (lets hot paths skip building failure events)."""
    return bool(_subscribers[name])


def listening(name: str) -> bool:
    """Whether a routine ``name`` event would reach a subscriber that is not silenced right now.

    Called twice per job on the worker's hot path, so it is a plain loop: a
    generator expression would allocate a generator on every call.
    """
    for silenced in _silencers[name]:  # noqa: SIM110 (any() would allocate a generator)
        if silenced is None or not silenced():
            return True
    return False


def publish(event: Event) -> None:
    """Deliver ``event``; a subscriber that raises is logged and never breaks the job."""
    for subscriber in _subscribers[event.name]:
        try:
            subscriber(event)
        except Exception:
            _logger.exception("event subscriber %r failed on %s", subscriber, event.name)
