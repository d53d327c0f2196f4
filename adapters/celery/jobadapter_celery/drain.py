"""Taking a queue's jobs off RabbitMQ for ``jobadapter migrate`` (`jobadapter.adapters.base.Drain`).

RabbitMQ cannot list or delete one message without consuming it, and Celery
keeps a queue's due and ETA messages in the same queue. `AmqpDrain` takes the
messages with unacknowledged ``basic_get`` on a channel of its own: those of
the state it drains come back as records, the others (the other state, other
queues' dead letters) stay held unseen. ``delete`` acknowledges the moved ones;
closing the channel, or a crash, gives everything else back in place.

Pending and scheduled come from the queue itself, told apart by the envelope's
``scheduled_at`` (a hop's ``eta`` header may be sooner); failed jobs come from
the dead-letter queue, which every queue shares.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from kombu.entity import Queue

from jobadapter.adapters.base import Drain
from jobadapter.envelope import decode
from jobadapter.errors import InvalidEnvelope
from jobadapter.operations import JobRecord, JobState
from jobadapter_celery.operations import dead_record, is_due

if TYPE_CHECKING:
    from jobadapter_celery.adapter import CeleryAdapter


class AmqpDrain(Drain):
    """The jobs of one queue in one state, held unacknowledged on a channel of this drain's own."""

    def __init__(self, adapter: CeleryAdapter, state: JobState, queue: str) -> None:
        self.state = state
        self.queue_name = queue
        self.connection = adapter.app.connection_for_write()
        self.channel = self.connection.channel()
        name = adapter.settings.dead_letter_queue if state is JobState.FAILED else queue
        self.source: Any = Queue(name, no_declare=True)(self.channel)  # type: ignore[no-untyped-call]
        self.exhausted = not self._exists(name)
        self.now = datetime.now(timezone.utc)
        self.held: dict[int, tuple[JobRecord, Any]] = {}

    def _exists(self, name: str) -> bool:
        """A passive declare on a throwaway channel: a missing queue closes the channel."""
        probe = self.connection.channel()
        try:
            probe.queue_declare(name, passive=True)
        except Exception:  # 404: nothing to drain
            return False
        finally:
            probe.close()
        return True

    def take(self, limit: int) -> list[JobRecord]:
        taken: list[JobRecord] = []
        while len(taken) < limit and not self.exhausted:
            message = self.source.get(no_ack=False, accept=["json"])
            if message is None:
                self.exhausted = True
                break
            record = self._record(message)
            if record is not None:
                self.held[id(record)] = (record, message)
                taken.append(record)
        return taken

    def _record(self, message: Any) -> JobRecord | None:
        """The record of a message of this drain's queue and state; None for any other."""
        if self.state is JobState.FAILED:
            record, _ = dead_record(message.body, f"dead-{message.delivery_tag}")
            return record if record.queue == self.queue_name else None
        try:
            arguments = message.decode()[0]
            if len(arguments) != 1 or not isinstance(arguments[0], str):
                raise InvalidEnvelope(f"a task with {len(arguments)} argument(s), not one envelope")
            envelope = decode(arguments[0])
        except Exception as error:  # a native task (or one kombu cannot decode): it stays
            if self.state is not JobState.PENDING:
                return None  # counted once, with the pending jobs
            text = (
                message.body.decode("utf-8", "replace")
                if isinstance(message.body, bytes)
                else str(message.body)
            )
            headers = message.headers or {}
            return JobRecord(
                str(headers.get("id") or f"amqp-{message.delivery_tag}"),
                str(headers.get("task") or "?"),
                self.queue_name,
                self.state,
                payload=f"{text[:1000]} ({type(error).__name__}: {error})",
            )
        due = is_due(envelope, self.now)
        if due != (self.state is JobState.PENDING):
            return None
        return JobRecord.from_envelope(envelope, self.state, provider_job_id=envelope.job_id)

    def delete(self, records: Sequence[JobRecord]) -> set[str]:
        deleted = set()
        for record in records:
            held = self.held.pop(id(record), None)
            if held is not None:
                held[1].ack()
                deleted.add(record.job_id)
        return deleted

    def close(self) -> None:
        try:
            self.channel.close()
        finally:
            self.connection.release()
