"""The proof that a move loses nothing, for one source and target (tests and ``nox -s migrate``).

`prove` fills one queue of the source with pending jobs, scheduled jobs
(staggered over a few seconds, and one due in days) and failed jobs, moves them
with ``jobadapter migrate``, starts a real worker on the target and checks,
job_id by job_id: every pending job performed once; every scheduled job
performed at its time, not early, and the far one still scheduled; every
failed job in the target's failed store with its error, and performed once
retried. It counts what was lost and what ran twice. The jobs are the
conformance suite's ``RecordJob``, which reports to the probe.

``python -m jobadapter.migrate.proof --results DIR SOURCE TARGET`` runs one
pair and writes ``DIR/<source>--<target>.json``; ``jobadapter matrix`` turns
those files into the "Migration" table of ``compat_matrix.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from jobadapter import config, journal
from jobadapter.adapters.base import Adapter, AdapterURL, Capability, EnqueueRequest
from jobadapter.conformance.harness import Backend
from jobadapter.conformance.jobs import RecordJob
from jobadapter.conformance.probe import Probe
from jobadapter.envelope import Envelope
from jobadapter.migrate import MigrationRefused, Plan, check_adapters, survey
from jobadapter.operations import JobError, JobFilter, JobNotFound, JobState, OperationUnsupported

EARLY = 0.05
"""Seconds a scheduled job may run before its time: clock reads in two processes."""
SEEDED_ERROR = JobError("Doomed", "failed on the old backend", "Traceback (most recent call last): …")
QUEUE_PREFIX = "jac-migrate-"
NO_ERROR = JobError("?", "")


@dataclass(frozen=True)
class Sizes:
    pending: int = 200
    scheduled: int = 50
    """All but one due `lead` to `lead + spread` seconds after seeding; the last in days."""
    failed: int = 20
    lead: float = 4.0
    spread: float = 2.0


@dataclass
class Outcome:
    """What one move did, by job_id."""

    source: str
    target: str
    exit_code: int = -1
    moved: int = 0
    seconds: float = 0.0
    left_on_source: int = 0
    pending_performed: int = 0
    scheduled_performed: int = 0
    scheduled_early: int = 0
    far_still_scheduled: bool = False
    failed_in_store: int = 0
    failed_retried: int = 0
    lost: int = 0
    duplicates: int = 0
    problems: list[str] = field(default_factory=list)
    unsupported: str | None = None
    """Why the pair cannot be moved at all (an adapter lacks the capability)."""

    @property
    def passed(self) -> bool:
        return not self.problems and self.unsupported is None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


@dataclass
class _Seeded:
    pending: list[str]
    scheduled: dict[str, datetime]
    far: str
    failed: list[str]
    priorities: dict[str, int | None]
    """Every job's priority (one pending job in five has one)."""


def label_of(url: str) -> str:
    """``celery+amqp://…`` → ``celery/amqp``."""
    parsed = AdapterURL.parse(url)
    return f"{parsed.adapter}/{parsed.transport}" if parsed.transport else parsed.adapter


def prove(
    source_url: str, target_url: str, folder: Path, sizes: Sizes = Sizes(), timeout: float = 60.0
) -> Outcome:
    """Move a seeded queue from ``source_url`` to ``target_url`` and check every job (see the
    module docstring). Uses ``folder`` for the probe, the ledger, the journal and worker logs."""
    outcome = Outcome(label_of(source_url), label_of(target_url))
    queue = f"{QUEUE_PREFIX}{uuid.uuid4().hex[:10]}"
    # Two backends on one RabbitMQ would share a queue of one name: the target gets its own.
    moved_to = f"{queue}-new" if "+amqp" in source_url and "+amqp" in target_url else queue
    amqp_target = "+amqp" in target_url
    environment = {}
    if amqp_target:  # RabbitMQ lists scheduled jobs only through the journal
        environment[journal.ENVIRONMENT_VARIABLE] = f"sqlite:///{folder / 'journal.db'}"
    with _journal(environment), contextlib.ExitStack() as cleanup:
        probe = Probe(folder / "probe.db")
        cleanup.callback(probe.close)
        source = config.build_adapter(source_url)
        cleanup.callback(source.close)
        cleanup.callback(_purge, source, queue)
        target = Backend(target_url, probe, folder, timeout, environment=environment)
        cleanup.callback(target.adapter.close)
        cleanup.callback(_purge, target.adapter, moved_to)
        try:
            check_adapters(source, target.adapter)
        except MigrationRefused as refused:
            outcome.unsupported = str(refused)
            return outcome
        labels = {state: f"{queue}-{state}" for state in ("pending", "scheduled", "failed")}
        seeded = _seed(source, queue, labels, sizes)
        outcome.exit_code, outcome.seconds, output = _migrate(source_url, target_url, queue, moved_to, folder)
        outcome.moved = _moved(output)
        if outcome.exit_code != 0:
            outcome.problems.append(f"migrate exited {outcome.exit_code}: {output.strip()[-400:]}")
        left = survey(source, Plan(queues=(queue,)))  # a dry run sees RabbitMQ's queues too
        outcome.left_on_source = left.moved + left.skipped
        if outcome.left_on_source:
            outcome.problems.append(f"{outcome.left_on_source} job(s) still on the source")
        worker = target.start_worker([moved_to], concurrency=4)
        cleanup.callback(_stop, worker)
        _check_failed_store(target.adapter, moved_to, seeded, outcome)
        _check_runs(probe, labels, seeded, outcome, timeout)
        _check_far(target.adapter, probe, labels, seeded, outcome)
    return outcome


@contextlib.contextmanager
def _journal(environment: dict[str, str]) -> Iterator[None]:
    """The journal of this process, for a target that needs one (and its workers get the URL)."""
    url = environment.get(journal.ENVIRONMENT_VARIABLE)
    if url is None:
        yield
        return
    previous = os.environ.get(journal.ENVIRONMENT_VARIABLE)
    os.environ[journal.ENVIRONMENT_VARIABLE] = url
    journal.configure(url)
    try:
        yield
    finally:
        journal.close()
        if previous is None:
            os.environ.pop(journal.ENVIRONMENT_VARIABLE, None)
        else:
            os.environ[journal.ENVIRONMENT_VARIABLE] = previous


def _seed(source: Adapter, queue: str, labels: dict[str, str], sizes: Sizes) -> _Seeded:
    now = datetime.now(timezone.utc)

    def envelope(
        state: str, at: datetime | None = None, failures: int = 0, priority: int | None = None
    ) -> Envelope:
        counts = {"[Doomed]": failures} if failures else {}
        job_id = str(uuid.uuid4())
        return Envelope(
            RecordJob.job_name, job_id, queue, priority, [labels[state]], {}, failures, counts, now, at
        )

    pending = [envelope("pending", priority=3 if n % 5 == 0 else None) for n in range(sizes.pending)]
    steps = max(1, sizes.scheduled - 2)
    times = [
        now + timedelta(seconds=sizes.lead + sizes.spread * i / steps) for i in range(sizes.scheduled - 1)
    ]
    scheduled = [envelope("scheduled", at) for at in times]
    far = envelope("scheduled", now + timedelta(days=3))
    failed = [envelope("failed", failures=1) for _ in range(sizes.failed)]
    source.enqueue_all([EnqueueRequest(e) for e in [*pending, *scheduled, far]])
    source.enqueue_failed([(e, SEEDED_ERROR) for e in failed])
    return _Seeded(
        pending=[e.job_id for e in pending],
        scheduled={e.job_id: at for e, at in zip(scheduled, times, strict=True)},
        far=far.job_id,
        failed=[e.job_id for e in failed],
        priorities={e.job_id: e.priority for e in [*pending, *scheduled, far, *failed]},
    )


def _migrate(
    source_url: str, target_url: str, queue: str, moved_to: str, folder: Path
) -> tuple[int, float, str]:
    """``jobadapter migrate`` in this process: its exit code, seconds and output."""
    from jobadapter.cli import main

    output = io.StringIO()
    started = time.monotonic()
    arguments = ["migrate", "--from", source_url, "--to", target_url, "--queues", queue, "--yes"]
    arguments += ["--ledger", f"sqlite:///{folder / 'ledger.sqlite'}"]
    if moved_to != queue:
        arguments += ["--rename-queue", f"{queue}:{moved_to}"]
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        code = main(arguments)
    return code, round(time.monotonic() - started, 2), output.getvalue()


def _moved(output: str) -> int:
    found = re.search(r"moved (\d+) job", output)
    return int(found.group(1)) if found else 0


def _check_failed_store(target: Adapter, queue: str, seeded: _Seeded, outcome: Outcome) -> None:
    records = {
        record.job_id: record
        for record in target.jobs(JobState.FAILED, filter=JobFilter(queue=queue), limit=10_000)
    }
    wanted = set(seeded.failed)
    outcome.failed_in_store = len(wanted & set(records))
    if outcome.failed_in_store != len(wanted):
        outcome.problems.append(f"{len(wanted - set(records))} failed job(s) missing from the failed store")
    wrong = [
        job_id
        for job_id in wanted & set(records)
        if (records[job_id].error or NO_ERROR).error_class != "Doomed"
    ]
    if wrong:
        outcome.problems.append(f"{len(wrong)} failed job(s) lost their error")
    kept = [
        r
        for r in records.values()
        if r.envelope is not None and r.envelope.exception_executions != {"[Doomed]": 1}
    ]
    if kept:
        outcome.problems.append(f"{len(kept)} failed job(s) lost their exception_executions")
    if outcome.failed_in_store:
        target.retry(sorted(wanted & set(records)))


def _check_runs(
    probe: Probe, labels: dict[str, str], seeded: _Seeded, outcome: Outcome, timeout: float
) -> None:
    expected = {
        "pending": set(seeded.pending),
        "scheduled": set(seeded.scheduled),
        "failed": set(seeded.failed) if outcome.failed_in_store else set(),
    }

    def performed(state: str) -> Counter[str]:
        return Counter(row.job_id for row in probe.rows(labels[state]) if row.job_id is not None)

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(expected[s] - set(performed(s)) for s in expected):
        time.sleep(0.1)
    time.sleep(0.5)  # a duplicate would show now
    counts = {state: performed(state) for state in expected}
    outcome.pending_performed = len(expected["pending"] & set(counts["pending"]))
    outcome.scheduled_performed = len(expected["scheduled"] & set(counts["scheduled"]))
    outcome.failed_retried = len(expected["failed"] & set(counts["failed"]))
    outcome.lost = sum(len(expected[s] - set(counts[s])) for s in expected)
    outcome.duplicates = sum(n - 1 for c in counts.values() for n in c.values() if n > 1)
    if outcome.lost:
        missing = ", ".join(
            f"{len(expected[state] - set(counts[state]))} {state}"
            for state in expected
            if expected[state] - set(counts[state])
        )
        outcome.problems.append(f"{outcome.lost} job(s) never performed on the target ({missing})")
    if outcome.duplicates:
        outcome.problems.append(f"{outcome.duplicates} duplicate run(s)")
    runs = {"pending": 1, "scheduled": 1, "failed": 2}  # a failed job ran once on the old backend
    changed = [
        row
        for state, count in runs.items()
        for row in probe.rows(labels[state])
        if row.executions != count or row.priority != seeded.priorities.get(row.job_id or "")
    ]
    if changed:
        outcome.problems.append(f"{len(changed)} run(s) with another priority or executions count")
    for row in probe.rows(labels["scheduled"]):
        due = seeded.scheduled.get(row.job_id or "")
        if due is not None and row.at < due.timestamp() - EARLY:
            outcome.scheduled_early += 1
    if outcome.scheduled_early:
        outcome.problems.append(f"{outcome.scheduled_early} scheduled job(s) ran early")


def _check_far(
    target: Adapter, probe: Probe, labels: dict[str, str], seeded: _Seeded, outcome: Outcome
) -> None:
    if any(row.job_id == seeded.far for row in probe.rows(labels["scheduled"])):
        outcome.problems.append("the job due in three days ran")
        return
    if Capability.INSPECT not in target.capabilities:
        outcome.far_still_scheduled = True  # not run; the target cannot say more
        return
    try:
        outcome.far_still_scheduled = target.find(seeded.far).state is JobState.SCHEDULED
    except (JobNotFound, OperationUnsupported):
        outcome.far_still_scheduled = False
    if not outcome.far_still_scheduled:
        outcome.problems.append("the job due in three days is not listed as scheduled on the target")


def _stop(worker: Any) -> None:
    with contextlib.suppress(AssertionError):
        worker.terminate()


def _purge(adapter: Adapter, queue: str) -> None:
    """Delete the queue's jobs, and its dead letters where the broker shares one dead-letter
    queue between queues (Celery on RabbitMQ): a proof that failed half-way leaves none."""
    with contextlib.suppress(Exception):
        adapter.purge([queue])
    with contextlib.suppress(Exception):
        forget_dead_letters(adapter, queue)


def forget_dead_letters(adapter: Adapter, queue: str) -> int:
    """Acknowledge ``queue``'s dead letters on a drained broker (RabbitMQ); returns how many."""
    drain = adapter.drain_for_move(JobState.FAILED, queue)
    if drain is None:
        return 0
    forgotten = 0
    try:
        while records := drain.take(500):
            forgotten += len(drain.delete(records))
    finally:
        drain.close()
    return forgotten


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobadapter.migrate.proof", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--results", required=True, help="folder for the results file")
    parser.add_argument(
        "--label", action="append", default=[], help="SOURCE=label, TARGET=label for the table"
    )
    parser.add_argument("source")
    parser.add_argument("target")
    options = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="jobadapter-migrate-") as folder:
        outcome = prove(options.source, options.target, Path(folder))
    names = dict(label.split("=", 1) for label in options.label)
    outcome.source = names.get(options.source, outcome.source)
    outcome.target = names.get(options.target, outcome.target)
    results = Path(options.results)
    results.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^a-z0-9]+", "-", f"{outcome.source}--{outcome.target}".lower())
    (results / f"{name}.json").write_text(
        json.dumps({"jobadapter_migrate": 1, "runs": [outcome.to_dict()]}, indent=2) + "\n"
    )
    print(json.dumps(outcome.to_dict(), indent=2))
    return 0 if outcome.passed or outcome.unsupported else 1


if __name__ == "__main__":
    sys.exit(main())
