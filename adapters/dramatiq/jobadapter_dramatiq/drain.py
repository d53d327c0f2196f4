"""Taking a queue's jobs off RabbitMQ for ``jobadapter migrate`` (`jobadapter.adapters.base.Drain`).

RabbitMQ cannot list or delete one message without consuming it. Dramatiq
keeps each state in a queue of its own: pending jobs in ``<queue>``, delayed
ones in ``<queue>.DQ``, dead letters in ``<queue>.XQ``. `RabbitmqDrain` takes
one of them with unacknowledged ``basic_get`` on a channel of its own;
``delete`` acknowledges the moved messages, and closing the channel (or a
crash) gives the others back in place.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dramatiq.common import dq_name, xq_name

from jobadapter.adapters.base import Drain
from jobadapter.operations import JobRecord, JobState
from jobadapter_dramatiq.operations import read_entry

if TYPE_CHECKING:
    from jobadapter_dramatiq.adapter import RabbitmqAdapter


def store_of(state: JobState, queue: str) -> str:
    """The RabbitMQ queue holding ``queue``'s jobs in ``state``."""
    if state is JobState.SCHEDULED:
        return dq_name(queue)
    return xq_name(queue) if state is JobState.FAILED else queue


class RabbitmqDrain(Drain):
    """The messages of one queue in one state, held unacknowledged on this drain's channel."""

    def __init__(self, adapter: RabbitmqAdapter, state: JobState, queue: str) -> None:
        self.state = state
        self.queue = queue
        self.store = store_of(state, queue)
        self.channel: Any = adapter.broker.connection.channel()
        self.exhausted = not self._exists(adapter)
        self.held: dict[int, tuple[JobRecord, int]] = {}

    def _exists(self, adapter: RabbitmqAdapter) -> bool:
        """A passive declare on a throwaway channel: a missing queue closes the channel."""
        probe = adapter.broker.connection.channel()
        try:
            probe.queue_declare(self.store, passive=True)
        except Exception:  # 404: nothing to drain
            return False
        finally:
            if probe.is_open:
                probe.close()
        return True

    def take(self, limit: int) -> list[JobRecord]:
        taken: list[JobRecord] = []
        while len(taken) < limit and not self.exhausted:
            method, _, body = self.channel.basic_get(self.store, auto_ack=False)
            if method is None:
                self.exhausted = True
                break
            ref = "sha256:" + hashlib.sha256(body).hexdigest()[:24]
            record = read_entry(body, self.queue, ref, self.state).record
            self.held[id(record)] = (record, method.delivery_tag)
            taken.append(record)
        return taken

    def delete(self, records: Sequence[JobRecord]) -> set[str]:
        deleted = set()
        for record in records:
            held = self.held.pop(id(record), None)
            if held is not None:
                self.channel.basic_ack(held[1])
                deleted.add(record.job_id)
        return deleted

    def close(self) -> None:
        if self.channel.is_open:
            self.channel.close()
