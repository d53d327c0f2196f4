"""The dashboard's ASGI app: queues, jobs by state, one job, and the actions on them.

Everything goes through the operations contract (``adapter.queues``, ``jobs``,
``find`` through `jobadapter.operations.look_up`, ``retry``, ``discard``,
``run_now``, ``pause``, …) and the journal, so the same pages work on every
backend. Pages are plain HTML forms and links: viewing and every action work
without JavaScript (a small script of the app's own only adds live refresh).
A GET never changes anything; every change is a POST carrying a CSRF token,
answered with a redirect (so a reload does not repeat it) to a page that says
what was done.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, quote, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from jobadapter.adapters.base import Adapter, Capability
from jobadapter.dashboard import activity, pages
from jobadapter.dashboard.middleware import USER_KEY, Guard, PathPrefix, signed_out_cookie
from jobadapter.dashboard.security import Credentials, CsrfTokens, Redactor
from jobadapter.errors import JobAdapterError
from jobadapter.operations import (
    JobFilter,
    JobNotFound,
    JobRecord,
    JobState,
    NotInState,
    OperationUnsupported,
    QueueInfo,
    look_up,
)

if TYPE_CHECKING:
    from jobadapter.journal.store import Execution, Journal

HERE = Path(__file__).parent
PAGE_SIZE = 50
COUNT_LIMIT = 10_000
"""A bulk action's confirmation counts the matching jobs up to this many (then says "more than")."""
DISCARDABLE = (JobState.PENDING, JobState.SCHEDULED, JobState.FAILED)
T = TypeVar("T")


@dataclass
class Dashboard:
    """What every page needs: the adapter, the journal, and the security helpers."""

    adapter: Adapter
    journal_source: Callable[[], Journal | None]
    tokens: CsrfTokens
    redact: Redactor
    templates: Environment
    authenticated: bool

    @property
    def journal(self) -> Journal | None:
        return self.journal_source()

    def can(self, capability: Capability) -> bool:
        return capability in self.adapter.capabilities


def create_app(
    adapter: Adapter,
    *,
    journal: Journal | None = None,
    prefix: str = "",
    credentials: Credentials | None = None,
    authentication: bool = True,
    secret: bytes | None = None,
) -> Starlette:
    """The dashboard over ``adapter``, as an ASGI app to serve or mount.

    ``journal``: where the last hour's throughput and latency come from (default: this
    process's journal, `jobadapter.journal.active`, which the adapter and job look-ups
    read too). ``prefix``: the path it is served
    at when a reverse proxy puts it there (a ``Mount`` needs none). ``credentials``:
    default `Credentials.from_environment`, which refuses to go on without a password;
    ``authentication=False`` turns HTTP Basic off, for an app that guards the mount
    itself. ``secret``: the CSRF tokens' key (default ``JOBADAPTER_DASHBOARD_SECRET``,
    or a random one per process).
    """
    from jobadapter import journal as journals

    if authentication and credentials is None:
        credentials = Credentials.from_environment()
    known_journal = journal or journals.active()
    urls = [adapter.url.text]
    if known_journal is not None:
        urls.append(known_journal.engine.url.render_as_string(hide_password=False))
    extra = [credentials.password] if credentials is not None else []
    dashboard = Dashboard(
        adapter=adapter,
        journal_source=(lambda: journal) if journal is not None else journals.active,
        tokens=CsrfTokens(secret),
        redact=Redactor(urls, extra),
        templates=_templates(),
        authenticated=authentication,
    )
    routes = [
        Route("/", _queues_page, methods=["GET"]),
        Route("/queues/{action:str}", _queue_action, methods=["POST"]),
        Route("/jobs", _jobs_page, methods=["GET"]),
        Route("/bulk", _bulk_confirmation, methods=["GET"]),
        Route("/bulk", _bulk_action, methods=["POST"]),
        Route("/lookup", _lookup, methods=["GET"]),
        Route("/job/{job_id:path}", _job_page, methods=["GET"]),
        Route("/act", _job_action, methods=["POST"]),
        Route("/logout", _logout, methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(PathPrefix, prefix=prefix),
            Middleware(Guard, credentials=credentials if authentication else None),
        ],
        exception_handlers={404: _not_found, 405: _not_allowed},
    )
    app.state.dashboard = dashboard
    return app


def _templates() -> Environment:
    environment = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(
        when=pages.when,
        ago=pages.ago,
        seconds=pages.seconds,
        as_json=pages.as_json,
        short=pages.short,
        class_name=pages.class_name,
        module_name=pages.module_name,
    )
    return environment


# -- rendering ---------------------------------------------------------------------------------


def _dashboard(request: Request) -> Dashboard:
    found: Dashboard = request.app.state.dashboard
    return found


def _user(request: Request) -> str:
    return str(request.scope.get(USER_KEY, ""))


def _link(request: Request, path: str, query: Mapping[str, Any] | None = None) -> str:
    """``path`` inside the dashboard, wherever it is mounted."""
    kept = {key: value for key, value in (query or {}).items() if value not in (None, "")}
    root: str = request.scope.get("root_path", "")
    return root + path + ("?" + urlencode(kept) if kept else "")


def _render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    dashboard = _dashboard(request)
    user = _user(request)
    page = dashboard.templates.get_template(template).render(
        request=request,
        link=lambda path, **query: _link(request, path, query),
        job_link=lambda job_id: _link(request, "/job/" + quote(job_id, safe="")),
        token=dashboard.tokens.issue(user),
        user=user,
        authenticated=dashboard.authenticated,
        backend=dashboard.adapter.url.redacted,
        backend_name=dashboard.adapter.name,
        journal=dashboard.journal,
        can={capability.value: dashboard.can(capability) for capability in Capability},
        states=list(JobState),
        notice=pages.notice(request.query_params),
        now=datetime.now(timezone.utc),
        **context,
    )
    return HTMLResponse(page, status_code=status)


def _problem(request: Request, status: int, title: str, detail: str) -> HTMLResponse:
    return _render(request, "problem.html", status, title=title, detail=_dashboard(request).redact(detail))


async def _call(request: Request, action: Callable[[], T]) -> T | HTMLResponse:
    """Run a blocking backend call off the event loop; a failure becomes a page saying why."""
    try:
        return await run_in_threadpool(action)
    except JobNotFound as error:
        return _problem(request, 404, "No such job", str(error))
    except NotInState as error:
        return _problem(request, 409, "Not possible in this state", str(error))
    except OperationUnsupported as error:
        return _problem(request, 501, "Not supported by this backend", str(error))
    except (JobAdapterError, ValueError) as error:
        return _problem(request, 400, "Refused", str(error))
    except Exception as error:  # the backend's own error: say which, keep serving
        return _problem(request, 502, "The backend failed", f"{type(error).__name__}: {error}")


async def _not_found(request: Request, error: Exception) -> Response:
    return _problem(request, 404, "Not found", f"nothing at {request.url.path}")


async def _not_allowed(request: Request, error: Exception) -> Response:
    return _problem(request, 405, "Not allowed", f"{request.method} is not accepted at {request.url.path}")


async def _form(request: Request) -> dict[str, str] | HTMLResponse:
    """The POSTed form, once its CSRF token is checked (a 403 page otherwise)."""
    body = (await request.body()).decode("utf-8", errors="replace")
    form = dict(parse_qsl(body, keep_blank_values=True))
    if not _dashboard(request).tokens.valid(form.get("token"), _user(request)):
        return _problem(
            request,
            403,
            "Refused: missing or stale form token",
            "This action must come from a dashboard page. Reload the page and try again.",
        )
    return form


def _filter_from(values: Mapping[str, str]) -> JobFilter:
    return JobFilter(
        queue=values.get("queue") or None,
        job_class=values.get("job_class") or None,
        search=values.get("search") or None,
    )


def _state_from(value: str | None, default: JobState = JobState.FAILED) -> JobState:
    try:
        return JobState(value) if value else default
    except ValueError:
        return default


# -- queues --------------------------------------------------------------------------------------


async def _queues_page(request: Request) -> Response:
    dashboard = _dashboard(request)

    def gather() -> tuple[list[QueueInfo], dict[str, activity.QueueActivity] | None]:
        queues = dashboard.adapter.queues()
        journal = dashboard.journal
        return queues, (activity.last_hour(journal) if journal is not None else None)

    found = await _call(request, gather)
    if isinstance(found, Response):
        return found
    queues, last_hour = found
    names = {queue.name for queue in queues}
    extra = sorted(set(last_hour or {}) - names)
    rows = [*queues, *(QueueInfo(name, 0, 0, 0, False) for name in extra)]
    return _render(
        request,
        "queues.html",
        queues=rows,
        activity=last_hour,
        totals={
            "pending": sum(queue.pending for queue in rows),
            "scheduled": sum(queue.scheduled for queue in rows),
            "failed": sum(queue.failed for queue in rows),
            "paused": sum(queue.paused for queue in rows),
        },
        chart=pages.bar_chart,
    )


async def _queue_action(request: Request) -> Response:
    action = request.path_params["action"]
    form = await _form(request)
    if isinstance(form, Response):
        return form
    queue = form.get("queue", "")
    adapter = _dashboard(request).adapter
    commands = {"pause": adapter.pause, "resume": adapter.resume}
    if action not in commands or not queue:
        return _problem(request, 400, "Refused", "expected /queues/pause or /queues/resume with a queue")
    done = await _call(request, lambda: commands[action](queue))
    if isinstance(done, Response):
        return done
    return RedirectResponse(_link(request, "/", {"notice": f"{action}d", "queue": queue}), 303)


# -- jobs ----------------------------------------------------------------------------------------


async def _jobs_page(request: Request) -> Response:
    values = request.query_params
    state = _state_from(values.get("state"))
    chosen = _filter_from(values)
    page = max(1, int(values["page"])) if values.get("page", "").isdigit() else 1
    adapter = _dashboard(request).adapter
    found = await _call(
        request,
        lambda: adapter.jobs(state, filter=chosen, limit=PAGE_SIZE + 1, offset=(page - 1) * PAGE_SIZE),
    )
    if isinstance(found, Response):
        return found
    filters = {"queue": chosen.queue, "job_class": chosen.job_class, "search": chosen.search}
    return _render(
        request,
        "jobs.html",
        state=state,
        jobs=found[:PAGE_SIZE],
        page=page,
        more=len(found) > PAGE_SIZE,
        filters=filters,
        filtered=any(filters.values()),
        discardable=state in DISCARDABLE,
        arguments=pages.arguments,
    )


async def _lookup(request: Request) -> Response:
    job_id = request.query_params.get("id", "").strip()
    if not job_id:
        return RedirectResponse(_link(request, "/"), 303)
    return RedirectResponse(_link(request, "/job/" + quote(job_id, safe="")), 303)


async def _job_page(request: Request) -> Response:
    dashboard = _dashboard(request)
    job_id = request.path_params["job_id"]

    def gather() -> tuple[JobRecord, list[Execution]]:
        journal = dashboard.journal
        return look_up(dashboard.adapter, job_id), [] if journal is None else journal.executions(job_id)

    found = await _call(request, gather)
    if isinstance(found, Response):
        return found
    record, executions = found
    return _render(
        request,
        "job.html",
        job=record,
        timeline=pages.timeline(record, executions),
        errors=[run for run in reversed(executions) if run.error is not None],
        runs=len(executions) + (record.state is JobState.RUNNING),
        envelope=pages.envelope(record),
        arguments=pages.arguments,
    )


async def _job_action(request: Request) -> Response:
    form = await _form(request)
    if isinstance(form, Response):
        return form
    adapter = _dashboard(request).adapter
    job_id = form.get("job_id", "")
    action = form.get("action", "")
    commands: dict[str, Callable[[], object]] = {
        "retry": lambda: adapter.retry([job_id]),
        "discard": lambda: adapter.discard([job_id]),
        "run-now": lambda: adapter.run_now(job_id),
    }
    if action not in commands or not job_id:
        return _problem(request, 400, "Refused", "expected an action (retry, discard, run-now) and a job_id")
    done = await _call(request, commands[action])
    if isinstance(done, Response):
        return done
    if action == "discard":
        back = _link(request, "/jobs", {"state": form.get("state"), "notice": "discarded", "job": job_id})
    else:
        back = _link(request, "/job/" + quote(job_id, safe=""), {"notice": action})
    return RedirectResponse(back, 303)


# -- bulk actions --------------------------------------------------------------------------------


async def _bulk_confirmation(request: Request) -> Response:
    """GET: how many jobs the bulk action would touch, and a form to confirm it."""
    values = request.query_params
    action = values.get("action", "")
    state = JobState.FAILED if action == "retry" else _state_from(values.get("state"))
    chosen = _filter_from(values)
    if action not in ("retry", "discard") or (action == "discard" and state not in DISCARDABLE):
        return _problem(request, 400, "Refused", "bulk actions are retry (failed jobs) and discard")
    adapter = _dashboard(request).adapter
    count = await _call(request, lambda: _count(adapter, state, chosen))
    if isinstance(count, Response):
        return count
    return _render(
        request,
        "confirm.html",
        action=action,
        state=state,
        filters={"queue": chosen.queue, "job_class": chosen.job_class, "search": chosen.search},
        count=count,
        more=count >= COUNT_LIMIT,
    )


def _count(adapter: Adapter, state: JobState, chosen: JobFilter) -> int:
    counted = 0
    while counted < COUNT_LIMIT:
        page = adapter.jobs(state, filter=chosen, limit=500, offset=counted)
        counted += len(page)
        if len(page) < 500:
            break
    return min(counted, COUNT_LIMIT)


async def _bulk_action(request: Request) -> Response:
    form = await _form(request)
    if isinstance(form, Response):
        return form
    adapter = _dashboard(request).adapter
    action = form.get("action", "")
    state = _state_from(form.get("state"))
    chosen = _filter_from(form)
    if action == "retry":
        done = await _call(request, lambda: adapter.retry_all(chosen))
    elif action == "discard" and state in DISCARDABLE:
        done = await _call(request, lambda: adapter.discard_all(state, chosen))
    else:
        return _problem(request, 400, "Refused", "bulk actions are retry (failed jobs) and discard")
    if isinstance(done, Response):
        return done
    query = {
        "state": state.value,
        "queue": chosen.queue,
        "job_class": chosen.job_class,
        "search": chosen.search,
        "notice": f"{action}-all",
        "count": done,
    }
    return RedirectResponse(_link(request, "/jobs", query), 303)


# -- signing out ---------------------------------------------------------------------------------


async def _logout(request: Request) -> Response:
    """Mark this browser signed out (see `jobadapter.dashboard.middleware`): every page then
    refuses it until it signs in again at ``/login``."""
    form = await _form(request)
    if isinstance(form, Response):
        return form
    root = request.scope.get("root_path", "") or "/"
    response = RedirectResponse(_link(request, "/"), 303)
    response.headers["Set-Cookie"] = signed_out_cookie(root)
    return response
