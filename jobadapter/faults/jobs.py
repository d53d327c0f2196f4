"""The fault suite's jobs: the ``--app`` module of every worker it starts.

They report through the conformance probe (``JOBADAPTER_PROBE``), keyed by a
label: ``started`` when a perform begins, ``performed`` when it ends.
"""

from __future__ import annotations

import os
import signal
import time

from jobadapter import Job
from jobadapter.conformance.probe import record


class StormJob(Job):
    """A job of the kill storm: records its start, works for ``milliseconds``, records its end."""

    queue_as = "faults"

    def perform(self, label: str, milliseconds: int) -> None:
        record(label, "started", self)
        time.sleep(milliseconds / 1000)
        record(label, "performed", self)


class ProbeJob(Job):
    """A control job (and the job a hostile 'huge argument' message names): records that it ran."""

    queue_as = "faults"

    def perform(self, label: str, payload: str = "") -> None:
        record(label, "performed", self, {"size": len(payload)})


class DyingJob(Job):
    """A job whose process dies under it (SIGKILL, as the OOM killer does): records each start."""

    queue_as = "faults"

    def perform(self, label: str) -> None:
        record(label, "started", self)
        os.kill(os.getpid(), signal.SIGKILL)
