"""``POST /orders/`` places an order; ``GET /orders/<id>/`` shows what the jobs did."""

from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from jobadapter.mail import deliver_later
from orders.jobs import ShipOrder
from orders.models import Order
from orders.tasks import write_receipt


@csrf_exempt
@require_POST
def place_order(request: HttpRequest) -> JsonResponse:
    with transaction.atomic():
        order = Order.objects.create(email=request.POST["email"], item=request.POST.get("item", "teapot"))
        ShipOrder.perform_later(order)  # waits for the commit: the worker will find the row
        receipt = write_receipt.enqueue(order.pk)  # a django.tasks task, waiting for the commit too
        welcome = EmailMultiAlternatives("Welcome to the shop ✓", "Thanks for your order.", to=[order.email])
        welcome.attach_alternative("<p>Thanks for your <b>order</b>.</p>", "text/html")
        deliver_later(welcome)
    return JsonResponse({"order": order.pk, "receipt_task": receipt.id}, status=201)


@require_GET
def order_status(request: HttpRequest, order_id: int) -> JsonResponse:
    order = get_object_or_404(Order, pk=order_id)
    shipped = order.shipped_at.isoformat() if order.shipped_at else None
    return JsonResponse({"order": order.pk, "shipped_at": shipped, "receipt": order.receipt})
