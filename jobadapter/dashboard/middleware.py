"""The two ASGI layers around the dashboard's routes: where it is mounted, and who may use it.

`PathPrefix` lets the dashboard live under a path such as ``/ops/jobs``
whatever sits in front of it: a Starlette or FastAPI ``Mount`` (which sets
``root_path``), a reverse proxy that strips the prefix, or one that passes
it through. After it, ``root_path`` always names where the dashboard is, so
every link the pages build starts with it.

`Guard` answers every request with the security headers and refuses any
that lacks the dashboard's credentials. HTTP Basic has no sign-out: a
browser sends the password it cached until a challenge makes it forget.
So signing out (``POST /logout``) sets a cookie that makes the dashboard
refuse this browser, whatever it sends, until it signs in again at
``/login``, which answers with a challenge: the browser drops the cached
password and asks for it.
"""

from __future__ import annotations

import html

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobadapter.dashboard.security import REALM, SECURITY_HEADERS, Credentials

USER_KEY = "jobadapter.dashboard.user"
"""Where `Guard` leaves the authenticated user name in the request scope ("" without auth)."""
SIGNED_OUT_COOKIE = "jobadapter_dashboard_signed_out"
LOGIN_PATH = "/login"


class PathPrefix:
    """Serve the app at ``prefix`` below whatever ``root_path`` the server or a mount gives."""

    def __init__(self, app: ASGIApp, prefix: str) -> None:
        self.app = app
        self.prefix = normalized_prefix(prefix)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.prefix and scope["type"] in ("http", "websocket"):
            scope = dict(scope)
            root = scope.get("root_path", "")
            path: str = scope["path"]
            route = path[len(root) :] if root and path.startswith(root) else path
            if route == self.prefix or route.startswith(self.prefix + "/"):
                route = route[len(self.prefix) :]  # the proxy passed the prefix through
            scope["root_path"] = root + self.prefix
            scope["path"] = root + self.prefix + route
            scope["raw_path"] = scope["path"].encode()
        await self.app(scope, receive, send)


def normalized_prefix(prefix: str) -> str:
    """``"ops/jobs/"`` → ``"/ops/jobs"``; ``""`` and ``"/"`` → ``""``."""
    stripped = prefix.strip("/")
    return "/" + stripped if stripped else ""


class Guard:
    """Security headers on every response; HTTP Basic on every request unless ``credentials``
    is None (the explicit ``--no-auth`` on a loopback address)."""

    def __init__(self, app: ASGIApp, credentials: Credentials | None) -> None:
        self.app = app
        self.credentials = credentials

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        user = ""
        if self.credentials is not None:
            root: str = scope.get("root_path", "")
            route = scope["path"][len(root) :] if scope["path"].startswith(root) else scope["path"]
            if SIGNED_OUT_COOKIE in _cookies(scope):
                if route == LOGIN_PATH:
                    await _respond(send_with_headers, 401, CHALLENGE_PAGE, challenge=True, forget=root or "/")
                else:
                    await _respond(send_with_headers, 401, _signed_out_page(root))
                return
            accepted = self.credentials.accept(_header(scope, b"authorization"))
            if accepted is None:
                await _respond(send_with_headers, 401, CHALLENGE_PAGE, challenge=True)
                return
            if route == LOGIN_PATH:
                await _redirect(send_with_headers, (root or "") + "/")
                return
            user = accepted
        scope = dict(scope)
        scope[USER_KEY] = user
        await self.app(scope, receive, send_with_headers)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _cookies(scope: Scope) -> set[str]:
    text = _header(scope, b"cookie") or ""
    return {part.split("=", 1)[0].strip() for part in text.split(";") if part.strip()}


CHALLENGE_PAGE = (
    b"<!doctype html><html lang=en><meta charset=utf-8><title>Sign in: jobadapter</title>"
    b"<h1>Authentication required</h1><p>Sign in with the dashboard's user name and password "
    b"(JOBADAPTER_DASHBOARD_USER and JOBADAPTER_DASHBOARD_PASSWORD where it runs).</p></html>"
)


def _signed_out_page(root: str) -> bytes:
    login = html.escape(root + LOGIN_PATH, quote=True)
    return (
        "<!doctype html><html lang=en><meta charset=utf-8><title>Signed out: jobadapter</title>"
        f'<link rel="stylesheet" href="{html.escape(root, quote=True)}/static/dashboard.css">'
        '<main class="narrow"><h1>You are signed out</h1>'
        "<p>This browser will not see the dashboard until it signs in again.</p>"
        f'<p><a href="{login}">Sign in again</a></p></main></html>'
    ).encode()


async def _respond(
    send: Send, status: int, page: bytes, *, challenge: bool = False, forget: str | None = None
) -> None:
    """A page with ``status``; ``challenge`` asks for Basic credentials (browsers drop the ones
    they cached for the realm); ``forget`` deletes the signed-out cookie at that path."""
    headers = [
        (b"content-type", b"text/html; charset=utf-8"),
        (b"content-length", str(len(page)).encode()),
    ]
    if challenge:
        headers.append((b"www-authenticate", f'Basic realm="{REALM}", charset="UTF-8"'.encode()))
    if forget is not None:
        headers.append((b"set-cookie", signed_out_cookie(forget, clear=True).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": page})


async def _redirect(send: Send, location: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 303,
            "headers": [(b"location", location.encode()), (b"content-length", b"0")],
        }
    )
    await send({"type": "http.response.body", "body": b""})


def signed_out_cookie(path: str, *, clear: bool = False) -> str:
    """The ``Set-Cookie`` value that marks (or, with ``clear``, unmarks) this browser signed out."""
    lifetime = "Max-Age=0" if clear else "Max-Age=86400"
    return f"{SIGNED_OUT_COOKIE}=1; Path={path}; {lifetime}; HttpOnly; SameSite=Strict"
