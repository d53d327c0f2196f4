"""What keeps the dashboard safe to expose: HTTP Basic, CSRF tokens, headers, redaction.

A dashboard retries and discards jobs, so it is a write interface to
production: authentication is on unless someone turns it off on purpose
(`Credentials.from_environment` refuses to go on without a password), every
form that changes something carries a token only the dashboard can mint
(`CsrfTokens`), every response forbids framing and foreign scripts
(`SECURITY_HEADERS`), and nothing it prints shows a broker's password
(`Redactor`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from jobadapter.errors import ConfigurationError

USER_VARIABLE = "JOBADAPTER_DASHBOARD_USER"
PASSWORD_VARIABLE = "JOBADAPTER_DASHBOARD_PASSWORD"
SECRET_VARIABLE = "JOBADAPTER_DASHBOARD_SECRET"
DEFAULT_USER = "admin"
REALM = "jobadapter dashboard"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)
"""Only the app's own files run or style a page; no page can be framed."""

SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
"""Sent with every response. Job ids and arguments appear in URLs, so no Referer leaves
the dashboard, and no page is cached on a shared machine."""


@dataclass(frozen=True)
class Credentials:
    """The one user name and password that may use the dashboard."""

    user: str
    password: str

    def __repr__(self) -> str:
        return f"Credentials(user={self.user!r}, password='***')"

    @classmethod
    def from_environment(cls) -> Credentials:
        """``JOBADAPTER_DASHBOARD_USER`` (default ``admin``) and ``JOBADAPTER_DASHBOARD_PASSWORD``;
        raises `ConfigurationError` when no password is set."""
        password = os.environ.get(PASSWORD_VARIABLE, "")
        if not password:
            raise ConfigurationError(
                f"the dashboard needs a password: set {PASSWORD_VARIABLE} (and {USER_VARIABLE}, default "
                f"{DEFAULT_USER!r}); only on a loopback address may it run without one, with --no-auth"
            )
        return cls(os.environ.get(USER_VARIABLE) or DEFAULT_USER, password)

    def accept(self, authorization: str | None) -> str | None:
        """The user name when ``authorization`` (an ``Authorization`` header) carries these
        credentials, else None. Both parts are compared in constant time, always both."""
        if not authorization:
            return None
        scheme, _, encoded = authorization.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, colon, password = decoded.partition(":")
        if not colon:
            return None
        user_ok = hmac.compare_digest(user.encode(), self.user.encode())
        password_ok = hmac.compare_digest(password.encode(), self.password.encode())
        return user if user_ok and password_ok else None


class CsrfTokens:
    """Tokens for state-changing forms: an HMAC of the user and the time it was issued.

    A page from another site can make the browser POST here (with its cached
    Basic credentials) but cannot read a page of ours, so it cannot know a
    token. Tokens need no server-side storage; they expire after `LIFETIME`.
    Several dashboard processes behind one balancer must share
    ``JOBADAPTER_DASHBOARD_SECRET``; otherwise each draws its own secret.
    """

    LIFETIME = 12 * 3600.0

    def __init__(self, secret: bytes | None = None) -> None:
        configured = os.environ.get(SECRET_VARIABLE)
        self._secret = secret or (configured.encode() if configured else secrets.token_bytes(32))

    def issue(self, user: str, now: float | None = None) -> str:
        issued = str(int(time.time() if now is None else now))
        return f"{issued}.{self._sign(user, issued)}"

    def valid(self, token: str | None, user: str, now: float | None = None) -> bool:
        if not token:
            return False
        issued, _, signature = token.partition(".")
        if not issued.isdigit():
            return False
        age = (time.time() if now is None else now) - int(issued)
        if not 0 <= age <= self.LIFETIME:
            return False
        return hmac.compare_digest(signature, self._sign(user, issued))

    def _sign(self, user: str, issued: str) -> str:
        message = f"{user}\x00{issued}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()


class Redactor:
    """Replaces known secrets (the passwords in the broker's and the journal's URLs, the
    dashboard's own) in any text a page shows, such as a backend's error message."""

    def __init__(self, urls: Iterable[str], extra: Iterable[str] = ()) -> None:
        found = {password for password in (_password_of(url) for url in urls) if password}
        found |= {unquote(password) for password in found}
        found.update(secret for secret in extra if secret)
        self._secrets = sorted(found, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _password_of(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None
