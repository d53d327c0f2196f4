"""Process trees, for killing a worker the way a dead machine would.

A backend worker is rarely one process: RQ forks a work horse per job (and
puts it in a session of its own), Celery's prefork pool and Dramatiq's worker
processes are children. Signalling a process group misses whatever left the
group, and SIGKILLing a parent first lets its children be re-parented and run
on. So `kill_tree` first freezes the whole tree with SIGSTOP, walking it again
until no new process appears, and only then SIGKILLs every member: nothing of
the tree runs a single instruction after the freeze.

Linux only: the tree is read from ``/proc``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

_PROC = Path("/proc")


def _parent_and_state(pid: int) -> tuple[int, str] | None:
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces or parentheses itself.
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), fields[0]


def descendants(root: int) -> set[int]:
    """Every live process below ``root`` (not ``root`` itself)."""
    children: dict[int, list[int]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        found = _parent_and_state(int(entry.name))
        if found is not None and found[1] != "Z":
            children.setdefault(found[0], []).append(int(entry.name))
    tree: set[int] = set()
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in tree:
                tree.add(child)
                stack.append(child)
    return tree


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    found = _parent_and_state(pid)
    return found is not None and found[1] != "Z"


def kill_tree(root: int) -> set[int]:
    """Freeze ``root`` and all its descendants, then SIGKILL them all; returns every pid killed.

    The caller still reaps ``root`` if it is its child; the others are reaped
    by whoever inherits them.
    """
    frozen: set[int] = set()
    while True:
        members = {root} | descendants(root)
        new = members - frozen
        if not new:
            break
        for pid in new:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        frozen |= new
    for pid in frozen:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return frozen


def wait_gone(pids: set[int], timeout: float = 5.0) -> set[int]:
    """Wait until none of ``pids`` is alive; returns those still alive after ``timeout``."""
    deadline = time.monotonic() + timeout
    left = {pid for pid in pids if alive(pid)}
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        left = {pid for pid in left if alive(pid)}
    return left
