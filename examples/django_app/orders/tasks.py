"""A django.tasks function (the worker imports ``tasks`` modules of installed apps)."""

from jobadapter import retry_on
from orders.models import Order

try:  # Django 6
    from django.tasks import task
except ImportError:  # Django 5.2 LTS with the django-tasks backport
    from django_tasks import task


@retry_on(ConnectionError, wait=5, attempts=3)
@task(priority=10)
def write_receipt(order_id: int) -> str:
    order = Order.objects.get(pk=order_id)
    order.receipt = f"Receipt for order {order.pk}: 1 × {order.item}"
    order.save(update_fields=["receipt"])
    return order.receipt
