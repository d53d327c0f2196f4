"""Move waiting jobs from one backend to another: ``jobadapter migrate``.

Changing ``JOBADAPTER_URL`` sends new jobs to the new backend; the jobs already
waiting on the old one (queued, scheduled for later, failed and waiting for a
retry) stay there. Every adapter carries the same envelope, so they can move:
`move` walks the source's pending, scheduled and failed jobs a batch at a time
(the operations contract's ``jobs``; on RabbitMQ, which cannot list without
consuming, a `Drain` takes them unacknowledged), publishes each batch to the
target with the envelopes unchanged (job_id, queue, priority, scheduled time,
executions, exception_executions), files failed ones straight into the
target's failed store with their error (``enqueue_failed``), and only once the
target took the batch deletes it from the source (``delete_moved``, or the
drain's acknowledgement).

Publish first, delete second: a crash in between can duplicate a job, never
lose one. The ledger (`jobadapter.migrate.ledger`) remembers what was
published and not yet deleted, so the next run of the same move deletes those
from the source without publishing them again: duplicates are at most the one
batch that was being published when the run died.

Messages that are not jobadapter envelopes (native Celery tasks, native RQ
jobs, envelopes of an unknown version) are never altered: they stay on the
source, and the report counts them with the reason.

Source workers must be stopped first: Celery and Dramatiq workers hold
scheduled messages in their memory, where nobody else can read or delete
them. The CLI asks the source (``running_workers``) and refuses while any run.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import unquote, urlsplit

from jobadapter import journal
from jobadapter.adapters.base import Adapter, Capability, Drain, EnqueueRequest, Progress
from jobadapter.envelope import Envelope, decode
from jobadapter.errors import InvalidEnvelope, JobAdapterError
from jobadapter.migrate.ledger import Ledger
from jobadapter.operations import (
    EVERY_JOB,
    JobError,
    JobFilter,
    JobNotFound,
    JobRecord,
    JobState,
    OperationUnsupported,
    QueueInfo,
)

MOVABLE_STATES: tuple[JobState, ...] = (JobState.PENDING, JobState.SCHEDULED, JobState.FAILED)
WALK_ORDER: tuple[JobState, ...] = (JobState.SCHEDULED, JobState.PENDING, JobState.FAILED)
"""Scheduled jobs first: one that falls due meanwhile is then met again among the pending ones
(the other way round, it would be met by neither walk)."""
NATIVE = "not a jobadapter envelope (a native message, counted from the queue's size)"
DEFAULT_BATCH = 200
"""Jobs published in one bulk enqueue, and the most a crash can duplicate."""
SURVEY_PAGE = 5000
"""Jobs a dry run lists at once."""
NO_ERROR = JobError("Failed", "the source recorded no error")
"""The error a failed job gets in the target when its source kept none."""

Delete = Callable[[list[JobRecord]], set[str]]
"""Deletes jobs from the source: ``Adapter.delete_moved``, or a `Drain`'s ``delete``."""


class MigrationRefused(JobAdapterError):
    """The move cannot start: an adapter cannot take part, or source workers are running."""


class TargetRefused(JobAdapterError):
    """The target did not take a batch; the move stopped, the batch is still on the source.
    ``report`` tells what had moved until then."""

    report: Report | None = None


@dataclass(frozen=True)
class Plan:
    """What to move: which queues (None: every queue the source knows), which states, renamed
    how, and at most how many jobs (None: all)."""

    queues: tuple[str, ...] | None = None
    states: tuple[JobState, ...] = MOVABLE_STATES
    rename: Mapping[str, str] = field(default_factory=dict)
    limit: int | None = None
    batch: int = DEFAULT_BATCH

    def __post_init__(self) -> None:
        wrong = [state.value for state in self.states if state not in MOVABLE_STATES]
        if wrong:
            raise ValueError(f"only pending, scheduled and failed jobs move, not {', '.join(wrong)}")
        if self.batch < 1:
            raise ValueError(f"the batch size must be at least 1, not {self.batch}")
        if self.limit is not None and self.limit < 0:
            raise ValueError(f"the limit must be >= 0, not {self.limit}")

    def target_queue(self, queue: str) -> str:
        return self.rename.get(queue, queue)


@dataclass
class Tally:
    """What happened to the jobs of one queue in one state."""

    moved: int = 0
    """Moved (or, in a dry run, movable)."""
    skipped: Counter[str] = field(default_factory=Counter)
    """Left on the source, by reason: not jobadapter envelopes."""
    failed: Counter[str] = field(default_factory=Counter)
    """Could not be moved, by reason."""
    listed: int = 0
    """Entries the walk looked at (to tell how many of the queue's count it could not read)."""


@dataclass
class Report:
    """A move's (or a dry run's) outcome per queue and state, and how long it took."""

    dry_run: bool
    tallies: dict[tuple[str, JobState], Tally] = field(default_factory=dict)
    seconds: float = 0.0

    def tally(self, queue: str, state: JobState) -> Tally:
        return self.tallies.setdefault((queue, state), Tally())

    @property
    def moved(self) -> int:
        return sum(tally.moved for tally in self.tallies.values())

    @property
    def skipped(self) -> int:
        return sum(sum(tally.skipped.values()) for tally in self.tallies.values())

    @property
    def failed(self) -> int:
        return sum(sum(tally.failed.values()) for tally in self.tallies.values())

    @property
    def rate(self) -> float:
        """Jobs moved per second."""
        return self.moved / self.seconds if self.seconds > 0 else 0.0


def move_name(source: Adapter, target: Adapter) -> str:
    """How the ledger names a move: both URLs, without passwords."""
    return f"{source.url.redacted} -> {target.url.redacted}"


def same_backend(source: Adapter, target: Adapter) -> bool:
    """Whether both URLs name one adapter on one broker: there a job's id names one job, so a
    copy with the same id cannot sit beside the original."""
    return (source.url.adapter, source.url.target) == (target.url.adapter, target.url.target)


def check_adapters(source: Adapter, target: Adapter | None) -> None:
    """Refuse, naming the reason, an adapter that cannot take part (``target`` None: a dry run)."""
    if Capability.MIGRATE_FROM not in source.capabilities:
        raise MigrationRefused(
            f"the {source.name} adapter cannot be migrated from: {_why(source, Capability.MIGRATE_FROM)}"
        )
    if target is not None and Capability.MIGRATE_TO not in target.capabilities:
        raise MigrationRefused(
            f"the {target.name} adapter cannot be migrated to: {_why(target, Capability.MIGRATE_TO)}"
        )


def check_plan(source: Adapter, target: Adapter, plan: Plan) -> None:
    """Refuse a move that would only publish every job again where it already is, or mix two
    systems' messages in one RabbitMQ queue."""
    if same_backend(source, target) and not plan.rename:
        raise MigrationRefused(
            "--from and --to name the same backend, so nothing would move; --rename-queue OLD:NEW "
            "moves jobs between its queues"
        )
    if plan.queues is None and drains(source):
        raise MigrationRefused(
            f"name the queues to move with --queues: the {source.name} adapter drains RabbitMQ, "
            "which cannot list its queues"
        )
    if _one_rabbitmq(source, target) and not same_backend(source, target):
        kept = [queue for queue in plan.queues or [] if queue not in plan.rename]
        if kept or not plan.queues:
            raise MigrationRefused(
                "both backends use one RabbitMQ, where a queue name is one queue: the moved jobs "
                "would land among the old backend's messages. Give them other queues "
                "(--queues with --rename-queue OLD:NEW for each), or point --to at another vhost"
            )


def drains(source: Adapter) -> bool:
    """Whether ``source`` is moved through drains (RabbitMQ) rather than listed. Asked with a
    queue name no one uses: opening a drain on it touches nothing."""
    drain = source.drain_for_move(JobState.PENDING, f"jobadapter-migrate-probe-{uuid.uuid4().hex}")
    if drain is None:
        return False
    drain.close()
    return True


def _one_rabbitmq(source: Adapter, target: Adapter) -> bool:
    """Both URLs are AMQP on the same host, port and vhost (``//``, ``/`` and none are all the
    default vhost ``/``, as kombu and pika read them)."""
    ends = [urlsplit(adapter.url.target) for adapter in (source, target)]
    if not all(end.scheme.startswith("amqp") for end in ends):
        return False
    return len({(end.hostname, end.port or 5672, unquote(end.path[1:]) or "/") for end in ends}) == 1


def _why(adapter: Adapter, capability: Capability) -> str:
    return adapter.notes.get(capability.value) or "it does not declare the capability"


def survey(source: Adapter, plan: Plan) -> Report:
    """What `move` would do, changing nothing: per queue and state, the jobs that would move
    and the messages that would stay, with the reason.

    Nothing leaves the source, so each page of the walk starts further in, and a listing
    reads up to its offset (RQ merges its priority bands from the start): pages of
    `SURVEY_PAGE` keep that to a few passes."""
    return _Mover(source, None, replace(plan, batch=max(plan.batch, SURVEY_PAGE)), None, None).run()


def move(
    source: Adapter, target: Adapter, plan: Plan, ledger: Ledger, progress: Progress | None = None
) -> Report:
    """Move the jobs ``plan`` names from ``source`` to ``target``; ``progress`` is told how many
    jobs each batch moved. Raises `TargetRefused` (after recording it in the report, which the
    exception carries as ``report``) when the target does not take a batch."""
    return _Mover(source, target, plan, ledger, progress).run()


class _Mover:
    """One walk over the source: a survey when there is no target, else a move."""

    def __init__(
        self,
        source: Adapter,
        target: Adapter | None,
        plan: Plan,
        ledger: Ledger | None,
        progress: Progress | None,
    ) -> None:
        self.source = source
        self.target = target
        self.plan = plan
        self.ledger = ledger
        self.progress = progress
        self.report = Report(dry_run=target is None)
        self.remaining = plan.limit
        self.target_finds = target is not None and Capability.INSPECT in target.capabilities
        self.same_backend = target is not None and same_backend(source, target)
        self.queues = plan.queues
        """The queues walked: within one backend, only those renamed (the others would move onto
        themselves); else the plan's, or every one (None)."""
        if self.queues is None and self.same_backend:
            self.queues = tuple(plan.rename)
        self.earlier: set[str] = set()
        """What earlier runs of this move published and did not delete (`Ledger.published`)."""

    def run(self) -> Report:
        started = time.monotonic()
        try:
            if self.ledger is not None:
                self._recover()
                self.earlier = self.ledger.published()
            states = [state for state in WALK_ORDER if state in self.plan.states]
            opened: Drain | None = None
            if self.queues is not None:
                names = list(self.queues)
                if names and states:  # a drained source is not asked for its queues at all
                    opened = self.source.drain_for_move(states[0], names[0])
                infos = None if opened is not None else self.source.queues()
            else:
                infos = self._queue_infos()
                names = [info.name for info in infos]
            drained = False
            for state in states:
                if self._drain(state, names, opened):
                    drained, opened = True, None
                    continue
                wanted = [JobFilter(queue=q) for q in self.queues] if self.queues else [EVERY_JOB]
                for filter in wanted:
                    self._walk(state, filter)
            if self.remaining != 0 and infos is not None and not drained:
                self._count_native(infos, states)
        except TargetRefused as refused:
            refused.report = self.report
            raise
        finally:
            self.report.seconds = time.monotonic() - started
        return self.report

    def _queue_infos(self) -> list[QueueInfo]:
        """The source's queues; where it cannot list them (RabbitMQ without a journal) the plan
        must name them."""
        try:
            return self.source.queues()
        except OperationUnsupported as unsupported:
            raise MigrationRefused(f"name the queues to move with --queues: {unsupported}") from None

    def _count_native(self, infos: list[QueueInfo], states: list[JobState]) -> None:
        """A listing shows what the adapter can read as a job; the rest of a queue's count is
        messages of another kind (a native Celery task, say), left alone and counted here."""
        for info in infos:
            if self.queues is not None and info.name not in self.queues:
                continue
            before = sum(getattr(info, state.value) for state in states)
            listed = sum(self.report.tally(info.name, state).listed for state in states)
            if before > listed:
                state = JobState.PENDING if JobState.PENDING in states else states[0]
                self.report.tally(info.name, state).skipped[NATIVE] += before - listed

    def _drain(self, state: JobState, queues: list[str], opened: Drain | None) -> bool:
        """Move ``state``'s jobs queue by queue through the source's drains (RabbitMQ), the
        first one ``opened`` already if given; False when the source has none (it lists and
        deletes instead)."""
        for index, queue in enumerate(queues):
            drain = opened if index == 0 and opened is not None else self.source.drain_for_move(state, queue)
            if drain is None:
                return False
            try:
                while self.remaining is None or self.remaining > 0:
                    records = drain.take(self.plan.batch)
                    if not records:
                        break
                    for tally, group in self._take(state, records):
                        self._move(state, group, tally, drain.delete)
            finally:
                drain.close()
        return bool(queues)

    def _walk(self, state: JobState, wanted: JobFilter) -> None:
        """Every job in ``state`` that ``wanted`` matches, a batch at a time, each queue's jobs
        moved and counted under that queue. Jobs that stay on the source are stepped over."""
        offset = 0
        seen: set[str] = set()
        while self.remaining is None or self.remaining > 0:
            page = self.source.jobs(state, filter=wanted, limit=self.plan.batch, offset=offset)
            fresh = [record for record in page if record.job_id not in seen]
            if not fresh:
                return
            seen.update(record.job_id for record in fresh)
            removed = sum(
                self._move(state, group, tally, self.source.delete_moved)
                for tally, group in self._take(state, fresh)
            )
            offset += len(page) - removed

    def _take(self, state: JobState, records: list[JobRecord]) -> list[tuple[Tally, list[JobRecord]]]:
        """Count a page: what cannot move is skipped with its reason; the rest (up to the limit)
        is grouped by queue, with each queue's tally."""
        by_queue: dict[str, list[JobRecord]] = {}
        for record in records:
            tally = self.report.tally(record.queue, state)
            tally.listed += 1
            if record.envelope is None:
                tally.skipped[_foreign_reason(record)] += 1
            elif self.remaining is None or self.remaining > 0:
                by_queue.setdefault(record.queue, []).append(record)
                if self.remaining is not None:
                    self.remaining -= 1
            else:
                tally.listed -= 1  # not looked at: the limit stops the walk here
        return [(self.report.tally(queue, state), group) for queue, group in by_queue.items()]

    def _move(self, state: JobState, records: list[JobRecord], tally: Tally, delete: Delete) -> int:
        """Move ``records`` to the target (a dry run counts them); returns how many left the
        source."""
        if self.target is None:
            tally.moved += len(records)
            return 0
        if self.same_backend:
            removed = self._move_kept(state, records, tally, delete)
        else:
            removed = self._move_published(state, records, tally, delete)
        self._journal(state, [record for record in records if record.job_id in removed])
        tally.moved += len(removed)
        if self.progress is not None:
            self.progress(len(removed))
        return len(removed)

    def _move_published(
        self, state: JobState, records: list[JobRecord], tally: Tally, delete: Delete
    ) -> set[str]:
        """Between two backends: publish to the target, note the ids, delete from the source."""
        assert self.ledger is not None
        earlier = self._published_earlier([record.job_id for record in records])
        fresh = [record for record in records if record.job_id not in earlier]
        self._publish(state, [(self._renamed(r), r.error) for r in fresh], tally)
        self.ledger.add([record.job_id for record in fresh])
        removed = self._delete(records, tally, delete)
        self.ledger.clear(removed)
        return removed

    def _move_kept(self, state: JobState, records: list[JobRecord], tally: Tally, delete: Delete) -> set[str]:
        """Within one backend, where the copy has the source job's id: keep the whole jobs in the
        ledger, delete them from the source, publish them, clear them."""
        assert self.ledger is not None
        jobs = {record.job_id: (self._renamed(record), record.error) for record in records}
        self.ledger.keep(state, list(jobs.values()))
        removed = self._delete(records, tally, delete)
        self.ledger.clear(set(jobs) - removed)  # still on the source: nothing to keep
        self._publish(state, [jobs[job_id] for job_id in jobs if job_id in removed], tally)
        self.ledger.clear(removed)
        return removed

    def _recover(self) -> None:
        """Publish what a dead run of this move kept in the ledger and may not have published."""
        assert self.ledger is not None
        kept = self.ledger.kept()
        for state in MOVABLE_STATES:
            jobs = [(envelope, error) for kept_state, envelope, error in kept if kept_state is state]
            if jobs:
                tally = self.report.tally(jobs[0][0].queue_name, state)
                self._publish(state, jobs, tally)
                self.ledger.clear([envelope.job_id for envelope, _ in jobs])
                tally.moved += len(jobs)

    def _published_earlier(self, ids: list[str]) -> set[str]:
        """The ids an earlier run published and did not delete: the ledger's, checked against
        the target where it can look jobs up (so a ledger entry left stale cannot lose a job)."""
        assert self.ledger is not None and self.target is not None
        earlier = self.earlier.intersection(ids)
        if earlier and self.target_finds:
            for job_id in sorted(earlier):
                try:
                    self.target.find(job_id)
                except JobNotFound:
                    earlier.discard(job_id)
                except OperationUnsupported:
                    break
        return earlier

    def _publish(self, state: JobState, jobs: list[tuple[Envelope, JobError | None]], tally: Tally) -> None:
        """Hand ``jobs`` to the target in one bulk call; `TargetRefused` if it does not take them."""
        assert self.target is not None
        if not jobs:
            return
        try:
            if state is JobState.FAILED:
                self.target.enqueue_failed([(envelope, error or NO_ERROR) for envelope, error in jobs])
            else:
                self.target.enqueue_all([EnqueueRequest(envelope) for envelope, _ in jobs])
        except Exception as error:
            reason = f"the target refused the batch: {_reason(error)}"
            tally.failed[reason] += len(jobs)
            raise TargetRefused(f"{reason} ({len(jobs)} jobs; run again once it takes jobs)") from error

    def _renamed(self, record: JobRecord) -> Envelope:
        assert record.envelope is not None
        envelope = record.envelope
        queue = self.plan.target_queue(envelope.queue_name)
        return envelope if queue == envelope.queue_name else envelope.evolve(queue_name=queue)

    def _delete(self, records: list[JobRecord], tally: Tally, delete: Delete) -> set[str]:
        """Delete ``records`` from the source; those it could not delete are counted as failed
        (they are on the target too, and in the ledger: the next run deletes them)."""
        deleted = delete(records)
        stayed = len(records) - len(deleted)
        if stayed:
            tally.failed["copied to the target, but the source did not delete it; run again"] += stayed
        return deleted

    def _journal(self, state: JobState, records: list[JobRecord]) -> None:
        """Where a journal is configured, its rows say where the moved jobs are now (a source's
        discard wrote them as discarded, and a target on RabbitMQ lists jobs from the journal)."""
        active = journal.active()
        if active is None or not records:
            return
        rows = []
        for record in records:
            envelope = self._renamed(record)
            error = record.error if state is JobState.FAILED else None
            rows.append(
                (
                    envelope.job_id,
                    {
                        "job_class": envelope.job_class,
                        "queue": envelope.queue_name,
                        "priority": envelope.priority,
                        "state": state,
                        "arguments": envelope.arguments,
                        "keyword_arguments": envelope.keyword_arguments,
                        "executions": envelope.executions,
                        "enqueued_at": envelope.enqueued_at,
                        "scheduled_at": envelope.scheduled_at,
                        "outcome": None,
                        "finished_at": None,
                        "provider_job_id": None,
                        "error_class": None if error is None else error.error_class,
                        "error_message": None if error is None else error.message,
                        "error_traceback": None if error is None else error.traceback,
                    },
                )
            )
        with contextlib.suppress(Exception):  # the journal is never in the way
            active.record_many(rows)


def _foreign_reason(record: JobRecord) -> str:
    """Why a listed entry cannot move: the native task it names, or what reading its payload as
    an envelope says (one line per kind, not per message)."""
    if record.job_class != "?":
        return f"not a jobadapter envelope: a native {record.job_class} message"
    if record.payload is None:
        return "not a jobadapter envelope"
    try:
        decode(record.payload)
    except InvalidEnvelope as invalid:
        return f"not a jobadapter envelope: {str(invalid).splitlines()[0][:80]}"
    return "not a jobadapter envelope the source can run"


def _reason(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text if isinstance(error, JobAdapterError) else f"{type(error).__name__}: {text}"
