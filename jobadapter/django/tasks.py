"""A django.tasks ``@task`` function as a jobadapter job: the class it runs as, and its result.

A task function gets the job class `jobadapter.functions.job_class_for` makes for any
function, named after it (so Flower, rq-dashboard and Dramatiq show the function's
module path), with `TaskJob` as its base: its ``perform`` sends django.tasks'
``task_started`` and ``task_finished`` signals around the call and passes a
``TaskContext`` to a task that takes one. The envelope, the argument rules (no
pickle) and the rescue rules are a job's, so ``@retry_on`` above ``@task`` works.
"""

from __future__ import annotations

import builtins
import os
import socket
import traceback
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar

from django.utils import timezone

from jobadapter import after_enqueue, journal, registry
from jobadapter.arguments import deserialize_arguments
from jobadapter.django.compat import (
    TASK_MAX_PRIORITY,
    TASK_MIN_PRIORITY,
    BaseTaskBackend,
    InvalidTask,
    Task,
    TaskContext,
    TaskError,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
    task_enqueued,
    task_finished,
    task_started,
)
from jobadapter.functions import FunctionJob, job_class_for
from jobadapter.operations import JobError, JobRecord, JobState

WORST_PRIORITY = 9
"""The least urgent jobadapter priority every adapter serves as its own (0 is the most urgent)."""
_HOST = socket.gethostname()


def job_priority(task_priority: int) -> int:
    """Django's priority (-100..100, higher is more urgent, 0 by default) as jobadapter's
    (0..9, lower is more urgent), in ten bands of equal width, rounded half up.

    100 down to 89 is 0, 0 (Django's default) is 5, and -89 down to -100 is 9, so the order
    between any two tasks' priorities is kept wherever they fall in different bands, and a
    task above the default always runs before one at it.
    """
    span = TASK_MAX_PRIORITY - TASK_MIN_PRIORITY
    return ((TASK_MAX_PRIORITY - task_priority) * 2 * WORST_PRIORITY + span) // (2 * span)


class TaskJob(FunctionJob):
    """The base of the class a django.tasks task runs as; ``task`` is the `Task` it was made for."""

    abstract = True

    task: ClassVar[Task[Any, Any]]

    def perform(self, *args: Any, **kwargs: Any) -> Any:
        task = type(self).task
        sender = type(task.get_backend())
        worker = f"{_HOST}:{os.getpid()}"  # as the journal names workers
        result = self.task_result(TaskResultStatus.RUNNING, args, kwargs, [worker] * self.executions)
        now = timezone.now()
        object.__setattr__(result, "started_at", now)
        object.__setattr__(result, "last_attempted_at", now)
        task_started.send(sender=sender, task_result=result)
        try:
            if task.takes_context:
                value = task.call(TaskContext(task_result=result), *args, **kwargs)
            else:
                value = task.call(*args, **kwargs)
        except Exception as error:
            object.__setattr__(result, "finished_at", timezone.now())
            object.__setattr__(result, "status", TaskResultStatus.FAILED)
            result.errors.append(
                TaskError(exception_class_path=_path_of(type(error)), traceback=_trace(error))
            )
            task_finished.send(sender=sender, task_result=result)  # inside except, as Django's backends do
            raise
        object.__setattr__(result, "finished_at", timezone.now())
        object.__setattr__(result, "status", TaskResultStatus.SUCCESSFUL)
        object.__setattr__(result, "_return_value", value)
        task_finished.send(sender=sender, task_result=result)
        return value

    @after_enqueue
    def announce(self) -> None:
        """``task_enqueued``, once the job is on its queue: at once, or when the transaction it
        waited for committed (`jobadapter.transactions`)."""
        result = self.task_result(TaskResultStatus.READY, self.arguments, self.keyword_arguments, [])
        task_enqueued.send(type(type(self).task.get_backend()), task_result=result)

    def task_result(
        self,
        status: TaskResultStatus,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        worker_ids: list[str],
    ) -> TaskResult[Any]:
        """This job as a django.tasks result: its id is the job id, ``worker_ids`` one per
        execution (so ``TaskContext.attempt`` is the execution count)."""
        return TaskResult(
            task=type(self).task,
            id=self.job_id,
            status=status,
            enqueued_at=self.enqueued_at,
            started_at=None,
            finished_at=None,
            last_attempted_at=None,
            args=[_plain(value) for value in args],
            kwargs={name: _plain(value) for name, value in kwargs.items()},
            backend=type(self).task.backend,
            errors=[],
            worker_ids=worker_ids,
        )


def task_job_class(task: Task[Any, Any], queue_adapter: str | None) -> type[TaskJob]:
    """The job class ``task``'s function runs as, made on first use (`job_class_for`)."""
    made = job_class_for(
        task.func,
        queue=task.queue_name,
        queue_adapter=queue_adapter,
        store_result=True,
        base=TaskJob,
        attributes={"task": task},
    )
    if not issubclass(made, TaskJob):
        raise InvalidTask(f"{task.func.__qualname__} is already a @job function: it cannot be a task too")
    return made


def result_from_record(record: JobRecord, backend: BaseTaskBackend) -> TaskResult[Any]:
    """The django.tasks result of the job ``record`` describes (from the adapter and the journal).

    pending and scheduled are READY, running is RUNNING, failed is FAILED; a finished job
    is SUCCESSFUL unless it was discarded or exhausted its retries (then FAILED, with the
    error that ended it). ``worker_ids`` repeats the last worker once per execution, so
    ``attempts`` counts executions; ``return_value`` is the stored result.
    """
    try:
        job_class = registry.lookup(record.job_class)
    except LookupError:
        raise TaskResultDoesNotExist(record.job_id) from None
    if not issubclass(job_class, TaskJob):
        raise TaskResultDoesNotExist(f"{record.job_id} is a {record.job_class} job, not a django.tasks task")
    status = _status(record)
    arguments, keyword_arguments = _loaded(record)
    result: TaskResult[Any] = TaskResult(
        task=job_class.task.using(queue_name=record.queue),
        id=record.job_id,
        status=status,
        enqueued_at=record.enqueued_at,
        started_at=record.started_at,
        finished_at=record.finished_at
        if status in (TaskResultStatus.FAILED, TaskResultStatus.SUCCESSFUL)
        else None,
        last_attempted_at=record.started_at,
        args=arguments,
        kwargs=keyword_arguments,
        backend=backend.alias,
        errors=[] if record.error is None else [_task_error(record.error)],
        worker_ids=[record.worker or "?"] * _attempts(record, status),
    )
    if status is TaskResultStatus.SUCCESSFUL and record.has_result:
        (value,), _ = deserialize_arguments([record.result], {})
        object.__setattr__(result, "_return_value", value)
    return result


_FINISHED = (TaskResultStatus.FAILED, TaskResultStatus.SUCCESSFUL)
_STATUS = {
    JobState.PENDING: TaskResultStatus.READY,
    JobState.SCHEDULED: TaskResultStatus.READY,
    JobState.RUNNING: TaskResultStatus.RUNNING,
    JobState.FAILED: TaskResultStatus.FAILED,
}


def _status(record: JobRecord) -> TaskResultStatus:
    if record.state is not JobState.FINISHED:
        return _STATUS[record.state]
    if record.outcome in (None, "retried") and journal.active() is not None:
        # The broker saw the job end before the worker's journal batch (its outcome, its
        # return value) arrived, or the journal still has the attempt before: still
        # running, as far as a result can tell yet.
        return TaskResultStatus.RUNNING
    if record.outcome in ("discarded", "exhausted"):
        return TaskResultStatus.FAILED
    return TaskResultStatus.SUCCESSFUL


def _attempts(record: JobRecord, status: TaskResultStatus) -> int:
    """How many times the job ran: the broker's envelope counts the runs before the one it
    holds, so the journal's count wins where it is higher, and a running job has run once."""
    executions = record.executions
    kept = journal.active()
    if kept is not None:
        row = kept.find(record.job_id)
        if row is not None:
            executions = max(executions, row.executions)
    if status is not TaskResultStatus.READY:
        executions = max(executions, 1)
    return executions


def _loaded(record: JobRecord) -> tuple[list[Any], dict[str, Any]]:
    try:
        arguments, keyword_arguments = deserialize_arguments(record.arguments, record.keyword_arguments)
    except Exception:  # a model row gone since: the wire form still says what was passed
        return [_plain(value) for value in record.arguments], {
            name: _plain(value) for name, value in record.keyword_arguments.items()
        }
    return [_plain(value) for value in arguments], {
        name: _plain(value) for name, value in keyword_arguments.items()
    }


def _task_error(error: JobError) -> TaskError:
    return TaskError(exception_class_path=_error_path(error), traceback=error.traceback or str(error))


def _error_path(error: JobError) -> str:
    """The dotted path of the error's class: a traceback's last line names it with its module
    (``myapp.tasks.Flaky: …``), except for builtins (``ValueError: …``)."""
    named = error.error_class
    if error.traceback:
        last = error.traceback.rstrip().splitlines()[-1]
        head = last.partition(":")[0].strip()
        if head.endswith(error.error_class.rpartition(".")[2]) and " " not in head:
            named = head
    if "." not in named and hasattr(builtins, named):
        return f"builtins.{named}"
    return named


def _path_of(kind: type[BaseException]) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


def _trace(error: BaseException) -> str:
    return "".join(traceback.format_exception(type(error), error, error.__traceback__))


def _plain(value: Any) -> Any:
    """``value`` as JSON-ready data, the form django.tasks shows arguments in (a model, a date or
    another type jobadapter carries natively is shown as its text)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(item) for item in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)
