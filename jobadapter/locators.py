"""Model references as global ids: ``gid://APP/module.Model/42``.

A job should take a record, not a copy of it: a copy goes stale while the job
waits in its queue. So an instance of a registered model travels as
``{"gid": "gid://APP/<name>/<id>"}`` and is loaded again, fresh, when the job
performs, through the locator registered for its class. ``<name>`` defaults to
the registered class's ``module.QualName``; ``<id>`` is ``str(key(record))``,
URL-quoted. Instances of subclasses travel through their nearest registered
base class, because ORMs subclass models (single-table inheritance, proxies).

Like Ruby's GlobalID, the locator receives the id as text and converts it
itself: the wire has no types of its own for ids, and the model knows its key.

When the record is gone (the locator returned ``None`` or raised
`LookupError`, e.g. a ``KeyError`` or Django's ``DoesNotExist``), loading raises
`RecordNotFound`; any other failure raises `DeserializationError` with the
cause chained, so ``discard_on(RecordNotFound)`` can sit beside
``retry_on(DeserializationError)`` for a database that is briefly down.

APP (``set_app_name``, or ``configure(app=...)``) says which application wrote
the id, for people reading payloads; loading accepts any app, since every
process that shares a queue registers the same models.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, unquote

from jobadapter.errors import ConfigurationError, DeserializationError, RecordNotFound

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

M = TypeVar("M")

_SCHEME = "gid://"


@dataclass(frozen=True)
class Locator:
    """One registration: the gid ``name``, the model class, and how to find and identify its records."""

    name: str
    model: type
    locate: Callable[[str], object]
    key: Callable[[Any], object]


# Read on every enqueue and perform without the lock: a dict read is atomic,
# and registration replaces entries rather than mutating them.
_by_model: dict[type, Locator] = {}
_by_name: dict[str, Locator] = {}
_lock = threading.Lock()
_app_name = "jobadapter"


def set_app_name(name: str) -> None:
    """The APP part of every global id written from now on (default ``jobadapter``)."""
    global _app_name
    if not isinstance(name, str) or not name or "/" in name:
        raise ConfigurationError(
            f"the global id app name must be a non-empty string without '/', not {name!r}"
        )
    _app_name = name


def app_name() -> str:
    """The APP part written into global ids."""
    return _app_name


def register(
    model: type[M],
    *,
    locate: Callable[[str], M | None],
    key: Callable[[M], object],
    name: str | None = None,
) -> None:
    """Let instances of ``model`` (and of its subclasses) travel as global ids.

    ``locate(id_text)`` returns the record or ``None``; ``key(record)`` returns
    its id (``str()`` of it goes into the gid). Registering the same model
    again replaces its locator; a name already taken by another model raises
    `ConfigurationError`.
    """
    if not isinstance(model, type):
        raise ConfigurationError(f"locators.register needs a class, not {model!r}")
    locator_name = f"{model.__module__}.{model.__qualname__}" if name is None else name
    if not isinstance(locator_name, str) or not locator_name or "/" in locator_name:
        raise ConfigurationError(
            f"a locator name must be a non-empty string without '/', not {locator_name!r}"
        )
    with _lock:
        existing = _by_name.get(locator_name)
        if existing is not None and existing.model is not model:
            raise ConfigurationError(
                f"locator name {locator_name!r} is already registered for "
                f"{existing.model.__module__}.{existing.model.__qualname__}"
            )
        _forget(model)
        locator = Locator(locator_name, model, locate, key)
        _by_model[model] = locator
        _by_name[locator_name] = locator


def unregister(model: type) -> None:
    """Forget the locator of ``model``, if any."""
    with _lock:
        _forget(model)


def _forget(model: type) -> None:
    previous = _by_model.pop(model, None)
    if previous is not None:
        del _by_name[previous.name]


def global_id(value: object) -> str | None:
    """The global id of ``value``, or None when no class in its MRO has a locator.

    Raises `ValueError` for a record without a key yet (unsaved): its gid
    could never be located.
    """
    if not _by_model:
        return None
    for klass in type(value).__mro__:
        locator = _by_model.get(klass)
        if locator is not None:
            key = locator.key(value)
            if key is None:
                raise ValueError(f"the record has no {locator.name} key yet: save it before enqueueing")
            return f"{_SCHEME}{_app_name}/{locator.name}/{quote(str(key), safe='')}"
    return None


def locate(gid: object) -> object:
    """Load the record ``gid`` names: `RecordNotFound` if it is gone, `DeserializationError` otherwise."""
    if not isinstance(gid, str) or not gid.startswith(_SCHEME):
        raise DeserializationError(f"malformed global id {gid!r:.200}: expected gid://APP/Model/id")
    app, _, path = gid[len(_SCHEME) :].partition("/")
    name, _, quoted_id = path.rpartition("/")
    if not app or not name or not quoted_id:
        raise DeserializationError(f"malformed global id {gid!r:.200}: expected gid://APP/Model/id")
    locator = _by_name.get(name)
    if locator is None:
        raise DeserializationError(
            f"no locator is registered for {name!r} (in {gid}): register it with jobadapter.locators.register"
        )
    try:
        id_text = unquote(quoted_id, errors="strict")
    except UnicodeDecodeError as error:
        raise DeserializationError(f"malformed global id {gid!r:.200}: the id is not UTF-8") from error
    try:
        found = locator.locate(id_text)
    except LookupError as error:
        raise RecordNotFound(f"{gid} not found") from error
    except Exception as error:
        raise DeserializationError(f"could not load {gid}: {type(error).__name__}: {error}") from error
    if found is None:
        raise RecordNotFound(f"{gid} not found")
    return found


def register_sqlalchemy(
    model: type[M], session_factory: Callable[[], Session], *, name: str | None = None
) -> None:
    """A locator for a SQLAlchemy mapped class whose primary key is a single column.

    The id text is converted with the column type's ``python_type`` and the row
    loaded with ``session.get`` in a fresh session from ``session_factory``,
    which is then closed: the row arrives detached, its columns loaded, so
    relationships a job needs must be loaded eagerly or through the job's own
    session. A record travels by its identity, so it must be flushed first.
    """
    from sqlalchemy import inspect as inspect_mapped

    mapper = inspect_mapped(model)
    if len(mapper.primary_key) != 1:
        raise ConfigurationError(
            f"{model.__qualname__} has a composite primary key: register a locator for it by hand"
        )
    try:
        convert: Callable[[str], object] = mapper.primary_key[0].type.python_type
    except NotImplementedError as error:
        raise ConfigurationError(
            f"the primary key type of {model.__qualname__} has no Python type: register a locator by hand"
        ) from error

    def locate_row(id_text: str) -> M | None:
        with session_factory() as session:
            return session.get(model, convert(id_text))

    def key(row: M) -> object:
        identity = inspect_mapped(row).identity
        return None if identity is None else identity[0]

    register(model, locate=locate_row, key=key, name=name)


def register_django(model: Any, *, name: str | None = None) -> None:
    """A locator for a Django model: by ``pk``, through its default manager.

    Django itself converts the id text for the lookup, so any primary key type
    works. Typed ``Any`` so this module needs no Django to import or type-check.
    """
    register(
        model,
        locate=lambda id_text: model._default_manager.filter(pk=id_text).first(),
        key=lambda record: record.pk,
        name=name,
    )
