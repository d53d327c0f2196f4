"""Job arguments to JSON-compatible data and back, with their exact types.

Wire form. JSON natives (``null``, booleans, integers, finite floats, strings)
and lists are written as themselves. Every other value, every dict included,
is a JSON object with exactly one key, its type tag::

    {"float": "nan" | "inf" | "-inf"}
    {"tuple": [...]}   {"set": [...]}   {"frozenset": [...]}
    {"dict": {"key": ...}}                       a dict whose keys are all str
    {"pairs": [[key, value], ...]}               any other dict, in insertion order
    {"datetime": [isoformat, zone, fold]}        zone: an IANA key, or null when naive or a fixed offset
    {"date": "2026-01-31"}
    {"time": [isoformat, fold]}
    {"timedelta": [days, seconds, microseconds]}
    {"decimal": "1.50"}                          str(), so the exponent survives
    {"uuid": "12345678-1234-5678-1234-567812345678"}
    {"bytes": "<base64>"}
    {"enum": ["module.QualName", value]}
    {"gid": "gid://APP/module.Model/42"}         see jobadapter.locators
    {"custom": [name, value]}                    see jobadapter.serializers

Values inside a tag are serialized the same way, recursively. Because a plain
dict is always wrapped, no user key is ever reserved: ``{"tuple": 1}`` travels
as ``{"dict": {"tuple": 1}}``.

Types match exactly (``type(x) is tuple``, never ``isinstance``), so what comes
back has the type that went in: a namedtuple or a ``str`` subclass is refused
rather than silently turned into its base type, and an ``IntEnum`` member is
not mistaken for an ``int``. Only ``zoneinfo.ZoneInfo`` zones and
``datetime.timezone`` offsets are accepted as a tzinfo, the two that can be
rebuilt exactly from the wire.

Loading never imports anything a payload names: an enum class is looked up
among modules already imported, custom types and models among registrations.
"""

from __future__ import annotations

import base64
import enum
import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from jobadapter import locators, serializers
from jobadapter.errors import DeserializationError, JobAdapterError, SerializationError


def serialize_arguments(
    args: Sequence[object], kwargs: Mapping[str, object]
) -> tuple[list[Any], dict[str, Any]]:
    """``(arguments, keyword_arguments)`` in wire form, ready for ``json.dumps(..., allow_nan=False)``.

    Raises `SerializationError` naming the offending type and where it sits,
    e.g. ``arguments[0]['user'][2]``.
    """
    try:  # the conditionals skip building a comprehension for what is empty, often the kwargs
        return (
            [_dump(value) for value in args] if args else [],
            {name: _dump(value) for name, value in kwargs.items()} if kwargs else {},
        )
    except _Failure as failure:
        raise failure.public(SerializationError, _root(args, kwargs, failure.subject)) from failure.__cause__
    except RecursionError as error:
        raise SerializationError("arguments nest too deeply, or contain themselves") from error


def deserialize_arguments(args: list[Any], kwargs: dict[str, Any]) -> tuple[list[object], dict[str, object]]:
    """The objects again, from wire form.

    Raises `DeserializationError` with the cause chained, or `RecordNotFound`
    for a model reference whose record is gone.
    """
    try:
        return [_load(value) for value in args], {name: _load(value) for name, value in kwargs.items()}
    except _Failure as failure:
        raise failure.public(
            DeserializationError, _root(args, kwargs, failure.subject)
        ) from failure.__cause__
    except RecursionError as error:
        raise DeserializationError("arguments nest too deeply") from error


class _Failure(Exception):
    """Carries a failure from the value that caused it up to the public function.

    No location string is built while arguments convert, the common case on
    every enqueue and perform. When a value fails, each container it sits in
    adds its step to the path on the way up, finding which of its items failed
    by identity with ``subject``, the value whose conversion is unwinding.
    """

    def __init__(self, subject: object, what: str, why: str) -> None:
        super().__init__(what)
        self.subject = subject
        self.what = what
        self.why = why
        self.steps: list[str] = []  # innermost first

    def within(self, container: object, step: str) -> None:
        """Record that the failing value sat at ``step`` inside ``container``."""
        self.steps.append(step)
        self.subject = container

    def public(self, error_class: type[JobAdapterError], root: str) -> JobAdapterError:
        return error_class(f"{self.what} at {root}{''.join(reversed(self.steps))}{self.why}")


def _index(items: Iterable[object], subject: object) -> int | str:
    return next((index for index, item in enumerate(items) if item is subject), "?")


def _key_step(mapping: Mapping[Any, object], subject: object) -> str:
    for key, item in mapping.items():
        if key is subject:
            return f"<key {key!r}>"
        if item is subject:
            return f"[{key!r}]"
    return "[?]"


def _root(args: Sequence[object], kwargs: Mapping[str, object], subject: object) -> str:
    for index, item in enumerate(args):
        if item is subject:
            return f"arguments[{index}]"
    return f"keyword_arguments{_key_step(kwargs, subject)}"


# ---------------------------------------------------------------- serialize


def _dump(value: Any) -> Any:
    kind = type(value)
    # JSON natives first, by exact type: they are most arguments.
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is float:
        return value if math.isfinite(value) else {"float": repr(value)}
    if kind is list:
        try:
            return [_dump(item) for item in value]
        except _Failure as failure:
            failure.within(value, f"[{_index(value, failure.subject)}]")
            raise
    if kind is dict:
        return _dump_dict(value)
    dumper = _DUMPERS.get(kind)
    if dumper is not None:
        return dumper(value)
    return _dump_registered(value)


def _dump_dict(value: dict[Any, Any]) -> Any:
    try:
        for key in value:
            if type(key) is not str:
                return {"pairs": [[_dump(key), _dump(item)] for key, item in value.items()]}
        return {"dict": {key: _dump(item) for key, item in value.items()}}
    except _Failure as failure:
        failure.within(value, _key_step(value, failure.subject))
        raise


def _dump_items(tag: str, step: str) -> Callable[[Any], Any]:
    def dump(value: Iterable[Any]) -> Any:
        try:
            return {tag: [_dump(item) for item in value]}
        except _Failure as failure:
            failure.within(value, step.format(_index(value, failure.subject)))
            raise

    return dump


def _dump_datetime(value: datetime) -> Any:
    return {"datetime": [value.isoformat(), _zone_key(value), value.fold]}


def _zone_key(value: datetime | time) -> str | None:
    """The IANA key to store beside the isoformat (which already has the offset), or None."""
    zone = value.tzinfo
    if zone is None or type(zone) is timezone:
        return None
    if type(zone) is ZoneInfo and zone.key is not None and type(value) is datetime:
        return zone.key
    raise _Failure(
        value,
        f"cannot serialize {type(value).__name__} with tzinfo {zone!r}",
        ": use a zoneinfo.ZoneInfo zone (datetime only) or a datetime.timezone offset",
    )


def _dump_time(value: time) -> Any:
    _zone_key(value)  # refuses a zone that isoformat could not carry
    return {"time": [value.isoformat(), value.fold]}


_DUMPERS: dict[type, Callable[[Any], Any]] = {
    tuple: _dump_items("tuple", "[{}]"),
    set: _dump_items("set", "<member {}>"),
    frozenset: _dump_items("frozenset", "<member {}>"),
    datetime: _dump_datetime,
    date: lambda value: {"date": value.isoformat()},
    time: _dump_time,
    timedelta: lambda value: {"timedelta": [value.days, value.seconds, value.microseconds]},
    Decimal: lambda value: {"decimal": str(value)},
    UUID: lambda value: {"uuid": str(value)},
    bytes: lambda value: {"bytes": base64.b64encode(value).decode("ascii")},
}

NATIVE_TYPES: frozenset[type] = frozenset({str, int, bool, float, type(None), list, dict, *_DUMPERS})
"""The types serialized natively, which `jobadapter.serializers.register` refuses."""


# Enum classes already checked to be found again by name, so the check is paid once per class.
_enum_names: dict[type, str] = {}


def _dump_registered(value: object) -> Any:
    """Custom types, Enum members and model references: everything not dispatched by exact type."""
    kind = type(value)
    custom = serializers.for_type(kind)
    if custom is not None:
        try:
            dumped = custom.dump(value)
        except Exception as error:
            raise _Failure(value, f"serializer {custom.name!r} failed", f": {error!r}") from error
        try:
            return {"custom": [custom.name, _dump(dumped)]}
        except _Failure as failure:
            failure.within(value, f"<{custom.name}>")
            raise
    if isinstance(value, enum.Enum):
        name = _enum_names.get(kind)
        if name is None:
            name = f"{kind.__module__}.{kind.__qualname__}"
            if _find_enum(name) is not kind:
                raise _Failure(
                    value,
                    f"cannot serialize member of enum {name!r}",
                    ": a worker could not find the class by that name (define it at module level)",
                )
            _enum_names[kind] = name
        try:
            return {"enum": [name, _dump(value.value)]}
        except _Failure as failure:
            failure.within(value, ".value")
            raise
    try:
        gid = locators.global_id(value)
    except Exception as error:
        raise _Failure(value, f"cannot make a global id for {kind.__qualname__!r}", f": {error}") from error
    if gid is not None:
        return {"gid": gid}
    raise _Failure(
        value,
        f"cannot serialize object of type {kind.__qualname__!r}",
        ": register a serializer with jobadapter.serializers.register",
    )


# -------------------------------------------------------------- deserialize


def _load(value: Any) -> Any:
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return value
    if kind is list:
        try:
            return [_load(item) for item in value]
        except _Failure as failure:
            failure.within(value, f"[{_index(value, failure.subject)}]")
            raise
    if kind is not dict or len(value) != 1:
        raise _Failure(value, "malformed argument", f": {value!r:.100}")
    ((tag, data),) = value.items()
    loader = _LOADERS.get(tag)
    if loader is None:
        raise _Failure(value, f"unknown argument type {tag!r}", f": {value!r:.100}")
    try:
        return loader(data)
    except _Failure as failure:
        failure.subject = value  # what this value's container will look for
        raise
    except (DeserializationError, RecursionError):
        raise  # a model reference's error names its gid; nesting is reported once, at the top
    except Exception as error:
        raise _Failure(value, f"cannot load {tag!r} argument", f": {error}") from error


def _list(data: Any) -> list[Any]:
    if type(data) is not list:
        raise TypeError(f"expected a list, got {data!r:.100}")
    return data


def _load_items(data: Any) -> list[Any]:
    items = _list(data)
    try:
        return [_load(item) for item in items]
    except _Failure as failure:
        failure.within(items, f"[{_index(items, failure.subject)}]")
        raise


def _load_dict(data: Any) -> dict[str, Any]:
    if type(data) is not dict:
        raise TypeError(f"expected an object, got {data!r:.100}")
    try:
        return {key: _load(item) for key, item in data.items()}
    except _Failure as failure:
        failure.within(data, _key_step(data, failure.subject))
        raise


def _load_pairs(data: Any) -> dict[Any, Any]:
    loaded: dict[Any, Any] = {}
    for pair in _list(data):
        if type(pair) is not list or len(pair) != 2:
            raise TypeError(f"expected a [key, value] pair, got {pair!r:.100}")
        try:
            key = _load(pair[0])
        except _Failure as failure:
            failure.within(data, f"<key of pair {len(loaded)}>")
            raise
        try:
            loaded[key] = _load(pair[1])
        except _Failure as failure:
            failure.within(data, f"[{key!r}]")
            raise
    return loaded


def _fold(data: Any) -> int:
    if type(data) is not int or data not in (0, 1):
        raise ValueError(f"fold must be 0 or 1, got {data!r:.100}")
    return data


def _load_datetime(data: Any) -> datetime:
    text, zone, fold = _list(data)
    moment = datetime.fromisoformat(text).replace(fold=_fold(fold))
    if zone is None:
        return moment
    if moment.tzinfo is None:
        raise ValueError(f"zone {zone!r} given for a naive time")
    # Same wall time and fold, so the same fields as the original; but if this
    # machine's tz database gives another offset, keep the instant instead.
    zoned = moment.replace(tzinfo=ZoneInfo(zone))
    return zoned if zoned.utcoffset() == moment.utcoffset() else moment.astimezone(zoned.tzinfo)


def _load_time(data: Any) -> time:
    text, fold = _list(data)
    return time.fromisoformat(text).replace(fold=_fold(fold))


def _load_float(data: Any) -> float:
    if data not in ("nan", "inf", "-inf"):
        raise ValueError(f"expected 'nan', 'inf' or '-inf', got {data!r:.100}")
    return float(data)


def _text(data: Any) -> str:
    if type(data) is not str:
        raise TypeError(f"expected a string, got {data!r:.100}")
    return data


def _load_timedelta(data: Any) -> timedelta:
    days, seconds, microseconds = _list(data)
    if not all(type(part) is int for part in (days, seconds, microseconds)):
        raise TypeError(f"expected three integers, got {data!r:.100}")
    return timedelta(days=days, seconds=seconds, microseconds=microseconds)


def _load_enum(data: Any) -> enum.Enum:
    name, raw = _list(data)
    enum_class = _find_enum(_text(name))
    if enum_class is None:
        raise ValueError(
            f"no enum class {name!r} is defined by an imported module "
            "(enum classes are looked up, never imported: import its module in the worker's --app)"
        )
    try:
        return enum_class(_load(raw))
    except _Failure as failure:
        failure.within(data, ".value")
        raise


def _find_enum(name: str) -> type[enum.Enum] | None:
    """The Enum class called ``module.QualName``, if its module is already imported; never imports."""
    parts = name.split(".")
    for split in range(len(parts) - 1, 0, -1):
        found: object = sys.modules.get(".".join(parts[:split]))
        if found is None:
            continue
        for attribute in parts[split:]:
            found = getattr(found, attribute, None)
        if isinstance(found, type) and issubclass(found, enum.Enum):
            return found
        return None
    return None


def _load_custom(data: Any) -> object:
    name, raw = _list(data)
    custom = serializers.named(_text(name))
    if custom is None:
        raise ValueError(f"no serializer is registered as {name!r}")
    try:
        loaded = _load(raw)
    except _Failure as failure:
        failure.within(data, f"<{name}>")
        raise
    return custom.load(loaded)


def _load_bytes(data: Any) -> bytes:
    return base64.b64decode(_text(data), validate=True)


_LOADERS: dict[str, Callable[[Any], Any]] = {
    "float": _load_float,
    "tuple": lambda data: tuple(_load_items(data)),
    "set": lambda data: set(_load_items(data)),
    "frozenset": lambda data: frozenset(_load_items(data)),
    "dict": _load_dict,
    "pairs": _load_pairs,
    "datetime": _load_datetime,
    "date": lambda data: date.fromisoformat(_text(data)),
    "time": _load_time,
    "timedelta": _load_timedelta,
    "decimal": lambda data: Decimal(_text(data)),
    "uuid": lambda data: UUID(_text(data)),
    "bytes": _load_bytes,
    "enum": _load_enum,
    "gid": locators.locate,
    "custom": _load_custom,
}
