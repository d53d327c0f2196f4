"""``settings.JOBADAPTER``: how a Django project configures jobadapter.

::

    JOBADAPTER = {
        "URL": "rq+redis://127.0.0.1:6379/0",      # the default adapter (else $JOBADAPTER_URL)
        "JOURNAL": "postgresql+psycopg://…/jobs",    # optional: the job journal
        "APP": "shop",                               # the APP of model global ids (gid://shop/…)
        "AUTODISCOVER": ["jobs"],                    # modules imported from every installed app
        "ENQUEUE_AFTER_COMMIT": True,                # the default for job classes that do not say
    }
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

KEYS = frozenset({"URL", "JOURNAL", "APP", "AUTODISCOVER", "ENQUEUE_AFTER_COMMIT"})
DEFAULT_AUTODISCOVER = ("jobs",)


@dataclass(frozen=True)
class JobAdapterSettings:
    """``settings.JOBADAPTER``, checked."""

    url: str | None = None
    journal: str | None = None
    app: str | None = None
    autodiscover: tuple[str, ...] = DEFAULT_AUTODISCOVER
    enqueue_after_commit: bool | None = None


def read() -> JobAdapterSettings:
    """``settings.JOBADAPTER`` (a missing setting is all defaults); `ImproperlyConfigured`
    naming the key for anything else than a dict of known keys with values of the right type."""
    given: Any = getattr(settings, "JOBADAPTER", {})
    if not isinstance(given, dict):
        raise ImproperlyConfigured(f"settings.JOBADAPTER must be a dict, not {given!r}")
    unknown = set(given) - KEYS
    if unknown:
        raise ImproperlyConfigured(
            f"settings.JOBADAPTER has unknown key(s) {', '.join(sorted(map(str, unknown)))}; "
            f"it takes {', '.join(sorted(KEYS))}"
        )
    for key in ("URL", "JOURNAL", "APP"):
        if given.get(key) is not None and not isinstance(given[key], str):
            raise ImproperlyConfigured(f"settings.JOBADAPTER[{key!r}] must be a string, not {given[key]!r}")
    modules = given.get("AUTODISCOVER", DEFAULT_AUTODISCOVER)
    if isinstance(modules, str) or not all(isinstance(name, str) for name in modules):
        raise ImproperlyConfigured(
            f"settings.JOBADAPTER['AUTODISCOVER'] must be a list of module names, not {modules!r}"
        )
    after_commit = given.get("ENQUEUE_AFTER_COMMIT")
    if after_commit is not None and not isinstance(after_commit, bool):
        raise ImproperlyConfigured(
            f"settings.JOBADAPTER['ENQUEUE_AFTER_COMMIT'] must be True or False, not {after_commit!r}"
        )
    return JobAdapterSettings(
        given.get("URL"), given.get("JOURNAL"), given.get("APP"), tuple(modules), after_commit
    )
