"""Running one job: load, hooks, perform, rescue, and the retry decision.

`execute` is what every worker calls with the payload it received; it raises
when the job failed for good, so the backend records the failure its own way
(RQ's failed registry, Celery's FAILURE state, Dramatiq's dead letters). A
payload that is not a valid envelope, or names a class that is not registered,
raises before any user code runs.

`perform` is the shared core of ``Job.perform_now`` and of workers: it counts
the execution, loads the arguments, runs the perform hooks and ``perform``,
and applies the job's rescue rules to what it raised (ActiveJob semantics,
see the guide's *Rescue rules*).
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import logging
import threading
from collections.abc import Coroutine, Mapping
from datetime import datetime, timedelta, timezone
from time import perf_counter
from typing import TYPE_CHECKING, Any

from jobadapter import config, defaults, events, hooks, registry
from jobadapter.envelope import Envelope, decode, from_document
from jobadapter.logging import job_fields
from jobadapter.rescue import DiscardRule, HandlerRule, RetryRule, find_rule

if TYPE_CHECKING:
    from jobadapter.adapters.base import Adapter
    from jobadapter.job import Job

_logger = logging.getLogger("jobadapter")

# What became of one execution, kept on the job as ``job.outcome``.
PERFORMED = "performed"
ABORTED = "aborted"
RETRIED = "retried"
DISCARDED = "discarded"
RESCUED = "rescued"
EXHAUSTED = "exhausted"
FAILED = "failed"
DISCARDED_BY_OPERATOR = "discarded by an operator"
"""Not performed: ``discard`` left a tombstone for a message the backend could not delete."""


def execute(
    payload: str | bytes | Mapping[str, Any] | Envelope, adapter: Adapter, provider_job_id: str | None = None
) -> Job:
    """Run the job a payload describes, as ``adapter``'s worker; returns the job.

    ``payload`` is the envelope's JSON text, or the JSON document already parsed
    (brokers whose messages are JSON carry it as an object). ``provider_job_id``
    is the backend's id of the message (the job reads it in ``perform``, as in
    Rails). Raises
    `InvalidEnvelope` or `UnknownJobError` for a payload that cannot be
    run, and the job's own error when it failed unhandled or exhausted its
    retries without ``on_exhausted``.
    """
    if isinstance(payload, Envelope):
        envelope = payload
    elif isinstance(payload, (str, bytes, bytearray)):
        envelope = decode(payload)
    else:
        # Any other parsed JSON (a mapping, or a list or number a broker decoded):
        # from_document names what it is instead of failing with a TypeError.
        envelope = from_document(payload)
    job = registry.lookup(envelope.job_class).from_envelope(envelope)
    job.provider_job_id = provider_job_id
    if adapter.discarded(envelope):
        job.outcome = DISCARDED_BY_OPERATOR
        _logger.info(
            "Skipped %s (Job ID: %s): discarded by an operator",
            job.job_name,
            job.job_id,
            extra=job_fields(job),
        )
        return job
    perform(job, adapter)
    return job


def perform(job: Job, adapter: Adapter | None) -> Any:
    """Perform ``job`` once; ``adapter`` is where a retry goes (None: the job's own adapter)."""
    job.executions += 1
    job.outcome = None
    job._run_by = adapter
    if events.listening("execution_start"):
        events.publish(events.Event("execution_start", job, adapter))
    discard_hooks = _DiscardHooks(job)
    started = perf_counter()
    try:
        job.load_arguments()
        if events.listening("perform_start"):
            events.publish(events.Event("perform_start", job, adapter))
        result = hooks.run_chain(job, "perform", lambda: _call_perform(job))
    except hooks.Halted:
        job.outcome = ABORTED
        _publish_perform(job, adapter, started, aborted=True)
        return None
    except Exception as error:
        # The perform event waits for the rescue decision: an error that retry_on,
        # discard_on or rescue_from handled is not a failure (ActiveJob instruments
        # perform around its rescue handlers, so a handled run reads "Performed").
        try:
            handled = _rescue(job, error, adapter, discard_hooks)
        except BaseException as raised:
            job.outcome = EXHAUSTED if job.outcome == EXHAUSTED else FAILED
            _publish_perform(job, adapter, started, error=raised)
            discard_hooks.run(raised)
            raise
        if not handled:
            job.outcome = FAILED
            _publish_perform(job, adapter, started, error=error)
            discard_hooks.run(error)
            raise
        _publish_perform(job, adapter, started)
        return None
    except BaseException as interrupted:
        # The worker interrupted the job (Dramatiq's time limit or shutdown notice, a
        # KeyboardInterrupt): no rescue rule applies, but the execution ended, and subscribers
        # that opened something at execution_start (a span, a journal row) must hear of it.
        job.outcome = FAILED
        _publish_perform(job, adapter, started, error=interrupted)
        raise
    job.outcome = PERFORMED
    _publish_perform(job, adapter, started, result=result)
    return result


def _call_perform(job: Job) -> Any:
    result = job.perform(*job.arguments, **job.keyword_arguments)
    if type(job)._is_async and inspect.iscoroutine(result):
        return run_coroutine(result)
    return result


def run_coroutine(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run an ``async def perform`` to completion from synchronous code.

    Worker threads have no event loop, so ``asyncio.run`` serves; when the
    caller is itself inside a running loop (``perform_now`` from async code),
    the coroutine runs on a loop of its own in a helper thread instead.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = asyncio.run(coroutine)
        except BaseException as error:
            outcome["error"] = error

    thread = threading.Thread(target=run, name="jobadapter-async-perform")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("result")


def _rescue(job: Job, error: Exception, adapter: Adapter | None, discard_hooks: _DiscardHooks) -> bool:
    """Apply the first matching rule; True when the error counts as handled."""
    found = find_rule(type(job), error)
    if found is None:
        return False
    rule, matched = found
    if isinstance(rule, RetryRule):
        return _retry_or_stop(job, rule, matched, adapter, discard_hooks)
    if isinstance(rule, DiscardRule):
        job.outcome = DISCARDED
        if events.has_subscribers("discard"):
            events.publish(events.Event("discard", job, adapter, error=matched))
        if rule.on_discard is not None:
            rule.on_discard(job, matched)
        discard_hooks.run(matched)
        return True
    assert isinstance(rule, HandlerRule)
    job.outcome = RESCUED
    job._handling = matched
    try:
        getattr(job, rule.method_name)(matched)  # may call retry_job, which makes it RETRIED
    finally:
        job._handling = None
    return True


def _retry_or_stop(
    job: Job, rule: RetryRule, error: BaseException, adapter: Adapter | None, discard_hooks: _DiscardHooks
) -> bool:
    key = rule.counter_key
    count = job.exception_executions.get(key, 0) + 1
    job.exception_executions[key] = count
    if rule.should_retry(count):
        retry(job, rule.delay(count, error), rule.queue, rule.priority, error, adapter)
        job.outcome = RETRIED
        return True
    job.outcome = EXHAUSTED
    if events.has_subscribers("retry_stopped"):
        events.publish(events.Event("retry_stopped", job, adapter, error=error))
    if rule.on_exhausted is None:
        discard_hooks.run(error)
        raise error
    rule.on_exhausted(job, error)
    discard_hooks.run(error)
    return True


def retry(
    job: Job,
    wait: float,
    queue: str | None,
    priority: int | None,
    error: BaseException | None,
    adapter: Adapter | None,
) -> Job:
    """Re-enqueue ``job`` (same ``job_id``) after ``wait`` seconds, through its enqueue hooks.

    The next attempt is a copy, so ``job`` keeps describing the execution that
    just ran (its queue, priority and schedule); the copy is returned.
    """
    attempt = copy.copy(job)
    attempt.exception_executions = dict(job.exception_executions)
    attempt.scheduled_at = datetime.now(timezone.utc) + timedelta(seconds=wait) if wait > 0 else None
    if queue is not None:
        attempt.queue_name = defaults.queue_name(queue)
    if priority is not None:
        attempt.priority = priority
    attempt._enqueue(adapter or config.adapter_for(type(job)), retrying=True)
    if attempt.successfully_enqueued and events.listening("enqueue_retry"):
        events.publish(events.Event("enqueue_retry", attempt, adapter, error=error, wait=wait))
    return attempt


class _DiscardHooks:
    """The ``after_discard`` hooks of one execution: run at most once, each one isolated."""

    def __init__(self, job: Job) -> None:
        self._job = job
        self._ran = False

    def run(self, error: BaseException) -> None:
        if self._ran:
            return
        self._ran = True
        failures: list[Exception] = []
        for name in type(self._job)._hook_names["after_discard"]:
            try:
                getattr(self._job, name)(error)
            except Exception as failure:
                _logger.exception(
                    "after_discard hook %s of %s raised",
                    name,
                    self._job.job_name,
                    extra=job_fields(self._job),
                )
                failures.append(failure)
        if failures:
            raise failures[-1]


def _publish_perform(
    job: Job,
    adapter: Adapter | None,
    started: float,
    *,
    error: BaseException | None = None,
    aborted: bool = False,
    result: Any = None,
) -> None:
    """The one ``perform`` event of an execution, published once its outcome is known.

    ``error`` is set only when nothing handled it; a handled run is routine, so
    it is not built while every subscriber is silenced.
    """
    routine = error is None and not aborted
    if events.listening("perform") if routine else events.has_subscribers("perform"):
        events.publish(
            events.Event(
                "perform",
                job,
                adapter,
                error=error,
                duration=perf_counter() - started,
                aborted=aborted,
                outcome=job.outcome,
                result=result,
            )
        )
