"""The operations verbs of the ``jobadapter`` command: the same runbook on every backend.

``queues``, ``jobs``, ``job``, ``retry``, ``discard``, ``run-now``, ``pause`` and
``resume`` call the operations contract of the adapter the URL names
(``--url``, or ``JOBADAPTER_URL``). Output is an aligned table for a person and
``--json`` for a script. Bulk commands (``--all``) count first, ask before
acting unless ``--yes``, show a progress bar on a terminal and print a summary.
Every failure is one line on stderr and a non-zero exit: 1 when the operation
failed (an unknown id, a job in the wrong state, a backend that cannot be
reached or cannot do it), 2 when the command itself is wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable

from jobadapter import config
from jobadapter.adapters.base import Adapter
from jobadapter.console import Progress, confirm, table
from jobadapter.errors import ConfigurationError, JobAdapterError
from jobadapter.operations import JobFilter, JobRecord, JobState, OperationUnsupported, look_up

URL_VARIABLE = "JOBADAPTER_URL"
DISCARDABLE = (JobState.PENDING, JobState.SCHEDULED, JobState.FAILED)


class Refused(Exception):
    """The operator declined a bulk action, or could not be asked."""


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the operations verbs to the ``jobadapter`` command's subcommands."""
    queues = _verb(commands, "queues", "list queues with pending, scheduled and failed counts", _queues)
    queues.add_argument("--json", action="store_true", help="print JSON")

    jobs = _verb(commands, "jobs", "list jobs by state, queue, class or argument text", _jobs)
    jobs.add_argument("--state", choices=[s.value for s in JobState], help="only this state (default: all)")
    _filters(jobs)
    jobs.add_argument("--limit", type=int, default=50, help="jobs per state (default 50)")
    jobs.add_argument("--offset", type=int, default=0, help="skip this many first (default 0)")
    jobs.add_argument("--json", action="store_true", help="print JSON")

    job = _verb(commands, "job", "show one job by id", _job)
    job.add_argument("job_id")
    job.add_argument("--json", action="store_true", help="print JSON")

    retry = _verb(commands, "retry", "run failed jobs again, with the same job ids", _retry)
    retry.add_argument("job_ids", nargs="*", metavar="ID")
    retry.add_argument("--all", action="store_true", help="every failed job the filters match")
    _filters(retry)
    retry.add_argument("--yes", action="store_true", help="do not ask before a bulk retry")

    discard = _verb(commands, "discard", "remove pending, scheduled or failed jobs for good", _discard)
    discard.add_argument("job_ids", nargs="*", metavar="ID")
    discard.add_argument("--all", action="store_true", help="every job in --state the filters match")
    discard.add_argument(
        "--state",
        choices=[s.value for s in DISCARDABLE],
        default="failed",
        help="with --all (default failed)",
    )
    _filters(discard)
    discard.add_argument("--yes", action="store_true", help="do not ask before a bulk discard")

    run_now = _verb(commands, "run-now", "run a scheduled job at once", _run_now)
    run_now.add_argument("job_id")

    pause = _verb(commands, "pause", "stop every worker taking a queue's jobs", _pause)
    pause.add_argument("queue")
    resume = _verb(commands, "resume", "let workers take a paused queue's jobs again", _resume)
    resume.add_argument("queue")


def _verb(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    summary: str,
    action: Callable[[Adapter, argparse.Namespace], int],
) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, help=summary, description=summary)
    parser.add_argument("--url", help=f"adapter URL (default: ${URL_VARIABLE})")
    parser.set_defaults(command=lambda options: _with_adapter(options, action))
    return parser


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--queue", help="only jobs of this queue")
    parser.add_argument("--class", dest="job_class", help="only jobs of this class (its job_name)")
    parser.add_argument("--search", help="only jobs whose arguments contain this text (any case)")


def _with_adapter(options: argparse.Namespace, action: Callable[[Adapter, argparse.Namespace], int]) -> int:
    url = options.url or os.environ.get(URL_VARIABLE)
    if not url:
        raise ConfigurationError(f"no adapter URL: pass --url or set {URL_VARIABLE}")
    adapter = config.build_adapter(url)
    try:
        return in_one_line(lambda: action(adapter, options))
    finally:
        adapter.close()


def in_one_line(run: Callable[[], int]) -> int:
    """``run()``, with whatever the backend raised reported as one clear line and exit code 1
    (a refusal or a configuration error keeps its own handling by ``main``)."""
    try:
        return run()
    except (ConfigurationError, Refused):
        raise
    except Exception as error:
        print(f"jobadapter: {error_line(error)}", file=sys.stderr)
        return 1


def error_line(error: Exception) -> str:
    """An error as the one line the CLI prints: the message of a jobadapter error, else the
    backend's error with its class."""
    text = str(error) or type(error).__name__
    if isinstance(error, JobAdapterError):
        return text
    return f"the backend failed: {type(error).__name__}: {text}"


def _filter_of(options: argparse.Namespace) -> JobFilter:
    return JobFilter(queue=options.queue, job_class=options.job_class, search=options.search)


def _queues(adapter: Adapter, options: argparse.Namespace) -> int:
    found = adapter.queues()
    if options.json:
        print(json.dumps([info.to_dict() for info in found], indent=2))
        return 0
    rows = [(i.name, i.pending, i.scheduled, i.failed, "paused" if i.paused else "") for i in found]
    table(["QUEUE", "PENDING", "SCHEDULED", "FAILED", ""], rows)
    return 0


def _jobs(adapter: Adapter, options: argparse.Namespace) -> int:
    wanted = _filter_of(options)
    if options.state:
        found = adapter.jobs(
            JobState(options.state), filter=wanted, limit=options.limit, offset=options.offset
        )
    else:
        found = []
        for state in JobState:
            # Every state the backend can list; one it cannot (finished jobs on Celery with no
            # result store nor journal) is named on stderr, so the others still show.
            try:
                found += adapter.jobs(state, filter=wanted, limit=options.limit, offset=options.offset)
            except OperationUnsupported as unsupported:
                print(f"jobadapter: {state.value} jobs not listed: {unsupported}", file=sys.stderr)
    if options.json:
        print(json.dumps([record.to_dict() for record in found], indent=2))
        return 0
    table(["JOB ID", "STATE", "CLASS", "QUEUE", "RUNS", "AT", "ARGUMENTS", "ERROR"], [_row(r) for r in found])
    return 0


def _row(record: JobRecord) -> tuple[object, ...]:
    moment = {
        JobState.SCHEDULED: record.scheduled_at,
        JobState.RUNNING: record.started_at,
        JobState.FINISHED: record.finished_at,
        JobState.FAILED: record.finished_at,
    }.get(record.state) or record.enqueued_at
    shown = "" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")
    keywords = [record.keyword_arguments] if record.keyword_arguments else []
    arguments = json.dumps([*record.arguments, *keywords])
    return (
        record.job_id,
        record.state.value,
        record.job_class,
        record.queue,
        record.executions,
        shown,
        record.payload if record.payload is not None else arguments,
        record.error,
    )


def _job(adapter: Adapter, options: argparse.Namespace) -> int:
    document = look_up(adapter, options.job_id).to_dict()
    if options.json:
        print(json.dumps(document, indent=2))
        return 0
    error = document.pop("error")
    width = max(len(key) for key in document)
    for key, value in document.items():
        shown = json.dumps(value) if isinstance(value, (list, dict)) else value
        print(f"{key.ljust(width)}  {'-' if shown is None else shown}")
    if error is not None:
        print(f"{'error'.ljust(width)}  {error['class']}: {error['message']}")
        if error["traceback"]:
            print()
            print(error["traceback"].rstrip())
    return 0


def _retry(adapter: Adapter, options: argparse.Namespace) -> int:
    if options.job_ids:
        _no_bulk_options(options, "retry")
        count = adapter.retry(options.job_ids)
        print(f"retried {count} job(s)")
        return 0
    if not options.all:
        raise ConfigurationError("retry needs job ids, or --all (with optional filters)")
    wanted = _filter_of(options)
    total = _count(adapter, JobState.FAILED, wanted)
    _confirm_bulk(options, f"Retry {total} failed job(s){_described(wanted)}?", total)
    progress = Progress(total, "retrying")
    done = adapter.retry_all(wanted, progress=progress.advance)
    progress.close()
    print(f"retried {done} of {total} failed job(s){_described(wanted)}")
    return 0


def _discard(adapter: Adapter, options: argparse.Namespace) -> int:
    if options.job_ids:
        _no_bulk_options(options, "discard")
        count = adapter.discard(options.job_ids)
        print(f"discarded {count} job(s)")
        return 0
    if not options.all:
        raise ConfigurationError("discard needs job ids, or --all (with --state and optional filters)")
    state = JobState(options.state)
    wanted = _filter_of(options)
    total = _count(adapter, state, wanted)
    question = f"Discard {total} {state.value} job(s){_described(wanted)}? They will never run."
    _confirm_bulk(options, question, total)
    progress = Progress(total, "discarding")
    done = adapter.discard_all(state, wanted, progress=progress.advance)
    progress.close()
    print(f"discarded {done} of {total} {state.value} job(s){_described(wanted)}")
    return 0


def _no_bulk_options(options: argparse.Namespace, verb: str) -> None:
    if options.all or options.queue or options.job_class or options.search:
        raise ConfigurationError(f"{verb} takes either job ids or --all with filters, not both")


def _count(adapter: Adapter, state: JobState, wanted: JobFilter) -> int:
    """How many jobs in ``state`` match, one page in memory at a time."""
    return sum(1 for _ in adapter.all_jobs(state, wanted))


def _confirm_bulk(options: argparse.Namespace, question: str, total: int) -> None:
    if total == 0 or options.yes:
        return
    if not sys.stdin.isatty():
        raise Refused("not confirmed: pass --yes to run a bulk action without a terminal to ask on")
    if not confirm(question):
        raise Refused("not confirmed; nothing was changed")


def _described(wanted: JobFilter) -> str:
    parts = [
        f"{name}={value}"
        for name, value in (("queue", wanted.queue), ("class", wanted.job_class), ("search", wanted.search))
        if value
    ]
    return f" ({', '.join(parts)})" if parts else ""


def _run_now(adapter: Adapter, options: argparse.Namespace) -> int:
    adapter.run_now(options.job_id)
    print(f"job {options.job_id} is due now")
    return 0


def _pause(adapter: Adapter, options: argparse.Namespace) -> int:
    adapter.pause(options.queue)
    print(f"paused {options.queue}: workers stop taking its jobs within seconds; new jobs wait")
    return 0


def _resume(adapter: Adapter, options: argparse.Namespace) -> int:
    adapter.resume(options.queue)
    print(f"resumed {options.queue}")
    return 0
