"""Custom argument types: ``serializers.register(Money, dump=..., load=...)``.

``dump`` turns the object into anything the argument serializer handles (it
is serialized recursively, so it may hold datetimes, Decimals, tuples…);
``load`` rebuilds the object from that. Types match exactly, like the
built-in ones: register each subclass that travels.
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
    name: str
    type_: type
    dump: Callable[[Any], object]
    load: Callable[[Any], object]


_by_type: dict[type, Serializer] = {}
_by_name: dict[str, Serializer] = {}
_lock = threading.Lock()


def register(
    type_: type[T], *, dump: Callable[[T], object], load: Callable[[Any], T], name: str | None = None
) -> None:
    """Let arguments of exactly ``type_`` travel, as ``{"custom": [name, dump(value)]}``."""
    from jobadapter.arguments import builtin_types

    if not isinstance(type_, type):
        raise ConfigurationError(f"serializers.register needs a class, not {type_!r}")
    if type_ in builtin_types():
        raise ConfigurationError(f"{type_.__qualname__} is supported natively; it cannot be re-registered")
    serializer_name = name or f"{type_.__module__}.{type_.__qualname__}"
    with _lock:
        existing = _by_name.get(serializer_name)
        if existing is not None and existing.type_ is not type_:
            raise ConfigurationError(
                f"serializer name {serializer_name!r} is already registered for {existing.type_!r}"
            )
        serializer = Serializer(serializer_name, type_, dump, load)
        previous = _by_type.pop(type_, None)
        if previous is not None:
            _by_name.pop(previous.name, None)
        _by_type[type_] = serializer
        _by_name[serializer_name] = serializer


def unregister(type_: type) -> None:
    """Forget the serializer of ``type_`` (tests use this)."""
    with _lock:
        serializer = _by_type.pop(type_, None)
        if serializer is not None:
            _by_name.pop(serializer.name, None)


def lookup_type(type_: type) -> Serializer | None:
    return _by_type.get(type_)


def lookup_name(name: str) -> Serializer | None:
    return _by_name.get(name)
