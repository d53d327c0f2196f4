"""The job journal on SQLite and PostgreSQL: rows through a job's life, listing, retention,
outages, tombstones and pauses across processes, and a real ``jobadapter worker``."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from jobadapter import Job, config, journal, perform_all_later
from jobadapter.arguments import serialize_arguments
from jobadapter.cli import main
from jobadapter.errors import ConfigurationError
from jobadapter.faults.brokers import SHARED_POSTGRESQL, PrivateRedis, scratch_postgresql
from jobadapter.journal import schema
from jobadapter.journal.store import Journal
from jobadapter.operations import JobFilter, JobState, arguments_text
from jobadapter.testing import JobRecorder
from tests.journal_support import (
    STORES,
    Add,
    Explodes,
    FlakyOnce,
    LoadedDatabaseModules,
    Vanishes,
    store_url,
    wait_for,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=STORES)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with store_url(request.param, tmp_path) as built:
        yield built
        journal.close()  # before the database is dropped


@pytest.fixture
def store(url: str) -> Journal:
    return journal.configure(url)


def test_rows_follow_each_job_through_its_life(store: Journal) -> None:
    config.configure(url="async://?workers=2")
    added = Add.perform_later(2, 3)
    flaky = FlakyOnce.perform_later("Ada")
    vanished = Vanishes.perform_later()
    exploded = Explodes.perform_later("Alice")
    later = Add.set(wait=60, queue="later", priority=3).perform_later(1, 1)
    everything = (added, flaky, vanished, exploded)

    def settled() -> bool:
        store.flush()
        rows = [store.find(job.job_id) for job in everything]
        return all(row is not None and row.state in (JobState.FINISHED, JobState.FAILED) for row in rows)

    wait_for(settled, what="every job to finish")
    row = store.find(added.job_id)
    assert row is not None and row.state is JobState.FINISHED and row.outcome == "performed"
    assert (row.job_class, row.queue, row.arguments, row.executions) == (Add.job_name, "default", [2, 3], 1)
    assert row.has_result and row.result == 5
    assert row.worker == f"{os.uname().nodename}:{os.getpid()}"
    assert row.enqueued_at is not None and row.started_at is not None and row.finished_at is not None
    assert row.enqueued_at <= row.started_at <= row.finished_at
    assert row.provider_job_id == added.provider_job_id and row.error is None

    row = store.find(flaky.job_id)  # retried once, then performed: the retry's row wins
    assert row is not None and (row.state, row.outcome, row.executions) == (JobState.FINISHED, "performed", 2)
    row = store.find(vanished.job_id)
    assert row is not None and (row.state, row.outcome) == (JobState.FINISHED, "discarded")
    assert row.error is not None and row.error.error_class == "Gone"
    assert row.error.message == "row deleted"
    row = store.find(exploded.job_id)
    assert row is not None and (row.state, row.outcome) == (JobState.FAILED, "failed")
    assert row.error is not None and str(row.error) == "Boom: no Alice"
    assert row.error.traceback is not None and 'raise Boom(f"no {who}")' in row.error.traceback

    def history(job_id: str) -> list[tuple[int, str | None, str | None]]:
        return [
            (run.number, run.outcome, None if run.error is None else str(run.error))
            for run in store.executions(job_id)
        ]

    assert history(added.job_id) == [(1, "performed", None)]
    assert history(flaky.job_id) == [(1, "retried", "Boom: first time"), (2, "performed", None)]
    assert history(vanished.job_id) == [(1, "discarded", "Gone: row deleted")]
    assert history(exploded.job_id) == [(1, "failed", "Boom: no Alice")]
    (run,) = store.executions(exploded.job_id)
    assert run.started_at is not None and run.finished_at is not None and run.started_at <= run.finished_at
    assert run.worker == f"{os.uname().nodename}:{os.getpid()}"
    assert run.error is not None and run.error.traceback is not None and "raise Boom" in run.error.traceback
    assert store.executions(later.job_id) == []

    row = store.find(later.job_id)
    assert row is not None and (row.state, row.queue, row.priority) == (JobState.SCHEDULED, "later", 3)
    assert row.scheduled_at == later.scheduled_at and row.started_at is None
    assert store.find("no-such-job") is None
    assert (store.count(JobState.FAILED), store.count(JobState.SCHEDULED, queue="later")) == (1, 1)
    config.adapter().purge(["later"])


def test_an_event_older_than_the_row_does_not_overwrite_it(store: Journal, jobs: JobRecorder) -> None:
    """Processes flush on their own: a worker's rows may land before the enqueuer's."""
    job = Add.perform_later(1, 2)
    store.flush()
    store.record(job.job_id, state=JobState.FAILED)  # an operator's write: the next event wins
    jobs.perform_enqueued()
    store.flush()
    row = store.find(job.job_id)
    assert row is not None and row.state is JobState.FINISHED
    from jobadapter.journal.feed import _enqueued

    store.submit(_enqueued(job))  # the enqueue event, arriving late
    store.flush()
    row = store.find(job.job_id)
    assert row is not None and (row.state, row.result, row.provider_job_id) == (
        JobState.FINISHED,
        3,
        job.provider_job_id,
    )
    with pytest.raises(ValueError, match="no field colour"):
        store.record(job.job_id, colour="red")


class KeywordArguments(Job):
    def perform(self, *arguments: object, **keyword_arguments: object) -> None:
        pass


def test_the_search_text_is_the_arguments_text_lower_cased(store: Journal, jobs: JobRecorder) -> None:
    """Written from the batch's own JSON of the arguments on SQLite, from the arguments on
    PostgreSQL: either way what `JobFilter.search` looks in."""
    arguments = ["Émile ÇA", {"Straße": [1, 2.5, None, True]}, []]
    keyword_arguments = {"Ünïcode": "Ω", "empty": {}}
    job = KeywordArguments.perform_later(*arguments, **keyword_arguments)
    store.flush()

    with store.engine.connect() as connection:
        stored = connection.execute(
            sa.select(schema.jobs.c.search).where(schema.jobs.c.job_id == job.job_id)
        ).scalar_one()
    assert stored == arguments_text(*serialize_arguments(arguments, keyword_arguments)).lower()
    assert [r.job_id for r in store.jobs(JobState.PENDING, JobFilter(search="émile ça"))] == [job.job_id]


def test_listing_pages_oldest_first_filters_and_searches(store: Journal, jobs: JobRecorder) -> None:
    names = [f"user{n:02}@Example.com" for n in range(12)]
    for name in names[:8]:
        Explodes.perform_later(name)
    perform_all_later([Explodes(name) for name in names[8:]])
    Add.set(queue="sums").perform_later(10, 20)
    Explodes.perform_later("50%_off")
    store.flush()

    pending = JobState.PENDING
    pages = [store.jobs(pending, limit=5, offset=offset) for offset in (0, 5, 10, 15)]
    assert [len(page) for page in pages] == [5, 5, 4, 0]
    listed = [record.arguments[0] for page in pages for record in page]
    assert listed[:12] == names and listed[12:] == [10, "50%_off"]
    assert store.count(pending) == 14 and store.count(pending, queue="sums") == 1
    every = JobFilter(job_class=Explodes.job_name)
    assert len(store.jobs(pending, every, limit=100)) == 13
    assert [r.arguments for r in store.jobs(pending, JobFilter(queue="sums"))] == [[10, 20]]
    assert [r.arguments[0] for r in store.jobs(pending, JobFilter(search="USER03@example"))] == [names[3]]
    # LIKE's wildcards in a search are plain text
    assert [r.arguments[0] for r in store.jobs(pending, JobFilter(search="50%_"))] == ["50%_off"]
    assert store.jobs(pending, JobFilter(search="user%3")) == []
    assert store.jobs(JobState.RUNNING) == []
    with pytest.raises(ValueError, match="limit and offset"):
        store.jobs(pending, limit=-1)


def test_retention_deletes_old_finished_rows_and_keeps_failed_ones(url: str) -> None:
    store = journal.configure(url + ("&" if "?" in url else "?") + "retention_days=2")
    assert store.retention_days == 2.0 and "retention_days" not in store.url
    old = datetime.now(timezone.utc) - timedelta(days=3)
    recent = datetime.now(timezone.utc) - timedelta(days=1)
    store.record("old-finished", state=JobState.FINISHED, finished_at=old)
    store.record("recent-finished", state=JobState.FINISHED, finished_at=recent)
    store.record("old-failed", state=JobState.FAILED, finished_at=old)
    with store.engine.begin() as connection:  # written directly: the writer thread prunes as it starts
        for job_id in ("old-finished", "old-failed"):
            run = {"execution": 1, "started_at": old, "finished_at": old, "outcome": "x"}
            connection.execute(schema.executions.insert(), [{"job_id": job_id, **run}])
    assert store.prune() == 1
    assert store.find("old-finished") is None and store.executions("old-finished") == []
    assert store.find("recent-finished") is not None and store.find("old-failed") is not None
    assert [run.outcome for run in store.executions("old-failed")] == ["x"], "a kept job keeps its history"
    for bad in ("x", "-1"):
        with pytest.raises(ConfigurationError, match="retention_days must be a number of days"):
            Journal(f"{url}{'&' if '?' in url else '?'}retention_days={bad}")


def test_record_many_writes_a_batch_in_one_go_and_keeps_what_it_does_not_set(store: Journal) -> None:
    store.record("kept", state=JobState.FAILED, arguments=["alice@example.com"], job_class="app.Mail")
    store.record_many(
        [
            ("kept", {"state": JobState.PENDING, "queue": "new"}),
            ("fresh", {"state": JobState.SCHEDULED, "queue": "new"}),
        ]
    )
    kept, fresh = store.find("kept"), store.find("fresh")
    assert kept is not None and fresh is not None
    assert (kept.state, kept.queue, kept.job_class, kept.arguments) == (
        JobState.PENDING,
        "new",
        "app.Mail",
        ["alice@example.com"],
    )
    assert [r.job_id for r in store.jobs(JobState.PENDING, JobFilter(search="ALICE"), 10, 0)] == ["kept"]
    assert (fresh.state, fresh.queue) == (JobState.SCHEDULED, "new")
    with pytest.raises(ValueError, match="the same fields in every row"):
        store.record_many([("a", {"queue": "x"}), ("b", {"state": JobState.PENDING})])


def test_bad_urls_are_refused_with_the_reason() -> None:
    with pytest.raises(ConfigurationError, match="supports sqlite and postgresql"):
        journal.configure("mysql://localhost/jobs")
    with pytest.raises(ConfigurationError, match="needs a SQLite file"):
        journal.configure("sqlite://")
    with pytest.raises(ConfigurationError, match="not a journal URL"):
        journal.configure("no url")
    assert journal.active() is None


def test_tombstones_and_pauses_are_shared_between_processes(store: Journal, url: str) -> None:
    store.tombstone("job-1")
    store.pause("mail")
    script = textwrap.dedent(
        f"""
        from jobadapter import config, journal
        from tests.journal_support import Add
        j = journal.configure({url!r})
        assert j.is_tombstoned("job-1") and not j.is_tombstoned("job-2")
        assert j.paused() == frozenset({{"mail"}})
        j.tombstone("job-2|2026-01-01T00:00:00Z")
        j.tombstone("job-2|2026-01-01T00:00:00Z")  # twice is once
        j.pause("reports")
        j.resume("mail")
        config.configure(url="inline://")
        print(Add.perform_later(5, 6).job_id)  # its rows are still buffered when the script ends
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], check=True, cwd=ROOT, timeout=60, capture_output=True, text=True
    )
    assert store.is_tombstoned("job-2|2026-01-01T00:00:00Z") and not store.is_tombstoned("job-2")
    assert store.paused() == frozenset({"reports"})
    row = store.find(done.stdout.strip())  # the exit flushed them
    assert row is not None and (row.state, row.result) == (JobState.FINISHED, 11)


def test_an_outage_of_the_store_never_fails_a_job_and_heals(
    url: str, tmp_path: Path, jobs: JobRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    if url.startswith("sqlite"):
        store = journal.configure(url + "?timeout=0.1")
        store.ensure_schema()
        blocker = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")  # no one else may write (or read) until it ends
        heal = blocker.close
        paused_before = store.paused()
    else:
        store = journal.configure(url)
        store.pause("mail")
        paused_before = store.paused()
        name = url.rpartition("/")[2]
        with psycopg.connect(SHARED_POSTGRESQL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')

        def heal() -> None:
            with psycopg.connect(SHARED_POSTGRESQL, autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{name}"')

    with caplog.at_level(logging.INFO, logger="jobadapter"):
        during = [Add.perform_later(n, n) for n in range(5)]
        jobs.perform_enqueued()  # the jobs run and succeed; nothing raises
        assert [job.outcome for job in jobs.performed] == ["performed"] * 5
        assert not store.is_tombstoned("anything")  # answers instead of failing the worker
        assert store.paused() == paused_before
        wait_for(lambda: "is unavailable" in caplog.text, what="the outage to be logged")
        assert caplog.text.count("is unavailable") == 1
        heal()
        store.flush(timeout=10)
        wait_for(lambda: "is available again" in caplog.text, what="the recovery to be logged")
    assert store.dropped == 0
    for job in during:
        row = store.find(job.job_id)
        assert row is not None and row.state is JobState.FINISHED and row.result == 2 * job.arguments[0]


def _drain_with_rq_worker(rq_url: str, journal_url: str, queue: str, *options: str) -> None:
    """``jobadapter worker --burst`` on ``queue``, journaling at ``journal_url`` as
    ``JOBADAPTER_JOURNAL`` tells it, until the queue is empty."""
    environment = {**os.environ, journal.ENVIRONMENT_VARIABLE: journal_url}
    environment.pop("JOBADAPTER_URL", None)
    command = [sys.executable, "-m", "jobadapter.cli", "worker", "--url", rq_url, "--burst", *options]
    worker = subprocess.run(
        [*command, "--app", "tests.journal_support", "--queues", queue],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert worker.returncode == 0, worker.stderr[-3000:]


def test_a_pool_of_rq_workers_journals_every_job(url: str) -> None:
    """``--concurrency 2``: each pool process forks the work horses and hands their rows on to
    the worker, then ends with os._exit in a burst; none of its rows may be left behind."""
    with PrivateRedis(persistent=False) as redis:
        rq_url = f"rq+{redis.url}"
        store = journal.configure(url)
        config.configure(url=rq_url)
        jobs = [Add.set(queue="pool").perform_later(number, 1) for number in range(30)]
        _drain_with_rq_worker(rq_url, url, "pool", "--concurrency", "2")
    store.flush()
    rows = [store.find(job.job_id) for job in jobs]
    assert [(row.state, row.result) if row else None for row in rows] == [
        (JobState.FINISHED, number + 1) for number in range(30)
    ]


def test_a_jobadapter_worker_process_journals_what_it_runs(url: str, tmp_path: Path) -> None:
    """RQ runs each job in a forked work horse that ends with os._exit: its rows must be written."""
    with PrivateRedis(persistent=False) as redis:
        rq_url = f"rq+{redis.url}"
        store = journal.configure(url)
        config.configure(url=rq_url)
        added = Add.set(queue="journal").perform_later(20, 22)
        exploded = Explodes.set(queue="journal").perform_later("Bob")
        flaky = FlakyOnce.set(queue="journal").perform_later("Cy")  # retried at once: the burst runs both
        vanished = Vanishes.set(queue="journal").perform_later()
        modules = LoadedDatabaseModules.set(queue="journal").perform_later()
        _drain_with_rq_worker(rq_url, url, "journal")
    store.flush()
    row = store.find(modules.job_id)
    # The worker forks per job: its rows went to a writer process, not through a database
    # client of its own (which every fork would copy).
    assert row is not None and (row.state, row.result) == (JobState.FINISHED, [])
    row = store.find(added.job_id)
    assert row is not None and (row.state, row.result, row.outcome) == (JobState.FINISHED, 42, "performed")
    assert row.worker is not None and row.worker != f"{os.uname().nodename}:{os.getpid()}"
    assert row.provider_job_id == added.provider_job_id
    row = store.find(exploded.job_id)
    assert row is not None and row.state is JobState.FAILED and row.error is not None
    assert row.error.message == "no Bob"
    row = store.find(flaky.job_id)
    assert row is not None and (row.state, row.executions) == (JobState.FINISHED, 2)
    assert [(run.number, run.outcome) for run in store.executions(flaky.job_id)] == [
        (1, "retried"),
        (2, "performed"),
    ], "each work horse writes its execution before os._exit"
    row = store.find(vanished.job_id)  # a discard_on rule's row, not left "running"
    assert row is not None and (row.state, row.outcome) == (JobState.FINISHED, "discarded")


def test_jobadapter_journal_migrate_creates_the_tables(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with scratch_postgresql() as name:
        assert main(["journal", "migrate", "--url", f"postgresql+psycopg://postgres@127.0.0.1/{name}"]) == 0
        with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={name}") as connection:
            tables = {
                row[0]
                for row in connection.execute("select tablename from pg_tables where schemaname = 'public'")
            }
            indexes = {
                row[0]
                for row in connection.execute(
                    "select indexname from pg_indexes where tablename = 'jobadapter_jobs'"
                )
            }
    assert tables == {f"jobadapter_{name}" for name in ("jobs", "executions", "tombstones", "paused")}
    assert {"jobadapter_jobs_state_queue_enqueued_id", "jobadapter_jobs_state_enqueued_id"} <= indexes
    assert "jobadapter_jobs_listing" not in indexes, "SQLite's wide index would refuse long arguments here"
    monkeypatch.delenv(journal.ENVIRONMENT_VARIABLE, raising=False)
    assert main(["journal", "migrate"]) == 2
    assert "--url URL, or set JOBADAPTER_JOURNAL" in capsys.readouterr().err


def test_a_journal_made_by_an_earlier_version_gets_the_missing_indexes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    first = Journal(url)
    first.ensure_schema()
    with first.engine.begin() as connection:
        connection.exec_driver_sql("DROP INDEX jobadapter_jobs_listing")
    first.close()
    again = Journal(url)
    try:
        again.ensure_schema()
        with again.engine.connect() as connection:
            plan = connection.exec_driver_sql(
                "EXPLAIN QUERY PLAN SELECT job_id FROM jobadapter_jobs WHERE state = 'finished' "
                "AND search LIKE '%x%' ORDER BY enqueued_at, job_id LIMIT 50"
            ).fetchall()
        assert "USING COVERING INDEX jobadapter_jobs_listing" in str(plan)
    finally:
        again.close()


class FlushesWhileRunning(Job):
    """Its "started" row is written while it runs, so its "finished" row opens the next batch."""

    def perform(self) -> None:
        active = journal.active()
        assert active is not None
        active.flush()


def test_a_batch_that_opens_with_a_finish_keeps_the_start_of_the_jobs_after_it(
    store: Journal, jobs: JobRecorder
) -> None:
    """The writer groups a batch by kind of write: the finish of a job that started in the batch
    before must not be applied ahead of the next job's start, which it would make look older."""
    long_running, short = FlushesWhileRunning.perform_later(), Add.perform_later(1, 2)
    jobs.perform_enqueued()
    store.flush()
    for job in (long_running, short):
        row = store.find(job.job_id)
        assert row is not None and row.state is JobState.FINISHED
        assert row.started_at is not None and row.finished_at is not None, job
