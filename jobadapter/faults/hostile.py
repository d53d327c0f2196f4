"""Hostile messages: what the fault suite pushes at a worker to prove it survives anything.

A worker reads bytes that any process with access to the broker may have
written. Whatever they hold, the worker must not crash, wedge or loop; the
message must end in the backend's failed store (or dead-letter queue) with a
reason; and no name taken from it may be imported. The suite checks each
message's fate through `Adapter.failed`, by a *marker*: a unique text that each
message carries, and that must show in the failed entry's payload or reason.

Two sources of messages:

- `envelope_kinds`: bad *envelopes* inside well-formed backend messages,
  published through `Adapter.enqueue_payload`. Every adapter that can publish
  raw payloads gets these for free.
- ``Adapter.hostile_messages()``: bad *backend* messages, in the backend's own
  wire format (random bytes on the transport, wrong types in Celery's headers
  or Dramatiq's options, an unknown task or actor name, pickle content, a
  foreign RQ function…). Only the adapter knows its wire format, so it
  supplies these.

Names in the payloads point at `jobadapter.faults.canary`, a module that
records its own import: the suite fails if any worker ever imports it. This
module stays light (adapters import it for `HostileMessage`); the experiment
that pushes the messages is `jobadapter.faults.barrage`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, NamedTuple

from jobadapter import envelope as envelope_format

if TYPE_CHECKING:
    from jobadapter.adapters.base import Adapter

Fate = Literal["failed", "performed", "dropped"]
"""Where a hostile message must end:

- ``failed``: in ``Adapter.failed()``, the marker in its payload or reason;
- ``performed``: it was a valid job after all (a huge argument), and ran;
- ``dropped``: the broker itself discards it before any consumer sees it (each
  such case is documented by the adapter, in ``description``).
"""

CANARY = "jobadapter.faults.canary"
"""A module that records its own import (see `jobadapter.faults.canary`)."""


class HostileMessage(NamedTuple):
    """One kind of hostile message, and how to publish it."""

    kind: str
    """A short stable name, e.g. ``random-bytes``: the key in the fault results."""
    description: str
    send: Callable[[str, str], None]
    """``send(queue_name, marker)``: publish one such message on ``queue_name`` (a
    jobadapter queue name), with ``marker`` somewhere in what the failed store keeps."""
    fate: Fate = "failed"


def valid_document(marker: str, job_class: str = "jobadapter.faults.jobs.ProbeJob") -> dict[str, object]:
    """A well-formed envelope document whose only argument (and job id) is ``marker``."""
    return {
        "jobadapter": envelope_format.VERSION,
        "job_class": job_class,
        "job_id": marker,
        "queue_name": "hostile",
        "priority": None,
        "arguments": [marker],
        "keyword_arguments": {},
        "executions": 0,
        "exception_executions": {},
        "enqueued_at": "2026-11-28T20:00:00.000000Z",
        "scheduled_at": None,
    }


HUGE_ARGUMENT_BYTES = 10 * 1024 * 1024
DEEP_NESTING = 10_000


def _deeply_nested(marker: str) -> str:
    document = valid_document(marker)
    document["arguments"] = "NESTED"
    text = json.dumps(document)
    return text.replace('"NESTED"', "[" * DEEP_NESTING + json.dumps(marker) + "]" * DEEP_NESTING)


def envelope_kinds(adapter: Adapter) -> list[HostileMessage]:
    """Bad envelopes in well-formed backend messages, via ``adapter.enqueue_payload``."""

    def raw(build: Callable[[str], str]) -> Callable[[str, str], None]:
        return lambda queue, marker: adapter.enqueue_payload(build(marker), queue)

    def document(**changes: object) -> Callable[[str], str]:
        return lambda marker: json.dumps(valid_document(marker) | changes)

    return [
        HostileMessage(
            "control-characters",
            "text with NUL and other control characters, not JSON",
            raw(lambda m: f"\x00\x01{m}\x7f\x00"),
        ),
        HostileMessage(
            "truncated-json",
            "an envelope cut off mid-way",
            raw(lambda m: json.dumps({"job_id": m} | valid_document(m))[:120]),
        ),
        HostileMessage("json-list", "JSON that is a list, not an object", raw(lambda m: json.dumps([m, 1]))),
        HostileMessage("json-string", "JSON that is a bare string", raw(lambda m: json.dumps(m))),
        HostileMessage(
            "future-version",
            "an envelope of a version this worker does not read",
            raw(document(jobadapter=99)),
        ),
        HostileMessage(
            "wrong-field-types",
            "executions as text, arguments as an object",
            raw(document(executions="many", arguments={"a": 1})),
        ),
        HostileMessage("not-a-job-class", "job_class names os.system", raw(document(job_class="os.system"))),
        HostileMessage(
            "canary-job-class",
            "job_class names a class in an importable module no job lives in",
            raw(document(job_class=f"{CANARY}.Boom")),
        ),
        HostileMessage("deep-nesting", f"arguments nested {DEEP_NESTING:,} lists deep", raw(_deeply_nested)),
        HostileMessage(
            "huge-argument",
            f"a valid job with a {HUGE_ARGUMENT_BYTES // (1024 * 1024)} MB string argument: it runs",
            raw(
                lambda m: json.dumps(
                    valid_document(m, "jobadapter.faults.jobs.ProbeJob")
                    | {"arguments": [m, "x" * HUGE_ARGUMENT_BYTES]}
                )
            ),
            "performed",
        ),
    ]
