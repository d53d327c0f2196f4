from __future__ import annotations

import enum
import json
import math
from collections import namedtuple
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest

from jobadapter import DeserializationError, SerializationError
from jobadapter.arguments import deserialize_arguments, serialize_arguments


class Colour(enum.Enum):
    RED = "red"
    PAIR = (1, 2)


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Mood(str, enum.Enum):
    CALM = "calm"


class Perm(enum.Flag):
    READ = 1
    WRITE = 2


Point = namedtuple("Point", "x y")


def wire(*args: Any, **kwargs: Any) -> Any:
    """What an envelope carries: the serialized arguments, through strict JSON text."""
    return json.loads(json.dumps(serialize_arguments(args, kwargs), allow_nan=False))


def round_trip(*args: Any, **kwargs: Any) -> tuple[list[Any], dict[str, Any]]:
    serialized_args, serialized_kwargs = wire(*args, **kwargs)
    return deserialize_arguments(serialized_args, serialized_kwargs)


def load_one(value: Any) -> Any:
    return deserialize_arguments([value], {})[0][0]


def same(a: Any, b: Any) -> bool:
    """Equal and of exactly the same types, all the way down (``1 == 1.0 == True`` does not count)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        keys_match = list(a) == list(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
        return keys_match and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (set, frozenset)):
        return a == b and sorted(map(repr, a)) == sorted(map(repr, b))
    return bool(a == b)


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -(2**80),
        1.5,
        "ünïcode ✓",
        [],
        [1, [2.0, "3", [None, True]]],
        (),
        (1, (2, (3,)), [4]),
        {},
        {"a": (1,), "b": {"c": [date(2026, 1, 1)]}},
        {1: "int", (1, 2): "tuple", None: "none", "s": 3, False: "bool", 2.5: "float"},
        {frozenset({1}): {(1, "x"): {2: 3}}},
        {"tuple": 1, "dict": 2, "pairs": [3], "_aj_serialized": 4, "datetime": "2026-01-01"},
        {"dict": {"dict": {"tuple": (1,)}}},
        {1, 2, (3, 4)},
        set(),
        frozenset({"a", frozenset({"b"})}),
        date(2026, 1, 31),
        time(1, 2, 3, 4),
        time(23, 59, tzinfo=timezone(timedelta(hours=-3, minutes=-30))),
        timedelta(days=-1, seconds=5, microseconds=6),
        timedelta(0),
        UUID(int=7),
        b"",
        b"\x00\x01\xff",
        Colour.RED,
        Colour.PAIR,
        Level.HIGH,
        Mood.CALM,
        Perm.READ | Perm.WRITE,
        Perm(0),
        [Decimal("1.50"), UUID(int=1), (b"x", {3})],
    ],
)
def test_values_round_trip_with_their_exact_types(value: Any) -> None:
    [loaded], _ = round_trip(value)
    assert same(loaded, value), (loaded, value)


def test_enum_members_come_back_as_the_members() -> None:
    loaded, _ = round_trip(Level.HIGH, Colour.PAIR, Mood.CALM, Perm.READ | Perm.WRITE)
    assert loaded[0] is Level.HIGH and loaded[1] is Colour.PAIR and loaded[2] is Mood.CALM
    assert type(loaded[3]) is Perm and loaded[3] == Perm.READ | Perm.WRITE


def test_natives_and_lists_are_written_as_themselves() -> None:
    args, kwargs = serialize_arguments([None, True, 3, 2.5, "s", [1, ["x"]]], {"n": 1})
    assert args == [None, True, 3, 2.5, "s", [1, ["x"]]] and kwargs == {"n": 1}
    assert type(args[1]) is bool


def test_every_other_value_is_an_object_with_one_tag() -> None:
    paris = datetime(2026, 7, 1, 9, 15, 0, 5, tzinfo=ZoneInfo("Europe/Paris"))
    args, _ = serialize_arguments(
        [
            (1,),
            {"a": 1},
            {1: "a"},
            {2},
            frozenset(),
            paris,
            date(2026, 1, 2),
            time(3, 4),
            timedelta(days=1, seconds=2, microseconds=3),
            Decimal("1.50"),
            UUID(int=1),
            b"hi",
            float("nan"),
            Level.HIGH,
        ],
        {},
    )
    assert args == [
        {"tuple": [1]},
        {"dict": {"a": 1}},
        {"pairs": [[1, "a"]]},
        {"set": [2]},
        {"frozenset": []},
        {"datetime": ["2026-07-01T09:15:00.000005+02:00", "Europe/Paris", 0]},
        {"date": "2026-01-02"},
        {"time": ["03:04:00", 0]},
        {"timedelta": [1, 2, 3]},
        {"decimal": "1.50"},
        {"uuid": "00000000-0000-0000-0000-000000000001"},
        {"bytes": "aGk="},
        {"float": "nan"},
        {"enum": [f"{__name__}.Level", 2]},
    ]


def test_dicts_that_look_like_tags_stay_dicts() -> None:
    tricky = {"tuple": [1, 2], "_aj_serialized": True, "gid": "gid://x/y/1"}
    assert wire(tricky)[0] == [{"dict": {"tuple": [1, 2], "_aj_serialized": True, "gid": "gid://x/y/1"}}]
    [loaded], _ = round_trip(tricky)
    assert type(loaded) is dict and loaded == tricky and type(loaded["tuple"]) is list


def test_dict_key_types_and_order_are_kept() -> None:
    value = {3: "c", "1": "a", (1, "x"): "t", 1: "i", None: "n"}
    [loaded], _ = round_trip(value)
    assert list(loaded) == [3, "1", (1, "x"), 1, None]
    assert [type(key) for key in loaded] == [int, str, tuple, int, type(None)]


def test_special_floats_survive_strict_json() -> None:
    (nan, inf, negative_inf, negative_zero), _ = round_trip(float("nan"), float("inf"), float("-inf"), -0.0)
    assert type(nan) is float and math.isnan(nan)
    assert inf == math.inf and negative_inf == -math.inf
    assert negative_zero == 0.0 and math.copysign(1, negative_zero) == -1


def test_datetimes_keep_naivety_offset_zone_microseconds_and_fold() -> None:
    naive = datetime(2026, 11, 28, 20, 0, 0, 123456)
    naive_fold = datetime(2026, 10, 25, 2, 30, fold=1)
    utc = datetime(2026, 11, 28, 20, tzinfo=timezone.utc)
    offset = datetime(2026, 11, 28, 20, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    odd_offset = datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=-1, seconds=-15, microseconds=-3)))
    paris_second = datetime(2026, 10, 25, 2, 30, 0, 7, fold=1, tzinfo=ZoneInfo("Europe/Paris"))
    loaded, _ = round_trip(naive, naive_fold, utc, offset, odd_offset, paris_second)
    assert loaded[0] == naive and loaded[0].tzinfo is None and loaded[0].microsecond == 123456
    assert loaded[1].tzinfo is None and loaded[1].fold == 1
    assert loaded[2] == utc and loaded[2].tzinfo is timezone.utc
    assert loaded[3] == offset and loaded[3].utcoffset() == timedelta(hours=5, minutes=30)
    assert type(loaded[3].tzinfo) is timezone
    assert loaded[4] == odd_offset and loaded[4].utcoffset() == odd_offset.utcoffset()
    paris = loaded[5]
    assert type(paris.tzinfo) is ZoneInfo and paris.tzinfo.key == "Europe/Paris"
    assert paris.fold == 1 and paris.utcoffset() == timedelta(hours=1)
    assert paris.timestamp() == paris_second.timestamp() and paris.microsecond == 7
    assert all(type(value) is datetime for value in loaded)


def test_a_wall_time_in_a_dst_gap_comes_back_unchanged() -> None:
    skipped = datetime(2026, 3, 29, 2, 30, tzinfo=ZoneInfo("Europe/Paris"))  # clocks jump 02:00 -> 03:00
    [loaded], _ = round_trip(skipped)
    assert (loaded.hour, loaded.minute, loaded.fold) == (2, 30, 0) and loaded.tzinfo.key == "Europe/Paris"


def test_a_zone_whose_offset_disagrees_keeps_the_instant() -> None:
    """As when the enqueuing machine's tz database differs from the worker's."""
    loaded = load_one({"datetime": ["2026-07-01T09:15:00+05:00", "Europe/Paris", 0]})
    assert loaded == datetime(2026, 7, 1, 4, 15, tzinfo=timezone.utc)
    assert loaded.tzinfo.key == "Europe/Paris" and loaded.hour == 6


def test_decimals_keep_their_exponent_and_specials() -> None:
    values = [Decimal("1.50"), Decimal("1E+2"), Decimal("-0.000"), Decimal("NaN"), Decimal("-Infinity")]
    loaded, _ = round_trip(*values)
    assert [value.as_tuple() for value in loaded] == [value.as_tuple() for value in values]
    assert str(loaded[0]) == "1.50" and str(loaded[1]) == "1E+2"
    assert loaded[3].is_nan() and loaded[4] == Decimal("-Infinity")


def test_keyword_arguments_round_trip() -> None:
    _, kwargs = round_trip(when=date(2026, 1, 1), tags=("a",), nested={"k": {1, 2}})
    assert same(kwargs, {"when": date(2026, 1, 1), "tags": ("a",), "nested": {"k": {1, 2}}})


def test_unsupported_values_name_their_type_and_place() -> None:
    class Foo:
        pass

    with pytest.raises(SerializationError) as raised:
        serialize_arguments([0, {"user": [0, 1, Foo()]}], {})
    assert str(raised.value) == (
        "cannot serialize object of type 'test_unsupported_values_name_their_type_and_place.<locals>.Foo' "
        "at arguments[1]['user'][2]: register a serializer with jobadapter.serializers.register"
    )
    with pytest.raises(SerializationError, match=r"at keyword_arguments\['when'\]\[0\]: "):
        serialize_arguments([1], {"ok": 1, "when": (Foo(),)})
    with pytest.raises(SerializationError, match=r"at arguments\[0\]<key \(1, <.*Foo object.*>\)>\[1\]: "):
        serialize_arguments([{(1, Foo()): "value"}], {})
    with pytest.raises(SerializationError, match=r"at arguments\[0\]\[3\]\['x'\]: "):
        serialize_arguments([{3: {"x": Foo()}}], {})
    with pytest.raises(SerializationError, match=r"at arguments\[0\]<member 0>: "):
        serialize_arguments([{Foo()}], {})
    assert issubclass(SerializationError, TypeError)


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (Point(1, 2), "Point"),
        (type("Name", (str,), {})("x"), "Name"),
        (type("Count", (int,), {})(1), "Count"),
        (bytearray(b"x"), "bytearray"),
        (object(), "object"),
        (1 + 2j, "complex"),
    ],
)
def test_subclasses_of_supported_types_are_refused(value: Any, type_name: str) -> None:
    with pytest.raises(SerializationError, match=rf"type '{type_name}' at arguments\[0\]"):
        serialize_arguments([value], {})


def test_time_zones_that_cannot_be_rebuilt_are_refused() -> None:
    class Local(tzinfo):
        """A tzinfo that is neither a ZoneInfo nor a fixed timezone, as pytz and dateutil provide."""

        def utcoffset(self, dt: datetime | None) -> timedelta:
            return timedelta(hours=1)

        def dst(self, dt: datetime | None) -> timedelta:
            return timedelta(0)

        def tzname(self, dt: datetime | None) -> str:
            return "LOCAL"

    with pytest.raises(SerializationError, match=r"tzinfo .* at arguments\[0\]"):
        serialize_arguments([datetime(2026, 1, 1, tzinfo=Local())], {})
    with pytest.raises(SerializationError, match=r"time with tzinfo .* at arguments\[0\]"):
        serialize_arguments([time(1, tzinfo=ZoneInfo("Europe/Paris"))], {})


def test_enums_defined_where_a_worker_cannot_find_them_are_refused() -> None:
    class Local(enum.Enum):
        A = 1

    with pytest.raises(SerializationError, match="a worker could not find the class"):
        serialize_arguments([Local.A], {})


def test_self_containing_arguments_are_refused() -> None:
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(SerializationError, match="nest too deeply"):
        serialize_arguments([loop], {})


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"no-such-tag": 1}, r"unknown argument type 'no-such-tag' at arguments\[0\]"),
        ({"tuple": 1, "set": 2}, "malformed argument at arguments"),
        ({}, "malformed argument at arguments"),
        ({"tuple": 1}, "cannot load 'tuple' argument at arguments"),
        ({"pairs": {"ab": 1}}, "cannot load 'pairs' argument"),
        ({"pairs": [[1, 2, 3]]}, "cannot load 'pairs' argument"),
        ({"pairs": [[[1], 2]]}, "cannot load 'pairs' argument"),  # an unhashable key
        ({"set": [[1]]}, "cannot load 'set' argument"),
        ({"datetime": ["yesterday", None, 0]}, "cannot load 'datetime' argument"),
        ({"datetime": ["2026-01-01T00:00:00", "Europe/Paris", 0]}, "for a naive time"),
        ({"datetime": ["2026-01-01T00:00:00+00:00", "No/Such_Zone", 0]}, "cannot load 'datetime'"),
        ({"datetime": ["2026-01-01T00:00:00", None, 2]}, "fold must be 0 or 1"),
        ({"date": 20260101}, "cannot load 'date' argument"),
        ({"time": "01:02"}, "cannot load 'time' argument"),
        ({"timedelta": [1, 2.5, 3]}, "cannot load 'timedelta' argument"),
        ({"decimal": 1.5}, "cannot load 'decimal' argument"),
        ({"decimal": "one"}, "cannot load 'decimal' argument"),
        ({"uuid": "xyz"}, "cannot load 'uuid' argument"),
        ({"bytes": "not base64!"}, "cannot load 'bytes' argument"),
        ({"float": "1.5"}, "cannot load 'float' argument"),
        (
            {"enum": ["nowhere.Colour", "red"]},
            "no enum class 'nowhere.Colour' is defined by an imported module",
        ),
        ({"enum": ["json.JSONDecoder", "x"]}, "no enum class 'json.JSONDecoder'"),
        ({"enum": [f"{__name__}.Colour", "purple"]}, "'purple' is not a valid Colour"),
        ({"enum": ["Colour"]}, "cannot load 'enum' argument"),
    ],
)
def test_bad_wire_values_raise_deserialization_error(value: Any, message: str) -> None:
    with pytest.raises(DeserializationError, match=message):
        deserialize_arguments([value], {})


def test_load_errors_say_where_and_chain_the_cause() -> None:
    bad = [{"tuple": [1, {"pairs": [[{"tuple": [1]}, {"date": "x"}]]}]}]
    with pytest.raises(DeserializationError) as raised:
        deserialize_arguments([], {"ok": 1, "deep": bad})
    assert "at keyword_arguments['deep'][0][1][(1,)]" in str(raised.value)
    assert isinstance(raised.value.__cause__, ValueError)
    with pytest.raises(DeserializationError, match=r"at arguments\[1\]<key of pair 1>\.value: "):
        deserialize_arguments([1, {"pairs": [[1, 2], [{"enum": [f"{__name__}.Level", {"x": 1}]}, 3]]}], {})


def test_enum_classes_are_only_looked_up_never_imported() -> None:
    import sys

    assert "antigravity" not in sys.modules
    with pytest.raises(DeserializationError, match=r"no enum class 'antigravity\.Fly'"):
        deserialize_arguments([{"enum": ["antigravity.Fly", 1]}], {})
    assert "antigravity" not in sys.modules
    assert load_one({"enum": [f"{__name__}.Colour", {"tuple": [1, 2]}]}) is Colour.PAIR
