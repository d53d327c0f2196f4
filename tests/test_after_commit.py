"""Enqueue after commit on the real PostgreSQL server and a real RQ broker: a job that waits
for the commit is not on the broker before it, is after it, and never is after a rollback;
savepoints, perform_all_later, another database alias, django.tasks, and SQLAlchemy sessions."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from django.db import transaction
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, scoped_session, sessionmaker

import tests.django_support  # noqa: F401
from jobadapter import Job, config, defaults, perform_all_later
from jobadapter import sqlalchemy as jobadapter_sqlalchemy
from jobadapter.adapters.base import Adapter
from jobadapter.django.compat import TaskResult, task_enqueued
from jobadapter.faults.brokers import PrivateRedis
from jobadapter.operations import JobNotFound, JobState
from tests.django_site.models import Order
from tests.django_site.settings import DATABASE_NAME
from tests.django_site.tasks import add


class ShipAfterCommit(Job):
    enqueue_after_transaction_commit = True

    def perform(self, order_id: int) -> None: ...


class ShipAtOnce(Job):
    enqueue_after_transaction_commit = False

    def perform(self, order_id: int) -> None: ...


class ShipByDefault(Job):
    def perform(self, order_id: int) -> None: ...


@pytest.fixture(scope="module")
def redis() -> Iterator[PrivateRedis]:
    with PrivateRedis(persistent=False) as server:
        yield server


@pytest.fixture
def broker(redis: PrivateRedis) -> Iterator[Adapter]:
    adapter = config.configure(url=f"rq+{redis.url}")
    yield adapter
    config.reset()


def on_broker(adapter: Adapter, job: Job) -> bool:
    try:
        return adapter.find(job.job_id).state is JobState.PENDING
    except JobNotFound:
        return False


# -- Django -------------------------------------------------------------------------------


def test_outside_a_transaction_the_job_is_enqueued_at_once(broker: Adapter) -> None:
    job = ShipAfterCommit.perform_later(1)
    assert job.successfully_enqueued and on_broker(broker, job)


def test_inside_atomic_it_waits_for_the_commit(broker: Adapter) -> None:
    with transaction.atomic():
        order = Order.objects.create(reference="after commit")
        job = ShipAfterCommit.perform_later(order.pk)
        at_once = ShipAtOnce.perform_later(order.pk)
        assert not job.successfully_enqueued and not on_broker(broker, job)
        assert on_broker(broker, at_once)
    assert job.successfully_enqueued and on_broker(broker, job)


def test_a_rollback_never_enqueues(broker: Adapter) -> None:
    with contextlib.suppress(RuntimeError), transaction.atomic():
        job = ShipAfterCommit.perform_later(2)
        raise RuntimeError("roll back")
    assert not job.successfully_enqueued and not on_broker(broker, job)


def test_a_rolled_back_savepoint_drops_its_jobs_only(broker: Adapter) -> None:
    with transaction.atomic():
        outer = ShipAfterCommit.perform_later(3)
        with contextlib.suppress(RuntimeError), transaction.atomic():
            inner = ShipAfterCommit.perform_later(4)
            raise RuntimeError("roll back the savepoint")
        with transaction.atomic():
            kept = ShipAfterCommit.perform_later(5)
        assert not on_broker(broker, kept)  # a released savepoint still waits for the outer commit
    assert on_broker(broker, outer) and on_broker(broker, kept) and not on_broker(broker, inner)


def test_perform_all_later_inside_atomic_enqueues_the_batch_at_commit(broker: Adapter) -> None:
    waiting = [ShipAfterCommit(n) for n in range(3)]
    with transaction.atomic():
        assert perform_all_later([*waiting, ShipAtOnce(9)]) == 1
        assert not any(on_broker(broker, job) for job in waiting)
    assert all(on_broker(broker, job) for job in waiting)


def test_the_default_applies_to_classes_that_do_not_say(broker: Adapter) -> None:
    # Rails 7.2: config.active_job.enqueue_after_transaction_commit
    defaults.update(enqueue_after_transaction_commit=True)
    try:
        with transaction.atomic():
            job = ShipByDefault.perform_later(6)
            assert not on_broker(broker, job)
        assert on_broker(broker, job)
    finally:
        defaults.update(enqueue_after_transaction_commit=False)
    with transaction.atomic():
        assert on_broker(broker, ShipByDefault.perform_later(7))


def test_the_alias_of_a_model_argument_is_the_transaction_waited_for(broker: Adapter) -> None:
    with transaction.atomic(using="other"):
        order = Order(reference="other")
        order.save(using="other")
        job = ShipAfterCommit.perform_later(order.pk)
        assert not on_broker(broker, job)
    assert on_broker(broker, job)
    with transaction.atomic(), transaction.atomic(using="other"):
        order = Order.objects.using("other").get(pk=order.pk)
        waits_for_other = ShipAfterCommit.perform_later(order)
        with transaction.atomic(using="other"):
            pass
        assert not on_broker(broker, waits_for_other)
    assert on_broker(broker, waits_for_other)


def test_django_tasks_enqueues_wait_and_announce_at_commit(broker: Adapter) -> None:
    seen: list[str] = []

    def receive(sender: type, task_result: TaskResult[Any], **kwargs: Any) -> None:
        seen.append(task_result.id)

    task_enqueued.connect(receive, weak=False)
    job_class = add.func.__jobadapter_job__
    job_class.enqueue_after_transaction_commit = True
    try:
        with transaction.atomic():
            result = add.enqueue(1, 2)
            assert seen == [] and not broker_has(broker, result.id)
        assert seen == [result.id] and broker_has(broker, result.id)
    finally:
        job_class.enqueue_after_transaction_commit = None
        task_enqueued.disconnect(receive)


def broker_has(adapter: Adapter, job_id: str) -> bool:
    try:
        return adapter.find(job_id).state is JobState.PENDING
    except JobNotFound:
        return False


# -- SQLAlchemy ----------------------------------------------------------------------------


class Base(DeclarativeBase):
    pass


class Invoice(Base):
    __tablename__ = "jobadapter_after_commit_invoice"
    id: Mapped[int] = mapped_column(primary_key=True)


@pytest.fixture(scope="module")
def engine() -> Iterator[sa.Engine]:
    engine = sa.create_engine(f"postgresql+psycopg://postgres@127.0.0.1:5432/{DATABASE_NAME}")
    Base.metadata.create_all(engine)
    yield engine
    Base.metadata.drop_all(engine)
    engine.dispose()


def test_a_session_transaction_enqueues_at_commit_and_never_after_rollback(
    broker: Adapter, engine: sa.Engine
) -> None:
    with Session(engine) as session, jobadapter_sqlalchemy.transaction_of(session):
        idle = ShipAfterCommit.perform_later(10)  # no transaction begun yet: at once
        assert on_broker(broker, idle)
        session.add(Invoice(id=10))
        session.flush()
        job = ShipAfterCommit.perform_later(10)
        assert not on_broker(broker, job)
        session.commit()
        assert on_broker(broker, job)
        session.add(Invoice(id=11))
        session.flush()
        dropped = ShipAfterCommit.perform_later(11)
        session.rollback()
        closed = ShipAfterCommit.perform_later(12)
    assert not on_broker(broker, dropped) and on_broker(broker, closed)  # no transaction left: at once


def test_savepoints_and_perform_all_later_in_a_session(broker: Adapter, engine: sa.Engine) -> None:
    with Session(engine) as session, jobadapter_sqlalchemy.transaction_of(session):
        session.begin()
        outer = ShipAfterCommit.perform_later(20)
        savepoint = session.begin_nested()
        inner = ShipAfterCommit.perform_later(21)
        savepoint.rollback()
        with session.begin_nested():
            kept = ShipAfterCommit.perform_later(22)
        batch = [ShipAfterCommit(n) for n in (23, 24)]
        assert perform_all_later(batch) == 0
        assert not any(on_broker(broker, job) for job in [outer, kept, *batch])
        session.commit()
    assert all(on_broker(broker, job) for job in [outer, kept, *batch])
    assert not on_broker(broker, inner)


def test_a_session_found_by_a_finder(broker: Adapter, engine: sa.Engine) -> None:
    scoped = scoped_session(sessionmaker(engine))
    forget = jobadapter_sqlalchemy.find_session_with(lambda: scoped() if scoped.registry.has() else None)
    try:
        scoped.add(Invoice(id=30))
        scoped.flush()
        job = ShipAfterCommit.perform_later(30)
        assert not on_broker(broker, job)
        scoped.commit()
        assert on_broker(broker, job)
    finally:
        forget()
        scoped.remove()
