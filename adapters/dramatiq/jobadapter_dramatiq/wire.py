"""Dramatiq's wire format, read as untrusted input: what a worker accepts and what it keeps when it refuses.

Dramatiq's own consumers decode a message with ``Message.decode`` and trust
the result: ``Message(**fields)`` checks no type, so ``"options": 5`` or
``"args": "x"`` decode fine and then crash the consumer thread (``"eta" in 5``),
a worker thread (a ``queue_name`` no consumer has), or Dramatiq's ``Retries``
(``"retries": "many"``). Bytes that do not decode at all make the Redis
consumer raise out of its batch, which leaves the rest of the batch held.

`parse` is the one gate the worker's consumers (`jobadapter_dramatiq.consumers`)
put every message through. A message it refuses is kept, never run: the
consumer dead-letters a `rejection` record (a well-formed Dramatiq message
whose only argument is the original body as text, the reason in its options)
and acknowledges the original. `failure` reads any dead-lettered body back as
``(payload, reason)``, whatever it holds. Nothing here ever unpickles or
imports: the body is read as UTF-8 JSON only.
"""

from __future__ import annotations

import json
import traceback
import uuid
from collections.abc import Mapping
from typing import Any

from dramatiq import Message
from dramatiq.common import q_name

from jobadapter.operations import JobError

ERROR_OPTION = "jobadapter_error"
"""Message option holding ``ErrorClass: message`` of a dead-lettered job, or why a message was refused."""
REJECTED_ACTOR = "jobadapter.rejected"
"""The actor name of a rejection record (never declared, never run)."""

_FIELDS: Mapping[str, type] = {
    "queue_name": str,
    "actor_name": str,
    "args": list,
    "kwargs": dict,
    "options": dict,
    "message_id": str,
    "message_timestamp": int,
}
"""Every field Dramatiq's encoder writes, with the JSON type it writes."""

_NUMBER_OPTIONS = frozenset(
    {
        "eta",
        "retries",
        "max_retries",
        "min_backoff",
        "max_backoff",
        "time_limit",
        "max_age",
        "broker_priority",
        "requeue_timestamp",
        "jobadapter_eta",
    }
)
"""Options Dramatiq's middleware or this adapter compute with: a string there raises mid-pipeline."""
_TEXT_OPTIONS = frozenset({"redis_message_id", "traceback", "on_success", "on_failure", ERROR_OPTION})
_CALLABLE_OPTIONS = frozenset({"throws", "retry_when"})
"""Options Dramatiq expects to hold Python objects (exception classes, a predicate): JSON cannot carry
them, and a worker thread that meets a string there raises out of its loop."""
_JSON_CONTENT_TYPES = frozenset({"", "application/json"})


class Rejected(ValueError):
    """A message body the worker will not run; the text says why."""


def parse(body: bytes, queue_name: str | None = None, content_type: str | None = None) -> Message[Any]:
    """The Dramatiq message in ``body``, every field and known option of the type Dramatiq writes.

    ``queue_name`` is the queue the body was read from (``None``: not checked);
    ``content_type`` the AMQP property, when there is one.
    """
    if content_type and content_type.split(";")[0].strip().lower() not in _JSON_CONTENT_TYPES:
        suffix = " (pickle)" if "python" in content_type or "pickle" in content_type else ""
        raise Rejected(f"content type {content_type!r}{suffix} is not Dramatiq's JSON")
    fields = _json_object(body)
    missing = [name for name in _FIELDS if name not in fields]
    if missing:
        raise Rejected(f"not a Dramatiq message: missing field(s) {', '.join(missing)}")
    unknown = sorted(set(fields) - set(_FIELDS))
    if unknown:
        raise Rejected(f"not a Dramatiq message: unknown field(s) {', '.join(unknown)}")
    for name, expected in _FIELDS.items():
        _check_type(f"field {name!r}", fields[name], expected)
    for name, value in fields["options"].items():
        _check_option(name, value)
    if queue_name is not None and fields["queue_name"] != queue_name:
        raise Rejected(
            f"a message for queue {fields['queue_name']!r} found on queue {queue_name!r} "
            "(no consumer here could acknowledge it)"
        )
    fields["args"] = tuple(fields["args"])
    return Message(**fields)


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise Rejected(f"undecodable Dramatiq message: not UTF-8 text ({error})") from None
    try:
        fields = json.loads(text)
    except RecursionError:
        raise Rejected("undecodable Dramatiq message: JSON nested too deep") from None
    except ValueError as error:
        raise Rejected(f"undecodable Dramatiq message: not JSON ({error})") from None
    if not isinstance(fields, dict):
        raise Rejected(f"not a Dramatiq message: the JSON is {_json_kind(fields)}, not an object")
    return fields


def _check_option(name: str, value: object) -> None:
    if name in _CALLABLE_OPTIONS:
        raise Rejected(f"option {name!r} must hold a Python object, which JSON cannot carry")
    if value is None:
        return
    if name in _NUMBER_OPTIONS:
        _check_type(f"option {name!r}", value, float)
    elif name in _TEXT_OPTIONS:
        _check_type(f"option {name!r}", value, str)


def _check_type(what: str, value: object, expected: type) -> None:
    numeric = expected in (int, float)
    good = (
        isinstance(value, (int, float) if expected is float else expected) and not isinstance(value, bool)
        if numeric
        else isinstance(value, expected)
    )
    if not good:
        wanted = "a number" if numeric else _json_kind(expected())
        raise Rejected(f"not a Dramatiq message: {what} is {_json_kind(value)}, not {wanted}")


def _json_kind(value: object) -> str:
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return kinds.get(type(value), "a number")


def rejection(body: bytes, queue_name: str, reason: str) -> Message[Any]:
    """The dead-letter record of a refused body: the body as text (bytes that are not UTF-8
    replaced, so any readable part survives), the reason in ``options["jobadapter_error"]``."""
    return Message(
        queue_name=q_name(queue_name),
        actor_name=REJECTED_ACTOR,
        args=(body.decode("utf-8", "replace"),),
        kwargs={},
        options={ERROR_OPTION: f"Rejected: {reason}"},
        message_id=str(uuid.uuid4()),
    )


def dead_letter_copy(message: Any, error: BaseException) -> Message[Any]:
    """A failed message as it is kept in the dead-letter queue: the error in its options."""
    copy: Message[Any] = message.copy(
        options={
            ERROR_OPTION: f"{type(error).__name__}: {error}",
            "traceback": "".join(traceback.format_exception(type(error), error, error.__traceback__)),
        }
    )
    return copy


def failed_copy(message: Message[Any], error: JobError) -> Message[Any]:
    """A message as it is kept in the dead-letter queue after it failed with ``error`` somewhere
    else (``jobadapter migrate`` brings it from another backend's failed store)."""
    text = f"{error.error_class}: {error.message}" if error.message else error.error_class
    options: dict[str, Any] = {ERROR_OPTION: text}
    if error.traceback:
        options["traceback"] = error.traceback
    copy: Message[Any] = message.copy(options=options)
    return copy


def failure(body: bytes) -> tuple[str, str]:
    """``(payload, reason)`` of one dead-lettered body, whatever it holds: a body that is not a
    Dramatiq message (one RabbitMQ dead-lettered for an older consumer, say) is its own text."""
    try:
        message = parse(body)
    except Rejected as rejected:
        return body.decode("utf-8", "replace"), f"dead-lettered as it was: {rejected}"
    payload = message.args[0] if len(message.args) == 1 else list(message.args)
    text = payload if isinstance(payload, str) else json.dumps(payload, default=str)
    # ErrorClass: message, as on every backend; the traceback stays in the message's options.
    reason = message.options.get(ERROR_OPTION) or "dead-lettered by Dramatiq (no error recorded)"
    return text, str(reason)
