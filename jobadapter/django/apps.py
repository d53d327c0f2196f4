"""The ``jobadapter.django`` app: ``INSTALLED_APPS += ["jobadapter.django"]``.

When Django is ready it configures jobadapter from ``settings.JOBADAPTER`` (`settings`),
registers a locator for every installed model (`locator`), makes enqueues inside
``transaction.atomic()`` wait for its commit where a job class asks for it (`transactions`),
and imports the ``jobs`` module of every installed app, so the job classes are registered in
every process, the worker's too.
"""

from __future__ import annotations

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules

from jobadapter import config, defaults, journal, transactions


class JobAdapterConfig(AppConfig):
    name = "jobadapter.django"
    label = "jobadapter"
    verbose_name = "jobadapter"

    def ready(self) -> None:
        from jobadapter.django import locator, settings
        from jobadapter.django.transactions import defer_to_commit

        chosen = settings.read()
        if chosen.url is not None or chosen.app is not None:
            config.configure(url=chosen.url, app=chosen.app)
        if chosen.journal is not None and journal.active() is None:
            journal.configure(chosen.journal)
        if chosen.enqueue_after_commit is not None:
            defaults.update(enqueue_after_transaction_commit=chosen.enqueue_after_commit)
        transactions.register(defer_to_commit)
        locator.register_models()
        autodiscover_modules(*chosen.autodiscover)
