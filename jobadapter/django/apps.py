"""The ``jobadapter.django`` app: ``INSTALLED_APPS += ["jobadapter.django"]``.

When Django is ready it configures jobadapter from ``settings.JOBADAPTER`` (`settings`),
registers a locator for every installed model (`locator`), and imports the ``jobs`` module
of every installed app, so the job classes are registered in every process, the worker's too.
"""

from __future__ import annotations

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules

from jobadapter import config, journal


class JobAdapterConfig(AppConfig):
    name = "jobadapter.django"
    label = "jobadapter"
    verbose_name = "jobadapter"

    def ready(self) -> None:
        from jobadapter.django import locator, settings

        chosen = settings.read()
        if chosen.url is not None or chosen.app is not None:
            config.configure(url=chosen.url, app=chosen.app)
        if chosen.journal is not None and journal.active() is None:
            journal.configure(chosen.journal)
        locator.register_models()
        autodiscover_modules(*chosen.autodiscover)
