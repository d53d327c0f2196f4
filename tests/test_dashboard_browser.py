"""The dashboard driven in headless Chromium, against real workers and real backends.

Per backend (RQ, and Dramatiq, each on a redis-server of its own, with a
SQLite journal): an operator signs in, sees enqueued jobs listed, finds a
failed job's traceback, retries it and sees it finish, discards a scheduled
job that then never runs, pauses a queue and sees its jobs wait, resumes it,
and signs out. The dashboard runs as ``jobadapter dashboard`` in its own
process; the jobs run in ``jobadapter worker`` processes.

Needs Debian's ``chromium`` (``/usr/bin/chromium``): skipped without it,
except where ``JOBADAPTER_BROWSER_TESTS=required`` (``.ci/run``), where its
absence fails.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from jobadapter import config, journal
from jobadapter.adapters.base import PAUSE_BOUND
from jobadapter.conformance.harness import Backend, WorkerProcess
from jobadapter.conformance.jobs import RecordJob, UntilAllowedJob
from jobadapter.conformance.probe import ENVIRONMENT_VARIABLE, Probe, record
from jobadapter.dashboard.browser import CHROMIUM, chromium, dashboard_process, visitor
from jobadapter.faults.brokers import PrivateRedis, with_address

if not CHROMIUM.exists():
    if os.environ.get("JOBADAPTER_BROWSER_TESTS") == "required":
        raise RuntimeError(f"{CHROMIUM} is missing and JOBADAPTER_BROWSER_TESTS=required")
    pytest.skip(
        f"no Chromium at {CHROMIUM}: the dashboard's browser tests need Debian's chromium package "
        "(apt-get install chromium; .ci/run installs it)",
        allow_module_level=True,
    )

from playwright.sync_api import Browser, Page, Response
from playwright.sync_api import Error as PlaywrightError

SOON = 3.0
"""The delay of the job the operator discards before it is due."""
LATE = 2.0
"""How long past its time a discarded job is watched for, in case it runs anyway."""


@dataclass
class Stage:
    backend: Backend
    base: str


@pytest.fixture(params=["rq", "dramatiq"])
def stage(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stage]:
    probe_path = tmp_path / "probe.sqlite"
    journal_url = f"sqlite:///{tmp_path / 'journal.db'}"
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, str(probe_path))
    monkeypatch.setenv(journal.ENVIRONMENT_VARIABLE, journal_url)
    journal.configure(journal_url)
    probe = Probe(probe_path)
    with PrivateRedis(persistent=False) as server:
        dramatiq = with_address("dramatiq+redis://127.0.0.1/0", server.port)
        url = f"rq+{server.url}" if request.param == "rq" else dramatiq
        backend = Backend(url, probe, tmp_path, 30.0)
        try:
            with config.override(backend.adapter), dashboard_process(url, journal_url, tmp_path) as base:
                yield Stage(backend, base)
        finally:
            backend.close()
            probe.close()
            journal.close()


def shown(page: Page, address: str, wanted: Callable[[str], bool], what: str, timeout: float = 30.0) -> str:
    """Load ``address`` until its text satisfies ``wanted`` (the listings follow the backend)."""
    deadline = time.monotonic() + timeout
    while True:
        page.goto(address)
        text = page.inner_text("main")
        if wanted(text):
            return text
        assert time.monotonic() < deadline, f"timed out waiting for {what}; the page says:\n{text}"
        time.sleep(0.2)


def opened(response: Response | None) -> Response:
    assert response is not None
    return response


def test_an_operator_works_through_the_dashboard(stage: Stage) -> None:
    work, held = stage.backend.queue("work"), stage.backend.queue("held")
    worker = stage.backend.start_worker([work], wait=False)  # it starts while the browser does
    try:
        with chromium() as browser:
            see_it_through(stage, browser, worker, work, held)
    finally:
        worker.terminate()


def see_it_through(stage: Stage, browser: Browser, worker: WorkerProcess, work: str, held: str) -> None:
    backend, base = stage.backend, stage.base
    label = backend.label_for("browser")
    # Without the password the dashboard stays shut: a browser that has none to give (and,
    # headless, cannot prompt) gives up on the challenge; a wrong one gets the 401 page.
    with visitor(browser, user=None) as outsider, pytest.raises(PlaywrightError, match="INVALID_AUTH"):
        outsider.new_page().goto(base + "/")
    with visitor(browser, password="wrong") as outsider:
        page = outsider.new_page()
        assert opened(page.goto(base + "/")).status == 401
        assert page.inner_text("h1") == "Authentication required"

    backend.wait_until_consuming(worker, [work])
    with visitor(browser) as operator:
        page = operator.new_page()
        complaints: list[str] = []
        page.on("console", lambda message: message.type == "error" and complaints.append(message.text))
        assert opened(page.goto(base + "/")).status == 200
        assert page.is_visible("label.live"), "the dashboard's script did not run under its CSP"

        # Jobs enqueued on a queue no worker takes are listed as pending.
        for customer in ("alice@example.com", "bob@example.com"):
            RecordJob.set(queue=held).perform_later(label, customer)
        listing = shown(
            page,
            f"{base}/jobs?state=pending&queue={held}",
            lambda text: "alice@example.com" in text and "bob@example.com" in text,
            "the pending jobs",
        )
        assert listing.count("RecordJob") == 2

        # A failing job: its traceback is on its page; retry it, and it finishes.
        failing = UntilAllowedJob.set(queue=work).perform_later(label)
        shown(page, f"{base}/jobs?state=failed", lambda text: failing.job_id[:12] in text, "the failed job")
        page.click(f"a[href$='{failing.job_id}']")
        traceback = page.inner_text("pre.traceback")
        assert "Traceback" in traceback and "is not allowed yet" in traceback, traceback
        record(label, "allowed")
        page.click("button[value=retry]")
        assert "Retried" in page.inner_text("p.notice")
        shown(
            page,
            f"{base}/job/{failing.job_id}",
            lambda text: re.search(r"\bfinished\b", page.inner_text("h1")) is not None,
            "the retried job to finish",
        )
        assert [
            row.job_id for row in backend.probe.wait_for_count(label, 2, backend.timeout, kind="performed")
        ]

        # A scheduled job, discarded before its time, never runs.
        doomed_label = backend.label_for("browser-discard")
        doomed = RecordJob.set(queue=work, wait=SOON).perform_later(doomed_label)
        due = time.monotonic() + SOON
        shown(
            page, f"{base}/jobs?state=scheduled", lambda text: doomed.job_id[:12] in text, "the scheduled job"
        )
        page.locator("tr", has_text=doomed.job_id[:12]).locator("button[value=discard]").click()
        assert "Discarded job" in page.inner_text("p.notice")
        assert page.locator("tr", has_text=doomed.job_id[:12]).count() == 0

        # A paused queue's jobs wait; resumed, they run.
        page.goto(base + "/")
        page.click(f"button[aria-label='Pause {work}']")
        assert f"Paused queue {work}" in page.inner_text("p.notice")
        time.sleep(PAUSE_BOUND)
        waiting_label = backend.label_for("browser-paused")
        waiting = RecordJob.set(queue=work).perform_later(waiting_label)
        shown(
            page, f"{base}/jobs?state=pending&queue={work}", lambda t: waiting.job_id[:12] in t, "paused job"
        )
        time.sleep(max(0.0, due + LATE - time.monotonic()))
        assert backend.probe.count(waiting_label) == 0, "a paused queue's job ran"
        assert backend.probe.count(doomed_label) == 0, "the discarded job ran"
        page.goto(base + "/")
        page.click(f"button[aria-label='Resume {work}']")
        assert f"Resumed queue {work}" in page.inner_text("p.notice")
        backend.probe.wait_for_count(waiting_label, 1, backend.timeout)

        assert complaints == [], complaints  # no CSP violation, no failed asset

        # Signed out, the browser is refused even with the password, until it signs in again.
        page.click("text=Log out")
        assert page.inner_text("h1") == "You are signed out"
        assert opened(page.goto(base + f"/jobs?state=failed&queue={work}")).status == 401
        page.click("text=Sign in again")
        assert page.url == base + "/" and page.inner_text("h1") == "Queues"
