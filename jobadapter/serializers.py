"""Custom argument types: ``serializers.register(Money, dump=..., load=...)``.

A registered value travels as ``{"custom": [name, <dump(value), serialized>]}``.
What ``dump`` returns goes through the argument serializer again, so it may
hold anything an argument may (datetimes, Decimals, tuples, other custom
types); ``load`` receives that value rebuilt, with its exact types, and returns
the object.

Matching is by exact type, like the built-in types, so registering a class does
not quietly cover its subclasses: register each one that travels. That is also
how a subclass of a built-in type (a namedtuple, a ``str`` subclass) is made to
travel. The ``name`` is what the wire carries; it defaults to
``module.QualName`` and can be fixed explicitly so a class can move between
modules without stranding jobs already enqueued.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from jobadapter.errors import ConfigurationError

T = TypeVar("T")


@dataclass(frozen=True)
class Serializer:
    """One registration: the wire ``name``, the exact type it covers, and its two conversions."""

    name: str
    type_: type
    dump: Callable[[Any], object]
    load: Callable[[Any], object]


# Lookups run on every enqueue and perform without the lock: a dict read is
# atomic, and registration replaces entries rather than mutating them.
_by_type: dict[type, Serializer] = {}
_by_name: dict[str, Serializer] = {}
_lock = threading.Lock()


def register(
    type_: type[T], *, dump: Callable[[T], object], load: Callable[[Any], T], name: str | None = None
) -> None:
    """Let arguments of exactly ``type_`` travel, as ``{"custom": [name, dump(value)]}``.

    Registering the same type again replaces its serializer (a module reload
    does this). A name already taken by another type, or a type the argument
    serializer handles itself, raises `ConfigurationError`: either would make
    the wire ambiguous.
    """
    # Imported here because arguments.py imports this module when it loads.
    from jobadapter.arguments import NATIVE_TYPES

    if not isinstance(type_, type):
        raise ConfigurationError(f"serializers.register needs a class, not {type_!r}")
    if type_ in NATIVE_TYPES:
        raise ConfigurationError(
            f"{type_.__qualname__} is supported natively; it cannot be registered as a custom type"
        )
    serializer_name = f"{type_.__module__}.{type_.__qualname__}" if name is None else name
    if not isinstance(serializer_name, str) or not serializer_name:
        raise ConfigurationError(f"a serializer name must be a non-empty string, not {serializer_name!r}")
    with _lock:
        existing = _by_name.get(serializer_name)
        if existing is not None and existing.type_ is not type_:
            raise ConfigurationError(
                f"serializer name {serializer_name!r} is already registered for "
                f"{existing.type_.__module__}.{existing.type_.__qualname__}"
            )
        _forget(type_)
        serializer = Serializer(serializer_name, type_, dump, load)
        _by_type[type_] = serializer
        _by_name[serializer_name] = serializer


def unregister(type_: type) -> None:
    """Forget the serializer of ``type_``, if any (tests use this to stay independent)."""
    with _lock:
        _forget(type_)


def _forget(type_: type) -> None:
    previous = _by_type.pop(type_, None)
    if previous is not None:
        del _by_name[previous.name]


def for_type(type_: type) -> Serializer | None:
    """The serializer registered for exactly ``type_``."""
    return _by_type.get(type_)


def named(name: str) -> Serializer | None:
    """The serializer a payload names."""
    return _by_name.get(name)
