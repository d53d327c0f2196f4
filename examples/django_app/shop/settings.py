"""A small shop on PostgreSQL whose jobs run on RQ, Celery or Dramatiq: JOBADAPTER_URL decides."""

from __future__ import annotations

import importlib.util
import os

SECRET_KEY = "an example, not a secret"
DEBUG = True
ALLOWED_HOSTS = ["*"]
USE_TZ = True
ROOT_URLCONF = "shop.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = ["jobadapter.django", "orders"]
if importlib.util.find_spec("django.tasks") is None:  # Django 5.2 LTS: the django-tasks backport
    INSTALLED_APPS.insert(0, "django_tasks")

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("SHOP_DATABASE", "shop"),
        "USER": os.environ.get("SHOP_DATABASE_USER", "postgres"),
        "HOST": os.environ.get("SHOP_DATABASE_HOST", "127.0.0.1"),
        "CONN_HEALTH_CHECKS": True,
    }
}

# One URL picks the backend: rq+redis://…, celery+amqp://…, dramatiq+redis://…
JOBADAPTER = {
    "URL": os.environ.get("JOBADAPTER_URL", "rq+redis://127.0.0.1:6379/0"),
    "JOURNAL": os.environ.get("JOBADAPTER_JOURNAL"),
    "APP": "shop",
    "ENQUEUE_AFTER_COMMIT": True,
}

# django.tasks through the same adapter (no OPTIONS url: the one above).
TASKS = {"default": {"BACKEND": "jobadapter.django.TaskBackend", "QUEUES": ["default", "mailers"]}}

# Every mail is queued, and the worker hands it to the console backend (SMTP in production).
EMAIL_BACKEND = "jobadapter.django.mail.QueuedEmailBackend"
JOBADAPTER_EMAIL_BACKEND = os.environ.get(
    "SHOP_EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend"
)
DEFAULT_FROM_EMAIL = "Shop <shop@example.com>"
