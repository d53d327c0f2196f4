"""``store_result`` jobs: ``job.result()`` (Celery's ``add.delay(2, 2).get()``) and ``Job.lookup``."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from jobadapter import Job, config, journal
from jobadapter.errors import ConfigurationError, JobAdapterError, JobFailedError
from jobadapter.journal.store import Journal
from jobadapter.operations import JobNotFound, JobState
from jobadapter.testing import JobRecorder
from tests.journal_support import STORES, Add, Explodes, Vanishes, store_url


class Dated(Job):
    store_result = True

    def perform(self, year: int) -> dict[str, object]:
        return {"day": date(year, 1, 2), "tags": ("a", "b")}


class Unstorable(Job):
    store_result = True

    def perform(self) -> object:
        return object()


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Journal]:
    with store_url(request.param, tmp_path) as url:
        yield journal.configure(url)
        journal.close()


def test_result_waits_for_the_value_a_worker_returned(store: Journal) -> None:
    config.configure(url="async://?workers=2")
    assert Add.perform_later(2, 2).result() == 4
    assert Dated.perform_later(2026).result() == {"day": date(2026, 1, 2), "tags": ("a", "b")}
    with pytest.raises(JobFailedError, match=r"failed with Boom: no Carol"):
        Explodes.perform_later("Carol").result(timeout=10)
    with pytest.raises(TimeoutError, match=r"did not finish within 0\.2 s \(it is scheduled\)"):
        Add.set(wait=60).perform_later(1, 1).result(timeout=0.2)
    with pytest.raises(JobAdapterError, match="could not be stored"):
        Unstorable.perform_later().result()
    config.adapter().purge(["default"])


def test_lookup_merges_the_adapter_and_the_journal(store: Journal, jobs: JobRecorder) -> None:
    job = Add.perform_later(3, 4)
    discarded = Vanishes.perform_later()
    jobs.perform_enqueued()
    # The test adapter cannot look jobs up (OperationUnsupported): the journal row answers.
    found = Add.lookup(job.job_id)
    assert (found.state, found.result, found.has_result, found.executions) == (JobState.FINISHED, 7, True, 1)
    assert Vanishes.lookup(discarded.job_id).outcome == "discarded"
    with pytest.raises(JobNotFound, match="no job with id 'nobody'"):
        Add.lookup("nobody")


def test_result_needs_store_result_and_a_journal(jobs: JobRecorder, tmp_path: Path) -> None:
    job = Add.perform_later(1, 1)
    with pytest.raises(ConfigurationError, match="none is configured: set JOBADAPTER_JOURNAL"):
        job.result()
    journal.configure(f"sqlite:///{tmp_path / 'j.db'}")
    try:
        with pytest.raises(ConfigurationError, match="set store_result = True"):
            Vanishes.perform_later().result()
        with pytest.raises(JobNotFound):
            Add.lookup("nobody")
    finally:
        journal.close()
