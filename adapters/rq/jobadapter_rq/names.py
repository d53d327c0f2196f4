"""How jobadapter's names map onto RQ's: priority bands, and the RQ job of each attempt.

Publishing, the worker's fetch and the operations all derive RQ names from
jobadapter ones here, and read them back here, so the two directions cannot
drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

BANDS = 10
"""Priority bands per queue: band 0 (no priority, or ≤ 0) up to band 9 (priority ≥ 9)."""
RETRY_SEPARATOR = "-retry-"
_BAND_SUFFIX = re.compile(r":p[1-9]\Z")


def band_queue_name(queue_name: str, priority: int | None) -> str:
    """The RQ queue holding ``queue_name`` jobs of ``priority``."""
    band = 0 if priority is None else min(max(priority, 0), BANDS - 1)
    return queue_name if band == 0 else f"{queue_name}:p{band}"


def consumed_queue_names(queue_names: Sequence[str]) -> list[str]:
    """RQ queues a worker listens to, most urgent band first, in the given order within a band."""
    return [band_queue_name(name, band) for band in range(BANDS) for name in queue_names]


def base_queue_name(rq_name: str) -> str:
    """The jobadapter queue an RQ queue is a band of: ``mail:p3`` → ``mail``.

    The suffixes ``:p1`` … ``:p9`` therefore belong to the bands: a queue
    named ``mail:p3`` would already share its RQ queue with band 3 of ``mail``.
    """
    return _BAND_SUFFIX.sub("", rq_name)


def retry_id(job_id: str, executions: int) -> str:
    """The RQ id of the attempt after ``executions`` runs.

    A retry cannot reuse the running RQ job's id: when ``perform`` returns, RQ
    saves that job as finished, over whatever was scheduled under its id.
    """
    return f"{job_id}{RETRY_SEPARATOR}{executions}"
