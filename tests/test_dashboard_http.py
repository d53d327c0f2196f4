"""The dashboard at the HTTP level: sign-in, CSRF, escaping, headers, redaction, mounting, pages.

On the in-process ``async://`` adapter (real jobs in this process's pool; a
paused queue keeps its jobs pending) with a SQLite journal in the test's
folder, through Starlette's TestClient. The browser tests
(``test_dashboard_browser.py``) drive the same pages in Chromium against
real workers.
"""

from __future__ import annotations

import base64
import hmac
import logging
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount
from starlette.testclient import TestClient
from starlette.types import Receive, Scope, Send

from jobadapter import Job, config, journal
from jobadapter.adapters.base import Adapter
from jobadapter.cli import main
from jobadapter.cli_dashboard import is_loopback, parse_bind
from jobadapter.dashboard import Credentials, create_app
from jobadapter.dashboard.security import PASSWORD_VARIABLE, USER_VARIABLE, CsrfTokens, Redactor
from jobadapter.errors import ConfigurationError
from jobadapter.faults.brokers import shared_amqp
from jobadapter.operations import JobNotFound, JobState

PASSWORD = "correct horse"
HOSTILE = "<script>alert('argument')</script>"
CRAFTED = "</pre><script>alert('traceback')</script><pre>"


class Echo(Job):
    queue_as = "dash-held"

    def perform(self, *values: Any, **named: Any) -> None:
        pass


class Crash(Job):
    queue_as = "dash-crash"

    def perform(self, note: str) -> None:
        raise RuntimeError(CRAFTED + note)


def basic(user: str = "admin", password: str = PASSWORD) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def adapter(tmp_path: Path) -> Iterator[Adapter]:
    journal.configure(f"sqlite:///{tmp_path / 'journal.db'}")
    built = config.configure(url="async://")
    built.pause("dash-held")
    try:
        yield built
    finally:
        built.discard_all(JobState.PENDING)
        built.discard_all(JobState.SCHEDULED)
        journal.close()


@pytest.fixture
def client(adapter: Adapter) -> TestClient:
    app = create_app(adapter, credentials=Credentials("admin", PASSWORD))
    return TestClient(app, headers=basic())


def token_of(page: str) -> str:
    found = re.search(r'name="token" value="([^"]+)"', page)
    assert found, "the page has no form token"
    return found.group(1)


def until(condition: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return value


def failed_job(adapter: Adapter, note: str = "") -> str:
    job = Crash.perform_later(note)
    until(lambda: adapter.find(job.job_id).state is JobState.FAILED, "the job to fail")
    return job.job_id


# -- authentication ------------------------------------------------------------------------------


def test_every_page_asks_for_the_password(adapter: Adapter) -> None:
    anonymous = TestClient(create_app(adapter, credentials=Credentials("admin", PASSWORD)))
    for path in ("/", "/jobs?state=failed", "/static/dashboard.css", "/job/x", "/no-such-page"):
        response = anonymous.get(path)
        assert response.status_code == 401, path
        assert response.headers["WWW-Authenticate"].startswith('Basic realm="jobadapter dashboard"')
    assert anonymous.get("/", headers=basic(password="wrong")).status_code == 401
    assert anonymous.get("/", headers=basic(user="root")).status_code == 401
    assert anonymous.get("/", headers={"Authorization": "Basic !!not-base64"}).status_code == 401
    assert anonymous.get("/", headers={"Authorization": "Bearer " + PASSWORD}).status_code == 401
    page = anonymous.get("/", headers=basic())
    assert page.status_code == 200 and "Queues" in page.text and ">admin<" in page.text


def test_passwords_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def spy(left: bytes, right: bytes) -> bool:
        compared.append((left, right))
        return original(left, right)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    credentials = Credentials("admin", PASSWORD)
    assert credentials.accept(basic(user="nobody", password="guess")["Authorization"]) is None
    # Both the user and the password go through compare_digest, even when the user is wrong.
    assert compared == [(b"nobody", b"admin"), (b"guess", PASSWORD.encode())]
    assert credentials.accept(basic()["Authorization"]) == "admin"
    assert "correct" not in repr(credentials)


def test_without_a_password_the_dashboard_refuses_to_start(
    adapter: Adapter, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(PASSWORD_VARIABLE, raising=False)
    with pytest.raises(ConfigurationError, match=PASSWORD_VARIABLE):
        create_app(adapter)
    assert main(["dashboard", "--url", "async://"]) == 2
    assert PASSWORD_VARIABLE in capsys.readouterr().err
    assert main(["dashboard", "--url", "async://", "--no-auth", "--bind", "0.0.0.0:8800"]) == 2
    assert "--no-auth is refused on 0.0.0.0" in capsys.readouterr().err
    assert main(["dashboard", "--url", "async://", "--bind", "8800"]) == 2
    assert "--bind must be HOST:PORT" in capsys.readouterr().err

    monkeypatch.setenv(PASSWORD_VARIABLE, "from-the-environment")
    monkeypatch.setenv(USER_VARIABLE, "ops")
    assert Credentials.from_environment() == Credentials("ops", "from-the-environment")
    open_app = TestClient(create_app(adapter, authentication=False))
    page = open_app.get("/")
    assert page.status_code == 200 and "no sign-in" in page.text and "Log out" not in page.text


def test_only_loopback_addresses_count_as_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.1")
    assert parse_bind("[::1]:9000") == ("::1", 9000)
    with pytest.raises(ConfigurationError):
        parse_bind("127.0.0.1:99999")


def test_signing_out_refuses_this_browser_until_it_signs_in_again(client: TestClient) -> None:
    token = token_of(client.get("/").text)
    assert client.post("/logout", data={"token": "forged"}).status_code == 403
    response = client.post("/logout", data={"token": token}, follow_redirects=False)
    assert response.status_code == 303 and "HttpOnly" in response.headers["set-cookie"]
    refused = client.get("/")  # the right password, but this browser signed out
    assert refused.status_code == 401 and "You are signed out" in refused.text
    assert "WWW-Authenticate" not in refused.headers and 'href="/login"' in refused.text
    login = client.get("/login", follow_redirects=False)
    assert login.status_code == 401 and login.headers["WWW-Authenticate"].startswith("Basic ")
    assert "Max-Age=0" in login.headers["set-cookie"]
    assert client.get("/login").status_code == 200  # the browser sends the password again: signed in
    assert client.get("/jobs?state=failed").status_code == 200


# -- CSRF and methods ----------------------------------------------------------------------------


def test_a_change_needs_a_post_with_a_valid_token(adapter: Adapter, client: TestClient) -> None:
    for forged in ({}, {"token": "1.abc"}, {"token": CsrfTokens().issue("admin")}):
        response = client.post("/queues/pause", data={"queue": "dash-held", **forged})
        assert response.status_code == 403 and "form token" in response.text
    assert client.get("/queues/pause?queue=dash-crash").status_code == 405
    assert not {queue.name for queue in adapter.queues() if queue.paused} - {"dash-held"}

    token = token_of(client.get("/").text)
    response = client.post(
        "/queues/pause", data={"queue": "dash-crash", "token": token}, follow_redirects=False
    )
    assert response.status_code == 303
    assert "dash-crash" in {queue.name for queue in adapter.queues() if queue.paused}
    shown = client.get(response.headers["location"]).text
    assert "Paused queue dash-crash" in shown
    client.post("/queues/resume", data={"queue": "dash-crash", "token": token})
    assert "dash-crash" not in {queue.name for queue in adapter.queues() if queue.paused}


def test_tokens_are_bound_to_the_user_and_expire() -> None:
    tokens = CsrfTokens(b"k" * 32)
    token = tokens.issue("admin", now=1000.0)
    assert tokens.valid(token, "admin", now=1001.0)
    assert not tokens.valid(token, "mallory", now=1001.0)
    assert not tokens.valid(token, "admin", now=1000.0 + CsrfTokens.LIFETIME + 1)
    assert not CsrfTokens(b"x" * 32).valid(token, "admin", now=1001.0)
    assert not tokens.valid("garbage", "admin")


# -- escaping, headers, redaction ----------------------------------------------------------------


def test_a_hostile_argument_and_a_crafted_traceback_render_as_text(
    adapter: Adapter, client: TestClient
) -> None:
    held = Echo.perform_later(HOSTILE, note=HOSTILE)
    crashed = failed_job(adapter, HOSTILE)
    pages = [
        client.get("/jobs?state=pending").text,
        client.get(f"/job/{held.job_id}").text,
        client.get("/jobs?state=failed").text,
        client.get(f"/job/{crashed}").text,
        client.get("/jobs", params={"state": "pending", "search": HOSTILE}).text,
    ]
    for page in pages:
        assert "<script>alert" not in page and "</pre><script>" not in page
        assert "&lt;script&gt;alert(" in page
    detail = pages[3]
    assert 'class="traceback"' in detail and "RuntimeError" in detail and "Traceback" in detail


def test_every_response_carries_the_security_headers(client: TestClient) -> None:
    anonymous = TestClient(client.app)
    for response in (
        client.get("/"),
        client.get("/static/dashboard.js"),
        client.get("/job/no-such-job"),
        client.post("/act", data={}),
        anonymous.get("/"),
    ):
        policy = response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_pages_load_nothing_from_elsewhere(client: TestClient) -> None:
    page = client.get("/").text
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sources and all(source.startswith("/") for source in sources), sources
    assert 'style="' not in page, "inline styles would break under the CSP"
    assert "<script>" not in page


def test_broker_passwords_never_appear_in_pages_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    secret = "hunter2-broker"
    adapter = config.build_adapter(f"rq+redis://:{secret}@127.0.0.1:9/0")
    try:
        app = create_app(adapter, credentials=Credentials("admin", PASSWORD))
        with caplog.at_level(logging.DEBUG):
            response = TestClient(app, headers=basic()).get("/")
        assert response.status_code == 502 and "The backend failed" in response.text
        assert "rq+redis://:***@127.0.0.1:9/0" in response.text
        assert secret not in response.text and secret not in caplog.text
    finally:
        adapter.close()
    redact = Redactor(["celery+amqp://guest:p%40ss@host//"], ["dash-pass"])
    assert redact("login p@ss and p%40ss and dash-pass refused") == "login *** and *** and *** refused"


# -- mounting ------------------------------------------------------------------------------------


def test_mounted_under_a_prefix_every_link_keeps_it(adapter: Adapter) -> None:
    dashboard = create_app(adapter, credentials=Credentials("admin", PASSWORD))
    host = TestClient(Starlette(routes=[Mount("/ops/jobs", app=dashboard)]), headers=basic())
    page = host.get("/ops/jobs/").text
    links = re.findall(r'(?:href|action|src)="(/[^"]*)"', page)
    assert links and all(link.startswith("/ops/jobs/") for link in links), links
    assert host.get("/ops/jobs/jobs?state=pending").status_code == 200
    assert host.get("/ops/jobs/static/dashboard.css").status_code == 200
    response = host.post(
        "/ops/jobs/queues/pause", data={"queue": "q1", "token": token_of(page)}, follow_redirects=False
    )
    assert response.headers["location"].startswith("/ops/jobs/?notice=paused")


@pytest.mark.parametrize("forwarded", ["/", "/ops/jobs/"], ids=["proxy-strips-prefix", "proxy-keeps-prefix"])
def test_behind_a_proxy_the_prefix_option_places_it(adapter: Adapter, forwarded: str) -> None:
    app = create_app(adapter, prefix="/ops/jobs/", credentials=Credentials("admin", PASSWORD))
    proxied = TestClient(app, headers=basic())
    page = proxied.get(forwarded)
    assert page.status_code == 200
    links = re.findall(r'(?:href|action|src)="(/[^"]*)"', page.text)
    assert all(link.startswith("/ops/jobs/") for link in links), links
    assert proxied.get(forwarded + "jobs?state=failed").status_code == 200
    lookup = proxied.get(forwarded + "lookup?id=abc", follow_redirects=False)
    assert lookup.headers["location"] == "/ops/jobs/job/abc"


# -- pages and actions ---------------------------------------------------------------------------


def test_jobs_are_filtered_and_paged(adapter: Adapter, client: TestClient) -> None:
    for number in range(120):
        Echo.perform_later(f"customer-{number:03d}", "alice@example.com" if number % 2 else "bob")
    first = client.get("/jobs?state=pending").text
    assert first.count('class="job-class"') == 50 and 'rel="next"' in first
    assert "customer-000" in first and "customer-050" not in first
    third = client.get("/jobs?state=pending&page=3").text
    assert third.count('class="job-class"') == 20 and 'rel="next"' not in third and 'rel="prev"' in third
    alice = client.get("/jobs", params={"state": "pending", "search": "ALICE@", "page": "2"}).text
    assert alice.count('class="job-class"') == 10 and "customer-119" in alice and "customer-099" not in alice
    by_queue = client.get("/jobs", params={"state": "pending", "queue": "elsewhere"}).text
    assert "No pending jobs match these filters" in by_queue
    by_class = client.get("/jobs", params={"state": "pending", "job_class": Echo.job_name}).text
    assert by_class.count('class="job-class"') == 50


def test_look_up_by_id_from_any_page(adapter: Adapter, client: TestClient) -> None:
    held = Echo.perform_later("find me")
    for path in ("/", "/jobs?state=failed", f"/job/{held.job_id}"):
        assert 'action="/lookup"' in client.get(path).text
    found = client.get("/lookup", params={"id": f"  {held.job_id} "})
    assert found.status_code == 200 and held.job_id in found.text and "find me" in found.text
    missing = client.get("/lookup", params={"id": "no-such-job"})
    assert missing.status_code == 404 and "no job with id &#39;no-such-job&#39;" in missing.text


def test_retry_discard_and_run_now_from_the_pages(adapter: Adapter, client: TestClient) -> None:
    crashed = failed_job(adapter, "once")
    first_start = adapter.find(crashed).started_at
    page = client.get(f"/job/{crashed}").text
    assert "Retry" in page and "Execution 1 started" in page
    retried = client.post("/act", data={"token": token_of(page), "job_id": crashed, "action": "retry"})
    assert retried.status_code == 200 and "Retried: the job is pending again" in retried.text
    until(lambda: adapter.find(crashed).started_at != first_start, "the retried job to run again")
    active = journal.active()
    assert active is not None
    until(lambda: active.flush() or len(active.executions(crashed)) == 2, "both runs in the journal")
    history = client.get(f"/job/{crashed}").text
    assert history.count('class="traceback"') == 2, "each run's error, with its traceback"
    assert "execution 2," in history and "execution 1," in history
    assert history.index("Execution 1 started") < history.index("Execution 2 started")
    assert "<dt>Executions</dt><dd>2</dd>" in history, "runs counted from the history"

    later = Echo.set(queue="dash-later", wait=3600).perform_later("later")
    token = token_of(client.get("/jobs?state=scheduled").text)
    moved = client.post("/act", data={"token": token, "job_id": later.job_id, "action": "run-now"})
    assert "The job is due now" in moved.text
    until(lambda: adapter.find(later.job_id).state is JobState.FINISHED, "the job run now")

    held = Echo.perform_later("discard me")
    gone = client.post(
        "/act", data={"token": token, "job_id": held.job_id, "action": "discard", "state": "pending"}
    )
    assert "Discarded job" in gone.text and "Pending jobs" in gone.text
    with pytest.raises(JobNotFound):
        adapter.find(held.job_id)
    again = client.post("/act", data={"token": token, "job_id": later.job_id, "action": "run-now"})
    assert again.status_code == 409 and "this needs it scheduled" in again.text


def test_bulk_actions_confirm_first_and_report_the_count(adapter: Adapter, client: TestClient) -> None:
    for number in range(7):
        Echo.perform_later("bulk", number)
    Echo.perform_later("keep")
    listing = client.get("/jobs", params={"state": "pending", "search": "bulk"}).text
    assert "Discard all matching…" in listing
    confirmation = client.get("/bulk", params={"action": "discard", "state": "pending", "search": "bulk"})
    assert "Discard 7 pending jobs?" in confirmation.text
    assert len(adapter.jobs(JobState.PENDING)) == 8, "asking changed nothing"
    form = {"token": token_of(confirmation.text), "action": "discard", "state": "pending", "search": "bulk"}
    done = client.post("/bulk", data=form)
    assert "Discarded 7 job(s)." in done.text
    assert [record.arguments for record in adapter.jobs(JobState.PENDING)] == [["keep"]]

    for _ in range(3):
        failed_job(adapter)
    confirmation = client.get("/bulk", params={"action": "retry", "state": "failed"})
    assert "Retry 3 failed jobs?" in confirmation.text
    done = client.post("/bulk", data={"token": token_of(confirmation.text), "action": "retry"})
    assert "Retried 3 job(s)." in done.text


def test_the_queues_page_counts_and_charts_the_last_hour(adapter: Adapter, client: TestClient) -> None:
    Echo.perform_later("waiting")
    crashed = failed_job(adapter)
    active = journal.active()
    assert active is not None
    active.flush()
    until(lambda: active.find(crashed) is not None and active.find(crashed).state is JobState.FAILED, "row")
    page = client.get("/").text
    row = page[page.index(">dash-crash<") :]
    row = row[: row.index("</tr>")]
    assert '<svg class="chart"' in row and "1 ended" in row and "1 failed" in row
    held = page[page.index(">dash-held<") :]
    assert re.search(r'state=pending&amp;queue=dash-held">1<', held)
    assert "Resume dash-held" in page and ">paused<" in held[: held.index("</tr>")]


def test_dispatched_by_path_from_another_asgi_application(adapter: Adapter) -> None:
    """The pattern docs/dashboard.md gives for Django's asgi.py, with a plain ASGI app as the rest."""
    prefix = "/ops/jobs"
    dashboard = create_app(adapter, prefix=prefix, credentials=Credentials("admin", PASSWORD))
    rest = PlainTextResponse("the rest of the site")

    async def application(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if path == prefix or path.startswith(prefix + "/"):
            await dashboard(scope, receive, send)
        else:
            await rest(scope, receive, send)

    site = TestClient(application, headers=basic())
    assert site.get("/blog/").text == "the rest of the site"
    for path in ("/ops/jobs", "/ops/jobs/"):
        page = site.get(path)
        assert page.status_code == 200 and "<h1>Queues</h1>" in page.text
        links = re.findall(r'(?:href|action|src)="(/[^"]*)"', page.text)
        assert links and all(link.startswith("/ops/jobs/") for link in links), links
    assert site.get("/ops/jobs/static/dashboard.css").status_code == 200


def test_the_dashboard_needs_no_journal_package(adapter: Adapter) -> None:
    """jobadapter[dashboard] does not pull SQLAlchemy in: without it, the pages still serve."""
    program = (
        "import sys; sys.modules['sqlalchemy'] = None\n"
        "from starlette.testclient import TestClient\n"
        "from jobadapter import config\n"
        "from jobadapter.dashboard import create_app\n"
        "app = create_app(config.build_adapter('async://'), authentication=False)\n"
        "print(TestClient(app).get('/jobs?state=pending').status_code)\n"
    )
    ran = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert ran.stdout.strip() == "200", ran.stderr


def test_without_a_journal_the_pages_say_what_is_missing(adapter: Adapter, client: TestClient) -> None:
    journal.close()
    Echo.perform_later("still listed")
    page = client.get("/").text
    assert "(needs a journal)" in page and "no journal configured" in page
    assert "still listed" in client.get("/jobs?state=pending").text


def test_a_list_the_backend_cannot_give_says_why_and_what_to_set() -> None:
    journal.close()
    adapter = config.build_adapter(shared_amqp("dramatiq"))  # lists only from a journal
    try:
        client = TestClient(create_app(adapter, credentials=Credentials("admin", PASSWORD)), headers=basic())
        page = client.get("/jobs?state=pending")
        assert page.status_code == 501 and "Not supported by this backend" in page.text
        assert "JOBADAPTER_JOURNAL" in page.text
    finally:
        adapter.close()
