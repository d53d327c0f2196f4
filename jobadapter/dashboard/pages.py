"""How the pages put things into words: times, waits, arguments, a job's timeline, notices.

The templates only lay out what these return; all of it is escaped by
Jinja2 on the way out (autoescape is on for every template), so a job
argument or a traceback is always text, never markup.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from jobadapter.envelope import VERSION
from jobadapter.operations import JobRecord, JobState

if TYPE_CHECKING:
    from jobadapter.journal.store import Execution

ARGUMENTS_SHOWN = 120
"""Characters of a job's arguments shown in a list; the job's page shows them whole."""

NOTICES: Mapping[str, str] = {
    "retry": "Retried: the job is pending again, with the same id.",
    "discard": "Discarded: the job will not run.",
    "discarded": "Discarded job {job}: it will not run.",
    "run-now": "The job is due now: the next free worker runs it.",
    "paused": "Paused queue {queue}: workers take none of its jobs until it is resumed.",
    "resumed": "Resumed queue {queue}: workers take its jobs again.",
    "retry-all": "Retried {count} job(s).",
    "discard-all": "Discarded {count} job(s).",
}
"""What a page says after an action redirected to it (``?notice=…``): fixed sentences, so a
link cannot make the dashboard say anything else."""


def notice(query: Mapping[str, str]) -> str | None:
    text = NOTICES.get(query.get("notice", ""))
    if text is None:
        return None
    count = query.get("count", "")
    return text.format(
        queue=query.get("queue", ""), job=query.get("job", ""), count=count if count.isdigit() else "?"
    )


def when(moment: datetime | None) -> str:
    """``2026-11-29 13:45:02 UTC``, or a dash."""
    if moment is None:
        return "—"
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    """``3 min ago``, ``in 58 min``: how far ``moment`` is from now."""
    if moment is None:
        return ""
    delta = ((now or datetime.now(timezone.utc)) - moment).total_seconds()
    text = seconds(abs(delta), precise=False)
    return f"{text} ago" if delta >= 0 else f"in {text}"


def seconds(value: float | None, precise: bool = True) -> str:
    """A duration for a person: ``0.42 s``, ``12 s``, ``3 min``, ``2 h 5 min``, ``3 d``."""
    if value is None:
        return "—"
    if value < 10 and precise:
        return f"{value:.2f} s"
    if value < 60:
        return f"{int(value)} s"
    minutes = int(value // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{hours // 24} d"


def as_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def short(job_id: str) -> str:
    return job_id if len(job_id) <= 13 else job_id[:12] + "…"


def class_name(job_class: str) -> str:
    """``billing.jobs.ChargeCard`` → ``ChargeCard``: what an operator calls the job."""
    return job_class.rpartition(".")[2] or job_class


def module_name(job_class: str) -> str:
    """``billing.jobs.ChargeCard`` → ``billing.jobs``."""
    return job_class.rpartition(".")[0]


def arguments(record: JobRecord, limit: int = ARGUMENTS_SHOWN) -> str:
    """``42, "alice@example.com", to="bob"``: the call, as one line (cut at ``limit``)."""
    if record.payload is not None and record.job_class == "?":
        text = "unreadable payload: " + record.payload
    else:
        parts = [_compact(value) for value in record.arguments]
        parts += [f"{name}={_compact(value)}" for name, value in record.keyword_arguments.items()]
        text = ", ".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class Moment:
    """One line of a job's timeline."""

    at: datetime | None
    what: str
    detail: str = ""
    kind: str = "info"
    """``info``, ``good``, ``bad`` or ``wait``: how the line is marked."""


OUTCOMES: Mapping[str, tuple[str, str]] = {
    "performed": ("Performed", "good"),
    "retried": ("Failed; a retry is scheduled", "bad"),
    "discarded": ("Discarded", "info"),
    "rescued": ("Failed; the error was rescued", "good"),
    "exhausted": ("Failed; retries exhausted, handled by on_exhausted", "bad"),
    "failed": ("Failed", "bad"),
    "aborted": ("Aborted", "info"),
}


def timeline(record: JobRecord, executions: Sequence[Execution] = ()) -> list[Moment]:
    """What is known of the job's life, oldest first.

    With the journal's history (``executions``, `Journal.executions`), every
    ended execution appears with its times and how it ended. Without it (no
    journal, or a journal older than the history), only the job's row is
    known: its enqueue, its latest execution, and a count of the earlier ones.
    """
    if not executions:
        return _timeline_of_row(record)
    moments = [Moment(record.enqueued_at, "Enqueued", f"on queue {record.queue}")]
    if record.scheduled_at is not None:
        moments.append(Moment(record.scheduled_at, "Due", "scheduled for this time", "wait"))
    for run in executions:
        where = f"worker on {run.worker}" if run.worker else ""
        moments.append(Moment(run.started_at, f"Execution {run.number} started", where))
        label, kind = OUTCOMES.get(run.outcome or "performed", (run.outcome or "Ended", "info"))
        moments.append(Moment(run.finished_at, label, "" if run.error is None else str(run.error), kind))
    last = executions[-1]
    if record.state is JobState.RUNNING and record.started_at is not None:
        moments.append(Moment(record.started_at, f"Execution {record.executions} started", ""))
    ending = _ending(record)
    if ending is not None and (
        record.state not in (JobState.FAILED, JobState.FINISHED) or last.outcome != record.outcome
    ):
        moments.append(ending)  # still to come, or ended another way (an operator's discard)
    timed = sorted((moment for moment in moments if moment.at is not None), key=lambda moment: moment.at or 0)
    return timed + [moment for moment in moments if moment.at is None]


def _timeline_of_row(record: JobRecord) -> list[Moment]:
    moments = [Moment(record.enqueued_at, "Enqueued", f"on queue {record.queue}")]
    if record.scheduled_at is not None:
        moments.append(Moment(record.scheduled_at, "Due", "scheduled for this time", "wait"))
    earlier = record.executions - 1 if record.started_at is not None else record.executions
    if earlier > 0:
        moments.append(
            Moment(
                None,
                f"{earlier} earlier execution(s)",
                "each failed and was retried (without the journal's history, only the latest is known)",
                "bad",
            )
        )
    if record.started_at is not None:
        where = f" on {record.worker}" if record.worker else ""
        number = max(record.executions, 1)
        moments.append(Moment(record.started_at, f"Execution {number} started", f"worker{where}".strip()))
    ending = _ending(record)
    if ending is not None:
        moments.append(ending)
    return moments


def _ending(record: JobRecord) -> Moment | None:
    error = str(record.error) if record.error is not None else ""
    if record.state is JobState.FAILED:
        return Moment(record.finished_at, "Failed", error, "bad")
    if record.state is JobState.RUNNING:
        return Moment(None, "Running now", "", "wait")
    if record.state is JobState.FINISHED:
        label, kind = OUTCOMES.get(record.outcome or "performed", (record.outcome or "Finished", "info"))
        return Moment(record.finished_at, label, error if kind == "bad" else "", kind)
    if record.outcome == "retried":
        return Moment(None, "Waiting to be retried", error, "wait")
    waiting = "Waiting for a worker" if record.state is JobState.PENDING else "Waiting for its time"
    return Moment(None, waiting)


def envelope(record: JobRecord) -> dict[str, Any]:
    """The job's envelope as the backend and the journal report it (wire form)."""
    document = record.to_dict()
    return {
        "jobadapter": VERSION,
        "job_class": record.job_class,
        "job_id": record.job_id,
        "queue_name": record.queue,
        "priority": record.priority,
        "arguments": record.arguments,
        "keyword_arguments": record.keyword_arguments,
        "executions": record.executions,
        "enqueued_at": document["enqueued_at"],
        "scheduled_at": document["scheduled_at"],
    }


@dataclass(frozen=True)
class Bar:
    """One bar of a queue's throughput chart (an inline SVG drawn by the template)."""

    x: int
    y: int
    height: int
    count: int
    label: str


CHART_HEIGHT = 28
BAR_WIDTH = 9


def bar_chart(counts: Sequence[int], minutes_per_bar: int = 5) -> list[Bar]:
    """Bars for jobs ended per slice, the tallest filling the chart; an empty slice gets a
    1-pixel baseline so the hour's shape stays visible."""
    tallest = max(counts, default=0) or 1
    bars = []
    for index, count in enumerate(counts):
        height = max(1, round(CHART_HEIGHT * count / tallest))
        start = (len(counts) - index) * minutes_per_bar
        label = f"{count} ended {start}–{start - minutes_per_bar} min ago"
        bars.append(Bar(index * (BAR_WIDTH + 2), CHART_HEIGHT - height, height, count, label))
    return bars
