from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

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
        (json.dumps(_document(extra=1)), "unknown field(s): extra"),
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
