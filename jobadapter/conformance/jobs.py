"""The suite's own jobs: the ``--app`` module of every conformance worker.

Each job reports what happened to it through the probe (``probe.record``),
keyed by a label unique to the scenario run, so scenarios never see each
other's rows. Queue names come from the environment the suite sets, so two
runs, or two adapters on one broker, never share a queue.
"""

from __future__ import annotations

import asyncio
import enum
import os
import time
import uuid
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from datetime import time as clock
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from jobadapter import (
    DeserializationError,
    Job,
    after_discard,
    after_enqueue,
    after_perform,
    around_enqueue,
    around_perform,
    before_enqueue,
    before_perform,
    discard_on,
    locators,
    rescue_from,
    retry_on,
    serializers,
)
from jobadapter.conformance.probe import record, recorded

RETRY_QUEUE_VARIABLE = "JOBADAPTER_CONFORMANCE_RETRY_QUEUE"
RETRY_QUEUE = os.environ.get(RETRY_QUEUE_VARIABLE, "jobadapter-conformance-retries")
"""Where ``RetryElsewhereJob`` retries; each worker gets its backend's own name."""
DECLARED_QUEUE_VARIABLE = "JOBADAPTER_CONFORMANCE_DECLARED_QUEUE"
DECLARED_QUEUE = os.environ.get(DECLARED_QUEUE_VARIABLE, "jobadapter-conformance-declared")
"""``DeclaredQueueJob``'s ``queue_as``; each worker gets its backend's own name."""


class Flaky(Exception):
    """Raised by the retry jobs until their label's failure budget is spent."""


class Doomed(Exception):
    """Raised by jobs that must fail for good."""


class Unwanted(Exception):
    """Raised by the discard job."""


class Handled(Exception):
    """Raised by the rescue_from job."""


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Money:
    """A custom type with a registered serializer."""

    def __init__(self, cents: int, currency: str) -> None:
        self.cents, self.currency = cents, currency

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Money) and (self.cents, self.currency) == (other.cents, other.currency)

    def __hash__(self) -> int:
        return hash((self.cents, self.currency))


serializers.register(
    Money, dump=lambda money: [money.cents, money.currency], load=lambda data: Money(data[0], data[1])
)


class Record:
    """A stand-in model: ids starting with ``missing`` are records that were deleted."""

    def __init__(self, pk: str) -> None:
        self.pk = pk

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Record) and other.pk == self.pk

    def __hash__(self) -> int:
        return hash(self.pk)


locators.register(
    Record, locate=lambda pk: None if pk.startswith("missing") else Record(pk), key=lambda record: record.pk
)


def argument_samples() -> list[Any]:
    """One value of every supported argument type, nested where it matters."""
    paris = ZoneInfo("Europe/Paris")
    return [
        None,
        True,
        -7,
        2**70,
        3.25,
        float("inf"),
        "text é ✓",
        [1, "two", [3.0]],
        (1, ("nested", "tuple")),
        {"plain": 1, "tuple": (1, 2), "_aj_serialized": "not reserved", "dict": {"x": None}},
        {1: "int key", (2, 3): "tuple key", None: "none key"},
        {1, 2, 3},
        frozenset({"a", "b"}),
        datetime(2026, 11, 28, 20, 0, 0, 123456),
        datetime(2026, 11, 28, 20, 0, 0, 654321, tzinfo=timezone.utc),
        datetime(2026, 3, 29, 2, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        datetime(2026, 7, 1, 9, 15, tzinfo=paris),
        date(2026, 2, 28),
        clock(23, 59, 58, 999),
        timedelta(days=2, seconds=5, microseconds=7),
        Decimal("1.50"),
        Decimal("-0.000"),
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        Colour.BLUE,
        Level.HIGH,
        b"\x00\xffbytes",
        Record("42"),
        Money(1999, "EUR"),
    ]


def differences(expected: Any, actual: Any, where: str = "value") -> list[str]:
    """Where ``actual`` differs from ``expected`` in value or exact type (time zones included)."""
    if type(expected) is not type(actual):
        return [f"{where}: {type(actual).__name__} instead of {type(expected).__name__}"]
    if isinstance(expected, (list, tuple)):
        if len(expected) != len(actual):
            return [f"{where}: length {len(actual)} instead of {len(expected)}"]
        return [
            d
            for i, pair in enumerate(zip(expected, actual, strict=True))
            for d in differences(*pair, f"{where}[{i}]")
        ]
    if isinstance(expected, dict):
        if list(expected) != list(actual):
            return [f"{where}: keys {list(actual)!r} instead of {list(expected)!r}"]
        return [d for key in expected for d in differences(expected[key], actual[key], f"{where}[{key!r}]")]
    if isinstance(expected, (datetime, clock)) and (
        repr(expected.tzinfo) != repr(actual.tzinfo) or expected.isoformat() != actual.isoformat()
    ):
        return [f"{where}: {actual!r} instead of {expected!r}"]
    if isinstance(expected, Decimal) and expected.as_tuple() != actual.as_tuple():
        return [f"{where}: {actual!r} instead of {expected!r}"]
    if expected != actual:
        return [f"{where}: {actual!r} instead of {expected!r}"]
    return []


class ConformanceJob(Job):
    """Base of the suite's jobs (a shared base, as applications have one)."""

    queue_as = "jobadapter-conformance"


class PingJob(ConformanceJob):
    """Proves a worker consumes a queue."""

    def perform(self, label: str) -> None:
        record(label, "performed", self)


class RecordJob(ConformanceJob):
    """Reports its arguments (JSON-simple ones) and when it ran."""

    def perform(self, label: str, *args: Any, **kwargs: Any) -> None:
        record(label, "performed", self, {"args": list(args), "kwargs": kwargs})


class RetriedByHandJob(ConformanceJob):
    """Its ``rescue_from`` handler calls ``retry_job`` (Rails' pattern) on the first run."""

    @rescue_from(Flaky)
    def again(self, error: Flaky) -> None:
        self.retry_job(wait=0.2)

    def perform(self, label: str) -> None:
        record(label, "performed", self)
        if self.executions == 1:
            raise Flaky(f"{label}: once more")


class ProviderIdJob(ConformanceJob):
    """Reports the backend's id for it, as ``perform`` reads it."""

    def perform(self, label: str) -> None:
        record(label, "performed", self, {"provider_job_id": self.provider_job_id})


class DeclaredQueueJob(RecordJob):
    """Declares its queue (a worker started without ``--queues`` must consume it)."""

    queue_as = DECLARED_QUEUE


class ArgumentsJob(ConformanceJob):
    """Compares what it received with `argument_samples`, type for type."""

    def perform(self, label: str, *values: Any, **keyword_values: Any) -> None:
        samples = argument_samples()
        found = differences(samples, list(values), "arguments")
        found += differences({"sample": samples[-3]}, keyword_values, "keyword_arguments")
        record(label, "performed", self, {"differences": found})


class AsyncJob(ConformanceJob):
    async def perform(self, label: str, value: int) -> None:
        await asyncio.sleep(0.01)
        record(label, "performed", self, {"value": value})


def _fail_first(job: Job, label: str, failures: int) -> None:
    record(label, "performed", job)
    if job.executions <= failures:
        raise Flaky(f"{label} failure {job.executions}")


@retry_on(Flaky, wait=0.5, attempts=3, jitter=0)
class FixedRetryJob(ConformanceJob):
    def perform(self, label: str, failures: int) -> None:
        _fail_first(self, label, failures)


@retry_on(Flaky, wait=lambda executions: 0.3 * executions, attempts=3)
class CallableRetryJob(ConformanceJob):
    def perform(self, label: str, failures: int) -> None:
        _fail_first(self, label, failures)


@retry_on(Flaky, wait="polynomially_longer", attempts=2, jitter=0)
class PolynomialRetryJob(ConformanceJob):
    def perform(self, label: str, failures: int) -> None:
        _fail_first(self, label, failures)


@retry_on(Flaky, wait=0.2, attempts=2, queue=RETRY_QUEUE, priority=1)
class RetryElsewhereJob(ConformanceJob):
    def perform(self, label: str, failures: int) -> None:
        _fail_first(self, label, failures)


def _exhausted(job: Job, error: BaseException) -> None:
    record(job.arguments[0], "on_exhausted", job, {"error": str(error)})


@retry_on(Doomed, wait=0.1, attempts=2, on_exhausted=_exhausted)
class ExhaustedJob(ConformanceJob):
    def perform(self, label: str) -> None:
        record(label, "performed", self)
        raise Doomed(f"{label} always fails")

    @after_discard
    def report_discard(self, error: BaseException) -> None:
        record(self.arguments[0], "after_discard", self, {"error": str(error)})


class FailingJob(ConformanceJob):
    """Fails unhandled: the backend must keep it in its failed store."""

    def perform(self, label: str) -> None:
        record(label, "performed", self)
        raise Doomed(f"conformance failure {label}")


@discard_on(Unwanted, on_discard=lambda job, error: record(job.arguments[0], "on_discard", job))
class DiscardJob(ConformanceJob):
    def perform(self, label: str) -> None:
        record(label, "performed", self)
        raise Unwanted(label)

    @after_discard
    def report_discard(self, error: BaseException) -> None:
        record(self.arguments[0], "after_discard", self, {"error": str(error)})


class RescueJob(ConformanceJob):
    def perform(self, label: str) -> None:
        record(label, "performed", self)
        raise Handled(label)

    @rescue_from(Handled)
    def handle(self, error: Exception) -> None:
        record(self.arguments[0], "rescued", self, {"error": str(error)})

    @after_discard
    def report_discard(self, error: BaseException) -> None:
        record(self.arguments[0], "after_discard", self)


@discard_on(
    DeserializationError,
    on_discard=lambda job, error: record(job.job_id, "discarded", job, {"error": type(error).__name__}),
)
class MissingRecordJob(ConformanceJob):
    """Gets a reference to a deleted record: loading it raises RecordNotFound."""

    def perform(self, record_reference: Record) -> None:
        record(self.job_id, "performed", self)


def _hook(name: str) -> Callable[[Any], None]:
    def note(job: Any) -> None:
        record(job.arguments[0], "hook", job, {"hook": name})

    return note


class HooksJob(ConformanceJob):
    @before_enqueue
    def before_enqueue_hook(self) -> None:
        _hook("before_enqueue")(self)

    @around_enqueue
    def around_enqueue_hook(self, proceed: Callable[[], Any]) -> None:
        _hook("around_enqueue:in")(self)
        proceed()
        _hook("around_enqueue:out")(self)

    @after_enqueue
    def after_enqueue_hook(self) -> None:
        _hook("after_enqueue")(self)

    @before_perform
    def before_perform_hook(self) -> None:
        _hook("before_perform")(self)

    @around_perform
    def around_perform_hook(self, proceed: Callable[[], Any]) -> None:
        _hook("around_perform:in")(self)
        proceed()
        _hook("around_perform:out")(self)

    @after_perform
    def after_perform_hook(self) -> None:
        _hook("after_perform")(self)

    def perform(self, label: str) -> None:
        _hook("perform")(self)


class SlowJob(ConformanceJob):
    """Runs for ``seconds``: the kill and shutdown scenarios interrupt it."""

    def perform(self, label: str, seconds: float) -> None:
        record(label, "started", self)
        time.sleep(seconds)
        record(label, "finished", self)


class UntilAllowedJob(ConformanceJob):
    """Fails until the suite records ``allowed`` for its label: a failed job that a retry by
    an operator then runs to the end."""

    def perform(self, label: str) -> None:
        record(label, "performed", self)
        if not recorded(label, "allowed"):
            raise Doomed(f"{label} is not allowed yet")


class HeldJob(ConformanceJob):
    """Runs until the suite records ``release`` for its label (at most 30 s): a job that
    stays in the running state while a scenario looks at it."""

    def perform(self, label: str) -> None:
        record(label, "started", self)
        deadline = time.monotonic() + 30
        while not recorded(label, "release") and time.monotonic() < deadline:
            time.sleep(0.02)
        record(label, "performed", self)


class SumJob(ConformanceJob):
    """Returns a value for ``job.result()``: kept because ``store_result`` is set."""

    store_result = True

    def perform(self, label: str, left: int, right: int) -> dict[str, Any]:
        record(label, "performed", self)
        return {"label": label, "sum": left + right, "at": date(2026, 11, 29)}
