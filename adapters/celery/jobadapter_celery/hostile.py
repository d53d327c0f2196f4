"""Hostile Celery messages, in Celery's protocol-2 wire format, for the fault suite.

On Redis a message is the JSON document kombu keeps in the queue's list (its
``body`` base64, with ``headers`` and ``properties``); on RabbitMQ it is an
AMQP message with headers and properties. Each kind here is written the way a
foreign or broken producer could write it, bypassing Celery and jobadapter,
and each carries the fault suite's marker where the dead-letter queue keeps
it (the body, or the raw entry). Every name in them points at
`jobadapter.faults.canary`, which no worker may import.

Pickle content is built as text (a protocol-0 opcode stream), never by pickling
an object, and nothing here ever unpickles.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from jobadapter.faults.hostile import CANARY, HostileMessage, valid_document
from jobadapter_celery.adapter import RAW_TASK

if TYPE_CHECKING:
    from jobadapter_celery.adapter import CeleryAdapter

Headers = dict[str, Any]


def task_headers(marker: str, **changes: Any) -> Headers:
    """Celery protocol-2 headers for a ``jobadapter.perform`` message, with ``changes``."""
    headers: Headers = {
        "lang": "py",
        "task": RAW_TASK,
        "id": str(uuid.uuid4()),
        "root_id": None,
        "parent_id": None,
        "group": None,
        "retries": 0,
        "eta": None,
        "expires": None,
        "timelimit": [None, None],
        "argsrepr": repr(marker),
        "kwargsrepr": "{}",
        "origin": "hostile@jobadapter",
    }
    headers.update(changes)
    return {key: value for key, value in headers.items() if value is not _ABSENT}


_ABSENT: Any = object()
"""A header value meaning "leave this header out"."""


def task_body(marker: str) -> bytes:
    """A valid protocol-2 body: ``[args, kwargs, embed]`` with the envelope as the one argument."""
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    return json.dumps([[json.dumps(valid_document(marker))], {}, embed]).encode()


def pickle_body(marker: str) -> bytes:
    """A protocol-0 pickle that would import and call ``canary.boom(marker)`` if ever loaded."""
    return f"c{CANARY}\nboom\n(V{marker}\ntR.".encode()


class Writer:
    """Publishes raw Celery messages onto a jobadapter queue, on either broker."""

    def __init__(self, adapter: CeleryAdapter) -> None:
        self.adapter = adapter

    def publish(
        self,
        queue: str,
        body: bytes,
        headers: Headers | None,
        content_type: str = "application/json",
        content_encoding: str = "utf-8",
    ) -> None:
        """One message as Celery's ``send_task`` lays it out, with what the caller chose."""
        if self.adapter.transport == "redis":
            document = self.kombu_document(body, headers, content_type, content_encoding)
            self.push_raw(queue, json.dumps(document))
            return
        with self.adapter.app.connection_for_write() as connection:
            channel = connection.default_channel
            message = channel.prepare_message(
                body,
                priority=0,
                content_type=content_type,
                content_encoding=content_encoding,
                headers=headers,
                properties={"delivery_mode": 2, "correlation_id": (headers or {}).get("id")},
            )
            channel.basic_publish(message, exchange="", routing_key=queue)

    @staticmethod
    def kombu_document(body: bytes, headers: Any, content_type: str, content_encoding: str) -> dict[str, Any]:
        """The JSON document kombu's Redis transport keeps in a queue list for one message."""
        return {
            "body": base64.b64encode(body).decode(),
            "content-encoding": content_encoding,
            "content-type": content_type,
            "headers": headers,
            "properties": {
                "correlation_id": headers.get("id") if isinstance(headers, dict) else None,
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": "hostile"},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }

    def push_raw(self, queue: str, entry: str | bytes) -> None:
        """Redis only: push ``entry`` onto the queue's list as it is, as a producer would."""
        with self.adapter.app.connection_for_write() as connection:
            client = connection.default_channel.client
            client.lpush(queue, entry)


def celery_kinds(adapter: CeleryAdapter) -> list[HostileMessage]:
    """The backend-level hostile kinds for this adapter's broker."""
    writer = Writer(adapter)
    redis = adapter.transport == "redis"

    def message(
        body: Callable[[str], bytes],
        headers: Callable[[str], Headers | None] = task_headers,
        content_type: str = "application/json",
        content_encoding: str = "utf-8",
    ) -> Callable[[str, str], None]:
        return lambda queue, marker: writer.publish(
            queue, body(marker), headers(marker), content_type, content_encoding
        )

    def random_bytes(marker: str) -> bytes:
        return os.urandom(64) + marker.encode() + os.urandom(64)

    kinds = [
        HostileMessage(
            "random-bytes",
            "random bytes as the whole list entry (not JSON)"
            if redis
            else "random bytes as the body of an application/json task message",
            (lambda queue, marker: writer.push_raw(queue, random_bytes(marker)))
            if redis
            else message(random_bytes),
        ),
        HostileMessage(
            "pickle",
            f"content type application/x-python-serialize, a pickle that would import {CANARY}",
            message(pickle_body, content_type="application/x-python-serialize", content_encoding="binary"),
        ),
        HostileMessage(
            "unknown-task",
            f"task name {CANARY}.boom, which no worker registers",
            message(task_body, lambda m: task_headers(m, task=f"{CANARY}.boom")),
        ),
        HostileMessage(
            "task-name-not-text",
            'the "task" header is a number',
            message(task_body, lambda m: task_headers(m, task=5)),
        ),
        HostileMessage(
            "wrong-header-types",
            '"retries": "x", "eta": "tomorrow", "expires": [], "timelimit": "soon", "argsrepr" a list',
            message(
                task_body,
                lambda m: task_headers(
                    m, retries="x", eta="tomorrow", expires=[], timelimit="soon", argsrepr=[m]
                ),
            ),
        ),
        HostileMessage(
            "not-a-triple",
            "a body that is a JSON object, not [args, kwargs, embed]",
            message(lambda m: json.dumps({"args": m}).encode()),
        ),
        HostileMessage(
            "unknown-content-type",
            "content type application/x-jobadapter-unknown",
            message(task_body, content_type="application/x-jobadapter-unknown"),
        ),
        HostileMessage(
            "unknown-content-encoding",
            "content encoding x-unknown-charset",
            message(task_body, content_encoding="x-unknown-charset"),
        ),
        HostileMessage(
            "no-headers",
            "a message with no headers at all (neither protocol 2 nor a protocol 1 body)",
            message(task_body, lambda m: None),
        ),
        HostileMessage(
            "headers-not-an-object",
            "headers that are a JSON list",
            lambda queue, marker: writer.push_raw(
                queue,
                json.dumps(writer.kombu_document(task_body(marker), [marker], "application/json", "utf-8")),
            ),
        )
        if redis
        else HostileMessage(
            "utf8-invalid-envelope",
            "a valid task message whose one argument is not valid UTF-8 once decoded",
            message(lambda m: b'[["\\udcff' + m.encode() + b'"], {}, {}]'),
        ),
    ]
    if redis:
        kinds += [
            HostileMessage(
                "not-a-kombu-message",
                "a JSON object on the list with no properties or delivery tag",
                lambda queue, marker: writer.push_raw(queue, json.dumps({"body": marker})),
            ),
            HostileMessage(
                "bad-body-encoding",
                "body_encoding base64 on a body that is not base64",
                lambda queue, marker: writer.push_raw(
                    queue,
                    json.dumps(
                        writer.kombu_document(b"", task_headers(marker), "application/json", "utf-8")
                        | {"body": f"*** {marker} ***"}
                    ),
                ),
            ),
        ]
    return kinds
