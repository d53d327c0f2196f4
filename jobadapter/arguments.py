"""Job arguments to JSON and back, with their exact types.

Wire form: ``None``, ``bool``, ``int``, finite ``float``, ``str`` and ``list``
are written as themselves. Every other value is a JSON object with exactly one
key, its type tag::

    {"tuple": [...]}          {"set": [...]}            {"frozenset": [...]}
    {"dict": {"k": ...}}      (every key a str)         {"pairs": [[k, v], ...]} (any other keys)
    {"datetime": [iso, zone]} (zone: an IANA key or null; the offset is in iso)
    {"date": iso}  {"time": iso}  {"timedelta": [days, seconds, microseconds]}
    {"decimal": "1.50"}  {"uuid": "..."}  {"bytes": base64}  {"float": "nan"|"inf"|"-inf"}
    {"enum": ["module.QualName", value]}  {"gid": "gid://app/Model/id"}  {"custom": [name, value]}

Because a plain dict is always wrapped, no user key is ever reserved: a user's
``{"tuple": 1}`` travels as ``{"dict": {"tuple": 1}}``. Types match exactly
(``type(x) is tuple``), so a namedtuple or a ``str`` subclass is refused
rather than silently turned into its base type.
"""

from __future__ import annotations

import base64
import enum
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jobadapter import locators, serializers
from jobadapter.errors import DeserializationError, SerializationError

_PLAIN = (str, int, bool, type(None))


def serialize_arguments(
    args: Sequence[object], kwargs: Mapping[str, object]
) -> tuple[list[Any], dict[str, Any]]:
    """``(arguments, keyword_arguments)`` in wire form; `SerializationError` says where."""
    arguments = [_dump(value, f"arguments[{index}]") for index, value in enumerate(args)]
    keyword_arguments = {}
    for name, value in kwargs.items():
        keyword_arguments[name] = _dump(value, f"keyword_arguments[{name!r}]")
    return arguments, keyword_arguments


def deserialize_arguments(args: list[Any], kwargs: dict[str, Any]) -> tuple[list[object], dict[str, object]]:
    """Objects again; `DeserializationError` (or `RecordNotFound`) with the cause chained."""
    return (
        [_load(value, f"arguments[{index}]") for index, value in enumerate(args)],
        {name: _load(value, f"keyword_arguments[{name!r}]") for name, value in kwargs.items()},
    )


def _dump(value: object, where: str) -> Any:
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is float:
        if value != value or value in (float("inf"), float("-inf")):
            return {"float": repr(value)}
        return value
    if kind is list:
        elements: list[Any] = value  # type: ignore[assignment]
        return [_dump(item, f"{where}[{index}]") for index, item in enumerate(elements)]
    if kind is dict:
        items: dict[Any, Any] = value  # type: ignore[assignment]
        if all(type(key) is str for key in items):
            return {"dict": {key: _dump(item, f"{where}[{key!r}]") for key, item in items.items()}}
        return {
            "pairs": [
                [_dump(key, f"{where}<key {key!r}>"), _dump(item, f"{where}[{key!r}]")]
                for key, item in items.items()
            ]
        }
    dumper = _DUMPERS.get(kind)
    if dumper is not None:
        return dumper(value, where)
    if isinstance(value, enum.Enum):
        return {"enum": [f"{kind.__module__}.{kind.__qualname__}", _dump(value.value, f"{where}.value")]}
    custom = serializers.lookup_type(kind)
    if custom is not None:
        return {"custom": [custom.name, _dump(custom.dump(value), f"{where}<{custom.name}>")]}
    global_id = locators.global_id(value)
    if global_id is not None:
        return {"gid": global_id}
    raise SerializationError(
        f"cannot serialize object of type {kind.__qualname__!r} at {where}: "
        "register a serializer with jobadapter.serializers.register"
    )


def _dump_sequence(tag: str) -> Callable[[Any, str], Any]:
    def dump(value: Any, where: str) -> Any:
        return {tag: [_dump(item, f"{where}[{index}]") for index, item in enumerate(value)]}

    return dump


def _dump_datetime(value: datetime, where: str) -> Any:
    zone = value.tzinfo.key if isinstance(value.tzinfo, ZoneInfo) else None
    return {"datetime": [value.isoformat(), zone, value.fold]}


_DUMPERS: dict[type, Callable[[Any, str], Any]] = {
    tuple: _dump_sequence("tuple"),
    set: _dump_sequence("set"),
    frozenset: _dump_sequence("frozenset"),
    datetime: _dump_datetime,
    date: lambda value, where: {"date": value.isoformat()},
    time: lambda value, where: {"time": value.isoformat()},
    timedelta: lambda value, where: {"timedelta": [value.days, value.seconds, value.microseconds]},
    Decimal: lambda value, where: {"decimal": str(value)},
    uuid.UUID: lambda value, where: {"uuid": str(value)},
    bytes: lambda value, where: {"bytes": base64.b64encode(value).decode("ascii")},
}


def _load(value: Any, where: str) -> Any:
    kind = type(value)
    if kind in _PLAIN or kind is float:
        return value
    if kind is list:
        return [_load(item, f"{where}[{index}]") for index, item in enumerate(value)]
    if kind is not dict or len(value) != 1:
        raise DeserializationError(f"malformed argument at {where}: {value!r:.100}")
    ((tag, data),) = value.items()
    loader = _LOADERS.get(tag)
    if loader is None:
        raise DeserializationError(f"unknown argument type {tag!r} at {where}")
    try:
        return loader(data, where)
    except DeserializationError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, InvalidOperation, ZoneInfoNotFoundError) as error:
        raise DeserializationError(f"malformed {tag} argument at {where}: {data!r:.100}") from error


def _load_items(data: Any, where: str) -> list[Any]:
    if type(data) is not list:
        raise TypeError("expected a list")
    return [_load(item, f"{where}[{index}]") for index, item in enumerate(data)]


def _load_dict(data: Any, where: str) -> dict[str, Any]:
    if type(data) is not dict:
        raise TypeError("expected an object")
    return {key: _load(item, f"{where}[{key!r}]") for key, item in data.items()}


def _load_pairs(data: Any, where: str) -> dict[Any, Any]:
    loaded: dict[Any, Any] = {}
    for key, item in data:
        loaded_key = _load(key, f"{where}<key>")
        loaded[loaded_key] = _load(item, f"{where}[{loaded_key!r}]")
    return loaded


def _load_datetime(data: Any, where: str) -> datetime:
    text, zone, fold = data
    moment = datetime.fromisoformat(text)
    if zone is not None:
        moment = moment.astimezone(ZoneInfo(zone))
    return moment.replace(fold=fold)


def _load_float(data: Any, where: str) -> float:
    if data not in ("nan", "inf", "-inf"):
        raise ValueError(data)
    return float(data)


def _load_enum(data: Any, where: str) -> enum.Enum:
    name, raw = data
    enum_class = _imported_enum(name)
    if enum_class is None:
        raise DeserializationError(
            f"enum class {name!r} at {where} is not defined by any imported module: "
            "import it in the worker's --app modules"
        )
    return enum_class(_load(raw, f"{where}.value"))


def _imported_enum(name: str) -> type[enum.Enum] | None:
    """The Enum class ``module.QualName`` if its module is already imported; never imports."""
    parts = name.split(".")
    for split in range(len(parts) - 1, 0, -1):
        module = sys.modules.get(".".join(parts[:split]))
        if module is None:
            continue
        found: object = module
        for attribute in parts[split:]:
            found = vars(found).get(attribute) if hasattr(found, "__dict__") else None
            if found is None:
                return None
        if isinstance(found, type) and issubclass(found, enum.Enum):
            return found
        return None
    return None


def _load_custom(data: Any, where: str) -> Any:
    name, raw = data
    custom = serializers.lookup_name(name)
    if custom is None:
        raise DeserializationError(f"no serializer is registered as {name!r} (at {where})")
    return custom.load(_load(raw, f"{where}<{name}>"))


def _load_bytes(data: Any, where: str) -> bytes:
    return base64.b64decode(data.encode("ascii"), validate=True)


_LOADERS: dict[str, Callable[[Any, str], Any]] = {
    "tuple": lambda data, where: tuple(_load_items(data, where)),
    "set": lambda data, where: set(_load_items(data, where)),
    "frozenset": lambda data, where: frozenset(_load_items(data, where)),
    "dict": _load_dict,
    "pairs": _load_pairs,
    "datetime": _load_datetime,
    "date": lambda data, where: date.fromisoformat(data),
    "time": lambda data, where: time.fromisoformat(data),
    "timedelta": lambda data, where: timedelta(days=data[0], seconds=data[1], microseconds=data[2]),
    "decimal": lambda data, where: Decimal(data),
    "uuid": lambda data, where: uuid.UUID(data),
    "bytes": _load_bytes,
    "float": _load_float,
    "enum": _load_enum,
    "gid": lambda data, where: locators.locate(data, where),
    "custom": _load_custom,
}


def builtin_types() -> frozenset[type]:
    """The types handled natively (custom serializers may not claim them)."""
    return frozenset({*_PLAIN, float, list, dict, *_DUMPERS})
