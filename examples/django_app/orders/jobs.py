"""A job class (autodiscovered: ``jobs`` modules of installed apps)."""

from django.utils import timezone

from jobadapter import Job, RecordNotFound, discard_on, retry_on
from orders.models import Order


@retry_on(ConnectionError, wait="polynomially_longer", attempts=5)
@discard_on(RecordNotFound)  # the order was deleted before the job ran
class ShipOrder(Job):
    """Marks the order shipped. Enqueued inside the view's transaction, it reaches the broker
    only once the order row is committed (JOBADAPTER["ENQUEUE_AFTER_COMMIT"])."""

    def perform(self, order: Order) -> None:
        order.shipped_at = timezone.now()
        order.save(update_fields=["shipped_at"])
