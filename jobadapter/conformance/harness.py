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
from jobadapter.faults.processes import kill_tree, wait_gone

APP_MODULE = "jobadapter.conformance.jobs"
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0


def stop_with_parent() -> None:
    """In a worker about to start: ask Linux for SIGTERM when the process that started it dies.

    A suite killed mid-run (a test timeout, a CI cancel) would otherwise leave
    its workers consuming from shared brokers for ever. Elsewhere it does nothing.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    set_parent_death_signal = 1  # PR_SET_PDEATHSIG
    ctypes.CDLL(None, use_errno=True).prctl(set_parent_death_signal, signal.SIGTERM)


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

    def kill_tree(self) -> set[int]:
        """SIGKILL the whole process tree, as if the machine died: work horses and pool
        children included, even those that left the process group. Returns the pids
        of the tree still alive a few seconds later (none, unless something is wrong)."""
        if self.process.poll() is not None:
            return set()
        killed = kill_tree(self.process.pid)
        self.process.wait()
        return wait_gone(killed)

    def kill(self) -> None:
        """`kill_tree`, failing if any process of the killed worker is left."""
        survivors = self.kill_tree()
        if survivors:
            raise AssertionError(f"processes {sorted(survivors)} of the killed worker are still alive")


class Backend:
    """One adapter URL under test."""

    def __init__(
        self,
        url: str,
        probe: Probe,
        workdir: Path,
        timeout: float = 20.0,
        *,
        apps: tuple[str, ...] = (APP_MODULE,),
        environment: dict[str, str] | None = None,
    ) -> None:
        self.url = url
        self.timeout = timeout
        """How long a scenario waits for a job to report before failing."""
        self.apps = apps
        """The workers' ``--app`` modules; they must include `APP_MODULE`, whose ``PingJob``
        tells when a worker consumes."""
        self.extra_environment = dict(environment or {})
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
        self.declared_queue = self.queue("declared")
        """``DeclaredQueueJob``'s ``queue_as`` in this run's workers."""
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
        environment[jobs.DECLARED_QUEUE_VARIABLE] = self.declared_queue
        plugins = config.plugin_modules()  # an adapter registered here, not installed: workers import it too
        if plugins:
            environment[config.PLUGINS_VARIABLE] = ",".join(plugins)
        environment.update(self.extra_environment)
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

    def start_worker(
        self, queues: list[str] | None, concurrency: int = 1, wait: bool = True
    ) -> WorkerProcess:
        """Start ``jobadapter worker`` on ``queues``; with ``wait``, return once it consumes each.

        ``queues=None`` starts it without ``--queues`` (it then consumes the queues its
        ``--app`` job classes declare, this run's ``declared_queue`` among them)."""
        handle, log_name = tempfile.mkstemp(prefix="worker-", suffix=".log", dir=self.workdir)
        command = [
            sys.executable,
            "-m",
            "jobadapter.cli",
            "worker",
            "--url",
            self.url,
            "--app",
            ",".join(self.apps),
            "--concurrency",
            str(concurrency),
        ]
        if queues is not None:
            command += ["--queues", ",".join(queues)]
        process = subprocess.Popen(
            command,
            env=self.environment(),
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=stop_with_parent,
        )
        os.close(handle)
        worker = WorkerProcess(process, Path(log_name))
        if wait:
            self.wait_until_consuming(worker, [self.declared_queue] if queues is None else queues)
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
    def worker(self, queues: list[str] | None, concurrency: int = 1) -> Iterator[WorkerProcess | None]:
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
