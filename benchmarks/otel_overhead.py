"""What ``jobadapter.otel`` costs per job, as ratios to no instrumentation in the same run.

No backend (core_overhead's null adapter and three-argument job), the
``jobadapter`` logger at WARNING, and four set-ups measured in alternating
rounds, so drift in the machine's load hits each alike:

- none: ``jobadapter.otel`` not instrumented (the baseline), measured twice: the
  second ("none, again") shows how far the ratios move by noise alone;
- no SDK: ``instrument()`` with OpenTelemetry's API alone (its global no-op
  providers), what an application that installs ``jobadapter[otel]`` and no SDK gets;
- no-op providers: ``instrument()`` given ``NoOpTracerProvider`` and ``NoOpMeterProvider``;
- SDK: ``instrument()`` given the SDK's ``TracerProvider`` with a ``BatchSpanProcessor``
  (to an exporter that drops the spans: the export itself is the exporter's cost)
  and a ``MeterProvider``.

Enqueue is ``perform_later`` to an encoded envelope; perform is ``execute(payload)``
of an envelope enqueued under the same set-up (with its trace context, under the SDK).

    uv run nox -s benchmarks      # or: uv run python benchmarks/otel_overhead.py
"""

from __future__ import annotations

import logging
import statistics
import timeit
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager

from core_overhead import NullAdapter, ThreeArgumentJob
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from jobadapter import config, otel
from jobadapter.execution import execute

ROUNDS = 9
NUMBER = 4_000


class DroppingExporter(SpanExporter):
    """Takes every batch and keeps nothing."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


@contextmanager
def _none() -> Iterator[None]:
    yield


@contextmanager
def _no_sdk() -> Iterator[None]:
    stop = otel.instrument()
    try:
        yield
    finally:
        stop()


@contextmanager
def _no_op_providers() -> Iterator[None]:
    stop = otel.instrument(
        tracer_provider=trace.NoOpTracerProvider(), meter_provider=metrics.NoOpMeterProvider()
    )
    try:
        yield
    finally:
        stop()


_SDK_TRACING = TracerProvider()
_SDK_TRACING.add_span_processor(BatchSpanProcessor(DroppingExporter()))
_SDK_METERS = MeterProvider(metric_readers=[InMemoryMetricReader()])


@contextmanager
def _sdk() -> Iterator[None]:
    stop = otel.instrument(tracer_provider=_SDK_TRACING, meter_provider=_SDK_METERS)
    try:
        yield
    finally:
        stop()


SETUPS: dict[str, Callable[[], AbstractContextManager[None]]] = {
    "none": _none,
    "none, again": _none,
    "no SDK": _no_sdk,
    "no-op providers": _no_op_providers,
    "SDK, batch processor": _sdk,
}


def _per_job(statement: Callable[[], object]) -> float:
    return timeit.timeit(statement, number=NUMBER) / NUMBER * 1e6


def main() -> None:
    logging.getLogger("jobadapter").setLevel(logging.WARNING)
    adapter = NullAdapter()
    enqueue: dict[str, list[float]] = {name: [] for name in SETUPS}
    perform: dict[str, list[float]] = {name: [] for name in SETUPS}
    with config.override(adapter):
        for round_number in range(ROUNDS):
            names = list(SETUPS)
            shift = round_number % len(names)
            for name in names[shift:] + names[:shift]:
                with SETUPS[name]():
                    enqueue[name].append(_per_job(lambda: ThreeArgumentJob.perform_later(42, "name", 0.5)))
                    payload = adapter.last
                    perform[name].append(_per_job(lambda: execute(payload, adapter)))  # noqa: B023
    _SDK_TRACING.shutdown()
    print(f"jobadapter.otel overhead: median of {ROUNDS} rounds of {NUMBER:,} jobs, no backend")
    print(f"{'':24} {'enqueue µs':>10} {'ratio':>6}   {'perform µs':>10} {'ratio':>6}")
    for name in SETUPS:
        rows = []
        for figures in (enqueue, perform):
            ratios = [mine / base for mine, base in zip(figures[name], figures["none"], strict=True)]
            rows.append(f"{statistics.median(figures[name]):10.1f} {statistics.median(ratios):6.2f}")
        print(f"{name:24} {rows[0]}   {rows[1]}")


if __name__ == "__main__":
    main()
