from django.db import models


class Order(models.Model):
    email = models.EmailField()
    item = models.CharField(max_length=100)
    shipped_at = models.DateTimeField(null=True)
    receipt = models.TextField(blank=True)
