from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from jobadapter import Job, retry_on
from jobadapter.adapters.test import TestAdapter
from jobadapter.envelope import VERSION, Envelope, decode
from jobadapter.errors import InvalidEnvelope


def _document(**changes: object) -> dict[str, object]:
    document: dict[str, object] = {
        "jobadapter": 1,
        "job_class": "myapp.jobs.RemoteServiceJob",
        "job_id": "7d3c8f1e-0000-4000-8000-000000000001",
        "queue_name": "default",
        "priority": None,
        "arguments": [42],
        "keyword_arguments": {},
        "executions": 0,
        "exception_executions": {},
        "enqueued_at": "2026-11-28T20:00:00.000000Z",
        "scheduled_at": None,
    }
    document.update(changes)
    return document


def test_the_design_example_decodes_and_encodes_back_identically() -> None:
    text = json.dumps(_document(), separators=(",", ":"))
    envelope = decode(text)
    assert envelope.job_class == "myapp.jobs.RemoteServiceJob"
    assert envelope.arguments == [42]
    assert envelope.enqueued_at == datetime(2026, 11, 28, 20, tzinfo=timezone.utc)
    assert json.loads(envelope.encode()) == _document()


def test_scheduled_at_and_priority_round_trip() -> None:
    envelope = Envelope(
        job_class="a.B",
        job_id="x",
        queue_name="low",
        priority=-3,
        arguments=[],
        keyword_arguments={"k": 1},
        executions=2,
        exception_executions={"[builtins.OSError]": 2},
        enqueued_at=datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=timezone.utc),
        scheduled_at=datetime(2026, 1, 2, tzinfo=timezone.utc),
    )
    again = decode(envelope.encode())
    assert again == envelope
    assert again.enqueued_at.microsecond == 123456


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe not json", "not JSON"),
        ("[1, 2]", "JSON list, not an object"),
        (json.dumps({"job_class": "x"}), "no 'jobadapter' version"),
        (json.dumps(_document(jobadapter=VERSION + 1)), "newer than this worker reads"),
        (json.dumps(_document(jobadapter="1")), "not a positive integer"),
        (json.dumps({k: v for k, v in _document().items() if k != "job_id"}), "missing field(s): job_id"),
        (json.dumps(_document(arguments={"a": 1})), "'arguments' must be a JSON list"),
        (json.dumps(_document(priority="high")), "'priority' must be an integer"),
        (json.dumps(_document(executions=-1)), "must not be negative"),
        (json.dumps(_document(exception_executions={"x": "2"})), "must be a count"),
        (json.dumps(_document(job_class="")), "'job_class' must not be empty"),
        (json.dumps(_document(enqueued_at="yesterday")), "'enqueued_at' must look like"),
        ("[" * 10_000 + "]" * 10_000, "nests JSON too deeply"),
    ],
)
def test_invalid_payloads_are_refused_with_the_reason(payload: str | bytes, reason: str) -> None:
    with pytest.raises(InvalidEnvelope) as raised:
        decode(payload)
    assert reason in str(raised.value)


@pytest.mark.parametrize(("document", "kind"), [(["job", 1], "list"), (7, "int"), (2.5, "float")])
def test_execute_refuses_a_parsed_document_that_is_not_an_object(document: object, kind: str) -> None:
    """Brokers that decode JSON themselves hand over whatever the JSON was."""
    from jobadapter.execution import execute

    with pytest.raises(InvalidEnvelope, match=f"payload is a JSON {kind}, not an object"):
        execute(document, None)  # type: ignore[arg-type]


TRACE_CONTEXT = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}


def test_optional_keys_a_worker_does_not_know_are_kept_and_written_back() -> None:
    """A version-1 envelope from a newer producer: its optional keys neither refuse the job nor vanish."""
    document = _document(trace_context=TRACE_CONTEXT, added_later={"any": ["json"]})
    envelope = decode(json.dumps(document))
    assert envelope.extras == {"trace_context": TRACE_CONTEXT, "added_later": {"any": ["json"]}}
    assert envelope.job_id == document["job_id"]
    assert json.loads(envelope.encode()) == document
    assert decode(envelope.evolve(scheduled_at=None).encode()).extras == envelope.extras


def test_an_envelope_without_optional_keys_writes_none() -> None:
    envelope = decode(json.dumps(_document()))
    assert envelope.extras == {}
    assert set(json.loads(envelope.encode())) == set(_document())


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (_document(jobadapter=VERSION + 1, trace_context=TRACE_CONTEXT), "newer than this worker reads"),
        (
            {k: v for k, v in _document(trace_context=TRACE_CONTEXT).items() if k != "queue_name"},
            "missing field(s): queue_name",
        ),
        (_document(executions="1", trace_context=TRACE_CONTEXT), "'executions' must be a JSON int"),
    ],
)
def test_optional_keys_do_not_excuse_a_wrong_version_or_required_field(
    document: dict[str, object], reason: str
) -> None:
    with pytest.raises(InvalidEnvelope) as raised:
        decode(json.dumps(document))
    assert reason in str(raised.value)


@retry_on(TimeoutError, wait=0, attempts=3)
class FlakyOnce(Job):
    job_name = "tests.test_envelope.FlakyOnce"

    def perform(self) -> None:
        if self.executions == 1:
            raise TimeoutError("slow")


def test_a_retry_carries_the_optional_keys_of_the_job_it_retries() -> None:
    adapter = TestAdapter()
    document = _document(job_class=FlakyOnce.job_name, arguments=[], trace_context=TRACE_CONTEXT)
    adapter._record(decode(json.dumps(document)))
    first, retry = adapter.perform_enqueued()
    assert first.outcome == "retried"
    assert retry.executions == 2
    assert retry.outcome == "performed"
    assert retry.envelope_extras == {"trace_context": TRACE_CONTEXT}
    assert first.to_envelope().extras == {"trace_context": TRACE_CONTEXT}
