"""jobadapter in one screen, on the default ``async://`` adapter (no server needed).

    uv run python examples/quickstart.py

Shows an enqueue, a delayed job, a retry and a discard in the log output. Set
JOBADAPTER_URL (e.g. rq+redis://127.0.0.1:6379/0) and run a worker to do the
same on a real backend.
"""

from __future__ import annotations

import logging

from jobadapter import Job, config, discard_on, retry_on


class RecordGone(Exception):
    """The record a job was about was deleted before the job ran."""


class ServiceBusy(Exception):
    """A remote service asked us to come back later."""


class SendWelcomeEmail(Job):
    queue_as = "mailers"

    def perform(self, user_id: int, *, lang: str = "en") -> None:
        print(f"  -> welcome mail for user {user_id} ({lang})")


@retry_on(ServiceBusy, wait=0.5, attempts=3, jitter=0)
@discard_on(RecordGone)
class SyncInvoice(Job):
    def perform(self, invoice_id: int) -> None:
        if invoice_id == 404:
            raise RecordGone(f"invoice {invoice_id} was deleted")
        if self.executions < 2:
            raise ServiceBusy("billing API is busy")
        print(f"  -> invoice {invoice_id} synced on attempt {self.executions}")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)-5s %(message)s")
    SendWelcomeEmail.perform_later(7, lang="fr")  # enqueue
    SendWelcomeEmail.set(wait=1).perform_later(8)  # a delayed job
    SyncInvoice.perform_later(42)  # fails once, retried after 0.5 s
    SyncInvoice.perform_later(404)  # discarded
    config.adapter().close()  # waits for the jobs above, as interpreter exit would


if __name__ == "__main__":
    main()
