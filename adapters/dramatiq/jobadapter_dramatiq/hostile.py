"""Hostile messages in Dramatiq's own wire format, for the fault suite (`Adapter.hostile_messages`).

Each is what another process with access to the broker could write: bytes
that are not a Dramatiq message at all, Dramatiq's JSON with a field of the
wrong type (each one a crash that was measured: ``"options": 5`` killed the
consumer thread, a foreign ``queue_name`` a worker thread), an actor or an
exception class named in the import canary, and pickle content. Every one
must end in ``failed()`` with its marker, refused by
`jobadapter_dramatiq.wire.parse` or, for a well-formed message naming an
unknown actor, by the registry; none is ever "dropped".
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dramatiq import Message

from jobadapter.faults.hostile import CANARY, HostileMessage, valid_document

if TYPE_CHECKING:
    from jobadapter_dramatiq.adapter import DramatiqAdapter

PROBE_JOB = "jobadapter.faults.jobs.ProbeJob"


def message_fields(queue_name: str, marker: str, **changes: Any) -> dict[str, Any]:
    """Dramatiq's JSON fields of a good message for the fault suite's ProbeJob, then ``changes``."""
    fields: dict[str, Any] = {
        "queue_name": queue_name,
        "actor_name": PROBE_JOB,
        "args": [json.dumps(valid_document(marker, PROBE_JOB))],
        "kwargs": {},
        "options": {},
        "message_id": marker,
        "message_timestamp": 1_764_356_400_000,
    }
    return fields | changes


def pickle_bytes(marker: str) -> bytes:
    """A protocol-0 pickle that would call ``jobadapter.faults.canary.boom(marker)`` if loaded,
    written out by hand (nothing here pickles or unpickles)."""
    return f"c{CANARY}\nboom\n(V{marker}\ntR.".encode()


def kinds(adapter: DramatiqAdapter) -> list[HostileMessage]:
    """The kinds both brokers share; each adapter adds its own (`extra` below)."""

    def raw(build: Callable[[str, str], bytes]) -> Callable[[str, str], None]:
        return lambda queue, marker: adapter.write_raw(queue, build(queue, marker))

    def fields(**changes: Any) -> Callable[[str, str], None]:
        return raw(lambda queue, marker: json.dumps(message_fields(queue, marker, **changes)).encode())

    def native(build: Callable[[str, str], Message[Any]]) -> Callable[[str, str], None]:
        return lambda queue, marker: adapter.publish_native(build(queue, marker))

    return [
        HostileMessage(
            "random-bytes",
            "random bytes, not UTF-8, as the whole message",
            raw(lambda q, m: b"\xff\xfe" + os.urandom(32) + m.encode() + os.urandom(32)),
        ),
        HostileMessage(
            "json-not-object",
            "a JSON list where Dramatiq's message object belongs",
            raw(lambda q, m: json.dumps([m, 1]).encode()),
        ),
        HostileMessage("options-int", 'Dramatiq\'s JSON with "options": 5', fields(options=5)),
        HostileMessage("args-string", 'Dramatiq\'s JSON with "args": a string', fields(args="x")),
        HostileMessage(
            "timestamp-string",
            'Dramatiq\'s JSON with "message_timestamp": "now"',
            fields(message_timestamp="now"),
        ),
        HostileMessage(
            "retries-string",
            'options.retries "many": Dramatiq\'s Retries would raise comparing it',
            fields(options={"retries": "many"}),
        ),
        HostileMessage(
            "throws-canary",
            "options.throws naming a class in the import canary (a worker thread raised on it)",
            fields(options={"throws": f"{CANARY}.Boom"}),
        ),
        HostileMessage(
            "missing-fields",
            "Dramatiq's JSON without actor_name, kwargs, options, message_id",
            raw(lambda q, m: json.dumps({"queue_name": q, "args": [m]}).encode()),
        ),
        HostileMessage(
            "unknown-actor",
            f"a well-formed message for actor {CANARY}.boom (refused by the registry, never imported)",
            native(
                lambda q, m: Message(
                    queue_name=q,
                    actor_name=f"{CANARY}.boom",
                    args=(json.dumps(valid_document(m, PROBE_JOB)),),
                    kwargs={},
                    options={},
                )
            ),
        ),
        HostileMessage(
            "other-queue",
            "a message whose queue_name is not the queue it sits in",
            raw(lambda q, m: json.dumps(message_fields(f"{q}-elsewhere", m)).encode()),
        ),
        HostileMessage(
            "pickle-body",
            f"a pickle of a call to {CANARY}.boom as the whole message",
            raw(lambda q, m: pickle_bytes(m)),
        ),
        HostileMessage(
            "delayed-eta-text",
            'a message in the delay queue with "eta": "soon"',
            lambda queue, marker: adapter.write_raw(
                f"{queue}.DQ",
                json.dumps(message_fields(f"{queue}.DQ", marker, options={"eta": "soon"})).encode(),
            ),
        ),
    ]
