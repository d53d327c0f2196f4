"""`Job`: the class users subclass, with ``set()``, ``perform_later`` and ``perform_now``.

A job is a plain object holding its arguments and bookkeeping (ids, queue,
priority, timestamps, execution counts). Enqueueing turns it into an
`Envelope` and hands that to an adapter; performing is `execution.perform`.
``perform_later`` and ``set(...).perform_later`` take the parameters of the
subclass's ``perform`` (ParamSpec), so a type checker catches a wrong argument
at the call site.

``perform_now`` and ``set`` mean one thing on the class and another on an
instance, as in ActiveJob: ``HelloJob.perform_now("Jamie")`` builds a job and runs
it, ``HelloJob("Jamie").perform_now()`` runs that job; ``job.set(wait=5)``
changes that job and ``job.enqueue()`` enqueues it. ``perform_later`` on an
instance is an error that says to call ``enqueue``: it would otherwise build a
second job and silently drop this one's arguments.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import partial
from types import MappingProxyType
from typing import Any, ClassVar, Generic, NoReturn, Protocol, TypeVar, overload

from typing_extensions import ParamSpec, Self

from jobadapter import config, defaults, events, execution, hooks, registry, transactions
from jobadapter.adapters.base import Adapter, Capability, EnqueueRequest
from jobadapter.arguments import deserialize_arguments, serialize_arguments
from jobadapter.envelope import NO_EXTRAS, Envelope
from jobadapter.errors import (
    AdapterClosedError,
    ConfigurationError,
    EnqueueError,
    JobAdapterError,
    JobFailedError,
)
from jobadapter.ids import new_job_id
from jobadapter.operations import JobRecord, JobState, look_up
from jobadapter.rescue import Rule, handler_rules

P = ParamSpec("P")
J = TypeVar("J", bound="Job")
J_co = TypeVar("J_co", covariant=True)
_UNSET: Any = object()
_FROM_DEFAULTS: Any = object()
"""A job class that declares no priority: it takes ``configure(default_priority=...)``."""
_NO_OPTIONS: Mapping[str, Any] = MappingProxyType({})


class _Performs(Protocol[P, J_co]):
    """A job class seen by a type checker: its ``perform`` parameters and its own type."""

    def perform(self, *args: P.args, **kwargs: P.kwargs) -> object: ...

    def _self_for_typing(self) -> J_co: ...


@dataclass(frozen=True)
class EnqueueOptions:
    """What ``set()`` was given, checked once, applied to each job it enqueues."""

    wait: float | None = None
    wait_until: datetime | None = None
    queue: str | None = None
    priority: Any = _UNSET
    adapter_options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        wait: float | timedelta | None,
        wait_until: datetime | None,
        queue: str | None,
        priority: Any,
        adapter_options: Mapping[str, Any] | None,
    ) -> EnqueueOptions:
        if wait is not None and wait_until is not None:
            raise ConfigurationError("give wait or wait_until, not both")
        seconds = None if wait is None else _seconds(wait)
        if wait_until is not None:
            if not isinstance(wait_until, datetime):
                raise ConfigurationError(f"wait_until must be a datetime, not {wait_until!r}")
            if wait_until.tzinfo is None or wait_until.utcoffset() is None:
                raise ConfigurationError(
                    "wait_until must be timezone-aware (a naive datetime is ambiguous): "
                    "use e.g. datetime.now(timezone.utc) + timedelta(hours=1)"
                )
        if queue is not None:
            _check_queue_name(queue, "set(queue=...)")
        if priority is not _UNSET:
            _check_priority(priority, "set(priority=...)")
        if adapter_options is not None and not isinstance(adapter_options, Mapping):
            raise ConfigurationError(f"adapter_options must be a mapping, not {adapter_options!r}")
        return cls(seconds, wait_until, queue, priority, dict(adapter_options or {}))


class ConfiguredJob(Generic[P, J]):
    """What ``Job.set(...)`` returns: the job class with enqueue options attached."""

    def __init__(self, job_class: type[J], options: EnqueueOptions) -> None:
        self._job_class = job_class
        self._options = options

    def perform_later(self, *args: P.args, **kwargs: P.kwargs) -> J:
        """Enqueue with these options; returns the job (see `Job.perform_later`)."""
        job = self._job_class(*args, **kwargs)
        job._apply(self._options)
        job._enqueue(config.adapter_for(self._job_class))
        return job

    def perform_now(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        """Run here and now with these options' queue and priority (waits are ignored)."""
        job = self._job_class(*args, **kwargs)
        job._apply(self._options)
        return execution.perform(job, None)


class _PerformLater:
    """``Job.perform_later``: on the class, build a job and enqueue it; on an instance, an
    error that points at ``enqueue``."""

    @overload
    def __get__(self, instance: None, owner: type[_Performs[P, J]]) -> Callable[P, J]: ...
    @overload
    def __get__(self, instance: Job, owner: type[Any]) -> Callable[..., NoReturn]: ...
    def __get__(self, instance: Job | None, owner: type[Any]) -> Callable[..., Any]:
        if instance is not None:
            return partial(_not_on_an_instance, instance, "perform_later", "job.enqueue()")
        return partial(_perform_later, owner)


class _PerformNow:
    """``Job.perform_now``: on the class, build a job and run it; on an instance, run it."""

    @overload
    def __get__(self, instance: None, owner: type[_Performs[P, J]]) -> Callable[P, Any]: ...
    @overload
    def __get__(self, instance: Job, owner: type[Any]) -> Callable[[], Any]: ...
    def __get__(self, instance: Job | None, owner: type[Any]) -> Callable[..., Any]:
        if instance is not None:
            return partial(execution.perform, instance, None)
        return partial(_perform_now, owner)


class _Set:
    """``Job.set``: on the class, options for the next enqueue (a `ConfiguredJob`); on an
    instance, the same options applied to that job, which is returned."""

    @overload
    def __get__(self, instance: None, owner: type[_Performs[P, J]]) -> _SetOnClass[P, J]: ...
    @overload
    def __get__(self, instance: J, owner: type[Any]) -> _SetOnInstance[J]: ...
    def __get__(self, instance: Job | None, owner: type[Any]) -> Callable[..., Any]:
        if instance is not None:
            return partial(_set_on_instance, instance)
        return partial(_set_on_class, owner)


class _SetOnClass(Protocol[P, J]):
    def __call__(
        self,
        *,
        wait: float | timedelta | None = None,
        wait_until: datetime | None = None,
        queue: str | None = None,
        priority: int | None = ...,
        adapter_options: Mapping[str, Any] | None = None,
    ) -> ConfiguredJob[P, J]: ...


class _SetOnInstance(Protocol[J_co]):
    def __call__(
        self,
        *,
        wait: float | timedelta | None = None,
        wait_until: datetime | None = None,
        queue: str | None = None,
        priority: int | None = ...,
        adapter_options: Mapping[str, Any] | None = None,
    ) -> J_co: ...


class Job:
    """Subclass this and define ``perform``. docs/guide.md has the full semantics.

    Class attributes: ``queue_as`` (a queue name, or a callable ``(job) -> str``
    called with each new job; None or unset for ``configure(default_queue_name=...)``),
    ``priority`` (int or None; a lower number is more urgent) or ``priority_as`` (a
    callable ``(job) -> int | None`` called with each new job), ``log_arguments``,
    ``queue_adapter`` (an adapter URL or configured name; None for the default) and
    ``job_name`` (the registry key; ``module.QualName`` unless set, so set it to keep
    jobs in flight runnable across a rename). Do not override ``__init__``: a job's
    constructor arguments are its ``perform`` arguments.
    """

    queue_as: ClassVar[str | Callable[..., str] | None] = None
    priority: int | None = None
    priority_as: ClassVar[Callable[..., int | None] | None] = None
    log_arguments: ClassVar[bool] = True
    queue_adapter: ClassVar[str | None] = None
    job_name: ClassVar[str] = "jobadapter.job.Job"
    store_result: ClassVar[bool] = False
    """Keep what ``perform`` returns in the journal, for ``job.result()`` and ``lookup``."""
    enqueue_after_transaction_commit: ClassVar[bool | None] = None
    """Enqueue inside a transaction only when it commits (`jobadapter.transactions`); None: the
    default, ``configure(enqueue_after_transaction_commit=...)`` (False unless set)."""

    _own_rules: ClassVar[tuple[Rule, ...]] = ()
    _hook_names: ClassVar[dict[str, tuple[str, ...]]] = {kind: () for kind in hooks.KINDS}
    _has_enqueue_hooks: ClassVar[bool] = False
    _is_async: ClassVar[bool] = False
    _queue_as: ClassVar[object] = None
    _priority_as: ClassVar[object] = _FROM_DEFAULTS

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "job_name" not in vars(cls):
            cls.job_name = f"{cls.__module__}.{cls.__qualname__}"
        declared = inspect.getattr_static(cls, "queue_as")
        if isinstance(declared, str):
            _check_queue_name(declared, f"{cls.__qualname__}.queue_as")
        cls._queue_as = declared
        cls._priority_as = _declared_priority(cls)
        cls._own_rules = tuple(handler_rules(dict(vars(cls))))
        cls._hook_names = hooks.collect(cls)
        cls._has_enqueue_hooks = any(
            cls._hook_names[f"{when}_enqueue"] for when in ("before", "around", "after")
        )
        cls._is_async = inspect.iscoroutinefunction(cls.perform)
        registry.register(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.arguments: list[Any] = list(args)
        self.keyword_arguments: dict[str, Any] = kwargs
        self.job_id: str = new_job_id()
        self.provider_job_id: str | None = None
        self.enqueued_at: datetime | None = None
        self.scheduled_at: datetime | None = None
        self.executions: int = 0
        self.exception_executions: dict[str, int] = {}
        self.successfully_enqueued: bool = False
        self.enqueue_error: EnqueueError | None = None
        self.outcome: str | None = None
        self.envelope_extras: Mapping[str, Any] = NO_EXTRAS
        """The envelope's optional keys (e.g. ``trace_context``): replaced, never mutated, since a
        retry's copy of the job shares the mapping."""
        self._serialized_arguments: tuple[list[Any], dict[str, Any]] | None = None
        self._stored_arguments: tuple[list[Any], dict[str, Any]] | None = None
        self._adapter_options: Mapping[str, Any] = _NO_OPTIONS
        self._run_by: Adapter | None = None
        """The adapter whose worker runs this execution (where `retry_job` publishes)."""
        self._handling: BaseException | None = None
        """The error a ``rescue_from`` handler of this job is handling (what `retry_job` names)."""
        queue_as = type(self)._queue_as
        if type(queue_as) is str and defaults.active.queue_name_prefix is None:
            self.queue_name: str = queue_as
        else:
            self.queue_name = self._resolve_queue_name()
        declared = type(self)._priority_as
        if declared is _FROM_DEFAULTS:
            self.priority: int | None = defaults.active.default_priority
        elif declared is None or isinstance(declared, int):
            self.priority = declared
        else:
            self.priority = self._resolve_priority(declared)

    def perform(self, *args: Any, **kwargs: Any) -> Any:
        """The work. Override it (``def`` or ``async def``)."""
        raise NotImplementedError(f"{type(self).__qualname__} does not define perform()")

    def _self_for_typing(self) -> Self:
        """Lets a type checker infer the concrete job class in ``perform_later``'s return type."""
        return self

    def __repr__(self) -> str:
        return f"<{type(self).__qualname__} job_id={self.job_id} queue={self.queue_name}>"

    # -- class-level API ---------------------------------------------------------------

    perform_later = _PerformLater()
    """``HelloJob.perform_later(*args, **kwargs)``: enqueue a new job on its adapter and
    return it (``job_id``, ``provider_job_id``…). Raises `SerializationError` for an
    argument that cannot be stored and `EnqueueError` when the backend cannot be reached.
    A ``before_enqueue`` hook that raises `Abort` leaves ``successfully_enqueued`` False.
    On an instance it raises TypeError: enqueue an instance with ``job.enqueue()``."""

    perform_now = _PerformNow()
    """``HelloJob.perform_now(*args)`` runs a new job here and now, ``job.perform_now()``
    runs that job; with its hooks and rescue rules either way. Returns what ``perform``
    returned (None when rescued). A retry it decides on is enqueued on the job's adapter,
    as ActiveJob does."""

    set = _Set()
    """``HelloJob.set(wait=…, wait_until=…, queue=…, priority=…, adapter_options=…)``:
    options for the next enqueue (a delay in seconds or a timedelta, or an aware
    ``wait_until``; another queue or priority; backend-specific options). On an instance,
    ``job.set(...)`` applies them to that job and returns it."""

    def enqueue(
        self,
        *,
        wait: float | timedelta | None = None,
        wait_until: datetime | None = None,
        queue: str | None = None,
        priority: int | None = _UNSET,
        adapter_options: Mapping[str, Any] | None = None,
    ) -> Self:
        """Enqueue this job (ActiveJob's ``job.enqueue``), with these options applied first;
        returns it. Errors as `perform_later`'s."""
        _set_on_instance(
            self,
            wait=wait,
            wait_until=wait_until,
            queue=queue,
            priority=priority,
            adapter_options=adapter_options,
        )
        self._enqueue(config.adapter_for(type(self)))
        return self

    @classmethod
    def lookup(cls, job_id: str) -> JobRecord:
        """The job with this id as its adapter and the journal know it.

        The adapter's ``find`` says where the job is; the journal fills what the
        adapter left unknown (timings, worker, outcome, result). Where the adapter
        cannot look jobs up, the journal's row alone answers. Raises `JobNotFound`
        when neither knows the id.
        """
        return look_up(config.adapter_for(cls), job_id)

    def retry_job(
        self,
        *,
        wait: float | timedelta | None = None,
        wait_until: datetime | None = None,
        queue: str | None = None,
        priority: int | None = None,
    ) -> Job:
        """Enqueue this job again, same job_id and execution counts, as Rails' ``retry_job``
        (the pattern ``rescue_from(E)`` then ``self.retry_job(wait=60)``). It goes through the
        adapter running the job, with its native retry where it has one, as ``retry_on`` does;
        the run then counts as retried. Returns the next attempt."""
        if wait is not None and wait_until is not None:
            raise ConfigurationError("give wait or wait_until, not both")
        seconds = 0.0
        if isinstance(wait, timedelta):
            seconds = wait.total_seconds()
        elif wait is not None:
            seconds = float(wait)
        elif wait_until is not None:
            seconds = (wait_until - datetime.now(timezone.utc)).total_seconds()
        if priority is not None:
            _check_priority(priority, "retry_job priority")
        attempt = execution.retry(self, max(seconds, 0.0), queue, priority, self._handling, self._run_by)
        if self._handling is not None:
            self.outcome = execution.RETRIED
        return attempt

    def result(self, timeout: float = 10.0) -> Any:
        """Wait until this job finished and return what its ``perform`` returned (Celery's
        ``AsyncResult.get()``). Needs ``store_result = True`` and a journal.

        Raises `JobFailedError` naming the error if the job failed, `TimeoutError` if it
        has not finished within ``timeout`` seconds. A job that finished without a return
        value (discarded, rescued, halted by a hook) returns None.
        """
        from jobadapter import journal

        if not type(self).store_result:
            raise ConfigurationError(
                f"{type(self).__qualname__} does not keep results: set store_result = True on the class"
            )
        active = journal.active()
        if active is None:
            raise ConfigurationError(
                "results are kept in the journal, and none is configured: set JOBADAPTER_JOURNAL "
                "or call jobadapter.journal.configure(url)"
            )
        deadline = time.monotonic() + timeout
        active.flush(timeout)  # when this process ran the job, its rows may still be buffered
        pause = 0.005
        while True:
            record = active.find(self.job_id)
            if record is not None and record.state is JobState.FAILED:
                error = record.error
                raise JobFailedError(
                    self.job_id, error.error_class if error else None, error.message if error else None
                )
            if record is not None and record.state is JobState.FINISHED:
                return _result_of(record)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                shown = record.state.value if record is not None else "not yet journaled"
                raise TimeoutError(f"job {self.job_id} did not finish within {timeout:g} s (it is {shown})")
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, 0.1)

    # -- internals shared with execution.py and the adapters ---------------------------

    @classmethod
    def from_envelope(cls, envelope: Envelope) -> Self:
        """The job an envelope describes; its arguments load when it performs."""
        job = cls.__new__(cls)
        job.arguments = []
        job.keyword_arguments = {}
        job.job_id = envelope.job_id
        job.provider_job_id = None
        job.queue_name = envelope.queue_name
        job.priority = envelope.priority
        job.enqueued_at = envelope.enqueued_at
        job.scheduled_at = envelope.scheduled_at
        job.executions = envelope.executions
        job.exception_executions = dict(envelope.exception_executions)
        job.successfully_enqueued = True
        job.enqueue_error = None
        job.outcome = None
        job.envelope_extras = envelope.extras
        job._serialized_arguments = (envelope.arguments, envelope.keyword_arguments)
        job._stored_arguments = job._serialized_arguments
        job._adapter_options = _NO_OPTIONS
        return job

    def load_arguments(self) -> None:
        """Turn the envelope's stored arguments back into objects (`DeserializationError`)."""
        if self._serialized_arguments is not None:
            arguments, keyword_arguments = deserialize_arguments(*self._serialized_arguments)
            self.arguments = arguments
            self.keyword_arguments = keyword_arguments
            self._serialized_arguments = None

    def to_envelope(self) -> Envelope:
        """The envelope for the next enqueue of this job, stamped now."""
        if self._serialized_arguments is not None:
            arguments, keyword_arguments = self._serialized_arguments
        else:
            arguments, keyword_arguments = serialize_arguments(self.arguments, self.keyword_arguments)
        # Kept after the arguments load, so the journal records them without serializing again.
        self._stored_arguments = (arguments, keyword_arguments)
        self.enqueued_at = datetime.now(timezone.utc)
        return Envelope(
            job_class=type(self).job_name,
            job_id=self.job_id,
            queue_name=self.queue_name,
            priority=self.priority,
            arguments=arguments,
            keyword_arguments=keyword_arguments,
            executions=self.executions,
            exception_executions=self.exception_executions,
            enqueued_at=self.enqueued_at,
            scheduled_at=self.scheduled_at,
            extras=self.envelope_extras,
        )

    def _resolve_queue_name(self) -> str:
        declared = type(self)._queue_as
        if declared is None or isinstance(declared, str):  # a str subclass: an enum.StrEnum member
            return defaults.queue_name(declared)
        if isinstance(declared, (staticmethod, classmethod)):
            declared = declared.__func__
        if not callable(declared):
            raise ConfigurationError(
                f"{type(self).__qualname__}.queue_as must be a queue name or a callable, not {declared!r}"
            )
        name = declared(self)
        _check_queue_name(name, f"{type(self).__qualname__}.queue_as(job)")
        return defaults.queue_name(str(name))

    def _resolve_priority(self, declared: object) -> int | None:
        if isinstance(declared, (staticmethod, classmethod)):
            declared = declared.__func__
        assert callable(declared)
        priority = declared(self)
        _check_priority(priority, f"{type(self).__qualname__}.priority_as(job)")
        return priority  # type: ignore[no-any-return]

    def _apply(self, options: EnqueueOptions) -> None:
        if options.queue is not None:
            self.queue_name = defaults.queue_name(options.queue)
        if options.priority is not _UNSET:
            self.priority = options.priority
        if options.wait is not None:
            self.scheduled_at = (
                datetime.now(timezone.utc) + timedelta(seconds=options.wait) if options.wait > 0 else None
            )
        elif options.wait_until is not None:
            self.scheduled_at = options.wait_until.astimezone(timezone.utc)
        if options.adapter_options:
            self._adapter_options = options.adapter_options

    def _enqueue(self, adapter: Adapter, *, retrying: bool = False) -> None:
        """Run the enqueue hooks around handing the envelope to ``adapter`` (when the open
        transaction commits, for a class that waits for it)."""
        self.successfully_enqueued = False
        self.enqueue_error = None
        waits = not retrying and transactions.wanted(type(self))
        if waits and transactions.defer([self], partial(self._enqueue, adapter)):
            return
        if events.listening("enqueue_start"):
            events.publish(events.Event("enqueue_start", self, adapter))
        try:
            if type(self)._has_enqueue_hooks:
                hooks.run_chain(self, "enqueue", lambda: self._deliver(adapter, retrying))
            else:
                self._deliver(adapter, retrying)
        except hooks.Halted:
            _publish_enqueue(self, adapter, aborted=True)
            return
        except EnqueueError as error:
            self.enqueue_error = error
            _publish_enqueue(self, adapter, error=error)
            raise
        except Exception as error:
            # A hook's (or a check's) error propagates as it is, but is logged and published as a
            # failed enqueue first, as Rails instruments whatever the enqueue block raised.
            _publish_enqueue(self, adapter, error=error)
            raise
        _publish_enqueue(self, adapter)

    def _prepare(self, adapter: Adapter) -> Envelope:
        """Check that ``adapter`` can take this job, then build its envelope."""
        if adapter.closed:
            raise AdapterClosedError(f"cannot enqueue {self.job_name}: the {adapter.name} adapter is closed")
        if self.job_name.startswith("__main__.") and Capability.EXTERNAL_WORKER in adapter.capabilities:
            raise ConfigurationError(_in_main_message(type(self), adapter))
        if self._adapter_options:
            adapter.check_options(self._adapter_options)
        return self.to_envelope()

    def _deliver(self, adapter: Adapter, retrying: bool) -> None:
        envelope = self._prepare(adapter)
        if retrying:
            provider_id = adapter.schedule_retry(envelope, self.scheduled_at, self._adapter_options)
        elif self.scheduled_at is None:
            provider_id = adapter.enqueue(envelope, self._adapter_options)
        else:
            provider_id = adapter.enqueue_at(envelope, self.scheduled_at, self._adapter_options)
        self.provider_job_id = provider_id
        self.successfully_enqueued = True


def _in_main_message(job_class: type[Job], adapter: Adapter) -> str:
    name = job_class.__qualname__
    return (
        f"cannot enqueue {name} to the {adapter.name} adapter: it is defined in the script being run "
        f"(__main__), so its job name {job_class.job_name!r} names a class no worker process can import. "
        f"Move {name} into a module that both this script and the worker import (the worker's --app), "
        f"or give it an explicit job_name (a script that is its own worker can do that)"
    )


def perform_all_later(jobs: Iterable[Job]) -> int:
    """Enqueue many jobs, in one round trip per adapter where the backend allows.

    Unlike Rails' bulk path, each job's enqueue hooks run: ``before_enqueue``
    and ``around_enqueue`` run as the job joins the batch, ``after_enqueue``
    once the batch is accepted. Returns how many jobs were enqueued; raises
    `EnqueueError` when an adapter rejects its batch or is closed, after every
    other adapter's batch was tried. Each job says its own result, as in Rails:
    ``successfully_enqueued`` for the ones the backend took (those a failing
    batch took before its failure too, where the backend can tell:
    `EnqueueError.taken`), ``enqueue_error`` for the others.
    """
    jobs = list(jobs)
    waiting = [job for job in jobs if isinstance(job, Job) and transactions.wanted(type(job))]
    if waiting and transactions.defer(waiting, partial(perform_all_later, waiting)):
        jobs = [job for job in jobs if not any(job is each for each in waiting)]
    batches: dict[int, tuple[Adapter, list[Job], list[EnqueueRequest]]] = {}
    failure: EnqueueError | None = None
    for job in jobs:
        if not isinstance(job, Job):
            raise TypeError(f"perform_all_later takes Job instances, not {job!r}")
        adapter = config.adapter_for(type(job))
        _, batch_jobs, requests = batches.setdefault(id(adapter), (adapter, [], []))
        job.successfully_enqueued = False
        job.enqueue_error = None
        if events.listening("enqueue_start"):
            events.publish(events.Event("enqueue_start", job, adapter, in_batch=True))
        join = partial(_join_batch, job, adapter, requests, batch_jobs)
        try:
            if type(job)._has_enqueue_hooks:
                hooks.run_chain(job, "enqueue", join, run_after=False)
            else:
                join()
        except hooks.Halted:
            _publish_enqueue(job, adapter, aborted=True)
        except EnqueueError as error:  # a closed adapter: the other adapters' batches still go
            job.enqueue_error = error
            failure = failure or error
    enqueued = 0
    for adapter, batch_jobs, requests in batches.values():
        if not requests:
            continue
        if events.listening("enqueue_all_start"):
            events.publish(events.Event("enqueue_all_start", None, adapter, jobs=tuple(batch_jobs)))
        refused: EnqueueError | None = None
        try:
            provider_ids = adapter.enqueue_all(requests)
        except EnqueueError as error:
            provider_ids = error.taken or []
            for job in batch_jobs[len(provider_ids) :]:
                job.enqueue_error = error
            failure = failure or error
            refused = error
        except Exception as error:  # a bug in the adapter: still close what enqueue_all_start opened
            if events.has_subscribers("enqueue_all"):
                events.publish(events.Event("enqueue_all", None, adapter, error=error))
            raise
        taken = batch_jobs[: len(provider_ids)]
        for job, provider_id in zip(taken, provider_ids, strict=True):
            job.provider_job_id = provider_id
            job.successfully_enqueued = True
            if type(job)._has_enqueue_hooks:
                hooks.run_after(job, "enqueue")
        enqueued += len(taken)
        if refused is not None:
            if events.has_subscribers("enqueue_all"):
                events.publish(events.Event("enqueue_all", None, adapter, error=refused, jobs=tuple(taken)))
        elif events.listening("enqueue_all"):
            events.publish(events.Event("enqueue_all", None, adapter, jobs=tuple(taken)))
    if failure is not None:
        raise failure
    return enqueued


def _join_batch(job: Job, adapter: Adapter, requests: list[EnqueueRequest], batch_jobs: list[Job]) -> None:
    """Add ``job`` to its adapter's batch (the action its enqueue hooks wrap in a bulk enqueue)."""
    requests.append(EnqueueRequest(job._prepare(adapter), job._adapter_options))
    batch_jobs.append(job)


def _publish_enqueue(
    job: Job, adapter: Adapter, *, aborted: bool = False, error: BaseException | None = None
) -> None:
    name = "enqueue" if job.scheduled_at is None else "enqueue_at"
    routine = error is None and not aborted
    if events.listening(name) if routine else events.has_subscribers(name):
        events.publish(events.Event(name, job, adapter, error=error, aborted=aborted))


def _result_of(record: JobRecord) -> Any:
    if record.has_result:
        (value,), _ = deserialize_arguments([record.result], {})
        return value
    if record.outcome == execution.PERFORMED:
        raise JobAdapterError(
            f"job {record.job_id} performed, but its result could not be stored (the worker logged why)"
        )
    return None


def _seconds(wait: object) -> float:
    if isinstance(wait, timedelta):
        seconds = wait.total_seconds()
    elif isinstance(wait, (int, float)) and not isinstance(wait, bool):
        seconds = float(wait)
    else:
        raise ConfigurationError(f"wait must be seconds (int or float) or a timedelta, not {wait!r}")
    if seconds < 0 or seconds != seconds:
        raise ConfigurationError(f"wait must not be negative, not {wait!r}")
    return seconds


def _check_queue_name(name: object, where: str) -> None:
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError(f"{where} must be a non-empty queue name, not {name!r}")


def _check_priority(priority: object, where: str) -> None:
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        raise ConfigurationError(f"{where} must be an int or None, not {priority!r}")


def _declared_priority(job_class: type[Job]) -> object:
    """The nearest ``priority`` or ``priority_as`` declaration in the class's MRO (the
    later one wins when one class declares both); `_FROM_DEFAULTS` when none is below Job."""
    for klass in job_class.__mro__:
        if klass is Job:
            break
        own = vars(klass)
        if own.get("priority_as") is not None:
            declared = own["priority_as"]
            function = declared.__func__ if isinstance(declared, (staticmethod, classmethod)) else declared
            if not callable(function):
                raise ConfigurationError(
                    f"{job_class.__qualname__}.priority_as must be a callable (job) -> int | None, "
                    f"not {declared!r}: set priority for a fixed one"
                )
            return declared
        if "priority" in own:
            priority = own["priority"]
            if callable(priority) or isinstance(priority, (staticmethod, classmethod)):
                raise ConfigurationError(
                    f"{job_class.__qualname__}.priority is a callable: name it priority_as to compute "
                    "each job's priority from the job (Rails' queue_with_priority block)"
                )
            _check_priority(priority, f"{job_class.__qualname__}.priority")
            return priority
    return _FROM_DEFAULTS


def _perform_later(job_class: type[Job], *args: Any, **kwargs: Any) -> Job:
    job = job_class(*args, **kwargs)
    job._enqueue(config.adapter_for(job_class))
    return job


def _perform_now(job_class: type[Job], *args: Any, **kwargs: Any) -> Any:
    return execution.perform(job_class(*args, **kwargs), None)


def _set_on_class(job_class: type[Job], **options: Any) -> ConfiguredJob[Any, Any]:
    return ConfiguredJob(job_class, _build_options(**options))


def _set_on_instance(job: J, **options: Any) -> J:
    job._apply(_build_options(**options))
    return job


def _build_options(
    *,
    wait: float | timedelta | None = None,
    wait_until: datetime | None = None,
    queue: str | None = None,
    priority: Any = _UNSET,
    adapter_options: Mapping[str, Any] | None = None,
) -> EnqueueOptions:
    return EnqueueOptions.build(wait, wait_until, queue, priority, adapter_options)


def _not_on_an_instance(job: Job, method: str, instead: str, *args: Any, **kwargs: Any) -> NoReturn:
    name = type(job).__qualname__
    raise TypeError(
        f"{method} is called on the job class ({name}.{method}(...)), not on a job: "
        f"to enqueue this {name} with its own arguments, call {instead}"
    )
