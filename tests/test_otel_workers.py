"""One trace from the process that enqueues to a real worker process, on RQ (a redis-server of
the test's own), and on Celery and Dramatiq over RabbitMQ: this process exports to memory, the
worker (told by ``JOBADAPTER_PLUGINS`` to import tests.otel_worker_plugin) to a JSON-lines file
read here."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from jobadapter import config, otel
from jobadapter.adapters.base import Adapter
from jobadapter.faults.brokers import PrivateRedis, shared_amqp
from tests.otel_worker_jobs import Greeting, SlowTwice

ROOT = Path(__file__).parent.parent
CELERY_AMQP = shared_amqp("celery")
DRAMATIQ_AMQP = shared_amqp("dramatiq")
SPANS_VARIABLE = "JOBADAPTER_TEST_SPANS"
"""Where tests.otel_worker_plugin writes the worker's spans (importing it here would instrument)."""


@pytest.fixture
def producer() -> Iterator[tuple[trace.Tracer, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    stop = otel.instrument(tracer_provider=provider)
    yield provider.get_tracer("tests"), exporter
    stop()


def _worker_command(url: str, queue: str, *extra: str) -> list[str]:
    command = [sys.executable, "-m", "jobadapter.cli", "worker", "--url", url]
    return [*command, "--app", "tests.otel_worker_jobs", "--queues", queue, *extra]


def _worker_environment(spans: Path) -> dict[str, str]:
    return {**os.environ, config.PLUGINS_VARIABLE: "tests.otel_worker_plugin", SPANS_VARIABLE: str(spans)}


def _read(spans: Path) -> list[dict[str, Any]]:
    if not spans.exists():
        return []
    return [json.loads(line) for line in spans.read_text().splitlines() if line]


def _hex(number: int, width: int) -> str:
    return f"0x{number:0{width}x}"


def _assert_one_trace(
    request: ReadableSpan, sends: list[ReadableSpan], processes: list[dict[str, Any]], system: str
) -> None:
    """Each process span is the child of the send span of its execution, all in the request's trace."""
    assert request.context is not None
    trace_id = _hex(request.context.trace_id, 32)
    send_ids = {span.attributes["messaging.message.id"]: _hex(span.context.span_id, 16) for span in sends}  # type: ignore[index]
    for process in processes:
        assert process["kind"] == "SpanKind.CONSUMER"
        assert process["context"]["trace_id"] == trace_id
        assert process["attributes"]["messaging.system"] == system
        assert process["parent_id"] == send_ids[process["attributes"]["messaging.message.id"]]


def test_an_rq_worker_continues_the_trace_and_links_the_retries(
    producer: tuple[trace.Tracer, InMemorySpanExporter], tmp_path: Path
) -> None:
    tracer, exporter = producer
    spans = tmp_path / "worker-spans.jsonl"
    with PrivateRedis(persistent=False) as server:
        url = f"rq+{server.url}"
        adapter = config.build_adapter(url)
        try:
            with config.override(adapter), tracer.start_as_current_span("POST /orders") as request:
                greeting = Greeting.perform_later("ada")
                slow = SlowTwice.perform_later()
            completed = subprocess.run(
                _worker_command(url, "default", "--burst"),
                env=_worker_environment(spans),
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        finally:
            adapter.close()
    assert completed.returncode == 0, completed.stderr
    worker_spans = _read(spans)
    processes = [span for span in worker_spans if span["name"] == "process default"]
    retry_sends = [span for span in worker_spans if span["name"] == "send default"]
    assert len(processes) == 4, completed.stderr  # the greeting, and three executions of SlowTwice
    (request_span,) = [span for span in exporter.get_finished_spans() if span.name == "POST /orders"]
    sends = [span for span in exporter.get_finished_spans() if span.name == "send default"]
    assert {span.attributes["messaging.message.id"] for span in sends} == {greeting.job_id, slow.job_id}  # type: ignore[index]
    first = [p for p in processes if p["attributes"]["messaging.message.id"] == greeting.job_id]
    _assert_one_trace(request_span, sends, first, "redis")
    executions = sorted(
        (p for p in processes if p["attributes"]["messaging.message.id"] == slow.job_id),
        key=lambda p: p["attributes"]["jobadapter.job.executions"],
    )
    assert [p["attributes"]["jobadapter.job.outcome"] for p in executions] == [
        "retried",
        "retried",
        "performed",
    ]
    assert executions[0]["parent_id"] == _hex(sends[1].context.span_id, 16)
    pairs = list(itertools.pairwise(executions))
    retry_sends.sort(key=lambda span: span["start_time"])
    for (previous, following), send in zip(pairs, retry_sends, strict=True):
        assert [link["context"]["span_id"] for link in following["links"]] == [previous["context"]["span_id"]]
        assert send["parent_id"] == previous["context"]["span_id"]  # the retry is sent from inside it
        assert following["parent_id"] == send["context"]["span_id"]
        assert [event["name"] for event in previous["events"]] == ["retry"]
    assert {p["context"]["trace_id"] for p in executions} == {_hex(request.get_span_context().trace_id, 32)}


@contextmanager
def _worker(url: str, queue: str, spans: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as output:
        process = subprocess.Popen(
            _worker_command(url, queue, "--concurrency", "1"),
            env=_worker_environment(spans),
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _delete(adapter: Adapter, queue: str) -> None:
    """The test's queue, and what the backend declared beside it (Celery: an exchange named like
    the queue; Dramatiq: its delay and dead-letter queues, which ``purge`` deletes)."""
    adapter.purge([queue])
    if adapter.url.adapter == "celery":
        with adapter.app.connection_for_write() as connection:  # type: ignore[attr-defined]
            connection.default_channel.exchange_delete(queue)


@pytest.mark.parametrize("url", [CELERY_AMQP, DRAMATIQ_AMQP], ids=["celery", "dramatiq"])
def test_a_worker_on_rabbitmq_continues_the_trace(
    url: str, producer: tuple[trace.Tracer, InMemorySpanExporter], tmp_path: Path
) -> None:
    tracer, exporter = producer
    spans, log = tmp_path / "worker-spans.jsonl", tmp_path / "worker.log"
    queue = f"jac-otel-{uuid.uuid4().hex[:8]}"
    adapter = config.build_adapter(url)
    try:
        with config.override(adapter), tracer.start_as_current_span("POST /orders") as request:
            greeting = Greeting.set(queue=queue).perform_later("grace")
        with _worker(url, queue, spans, log):
            deadline = time.monotonic() + 60
            while not any(span["name"] == f"process {queue}" for span in _read(spans)):
                assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
                time.sleep(0.05)
    finally:
        _delete(adapter, queue)
        adapter.close()
    (process,) = [span for span in _read(spans) if span["name"] == f"process {queue}"]
    (request_span,) = [span for span in exporter.get_finished_spans() if span.name == "POST /orders"]
    sends = [span for span in exporter.get_finished_spans() if span.name == f"send {queue}"]
    assert process["attributes"]["messaging.message.id"] == greeting.job_id
    assert process["attributes"]["jobadapter.adapter"] == adapter.url.adapter
    assert process["status"]["status_code"] == "UNSET"
    _assert_one_trace(request_span, sends, [process], "rabbitmq")
    assert request.get_span_context().trace_id == request_span.context.trace_id
