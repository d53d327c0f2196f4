"""``--concurrency N``: RQ's WorkerPool, without losing a stop signal to a worker being born.

RQ's pool forks a worker process after installing its own SIGINT/SIGTERM
handlers; the child inherits them until its RQ worker installs its own, well
after connecting to Redis. A stop the pool sends in that window runs the
pool's handler in the child (which only sets a flag there) and is lost: the
child then works forever and the pool waits forever ("Waiting for workers to
shutdown..."), which is what a respawn during a Redis outage followed by
SIGTERM produced. Here the pool blocks both signals around each fork, and the
child unblocks them only once `worker.stop_before_start` is its handler, so a
stop sent at any moment reaches the worker (see
`JobAdapterWorker._install_signal_handlers`).
"""

from __future__ import annotations

import signal
from multiprocessing.process import BaseProcess
from typing import Any

from rq.worker_pool import ForkProcess, WorkerPool, run_worker

from jobadapter import journal
from jobadapter.worker_logging import announce_ready
from jobadapter_rq import worker as rq_worker

_STOPS = {signal.SIGINT, signal.SIGTERM}


def _run_worker(*args: Any, **kwargs: Any) -> None:
    """A pool child: take over stop signals (still blocked since the fork), then run RQ's worker.
    It ends with os._exit (multiprocessing's way), which runs no exit handler: the journal rows
    its work horses handed it are sent on first."""
    for stop in _STOPS:
        signal.signal(stop, rq_worker.stop_before_start)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOPS)
    try:
        run_worker(*args, **kwargs)
    finally:
        journal.flush()


class JobAdapterPool(WorkerPool):
    """RQ's WorkerPool whose children cannot miss a stop signal."""

    def get_worker_process(
        self, name: str, burst: bool, _sleep: float = 0, logging_level: str = "INFO"
    ) -> BaseProcess:
        process = super().get_worker_process(name, burst, _sleep, logging_level)
        return ForkProcess(
            target=_run_worker,
            args=process._args,  # type: ignore[attr-defined]
            kwargs=process._kwargs,  # type: ignore[attr-defined]
            name=process.name,
        )

    def start_worker(
        self, count: int | None = None, burst: bool = True, _sleep: float = 0, logging_level: str = "INFO"
    ) -> None:
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _STOPS)
        try:
            super().start_worker(count, burst, _sleep, logging_level)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def start_workers(self, burst: bool = True, _sleep: float = 0, logging_level: str = "INFO") -> None:
        super().start_workers(burst, _sleep, logging_level)
        announce_ready("RQ")
