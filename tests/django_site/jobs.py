"""Job classes the ``jobadapter.django`` app autodiscovers (``jobs`` modules of installed apps)."""

from __future__ import annotations

from pathlib import Path

from django.db import connection

from jobadapter import Job, RecordNotFound, discard_on
from tests.django_site.models import Order


@discard_on(RecordNotFound)
class ShipOrder(Job):
    """Writes the order's reference and the database server process that read it to ``path``."""

    def perform(self, order: Order, path: str) -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            (backend,) = cursor.fetchone()
        with Path(path).open("a") as shipped:
            shipped.write(f"{order.reference} {backend}\n")
