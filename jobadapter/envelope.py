"""The wire format: one JSON object per job, identical on every backend.

An envelope carries arguments in their *serialized* form (see ``arguments.py``):
loading them is part of performing the job, so a failure to load lands inside
the job's rescue rules (``discard_on(DeserializationError)``), not in the worker.

``decode`` is strict on purpose. A worker receives bytes from a broker that
anyone with network access may have written to, so every required field is
checked for presence and type, and a version this code does not know is refused
rather than guessed at.

Version 1 may gain *optional* keys (``trace_context``, written by
``jobadapter.otel``, is one) without a version bump: a key that is not one of
the required fields is kept, unread, in `Envelope.extras`, and written back on
every later enqueue of the job (a retry, a move to another backend), so an older
worker neither refuses a job nor drops what a newer producer attached to it.
Whoever reads an optional key checks its value, and ignores one it cannot use.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any, NamedTuple

from jobadapter.errors import InvalidEnvelope

VERSION = 1
"""The envelope version this code writes and the only one it reads."""

_FIELDS = (
    "jobadapter",
    "job_class",
    "job_id",
    "queue_name",
    "priority",
    "arguments",
    "keyword_arguments",
    "executions",
    "exception_executions",
    "enqueued_at",
    "scheduled_at",
)
_REQUIRED = frozenset(_FIELDS)
NO_EXTRAS: Mapping[str, Any] = MappingProxyType({})
"""The optional keys of an envelope that has none (shared, and read-only so it stays empty)."""
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
"""One shared encoder: ``json.dumps`` with options builds a new one per call."""


class Envelope(NamedTuple):
    """One job as it travels: what to run, with what, and how often it already ran.

    A named tuple, as Dramatiq's ``Message`` is: immutable, and built on every
    enqueue and every perform, where a frozen dataclass costs three times as much.
    """

    job_class: str
    job_id: str
    queue_name: str
    priority: int | None
    arguments: list[Any]
    keyword_arguments: dict[str, Any]
    executions: int
    exception_executions: dict[str, int]
    enqueued_at: datetime
    scheduled_at: datetime | None = None
    extras: Mapping[str, Any] = NO_EXTRAS
    """The optional keys, by name, as they were received or set (never one of the required fields)."""

    def to_document(self) -> dict[str, Any]:
        """The envelope as a JSON-ready dict (for brokers that serialize messages themselves).

        Optional keys come first, so a required field always wins over an optional key of the
        same name (which `from_document` never produces, but code building an envelope could).
        """
        return {
            **self.extras,
            "jobadapter": VERSION,
            "job_class": self.job_class,
            "job_id": self.job_id,
            "queue_name": self.queue_name,
            "priority": self.priority,
            "arguments": self.arguments,
            "keyword_arguments": self.keyword_arguments,
            "executions": self.executions,
            "exception_executions": self.exception_executions,
            "enqueued_at": format_timestamp(self.enqueued_at),
            "scheduled_at": None if self.scheduled_at is None else format_timestamp(self.scheduled_at),
        }

    def encode(self) -> str:
        """The JSON text of this envelope."""
        return _ENCODER.encode(self.to_document())

    def evolve(self, **changes: Any) -> Envelope:
        """A copy with ``changes`` applied."""
        return self._replace(**changes)


def format_timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with microseconds and a ``Z``, as every envelope writes times."""
    utc = moment if moment.tzinfo is timezone.utc else moment.astimezone(timezone.utc)
    return utc.isoformat("T", "microseconds")[:-6] + "Z"  # "+00:00" becomes "Z"


def decode(payload: str | bytes | bytearray) -> Envelope:
    """Parse and validate one envelope; raise `InvalidEnvelope` saying what is wrong."""
    try:
        document = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidEnvelope(f"payload is not JSON: {exc}") from exc
    except RecursionError as exc:
        # The C parser counts nesting against the recursion limit: a few thousand
        # brackets must not crash the worker that reads them.
        raise InvalidEnvelope(f"payload nests JSON too deeply to read: {exc}") from exc
    return from_document(document)


def from_document(document: object) -> Envelope:
    """Validate an already-parsed JSON document (brokers that parse JSON themselves)."""
    if not isinstance(document, dict):
        raise InvalidEnvelope(f"payload is a JSON {type(document).__name__}, not an object")
    version = document.get("jobadapter")
    if version is None:
        raise InvalidEnvelope("payload has no 'jobadapter' version field: not a jobadapter job")
    if type(version) is not int or version < 1:
        raise InvalidEnvelope(f"envelope version {version!r} is not a positive integer")
    if version > VERSION:
        raise InvalidEnvelope(
            f"envelope version {version} is newer than this worker reads ({VERSION}): "
            "upgrade jobadapter on the workers"
        )
    missing = [name for name in _FIELDS if name not in document]
    if missing:
        raise InvalidEnvelope(f"envelope is missing field(s): {', '.join(missing)}")
    extras = (
        {name: value for name, value in document.items() if name not in _REQUIRED}
        if len(document) > len(_REQUIRED)  # every required key is there: any more are optional
        else NO_EXTRAS
    )
    priority = document["priority"]
    if priority is not None and type(priority) is not int:
        raise InvalidEnvelope(f"'priority' must be an integer or null, not {priority!r}")
    exception_executions = _require(document, "exception_executions", dict)
    for key, count in exception_executions.items():
        if type(count) is not int or count < 0:
            raise InvalidEnvelope(f"'exception_executions'[{key!r}] must be a count, not {count!r}")
    executions = _require(document, "executions", int)
    if executions < 0:
        raise InvalidEnvelope(f"'executions' must not be negative, not {executions}")
    scheduled_at = document["scheduled_at"]
    return Envelope(
        job_class=_require_text(document, "job_class"),
        job_id=_require_text(document, "job_id"),
        queue_name=_require_text(document, "queue_name"),
        priority=priority,
        arguments=_require(document, "arguments", list),
        keyword_arguments=_require(document, "keyword_arguments", dict),
        executions=executions,
        exception_executions=exception_executions,
        enqueued_at=_parse_timestamp(document, "enqueued_at"),
        scheduled_at=None if scheduled_at is None else _parse_timestamp(document, "scheduled_at"),
        extras=extras or NO_EXTRAS,
    )


def _require(document: dict[str, Any], name: str, kind: type[Any]) -> Any:
    value = document[name]
    if type(value) is not kind:
        raise InvalidEnvelope(f"{name!r} must be a JSON {kind.__name__}, not {value!r:.80}")
    return value


def _require_text(document: dict[str, Any], name: str) -> str:
    value: str = _require(document, name, str)
    if not value:
        raise InvalidEnvelope(f"{name!r} must not be empty")
    return value


def _parse_timestamp(document: dict[str, Any], name: str) -> datetime:
    text = _require(document, name, str)
    try:
        if not _TIMESTAMP.fullmatch(text):
            raise ValueError(text)
        return datetime.fromisoformat(text[:-1]).replace(tzinfo=timezone.utc)
    except ValueError as exc:
        raise InvalidEnvelope(
            f"{name!r} must look like 2026-11-28T20:00:00.000000Z, not {text!r:.80}"
        ) from exc
