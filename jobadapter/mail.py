"""``deliver_later``: send an email from a worker, as Action Mailer's ``deliver_later``.

::

    from jobadapter.mail import deliver_later
    deliver_later(message, wait=60)      # a Django EmailMessage, or a stdlib email.message.Message

The message is turned into MIME bytes once, when it is queued: headers, the text and
HTML alternatives, attachments with their MIME types and inline images travel exactly as
they will be sent, with the envelope sender and every recipient (Bcc included, which the
headers never carry). `DeliverMailJob` sends those bytes in the worker, through smtplib to
the SMTP URL configured there (`configure` or ``JOBADAPTER_SMTP_URL``), or else through
Django's configured email backend. A temporary SMTP failure (a 4xx reply, a lost
connection) is retried; a permanent one (5xx) is discarded with a log line.

This module imports nothing of Django unless a Django message is given, or a worker with
no SMTP URL delivers through Django.
"""

from __future__ import annotations

import email
import email.policy
import logging
import os
import smtplib
import ssl
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta
from email.message import Message
from email.utils import getaddresses
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from jobadapter.errors import ConfigurationError
from jobadapter.job import Job
from jobadapter.rescue import discard_on, retry_on

SMTP_URL_VARIABLE = "JOBADAPTER_SMTP_URL"
MAIL_QUEUE = "mailers"
"""The queue mail waits on unless ``deliver_later`` names another (Action Mailer's)."""
DEFAULT_TIMEOUT = 30.0
_logger = logging.getLogger("jobadapter.mail")
_smtp_url: str | None = None


class TransientMailError(Exception):
    """The SMTP server could not take the message now (a 4xx reply, a lost connection): retried."""


class PermanentMailError(Exception):
    """The SMTP server refused the message for good (a 5xx reply): discarded with a log line."""


def configure(smtp_url: str | None) -> None:
    """Where this process's `DeliverMailJob` sends mail: ``smtp://user:password@host:587?starttls=1``,
    ``smtps://host:465``, ``?timeout=10`` (seconds); None to use ``JOBADAPTER_SMTP_URL``, or
    Django's email backend when that is not set either."""
    if smtp_url is not None:
        _parse(smtp_url)
    global _smtp_url
    _smtp_url = smtp_url


def smtp_url() -> str | None:
    """The SMTP URL mail is sent to from this process, or None (Django's email backend)."""
    return _smtp_url or os.environ.get(SMTP_URL_VARIABLE) or None


def _log_rejection(job: Any, error: BaseException) -> None:
    _logger.warning(
        "Discarded mail %s to %s: the SMTP server refused it for good (%s)",
        job.job_id,
        ", ".join(job.arguments[1]) if len(job.arguments) > 1 else "?",
        error,
    )


@retry_on(TransientMailError, wait="polynomially_longer", attempts=10)
@discard_on(PermanentMailError, on_discard=_log_rejection)
class DeliverMailJob(Job):
    """Sends one queued message: ``perform(sender, recipients, mime)``."""

    queue_as = MAIL_QUEUE
    log_arguments = False  # a whole message, its recipients and attachments: not for log lines

    def perform(self, sender: str, recipients: list[str], mime: bytes) -> None:
        url = smtp_url()
        try:
            if url is not None:
                _send_smtp(url, sender, recipients, mime)
            else:
                _send_through_django(sender, recipients, mime)
        except smtplib.SMTPException as error:
            raise _classified(error) from error
        except OSError as error:  # refused, reset, timed out: the server may be back soon
            raise TransientMailError(f"{type(error).__name__}: {error}") from error


def deliver_later(
    message: Any,
    *,
    wait: float | timedelta | None = None,
    wait_until: datetime | None = None,
    queue: str | None = None,
    priority: int | None = None,
) -> DeliverMailJob:
    """Queue ``message`` (a Django ``EmailMessage``/``EmailMultiAlternatives``, or a stdlib
    ``email.message.Message``) for a worker to send; returns the job."""
    sender, recipients, mime = stored(message)
    if not recipients:
        raise ValueError("deliver_later: the message has no recipients (To, Cc or Bcc)")
    configured = DeliverMailJob.set(wait=wait, wait_until=wait_until, queue=queue, priority=priority)
    return configured.perform_later(sender, recipients, mime)


def stored(message: Any) -> tuple[str, list[str], bytes]:
    """``(sender, recipients, MIME bytes)`` of a message, as `DeliverMailJob` takes them; the
    bytes in SMTP's form (CRLF line endings, ending with one), as the server will receive them."""
    if isinstance(message, Message):
        sender, recipients, mime = _stored_stdlib(message)
        return sender, recipients, _smtp_lines(mime)
    django_mail = sys.modules.get("django.core.mail")
    if django_mail is not None and isinstance(message, django_mail.EmailMessage):
        sender, recipients, mime = _stored_django(message)
        return sender, recipients, _smtp_lines(mime)
    raise TypeError(
        f"deliver_later takes a Django EmailMessage or an email.message.Message, not {type(message).__name__}"
    )


def _stored_stdlib(message: Message) -> tuple[str, list[str], bytes]:
    fields = ("To", "Cc", "Bcc", "Resent-To", "Resent-Cc", "Resent-Bcc")
    recipients = [address for _, address in getaddresses(_all(message, fields)) if address]
    senders = [address for _, address in getaddresses(_all(message, ("Sender", "From"))) if address]
    if not senders:
        raise ValueError("deliver_later: the message has no From header")
    outgoing = email.message_from_bytes(message.as_bytes(policy=email.policy.SMTP), policy=email.policy.SMTP)
    del outgoing["Bcc"]
    del outgoing["Resent-Bcc"]
    return senders[0], recipients, outgoing.as_bytes()


def _smtp_lines(mime: bytes) -> bytes:
    lines = mime.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return lines if lines.endswith(b"\r\n") else lines + b"\r\n"


def _all(message: Message, fields: Sequence[str]) -> list[str]:
    return [str(value) for field in fields for value in message.get_all(field, [])]


def _stored_django(message: Any) -> tuple[str, list[str], bytes]:
    from django.conf import settings

    sender = message.from_email or settings.DEFAULT_FROM_EMAIL
    generated = message.message()
    return str(sender), [str(each) for each in message.recipients()], bytes(generated.as_bytes())


def _send_smtp(url: str, sender: str, recipients: list[str], mime: bytes) -> None:
    parts, starttls, timeout = _parse(url)
    host, port = parts.hostname or "localhost", parts.port
    if parts.scheme == "smtps":
        client: smtplib.SMTP = smtplib.SMTP_SSL(host, port or 465, timeout=timeout)
    else:
        client = smtplib.SMTP(host, port or 25, timeout=timeout)
    with client:
        if starttls:
            client.starttls(context=ssl.create_default_context())
        if parts.username:
            client.login(unquote(parts.username), unquote(parts.password or ""))
        refused = client.sendmail(sender, recipients, mime)
    if refused:
        _logger.warning("The SMTP server refused some recipients, the others got the mail: %s", refused)


def _parse(url: str) -> tuple[Any, bool, float]:
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ConfigurationError(f"an SMTP URL is smtp://host:port or smtps://host:port, not {url!r}")
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    unknown = set(query) - {"starttls", "timeout"}
    if unknown:
        raise ConfigurationError(
            f"SMTP URL option(s) {', '.join(sorted(unknown))} unknown: use starttls, timeout"
        )
    try:
        timeout = float(query.get("timeout", DEFAULT_TIMEOUT))
    except ValueError:
        raise ConfigurationError(f"SMTP URL timeout must be seconds, not {query['timeout']!r}") from None
    return parts, query.get("starttls", "0") in ("1", "true", "yes"), timeout


def _send_through_django(sender: str, recipients: list[str], mime: bytes) -> None:
    try:
        from jobadapter.django.mail import send_stored
    except ImportError as error:
        raise ConfigurationError(
            f"no SMTP URL to send mail to: set {SMTP_URL_VARIABLE} or call jobadapter.mail.configure(url), "
            "or run the worker in a Django project"
        ) from error
    send_stored(sender, recipients, mime)


def _classified(error: smtplib.SMTPException) -> Exception:
    """A temporary or a permanent failure, by the SMTP reply codes it carries."""
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in error.recipients.values()]
        if codes and all(500 <= code < 600 for code in codes):
            return PermanentMailError(f"every recipient was refused: {error.recipients}")
        return TransientMailError(f"recipients refused for now: {error.recipients}")
    if isinstance(error, smtplib.SMTPResponseException):
        reply = f"{error.smtp_code} {error.smtp_error!r}"
        if 500 <= error.smtp_code < 600:
            return PermanentMailError(reply)
        return TransientMailError(reply)
    return TransientMailError(f"{type(error).__name__}: {error}")
