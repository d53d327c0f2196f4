"""Django set up for the tests of ``jobadapter.django`` (the project in ``tests/django_site``).

Importing this module, once per test process, creates the PostgreSQL databases
``jobadapter_django_<random hex>`` and ``…_other`` (dropped when the process exits), sets
Django up on them and creates the test models' tables. `ENVIRONMENT` is what a Django process
a test starts (a worker, a shell) needs to use the same project and databases: it is not left
in this process's environment, where Celery would see ``DJANGO_SETTINGS_MODULE`` and set
Django up in the workers of every other test this process runs.
"""

from __future__ import annotations

import atexit
import os
import uuid

import django
from django.core.management import call_command

from jobadapter.faults.brokers import create_databases, drop_databases

DATABASE = f"jobadapter_django_{uuid.uuid4().hex[:12]}"
NAMES = [DATABASE, f"{DATABASE}_other"]
ENVIRONMENT = {"DJANGO_SETTINGS_MODULE": "tests.django_site.settings", "DJANGO_SITE_DATABASE": DATABASE}
create_databases(NAMES)
atexit.register(drop_databases, NAMES)
os.environ.update(ENVIRONMENT)
try:
    django.setup()
finally:
    for name in ENVIRONMENT:
        del os.environ[name]
for alias in ("default", "other"):
    call_command("migrate", run_syncdb=True, database=alias, verbosity=0)
