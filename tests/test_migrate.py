"""``jobadapter migrate``: jobs move between backends with nothing lost.

Three representative pairs run the whole proof (`jobadapter.migrate.proof`:
200 pending, 50 scheduled and 20 failed jobs, moved, then run by a real worker
on the target and checked by job_id); ``nox -s migrate`` runs all 20 pairs.
The other tests use the CLI's entry point on private redis-servers: a dry run
changes nothing and names what cannot move, ``--rename-queue``, the refusal
while source workers run, and a move SIGKILLed part-way through and run again.
RabbitMQ queues are named ``jac-migrate-…`` and deleted at the end.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import NamedTuple

import pytest
from jobadapter_celery.adapter import CeleryAdapter
from jobadapter_rq.adapter import RQAdapter
from kombu import Connection
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from jobadapter import config
from jobadapter.adapters.base import Adapter, EnqueueRequest
from jobadapter.cli import main
from jobadapter.conformance.harness import Backend
from jobadapter.conformance.jobs import RecordJob
from jobadapter.conformance.probe import Probe
from jobadapter.console import Progress
from jobadapter.envelope import Envelope
from jobadapter.faults.brokers import PrivateRedis, shared_amqp
from jobadapter.migrate import Plan, move_name, survey
from jobadapter.migrate.ledger import REDIS_KEY, Ledger, RedisLedger
from jobadapter.migrate.ledger_sql import SqlLedger
from jobadapter.migrate.proof import SEEDED_ERROR, forget_dead_letters, prove
from jobadapter.operations import JobError, JobFilter, JobState
from tests.journal_support import store_url

AMQP = {
    "celery+amqp": shared_amqp("celery"),
    "dramatiq+amqp": shared_amqp("dramatiq"),
}
PAIRS = [
    ("rq+redis", "celery+amqp"),
    ("celery+redis", "dramatiq+amqp"),
    ("dramatiq+redis", "rq+redis"),
]


@pytest.fixture
def server() -> Iterator[PrivateRedis]:
    with PrivateRedis(persistent=False) as private:
        yield private


@pytest.fixture(autouse=True)
def own_dead_letters(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Celery on RabbitMQ dead-letters into one queue per vhost by default, shared with every
    test that runs at once: another test's walk of it hides its messages for a moment, and a
    retry here could miss one (a CI run saw a failed job never retried on the target). Each
    test gets a dead-letter queue of its own, deleted at its end."""
    dead = f"jac-migrate-dead-{uuid.uuid4().hex[:8]}"
    monkeypatch.setitem(AMQP, "celery+amqp", f"{shared_amqp('celery')}?dead_letter_queue={dead}")
    yield
    with Connection(shared_amqp()) as connection:
        connection.default_channel.queue_delete(dead)


def url(kind: str, server: PrivateRedis, db: int = 0) -> str:
    """A URL of ``kind`` (``rq+redis``, ``celery+amqp``, …), Redis ones on ``server``'s db ``db``."""
    if kind in AMQP:
        return AMQP[kind]
    return f"{kind}://127.0.0.1:{server.port}/{db}"


@pytest.mark.parametrize(("source", "target"), PAIRS, ids=[f"{s}-to-{t}" for s, t in PAIRS])
def test_a_move_loses_nothing_and_keeps_every_job_as_it_was(
    source: str, target: str, server: PrivateRedis, tmp_path: Path
) -> None:
    outcome = prove(url(source, server, 0), url(target, server, 1), tmp_path)
    assert outcome.problems == []
    assert (outcome.exit_code, outcome.moved, outcome.left_on_source) == (0, 270, 0)
    assert (outcome.pending_performed, outcome.scheduled_performed, outcome.failed_retried) == (200, 49, 20)
    assert (outcome.failed_in_store, outcome.scheduled_early, outcome.far_still_scheduled) == (20, 0, True)
    assert (outcome.lost, outcome.duplicates) == (0, 0)


class Ran(NamedTuple):
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Callable[..., Ran]:
    """``jobadapter migrate …`` in this process, with a ledger in the test's folder."""

    def run(*arguments: str) -> Ran:
        capsys.readouterr()
        code = main(["migrate", *arguments, "--ledger", f"sqlite:///{tmp_path / 'ledger.sqlite'}"])
        captured = capsys.readouterr()
        return Ran(code, captured.out, captured.err)

    return run


def envelopes(queue: str, count: int, at: datetime | None = None) -> list[Envelope]:
    now = datetime.now(timezone.utc)
    return [
        Envelope(RecordJob.job_name, str(uuid.uuid4()), queue, None, [f"job-{n}"], {}, 0, {}, now, at)
        for n in range(count)
    ]


def seed(adapter: Adapter, queue: str, pending: int, scheduled: int, failed: int) -> dict[JobState, set[str]]:
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    waiting, delayed, broken = (
        envelopes(queue, pending),
        envelopes(queue, scheduled, later),
        envelopes(queue, failed),
    )
    adapter.enqueue_all([EnqueueRequest(e) for e in [*waiting, *delayed]])
    adapter.enqueue_failed([(e, SEEDED_ERROR) for e in broken])
    return {
        JobState.PENDING: {e.job_id for e in waiting},
        JobState.SCHEDULED: {e.job_id for e in delayed},
        JobState.FAILED: {e.job_id for e in broken},
    }


def listed(adapter: Adapter, queue: str) -> dict[JobState, list[str]]:
    return {
        state: [r.job_id for r in adapter.jobs(state, filter=JobFilter(queue=queue), limit=100_000)]
        for state in (JobState.PENDING, JobState.SCHEDULED, JobState.FAILED)
    }


def test_a_dry_run_counts_and_names_what_cannot_move_and_changes_nothing(
    server: PrivateRedis, cli: Callable[..., Ran]
) -> None:
    source_url, target_url = url("rq+redis", server, 0), url("dramatiq+redis", server, 1)
    source, target = config.build_adapter(source_url), config.build_adapter(target_url)
    assert isinstance(source, RQAdapter)
    seeded = seed(source, "mail", pending=3, scheduled=2, failed=1)
    Queue("mail", connection=source.connection, serializer=JSONSerializer).enqueue("os.getcwd")  # native RQ
    future = {**envelopes("mail", 1)[0].to_document(), "jobadapter": 2}
    source.enqueue_payload(json.dumps(future), "mail")
    before = [info.to_dict() for info in source.queues()]

    ran = cli("--from", source_url, "--to", target_url, "--dry-run")

    assert ran.code == 0, ran.err
    assert ran.out.splitlines()[1:5] == [
        "QUEUE  STATE      WOULD MOVE  SKIPPED  FAILED",
        "mail   scheduled           2        0       0",
        "mail   pending             3        2       0",
        "mail   failed              1        0       0",
    ]
    assert "skipped 1 pending in mail: not a jobadapter envelope: payload is not JSON" in ran.out
    assert "envelope version 2 is newer than this worker reads (1)" in ran.out
    assert "would move 6 job(s); 2 would stay on the source" in ran.out
    assert [info.to_dict() for info in source.queues()] == before
    after = listed(source, "mail")
    assert len(after[JobState.PENDING]) == 5  # the native job and the future envelope too
    assert seeded[JobState.PENDING] <= set(after[JobState.PENDING])
    assert (set(after[JobState.SCHEDULED]), set(after[JobState.FAILED])) == (
        seeded[JobState.SCHEDULED],
        seeded[JobState.FAILED],
    )
    assert target.queues() == []
    source.close()
    target.close()


def test_native_messages_stay_on_the_source_and_are_reported(
    server: PrivateRedis, cli: Callable[..., Ran]
) -> None:
    source_url, target_url = url("celery+redis", server, 0), url("rq+redis", server, 1)
    source, target = config.build_adapter(source_url), config.build_adapter(target_url)
    assert isinstance(source, CeleryAdapter)
    seeded = seed(source, "mail", pending=3, scheduled=1, failed=1)
    source.app.send_task("billing.native_task", args=[1, 2], queue="mail")

    ran = cli("--from", source_url, "--to", target_url, "--yes")

    assert ran.code == 0, ran.err
    assert "skipped 1 pending in mail: not a jobadapter envelope (a native message" in ran.out
    assert "moved 5 job(s)" in ran.out
    assert {state: set(ids) for state, ids in listed(target, "mail").items()} == seeded
    left = Redis(port=server.port, db=0).lrange("mail", 0, -1)
    assert len(left) == 1
    assert json.loads(left[0])["headers"]["task"] == "billing.native_task"
    source.close()
    target.close()


def test_rename_queue_moves_jobs_between_queues_of_one_backend(
    server: PrivateRedis, cli: Callable[..., Ran]
) -> None:
    same = url("rq+redis", server, 0)
    adapter = config.build_adapter(same)
    seeded = seed(adapter, "old", pending=4, scheduled=2, failed=2)
    first = cli("--from", same, "--to", same, "--rename-queue", "old:new", "--limit", "3", "--yes")
    assert first.code == 0, first.err
    assert "moved 3 job(s)" in first.out
    assert sum(len(ids) for ids in listed(adapter, "new").values()) == 3

    ran = cli("--from", same, "--to", same, "--rename-queue", "old:new", "--queues", "old", "--yes")

    assert ran.code == 0, ran.err
    assert "moved 5 job(s)" in ran.out
    assert listed(adapter, "old") == {state: [] for state in seeded}
    moved = listed(adapter, "new")
    assert {state: set(ids) for state, ids in moved.items()} == seeded
    record = adapter.find(sorted(seeded[JobState.FAILED])[0])
    assert (record.queue, record.state, record.error) == ("new", JobState.FAILED, SEEDED_ERROR)
    adapter.close()


def test_a_move_keeps_the_optional_envelope_keys(server: PrivateRedis, cli: Callable[..., Ran]) -> None:
    """A trace context (or any optional key a newer producer wrote) crosses backends with the job."""
    source_url, target_url = url("rq+redis", server, 0), url("dramatiq+redis", server, 1)
    source, target = config.build_adapter(source_url), config.build_adapter(target_url)
    trace_context = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    later = datetime.now(timezone.utc) + timedelta(hours=1)

    def tagged(at: datetime | None = None) -> list[Envelope]:
        return [
            e.evolve(extras={"trace_context": trace_context, "n": n})
            for n, e in enumerate(envelopes("mail", 2, at))
        ]

    waiting, delayed, broken = tagged(), tagged(later), tagged()
    source.enqueue_all([EnqueueRequest(e) for e in [*waiting, *delayed]])
    source.enqueue_failed([(e, SEEDED_ERROR) for e in broken])

    ran = cli("--from", source_url, "--to", target_url, "--yes")

    assert ran.code == 0, ran.err
    expected = {e.job_id: e.extras for e in [*waiting, *delayed, *broken]}
    moved = {
        record.job_id: record.envelope.extras if record.envelope is not None else None
        for state in (JobState.PENDING, JobState.SCHEDULED, JobState.FAILED)
        for record in target.jobs(state, filter=JobFilter(queue="mail"), limit=100)
    }
    assert moved == expected
    source.close()
    target.close()


def test_a_running_source_worker_refuses_the_move_and_force_overrides(
    server: PrivateRedis, cli: Callable[..., Ran], tmp_path: Path
) -> None:
    source_url, target_url = url("rq+redis", server, 0), url("rq+redis", server, 1)
    probe = Probe(tmp_path / "probe.db")
    backend = Backend(source_url, probe, tmp_path)
    worker = backend.start_worker(["busy"])
    try:
        seed(backend.adapter, "busy", pending=0, scheduled=2, failed=0)
        ran = cli("--from", source_url, "--to", target_url, "--yes")
        assert ran.code == 1
        assert "workers consume the source queues" in ran.err
        assert "or pass --force" in ran.err
        assert len(listed(backend.adapter, "busy")[JobState.SCHEDULED]) == 2
        forced = cli("--from", source_url, "--to", target_url, "--yes", "--force", "--queues", "busy")
        assert forced.code == 0, forced.err
        assert "warning: workers consume the source queues" in forced.err
        assert "moved 2 job(s)" in forced.out
    finally:
        worker.terminate()
        backend.close()
        probe.close()


def test_an_adapter_that_cannot_take_part_is_refused_by_name(
    server: PrivateRedis, cli: Callable[..., Ran]
) -> None:
    ran = cli("--from", "inline://", "--to", url("rq+redis", server, 1), "--yes")
    assert ran.code == 1
    assert ran.err.startswith("jobadapter: the Inline adapter cannot be migrated from")
    same = cli("--from", url("rq+redis", server), "--to", url("rq+redis", server), "--yes")
    assert same.code == 1
    assert "--from and --to name the same backend, so nothing would move" in same.err
    mixed = cli("--from", AMQP["celery+amqp"], "--to", AMQP["dramatiq+amqp"], "--queues", "mail", "--yes")
    assert mixed.code == 1
    assert "both backends use one RabbitMQ, where a queue name is one queue" in mixed.err
    wrong = cli("--from", url("rq+redis", server), "--to", "inline://", "--states", "finished")
    assert wrong.code == 2
    assert "only pending, scheduled and failed jobs move, not finished" in wrong.err


CRASH_JOBS = 2000
CRASH_BATCH = 100


@pytest.mark.parametrize("kind", ["rq+redis", "celery+amqp"], ids=["listed-rq", "drained-rabbitmq"])
def test_a_move_killed_part_way_loses_nothing_when_run_again(kind: str, server: PrivateRedis) -> None:
    """Killed mid-batch, a move run again delivers every job, at most one batch twice: on RQ the
    ledger in the target says what to delete without publishing again; on RabbitMQ the
    unacknowledged messages of the dead run come back to the queue by themselves."""
    queue = "bulk" if kind == "rq+redis" else f"jac-migrate-{uuid.uuid4().hex[:10]}"
    source_url, target_url = url(kind, server, 0), url("rq+redis", server, 1)
    source, target = config.build_adapter(source_url), config.build_adapter(target_url)
    try:
        waiting = envelopes(queue, CRASH_JOBS)
        for start in range(0, CRASH_JOBS, 500):
            source.enqueue_all([EnqueueRequest(e) for e in waiting[start : start + 500]])
        command = [
            sys.executable,
            "-m",
            "jobadapter.cli",
            "migrate",
            "--from",
            source_url,
            "--to",
            target_url,
        ]
        command += ["--queues", queue, "--yes", "--batch", str(CRASH_BATCH)]  # ledger: a hash in the target
        target_list = Redis(port=server.port, db=1)
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 90  # a loaded machine starts the command slowly
        while target_list.llen(f"rq:queue:{queue}") < CRASH_JOBS // 10 and process.poll() is None:
            assert time.monotonic() < deadline, "the move never got going"
            time.sleep(0.005)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        assert process.returncode == -signal.SIGKILL, "the move ended before it could be killed"
        part_way = target_list.llen(f"rq:queue:{queue}")
        assert 0 < part_way < CRASH_JOBS

        again = subprocess.run(command, capture_output=True, text=True, timeout=60)

        assert again.returncode == 0, again.stderr
        left = survey(source, Plan(queues=(queue,)))
        assert (left.moved, left.skipped) == (0, 0)
        copies = Counter(listed(target, queue)[JobState.PENDING])
        assert set(copies) == {e.job_id for e in waiting}  # nothing lost
        duplicates = sum(count - 1 for count in copies.values())
        assert duplicates <= CRASH_BATCH  # at most the batch in flight when the move died
        print(f"{kind}: killed after {part_way} of {CRASH_JOBS} jobs; {duplicates} duplicate(s)")
    finally:
        if kind != "rq+redis":
            source.purge([queue])
        source.close()
        target.close()


def test_a_rabbitmq_source_is_drained_and_gives_back_what_does_not_move(
    server: PrivateRedis, cli: Callable[..., Ran]
) -> None:
    queue = f"jac-migrate-{uuid.uuid4().hex[:10]}"
    source_url, target_url = url("celery+amqp", server), url("dramatiq+redis", server, 1)
    source, target = config.build_adapter(source_url), config.build_adapter(target_url)
    assert isinstance(source, CeleryAdapter)
    try:
        seeded = seed(source, queue, pending=3, scheduled=2, failed=1)
        source.app.send_task("billing.native_task", args=[1, 2], queue=queue)

        unnamed = cli("--from", source_url, "--to", target_url, "--dry-run")
        assert unnamed.code == 1
        assert "name the queues to move with --queues" in unnamed.err
        dry = cli("--from", source_url, "--to", target_url, "--queues", queue, "--dry-run")
        assert "would move 6 job(s); 1 would stay on the source" in dry.out, dry.out + dry.err
        assert "a native billing.native_task message" in dry.out
        ran = cli("--from", source_url, "--to", target_url, "--queues", queue, "--yes")

        assert ran.code == 0, ran.err
        assert "moved 6 job(s)" in ran.out
        assert {state: set(ids) for state, ids in listed(target, queue).items()} == seeded
        with source.app.connection_for_write() as connection:
            _, waiting, _ = connection.default_channel.queue_declare(queue, passive=True)
        assert waiting == 1  # the native task, given back
    finally:
        source.purge([queue])
        forget_dead_letters(source, queue)  # left only if the test failed before the move
        target.purge([queue])
        source.close()
        target.close()


def test_a_rename_that_died_after_deleting_publishes_what_the_ledger_kept(
    server: PrivateRedis, cli: Callable[..., Ran], tmp_path: Path
) -> None:
    same = url("rq+redis", server, 0)
    adapter = config.build_adapter(same)
    lost_in_flight = envelopes("new", 3)  # kept, deleted from "old", then the run died
    ledger = SqlLedger(f"sqlite:///{tmp_path / 'ledger.sqlite'}", move_name(adapter, adapter))
    ledger.keep(JobState.PENDING, [(envelope, None) for envelope in lost_in_flight])
    ledger.close()
    seeded = seed(adapter, "old", pending=2, scheduled=0, failed=0)

    ran = cli("--from", same, "--to", same, "--rename-queue", "old:new", "--yes")

    assert ran.code == 0, ran.err
    assert "moved 5 job(s)" in ran.out
    moved = set(listed(adapter, "new")[JobState.PENDING])
    assert moved == seeded[JobState.PENDING] | {e.job_id for e in lost_in_flight}
    adapter.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "redis"])
def test_a_ledger_keeps_each_moves_ids_apart_and_forgets_what_is_cleared(
    kind: str, server: PrivateRedis, tmp_path: Path
) -> None:
    ledgers: list[Ledger]
    with contextlib.ExitStack() as stack:
        if kind == "redis":
            client = Redis(port=server.port)
            stack.callback(client.close)
            ledgers = [RedisLedger(client, REDIS_KEY.format(move=move)) for move in ("a -> b", "a -> c")]
        else:
            database = stack.enter_context(store_url(kind, tmp_path))
            ledgers = [SqlLedger(database, move) for move in ("a -> b", "a -> c")]
        ours, other = ledgers
        kept = envelopes("q", 2)
        ours.add(["one", "two", "three"])
        other.add(["one"])
        ours.keep(JobState.FAILED, [(kept[0], JobError("Boom", "it broke")), (kept[1], None)])

        ours.clear(["two"])

        assert ours.published() == {"one", "three", kept[0].job_id, kept[1].job_id}
        assert sorted(ours.kept(), key=lambda job: job[1].job_id) == sorted(
            [(JobState.FAILED, kept[0], JobError("Boom", "it broke")), (JobState.FAILED, kept[1], None)],
            key=lambda job: job[1].job_id,
        )
        ours.clear()
        assert ours.published() == set()
        assert other.published() == {"one"}
        other.clear()
        for ledger in ledgers:
            ledger.close()


def test_a_target_that_is_down_stops_the_move_and_leaves_every_job_on_the_source(
    server: PrivateRedis, cli: Callable[..., Ran]
) -> None:
    source_url = url("rq+redis", server, 0)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    source = config.build_adapter(source_url)
    seeded = seed(source, "mail", pending=3, scheduled=1, failed=1)

    ran = cli("--from", source_url, "--to", f"dramatiq+redis://127.0.0.1:{dead_port}/0", "--yes")

    assert ran.code == 1
    assert "the target refused the batch" in ran.err, ran.err
    assert "failed" in ran.out  # the summary says what stayed
    assert {state: set(ids) for state, ids in listed(source, "mail").items()} == seeded
    source.close()


def test_the_matrix_gets_a_migration_section_and_keeps_the_others(tmp_path: Path) -> None:
    matrix = tmp_path / "compat_matrix.md"
    matrix.write_text("# Compatibility matrix\n\nscenarios\n\n## Faults\n\nfault table\n")
    moved = {"source": "rq/redis", "target": "celery/amqp", "moved": 270, "seconds": 1.35, "lost": 0}
    runs = [
        {**moved, "duplicates": 0, "problems": [], "unsupported": None, "passed": True},
        {**moved, "target": "inline", "duplicates": 0, "problems": [], "passed": False, "unsupported": "no"},
    ]
    results = tmp_path / "rq.json"
    results.write_text(json.dumps({"jobadapter_migrate": 1, "runs": runs}))

    for _ in range(2):  # a second update replaces the section, never appends one
        assert main(["matrix", "--update", str(matrix), str(results)]) == 0

    text = matrix.read_text()
    assert text.startswith(
        "# Compatibility matrix\n\nscenarios\n\n## Faults\n\nfault table\n\n## Migration\n"
    )
    assert text.count("## Migration") == 1
    assert "| **rq/redis** | ✅ 270 moved, 0 lost, 0 twice, 200/s | ➖[^m1] |" in text
    assert text.endswith("[^m1]: no\n")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_bar_shows_the_count_and_the_rate_with_or_without_a_total() -> None:
    known, unknown = Terminal(), Terminal()
    with_total, without = Progress(400, "moving", known), Progress(0, "moving", unknown)
    for bar in (with_total, without):
        bar.advance(200)
        bar.close()
    assert re.fullmatch(r"\rmoving \[#{15}-{15}\] 200/400  [\d,]+/s\n", known.getvalue())
    assert re.fullmatch(r"\rmoving 200  [\d,]+/s\n", unknown.getvalue())
