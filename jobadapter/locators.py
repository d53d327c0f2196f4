"""Model references as global ids: ``gid://APP/module.Model/42``.

A job should take a record, not a copy of it: the record is stored as a global
id and loaded again when the job performs, through a locator registered for
its class. Like Ruby's GlobalID, the locator receives the id as text and
converts it. A record that is gone (the locator returned None or raised
`LookupError`) raises `RecordNotFound`; any other failure raises
`DeserializationError`, cause chained, so ``discard_on(RecordNotFound)`` can
sit beside ``retry_on(DeserializationError)``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, unquote, urlsplit

from jobadapter.errors import ConfigurationError, DeserializationError, RecordNotFound

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

M = TypeVar("M")


@dataclass(frozen=True)
class Locator:
    name: str
    model: type
    locate: Callable[[str], object]
    key: Callable[[Any], object]


_by_model: dict[type, Locator] = {}
_by_name: dict[str, Locator] = {}
_lock = threading.Lock()
_app = ["jobadapter"]


def set_app_name(name: str) -> None:
    """The APP part of every global id written from now on (default ``jobadapter``)."""
    if not isinstance(name, str) or not name or "/" in name:
        raise ConfigurationError(
            f"the global id app name must be a non-empty string without '/', not {name!r}"
        )
    _app[0] = name


def app_name() -> str:
    return _app[0]


def register(
    model: type[M],
    *,
    locate: Callable[[str], M | None],
    key: Callable[[M], object],
    name: str | None = None,
) -> None:
    """Let instances of ``model`` (and its subclasses) travel as global ids."""
    if not isinstance(model, type):
        raise ConfigurationError(f"locators.register needs a class, not {model!r}")
    locator = Locator(name or f"{model.__module__}.{model.__qualname__}", model, locate, key)
    if "/" in locator.name:
        raise ConfigurationError(f"a locator name must not contain '/': {locator.name!r}")
    with _lock:
        unregister(model)
        _by_model[model] = locator
        _by_name[locator.name] = locator


def unregister(model: type) -> None:
    """Forget the locator of ``model``."""
    locator = _by_model.pop(model, None)
    if locator is not None:
        _by_name.pop(locator.name, None)


def global_id(value: object) -> str | None:
    """The global id of ``value`` if its class (or a base) has a locator, else None."""
    if not _by_model:
        return None
    for klass in type(value).__mro__:
        locator = _by_model.get(klass)
        if locator is not None:
            return f"gid://{_app[0]}/{locator.name}/{quote(str(locator.key(value)), safe='')}"
    return None


def locate(gid: object, where: str = "argument") -> object:
    """Load the record ``gid`` names; `RecordNotFound` when it is gone."""
    if not isinstance(gid, str):
        raise DeserializationError(f"malformed global id at {where}: {gid!r:.100}")
    parts = urlsplit(gid)
    model_name, _, raw_id = parts.path.lstrip("/").rpartition("/")
    if parts.scheme != "gid" or not parts.netloc or not model_name or not raw_id:
        raise DeserializationError(f"malformed global id at {where}: {gid!r:.100}")
    locator = _by_name.get(model_name)
    if locator is None:
        raise DeserializationError(f"no locator is registered for {model_name!r} ({gid} at {where})")
    try:
        found = locator.locate(unquote(raw_id))
    except LookupError as error:
        raise RecordNotFound(f"{gid} not found") from error
    except Exception as error:
        raise DeserializationError(f"could not load {gid}: {type(error).__name__}: {error}") from error
    if found is None:
        raise RecordNotFound(f"{gid} not found")
    return found


def register_sqlalchemy(model: type[M], session_factory: Callable[[], Session]) -> None:
    """A locator for a SQLAlchemy mapped class with a single-column primary key."""
    from sqlalchemy import inspect as inspect_model

    mapper = inspect_model(model)
    if len(mapper.primary_key) != 1:
        raise ConfigurationError(
            f"{model.__qualname__} has a composite primary key: register a locator by hand"
        )
    column = mapper.primary_key[0]
    convert: Callable[[str], object] = column.type.python_type

    def locate_row(pk: str) -> M | None:
        with session_factory() as session:
            row = session.get(model, convert(pk))
            if row is not None:
                session.expunge(row)
            return row

    def key(row: M) -> object:
        identity = inspect_model(row).identity
        if not identity:
            raise ConfigurationError(f"{row!r} has no primary key yet: flush it before enqueueing")
        return identity[0]

    register(model, locate=locate_row, key=key)


def register_django(model: Any) -> None:
    """A locator for a Django model (by ``pk``, through its default manager)."""
    register(
        model,
        locate=lambda pk: model._default_manager.filter(pk=pk).first(),
        key=lambda row: row.pk,
    )
