"""Django set up for the tests of ``jobadapter.django`` (the project in ``tests/django_site``).

Importing this module, once per test process, creates the PostgreSQL databases
``jobadapter_django_<random hex>`` and ``…_other`` (dropped when the process exits), creates
the test models' tables, and sets ``DJANGO_SITE_DATABASE`` so the workers a test starts use
the same databases.
"""

from __future__ import annotations

import atexit
import os
import uuid

import django
import psycopg
from django.core.management import call_command

SERVER = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


def _create(names: list[str]) -> None:
    with psycopg.connect(SERVER, autocommit=True) as server:
        for name in names:
            server.execute(f'CREATE DATABASE "{name}"')


def _drop(names: list[str]) -> None:
    with psycopg.connect(SERVER, autocommit=True) as server:
        for name in names:
            server.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if "DJANGO_SITE_DATABASE" not in os.environ:
    DATABASE = f"jobadapter_django_{uuid.uuid4().hex[:12]}"
    NAMES = [DATABASE, f"{DATABASE}_other"]
    _create(NAMES)
    atexit.register(_drop, NAMES)
    os.environ["DJANGO_SITE_DATABASE"] = DATABASE
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.django_site.settings")
django.setup()
for alias in ("default", "other"):
    call_command("migrate", run_syncdb=True, database=alias, verbosity=0)
