"""Django models as job arguments: ``gid://<APP>/<app_label>.<Model>/<pk>``.

Registered for every installed model when the ``jobadapter.django`` app is ready. A
record read from a database other than the one its model's reads are routed to carries
that alias: ``gid://shop/shop.Order/42%40replica`` is row 42 of the ``replica`` database.
The primary key's text is URL-quoted before the alias is appended, so an ``@`` inside a
string key never reads as the separator. Django converts the key text for the lookup, so
integer, UUID and string keys all work. A deleted row is `RecordNotFound` at load.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote

from django.apps import apps
from django.db import models, router

from jobadapter import locators

_AT = "@"


def register_models() -> None:
    """A locator for every installed model (an abstract model has no rows; a proxy model or a
    child of a concrete model gets its own, named after its own label)."""
    for model in apps.get_models():
        register(model)


def register(model: type[models.Model]) -> None:
    """Let ``model``'s records travel as global ids named by its label (``shop.Order``)."""
    locators.register(
        model,
        locate=lambda id_text: _locate(model, id_text),
        key=lambda record: _key(model, record),
        name=model._meta.label,
    )


def _key(model: type[models.Model], record: Any) -> str | None:
    if record.pk is None:
        return None
    text = quote(str(record.pk), safe="")
    alias = record._state.db
    if alias is not None and alias != router.db_for_read(model):
        return f"{text}{_AT}{alias}"
    return text


def _locate(model: type[models.Model], id_text: str) -> Any:
    quoted, _, alias = id_text.partition(_AT)
    manager = model._default_manager
    found = manager.using(alias) if alias else manager.all()
    return found.filter(pk=unquote(quoted)).first()
