"""Job classes shared by the core tests; each records what it did in ``LOG``."""

from __future__ import annotations

from typing import Any

from jobadapter import Job

LOG: list[tuple[str, Any]] = []


class RecordingJob(Job):
    def perform(self, *args: Any, **kwargs: Any) -> str:
        LOG.append(("performed", (args, kwargs)))
        return "done"


class AsyncRecordingJob(Job):
    async def perform(self, value: int) -> int:
        LOG.append(("async", value))
        return value * 2
