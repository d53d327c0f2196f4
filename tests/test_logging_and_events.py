from __future__ import annotations

import logging
import re

import pytest

from jobadapter import Job, discard_on, events, retry_on
from jobadapter.testing import JobRecorder


class Slow(Exception):
    pass


class Gone(Exception):
    pass


@retry_on(Slow, wait=2, attempts=2, jitter=0)
@discard_on(Gone)
class Logged(Job):
    def perform(self, what: str, secret: str = "") -> None:
        if what == "slow":
            raise Slow("too slow")
        if what == "gone":
            raise Gone("no row")


class Quiet(Job):
    log_arguments = False

    def perform(self, password: str) -> None: ...


def test_activejob_style_lines(jobs: JobRecorder, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="jobadapter"):
        Logged.perform_later("ok", secret="s")
        Logged.perform_later("slow")
        Logged.perform_later("gone")
        with pytest.raises(Slow):
            jobs.perform_enqueued()
    text = caplog.text
    assert re.search(
        r"Enqueued Logged \(Job ID: [0-9a-f-]{36}\) to Test\(default\) with arguments: 'ok', secret='s'", text
    )
    assert re.search(
        r"Performing Logged \(Job ID: .*\) from Test\(default\) enqueued at \d{4}-.*Z with arguments: 'ok'",
        text,
    )
    assert re.search(r"Performed Logged \(Job ID: .*\) from Test\(default\) in \d+\.\d\dms", text)
    assert re.search(
        r"Retrying Logged \(Job ID: .*\) after 1 attempts in 2 seconds, due to a Slow \(too slow\)\.", text
    )
    assert re.search(
        r"Stopped retrying Logged \(Job ID: .*\) due to a Slow \(too slow\), "
        r"which reoccurred on 2 attempts\.",
        text,
    )
    assert re.search(r"Discarded Logged \(Job ID: .*\) due to a Gone \(no row\)\.", text)
    assert re.search(r"Error performing Logged .* Slow \(too slow\)", text)


def test_log_arguments_false_keeps_arguments_out(jobs: JobRecorder, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="jobadapter"):
        Quiet.perform_later("hunter2")
        jobs.perform_enqueued()
    assert "Enqueued Quiet" in caplog.text and "Performed Quiet" in caplog.text
    assert "hunter2" not in caplog.text


def test_events_reach_subscribers_until_they_unsubscribe(jobs: JobRecorder) -> None:
    seen: list[tuple[str, str]] = []
    names = ["enqueue", "enqueue_at", "enqueue_retry", "perform_start", "perform", "retry_stopped", "discard"]
    unsubscribers = [
        events.subscribe(
            name, lambda event: seen.append((event.name, event.job.arguments[0] if event.job else ""))
        )
        for name in names
    ]
    Logged.perform_later("gone")
    Logged.perform_later("slow")
    with pytest.raises(Slow):
        jobs.perform_enqueued()
    for unsubscribe in unsubscribers:
        unsubscribe()
    Logged.perform_later("ok")
    assert seen == [
        ("enqueue", "gone"),
        ("enqueue", "slow"),
        ("perform_start", "gone"),
        ("perform", "gone"),
        ("discard", "gone"),
        ("perform_start", "slow"),
        ("perform", "slow"),
        ("enqueue_at", "slow"),
        ("enqueue_retry", "slow"),
        ("perform_start", "slow"),
        ("perform", "slow"),
        ("retry_stopped", "slow"),
    ]


def test_routine_events_are_not_built_while_every_subscriber_is_silenced(
    jobs: JobRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="jobadapter")  # silences the log subscriber too
    quiet = True
    seen: list[tuple[str, bool]] = []
    unsubscribers = [
        events.subscribe(
            name, lambda event: seen.append((event.name, event.error is None)), silenced=lambda: quiet
        )
        for name in ("enqueue", "perform_start", "perform", "discard")
    ]
    Logged.perform_later("ok")
    Logged.perform_later("gone")
    jobs.perform_enqueued()
    assert seen == [("perform", False), ("discard", False)]  # failures only
    quiet = False
    Logged.perform_later("ok")
    jobs.perform_enqueued()
    assert seen[2:] == [("enqueue", True), ("perform_start", True), ("perform", True)]
    for unsubscribe in unsubscribers:
        unsubscribe()


def test_the_log_subscriber_is_silenced_above_info(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="jobadapter"):
        assert not events.listening("enqueue") and not events.listening("perform")
        assert events.has_subscribers("discard")  # failure lines are ERROR: always delivered
    with caplog.at_level(logging.INFO, logger="jobadapter"):
        assert events.listening("enqueue") and events.listening("perform")


def test_enqueue_all_event_and_unknown_event_name(jobs: JobRecorder) -> None:
    from jobadapter import perform_all_later

    batches: list[int] = []
    unsubscribe = events.subscribe("enqueue_all", lambda event: batches.append(len(event.jobs)))
    perform_all_later([Logged("a"), Logged("b")])
    unsubscribe()
    assert batches == [2]
    with pytest.raises(ValueError, match="unknown event 'enqueued'"):
        events.subscribe("enqueued", print)


def test_a_failing_subscriber_never_breaks_the_job(jobs: JobRecorder) -> None:
    def broken(event: events.Event) -> None:
        raise RuntimeError("subscriber bug")

    unsubscribe = events.subscribe("enqueue", broken)
    try:
        assert Logged.perform_later("ok").successfully_enqueued
    finally:
        unsubscribe()
