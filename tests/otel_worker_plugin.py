"""A worker plugin (``JOBADAPTER_PLUGINS=tests.otel_worker_plugin``) that traces the worker's jobs
with the OpenTelemetry SDK and appends each finished span, as one JSON line, to the file that
``JOBADAPTER_TEST_SPANS`` names: how tests/test_otel_workers.py sees inside a real worker."""

from __future__ import annotations

import os
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from jobadapter import otel

SPANS_VARIABLE = "JOBADAPTER_TEST_SPANS"


class JsonLinesExporter(SpanExporter):
    """Appends spans to a file, opened per export: a forked work horse or pool child writes too."""

    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(span.to_json(indent=None) + "\n" for span in spans)
        with open(self.path, "a", encoding="utf-8") as output:
            output.write(lines)
        return SpanExportResult.SUCCESS


provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(os.environ[SPANS_VARIABLE])))
otel.instrument(tracer_provider=provider)
