"""OpenTelemetry traces, metrics and log correlation for jobs, on every backend alike.

``instrument()`` subscribes to the core's events (`jobadapter.events`); it needs
only ``opentelemetry-api`` (``pip install jobadapter[otel]``), and whichever
SDK the application configured receives the spans and measurements. Without an
SDK, OpenTelemetry's API hands out no-op tracers and meters, and the subscriber
stays silenced (`_Idle`). OpenTelemetry's zero-code agent calls `Instrumentor`
through the ``opentelemetry_instrumentor`` entry point instead.

Spans, following OpenTelemetry's messaging conventions:

- ``send <queue>`` (PRODUCER) around each enqueue (``perform_later``, a retry);
  its W3C trace context travels in the envelope's optional ``trace_context`` key.
- For ``perform_all_later``, each job gets a ``create <queue>`` span (PRODUCER)
  whose context its envelope carries, and the batch one ``send`` span (CLIENT, as
  the conventions want for a send whose context is not the messages' own), linked
  to each job's ``create`` span.
- ``process <queue>`` (CONSUMER) around each execution in a worker, a child of
  the producer's span (``propagation="child"``, the default, so that the request
  and the jobs it caused are one trace), or the root of a trace of its own with
  a link to the producer (``propagation="link"``, for producers whose traces
  should not grow by every job they cause). ``perform_now`` gets an INTERNAL
  ``perform <JobClass>`` span in the caller's trace.
- A retry is a ``retry`` span event with its wait, and the next execution's
  span links to this one; ``discard`` and ``retries exhausted`` are span events
  too. An unhandled error records the exception and sets the status to error; an
  error a rescue rule handled does not.

Arguments stay off spans unless ``record_arguments=True`` (they may hold
personal data); a job class with ``log_arguments = False`` keeps them off even then.

Metrics (attributes: job class, queue, messaging system; never the job id or the
arguments, so the series stay bounded): the counters ``jobadapter.jobs.enqueued``,
``.performed`` (the execution ended without an error, or a ``rescue_from``
handled it), ``.failed`` (an error nothing handled), ``.retried`` and
``.discarded``, and the histograms ``jobadapter.job.duration`` (an
execution, by outcome) and ``jobadapter.job.queue_latency`` (its start minus the
time the job was enqueued or, when delayed, scheduled for).

Log correlation: the records of the ``jobadapter`` logger get ``trace_id`` and
``span_id`` (`TraceIds`, which a handler can also use for other loggers).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.metrics._internal import _ProxyMeterProvider  # the global before an SDK is set
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from jobadapter import events
from jobadapter.adapters.base import Capability

if TYPE_CHECKING:
    from jobadapter.adapters.base import Adapter
    from jobadapter.job import Job

TRACE_CONTEXT_KEY = "trace_context"
"""The envelope's optional key for the producer's trace context (see docs/design.md)."""
PREVIOUS_EXECUTION = "previous_execution"
"""In ``trace_context``: the ``traceparent`` of the execution that retried this job."""
INSTRUMENTATION_NAME = "jobadapter"
Propagation = Literal["child", "link"]
IDLE_RECHECK = 1.0
"""Seconds: how soon after an SDK is set up without instrument() hearing of it tracing begins."""

_W3C = TraceContextTextMapPropagator()
_NO_OP_TRACERS = (trace.NoOpTracerProvider, trace.ProxyTracerProvider)
_NO_OP_METERS = (metrics.NoOpMeterProvider, _ProxyMeterProvider)
"""What the API hands out while no SDK is set (the proxy becomes real once one is)."""
_SYSTEMS = {
    "amqp": "rabbitmq",
    "amqps": "rabbitmq",
    "pyamqp": "rabbitmq",
    "redis": "redis",
    "rediss": "redis",
}
_installed: Callable[[], None] | None = None
_installing = threading.Lock()


class _Execution(NamedTuple):
    """The execution running in this context: which job, in which span."""

    job_id: str
    span: Span


_current: ContextVar[_Execution | None] = ContextVar("jobadapter_otel_execution", default=None)


class TraceIds(logging.Filter):
    """Adds ``trace_id`` and ``span_id`` (hex, as trace viewers show them) of the current span
    to each record, for a structured formatter; a record outside any span gets neither."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = format(context.trace_id, "032x")
            record.span_id = format(context.span_id, "016x")
        return True


def instrument(
    *,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
    propagation: Propagation = "child",
    record_arguments: bool = False,
    log_correlation: bool = True,
) -> Callable[[], None]:
    """Trace and measure every job from here on; returns a function that stops it.

    The providers default to OpenTelemetry's global ones. Calling it again
    replaces the earlier instrumentation.
    """
    global _installed
    if propagation not in ("child", "link"):
        raise ValueError(f"propagation must be 'child' or 'link', not {propagation!r}")
    with _installing:
        if _installed is not None:
            _installed()
        tracer = trace.get_tracer(INSTRUMENTATION_NAME, tracer_provider=tracer_provider)
        meter = metrics.get_meter(INSTRUMENTATION_NAME, meter_provider=meter_provider)
        subscriber = _Subscriber(tracer, meter, propagation, record_arguments)
        idle = _Idle(tracer_provider, meter_provider)
        unsubscribers = [
            events.subscribe(name, handler, silenced=idle) for name, handler in subscriber.handlers().items()
        ]
        filter_ = TraceIds()
        if log_correlation:
            logging.getLogger("jobadapter").addFilter(filter_)

        def uninstrument() -> None:
            global _installed
            for unsubscribe in unsubscribers:
                unsubscribe()
            logging.getLogger("jobadapter").removeFilter(filter_)
            if _installed is uninstrument:
                _installed = None

        _installed = uninstrument
        return uninstrument


class Instrumentor:
    """What ``opentelemetry-instrument`` (the zero-code agent) loads through the entry point
    ``opentelemetry_instrumentor``: it calls ``Instrumentor().instrument(**options)`` with
    the global providers set. Options it does not know are ignored, as the agent passes its own.
    """

    def instrument(self, **options: Any) -> None:
        known = ("tracer_provider", "meter_provider", "propagation", "record_arguments", "log_correlation")
        instrument(**{name: value for name, value in options.items() if name in known})

    def uninstrument(self, **options: Any) -> None:
        uninstrument()


class _Idle:
    """Whether tracing and metrics are both OpenTelemetry's no-op (no SDK set up yet): the
    ``silenced`` check that lets the core skip building routine events for nothing, so that
    instrumenting without an SDK costs nothing measurable. Once an SDK is set it stays set.

    Asking the API for its global providers reads the environment on every call, and the core
    asks several times per job: while idle, the answer is kept for `IDLE_RECHECK` seconds.
    """

    def __init__(
        self, tracer_provider: trace.TracerProvider | None, meter_provider: metrics.MeterProvider | None
    ) -> None:
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self._active = False
        self._recheck_at = 0.0

    def __call__(self) -> bool:
        if self._active:
            return False
        now = time.monotonic()
        if now < self._recheck_at:
            return True
        tracers = self._tracer_provider or trace.get_tracer_provider()
        meters = self._meter_provider or metrics.get_meter_provider()
        self._active = not isinstance(tracers, _NO_OP_TRACERS) or not isinstance(meters, _NO_OP_METERS)
        self._recheck_at = now + IDLE_RECHECK
        return not self._active


def uninstrument() -> None:
    """Stop what `instrument` started (nothing if it did not run)."""
    with _installing:
        if _installed is not None:
            _installed()


class _Subscriber:
    """The event handlers of one `instrument` call, and the spans they keep open between events."""

    def __init__(
        self, tracer: trace.Tracer, meter: metrics.Meter, propagation: Propagation, record_arguments: bool
    ) -> None:
        self.tracer = tracer
        self.propagation = propagation
        self.record_arguments = record_arguments
        self.sends: dict[int, tuple[Span, Token[otel_context.Context]]] = {}
        """Open ``send`` spans by ``id(job)`` (the job object is the same at start and end)."""
        self.batches: dict[tuple[int, int], tuple[Span, Token[otel_context.Context]]] = {}
        """Open batch ``send`` spans by (thread, adapter)."""
        self.executions: dict[int, tuple[Span, Token[otel_context.Context], Token[_Execution | None]]] = {}
        self.systems: dict[int, str] = {}
        self.enqueued = meter.create_counter("jobadapter.jobs.enqueued", "{job}", "Jobs a backend accepted")
        self.performed = meter.create_counter(
            "jobadapter.jobs.performed", "{job}", "Executions that ended without an unhandled error"
        )
        self.failed = meter.create_counter("jobadapter.jobs.failed", "{job}", "Executions an error ended")
        self.retried = meter.create_counter("jobadapter.jobs.retried", "{job}", "Retries enqueued")
        self.discarded = meter.create_counter("jobadapter.jobs.discarded", "{job}", "Jobs discard_on ended")
        self.duration = meter.create_histogram("jobadapter.job.duration", "s", "How long an execution ran")
        self.latency = meter.create_histogram(
            "jobadapter.job.queue_latency", "s", "From enqueued (or scheduled) to the execution's start"
        )

    def handlers(self) -> dict[str, events.Subscriber]:
        return {
            "enqueue_start": self.on_enqueue_start,
            "enqueue": self.on_enqueue,
            "enqueue_at": self.on_enqueue,
            "enqueue_all_start": self.on_enqueue_all_start,
            "enqueue_all": self.on_enqueue_all,
            "execution_start": self.on_execution_start,
            "enqueue_retry": self.on_enqueue_retry,
            "discard": self.on_discard,
            "retry_stopped": self.on_retry_stopped,
            "perform": self.on_perform,
        }

    # -- producing ------------------------------------------------------------------------

    def on_enqueue_start(self, event: events.Event) -> None:
        job = event.job
        if job is None:
            return
        operation = "create" if event.in_batch else "send"
        span = self.tracer.start_span(
            f"{operation} {job.queue_name}",
            kind=SpanKind.PRODUCER,
            attributes={**self.job_attributes(job, event.adapter), "messaging.operation.type": operation},
        )
        carrier: dict[str, str] = {}
        _W3C.inject(carrier, trace.set_span_in_context(span))
        running = _current.get()
        if running is not None and running.job_id == job.job_id:  # a retry of the running execution
            previous: dict[str, str] = {}
            _W3C.inject(previous, trace.set_span_in_context(running.span))
            if "traceparent" in previous:
                carrier[PREVIOUS_EXECUTION] = previous["traceparent"]
        if carrier:  # none from a no-op tracer: a retry then keeps the context it came with
            job.envelope_extras = {**job.envelope_extras, TRACE_CONTEXT_KEY: carrier}
        if event.in_batch:
            span.end()  # the message exists once its envelope does; the batch's send span follows
            return
        self.sends[id(job)] = (span, otel_context.attach(trace.set_span_in_context(span)))

    def on_enqueue(self, event: events.Event) -> None:
        job = event.job
        opened = self.sends.pop(id(job), None) if job is not None else None
        if job is None or opened is None:
            return
        span, token = opened
        if job.provider_job_id is not None:
            span.set_attribute("jobadapter.job.provider_id", job.provider_job_id)
        if event.aborted:
            span.set_attribute("jobadapter.job.aborted", True)
        elif event.error is not None:
            _fail(span, event.error)
        else:
            self.enqueued.add(1, self.metric_attributes(job, event.adapter))
        self.add_arguments(span, job)
        otel_context.detach(token)
        span.end()

    def on_enqueue_all_start(self, event: events.Event) -> None:
        jobs = event.jobs
        queues = {job.queue_name for job in jobs}
        links = [Link(context) for job in jobs if (context := _producer_context(job)) is not None]
        attributes: dict[str, Any] = {
            "messaging.operation.type": "send",
            "messaging.batch.message_count": len(jobs),
            "messaging.system": self.system(event.adapter),
        }
        name = "send"
        if len(queues) == 1:
            (queue,) = queues
            attributes["messaging.destination.name"] = queue
            name = f"send {queue}"
        span = self.tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes, links=links)
        token = otel_context.attach(trace.set_span_in_context(span))
        self.batches[threading.get_ident(), id(event.adapter)] = (span, token)

    def on_enqueue_all(self, event: events.Event) -> None:
        opened = self.batches.pop((threading.get_ident(), id(event.adapter)), None)
        for job in event.jobs:
            self.enqueued.add(1, self.metric_attributes(job, event.adapter))
        if opened is None:
            return
        span, token = opened
        if event.error is not None:
            span.set_attribute("jobadapter.batch.taken", len(event.jobs))
            _fail(span, event.error)
        otel_context.detach(token)
        span.end()

    # -- consuming ------------------------------------------------------------------------

    def on_execution_start(self, event: events.Event) -> None:
        job = event.job
        if job is None:
            return
        adapter = event.adapter
        links: list[Link] = []
        previous = _previous_execution(job)
        if previous is not None:
            links.append(Link(previous, {"jobadapter.link": "previous execution"}))
        producer = _producer_context(job)
        parent: otel_context.Context | None = None  # the current context
        if producer is not None:
            if self.propagation == "child":
                parent = trace.set_span_in_context(trace.NonRecordingSpan(producer))
            else:
                links.append(Link(producer, {"jobadapter.link": "producer"}))
        attributes = self.job_attributes(job, adapter)
        if adapter is None:  # perform_now: no message, no queue in between
            name, kind = f"perform {type(job).__qualname__}", SpanKind.INTERNAL
            del attributes["messaging.system"], attributes["messaging.destination.name"]
        else:
            name, kind = f"process {job.queue_name}", SpanKind.CONSUMER
            attributes["messaging.operation.type"] = "process"
            waited_since = job.scheduled_at or job.enqueued_at
            if waited_since is not None:
                latency = max(time.time() - waited_since.timestamp(), 0.0)
                self.latency.record(latency, self.metric_attributes(job, adapter))
        span = self.tracer.start_span(name, parent, kind, attributes, links)
        self.add_arguments(span, job)
        token = otel_context.attach(trace.set_span_in_context(span))
        self.executions[id(job)] = (span, token, _current.set(_Execution(job.job_id, span)))

    def on_enqueue_retry(self, event: events.Event) -> None:
        job = event.job  # the next attempt, a copy of the running job
        if job is None:
            return
        self.retried.add(1, self.metric_attributes(job, event.adapter))
        running = _current.get()
        if running is None or running.job_id != job.job_id:
            return
        attributes: dict[str, Any] = {"jobadapter.retry.wait": event.wait or 0.0}
        attributes.update(_error_attributes(event.error))
        running.span.add_event("retry", attributes)

    def on_discard(self, event: events.Event) -> None:
        if event.job is not None:
            self.discarded.add(1, self.metric_attributes(event.job, event.adapter))
        self.add_event(event, "discard")

    def on_retry_stopped(self, event: events.Event) -> None:
        self.add_event(event, "retries exhausted")

    def on_perform(self, event: events.Event) -> None:
        job = event.job
        opened = self.executions.pop(id(job), None) if job is not None else None
        if job is None or opened is None:
            return
        span, token, running = opened
        metric_attributes = self.metric_attributes(job, event.adapter)
        span.set_attribute("jobadapter.job.outcome", event.outcome or "")
        if event.error is not None:
            _fail(span, event.error)
            self.failed.add(1, metric_attributes)
        elif event.aborted:
            span.set_attribute("jobadapter.job.aborted", True)
        elif event.outcome in ("performed", "rescued"):
            self.performed.add(1, metric_attributes)
        if event.duration is not None:
            self.duration.record(
                event.duration, {**metric_attributes, "jobadapter.job.outcome": event.outcome or ""}
            )
        _current.reset(running)
        otel_context.detach(token)
        span.end()

    # -- shared ---------------------------------------------------------------------------

    def add_event(self, event: events.Event, name: str) -> None:
        opened = self.executions.get(id(event.job)) if event.job is not None else None
        if opened is not None:
            opened[0].add_event(name, _error_attributes(event.error))

    def add_arguments(self, span: Span, job: Job) -> None:
        stored = job._stored_arguments
        if self.record_arguments and type(job).log_arguments and stored is not None:
            arguments, keyword_arguments = stored
            span.set_attribute("jobadapter.job.arguments", json.dumps(arguments))
            span.set_attribute("jobadapter.job.keyword_arguments", json.dumps(keyword_arguments))

    def job_attributes(self, job: Job, adapter: Adapter | None) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "messaging.system": self.system(adapter),
            "messaging.destination.name": job.queue_name,
            "messaging.message.id": job.job_id,
            "jobadapter.job.class": job.job_name,
            "jobadapter.job.executions": job.executions,
        }
        if job.priority is not None:
            attributes["jobadapter.job.priority"] = job.priority
        if adapter is not None:
            attributes["jobadapter.adapter"] = adapter.url.adapter
        return attributes

    def metric_attributes(self, job: Job, adapter: Adapter | None) -> dict[str, str]:
        return {
            "messaging.system": self.system(adapter),
            "messaging.destination.name": job.queue_name,
            "jobadapter.job.class": job.job_name,
        }

    def system(self, adapter: Adapter | None) -> str:
        """``messaging.system``: the broker a message travels through (``rabbitmq``, ``redis``),
        ``jobadapter`` for the in-process adapters, where no broker is in between."""
        if adapter is None:
            return INSTRUMENTATION_NAME
        known = self.systems.get(id(adapter))
        if known is None:
            known = self.systems[id(adapter)] = _system(adapter)
        return known


def _system(adapter: Adapter) -> str:
    transport = adapter.url.transport
    if transport is not None:
        return _SYSTEMS.get(transport, transport)
    if Capability.EXTERNAL_WORKER not in adapter.capabilities:
        return INSTRUMENTATION_NAME
    return adapter.url.adapter  # an attached app whose broker the URL does not name


def _trace_context(job: Job) -> Mapping[str, Any] | None:
    """The envelope's ``trace_context``, if it is an object (a malformed one is ignored)."""
    carried = job.envelope_extras.get(TRACE_CONTEXT_KEY)
    return carried if isinstance(carried, dict) else None


def _producer_context(job: Job) -> SpanContext | None:
    carried = _trace_context(job)
    if carried is None:
        return None
    carrier = {
        key: value for key in ("traceparent", "tracestate") if isinstance(value := carried.get(key), str)
    }
    return _valid(_W3C.extract(carrier))


def _previous_execution(job: Job) -> SpanContext | None:
    carried = _trace_context(job)
    traceparent = carried.get(PREVIOUS_EXECUTION) if carried is not None else None
    if not isinstance(traceparent, str):
        return None
    return _valid(_W3C.extract({"traceparent": traceparent}))


def _valid(extracted: otel_context.Context) -> SpanContext | None:
    context = trace.get_current_span(extracted).get_span_context()
    return context if context.is_valid else None


def _error_attributes(error: BaseException | None) -> dict[str, str]:
    if error is None:
        return {}
    return {"exception.type": _qualified_name(error), "exception.message": str(error)}


def _qualified_name(error: BaseException) -> str:
    kind = type(error)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _fail(span: Span, error: BaseException) -> None:
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
