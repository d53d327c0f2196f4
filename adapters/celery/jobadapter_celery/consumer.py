"""The worker's Celery consumer: every message it cannot run goes to the dead-letter queue.

Celery's own consumer acknowledges a message whose body will not decode and
keeps only a log line (``on_decode_error``), rejects an unknown task or an
invalid one with a log line, and hands a body that is not
``[args, kwargs, embed]`` to a pool child, where it fails outside any task
code. `consumer_class` builds a subclass that, for each of those, publishes
the message to the adapter's dead-letter queue with the reason *before*
acknowledging it, and that checks, before any task sees a message:

- the content encoding names a codec Python knows;
- the protocol-2 headers Celery reads have the types Celery expects;
- the body is the protocol-2 triple.

Anything else the stock handler raises on a hostile message is caught too:
the message is dead-lettered, acknowledged, and the worker keeps consuming.
"""

from __future__ import annotations

import codecs
import json
import logging
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from celery.app import trace  # type: ignore[import-untyped]
from celery.exceptions import CPendingDeprecationWarning  # type: ignore[import-untyped]
from celery.worker.consumer.consumer import CONNECTION_RETRY, Consumer  # type: ignore[import-untyped]

if TYPE_CHECKING:
    from jobadapter_celery.adapter import CeleryAdapter

_logger = logging.getLogger("jobadapter")

_RAW_ENCODINGS = ("binary", "ascii-8bit")
"""kombu's names for a body that is bytes, not text in a charset."""
_TEXT_OR_NONE = ("root_id", "parent_id", "group", "eta", "expires", "argsrepr", "kwargsrepr", "shadow")


def header_problems(headers: dict[str, Any]) -> list[str]:
    """What is wrong with the types of the protocol-2 headers Celery reads (empty if nothing)."""
    problems = [
        f"{name!r} must be text, not {headers.get(name)!r:.60}"
        for name in ("id", "task")
        if not isinstance(headers.get(name), str)
    ]
    problems += [
        f"{name!r} must be text or null, not {headers[name]!r:.60}"
        for name in _TEXT_OR_NONE
        if headers.get(name) is not None and not isinstance(headers[name], str)
    ]
    retries = headers.get("retries", 0)
    if retries is not None and (type(retries) is not int or retries < 0):
        problems.append(f"'retries' must be a count, not {retries!r:.60}")
    limits = headers.get("timelimit")
    if limits is not None and not (
        isinstance(limits, (list, tuple))
        and len(limits) == 2
        and all(limit is None or type(limit) in (int, float) for limit in limits)
    ):
        problems.append(f"'timelimit' must be [hard, soft] seconds, not {limits!r:.60}")
    return problems


def body_problem(body: Any) -> str | None:
    """Why a decoded protocol-2 body is not ``[args, kwargs, embed]`` (None if it is)."""
    if not isinstance(body, (list, tuple)) or len(body) != 3:
        return f"the body is a {type(body).__name__}, not the protocol-2 [args, kwargs, embed] triple"
    args, kwargs, embed = body
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
        return "the body's args are not a list or its kwargs not an object"
    if embed is not None and not isinstance(embed, dict):
        return "the body's embed is not an object"
    return None


def message_payload(message: Any, raw: bool = False) -> str:
    """The envelope text a task message carries, or its body as text when it carries none.

    With ``raw`` (a body that would not decode), the message as the broker
    holds it: on Redis the whole list entry, so nothing a producer wrote is lost.
    """
    stored = getattr(message, "_raw", None)
    if raw and isinstance(stored, dict):
        return json.dumps(stored, default=repr)
    body = message.body
    text = body.decode("utf-8", "replace") if isinstance(body, (bytes, bytearray)) else str(body)
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return text
    if isinstance(document, list) and document and isinstance(document[0], list):
        arguments = document[0]
        if len(arguments) == 1 and isinstance(arguments[0], str):
            return arguments[0]
    return text


class OneLineAckFailures(logging.Filter):
    """An acknowledgement that failed because the broker went away, in one line, not a traceback.

    A job that finishes while the broker is down cannot be acknowledged; Celery
    logs that with two chained tracebacks per job (about 30 lines each), which
    during an outage drowns the one line that matters. The message is not
    lost: RabbitMQ requeues it when the connection drops, and on Redis it stays
    in the worker's unacked hash until it is restored, so the job runs again.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and str(record.msg).startswith("Couldn't ack"):
            record.exc_info = None
            record.exc_text = None
            record.msg = f"{record.msg} (the broker keeps the message: the job will run again)"
        return True


class OneLineConnectionLoss(logging.Filter):
    """A lost broker connection in one line with its error, not the traceback (Celery 5.6).

    Celery 5.6 logs "Connection to broker lost" with the whole chain of
    redis-py's retries (three tracebacks, some 80 lines) at every outage;
    Celery 5.7 logs the same line with the error, and the traceback at DEBUG.
    This gives 5.6 the line 5.7 writes.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and record.msg == CONNECTION_RETRY and not record.args:
            record.exc_info = None
            record.exc_text = None
            record.msg = f"{CONNECTION_RETRY} ({error!r})"
        return True


class ActiveJobLinesSuffice(logging.Filter):
    """Drop Celery's per-task "Task … received" and "Task … succeeded in …" INFO lines.

    jobadapter writes ActiveJob's "Performing …"/"Performed …" lines for every
    job; Celery's pair says the same again, and a plain ``celery worker``
    (WARNING by default) would not write it. Four lines per job instead of two
    was the largest cost a jobadapter worker added to a no-op job. Celery's
    other lines (a retry, a failure) stay, and at DEBUG nothing is dropped.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg not in (trace.LOG_RECEIVED, trace.LOG_SUCCESS):
            return True
        return logging.getLogger().isEnabledFor(logging.DEBUG)


def consumer_class(adapter: CeleryAdapter) -> type:
    """Celery's consumer, dead-lettering what it would drop, for ``adapter``'s worker."""

    def dead_letter(message: Any, reason: str, raw: bool = False) -> None:
        headers = message.headers if isinstance(message.headers, dict) else {}
        task = headers.get("task")
        task_id = headers.get("id")
        _logger.error("dead-lettered a message Celery cannot run: %s", reason)
        adapter.dead_letter_publish(
            message_payload(message, raw),
            reason,
            task if isinstance(task, str) else "?",
            task_id if isinstance(task_id, str) else None,
        )
        if not message.acknowledged:
            message.ack()

    class JobConsumer(Consumer):  # type: ignore[misc]
        def on_connection_error_after_connected(self, exc: BaseException) -> None:
            """Celery's handling, without its 8-line notice about a future default (cancelling
            running tasks on connection loss) at every outage: it is not news about the outage."""
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", CPendingDeprecationWarning)
                super().on_connection_error_after_connected(exc)

        def on_decode_error(self, message: Any, exc: BaseException) -> None:
            dead_letter(
                message,
                f"DecodeError: the body does not decode as {message.content_type!r} "
                f"({type(exc).__name__}: {exc})",
                raw=True,
            )

        def on_unknown_message(self, body: Any, message: Any) -> None:
            dead_letter(
                message,
                "InvalidMessage: not a Celery task message (no 'task' header, "
                "and the body is not a protocol-1 task)",
            )

        def on_unknown_task(self, body: Any, message: Any, exc: BaseException) -> None:
            headers = message.headers if isinstance(message.headers, dict) else {}
            dead_letter(
                message,
                f"UnknownJobError: job class {headers.get('task')!r:.200} is not registered in this "
                "worker: pass the module that defines it to the worker's --app",
            )

        def on_invalid_task(self, body: Any, message: Any, exc: BaseException) -> None:
            dead_letter(message, f"InvalidMessage: Celery rejected the message ({type(exc).__name__}: {exc})")

        def create_task_handler(self, *args: Any, **kwargs: Any) -> Callable[[Any], None]:
            handler: Callable[[Any], None] = super().create_task_handler(*args, **kwargs)

            def on_task_received(message: Any) -> None:
                try:
                    if not self._admit(message):
                        return
                    handler(message)
                except Exception as error:  # a hostile message must not stop the consumer
                    if message.acknowledged:
                        _logger.exception("error after a message was acknowledged")
                        return
                    dead_letter(message, f"InvalidMessage: {type(error).__name__}: {error}", raw=True)

            return on_task_received

        def _admit(self, message: Any) -> bool:
            """Dead-letter a message whose encoding, headers or body Celery would choke on."""
            encoding = message.content_encoding
            if encoding and encoding not in _RAW_ENCODINGS:
                try:
                    codecs.lookup(encoding)
                except LookupError:
                    reason = f"InvalidMessage: unknown content encoding {encoding!r:.80}"
                    dead_letter(message, reason, raw=True)
                    return False
            headers = message.headers
            if not isinstance(headers, dict) or "task" not in headers:
                return True  # the stock handler's protocol-1 / unknown-message path
            problems = header_problems(headers)
            if problems:
                dead_letter(message, "InvalidMessage: wrong Celery header types: " + "; ".join(problems))
                return False
            if headers["task"] not in self.strategies:
                return True  # on_unknown_task
            try:
                body = message.payload
            except Exception:  # the stock handler reports it (on_decode_error, on_invalid_task)
                return True
            problem = body_problem(body)
            if problem is not None:
                dead_letter(message, f"InvalidMessage: {problem}")
                return False
            return True

    return JobConsumer
