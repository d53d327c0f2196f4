"""The ``jobadapter.django`` app: model arguments by global id (integer, UUID and string keys,
another database, a deleted row), ``settings.JOBADAPTER``, ``jobs`` autodiscovery, and
``manage.py jobadapter_worker`` surviving a database connection closed under it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from jobadapter import RecordNotFound, config
from jobadapter.arguments import deserialize_arguments, serialize_arguments
from jobadapter.django import settings as jobadapter_settings
from jobadapter.faults.brokers import SHARED_POSTGRESQL, PrivateRedis
from jobadapter.testing import JobRecorder
from tests import django_support
from tests.django_site.jobs import ShipOrder
from tests.django_site.models import Order, Tag, Ticket

ROOT = Path(__file__).resolve().parent.parent


def _round_trip(value: object) -> object:
    (wire,), _ = serialize_arguments([value], {})
    (loaded,), _ = deserialize_arguments([wire], {})
    return loaded


def _gid(value: object) -> str:
    (wire,), _ = serialize_arguments([value], {})
    assert isinstance(wire, dict)
    return str(wire["gid"])


def test_a_model_travels_by_its_label_and_key_and_loads_fresh() -> None:
    order = Order.objects.create(reference="first")
    assert _gid(order) == f"gid://jobadapter/django_site.Order/{order.pk}"
    Order.objects.filter(pk=order.pk).update(reference="changed meanwhile")
    loaded = _round_trip(order)
    assert isinstance(loaded, Order) and loaded.reference == "changed meanwhile"


def test_uuid_and_string_keys_with_separators_work() -> None:
    ticket = Ticket.objects.create(title="t")
    tag = Tag.objects.create(name="a@b/c%d")
    assert _gid(ticket) == f"gid://jobadapter/django_site.Ticket/{ticket.pk}"
    assert _round_trip(ticket) == ticket
    loaded = _round_trip(tag)
    assert isinstance(loaded, Tag) and loaded.name == "a@b/c%d"


def test_a_record_of_another_database_loads_from_it() -> None:
    here = Order.objects.create(reference="default row")
    there = Order(pk=here.pk, reference="other row")
    there.save(using="other")
    assert _gid(there).endswith(f"/django_site.Order/{here.pk}%40other")
    loaded = _round_trip(there)
    assert isinstance(loaded, Order) and loaded.reference == "other row" and loaded._state.db == "other"
    assert isinstance(_round_trip(here), Order) and _round_trip(here).reference == "default row"  # type: ignore[attr-defined]


def test_a_deleted_row_is_record_not_found_and_discard_on_drops_the_job(
    jobs: JobRecorder, tmp_path: Path
) -> None:
    order = Order.objects.create(reference="gone")
    (wire,), _ = serialize_arguments([order], {})
    order.delete()
    with pytest.raises(RecordNotFound, match=r"django_site\.Order"):
        deserialize_arguments([wire], {})
    kept = Order.objects.create(reference="kept")
    ShipOrder.perform_later(kept, str(tmp_path / "shipped"))
    kept.delete()
    jobs.perform_enqueued()
    [performed] = jobs.performed
    assert performed.outcome == "discarded" and not (tmp_path / "shipped").exists()


def test_settings_are_checked_by_key() -> None:
    refused = [
        ({"URL": "rq+redis://", "QUEUE": "x"}, r"unknown key\(s\) QUEUE"),
        ({"URL": 6379}, r"JOBADAPTER\['URL'\] must be a string"),
        ({"AUTODISCOVER": "jobs"}, "list of module names"),
    ]
    for given, message in refused:
        with override_settings(JOBADAPTER=given), pytest.raises(ImproperlyConfigured, match=message):
            jobadapter_settings.read()
    with override_settings(JOBADAPTER={"URL": "inline://", "AUTODISCOVER": ["jobs", "tasks"]}):
        chosen = jobadapter_settings.read()
    assert (chosen.url, chosen.autodiscover, chosen.journal) == ("inline://", ("jobs", "tasks"), None)


def test_the_app_configures_jobadapter_and_autodiscovers_jobs_modules() -> None:
    listed = subprocess.run(
        [
            sys.executable,
            "-m",
            "django",
            "shell",
            "-c",
            "from jobadapter import locators, registry; "
            "print(locators.app_name(), sorted(registry.registered()))",
        ],
        cwd=ROOT,
        env={**os.environ, **django_support.ENVIRONMENT, "DJANGO_SITE_APP": "site"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "\nsite [" in listed.stdout  # JOBADAPTER["APP"]
    assert "tests.django_site.jobs.ShipOrder" in listed.stdout
    assert "tests.django_site.tasks.add" not in listed.stdout  # tasks modules: the worker's only


def test_the_worker_command_survives_a_database_connection_closed_between_jobs(tmp_path: Path) -> None:
    shipped = tmp_path / "shipped"
    log = tmp_path / "worker.log"
    first, second = Order.objects.create(reference="one"), Order.objects.create(reference="two")
    with PrivateRedis(persistent=False) as redis:
        url = f"dramatiq+{redis.url}"  # Celery closes connections itself (its Django fixup)
        config.configure(url=url)
        environment = {**os.environ, **django_support.ENVIRONMENT}
        command = [sys.executable, "-m", "django", "jobadapter_worker", "--url", url, "--queues", "default"]
        with log.open("wb") as output:
            worker = subprocess.Popen(
                command, cwd=ROOT, env=environment, stdout=output, stderr=subprocess.STDOUT
            )
        try:
            ShipOrder.perform_later(first, str(shipped))
            _until(lambda: _lines(shipped) == 1, worker, log)
            backend = int(shipped.read_text().split()[1])
            with psycopg.connect(SHARED_POSTGRESQL, autocommit=True) as server:
                server.execute("SELECT pg_terminate_backend(%s)", (backend,))
            ShipOrder.perform_later(second, str(shipped))
            _until(lambda: _lines(shipped) == 2, worker, log)
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(20)
            config.reset()
    lines = shipped.read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["one", "two"]
    assert lines[0].split()[1] != lines[1].split()[1]
    assert "Error performing" not in log.read_text()


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _until(condition: object, worker: subprocess.Popen[bytes], log: Path) -> None:
    assert callable(condition)
    deadline = time.monotonic() + 20
    while not condition():
        assert worker.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)
