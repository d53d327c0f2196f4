"""A forked child (RQ's work horse) hands its journal writes to the parent's writer, and
writes them itself when that way is gone."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from jobadapter import config, journal
from jobadapter.journal.store import Journal
from jobadapter.operations import JobState
from tests.journal_support import Add, wait_for


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Journal]:
    built = journal.configure(f"sqlite:///{tmp_path / 'journal.db'}")
    built.ensure_schema()
    config.configure(url="inline://")
    yield built
    journal.close()
    config.reset()


def _in_child(work: Any) -> str:
    """Run ``work`` in a forked child that ends with os._exit, as a work horse does; its
    return value (a job id) comes back on a pipe."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child process
        try:
            os.write(write, str(work()).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as answer:
        job_id = answer.read().decode()
    os.waitpid(pid, 0)
    assert job_id, "the child failed before it answered"
    return job_id


def test_a_forked_childs_rows_are_written_by_its_parent(store: Journal, tmp_path: Path) -> None:
    connected = tmp_path / "child-connected"

    def run_a_job() -> str:
        sa.event.listen(store.engine, "connect", lambda *_: connected.touch())
        return Add.perform_later(2, 40).job_id

    job_id = _in_child(run_a_job)
    row = wait_for(lambda: store.find(job_id), what="the child's row")
    assert (row.state, row.result, row.outcome) == (JobState.FINISHED, 42, "performed")
    assert row.started_at is not None and row.started_at.tzinfo is not None
    assert row.worker is not None and not row.worker.endswith(f":{os.getpid()}")  # the child ran it
    assert not connected.exists(), "the child opened a database connection of its own"


def test_a_child_whose_pipe_was_closed_by_a_pool_writes_itself(store: Journal, tmp_path: Path) -> None:
    """A pool that closes inherited descriptors may hand the number to a file: the child
    must notice, write nothing there, and store its rows itself."""
    stranger = tmp_path / "stranger"

    def close_the_pipe_then_run_a_job() -> str:
        assert store._link.to_parent is not None
        reused = os.open(stranger, os.O_WRONLY | os.O_CREAT)
        os.dup2(reused, store._link.to_parent._fd)  # the pipe's number now names the file
        job_id = Add.perform_later(1, 1).job_id
        store.flush()
        return job_id

    job_id = _in_child(close_the_pipe_then_run_a_job)
    row = store.find(job_id)
    assert row is not None and (row.state, row.result) == (JobState.FINISHED, 2)
    assert stranger.read_bytes() == b""
