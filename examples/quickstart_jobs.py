"""The quickstart's jobs, in a module of their own: the script that enqueues them and the
worker that runs them must both import them by the same name (``quickstart_jobs``)."""

from __future__ import annotations

from jobadapter import Job, discard_on, retry_on


class RecordGone(Exception):
    """The record a job was about was deleted before the job ran."""


class ServiceBusy(Exception):
    """A remote service asked us to come back later."""


class SendWelcomeEmail(Job):
    queue_as = "mailers"

    def perform(self, user_id: int, *, lang: str = "en") -> None:
        print(f"  -> welcome mail for user {user_id} ({lang})", flush=True)


@retry_on(ServiceBusy, wait=0.5, attempts=3, jitter=0)
@discard_on(RecordGone)
class SyncInvoice(Job):
    def perform(self, invoice_id: int) -> None:
        if invoice_id == 404:
            raise RecordGone(f"invoice {invoice_id} was deleted")
        if self.executions < 2:
            raise ServiceBusy("billing API is busy")
        print(f"  -> invoice {invoice_id} synced on attempt {self.executions}", flush=True)
