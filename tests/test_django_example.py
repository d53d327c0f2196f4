"""examples/django_app runs on RQ, Celery and Dramatiq with nothing changed but JOBADAPTER_URL:
a view places an order inside a transaction; the job that ships it, the django.tasks task that
writes its receipt and the welcome mail all run in ``manage.py jobadapter_worker``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from jobadapter.faults.brokers import PrivateRedis, postgresql_settings, scratch_postgresql

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "django_app"
PLACE_ORDER = (
    "from django.test import Client; "
    "print(Client().post('/orders/', {'email': 'ada@example.com', 'item': 'teapot'}).content.decode())"
)


@pytest.fixture
def database() -> Iterator[str]:
    with scratch_postgresql("jobadapter_django") as name:
        yield name


@pytest.mark.parametrize("backend", ["rq", "celery", "dramatiq"])
def test_the_example_runs_on_each_backend_by_its_url(backend: str, database: str, tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    with PrivateRedis(persistent=False) as redis:
        environment = {
            **os.environ,
            "JOBADAPTER_URL": f"{backend}+{redis.url}",
            "SHOP_DATABASE": database,
            "SHOP_DATABASE_USER": postgresql_settings(database).get("user", "postgres"),
            "SHOP_DATABASE_HOST": postgresql_settings(database).get("host", "127.0.0.1"),
            "DJANGO_SETTINGS_MODULE": "shop.settings",
        }
        environment.pop("JOBADAPTER_JOURNAL", None)
        manage = [sys.executable, "manage.py"]
        migrated = subprocess.run([*manage, "migrate", "-v", "0"], cwd=EXAMPLE, env=environment, timeout=60)
        assert migrated.returncode == 0
        with log.open("wb") as output:
            worker = subprocess.Popen(
                [*manage, "jobadapter_worker"],
                cwd=EXAMPLE,
                env=environment,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        try:
            placed = subprocess.run(
                [*manage, "shell", "-c", PLACE_ORDER],
                cwd=EXAMPLE,
                env=environment,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert placed.returncode == 0, placed.stderr[-2000:]
            assert '"order": 1' in placed.stdout
            deadline = time.monotonic() + 30
            while not _done(database, log):
                assert worker.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.1)
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(30)
    said = log.read_text()
    assert "Performing ShipOrder" in said and "Performing write_receipt" in said
    assert "Error performing" not in said


def _done(database: str, log: Path) -> bool:
    with psycopg.connect(**postgresql_settings(database)) as connection:
        row = connection.execute("SELECT shipped_at, receipt FROM orders_order WHERE id = 1").fetchone()
    mailed = log.exists() and "Thanks for your order." in log.read_text()
    return row is not None and row[0] is not None and row[1] == "Receipt for order 1: 1 × teapot" and mailed
