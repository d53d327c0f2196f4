"""Settings of the Django project the Django integration's tests run (and start workers) in."""

from __future__ import annotations

import importlib.util
import os

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
"""A PostgreSQL database the test created (README: what the tests use on the shared servers)."""
DATABASES = (
    {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": DATABASE_NAME,
            "USER": "postgres",
            "HOST": "127.0.0.1",
            "PORT": "5432",
            "CONN_HEALTH_CHECKS": True,
        }
    }
    if DATABASE_NAME
    else {}
)

TASKS = {
    "default": {
        "BACKEND": "jobadapter.django.TaskBackend",
        "QUEUES": ["default", "mail"],
    }
}

JOBADAPTER = {"APP": "site"}
