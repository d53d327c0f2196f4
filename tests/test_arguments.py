from __future__ import annotations

import enum
import json
import math
import uuid
from collections import namedtuple
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from jobadapter import DeserializationError, RecordNotFound, SerializationError, locators, serializers
from jobadapter.arguments import deserialize_arguments, serialize_arguments
from jobadapter.errors import ConfigurationError


class Colour(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 2


def _round_trip(*args: Any, **kwargs: Any) -> tuple[list[object], dict[str, object]]:
    """Through JSON text, as an envelope carries them."""
    wire = json.loads(json.dumps(serialize_arguments(args, kwargs), allow_nan=False))
    return deserialize_arguments(wire[0], wire[1])


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -(2**80),
        1.5,
        -0.0,
        "ünïcode",
        [1, [2, "3"]],
        (1, (2,)),
        {"a": (1,)},
        {1: "x", (1, 2): "y", None: "z", "s": 3},
        {"tuple": 1, "dict": 2, "_aj_serialized": 3, "pairs": [4]},
        {1, 2},
        frozenset({"a"}),
        date(2026, 1, 31),
        time(1, 2, 3, 4),
        time(1, 2, tzinfo=timezone(timedelta(hours=-3))),
        timedelta(days=-1, seconds=5, microseconds=6),
        uuid.UUID(int=7),
        b"\x00\x01\xff",
        Colour.RED,
        Level.HIGH,
    ],
)
def test_values_round_trip_with_their_exact_type(value: Any) -> None:
    ([loaded], _) = _round_trip(value)
    assert type(loaded) is type(value)
    assert loaded == value
    if isinstance(value, dict):
        assert list(loaded) == list(value)  # type: ignore[call-overload]
        assert [type(k) for k in loaded] == [type(k) for k in value]  # type: ignore[attr-defined]


def test_special_floats_round_trip_through_strict_json() -> None:
    (nan, inf, negative_inf), _ = _round_trip(float("nan"), float("inf"), float("-inf"))
    assert math.isnan(nan)  # type: ignore[arg-type]
    assert inf == float("inf") and negative_inf == float("-inf")
    ([zero], _) = _round_trip(-0.0)
    assert math.copysign(1, zero) == -1  # type: ignore[arg-type]


def test_datetimes_keep_naivety_offset_zone_and_fold() -> None:
    naive = datetime(2026, 11, 28, 20, 0, 0, 123456)
    utc = datetime(2026, 11, 28, 20, tzinfo=timezone.utc)
    offset = datetime(2026, 11, 28, 20, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    paris = datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=ZoneInfo("Europe/Paris"))
    loaded, _ = _round_trip(naive, utc, offset, paris)
    assert loaded[0] == naive and loaded[0].tzinfo is None  # type: ignore[union-attr]
    assert loaded[1].tzinfo is timezone.utc  # type: ignore[union-attr]
    assert loaded[2].utcoffset() == timedelta(hours=5, minutes=30)  # type: ignore[union-attr]
    assert loaded[3].tzinfo == ZoneInfo("Europe/Paris")  # type: ignore[union-attr]
    assert loaded[3].fold == 1 and loaded[3].utcoffset() == timedelta(hours=1)  # type: ignore[union-attr]
    assert loaded[3].isoformat() == paris.isoformat()  # type: ignore[union-attr]


def test_decimals_keep_their_exponent() -> None:
    loaded, _ = _round_trip(Decimal("1.50"), Decimal("1E+2"), Decimal("NaN"))
    assert loaded[0].as_tuple() == Decimal("1.50").as_tuple()  # type: ignore[union-attr]
    assert str(loaded[1]) == "1E+2"
    assert loaded[2].is_nan()  # type: ignore[union-attr]


def test_keyword_arguments_round_trip() -> None:
    _, kwargs = _round_trip(when=date(2026, 1, 1), tags=("a",))
    assert kwargs == {"when": date(2026, 1, 1), "tags": ("a",)}
    assert type(kwargs["tags"]) is tuple


def test_unsupported_values_name_their_type_and_place() -> None:
    Point = namedtuple("Point", "x y")
    with pytest.raises(SerializationError, match=r"'object' at arguments\[1\]\['user'\]\[2\]"):
        serialize_arguments([1, {"user": [0, 1, object()]}], {})
    with pytest.raises(SerializationError, match=r"'Point' at keyword_arguments\['where'\]"):
        serialize_arguments([], {"where": Point(1, 2)})

    class Name(str):
        pass

    with pytest.raises(SerializationError, match=r"<locals>\.Name' at arguments\[0\]"):
        serialize_arguments([Name("x")], {})
    assert issubclass(SerializationError, TypeError)


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        ({"no-such-tag": 1}, "unknown argument type 'no-such-tag'"),
        ({"tuple": 1, "set": 2}, "malformed argument"),
        ({"datetime": ["yesterday", None, 0]}, "malformed datetime"),
        ({"enum": ["nowhere.Colour", "red"]}, "enum class 'nowhere.Colour'"),
        ({"enum": ["json.JSONDecoder", "x"]}, "enum class 'json.JSONDecoder'"),
        ({"custom": ["unknown.Type", 1]}, "no serializer is registered as 'unknown.Type'"),
        ({"gid": "gid://jobadapter/unknown.Model/1"}, "no locator is registered"),
        ({"gid": "http://x/y/1"}, "malformed global id"),
        ({"bytes": "not base64!"}, "malformed bytes"),
    ],
)
def test_bad_wire_values_raise_deserialization_error(wire: Any, message: str) -> None:
    with pytest.raises(DeserializationError, match=message):
        deserialize_arguments([wire], {})


def test_enum_classes_are_found_only_among_imported_modules() -> None:
    ([loaded], _) = _round_trip(Colour.RED)
    assert loaded is Colour.RED
    with pytest.raises(DeserializationError, match="is not defined by any imported module"):
        deserialize_arguments([{"enum": ["surely_not_a_module_xyz.Colour", "red"]}], {})


class Money:
    def __init__(self, cents: int, at: datetime) -> None:
        self.cents, self.at = cents, at

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Money) and (self.cents, self.at) == (other.cents, other.at)

    __hash__ = None  # type: ignore[assignment]


@pytest.fixture
def money() -> Iterator[None]:
    serializers.register(Money, dump=lambda m: (m.cents, m.at), load=lambda data: Money(*data))
    yield
    serializers.unregister(Money)


def test_custom_serializers_dump_recursively(money: None) -> None:
    value = Money(150, datetime(2026, 1, 1, tzinfo=timezone.utc))
    ([loaded], _) = _round_trip(value)
    assert loaded == value
    wire, _ = serialize_arguments([value], {})
    assert wire[0]["custom"][0] == f"{__name__}.Money"


def test_custom_serializer_registration_errors(money: None) -> None:
    with pytest.raises(ConfigurationError, match="supported natively"):
        serializers.register(datetime, dump=str, load=datetime.fromisoformat)

    class Other:
        pass

    with pytest.raises(ConfigurationError, match="already registered"):
        serializers.register(Other, dump=id, load=lambda d: Other(), name=f"{__name__}.Money")


class User:
    def __init__(self, pk: int) -> None:
        self.pk = pk


class Admin(User):
    pass


USERS = {1: User(1), 2: Admin(2)}


@pytest.fixture
def user_locator() -> Iterator[None]:
    locators.register(User, locate=lambda pk: USERS.get(int(pk)), key=lambda user: user.pk)
    yield
    locators.unregister(User)


def test_model_references_travel_as_global_ids(user_locator: None) -> None:
    wire, _ = serialize_arguments([USERS[1], USERS[2]], {})
    assert wire == [
        {"gid": f"gid://jobadapter/{__name__}.User/1"},
        {"gid": f"gid://jobadapter/{__name__}.User/2"},
    ]
    loaded, _ = _round_trip(USERS[1], USERS[2])
    assert loaded[0] is USERS[1] and loaded[1] is USERS[2]


def test_a_missing_record_raises_record_not_found(user_locator: None) -> None:
    with pytest.raises(RecordNotFound, match="User/9 not found"):
        deserialize_arguments([{"gid": f"gid://jobadapter/{__name__}.User/9"}], {})


def test_locator_errors_are_chained() -> None:
    def lookup_error(pk: str) -> User:
        raise KeyError(pk)

    def broken(pk: str) -> User:
        raise ConnectionError("database down")

    locators.register(User, locate=lookup_error, key=lambda user: user.pk)
    try:
        with pytest.raises(RecordNotFound) as missing:
            _round_trip(USERS[1])
        assert isinstance(missing.value.__cause__, KeyError)
        locators.register(User, locate=broken, key=lambda user: user.pk)
        with pytest.raises(DeserializationError) as failed:
            _round_trip(USERS[1])
        assert not isinstance(failed.value, RecordNotFound)
        assert isinstance(failed.value.__cause__, ConnectionError)
    finally:
        locators.unregister(User)


def test_app_name_is_validated_and_written() -> None:
    with pytest.raises(ConfigurationError):
        locators.set_app_name("a/b")
    locators.register(User, locate=lambda pk: USERS.get(int(pk)), key=lambda user: user.pk)
    try:
        locators.set_app_name("shop")
        wire, _ = serialize_arguments([USERS[1]], {})
        assert wire[0]["gid"].startswith("gid://shop/")
    finally:
        locators.set_app_name("jobadapter")
        locators.unregister(User)


def test_django_locator_uses_the_default_manager() -> None:
    class Manager:
        def filter(self, pk: str) -> Any:
            found = [USERS[int(pk)]] if int(pk) in USERS else []
            return type("QuerySet", (), {"first": lambda self: found[0] if found else None})()

    class Article:
        _default_manager = Manager()

        def __init__(self, pk: int) -> None:
            self.pk = pk

    locators.register_django(Article)
    try:
        wire, _ = serialize_arguments([Article(1)], {})
        assert deserialize_arguments(wire, {})[0] == [USERS[1]]
        with pytest.raises(RecordNotFound):
            deserialize_arguments([{"gid": wire[0]["gid"][:-1] + "5"}], {})
    finally:
        locators.unregister(Article)
