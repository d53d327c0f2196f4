"""Event writes sent to a writer process: the journal of a worker that forks per job.

RQ forks a work horse for every job, and a fork and the child's exit cost in
proportion to the parent's memory. A journal's writer thread needs SQLAlchemy
and a database driver in the worker (17 MB more memory to copy on write): on
the development machine that alone added about 2 ms to each job's 13 ms, which
was most of what the journal cost a draining RQ worker. So a worker whose
adapter forks per job (`Adapter.forks_per_job`) leaves the database out of its
memory: its event writes, and those its horses relay to it (`relay`), go as
lines down a pipe to one writer process (`jobadapter.journal.writer`), which
runs the ordinary `store.Journal` with its batches, retries and outage
handling. Reads in such a worker (a job looking another up) build an ordinary
`store.Journal` on first use, in whichever process asks.

The forwarder never blocks a job on the writer: lines wait in memory (up to
`BUFFER_LIMIT`, then they are dropped and counted) while one thread sends them.
A writer process that dies is started again. It ignores SIGINT and SIGTERM,
which reach a worker's whole process group on Ctrl-C or a warm shutdown: it
ends when the worker closes the pipe, after writing the last rows.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import selectors
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from typing import IO, TYPE_CHECKING

from jobadapter.journal import relay, urls
from jobadapter.journal.writes import Write

if TYPE_CHECKING:
    from jobadapter.journal.store import Journal

_logger = logging.getLogger("jobadapter")

WRITER_MODULE = "jobadapter.journal.writer"
FLUSH = "flush"
"""The kind of line that asks the writer process to flush and answer with the line's token."""
BUFFER_LIMIT = 50_000
"""Lines kept in memory while the writer process does not take them; later ones are dropped."""
LINGER = 0.02
"""Seconds the sender waits after a first line, so that a burst goes in one write."""
CANNOT_WRITE = 78
"""The writer process's exit status when it cannot open the journal at all (EX_CONFIG: a
missing driver, say); it is not started again."""
RESTART_INTERVAL = 1.0
"""Seconds between two starts of a writer process that keeps dying."""


class Forwarder:
    """Sends event writes to a writer process (see the module docstring); a `writes.Sink`."""

    def __init__(self, url: str) -> None:
        urls.check(url)  # a wrong URL stops the worker here, not its writer process later
        self.url = url
        self.dropped = 0
        """Writes dropped: the writer process did not take them fast enough, or at all."""
        self._owner = os.getpid()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._sent = threading.Condition(self._lock)
        self._sending = False
        self._flush_waiting = False
        self._lines: deque[bytes] = deque()
        self._thread: threading.Thread | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._started_at = 0.0
        self._closed = False
        self._dropping = False
        self._given_up = False
        self._tokens = itertools.count(1)
        self._flushing = threading.Lock()
        self._link = relay.Link(self._from_child)
        self._fallback: Journal | None = None
        """In a forked child whose pipe to its parent is gone: a journal of its own."""
        reference = weakref.ref(self)
        os.register_at_fork(
            before=lambda: _before_fork(reference),
            after_in_parent=lambda: _after_fork_in_parent(reference),
            after_in_child=lambda: _after_fork_in_child(reference),
        )
        atexit.register(_close_at_exit, reference)
        self._writer_input()  # now: its start-up (SQLAlchemy's import) is not a job's wait

    def __repr__(self) -> str:
        return f"<Forwarder to a writer process (pid {self._process.pid if self._process else None})>"

    @property
    def forked(self) -> bool:
        return os.getpid() != self._owner

    def submit(self, write: Write) -> None:
        try:
            line = relay.encode(write.kind, write.values)
        except (TypeError, ValueError) as error:
            if self.forked:
                self._write_here(write)
            else:
                self._drop(1, f"a value JSON cannot carry: {error}")
            return
        if self.forked:
            if not self._link.send(line):
                self._write_here(write)
            return
        self._put(line)

    def write_pending(self) -> None:
        if self._fallback is not None:
            self._fallback.write_pending()

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until the writer process has written every line sent so far (at most
        ``timeout`` s): it is asked to flush, and answers."""
        self._link.relay.drain()
        if self.forked:
            self.write_pending()
            return
        deadline = time.monotonic() + timeout
        with self._flushing:
            with self._lock:
                if self._closed or self._thread is None:
                    return  # nothing was ever sent
            token = next(self._tokens)
            with self._lock:
                self._flush_waiting = True
            try:
                self._put(relay.encode(FLUSH, {"token": token}))
                with self._lock:
                    self._wake.notify()
                self._wait_sent(deadline)
            finally:
                with self._lock:
                    self._flush_waiting = False
            self._await(token, deadline)

    def _wait_sent(self, deadline: float) -> None:
        """Wait (bounded) until the sender has written every queued line."""
        with self._lock:
            while self._lines or self._sending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._sent.wait(remaining)

    def close(self, timeout: float = 5.0) -> None:
        """Flush (bounded), stop sending, and let the writer process end (it writes what it
        holds once the pipe closes)."""
        if self.forked:
            if self._fallback is not None:
                self._fallback.close(timeout)
            return
        if self._closed:
            return
        self.flush(timeout)
        with self._lock:
            self._closed = True
            self._wake.notify()
            thread, process = self._thread, self._process
        if thread is not None:
            thread.join(timeout)
        if process is not None and process.stdin is not None:
            process.stdin.close()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                # Still held open by a child of ours: it ends when the last one exits.
                _logger.warning("Job journal: the writer process (pid %d) is still writing", process.pid)

    # -- sending -----------------------------------------------------------------------------

    def _put(self, lines: bytes) -> None:
        """Queue ``lines`` for the sender thread. The append takes no lock (a deque's append is
        atomic); the lock is taken to wake the sender, once per batch it sends."""
        waiting = self._lines
        if self._closed:
            return
        if len(waiting) >= BUFFER_LIMIT:
            with self._lock:
                first, self._dropping = not self._dropping, True
            self._drop(_writes_in(lines), "the writer process is behind" if first else None)
            return
        waiting.append(lines)
        if len(waiting) == 1 or self._thread is None:
            with self._lock:
                if self._thread is None and not self._closed:
                    self._thread = threading.Thread(target=self._run, name="jobadapter-journal", daemon=True)
                    self._thread.start()
                self._wake.notify()

    def _from_child(self, frames: bytes) -> None:
        """Lines a forked child relayed: on to the writer process, or in a child of a child
        (a pool process's work horse) on to our own parent."""
        if not self.forked:
            self._put(frames)
        elif not self._link.send(frames):
            relay.decode_each(frames, lambda kind, values: self._write_here(Write(kind, values)))

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._lines and not self._closed:
                    self._wake.wait()
                if not self._lines:
                    return
                if not self._closed and not self._flush_waiting:
                    self._wake.wait(LINGER)  # a burst's lines in one write (a flush cuts it short)
                lines = b"".join(self._lines.popleft() for _ in range(len(self._lines)))
                self._dropping = False
                self._sending = True
            try:
                self._send(lines)
            finally:
                with self._lock:
                    self._sending = False
                    self._sent.notify_all()

    def _send(self, lines: bytes) -> None:
        for _ in range(2):
            stream = self._writer_input()
            if stream is None:
                break
            try:
                stream.write(lines)
                stream.flush()
                return
            except (OSError, ValueError) as error:
                process = self._process
                assert process is not None
                _logger.error(
                    "Job journal: the writer process (pid %d) stopped taking writes (%s)",
                    process.pid,
                    error,
                )
                try:
                    process.wait(1)  # its exit status says whether another one could do better
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self._drop(_writes_in(lines), None if self._given_up else "no writer process takes them")

    def _writer_input(self) -> IO[bytes] | None:
        """The writer process's input, started (again) if need be; None while it keeps dying."""
        if self._process is not None and self._process.poll() is None:
            return self._process.stdin
        if self._process is not None:
            if self._process.returncode == CANNOT_WRITE:
                if not self._given_up:
                    self._given_up = True
                    _logger.error("Job journal: no writer process can open it; its writes are dropped")
                return None
            _logger.error("Job journal: the writer process exited with %s", self._process.returncode)
        wait = self._started_at + RESTART_INTERVAL - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._started_at = time.monotonic()
        from jobadapter.journal import ENVIRONMENT_VARIABLE

        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", WRITER_MODULE],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env={**os.environ, ENVIRONMENT_VARIABLE: self.url},  # not in argv: it may hold a password
            )
        except OSError as error:
            _logger.error("Job journal: the writer process could not start: %s", error)
            self._process = None
            return None
        return self._process.stdin

    def _await(self, token: int, deadline: float) -> None:
        """Read the writer process's answers until ``token`` (or the deadline)."""
        process = self._process
        if process is None or process.stdout is None:
            return
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            answered = b""
            while (remaining := deadline - time.monotonic()) > 0:
                if not selector.select(remaining):
                    continue
                chunk = os.read(process.stdout.fileno(), 4096)
                if not chunk:
                    return  # the writer process is gone
                answered += chunk
                lines = answered.split(b"\n")
                answered = lines.pop()
                if any(line.strip() == str(token).encode() for line in lines):
                    return

    def _drop(self, count: int, reason: str | None) -> None:
        """Count ``count`` writes as dropped, and log why (None: said once already)."""
        with self._lock:
            self.dropped += count
        if reason is not None:
            _logger.error("Job journal: %d write(s) dropped: %s", count, reason)

    def _write_here(self, write: Write) -> None:
        """In a forked child that cannot hand ``write`` on: write it with a journal of its own
        (the parent holds no database client, so nothing it held at the fork is in the way)."""
        if self._fallback is None:
            from jobadapter.journal.store import Journal

            self._fallback = Journal(self.url)
        self._fallback.submit(write)
        self._fallback.write_pending()


def _writes_in(lines: bytes) -> int:
    """How many of ``lines`` are writes (the rest ask for a flush)."""
    return sum(1 for line in lines.splitlines() if not line.startswith(_FLUSH_LINE))


_FLUSH_LINE = relay.encode(FLUSH, {}).partition(b",")[0]


def _before_fork(reference: weakref.ref[Forwarder]) -> None:
    forwarder = reference()
    if forwarder is not None and not forwarder._closed:
        forwarder._link.before_fork()


def _after_fork_in_parent(reference: weakref.ref[Forwarder]) -> None:
    forwarder = reference()
    if forwarder is not None:
        forwarder._link.after_fork_in_parent()


def _after_fork_in_child(reference: weakref.ref[Forwarder]) -> None:
    forwarder = reference()
    if forwarder is not None:
        forwarder._link.after_fork_in_child()
        forwarder._fallback = None


def _close_at_exit(reference: weakref.ref[Forwarder]) -> None:
    forwarder = reference()
    if forwarder is not None:
        forwarder.close()
