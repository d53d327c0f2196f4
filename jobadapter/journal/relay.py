"""A forked child's journal writes, handed to its parent's writer through a pipe.

RQ forks a work horse for every job. Writing from the horse meant a new
database connection per job (a new PostgreSQL backend, SQLite's WAL set-up)
and a transaction per event: that doubled a worker's drain time. The parent
lives on and already batches its own writes, so a child sends each write down
a pipe made at fork time and the parent's writer stores it with everything
else. A pool process that lives long (Celery's prefork, Dramatiq's workers)
gains as well: one connection and one batch stream per worker, not per process.

The child falls back to writing itself when the pipe is gone (the parent died,
or the pool closed the descriptor), so a write is never lost for the relay's
sake. The parent reads every child's pipe on one thread, each until the child
and its own children have exited.

Frames are lines of JSON (``[kind, values]``, datetimes as ISO 8601 text in
the columns that hold them): the pipe carries only what the child built
itself, and nothing read from it is ever imported or unpickled.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple

from jobadapter.journal import writes

_logger = logging.getLogger("jobadapter")

_IDLE_POLL = 0.5
"""Seconds between two looks at the registered pipes when none is ready (a new child's pipe
is seen at once where the selector is epoll or kqueue, within this bound elsewhere)."""


def encode(kind: str, values: dict[str, Any]) -> bytes:
    """One line for the pipe (``kind`` is one of `store.UPDATED`); raises TypeError or
    ValueError for a value JSON cannot hold."""
    plain = writes.with_iso_timestamps(values)
    return json.dumps([kind, plain], separators=(",", ":"), allow_nan=False).encode() + b"\n"


def decode_each(frames: bytes, submit: Callable[[str, dict[str, Any]], None]) -> None:
    """Hand each write of ``frames`` (lines) to ``submit``; a line that is not one of ours is
    logged and dropped (the others are not)."""
    for line in frames.splitlines():
        try:
            kind, values = decode(line)
        except (ValueError, TypeError) as error:
            _logger.error("Job journal: an unreadable write from a child process was dropped: %s", error)
            continue
        submit(kind, values)


def decode(line: bytes) -> tuple[str, dict[str, Any]]:
    """The write one line carries; raises ValueError when the line is not one of ours."""
    kind, values = json.loads(line)
    if not isinstance(kind, str) or not isinstance(values, dict):
        raise ValueError("a journal frame is [kind, values]")
    for name in writes.DATETIME_COLUMNS & values.keys():
        if values[name] is not None:
            values[name] = datetime.fromisoformat(values[name])
    return kind, values


class Pipe(NamedTuple):
    """Both ends of one child's pipe, and the pipe's identity (to tell it from a reused descriptor)."""

    read: int
    write: int
    identity: tuple[int, int]


def open_pipe() -> Pipe:
    read, write = os.pipe()
    status = os.fstat(write)
    return Pipe(read, write, (status.st_dev, status.st_ino))


class ToParent:
    """The child's end: sends frames to the parent while the pipe stands."""

    def __init__(self, pipe: Pipe) -> None:
        os.close(pipe.read)
        self._fd = pipe.write
        self._identity = pipe.identity
        self._lock = threading.Lock()  # a frame is written whole, even from a threaded child
        self.open = True

    def send(self, line: bytes) -> bool:
        """Whether the parent has ``line``; False (and closed for good) once the pipe is gone."""
        with self._lock:
            if not self.open:
                return False
            try:
                status = os.fstat(self._fd)
                if (status.st_dev, status.st_ino) != self._identity:
                    # A pool closed our descriptor and the number now names something else.
                    self.open = False
                    return False
                view = memoryview(line)
                while view:
                    view = view[os.write(self._fd, view) :]
            except OSError as error:
                self.open = False
                _logger.warning(
                    "Job journal: the parent process stopped taking writes (%s); writing here", error
                )
                return False
            return True


class Relay:
    """The parent's end: one thread reads every live child's pipe and delivers whole frames.

    One thread for all children, started at the first fork: RQ forks a work horse per
    job, and starting a thread per fork cost as much as a job's journal rows.
    """

    def __init__(self, deliver: Callable[[bytes], None]) -> None:
        self.deliver = deliver
        """Called with whole frames (one or more lines, each ending with a newline), as read."""
        self._selector: selectors.BaseSelector | None = None
        self._lock = threading.Lock()
        self._added = threading.Event()
        """Set when a pipe is registered: wakes the thread waiting for one."""

    def add(self, pipe: Pipe) -> None:
        """Read ``pipe`` from now on (in the parent, right after the fork)."""
        os.close(pipe.write)
        os.set_blocking(pipe.read, False)
        with self._lock:
            if self._selector is None:
                self._selector = selectors.DefaultSelector()
                thread = threading.Thread(
                    target=self._run, args=(self._selector,), name="jobadapter-journal-relay", daemon=True
                )
                thread.start()
            self._selector.register(pipe.read, selectors.EVENT_READ, bytearray())
        self._added.set()

    def _run(self, selector: selectors.BaseSelector) -> None:
        while True:
            with self._lock:
                idle = not selector.get_map()
            if idle:
                # Nothing registered (a selector may refuse to wait on nothing): until a pipe is.
                # A sleep here left a short-lived process's rows unread until it had exited.
                self._added.wait(_IDLE_POLL)
                self._added.clear()
                continue
            ready = selector.select(timeout=_IDLE_POLL)
            with self._lock:
                for key, _ in ready:
                    self._take(selector, key)

    def drain(self) -> None:
        """Deliver every whole frame the children have sent so far, in this thread (before a
        flush or an exit: the last horse's rows may still sit in its pipe)."""
        with self._lock:
            selector = self._selector
            if selector is None:
                return
            for key in list(selector.get_map().values()):
                while self._take(selector, key):
                    pass

    def _take(self, selector: selectors.BaseSelector, key: selectors.SelectorKey) -> bool:
        """Read once from ``key``'s pipe and deliver its whole frames (lock held); whether
        there may be more to read."""
        pending: bytearray = key.data
        fd = key.fd
        if selector.get_map().get(fd) is not key:
            return False  # closed meanwhile by `drain`
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return False
        except OSError:
            chunk = b""
        if not chunk:
            # The child and its own children are gone; a partial frame is a write cut by a kill.
            selector.unregister(fd)
            os.close(fd)
            return False
        pending += chunk
        end = pending.rfind(b"\n")
        if end < 0:
            return True
        frames = bytes(pending[: end + 1])
        del pending[: end + 1]
        self.deliver(frames)
        return True


class Link:
    """One process's place in the relay across forks: the `Relay` that reads its children, and
    in a forked child the `ToParent` it sends through. Its owner (a journal, a forwarder)
    calls the three fork steps from its ``os.register_at_fork`` hooks."""

    def __init__(self, deliver: Callable[[bytes], None]) -> None:
        self.relay = Relay(deliver)
        self.to_parent: ToParent | None = None
        """In a forked child: where its writes go (the parent's relay)."""
        self._pipe: Pipe | None = None

    def before_fork(self) -> None:
        self._pipe = open_pipe()

    def after_fork_in_parent(self) -> None:
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            self.relay.add(pipe)

    def after_fork_in_child(self) -> None:
        pipe, self._pipe = self._pipe, None
        self.to_parent = ToParent(pipe) if pipe is not None else None
        self.relay = Relay(self.relay.deliver)  # the parent's thread is not here

    def send(self, line: bytes) -> bool:
        """Whether the parent has ``line`` (False where there is no parent to send to)."""
        return self.to_parent is not None and self.to_parent.send(line)
