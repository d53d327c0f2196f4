from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from jobadapter import (
    Abort,
    Job,
    after_enqueue,
    after_perform,
    around_enqueue,
    around_perform,
    before_enqueue,
    before_perform,
    events,
)
from jobadapter.testing import JobRecorder

ORDER: list[str] = []


class BaseHooks(Job):
    @before_enqueue
    def base_before_enqueue(self) -> None:
        ORDER.append("base before_enqueue")

    @before_perform
    def base_before_perform(self) -> None:
        ORDER.append("base before_perform")

    @around_perform
    def base_around(self, proceed: Callable[[], Any]) -> Any:
        ORDER.append("base around: in")
        result = proceed()
        ORDER.append("base around: out")
        return result


class Hooked(BaseHooks):
    @before_enqueue
    def own_before_enqueue(self) -> None:
        ORDER.append("before_enqueue")

    @around_enqueue
    def around(self, proceed: Callable[[], Any]) -> Any:
        ORDER.append("around_enqueue: in")
        proceed()
        ORDER.append(f"around_enqueue: out, enqueued={self.successfully_enqueued}")

    @after_enqueue
    def after(self) -> None:
        ORDER.append("after_enqueue")

    @before_perform
    def own_before_perform(self) -> None:
        ORDER.append("before_perform")

    @around_perform
    def own_around(self, proceed: Callable[[], Any]) -> Any:
        ORDER.append("own around: in")
        result = proceed()
        ORDER.append("own around: out")
        return result

    @after_perform
    def own_after(self) -> None:
        ORDER.append("after_perform")

    def perform(self) -> None:
        ORDER.append("perform")


def test_hooks_run_base_first_in_definition_order(jobs: JobRecorder) -> None:
    ORDER.clear()
    Hooked.perform_later()
    assert ORDER == [
        "base before_enqueue",
        "before_enqueue",
        "around_enqueue: in",
        "around_enqueue: out, enqueued=True",
        "after_enqueue",
    ]
    ORDER.clear()
    jobs.perform_enqueued()
    assert ORDER == [
        "base before_perform",
        "before_perform",
        "base around: in",
        "own around: in",
        "perform",
        "own around: out",
        "base around: out",
        "after_perform",
    ]


def test_abort_in_before_perform_skips_perform_and_after(jobs: JobRecorder) -> None:
    ORDER.clear()

    class Refusing(Job):
        @before_perform
        def stop(self) -> None:
            raise Abort

        @after_perform
        def after(self) -> None:
            ORDER.append("after")

        def perform(self) -> None:
            ORDER.append("perform")

    Refusing.perform_later()
    jobs.perform_enqueued()
    assert ORDER == []
    assert jobs.performed[0].outcome == "aborted"


def test_overriding_a_hook_method_replaces_it_and_undecorated_removes_it(jobs: JobRecorder) -> None:
    ORDER.clear()

    class Child(BaseHooks):
        @before_perform
        def base_before_perform(self) -> None:
            ORDER.append("child replacement")

        def base_around(self, proceed: Callable[[], Any]) -> Any:  # no longer a hook
            raise AssertionError("must not run")

        def perform(self) -> None:
            ORDER.append("perform")

    Child.perform_later()
    ORDER.clear()
    jobs.perform_enqueued()
    assert ORDER == ["child replacement", "perform"]


def test_around_perform_that_does_not_proceed_skips_perform(jobs: JobRecorder) -> None:
    ORDER.clear()

    class Skipping(Job):
        @around_perform
        def skip(self, proceed: Callable[[], Any]) -> None:
            ORDER.append("skipped")

        def perform(self) -> None:
            ORDER.append("perform")

    Skipping.perform_later()
    jobs.perform_enqueued()
    assert ORDER == ["skipped"]


def test_perform_now_returns_performs_value_through_around_hooks() -> None:
    # Rails: activejob/test/cases/callbacks_test.rb ("perform around_callbacks"), where
    # perform_now's value is the wrapped block's: an around hook's own return value is ignored.
    class Wrapped(Job):
        @around_perform
        def outer(self, proceed: Callable[[], Any]) -> None:
            proceed()

        @around_perform
        def inner(self, proceed: Callable[[], Any]) -> str:
            proceed()
            return "the hook's own value"

        def perform(self) -> int:
            return 123

    assert Wrapped.perform_now() == 123


def test_an_error_in_before_enqueue_is_logged_and_published_then_raised(
    jobs: JobRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    # Rails: activejob/test/cases/logging_test.rb, test_enqueue_job_log_error_when_callback_chain_raises
    # ("Failed enqueuing ... to Adapter(queue): ErrorClass (message)").
    class Refusing(Job):
        @before_enqueue
        def refuse(self) -> None:
            raise ValueError("not today")

        def perform(self) -> None: ...

    seen: list[events.Event] = []
    unsubscribe = events.subscribe("enqueue", seen.append)
    try:
        with caplog.at_level(logging.INFO, logger="jobadapter"), pytest.raises(ValueError, match="not today"):
            Refusing.perform_later()
    finally:
        unsubscribe()
    assert [type(event.error) for event in seen] == [ValueError]
    assert f"Failed enqueuing {Refusing.__qualname__} to Test(default): ValueError (not today)" in caplog.text
    assert jobs.enqueued == []
