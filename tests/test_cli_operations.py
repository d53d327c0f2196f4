"""The operations verbs of the ``jobadapter`` command, run as an operator runs them.

One Dramatiq-on-Redis backend on a private redis-server, a SQLite journal, a
real worker that fails two jobs, and the CLI's own entry point: what it
prints, what it refuses, and what it changes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from jobadapter import config, journal
from jobadapter.cli import main
from jobadapter.conformance.harness import Backend
from jobadapter.conformance.jobs import FailingJob, RecordJob
from jobadapter.conformance.probe import ENVIRONMENT_VARIABLE, Probe
from jobadapter.faults.brokers import PrivateRedis, with_address
from jobadapter.operations import JobState


@pytest.fixture
def backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    probe_path = tmp_path / "probe.sqlite"
    journal_url = f"sqlite:///{tmp_path}/journal.sqlite"
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, str(probe_path))
    monkeypatch.setenv(journal.ENVIRONMENT_VARIABLE, journal_url)
    journal.configure(journal_url)
    probe = Probe(probe_path)
    with PrivateRedis(persistent=False) as server:
        built = Backend(with_address("dramatiq+redis://127.0.0.1:6379/0", server.port), probe, tmp_path)
        try:
            yield built
        finally:
            built.close()
            probe.close()
            journal.close()


class Ran(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(backend: Backend, capsys: pytest.CaptureFixture[str]) -> Callable[..., Ran]:
    """``jobadapter <arguments> --url URL`` in this process (stdin is no terminal here, as in a
    script); each call builds its own adapter from the URL, as a new process would."""

    def run(*arguments: str) -> Ran:
        capsys.readouterr()
        code = main([*arguments, "--url", backend.url])
        captured = capsys.readouterr()
        return Ran(code, captured.out, captured.err)

    return run


def test_an_operator_inspects_retries_discards_and_pauses_from_the_command_line(
    backend: Backend, cli: Callable[..., Ran]
) -> None:
    mail, work = backend.queue("mail"), backend.queue("work")
    label = backend.label_for("cli")
    with config.override(backend.adapter):
        alice = RecordJob.set(queue=mail).perform_later(label, "alice@example.com")
        RecordJob.set(queue=mail).perform_later(label, "bob@example.com")
        RecordJob.set(queue=mail, wait=3600).perform_later(label, "later")
        failures = [FailingJob.set(queue=work).perform_later(label) for _ in range(2)]
    with backend.worker([work]):
        backend.probe.wait_for(
            lambda: {j.job_id for j in failures} <= {r.job_id for r in backend.adapter.jobs(JobState.FAILED)},
            backend.timeout,
            "two failed jobs",
        )
    journal_active = journal.active()
    assert journal_active is not None
    journal_active.flush()

    shown = cli("queues")
    assert shown.returncode == 0, shown.stderr
    lines = {line.split()[0]: line.split()[1:] for line in shown.stdout.splitlines()[1:]}
    assert shown.stdout.splitlines()[0].split() == ["QUEUE", "PENDING", "SCHEDULED", "FAILED"]
    assert lines[mail] == ["2", "1", "0"] and lines[work] == ["0", "0", "2"]

    found = cli("jobs", "--state", "pending", "--search", "ALICE", "--json")
    assert [record["job_id"] for record in json.loads(found.stdout)] == [alice.job_id]
    table = cli("jobs", "--queue", work)
    assert table.stdout.count("failed") == 2 and "Doomed: conformance failure" in table.stdout

    one = cli("job", alice.job_id)
    fields = dict(line.split(None, 1) for line in one.stdout.splitlines())
    assert (fields["job_id"], fields["state"], fields["queue"]) == (alice.job_id, "pending", mail)
    assert fields["arguments"] == json.dumps([label, "alice@example.com"])

    refused = cli("retry", "--all")
    assert (refused.returncode, refused.stdout) == (1, "")
    assert (
        refused.stderr
        == "jobadapter: not confirmed: pass --yes to run a bulk action without a terminal to ask on\n"
    )

    discarded = cli("discard", "--all", "--state", "failed", "--queue", work, "--yes")
    assert discarded.stdout == f"discarded 2 of 2 failed job(s) (queue={work})\n", discarded.stderr
    assert backend.adapter.jobs(JobState.FAILED) == []

    unknown = cli("job", "no-such-job")
    assert (unknown.returncode, unknown.stderr) == (1, "jobadapter: no job with id 'no-such-job'\n")
    both = cli("retry", "some-id", "--all")
    assert both.returncode == 2 and "either job ids or --all" in both.stderr

    assert cli("pause", mail).returncode == 0
    paused = cli("queues", "--json")
    assert {q["name"]: q["paused"] for q in json.loads(paused.stdout)}[mail] is True
    assert cli("resume", mail).returncode == 0
    resumed = cli("queues", "--json")
    assert {q["name"]: q["paused"] for q in json.loads(resumed.stdout)}[mail] is False


def test_jobs_without_a_state_lists_every_state_the_backend_can_and_names_the_one_it_cannot(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Celery on Redis with no result store and no journal keeps no finished jobs: a plain
    ``jobadapter jobs`` still lists the others, and says on stderr what it left out and why."""
    monkeypatch.delenv(journal.ENVIRONMENT_VARIABLE, raising=False)
    with PrivateRedis(persistent=False) as server:
        url = f"celery+redis://127.0.0.1:{server.port}/0"
        adapter = config.build_adapter(url)
        try:
            with config.override(adapter):
                waiting = RecordJob.set(queue="jac-cli-unlisted").perform_later("unlisted")
        finally:
            adapter.close()
        capsys.readouterr()
        code = main(["jobs", "--url", url])
        captured = capsys.readouterr()
        asked = main(["jobs", "--state", "finished", "--url", url])
        refused = capsys.readouterr()
    assert code == 0, captured.err
    assert waiting.job_id in captured.out and "pending" in captured.out
    assert captured.err.startswith("jobadapter: finished jobs not listed: Celery keeps no finished jobs")
    assert asked == 1 and "Celery keeps no finished jobs" in refused.err  # asked for: an error
