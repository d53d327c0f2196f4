"""Settings of the Django project the Django integration's tests run (and start workers) in."""

from __future__ import annotations

import importlib.util
import os

from jobadapter.faults.brokers import postgresql_settings

SECRET_KEY = "jobadapter-tests"
USE_TZ = True
TIME_ZONE = "UTC"
DEBUG = False

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "jobadapter.django",
    "tests.django_site",
]
if importlib.util.find_spec("django.tasks") is None:  # Django 5.2 LTS: the backport
    INSTALLED_APPS.insert(0, "django_tasks")

DATABASE_NAME = os.environ.get("DJANGO_SITE_DATABASE")
"""The PostgreSQL database the tests created, with ``<name>_other`` beside it
(tests/django_support.py; README: what the tests use on the shared servers)."""


def _postgresql(name: str) -> dict[str, object]:
    server = postgresql_settings(name)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
        "USER": server.get("user", "postgres"),
        "HOST": server.get("host", "127.0.0.1"),
        "PORT": server.get("port", "5432"),
    }


DATABASES = (
    {"default": _postgresql(DATABASE_NAME), "other": _postgresql(f"{DATABASE_NAME}_other")}
    if DATABASE_NAME
    else {}
)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

TASKS = {
    "default": {
        "BACKEND": "jobadapter.django.TaskBackend",
        "QUEUES": ["default", "mail"],
    }
}

JOBADAPTER = {"APP": os.environ.get("DJANGO_SITE_APP", "jobadapter")}
