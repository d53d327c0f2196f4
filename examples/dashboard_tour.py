"""A few minutes of real work on RQ, then screenshots of the dashboard (docs/images/).

    uv run python -m examples.dashboard_tour --minutes 12 --images docs/images

It starts a redis-server of its own and a SQLite journal in a temporary
folder, a ``jobadapter worker`` on the ``billing`` and ``mail`` queues of
`examples.operations_app`, and enqueues customers' charges and receipts at a
rate that rises and falls (``ChargeCard`` fails for mallory, whose bank
declines). For the last fifth of the run the ``mail`` queue is paused, so
its receipts wait. Then it serves ``jobadapter dashboard`` and saves the
main pages as PNG files, taken by headless Chromium. Needs Debian's
``chromium`` package. One declined charge is retried first (declined again),
so its page shows a history of two runs.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jobadapter import config, journal
from jobadapter.dashboard.browser import chromium, dashboard_process, visitor
from jobadapter.faults.brokers import PrivateRedis
from jobadapter.operations import JobFilter, JobState

CUSTOMERS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=12.0, help="how long jobs are enqueued (default 12)")
    parser.add_argument("--images", type=Path, default=Path("docs/images"), help="where the PNGs go")
    options = parser.parse_args()
    options.images.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dashboard-tour-") as folder, PrivateRedis() as redis:
        workdir = Path(folder)
        url = f"rq+{redis.url}"
        journal_url = f"sqlite:///{workdir / 'jobs.db'}"
        os.environ[journal.ENVIRONMENT_VARIABLE] = journal_url
        journal.configure(journal_url)
        adapter = config.configure(url=url)
        command = [sys.executable, "-m", "jobadapter.cli", "worker", "--url", url]
        command += ["--app", "examples.operations_app", "--queues", "billing,mail", "--concurrency", "2"]
        worker = subprocess.Popen(
            command,
            stdout=(workdir / "worker.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        try:
            work_for(options.minutes * 60)
            active = journal.active()
            if active is not None:
                active.flush()
            with dashboard_process(url, journal_url, workdir) as base:
                photograph(base, options.images)
        finally:
            worker.terminate()
            worker.wait(20)
            adapter.close()
            journal.close()


def work_for(seconds: float) -> None:
    import examples.operations_app as app  # the worker's module: jobs named as the worker knows them

    chance = random.Random(16)
    started = time.monotonic()
    paused = False
    while (elapsed := time.monotonic() - started) < seconds:
        if not paused and elapsed > 0.8 * seconds:
            config.adapter().pause("mail")
            paused = True
        rate = 2 + 1.5 * math.sin(elapsed / seconds * 3 * math.pi)  # charges per second, rising and falling
        for _ in range(chance.randint(0, max(1, round(rate * 2)))):
            who = chance.choice(CUSTOMERS) if chance.random() > 0.03 else "mallory"
            address = f"{who}@example.com"
            app.ChargeCard.perform_later(address, chance.randrange(200, 20_000, 50))
            app.SendReceipt.perform_later(address)
        if chance.random() < 0.05:
            app.SendReceipt.set(wait=3600).perform_later(f"digest-{chance.choice(CUSTOMERS)}@example.com")
        time.sleep(1.0)
        print(f"\r{int(elapsed)} s of {int(seconds)}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)


def retried_once(job_id: str) -> None:
    """An operator retries a declined charge; it is declined again: a job with two runs."""
    adapter, active = config.adapter(), journal.active()
    assert active is not None
    adapter.retry([job_id])
    deadline = time.monotonic() + 30
    while adapter.find(job_id).state is not JobState.FAILED or len(active.executions(job_id)) < 2:
        assert time.monotonic() < deadline, "the retried charge did not fail again"
        active.flush()
        time.sleep(0.1)


def photograph(base: str, images: Path) -> None:
    failed = config.adapter().jobs(JobState.FAILED, filter=JobFilter(queue="billing"), limit=1)
    if failed:
        retried_once(failed[0].job_id)
    with chromium() as browser, visitor(browser) as operator:
        page = operator.new_page()
        shots = {
            "dashboard-queues.png": base + "/",
            "dashboard-failed.png": base + "/jobs?state=failed",
            "dashboard-pending.png": base + "/jobs?state=pending&queue=mail",
            "dashboard-scheduled.png": base + "/jobs?state=scheduled",
            "dashboard-confirm.png": base + "/bulk?action=retry&state=failed&queue=billing",
        }
        if failed:
            shots["dashboard-job.png"] = f"{base}/job/{failed[0].job_id}"
        for name, address in shots.items():
            page.goto(address)
            page.screenshot(path=str(images / name), full_page=True)
            print(f"saved {images / name}", file=sys.stderr)


if __name__ == "__main__":
    main()
