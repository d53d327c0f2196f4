"""``jobadapter migrate``: move pending, scheduled and failed jobs from one backend to another.

``--dry-run`` counts, per queue and state, what would move and what would stay
(with the reason) and changes nothing. A real run checks that no worker
consumes the source queues (``--force`` goes on anyway), asks before moving
unless ``--yes``, shows a progress bar with the rate on a terminal, and ends
with a summary table. Exit status: 0 when every job moved (messages that are
not jobadapter jobs are left where they are and reported), 1 when some job
could not be moved or the move was refused, 2 when the command is wrong.
The core is `jobadapter.migrate`.
"""

from __future__ import annotations

import argparse
import sys

from jobadapter import config
from jobadapter.adapters.base import Adapter
from jobadapter.cli_operations import Refused, in_one_line
from jobadapter.console import Progress, confirm, table
from jobadapter.errors import ConfigurationError
from jobadapter.migrate import (
    DEFAULT_BATCH,
    MOVABLE_STATES,
    WALK_ORDER,
    MigrationRefused,
    Plan,
    Report,
    TargetRefused,
    check_adapters,
    check_plan,
    drains,
    move,
    move_name,
    same_backend,
    survey,
)
from jobadapter.migrate.ledger import DEFAULT_LEDGER, open_ledger
from jobadapter.operations import JobState, OperationUnsupported


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``migrate`` to the ``jobadapter`` command's subcommands."""
    summary = "move pending, scheduled and failed jobs from one backend to another"
    parser = commands.add_parser("migrate", help=summary, description=summary)
    parser.add_argument("--from", dest="source", required=True, metavar="URL", help="the old backend")
    parser.add_argument("--to", dest="target", required=True, metavar="URL", help="the new backend")
    parser.add_argument("--queues", help="comma-separated queues (default: every queue of the source)")
    parser.add_argument(
        "--states",
        default=",".join(state.value for state in MOVABLE_STATES),
        help="comma-separated, among pending, scheduled, failed (default: all three)",
    )
    parser.add_argument(
        "--rename-queue",
        action="append",
        default=[],
        metavar="OLD:NEW",
        help="jobs of queue OLD land on queue NEW (repeatable)",
    )
    parser.add_argument("--dry-run", action="store_true", help="count what would move; change nothing")
    parser.add_argument("--limit", type=int, help="move at most this many jobs")
    parser.add_argument(
        "--batch", type=int, default=DEFAULT_BATCH, help=f"jobs per bulk publish (default {DEFAULT_BATCH})"
    )
    parser.add_argument(
        "--ledger",
        metavar="URL",
        help="SQL database of jobs published and not yet deleted (default: $JOBADAPTER_JOURNAL, else "
        f"the target's Redis where it has one, else {DEFAULT_LEDGER})",
    )
    parser.add_argument("--force", action="store_true", help="move even while source workers run")
    parser.add_argument("--yes", action="store_true", help="do not ask before moving")
    parser.set_defaults(command=_migrate)


def _plan(options: argparse.Namespace) -> Plan:
    states = []
    for name in _listed(options.states):
        try:
            states.append(JobState(name))
        except ValueError:
            raise ConfigurationError(f"--states takes pending, scheduled and failed, not {name!r}") from None
    rename = {}
    for pair in options.rename_queue:
        old, separator, new = pair.partition(":")
        if not separator or not old or not new:
            raise ConfigurationError(f"--rename-queue takes OLD:NEW, not {pair!r}")
        rename[old] = new
    queues = _listed(options.queues) if options.queues else None
    try:
        return Plan(
            queues=tuple(queues) if queues else None,
            states=tuple(states),
            rename=rename,
            limit=options.limit,
            batch=options.batch,
        )
    except ValueError as wrong:
        raise ConfigurationError(str(wrong)) from None


def _listed(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _migrate(options: argparse.Namespace) -> int:
    plan = _plan(options)
    source = config.build_adapter(options.source)
    try:
        target = config.build_adapter(options.target)
    except BaseException:
        source.close()
        raise
    try:
        return in_one_line(lambda: _run(source, target, plan, options))
    finally:
        source.close()
        target.close()


def _run(source: Adapter, target: Adapter, plan: Plan, options: argparse.Namespace) -> int:
    check_adapters(source, target)
    check_plan(source, target, plan)
    name = move_name(source, target)
    if plan.queues is not None:
        queues = list(plan.queues)
    else:  # within one backend only the renamed queues move
        queues = list(plan.rename) if same_backend(source, target) else _source_queues(source)
    _check_workers(source, queues, options)
    if options.dry_run:
        print(f"dry run, nothing changed: {name}")
        _summary(survey(source, plan))
        return 0
    total = _expected(source, plan, queues)
    if total != 0 and not options.yes:
        if not sys.stdin.isatty():
            raise Refused("not confirmed: pass --yes to move jobs without a terminal to ask on")
        what = f"up to {total} job(s)" if total is not None else f"the jobs of {', '.join(queues)}"
        if not confirm(f"Move {what} from {source.url.redacted} to {target.url.redacted}?"):
            raise Refused("not confirmed; nothing was moved")
    ledger = open_ledger(options.ledger, name, target)
    progress = Progress(total or 0, "moving")
    try:
        report = move(source, target, plan, ledger, progress.advance)
    except TargetRefused as refused:
        progress.close()
        if refused.report is not None:
            _summary(refused.report)
        raise
    finally:
        ledger.close()
    progress.close()
    print(name)
    _summary(report)
    return 1 if report.failed else 0


def _expected(source: Adapter, plan: Plan, queues: list[str]) -> int | None:
    """How many jobs the move will meet at most, from the source's queue counts (cheap, unlike
    walking them), for the question and the progress bar; None where the source cannot count
    without consuming (RabbitMQ: its drain counts as it goes)."""
    if drains(source):
        return None
    try:
        infos = source.queues()
    except OperationUnsupported:
        return None
    return sum(int(getattr(i, state.value)) for i in infos if i.name in queues for state in plan.states)


def _source_queues(source: Adapter) -> list[str]:
    try:
        return [info.name for info in source.queues()]
    except OperationUnsupported as unsupported:
        raise MigrationRefused(f"name the queues to move with --queues: {unsupported}") from None


def _check_workers(source: Adapter, queues: list[str], options: argparse.Namespace) -> None:
    """Refuse while workers consume the source queues (a dry run only warns)."""
    try:
        running = source.running_workers(queues)
    except OperationUnsupported as unknown:
        print(f"jobadapter: warning: cannot tell whether source workers run: {unknown}", file=sys.stderr)
        return
    if not running:
        return
    shown = ", ".join(running[:5]) + (f" and {len(running) - 5} more" if len(running) > 5 else "")
    message = (
        f"workers consume the source queues: {shown}. Stop them first: Celery and Dramatiq "
        "workers hold scheduled jobs in memory, where no one else can move them"
    )
    if options.dry_run or options.force:
        print(f"jobadapter: warning: {message}", file=sys.stderr)
        return
    raise Refused(f"{message} (or pass --force)")


def _summary(report: Report) -> None:
    """The table per queue and state, the reasons for what stayed or failed, and the totals."""
    verb = "WOULD MOVE" if report.dry_run else "MOVED"
    rows: list[tuple[str, str, int, int, int]] = []
    reasons: list[tuple[str, str, str, int, str]] = []
    order = {state: index for index, state in enumerate(WALK_ORDER)}
    for (queue, state), tally in sorted(
        report.tallies.items(), key=lambda item: (item[0][0], order[item[0][1]])
    ):
        skipped, failed = sum(tally.skipped.values()), sum(tally.failed.values())
        if not (tally.moved or skipped or failed):
            continue
        rows.append((queue, state.value, tally.moved, skipped, failed))
        reasons += [(queue, state.value, "skipped", count, why) for why, count in tally.skipped.items()]
        reasons += [(queue, state.value, "failed", count, why) for why, count in tally.failed.items()]
    table(["QUEUE", "STATE", verb, "SKIPPED", "FAILED"], rows)
    if reasons:
        print()
        for queue, shown, kind, count, why in reasons:
            print(f"{kind} {count} {shown} in {queue}: {why}")
    print()
    if report.dry_run:
        print(f"would move {report.moved} job(s); {report.skipped} would stay on the source")
        return
    print(
        f"moved {report.moved} job(s) in {report.seconds:.1f} s ({report.rate:,.0f} jobs/s); "
        f"skipped {report.skipped}, failed {report.failed}"
    )
