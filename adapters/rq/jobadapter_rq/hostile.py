"""RQ-level hostile messages for the fault suite (``RQAdapter.hostile_messages``).

Each one is written the way anything with access to Redis could write it:
a job hash (``rq:job:<id>``) with RQ's own field names and the id pushed on
the queue's list, as ``Queue.enqueue_job`` does, but with something wrong in
it. Names point at `jobadapter.faults.canary`; the pickle is written byte by
byte (pickling would import what it names). Every kind must end in the failed
registry, with the marker in the job id, the data or the description.
"""

from __future__ import annotations

import functools
import json
import os
import uuid
import zlib
from collections.abc import Callable, Mapping

from redis import Redis
from rq.job import Job as RQJob
from rq.queue import Queue

from jobadapter.faults.hostile import CANARY, HostileMessage, valid_document
from jobadapter_rq.fetch import push_wake

_CANARY_FUNCTION = f"{CANARY}.boom"


def _pickled_call(marker: str) -> bytes:
    """RQ's default (pickle) data for ``boom(marker)``: ``(boom, None, (marker,), {})``.

    Opcodes: PROTO 4, MARK, GLOBAL module/name, NONE, BINUNICODE marker,
    TUPLE1, EMPTY_DICT, TUPLE, STOP.
    """
    text = marker.encode()
    return (
        b"\x80\x04(c" + CANARY.encode() + b"\nboom\nNX" + len(text).to_bytes(4, "little") + text + b"\x85}t."
    )


def _json_call(function: str, *arguments: object) -> bytes:
    """RQ's JSON-serializer data: ``[function, instance, args, kwargs]``, compressed as RQ stores it."""
    return zlib.compress(json.dumps([function, None, list(arguments), {}]).encode())


def _jobadapter_data(marker: str) -> bytes:
    """The data of a genuine jobadapter job (a ProbeJob labelled ``marker``)."""
    return _json_call("jobadapter_rq.worker.perform", valid_document(marker))


BOMB_BYTES = 96 * 1024 * 1024


@functools.cache
def _zip_bomb() -> bytes:
    """About 100 KB of zlib that inflates to ``BOMB_BYTES`` of zeros (built without holding them)."""
    deflater = zlib.compressobj(9)
    chunk = bytes(1024 * 1024)
    return b"".join(deflater.compress(chunk) for _ in range(BOMB_BYTES // len(chunk))) + deflater.flush()


def native_kinds(connection: Redis) -> list[HostileMessage]:
    """The RQ-level kinds, written on ``connection``."""

    def plant(
        build: Callable[[str], Mapping[str, str | bytes]], id_of: Callable[[str], str] | None = None
    ) -> Callable[[str, str], None]:
        def send(queue_name: str, marker: str) -> None:
            job_id = id_of(marker) if id_of else f"hostile-{uuid.uuid4().hex}"
            queue = Queue(queue_name, connection=connection)
            fields = dict(build(marker))
            with connection.pipeline() as pipeline:
                if fields:
                    fields["origin"] = queue.name
                    pipeline.hset(RQJob.key_for(job_id), mapping=fields)  # type: ignore[arg-type]
                pipeline.sadd(queue.redis_queues_keys, queue.key)
                pipeline.rpush(queue.key, job_id)
                push_wake(pipeline, queue.key, 1)
                pipeline.execute()

        return send

    def queued(marker: str, **fields: str | bytes) -> dict[str, str | bytes]:
        base: dict[str, str | bytes] = {
            "status": "queued",
            "created_at": "2026-11-28T20:00:00.000000Z",
            "enqueued_at": "2026-11-28T20:00:00.000000Z",
            "description": f"hostile {marker}",
            "data": _jobadapter_data(marker),
        }
        return base | fields

    def random_id(marker: str) -> str:
        return os.urandom(12).decode("latin-1") + marker

    return [
        HostileMessage(
            "rq-random-data",
            "a job hash whose data field is random bytes",
            plant(lambda m: queued(m, data=b"\xff\xfe" + os.urandom(48) + m.encode() + os.urandom(48))),
        ),
        HostileMessage(
            "rq-random-id",
            "random bytes pushed on the queue list as a job id",
            plant(lambda m: {}, random_id),
        ),
        HostileMessage(
            "rq-missing-hash",
            "a well-formed job id on the queue list with no job hash",
            plant(lambda m: {}, lambda m: f"hostile-missing-{m}"),
        ),
        HostileMessage(
            "rq-no-data-field",
            "a job hash with every field but data",
            plant(lambda m: {key: value for key, value in queued(m).items() if key != "data"}),
        ),
        HostileMessage(
            "rq-pickle",
            f"RQ's default pickle data calling {_CANARY_FUNCTION}",
            plant(lambda m: queued(m, data=zlib.compress(_pickled_call(m)))),
        ),
        HostileMessage(
            "rq-foreign-function",
            f"JSON data calling {_CANARY_FUNCTION}, a function of another RQ app",
            plant(lambda m: queued(m, data=_json_call(_CANARY_FUNCTION, m))),
        ),
        HostileMessage(
            "rq-os-system",
            "JSON data calling os.system",
            plant(lambda m: queued(m, data=_json_call("os.system", f"echo {m}"))),
        ),
        HostileMessage(
            "rq-success-callback",
            f"a genuine jobadapter job whose success callback is {_CANARY_FUNCTION}",
            plant(lambda m: queued(m, success_callback_name=_CANARY_FUNCTION)),
        ),
        HostileMessage(
            "rq-failure-callback",
            f"a genuine jobadapter job whose failure callback is {_CANARY_FUNCTION}",
            plant(lambda m: queued(m, failure_callback_name=_CANARY_FUNCTION)),
        ),
        HostileMessage(
            "rq-webhook",
            "a genuine jobadapter job carrying a webhook",
            plant(
                lambda m: queued(
                    m, webhooks=json.dumps([{"url": "http://127.0.0.1:9/", "job_status": "failed"}])
                )
            ),
        ),
        HostileMessage(
            "rq-zip-bomb",
            f"data that inflates to {BOMB_BYTES // (1024 * 1024)} MB of zeros",
            plant(lambda m: queued(m, data=_zip_bomb())),
        ),
        HostileMessage(
            "rq-wrong-field-types",
            "timeout 'soon' and status 'garbage' in the job hash",
            plant(lambda m: queued(m, timeout="soon", status="garbage")),
        ),
        HostileMessage(
            "rq-bad-timestamps",
            "created_at and enqueued_at that are not dates",
            plant(lambda m: queued(m, created_at="yesterday", enqueued_at="\x00")),
        ),
    ]
