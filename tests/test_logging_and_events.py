from __future__ import annotations

import logging
import re

import pytest

from jobadapter import DeserializationError, Job, discard_on, events, rescue_from, retry_on
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
    # Handled errors are not failures: only the exhausted retry (no on_exhausted) is an error line.
    assert len(re.findall(r"Error performing Logged .* Slow \(too slow\)", text)) == 1
    assert "Error performing" not in text.replace(re.findall(r"Error performing Logged .*", text)[0], "")


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
        ("discard", "gone"),
        ("perform", "gone"),
        ("perform_start", "slow"),
        ("enqueue_at", "slow"),
        ("enqueue_retry", "slow"),
        ("perform", "slow"),
        ("perform_start", "slow"),
        ("retry_stopped", "slow"),
        ("perform", "slow"),
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
    assert seen == [("discard", False)]  # failures only: a handled error's perform is routine
    quiet = False
    Logged.perform_later("ok")
    jobs.perform_enqueued()
    assert seen[1:] == [("enqueue", True), ("perform_start", True), ("perform", True)]
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


class HairTooGood(Exception):
    pass


class BadHair(Exception):
    pass


class Rescued(Job):
    """Rails' activejob/test/jobs/rescue_job.rb: one error its rescue_from handles, one it does not."""

    def perform(self, person: str) -> None:
        if person == "david":
            raise HairTooGood("Hair too good")
        if person == "other":
            raise BadHair("Bad hair")

    @rescue_from(HairTooGood)
    def _handle(self, error: HairTooGood) -> None: ...


def test_no_error_line_for_a_handled_error_and_one_for_an_unhandled_one(
    jobs: JobRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    """Rails' activejob/test/cases/logging_test.rb, ``test_job_no_error_logging_on_rescuable_job``
    and ``test_job_error_logging``; the outcome each perform event carries is ours."""
    outcomes: list[tuple[str, str | None, str | None]] = []
    unsubscribe = events.subscribe(
        "perform",
        lambda event: outcomes.append(
            (event.job.arguments[0] if event.job else "", event.outcome, type(event.error).__name__)
        ),
    )
    try:
        with caplog.at_level(logging.INFO, logger="jobadapter"):
            Rescued.perform_later("david")
            Logged.perform_later("gone")
            jobs.perform_enqueued()
            text = caplog.text
            assert re.search(r"Performing Rescued \(Job ID: .*?\) from .*? with arguments:.*david", text)
            assert re.search(r"Performed Rescued \(Job ID: .*?\) from Test\(default\) in .*ms", text)
            assert re.search(r"Performed Logged \(Job ID: .*?\) from Test\(default\) in .*ms", text)
            assert "Error performing" not in text
            Rescued.perform_later("other")
            with pytest.raises(BadHair):
                jobs.perform_enqueued()
        assert re.search(r"Performing Rescued \(Job ID: .*?\) from .*? with arguments:.*other", caplog.text)
        assert re.search(
            r"Error performing Rescued \(Job ID: .*?\) from .*? in .*ms: BadHair \(Bad hair\)", caplog.text
        )
    finally:
        unsubscribe()
    assert outcomes == [
        ("david", "rescued", "NoneType"),
        ("gone", "discarded", "NoneType"),
        ("other", "failed", "BadHair"),
    ]


class Alpha(Job):
    def perform(self) -> None: ...


class Beta(Job):
    def perform(self) -> None: ...


def test_the_bulk_enqueue_line_counts_classes_most_first_and_says_job_for_one(
    jobs: JobRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    # Rails: activejob/test/cases/logging_test.rb, test_enqueue_all_job_logging (classes by
    # count, most first) and the singular "Enqueued 1 job".
    from jobadapter import perform_all_later

    with caplog.at_level(logging.INFO, logger="jobadapter"):
        perform_all_later([Alpha(), Beta(), Beta()])
        perform_all_later([Alpha()])
    lines = [record.getMessage() for record in caplog.records if record.getMessage().startswith("Enqueued ")]
    assert lines == ["Enqueued 3 jobs to Test (2 Beta, 1 Alpha)", "Enqueued 1 job to Test (1 Alpha)"]


class Person:
    def __init__(self, pk: int) -> None:
        self.pk = pk


class Greets(Job):
    def perform(self, person: Person, others: list[Person], *, note: str = "") -> None: ...


def test_model_arguments_are_logged_by_global_id(jobs: JobRecorder, caplog: pytest.LogCaptureFixture) -> None:
    # Rails: activejob/test/cases/logging_test.rb, test_globalid_parameter_logging (the log shows
    # the record's global id, not its inspect).
    from jobadapter import locators

    locators.register(Person, locate=lambda pk: Person(int(pk)), key=lambda person: person.pk)
    try:
        with caplog.at_level(logging.INFO, logger="jobadapter"):
            Greets.perform_later(Person(7), [Person(8)], note="hi")
    finally:
        locators.unregister(Person)
    gid = f"gid://jobadapter/{__name__}.Person"
    assert f"with arguments: {gid}/7, [{gid}/8], note='hi'" in caplog.text


def test_the_opening_events_come_before_the_envelope_and_before_the_arguments_load(
    jobs: JobRecorder,
) -> None:
    """``enqueue_start`` may still set optional envelope keys; ``execution_start`` opens every
    execution, also the one whose arguments do not load (which has no ``perform_start``)."""
    from jobadapter import perform_all_later

    seen: list[tuple[str, object]] = []

    def tag(event: events.Event) -> None:
        assert event.job is not None
        seen.append((event.name, event.in_batch))
        event.job.envelope_extras = {"tagged": event.job.arguments[0]}

    names = ["enqueue", "enqueue_all_start", "enqueue_all", "execution_start", "perform"]
    unsubscribers = [events.subscribe("enqueue_start", tag)] + [
        events.subscribe(name, lambda event: seen.append((event.name, len(event.jobs)))) for name in names
    ]
    Logged.perform_later("ok")
    perform_all_later([Logged("a"), Logged("b")])
    assert [envelope.extras for envelope in jobs.adapter.pending] == [
        {"tagged": "ok"},
        {"tagged": "a"},
        {"tagged": "b"},
    ]
    jobs.adapter.clear()
    unloadable = Logged("x").to_envelope().evolve(arguments=[{"custom": ["nowhere.Type", 1]}])
    with pytest.raises(DeserializationError):
        jobs.adapter._perform(unloadable.encode(), "p-1")
    for unsubscribe in unsubscribers:
        unsubscribe()
    assert seen == [
        ("enqueue_start", False),
        ("enqueue", 0),
        ("enqueue_start", True),
        ("enqueue_start", True),
        ("enqueue_all_start", 2),
        ("enqueue_all", 2),
        ("execution_start", 0),
        ("perform", 0),
    ]


def test_every_line_about_a_job_carries_its_fields_as_record_attributes(
    jobs: JobRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="jobadapter"):
        job = Logged.perform_later("slow")
        with pytest.raises(Slow):
            jobs.perform_enqueued()
    lines = [record for record in caplog.records if record.name == "jobadapter"]
    assert [record.getMessage().split(" ")[0] for record in lines] == [
        "Enqueued",
        "Performing",
        "Enqueued",
        "Retrying",
        "Performed",
        "Performing",
        "Stopped",
        "Error",
    ]
    for record in lines:
        assert record.job_id == job.job_id
        assert record.job_class == Logged.job_name
        assert record.queue == "default"
    assert [record.executions for record in lines] == [0, 1, 1, 1, 1, 2, 2, 2]
