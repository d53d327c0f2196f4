"""Django's side of ``jobadapter.mail``: a queueing email backend, and delivery through the real one.

``EMAIL_BACKEND = "jobadapter.django.mail.QueuedEmailBackend"`` queues every message Django
sends (``send_mail``, ``EmailMessage.send()``, the admin's error mails) with
``deliver_later``; the worker sends it through ``JOBADAPTER_EMAIL_BACKEND`` (Django's SMTP
backend unless set), as django-celery-email does for Celery alone.
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import Sequence
from email.message import Message
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMessage, get_connection
from django.core.mail.backends.base import BaseEmailBackend

from jobadapter.mail import deliver_later

DEFAULT_DELIVERY_BACKEND = "django.core.mail.backends.smtp.EmailBackend"


class QueuedEmailBackend(BaseEmailBackend):
    """Queues each message for a worker (`jobadapter.mail.deliver_later`) instead of sending it."""

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        queued = 0
        for message in email_messages:
            try:
                deliver_later(message)
            except Exception:
                if not self.fail_silently:
                    raise
            else:
                queued += 1
        return queued


def send_stored(sender: str, recipients: list[str], mime: bytes) -> None:
    """Send queued MIME bytes through the project's real email backend, unchanged."""
    path = getattr(settings, "JOBADAPTER_EMAIL_BACKEND", None)
    if path is None:
        configured = settings.EMAIL_BACKEND
        path = DEFAULT_DELIVERY_BACKEND if configured.endswith(".QueuedEmailBackend") else configured
    if path.endswith(".QueuedEmailBackend"):
        raise ImproperlyConfigured("JOBADAPTER_EMAIL_BACKEND must be a backend that sends, not the queue")
    get_connection(path, fail_silently=False).send_messages([StoredEmailMessage(sender, recipients, mime)])


class StoredEmailMessage(EmailMessage):
    """A message already in MIME form: Django's backends send its bytes as they are."""

    def __init__(self, sender: str, recipients: list[str], mime: bytes) -> None:
        parsed = email.message_from_bytes(mime, policy=email.policy.default)
        super().__init__(subject=str(parsed["Subject"] or ""), from_email=sender, to=recipients)
        self.mime = mime

    def message(self, *args: Any, **kwargs: Any) -> Any:
        return FrozenMessage.of(self.mime)

    def recipients(self) -> list[str]:
        return [str(each) for each in self.to]


class FrozenMessage(Message):
    """A parsed message whose ``as_bytes`` gives back the bytes it was parsed from: in SMTP's
    form (CRLF), or in the line ending a caller asks for (``linesep``, or a ``policy``'s)."""

    raw: bytes = b""

    @classmethod
    def of(cls, mime: bytes) -> FrozenMessage:
        parsed = email.message_from_bytes(mime, _class=cls)
        assert isinstance(parsed, cls)
        parsed.raw = mime
        return parsed

    def as_bytes(self, unixfrom: bool = False, policy: Any = None, linesep: str | None = None) -> bytes:
        wanted = linesep or (policy.linesep if policy is not None else "\r\n")
        if wanted == "\r\n":
            return self.raw
        return self.raw.replace(b"\r\n", b"\n").replace(b"\n", wanted.encode())

    def as_string(self, unixfrom: bool = False, maxheaderlen: int = 0, policy: Any = None) -> str:
        return self.as_bytes(policy=policy).decode("utf-8", errors="replace")
