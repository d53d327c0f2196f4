from __future__ import annotations

import json
from collections import namedtuple
from collections.abc import Callable, Iterator
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import ForeignKey, String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from jobadapter import (
    ConfigurationError,
    DeserializationError,
    Job,
    RecordNotFound,
    SerializationError,
    discard_on,
    locators,
    serializers,
)
from jobadapter.arguments import deserialize_arguments, serialize_arguments
from jobadapter.testing import JobRecorder


def round_trip(*args: Any) -> list[Any]:
    """Through strict JSON text, as an envelope carries arguments."""
    serialized, _ = json.loads(json.dumps(serialize_arguments(args, {}), allow_nan=False))
    return deserialize_arguments(serialized, {})[0]


# ------------------------------------------------------------------ serializers


class Money:
    def __init__(self, amount: Decimal, currency: str, at: datetime) -> None:
        self.amount, self.currency, self.at = amount, currency, at

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Money) and vars(self) == vars(other)

    __hash__ = None  # type: ignore[assignment]


Point = namedtuple("Point", "x y")


@pytest.fixture
def money() -> Iterator[None]:
    serializers.register(Money, dump=lambda m: (m.amount, m.currency, m.at), load=lambda data: Money(*data))
    yield
    serializers.unregister(Money)


def test_custom_types_are_dumped_recursively_and_loaded_with_exact_types(money: None) -> None:
    value = Money(Decimal("19.90"), "EUR", datetime(2026, 1, 1, 9, tzinfo=timezone.utc))
    wire, _ = serialize_arguments([value], {})
    assert wire == [
        {
            "custom": [
                f"{__name__}.Money",
                {
                    "tuple": [
                        {"decimal": "19.90"},
                        "EUR",
                        {"datetime": ["2026-01-01T09:00:00+00:00", None, 0]},
                    ]
                },
            ]
        }
    ]
    [loaded] = round_trip([value, {"m": value}])
    assert loaded == [value, {"m": value}]
    assert type(loaded[0].amount) is Decimal and str(loaded[0].amount) == "19.90"
    assert loaded[0].at.tzinfo is timezone.utc


def test_a_custom_type_matches_exactly_not_its_subclasses(money: None) -> None:
    class Cash(Money):
        pass

    with pytest.raises(SerializationError, match=r"type '.*Cash' at arguments\[0\]"):
        serialize_arguments([Cash(Decimal(1), "EUR", datetime(2026, 1, 1))], {})


def test_a_subclass_of_a_builtin_travels_once_registered() -> None:
    serializers.register(Point, dump=tuple, load=lambda data: Point(*data), name="geo.Point")
    try:
        wire, _ = serialize_arguments([Point(1, 2)], {})
        assert wire == [{"custom": ["geo.Point", {"tuple": [1, 2]}]}]
        [loaded] = round_trip(Point(1, 2))
        assert type(loaded) is Point and loaded == (1, 2)
    finally:
        serializers.unregister(Point)


def test_registration_errors(money: None) -> None:
    with pytest.raises(ConfigurationError, match="supported natively"):
        serializers.register(datetime, dump=str, load=datetime.fromisoformat)
    with pytest.raises(ConfigurationError, match="supported natively"):
        serializers.register(tuple, dump=list, load=tuple)

    class Other:
        pass

    with pytest.raises(ConfigurationError, match=r"already registered for .*\.Money"):
        serializers.register(Other, dump=id, load=lambda data: Other(), name=f"{__name__}.Money")
    # Registering the same type again replaces it (and frees the old name).
    serializers.register(Money, dump=lambda m: m.currency, load=lambda data: data, name="money.v2")
    assert serializers.named(f"{__name__}.Money") is None
    assert serialize_arguments([Money(Decimal(1), "EUR", datetime(2026, 1, 1))], {})[0] == [
        {"custom": ["money.v2", "EUR"]}
    ]


def test_custom_failures_are_reported(money: None) -> None:
    with pytest.raises(DeserializationError, match=r"no serializer is registered as 'unknown\.Type'"):
        deserialize_arguments([{"custom": ["unknown.Type", 1]}], {})
    with pytest.raises(DeserializationError, match=r"at arguments\[0\]") as raised:
        deserialize_arguments([{"custom": [f"{__name__}.Money", {"tuple": [1]}]}], {})
    assert isinstance(raised.value.__cause__, TypeError)  # Money() missing arguments
    with pytest.raises(DeserializationError, match=r"at arguments\[0\]<.*Money>\[1\]"):
        deserialize_arguments([{"custom": [f"{__name__}.Money", [1, {"bad": 2}]]}], {})

    serializers.register(Point, dump=lambda p: [object()], load=lambda data: data)
    try:
        with pytest.raises(SerializationError, match=r"'object' at arguments\[0\]<.*Point>\[0\]"):
            serialize_arguments([Point(1, 2)], {})
    finally:
        serializers.unregister(Point)


# -------------------------------------------------------------------- locators


class User:
    def __init__(self, pk: int) -> None:
        self.pk = pk


class Admin(User):
    pass


USERS: dict[int, User] = {1: User(1), 2: Admin(2)}


@pytest.fixture
def user_locator() -> Iterator[list[str]]:
    seen: list[str] = []

    def locate(pk: str) -> User | None:
        seen.append(pk)
        return USERS.get(int(pk))

    locators.register(User, locate=locate, key=lambda user: user.pk)
    yield seen
    locators.unregister(User)


def register_user_locator(locate: Callable[[str], User | None]) -> None:
    locators.register(User, locate=locate, key=lambda user: user.pk)


def test_records_travel_as_global_ids_and_load_again(user_locator: list[str]) -> None:
    wire, _ = serialize_arguments([USERS[1], USERS[2]], {})
    assert wire == [
        {"gid": f"gid://jobadapter/{__name__}.User/1"},
        {"gid": f"gid://jobadapter/{__name__}.User/2"},  # a subclass travels through its registered base
    ]
    loaded = round_trip(USERS[1], (USERS[2],))
    assert loaded[0] is USERS[1] and loaded[1] == (USERS[2],)
    assert user_locator == ["1", "2"]  # the locator gets the id as text


def test_ids_are_quoted_and_unquoted(user_locator: list[str]) -> None:
    locators.register(User, locate=lambda pk: User(pk), key=lambda user: user.pk)  # type: ignore[arg-type]
    [loaded] = round_trip(User("a/b c%é"))  # type: ignore[arg-type]
    assert loaded.pk == "a/b c%é"
    assert serialize_arguments([User("a/b")], {})[0] == [{"gid": f"gid://jobadapter/{__name__}.User/a%2Fb"}]  # type: ignore[arg-type]


def test_a_missing_record_raises_record_not_found(user_locator: list[str]) -> None:
    with pytest.raises(RecordNotFound) as raised:
        deserialize_arguments([{"gid": f"gid://jobadapter/{__name__}.User/9"}], {})
    assert str(raised.value) == f"gid://jobadapter/{__name__}.User/9 not found"
    assert isinstance(raised.value, DeserializationError)


def test_a_locator_raising_lookup_error_means_not_found() -> None:
    def locate(pk: str) -> User:
        raise KeyError(pk)

    register_user_locator(locate)
    try:
        with pytest.raises(RecordNotFound, match="User/1 not found") as raised:
            round_trip(USERS[1])
        assert isinstance(raised.value.__cause__, KeyError)
    finally:
        locators.unregister(User)


def test_other_locator_errors_are_chained_deserialization_errors() -> None:
    def locate(pk: str) -> User:
        raise ConnectionError("database down")

    register_user_locator(locate)
    try:
        with pytest.raises(DeserializationError, match=r"could not load gid://.* database down") as raised:
            round_trip(USERS[1])
        assert type(raised.value) is DeserializationError
        assert isinstance(raised.value.__cause__, ConnectionError)
    finally:
        locators.unregister(User)


@pytest.mark.parametrize(
    ("gid", "message"),
    [
        (f"gid://jobadapter/{__name__}.Ghost/1", f"no locator is registered for '{__name__}.Ghost'"),
        ("http://jobadapter/x/1", "malformed global id"),
        (f"gid:///{__name__}.User/1", "malformed global id"),
        (f"gid://jobadapter/{__name__}.User/", "malformed global id"),
        ("gid://jobadapter/1", "malformed global id"),
        ("gid://jobadapter", "malformed global id"),
        (42, "malformed global id"),
        (f"gid://jobadapter/{__name__}.User/%ff", "not UTF-8"),
        (f"gid://jobadapter/{__name__}.User/abc", "could not load"),  # int("abc") in the locator
    ],
)
def test_bad_global_ids(user_locator: list[str], gid: Any, message: str) -> None:
    with pytest.raises(DeserializationError, match=message) as raised:
        deserialize_arguments([{"gid": gid}], {})
    assert not isinstance(raised.value, RecordNotFound)


def test_an_unsaved_record_is_refused_when_enqueued(user_locator: list[str]) -> None:
    with pytest.raises(SerializationError, match=r"global id for 'User' at arguments\[0\]: .*no .*User key"):
        serialize_arguments([User(None)], {})  # type: ignore[arg-type]


def test_app_name_is_validated_and_written(user_locator: list[str]) -> None:
    for bad in ("", "a/b"):
        with pytest.raises(ConfigurationError):
            locators.set_app_name(bad)
    try:
        locators.set_app_name("shop")
        wire, _ = serialize_arguments([USERS[1]], {})
        assert wire == [{"gid": f"gid://shop/{__name__}.User/1"}]
        assert round_trip(USERS[1]) == [USERS[1]]
    finally:
        locators.set_app_name("jobadapter")


def test_locator_names(user_locator: list[str]) -> None:
    class Team:
        pass

    with pytest.raises(ConfigurationError, match="already registered"):
        locators.register(Team, locate=lambda pk: None, key=id, name=f"{__name__}.User")
    with pytest.raises(ConfigurationError, match="without '/'"):
        locators.register(Team, locate=lambda pk: None, key=id, name="a/b")
    locators.register(Team, locate=lambda pk: Team(), key=lambda team: 7, name="Team")
    try:
        assert serialize_arguments([Team()], {})[0] == [{"gid": "gid://jobadapter/Team/7"}]
    finally:
        locators.unregister(Team)
    with pytest.raises(SerializationError):
        serialize_arguments([Team()], {})


def test_django_locator_uses_the_default_manager() -> None:
    rows = {5: "five"}

    class QuerySet:
        def __init__(self, found: list[Article]) -> None:
            self.found = found

        def first(self) -> Article | None:
            return self.found[0] if self.found else None

    class Manager:
        def filter(self, pk: str) -> QuerySet:
            key = int(pk)  # Django converts the text through the field
            return QuerySet([Article(key)] if key in rows else [])

    class Article:
        _default_manager = Manager()

        def __init__(self, pk: int) -> None:
            self.pk = pk

    locators.register_django(Article, name="blog.Article")
    try:
        wire, _ = serialize_arguments([Article(5)], {})
        assert wire == [{"gid": "gid://jobadapter/blog.Article/5"}]
        [loaded] = round_trip(Article(5))
        assert type(loaded) is Article and loaded.pk == 5
        del rows[5]
        with pytest.raises(RecordNotFound, match=r"^gid://jobadapter/blog\.Article/5 not found$"):
            deserialize_arguments(wire, {})
    finally:
        locators.unregister(Article)


# ------------------------------------------------------------------ SQLAlchemy


class Base(DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "authors"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    born: Mapped[date]


class Book(Base):
    __tablename__ = "books"
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"), primary_key=True)
    number: Mapped[int] = mapped_column(primary_key=True)


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Callable[[], Session]]:
    engine = create_engine(f"sqlite:///{tmp_path / 'library.db'}")
    Base.metadata.create_all(engine)

    def session_factory() -> Session:
        return Session(engine)

    locators.register_sqlalchemy(Author, session_factory)
    yield session_factory
    locators.unregister(Author)
    engine.dispose()


def test_sqlalchemy_rows_load_again_and_deleted_rows_are_not_found(
    database: Callable[[], Session],
) -> None:
    with database() as session:
        session.add_all(
            [
                Author(id=1, name="Ada", born=date(1815, 12, 10)),
                Author(id=2, name="Grace", born=date(1906, 12, 9)),
            ]
        )
        session.commit()
        ada, grace = session.get(Author, 1), session.get(Author, 2)
        wire, _ = serialize_arguments([ada, grace], {})
    assert wire == [{"gid": f"gid://jobadapter/{__name__}.Author/{pk}"} for pk in (1, 2)]
    text = json.dumps(wire)

    with database() as session:
        session.delete(session.get(Author, 2))
        session.commit()

    [loaded], _ = deserialize_arguments(json.loads(text)[:1], {})
    assert type(loaded) is Author
    assert (loaded.id, loaded.name, loaded.born) == (1, "Ada", date(1815, 12, 10))
    with pytest.raises(RecordNotFound, match=f"gid://jobadapter/{__name__}.Author/2 not found"):
        deserialize_arguments(json.loads(text)[1:], {})


greeted: list[str] = []


@discard_on(RecordNotFound, on_discard=lambda job, error: greeted.append(f"discarded: {error}"))
class GreetAuthor(Job):
    def perform(self, author: Author) -> None:
        greeted.append(f"hello {author.name}")


def test_a_job_whose_row_was_deleted_is_discarded_by_discard_on(
    database: Callable[[], Session], jobs: JobRecorder
) -> None:
    greeted.clear()
    with database() as session:
        session.add_all(
            [
                Author(id=1, name="Ada", born=date(1815, 12, 10)),
                Author(id=2, name="Grace", born=date(1906, 12, 9)),
            ]
        )
        session.commit()
        GreetAuthor.perform_later(session.get(Author, 1))
        GreetAuthor.perform_later(session.get(Author, 2))
        session.delete(session.get(Author, 2))
        session.commit()
    jobs.perform_enqueued()
    assert greeted == ["hello Ada", f"discarded: gid://jobadapter/{__name__}.Author/2 not found"]


def test_sqlalchemy_refuses_unsaved_rows_and_composite_keys(database: Callable[[], Session]) -> None:
    with pytest.raises(SerializationError, match="save it before enqueueing"):
        serialize_arguments([Author(name="Unsaved", born=date(2000, 1, 1))], {})
    with pytest.raises(ConfigurationError, match="composite primary key"):
        locators.register_sqlalchemy(Book, database)
