"""The jobs behind docs/operations.md: an app whose queues an operator looks after.

    export JOBADAPTER_URL=rq+redis://127.0.0.1:6379/0 JOBADAPTER_JOURNAL=sqlite:///jobs.db
    uv run jobadapter worker --app examples.operations_app --queues billing
    uv run python -m examples.operations_app      # enqueue a morning's work

``ChargeCard`` fails for one customer whose card the bank declines: those jobs
end in the failed store, where the operator retries or discards them.
"""

from __future__ import annotations

from jobadapter import Job


class CardDeclined(Exception):
    """The bank refused the charge."""


class ChargeCard(Job):
    queue_as = "billing"

    def perform(self, customer: str, cents: int) -> None:
        if customer.startswith("mallory"):
            raise CardDeclined(f"card of {customer} declined for {cents} cents")


class SendReceipt(Job):
    queue_as = "mail"

    def perform(self, address: str) -> None:
        print(f"receipt sent to {address}")


def enqueue_morning() -> None:
    charges = (("alice@example.com", 1200), ("mallory@example.com", 999), ("bob@example.com", 450))
    for customer, cents in charges:
        ChargeCard.perform_later(customer, cents)
        SendReceipt.perform_later(customer)
    SendReceipt.set(wait=3600).perform_later("monthly-digest@example.com")


if __name__ == "__main__":
    # Run as a script this file is __main__, and its jobs would be named __main__.ChargeCard,
    # which no worker knows: enqueue through the module the worker imports.
    import examples.operations_app

    examples.operations_app.enqueue_morning()
