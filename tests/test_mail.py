"""``deliver_later`` against a real SMTP server in the test process (aiosmtpd): what arrives is
what was queued, byte for byte; a 4xx is retried until it goes
through, a 5xx is discarded with a log line; and Django's queueing email backend."""

from __future__ import annotations

import email
import email.policy
import logging
from collections.abc import Iterator
from email.message import EmailMessage, MIMEPart
from email.mime.image import MIMEImage
from typing import Any

import django
import pytest
from aiosmtpd.controller import Controller
from django.core import mail as django_mail
from django.test import override_settings

import tests.django_support  # noqa: F401
from jobadapter import mail
from jobadapter.faults.brokers import free_port
from jobadapter.mail import DeliverMailJob, deliver_later
from jobadapter.testing import JobRecorder

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
BLOB = bytes(range(256)) * 4


class Inbox:
    """An aiosmtpd handler that keeps what it accepts and refuses what it is told to."""

    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], bytes]] = []
        self.refuse_data: list[str] = []
        self.refuse_rcpt: dict[str, str] = {}

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address in self.refuse_rcpt:
            return self.refuse_rcpt[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse_data:
            return self.refuse_data.pop(0)
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 Message accepted"


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    handler = Inbox()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    mail.configure(f"smtp://127.0.0.1:{port}?timeout=5")
    handler.port = port  # type: ignore[attr-defined]
    try:
        yield handler
    finally:
        mail.configure(None)
        controller.stop()


def _queued(job: DeliverMailJob) -> bytes:
    mime = job.arguments[2]
    assert isinstance(mime, bytes)
    return mime


def rich_message() -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Shop <shop@example.com>"
    message["To"] = "Ada <ada@example.com>"
    message["Bcc"] = "hidden@example.com"
    message["Subject"] = "Grüße ✓ order 42"
    message.set_content("Thank you, ü.\n")
    message.add_alternative('<p>Thank you <img src="cid:logo@shop"></p>', subtype="html")
    html = message.get_payload()[1]
    html.add_related(PNG, "image", "png", cid="<logo@shop>")
    message.add_attachment(BLOB, maintype="application", subtype="octet-stream", filename="data.bin")
    return message


def test_a_stdlib_message_arrives_as_queued_without_its_bcc(jobs: JobRecorder, inbox: Inbox) -> None:
    job = deliver_later(rich_message())
    jobs.assert_enqueued(DeliverMailJob, queue="mailers")
    jobs.perform_enqueued()
    [(sender, recipients, content)] = inbox.received
    assert sender == "shop@example.com"
    assert sorted(recipients) == ["ada@example.com", "hidden@example.com"]
    assert content == _queued(job)
    received = email.message_from_bytes(content, policy=email.policy.default)
    assert "Bcc" not in received and b"hidden@example.com" not in content
    assert received["Subject"] == "Grüße ✓ order 42"
    parts = {part.get_content_type(): part for part in received.walk()}
    assert (
        parts["image/png"].get_payload(decode=True) == PNG
        and parts["image/png"]["Content-ID"] == "<logo@shop>"
    )
    assert parts["application/octet-stream"].get_payload(decode=True) == BLOB
    assert parts["application/octet-stream"].get_filename() == "data.bin"
    assert "Thank you <img" in parts["text/html"].get_content()


def inline_image() -> object:
    """A PNG with a Content-ID, as each Django line takes it (6 wants a MIMEPart, 5.2 a MIMEBase)."""
    if django.VERSION >= (6,):
        part = MIMEPart()
        part.set_content(PNG, maintype="image", subtype="png", cid="<logo@shop>", disposition="inline")
        return part
    image = MIMEImage(PNG, "png")
    image.add_header("Content-ID", "<logo@shop>")
    image.add_header("Content-Disposition", "inline")
    return image


def test_a_django_message_with_an_alternative_an_attachment_and_an_inline_image(
    jobs: JobRecorder, inbox: Inbox
) -> None:
    message = django_mail.EmailMultiAlternatives(
        "Bestätigung ✓", "plain ü", "shop@example.com", ["ada@example.com"], bcc=["audit@example.com"]
    )
    message.attach_alternative("<b>html ü</b>", "text/html")
    message.attach("data.bin", BLOB, "application/octet-stream")
    message.attach(inline_image())
    job = deliver_later(message, wait=0, queue="mail")
    jobs.assert_enqueued(DeliverMailJob, queue="mail")
    jobs.perform_enqueued()
    [(_, recipients, content)] = inbox.received
    assert sorted(recipients) == ["ada@example.com", "audit@example.com"]
    assert content == _queued(job)
    received = email.message_from_bytes(content, policy=email.policy.default)
    assert received["Subject"] == "Bestätigung ✓" and "Bcc" not in received
    parts = {part.get_content_type(): part for part in received.walk()}
    assert parts["application/octet-stream"].get_payload(decode=True) == BLOB
    assert parts["text/html"].get_content().strip() == "<b>html ü</b>"
    assert (
        parts["image/png"].get_payload(decode=True) == PNG
        and parts["image/png"]["Content-ID"] == "<logo@shop>"
    )


def test_a_temporary_refusal_is_retried_until_it_goes_through(jobs: JobRecorder, inbox: Inbox) -> None:
    inbox.refuse_data = ["451 4.3.0 Try again later", "421 4.7.0 Busy"]
    deliver_later(rich_message())
    jobs.perform_enqueued()
    assert len(inbox.received) == 1
    assert [job.outcome for job in jobs.performed] == ["retried", "retried", "performed"]


def test_a_permanent_refusal_is_discarded_with_a_log_line(
    jobs: JobRecorder, inbox: Inbox, caplog: pytest.LogCaptureFixture
) -> None:
    message = rich_message()
    del message["Bcc"]
    message.replace_header("To", "nobody@example.com")
    inbox.refuse_rcpt["nobody@example.com"] = "550 5.1.1 No such user"
    with caplog.at_level(logging.WARNING, logger="jobadapter.mail"):
        deliver_later(message)
        jobs.perform_enqueued()
    assert inbox.received == [] and [job.outcome for job in jobs.performed] == ["discarded"]
    assert (
        "refused it for good" in caplog.text and "nobody@example.com" in caplog.text and "550" in caplog.text
    )


def test_a_message_without_recipients_is_refused_when_queued() -> None:
    message = EmailMessage()
    message["From"] = "shop@example.com"
    with pytest.raises(ValueError, match="no recipients"):
        deliver_later(message)
    with pytest.raises(TypeError, match="takes a Django EmailMessage"):
        deliver_later("not a message")


def test_the_queueing_email_backend_sends_through_the_real_one(jobs: JobRecorder, inbox: Inbox) -> None:
    mail.configure(None)  # no SMTP URL: the worker sends through Django's backend
    port = inbox.port  # type: ignore[attr-defined]
    with override_settings(
        EMAIL_BACKEND="jobadapter.django.mail.QueuedEmailBackend",
        JOBADAPTER_EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=port,
    ):
        assert django_mail.send_mail("Hallo ü", "body", "shop@example.com", ["ada@example.com"]) == 1
        assert inbox.received == []
        [job] = jobs.assert_enqueued(DeliverMailJob)
        jobs.perform_enqueued()
    [(_, recipients, content)] = inbox.received
    assert recipients == ["ada@example.com"] and content == _queued(job)
    assert email.message_from_bytes(content, policy=email.policy.default)["Subject"] == "Hallo ü"
