"""How fast the dashboard's pages render with 100,000 jobs in a SQLite journal.

    uv run --frozen python benchmarks/dashboard_pages.py [--rows 100000] [--repeat 20]

A SQLite journal in a temporary folder is filled with ``--rows`` jobs (80 %
finished over the last day, 6 % of them in the last hour; 10 % pending, 5 %
scheduled, 5 % failed; five queues, six job classes, customers' addresses in
the arguments). ``jobadapter dashboard`` then serves them for Dramatiq on
RabbitMQ (127.0.0.1:5672, guest), whose listings all come from the journal
(RabbitMQ cannot list a queue), and each page is fetched ``--repeat`` times
over HTTP after one warm-up fetch. The target is a list page under 300 ms.
Nothing is published to RabbitMQ; counting a queue declares it (with its
``.DQ`` and ``.XQ`` queues), so the queues are named ``dq-bench-<run>-…`` and
deleted at the end.
"""

from __future__ import annotations

import argparse
import base64
import random
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from jobadapter import config
from jobadapter.dashboard.browser import dashboard_process
from jobadapter.journal.schema import jobs, metadata
from jobadapter.journal.store import Journal
from jobadapter.operations import JobState, arguments_text

URL = "dramatiq+amqp://guest:guest@127.0.0.1:5672"
RUN = f"dq-bench-{uuid.uuid4().hex[:8]}"
QUEUES = tuple(f"{RUN}-{name}" for name in ("billing", "mail", "reports", "imports", "webhooks"))
"""Names of this run's own: the queues page declares them on RabbitMQ; they are deleted at the end."""
CLASS = "shop.jobs.ChargeCard"
CLASSES = ("ChargeCard", "SendReceipt", "BuildReport", "ImportCsv", "DeliverWebhook", "RefreshCache")
TARGET_MS = 300.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=100_000, help="jobs in the journal (default 100000)")
    parser.add_argument("--repeat", type=int, default=20, help="fetches per page (default 20)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dashboard-bench-") as folder:
        workdir = Path(folder)
        journal_url = f"sqlite:///{workdir / 'jobs.db'}"
        started = time.monotonic()
        sample_id = fill(journal_url, options.rows)
        print(f"{options.rows} journal rows written in {time.monotonic() - started:.1f} s", file=sys.stderr)
        with cleaned_up(QUEUES), dashboard_process(URL, journal_url, workdir, password="bench") as base:
            pages = {
                "queues (counts + last-hour charts)": "/",
                "pending, page 1": "/jobs?state=pending",
                "finished, page 1": "/jobs?state=finished",
                "finished, page 1000 (offset 49,950)": "/jobs?state=finished&page=1000",
                "finished, queue + class filter": f"/jobs?state=finished&queue={QUEUES[0]}&job_class={CLASS}",
                "finished, argument search": "/jobs?state=finished&search=alice7",
                "finished, search matching nothing": "/jobs?state=finished&search=no-such-customer",
                "job detail": f"/job/{sample_id}",
            }
            heading = f"page ({options.rows:,} journal rows, SQLite)"
            print(f"| {heading} | rows shown | median ms | p95 ms | max ms |")
            print("|---|---:|---:|---:|---:|")
            worst = 0.0
            for name, path in pages.items():
                times, shown = fetch(base + path, options.repeat)
                ordered = sorted(times)
                p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
                if path.startswith("/jobs"):
                    worst = max(worst, p95)
                median = statistics.median(times)
                print(f"| {name} | {shown} | {median:.1f} | {p95:.1f} | {max(times):.1f} |", flush=True)
            verdict = "meets" if worst < TARGET_MS else "MISSES"
            print(f"\nslowest list page p95: {worst:.1f} ms: {verdict} the {TARGET_MS:.0f} ms target")


@contextmanager
def cleaned_up(queues: tuple[str, ...]) -> Iterator[None]:
    try:
        yield
    finally:
        adapter = config.build_adapter(URL)
        try:
            adapter.purge(list(queues))
        finally:
            adapter.close()


def fetch(address: str, repeat: int) -> tuple[list[float], int]:
    """Milliseconds per fetch, and how many jobs the page listed."""
    request = urllib.request.Request(
        address, headers={"Authorization": "Basic " + base64.b64encode(b"admin:bench").decode()}
    )
    times = []
    for attempt in range(repeat + 1):
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
            assert response.status == 200, (address, response.status)
        elapsed = (time.perf_counter() - started) * 1000
        if attempt:  # the first fetch warms SQLite's page cache and the templates
            times.append(elapsed)
    return times, body.count(b'class="job-class"') or body.count(b'class="queue"')


def fill(journal_url: str, rows: int) -> str:
    """Write ``rows`` jobs in bulk; returns one failed job's id (for the detail page)."""
    journal = Journal(journal_url)
    try:
        metadata.create_all(journal.engine)
        chance = random.Random(100_000)
        now = datetime.now(timezone.utc)
        batch: list[dict[str, Any]] = []
        sample = ""
        with journal.engine.begin() as connection:
            for number in range(rows):
                row = _row(chance, now, number, rows)
                if row["state"] == JobState.FAILED.value and not sample:
                    sample = row["job_id"]
                batch.append(row)
                if len(batch) == 10_000:
                    connection.execute(jobs.insert(), batch)
                    batch = []
            if batch:
                connection.execute(jobs.insert(), batch)
        return sample
    finally:
        journal.close()


def _row(chance: random.Random, now: datetime, number: int, rows: int) -> dict[str, Any]:
    share = number / rows
    state = (
        JobState.FINISHED
        if share < 0.80
        else JobState.PENDING
        if share < 0.90
        else JobState.SCHEDULED
        if share < 0.95
        else JobState.FAILED
    )
    customer = f"{chance.choice(('alice', 'bob', 'carol', 'dave', 'erin'))}{number % 997}@example.com"
    arguments = [customer, chance.randrange(100, 50_000)]
    recent = chance.random() < 0.06
    enqueued = now - timedelta(seconds=chance.uniform(0, 3600 if recent else 86_400))
    started = enqueued + timedelta(seconds=chance.uniform(0.001, 2.0))
    ended = state in (JobState.FINISHED, JobState.FAILED)
    failed = state is JobState.FAILED
    return {
        "job_id": str(uuid.UUID(int=chance.getrandbits(128))),
        "job_class": f"shop.jobs.{chance.choice(CLASSES)}",
        "queue": chance.choice(QUEUES),
        "priority": None,
        "state": state.value,
        "arguments": arguments,
        "keyword_arguments": {},
        "search": arguments_text(arguments, {}).lower(),
        "enqueued_at": enqueued,
        "scheduled_at": now + timedelta(hours=1) if state is JobState.SCHEDULED else None,
        "started_at": started if ended else None,
        "finished_at": started + timedelta(seconds=chance.uniform(0.001, 0.5)) if ended else None,
        "executions": 1 if ended else 0,
        "outcome": "failed" if failed else "performed" if ended else None,
        "error_class": "CardDeclined" if failed else None,
        "error_message": f"card of {customer} declined" if failed else None,
        "error_traceback": "Traceback (most recent call last):\n  ...\nCardDeclined" if failed else None,
        "worker": "worker-1:4242" if ended else None,
        "provider_job_id": None,
        "result": None,
        "has_result": False,
        "step": 2 if ended else 0,
        "updated_at": now,
    }


if __name__ == "__main__":
    main()
