"""Models with an integer, a UUID and a string primary key, for the model-argument tests."""

from __future__ import annotations

import uuid

from django.db import models


class Order(models.Model):
    reference = models.CharField(max_length=40)


class Ticket(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    title = models.CharField(max_length=40)


class Tag(models.Model):
    name = models.CharField(max_length=40, primary_key=True)
