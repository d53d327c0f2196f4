"""Backends under test, and the worker processes the scenarios start and stop.

A `Backend` is one adapter URL: the adapter the suite enqueues through, its
capabilities, and queue names private to this run. ``worker()`` starts
``jobadapter worker`` as a real subprocess (for adapters that run jobs in a
separate process) and waits until it consumes every queue it was given; for
in-process adapters (inline, async) it does nothing, since the suite's own
process runs their jobs.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from jobadapter import config
from jobadapter.adapters.base import Adapter, Capability
from jobadapter.conformance import jobs
from jobadapter.conformance.probe import ENVIRONMENT_VARIABLE, Probe

APP_MODULE = "jobadapter.conformance.jobs"
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0


class WorkerProcess:
    """A running ``jobadapter worker`` subprocess, in its own process group."""

    def __init__(self, process: subprocess.Popen[bytes], log_path: Path) -> None:
        self.process = process
        self.log_path = log_path

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM (a warm shutdown); the exit code, or an AssertionError if it hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"worker did not exit within {timeout:g} s of SIGTERM\n{self.log_tail()}"
            ) from None

    def kill(self) -> None:
        """SIGKILL the whole process group: the machine died, children included."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


class Backend:
    """One adapter URL under test."""

    def __init__(self, url: str, probe: Probe, workdir: Path, timeout: float = 20.0) -> None:
        self.url = url
        self.timeout = timeout
        """How long a scenario waits for a job to report before failing."""
        self.adapter: Adapter = config.build_adapter(url)
        self.probe = probe
        self.workdir = workdir
        parsed = self.adapter.url
        self.name = parsed.adapter
        self.transport = parsed.transport or "in-process"
        self.label = f"{self.name} / {self.transport}"
        slug = re.sub(r"[^a-z0-9]+", "-", f"{self.name}-{self.transport}".lower())
        self._prefix = f"jac-{uuid.uuid4().hex[:8]}-{slug}"
        self._used_queues: set[str] = set()
        self.main_queue = self.queue("main")
        self.retry_queue = self.queue("retries")
        self._shared: WorkerProcess | None = None

    @property
    def capabilities(self) -> frozenset[Capability]:
        return self.adapter.capabilities

    @property
    def external(self) -> bool:
        return Capability.EXTERNAL_WORKER in self.capabilities

    def queue(self, name: str) -> str:
        """A queue name private to this run and this backend (purged when the run ends)."""
        queue = f"{self._prefix}-{name}"
        self._used_queues.add(queue)
        return queue

    def label_for(self, scenario: str) -> str:
        """A probe label no other scenario or run shares."""
        return f"{scenario}-{uuid.uuid4().hex[:10]}"

    def environment(self) -> dict[str, str]:
        environment = dict(os.environ)
        environment[ENVIRONMENT_VARIABLE] = str(self.probe.path)
        environment[jobs.RETRY_QUEUE_VARIABLE] = self.retry_queue
        return environment

    def shared_worker(self) -> None:
        """Make sure the long-lived worker on the main and retry queues is running."""
        if not self.external:
            return
        if self._shared is None or self._shared.process.poll() is not None:
            self._shared = self.start_worker([self.main_queue, self.retry_queue], concurrency=4)

    def stop_shared_worker(self) -> None:
        if self._shared is not None:
            worker, self._shared = self._shared, None
            worker.terminate()

    def start_worker(self, queues: list[str], concurrency: int = 1, wait: bool = True) -> WorkerProcess:
        """Start ``jobadapter worker`` on ``queues``; with ``wait``, return once it consumes each."""
        handle, log_name = tempfile.mkstemp(prefix="worker-", suffix=".log", dir=self.workdir)
        command = [
            sys.executable,
            "-m",
            "jobadapter.cli",
            "worker",
            "--url",
            self.url,
            "--app",
            APP_MODULE,
            "--queues",
            ",".join(queues),
            "--concurrency",
            str(concurrency),
        ]
        process = subprocess.Popen(
            command,
            env=self.environment(),
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        os.close(handle)
        worker = WorkerProcess(process, Path(log_name))
        if wait:
            self.wait_until_consuming(worker, queues)
        return worker

    def wait_until_consuming(self, worker: WorkerProcess, queues: list[str]) -> None:
        labels = []
        with config.override(self.adapter):
            for queue in queues:
                label = self.label_for("ping")
                jobs.PingJob.set(queue=queue).perform_later(label)
                labels.append(label)
        deadline = time.monotonic() + READY_TIMEOUT
        while not all(self.probe.count(label) for label in labels):
            if worker.process.poll() is not None:
                raise AssertionError(
                    f"worker exited with {worker.process.returncode} before consuming {queues}\n"
                    f"{worker.log_tail()}"
                )
            if time.monotonic() > deadline:
                worker.kill()
                raise AssertionError(f"worker never consumed {queues}\n{worker.log_tail()}")
            time.sleep(0.05)

    @contextmanager
    def worker(self, queues: list[str], concurrency: int = 1) -> Iterator[WorkerProcess | None]:
        """A dedicated worker for one scenario (nothing for in-process adapters)."""
        if not self.external:
            yield None
            return
        worker = self.start_worker(queues, concurrency)
        try:
            yield worker
        finally:
            if worker.process.poll() is None:
                worker.terminate()

    def close(self) -> None:
        try:
            self.stop_shared_worker()
            with contextlib.suppress(NotImplementedError):
                self.adapter.purge(sorted(self._used_queues))
        finally:
            self.adapter.close()
