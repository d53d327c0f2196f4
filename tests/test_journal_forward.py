"""A worker that forks per job sends its journal writes to a writer process: the rows arrive,
flush waits for them, a forked child's go through its parent, a killed writer process is
started again, and closing lets the writer write its last rows and end."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobadapter import config, journal
from jobadapter.errors import ConfigurationError
from jobadapter.journal.forward import CANNOT_WRITE, RESTART_INTERVAL, Forwarder
from jobadapter.journal.store import Journal
from jobadapter.journal.writes import Write
from jobadapter.operations import JobState
from tests.journal_support import STORES, Add, store_url, wait_for
from tests.test_journal_relay import _in_child


@pytest.fixture(params=STORES)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with store_url(request.param, tmp_path) as built:
        yield built


@pytest.fixture
def store(url: str) -> Iterator[Journal]:
    built = journal.configure(url, writer_process=True)
    config.configure(url="inline://")
    yield built
    journal.close()
    config.reset()


def _forwarder(store: Journal) -> Forwarder:
    forwarder = store._writes
    assert isinstance(forwarder, Forwarder)
    return forwarder


def _writer_pid(store: Journal) -> int:
    process = _forwarder(store)._process
    assert process is not None and process.poll() is None, "no writer process runs"
    return process.pid


def test_writes_reach_the_store_through_a_writer_process(store: Journal) -> None:
    job = Add.perform_later(2, 40)
    store.flush()  # waits for the writer process to answer that the rows are in

    row = store.find(job.job_id)
    assert row is not None and (row.state, row.result, row.outcome) == (JobState.FINISHED, 42, "performed")
    writer = _writer_pid(store)
    assert writer != os.getpid()
    with open(f"/proc/{writer}/cmdline", "rb") as command:
        assert b"jobadapter.journal.writer" in command.read()
    assert _forwarder(store).dropped == 0


def test_a_forked_childs_rows_go_through_its_parent(store: Journal) -> None:
    Add.perform_later(1, 1)  # the writer process runs before the fork, as in a worker
    job_id = _in_child(lambda: Add.perform_later(2, 3).job_id)
    store.flush()
    row = store.find(job_id)
    assert row is not None and (row.state, row.result) == (JobState.FINISHED, 5)
    assert row.worker is not None and not row.worker.endswith(f":{os.getpid()}")  # the child ran it


def test_a_killed_writer_process_is_started_again(store: Journal) -> None:
    Add.perform_later(1, 2)
    store.flush()
    first = _writer_pid(store)
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: _forwarder(store)._process is not None and _forwarder(store)._process.poll() is not None)

    job = Add.perform_later(20, 22)
    store.flush(timeout=10)

    row = store.find(job.job_id)
    assert row is not None and (row.state, row.result) == (JobState.FINISHED, 42)
    assert _writer_pid(store) != first


def test_the_writer_process_outlives_ctrl_c_and_a_warm_shutdown(store: Journal) -> None:
    """SIGINT and SIGTERM reach a worker's whole process group; the worker's last rows come
    after them, so the writer process must still take them."""
    Add.perform_later(1, 2)
    store.flush()
    writer = _writer_pid(store)
    os.kill(writer, signal.SIGINT)
    os.kill(writer, signal.SIGTERM)

    job = Add.perform_later(3, 4)
    store.flush()

    assert _writer_pid(store) == writer
    row = store.find(job.job_id)
    assert row is not None and (row.state, row.result) == (JobState.FINISHED, 7)


def test_closing_lets_the_writer_process_write_its_last_rows_and_end(url: str) -> None:
    journal.configure(url, writer_process=True)
    config.configure(url="inline://")
    try:
        jobs = [Add.perform_later(number, 1) for number in range(20)]
        active = journal.active()
        assert active is not None
        forwarder = _forwarder(active)
        journal.close()  # no flush first: closing must not lose the rows on their way
    finally:
        config.reset()
    assert forwarder._process is not None and forwarder._process.poll() == 0
    reader = Journal(url)
    try:
        rows = [reader.find(job.job_id) for job in jobs]
    finally:
        reader.close()
    assert [(row.state, row.result) if row else None for row in rows] == [
        (JobState.FINISHED, number + 1) for number in range(20)
    ]


@pytest.mark.parametrize(
    ("url", "refusal"),
    [
        ("jobs.db", r"'jobs\.db' is not a journal URL"),
        ("mysql://root@localhost/jobs", "supports sqlite and postgresql URLs, not 'mysql'"),
        ("sqlite://", "needs a SQLite file"),
        ("sqlite:///jobs.db?retention_days=-1", "retention_days must be a number of days >= 0, not '-1'"),
    ],
)
def test_a_wrong_url_is_refused_before_any_process_starts(url: str, refusal: str) -> None:
    with pytest.raises(ConfigurationError, match=refusal):
        Forwarder(url)


def test_a_journal_no_writer_process_can_open_drops_writes_without_starting_one_per_second() -> None:
    forwarder = Forwarder("postgresql+nosuchdriver://postgres@127.0.0.1/jobs")
    try:
        first = forwarder._process
        assert first is not None
        assert first.wait(30) == CANNOT_WRITE
        for number in range(3):
            forwarder.submit(Write("enqueued", {"job_id": str(number)}))
            forwarder.flush(timeout=RESTART_INTERVAL + 1)
        assert forwarder.dropped == 3
        assert forwarder._process is first  # not started again: it could not do better
    finally:
        forwarder.close()
