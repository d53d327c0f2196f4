"""jobadapter.otel with the OpenTelemetry SDK's in-memory exporters, in this process (the test
adapter runs every job through the real envelope); tests/test_otel_workers.py crosses processes."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader, NumberDataPoint
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from jobadapter import Job, discard_on, events, otel, perform_all_later, rescue_from, retry_on
from jobadapter.testing import JobRecorder


class Slow(Exception):
    pass


class Gone(Exception):
    pass


class Broken(Exception):
    pass


@retry_on(Slow, wait=0, attempts=3, jitter=0)
@discard_on(Gone)
class Traced(Job):
    """Fails as its argument says: ``slow-N`` raises Slow in its first N executions."""

    def perform(self, what: str, secret: str = "") -> str:
        logging.getLogger("jobadapter").warning("inside %s", what)
        if what.startswith("slow-") and self.executions <= int(what.removeprefix("slow-")):
            raise Slow(f"slow on {self.executions}")
        if what == "gone":
            raise Gone("no row")
        if what == "broken":
            raise Broken("bug")
        return what


class Handled(Job):
    queue_as = "handled"
    priority = 4

    def perform(self) -> None:
        raise Broken("expected")

    @rescue_from(Broken)
    def note(self, error: Broken) -> None: ...


class Private(Job):
    log_arguments = False

    def perform(self, password: str) -> None: ...


@dataclass
class Telemetry:
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        return [span for span in self.exporter.get_finished_spans() if name is None or span.name == name]

    def points(self, metric: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        assert data is not None
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for found in scope.metrics
            if found.name == metric
            for point in found.data.data_points
        ]

    def count(self, metric: str, **attributes: str) -> int:
        total = 0
        for point in self.points(metric):
            assert isinstance(point, NumberDataPoint)
            if all((point.attributes or {}).get(key) == value for key, value in attributes.items()):
                total += int(point.value)
        return total


@contextmanager
def instrumented(**options: Any) -> Iterator[Telemetry]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    stop = otel.instrument(
        tracer_provider=tracer_provider, meter_provider=MeterProvider(metric_readers=[reader]), **options
    )
    try:
        yield Telemetry(exporter, reader)
    finally:
        stop()


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    with instrumented() as found:
        yield found


def _parent(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def _id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def _trace(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.trace_id)


def test_the_process_span_is_a_child_of_the_send_span_the_envelope_names(
    jobs: JobRecorder, telemetry: Telemetry
) -> None:
    request = otel_tracer(telemetry).start_span("GET /signup")
    from opentelemetry import trace

    with trace.use_span(request, end_on_exit=True):
        job = Traced.perform_later("ok")
    (carried,) = jobs.adapter.pending
    jobs.perform_enqueued()
    (send,) = telemetry.spans("send default")
    (process,) = telemetry.spans("process default")
    assert send.kind is SpanKind.PRODUCER and process.kind is SpanKind.CONSUMER
    assert _parent(send) == _id(telemetry.spans("GET /signup")[0])
    assert _parent(process) == _id(send)
    assert _trace(process) == _trace(send) == request.get_span_context().trace_id
    traceparent = carried.extras["trace_context"]["traceparent"]
    assert traceparent.startswith(f"00-{_trace(send):032x}-{_id(send):016x}-")
    for span, operation in ((send, "send"), (process, "process")):
        assert span.attributes is not None
        assert span.attributes["messaging.system"] == "jobadapter"  # the test adapter: no broker
        assert span.attributes["messaging.destination.name"] == "default"
        assert span.attributes["messaging.message.id"] == job.job_id
        assert span.attributes["messaging.operation.type"] == operation
        assert span.attributes["jobadapter.job.class"] == Traced.job_name
        assert span.status.status_code is StatusCode.UNSET
    assert process.attributes is not None
    assert process.attributes["jobadapter.job.executions"] == 1
    assert process.attributes["jobadapter.job.outcome"] == "performed"


def otel_tracer(telemetry: Telemetry) -> Any:
    """A tracer writing to the same exporter, for the test's own "request" span."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(telemetry.exporter))
    return provider.get_tracer("tests")


def test_a_retried_job_is_three_linked_process_spans_with_retry_events(
    jobs: JobRecorder, telemetry: Telemetry
) -> None:
    Traced.perform_later("slow-2")
    jobs.perform_enqueued()
    processes = telemetry.spans("process default")
    assert [span.attributes["jobadapter.job.executions"] for span in processes] == [1, 2, 3]  # type: ignore[index]
    assert [span.attributes["jobadapter.job.outcome"] for span in processes] == [  # type: ignore[index]
        "retried",
        "retried",
        "performed",
    ]
    assert len({_trace(span) for span in processes}) == 1
    assert processes[0].links == ()
    for previous, following in itertools.pairwise(processes):
        (link,) = following.links
        assert link.context.span_id == _id(previous)
        assert link.attributes == {"jobadapter.link": "previous execution"}
    for span in processes:
        assert span.status.status_code is StatusCode.UNSET  # a handled error is no failure
    retries = [[event for event in span.events if event.name == "retry"] for span in processes]
    assert [len(found) for found in retries] == [1, 1, 0]
    for number, (event,) in enumerate(retries[:2], start=1):
        assert event.attributes == {
            "jobadapter.retry.wait": 0.0,
            "exception.type": f"{__name__}.Slow",
            "exception.message": f"slow on {number}",
        }
    sends = telemetry.spans("send default")
    assert [_parent(span) for span in sends[1:]] == [_id(processes[0]), _id(processes[1])]
    assert telemetry.count("jobadapter.jobs.retried") == 2
    assert telemetry.count("jobadapter.jobs.performed") == 1


def test_exhausted_retries_fail_the_last_span_and_say_so(jobs: JobRecorder, telemetry: Telemetry) -> None:
    Traced.perform_later("slow-9")
    with pytest.raises(Slow):
        jobs.perform_enqueued()
    *retried, last = telemetry.spans("process default")
    assert [span.status.status_code for span in retried] == [StatusCode.UNSET] * 2
    assert last.status.status_code is StatusCode.ERROR
    assert last.status.description == "Slow: slow on 3"
    assert [event.name for event in last.events] == ["retries exhausted", "exception"]
    assert last.events[1].attributes is not None
    assert last.events[1].attributes["exception.type"] == f"{__name__}.Slow"
    assert telemetry.count("jobadapter.jobs.failed", **{"jobadapter.job.class": Traced.job_name}) == 1


def test_a_discarded_job_is_an_event_not_a_failure(jobs: JobRecorder, telemetry: Telemetry) -> None:
    Traced.perform_later("gone")
    jobs.perform_enqueued()
    (process,) = telemetry.spans("process default")
    assert process.status.status_code is StatusCode.UNSET
    assert [(event.name, dict(event.attributes or {})) for event in process.events] == [
        ("discard", {"exception.type": f"{__name__}.Gone", "exception.message": "no row"})
    ]
    assert process.attributes is not None
    assert process.attributes["jobadapter.job.outcome"] == "discarded"
    assert telemetry.count("jobadapter.jobs.discarded") == 1
    assert telemetry.count("jobadapter.jobs.failed") == 0


def test_an_unhandled_error_fails_the_span_and_a_handled_one_does_not(
    jobs: JobRecorder, telemetry: Telemetry
) -> None:
    Traced.perform_later("broken")
    Handled.perform_later()
    with pytest.raises(Broken):
        jobs.perform_enqueued()
    jobs.perform_enqueued()
    (failed,) = telemetry.spans("process default")
    assert failed.status.status_code is StatusCode.ERROR
    assert [event.name for event in failed.events] == ["exception"]
    (rescued,) = telemetry.spans("process handled")
    assert rescued.status.status_code is StatusCode.UNSET
    assert rescued.events == ()
    assert rescued.attributes is not None
    assert rescued.attributes["jobadapter.job.priority"] == 4
    assert telemetry.count("jobadapter.jobs.failed") == 1
    assert telemetry.count("jobadapter.jobs.performed", **{"messaging.destination.name": "handled"}) == 1


def test_perform_all_later_of_100_jobs_is_one_send_span_linked_to_each_jobs_create_span(
    jobs: JobRecorder, telemetry: Telemetry
) -> None:
    batch = [Traced(f"job-{n}") for n in range(100)]
    assert perform_all_later(batch) == 100
    carried = {envelope.job_id: envelope.extras["trace_context"] for envelope in jobs.adapter.pending}
    jobs.perform_enqueued()
    (send,) = telemetry.spans("send default")
    creates = telemetry.spans("create default")
    processes = telemetry.spans("process default")
    assert (len(creates), len(processes)) == (100, 100)
    assert send.kind is SpanKind.CLIENT
    assert send.attributes is not None
    assert send.attributes["messaging.batch.message_count"] == 100
    assert [link.context.span_id for link in send.links] == [_id(span) for span in creates]
    by_id = {_id(span): span for span in creates}
    for job in batch:
        create = next(
            s for s in creates if s.attributes and s.attributes["messaging.message.id"] == job.job_id
        )
        assert carried[job.job_id]["traceparent"].split("-")[2] == f"{_id(create):016x}"
    for process in processes:
        parent = by_id[_parent(process)]  # type: ignore[index]
        assert parent.attributes is not None and process.attributes is not None
        assert parent.attributes["messaging.message.id"] == process.attributes["messaging.message.id"]
    assert telemetry.count("jobadapter.jobs.enqueued") == 100


def test_metrics_count_by_class_and_queue_and_time_executions_and_latency(
    jobs: JobRecorder, telemetry: Telemetry
) -> None:
    Traced.perform_later("ok")
    Traced.set(queue="low").perform_later("ok")
    Traced.perform_later("slow-1")
    Traced.perform_later("gone")
    jobs.perform_enqueued()
    queue = "messaging.destination.name"
    assert telemetry.count("jobadapter.jobs.enqueued", **{queue: "default"}) == 4  # 3 and a retry
    assert telemetry.count("jobadapter.jobs.enqueued", **{queue: "low"}) == 1
    assert telemetry.count("jobadapter.jobs.performed", **{queue: "default"}) == 2
    assert telemetry.count("jobadapter.jobs.performed", **{queue: "low"}) == 1
    assert telemetry.count("jobadapter.jobs.retried") == 1
    assert telemetry.count("jobadapter.jobs.discarded") == 1
    durations = telemetry.points("jobadapter.job.duration")
    assert sum(point.count for point in durations) == 5
    outcomes = {point.attributes["jobadapter.job.outcome"] for point in durations}
    assert outcomes == {"performed", "retried", "discarded"}
    (latency_default, latency_low) = sorted(
        telemetry.points("jobadapter.job.queue_latency"), key=lambda p: p.attributes[queue]
    )
    assert isinstance(latency_default, HistogramDataPoint)
    assert (latency_default.count, latency_low.count) == (4, 1)
    assert 0 <= latency_default.min <= latency_default.max < 5
    for name in ("jobadapter.jobs.enqueued", "jobadapter.job.duration", "jobadapter.job.queue_latency"):
        for point in telemetry.points(name):
            assert set(point.attributes) <= {
                "messaging.system",
                queue,
                "jobadapter.job.class",
                "jobadapter.job.outcome",
            }


def test_arguments_stay_off_spans_unless_asked_and_the_class_allows(jobs: JobRecorder) -> None:
    def argument_attributes(telemetry: Telemetry) -> list[object]:
        return [
            (span.attributes or {}).get("jobadapter.job.arguments") for span in telemetry.spans() if span.name
        ]

    with instrumented() as telemetry:
        Traced.perform_later("ok", secret="s3cret")
        jobs.perform_enqueued()
        assert argument_attributes(telemetry) == [None, None]
    with instrumented(record_arguments=True) as telemetry:
        Traced.perform_later("ok", secret="s3cret")
        Private.perform_later("hunter2")
        jobs.perform_enqueued()
        assert argument_attributes(telemetry) == ['["ok"]', None, '["ok"]', None]
        keywords = [
            (span.attributes or {}).get("jobadapter.job.keyword_arguments") for span in telemetry.spans()
        ]
        assert keywords[0] == '{"secret": "s3cret"}'


def test_link_propagation_starts_a_trace_per_execution_linked_to_the_producer(jobs: JobRecorder) -> None:
    with instrumented(propagation="link") as telemetry:
        Traced.perform_later("ok")
        jobs.perform_enqueued()
        (send,) = telemetry.spans("send default")
        (process,) = telemetry.spans("process default")
        assert process.parent is None
        assert _trace(process) != _trace(send)
        (link,) = process.links
        assert link.context.span_id == _id(send)
        assert link.attributes == {"jobadapter.link": "producer"}
    with pytest.raises(ValueError, match="propagation must be 'child' or 'link'"):
        otel.instrument(propagation="sideways")  # type: ignore[arg-type]


def test_a_malformed_trace_context_is_ignored(jobs: JobRecorder, telemetry: Telemetry) -> None:
    job = Traced("ok")
    envelope = job.to_envelope().evolve(extras={"trace_context": {"traceparent": "00-nonsense"}})
    jobs.adapter._record(envelope)
    envelope = job.to_envelope().evolve(extras={"trace_context": ["not", "an", "object"]})
    jobs.adapter._record(envelope)
    performed = jobs.perform_enqueued()
    assert [job.outcome for job in performed] == ["performed", "performed"]
    assert [span.parent for span in telemetry.spans("process default")] == [None, None]


def test_perform_now_is_an_internal_span_in_the_callers_trace(telemetry: Telemetry) -> None:
    assert Traced.perform_now("ok") == "ok"
    (span,) = telemetry.spans()
    assert span.name == "perform Traced"
    assert span.kind is SpanKind.INTERNAL
    assert span.attributes is not None
    assert "messaging.system" not in span.attributes


def test_log_lines_during_a_job_carry_its_fields_and_trace_ids(
    jobs: JobRecorder, telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="jobadapter"):
        job = Traced.perform_later("ok")
        jobs.perform_enqueued()
    (send,) = telemetry.spans("send default")
    (process,) = telemetry.spans("process default")
    lines = {record.getMessage().split(" ")[0]: record for record in caplog.records}
    expected = {"Enqueued": send, "Performing": process, "inside": process, "Performed": process}
    for word, span in expected.items():
        record = lines[word]
        assert record.trace_id == f"{_trace(span):032x}"  # type: ignore[attr-defined]
        assert record.span_id == f"{_id(span):016x}"  # type: ignore[attr-defined]
    for word in ("Enqueued", "Performing", "Performed"):
        assert lines[word].job_id == job.job_id  # type: ignore[attr-defined]
        assert lines[word].queue == "default"  # type: ignore[attr-defined]


def test_uninstrument_stops_spans_and_log_ids(jobs: JobRecorder, caplog: pytest.LogCaptureFixture) -> None:
    with instrumented() as telemetry:
        pass
    with caplog.at_level(logging.INFO, logger="jobadapter"):
        Traced.perform_later("ok")
        jobs.perform_enqueued()
    assert telemetry.spans() == []
    assert all(not hasattr(record, "trace_id") for record in caplog.records)
    assert "trace_context" not in jobs.performed[0].envelope_extras


def test_without_an_sdk_the_routine_events_are_not_even_built(jobs: JobRecorder) -> None:
    """OpenTelemetry's API alone hands out no-op tracers and meters: instrumenting then silences
    the subscriber, so the core skips the events (the benchmark measures the rest)."""
    from opentelemetry import metrics, trace

    assert not events.listening("execution_start")
    for options in (
        {},
        {"tracer_provider": trace.NoOpTracerProvider(), "meter_provider": metrics.NoOpMeterProvider()},
    ):
        stop = otel.instrument(**options)  # type: ignore[arg-type]
        try:
            assert not events.listening("execution_start") and not events.listening("enqueue_start")
            Traced.perform_later("ok")
            jobs.perform_enqueued()
            assert "trace_context" not in jobs.performed[-1].envelope_extras
        finally:
            stop()
    with instrumented():
        assert events.listening("execution_start") and events.listening("enqueue_start")


class Interrupted(BaseException):
    """What a worker raises into a job it stops (Dramatiq's time limit is a BaseException)."""


class Stopped(Job):
    def perform(self) -> None:
        raise Interrupted("time limit")


def test_an_interrupted_execution_still_ends_its_span(jobs: JobRecorder, telemetry: Telemetry) -> None:
    from opentelemetry import trace

    Stopped.perform_later()
    with pytest.raises(Interrupted):
        jobs.perform_enqueued()
    (process,) = telemetry.spans("process default")
    assert process.status.status_code is StatusCode.ERROR
    assert (process.attributes or {})["jobadapter.job.outcome"] == "failed"
    assert not trace.get_current_span().get_span_context().is_valid  # nothing left attached
    assert telemetry.count("jobadapter.jobs.failed") == 1


def test_the_zero_code_agent_finds_the_instrumentor_by_its_entry_point(jobs: JobRecorder) -> None:
    from importlib.metadata import entry_points

    (entry_point,) = [
        found for found in entry_points(group="opentelemetry_instrumentor") if found.name == "jobadapter"
    ]
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = entry_point.load()()
    instrumentor.instrument(tracer_provider=provider, skip_dep_check=True)  # an agent's own option
    try:
        Traced.perform_later("ok")
        jobs.perform_enqueued()
    finally:
        instrumentor.uninstrument()
    assert [span.name for span in exporter.get_finished_spans()] == ["send default", "process default"]
