"""What the dashboard's pages say: a job's timeline, durations, notices, the throughput chart."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

from jobadapter.dashboard import pages
from jobadapter.journal.store import Execution
from jobadapter.operations import JobError, JobRecord, JobState

NOON = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)


def record(**fields: object) -> JobRecord:
    base: dict[str, object] = {"job_id": "j-1", "job_class": "shop.jobs.ChargeCard", "queue": "billing"}
    return JobRecord(**{**base, **fields})  # type: ignore[arg-type]


def test_the_timeline_of_a_job_that_failed_after_retries() -> None:
    failed = record(
        state=JobState.FAILED,
        executions=3,
        enqueued_at=NOON,
        started_at=NOON + timedelta(seconds=40),
        finished_at=NOON + timedelta(seconds=41),
        worker="host:42",
        error=JobError("CardDeclined", "card declined", "Traceback …"),
    )
    lines = [(moment.what, moment.kind) for moment in pages.timeline(failed)]
    assert lines == [
        ("Enqueued", "info"),
        ("2 earlier execution(s)", "bad"),
        ("Execution 3 started", "info"),
        ("Failed", "bad"),
    ]
    assert pages.timeline(failed)[-1].detail == "CardDeclined: card declined"


def test_the_timeline_from_the_journals_history() -> None:
    boom = JobError("Flaky", "try again", "Traceback …")
    runs = [
        Execution(1, NOON + timedelta(seconds=1), NOON + timedelta(seconds=2), "retried", "w:1", boom),
        Execution(2, NOON + timedelta(seconds=9), NOON + timedelta(seconds=10), "failed", "w:2", boom),
    ]
    failed = record(
        state=JobState.FAILED, executions=2, enqueued_at=NOON, scheduled_at=NOON + timedelta(seconds=5)
    )
    failed = dataclasses.replace(failed, outcome="failed", error=boom)
    said = [(moment.what, moment.kind) for moment in pages.timeline(failed, runs)]
    assert said == [
        ("Enqueued", "info"),
        ("Execution 1 started", "info"),
        ("Failed; a retry is scheduled", "bad"),
        ("Due", "wait"),
        ("Execution 2 started", "info"),
        ("Failed", "bad"),
    ]
    discarded = dataclasses.replace(failed, state=JobState.FINISHED, outcome="discarded by an operator")
    assert pages.timeline(discarded, runs)[-1].what == "discarded by an operator", "ended another way"


def test_the_timeline_of_waiting_and_finished_jobs() -> None:
    due = record(state=JobState.SCHEDULED, enqueued_at=NOON, scheduled_at=NOON + timedelta(hours=1))
    assert [m.what for m in pages.timeline(due)] == ["Enqueued", "Due", "Waiting for its time"]
    retrying = record(state=JobState.PENDING, enqueued_at=NOON, executions=1, outcome="retried")
    said = [m.what for m in pages.timeline(retrying)]
    assert said[-2:] == ["1 earlier execution(s)", "Waiting to be retried"]
    done = record(
        state=JobState.FINISHED,
        executions=1,
        enqueued_at=NOON,
        started_at=NOON,
        finished_at=NOON,
        outcome="rescued",
    )
    assert [(m.what, m.kind) for m in pages.timeline(done)][-1] == ("Failed; the error was rescued", "good")


def test_durations_and_distances_in_time() -> None:
    assert pages.seconds(0.4213) == "0.42 s"
    assert pages.seconds(75) == "1 min"
    assert pages.seconds(2 * 3600 + 300) == "2 h 5 min"
    assert pages.seconds(5 * 86400) == "5 d"
    assert pages.ago(NOON - timedelta(minutes=3), NOON) == "3 min ago"
    assert pages.ago(NOON + timedelta(minutes=58), NOON) == "in 58 min"
    assert pages.when(NOON) == "2026-11-29 12:00:00 UTC" and pages.when(None) == "—"


def test_notices_are_fixed_sentences() -> None:
    assert pages.notice({"notice": "retry-all", "count": "3"}) == "Retried 3 job(s)."
    assert pages.notice({"notice": "retry-all", "count": "<b>"}) == "Retried ? job(s)."
    assert pages.notice({"notice": "anything you like"}) is None


def test_arguments_in_one_line_and_class_names() -> None:
    call = record(state=JobState.PENDING, arguments=["alice@example.com", 1200], keyword_arguments={"cc": 0})
    assert pages.arguments(call) == '"alice@example.com", 1200, cc=0'
    assert pages.arguments(record(state=JobState.PENDING, arguments=["x" * 500]), limit=20).endswith("…")
    unreadable = record(state=JobState.FAILED, job_class="?", payload="not json")
    assert pages.arguments(unreadable) == "unreadable payload: not json"
    assert (pages.class_name("shop.jobs.ChargeCard"), pages.module_name("shop.jobs.ChargeCard")) == (
        "ChargeCard",
        "shop.jobs",
    )


def test_the_chart_scales_to_the_busiest_slice() -> None:
    bars = pages.bar_chart([0, 5, 10])
    assert [bar.height for bar in bars] == [1, 14, 28]
    assert bars[0].label == "0 ended 15–10 min ago" and bars[2].label == "10 ended 5–0 min ago"
