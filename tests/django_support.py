"""Django set up for the tests of ``jobadapter.django`` (the project in ``tests/django_site``)."""

from __future__ import annotations

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.django_site.settings")
django.setup()
