from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from jobadapter import Job, RecordNotFound, discard_on, locators
from jobadapter.arguments import deserialize_arguments, serialize_arguments
from jobadapter.testing import JobRecorder


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


SEEN: list[str] = []


@discard_on(RecordNotFound, on_discard=lambda job, error: SEEN.append(f"discarded: {error}"))
class GreetCustomer(Job):
    def perform(self, customer: Customer) -> None:
        SEEN.append(f"hello {customer.name}")


@pytest.fixture
def session_factory(tmp_path: Path) -> Iterator[type[Session] | object]:
    engine = create_engine(f"sqlite:///{tmp_path / 'shop.db'}")
    Base.metadata.create_all(engine)

    def factory() -> Session:
        return Session(engine)

    locators.register_sqlalchemy(Customer, factory)
    yield factory
    locators.unregister(Customer)
    engine.dispose()


def test_rows_travel_by_primary_key_and_load_again(session_factory: object, jobs: JobRecorder) -> None:
    SEEN.clear()
    with session_factory() as session:  # type: ignore[operator]
        session.add_all([Customer(id=1, name="Ada"), Customer(id=2, name="Grace")])
        session.commit()
        ada, grace = session.get(Customer, 1), session.get(Customer, 2)
        wire, _ = serialize_arguments([ada], {})
        assert wire == [{"gid": f"gid://jobadapter/{__name__}.Customer/1"}]
        GreetCustomer.perform_later(ada)
        GreetCustomer.perform_later(grace)
        session.delete(grace)
        session.commit()
    jobs.perform_enqueued()
    assert ["hello Ada", f"discarded: gid://jobadapter/{__name__}.Customer/2 not found"] == SEEN
    [loaded], _ = deserialize_arguments(wire, {})
    assert isinstance(loaded, Customer) and loaded.name == "Ada"
