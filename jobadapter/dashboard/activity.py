"""Throughput and latency per queue over the last hour, from the journal.

No broker remembers how many jobs it ran an hour ago or how long they
waited; the journal does (`Journal.ended_since`). The hour is cut into
`BUCKETS` slices; for each, a queue's chart shows how many jobs ended and
how long they waited between being due and starting (latency).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from jobadapter.operations import JobState

if TYPE_CHECKING:
    from jobadapter.journal.store import Journal

WINDOW = timedelta(hours=1)
BUCKETS = 12
"""Five-minute slices."""


@dataclass
class QueueActivity:
    """One queue's last hour."""

    ended: list[int] = field(default_factory=lambda: [0] * BUCKETS)
    """Jobs whose execution ended, per slice, oldest slice first."""
    failed: int = 0
    waits: list[float] = field(default_factory=list)
    """Seconds from due (scheduled or enqueued) to start, of each job that ended."""

    @property
    def total(self) -> int:
        return sum(self.ended)

    @property
    def per_minute(self) -> float:
        return self.total / (WINDOW.total_seconds() / 60)

    @property
    def median_wait(self) -> float | None:
        return _percentile(self.waits, 0.5)

    @property
    def slowest_wait(self) -> float | None:
        """The 95th percentile: what the unlucky jobs waited."""
        return _percentile(self.waits, 0.95)


def last_hour(journal: Journal, now: datetime | None = None) -> dict[str, QueueActivity]:
    """Per queue, what ended in the hour before ``now``."""
    now = now or datetime.now(timezone.utc)
    since = now - WINDOW
    slice_seconds = WINDOW.total_seconds() / BUCKETS
    found: dict[str, QueueActivity] = {}
    for row in journal.ended_since(since):
        if row.finished_at is None:
            continue
        activity = found.setdefault(row.queue, QueueActivity())
        index = int((row.finished_at - since).total_seconds() // slice_seconds)
        activity.ended[min(max(index, 0), BUCKETS - 1)] += 1
        if row.state is JobState.FAILED:
            activity.failed += 1
        due = row.scheduled_at or row.enqueued_at
        if due is not None and row.started_at is not None:
            activity.waits.append(max(0.0, (row.started_at - due).total_seconds()))
    return found


def _percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]
