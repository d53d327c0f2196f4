"""Which adapter a job goes to: one URL switches the backend.

The default adapter comes from ``configure(url=...)``, else the
``JOBADAPTER_URL`` environment variable, else ``async://``. More adapters can
be configured under names (``configure(url=..., name="reports")``) and picked
by a job class's ``queue_adapter``, which may also be a URL. Adapter classes
are found through the ``jobadapter.adapters`` entry-point group, keyed by the
URL scheme before ``+``, or registered in this process by `register_adapter` from a
plugin module (``jobadapter worker --plugin MODULE``, or ``JOBADAPTER_PLUGINS``, which
worker processes inherit). Tests swap every job onto one adapter with
`override` (the ``jobs`` fixture does).
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobadapter.errors import ConfigurationError

if TYPE_CHECKING:
    from jobadapter.adapters.base import Adapter
    from jobadapter.job import Job

DEFAULT_URL = "async://"
ENTRY_POINT_GROUP = "jobadapter.adapters"
PLUGINS_VARIABLE = "JOBADAPTER_PLUGINS"
"""Comma-separated modules imported before an adapter is looked up: each may call
`register_adapter`. Set by ``--plugin``, and inherited by the workers the conformance suite starts."""
_DISTRIBUTIONS = {"rq": "jobadapter[rq]", "celery": "jobadapter[celery]", "dramatiq": "jobadapter[dramatiq]"}

_UNSET: Any = object()
_lock = threading.RLock()
_urls: dict[str, tuple[str, dict[str, Any]]] = {}
_adapters: dict[str, Adapter] = {}
_override: Adapter | None = None
_registered: dict[str, type[Adapter]] = {}
_plugins: list[str] = []


def configure(
    url: str | None = None,
    *,
    name: str = "default",
    app: str | None = None,
    queue_name_prefix: str | None = _UNSET,
    queue_name_delimiter: str = _UNSET,
    default_queue_name: str = _UNSET,
    default_priority: int | None = _UNSET,
    retry_jitter: float = _UNSET,
    enqueue_after_transaction_commit: bool = _UNSET,
    **options: Any,
) -> Adapter:
    """Set the adapter called ``name`` (the default one unless given) and return it.

    ``options`` go to the adapter's constructor. ``app`` sets the application
    name written into model global ids (``gid://APP/...``). A previously built
    adapter under the same name is closed.

    The job defaults are ActiveJob's, for every job of the process whatever its
    adapter (see `jobadapter.defaults`): ``queue_name_prefix`` and
    ``queue_name_delimiter`` (``"_"``) put ``staging_mail`` for ``queue_as = "mail"``,
    ``default_queue_name`` (``"default"``) is the queue of a class that names none,
    ``default_priority`` the priority of one that sets none, and ``retry_jitter``
    (0.15) what ``retry_on`` adds to its delays unless given its own ``jitter``, and
    ``enqueue_after_transaction_commit`` (False) whether a class that does not say waits
    for the commit of an open transaction. Each one not given keeps its value.
    """
    from jobadapter import defaults

    given = {
        key: value
        for key, value in (
            ("queue_name_prefix", queue_name_prefix),
            ("queue_name_delimiter", queue_name_delimiter),
            ("default_queue_name", default_queue_name),
            ("default_priority", default_priority),
            ("retry_jitter", retry_jitter),
            ("enqueue_after_transaction_commit", enqueue_after_transaction_commit),
        )
        if value is not _UNSET
    }
    if given:
        defaults.update(**given)
    if app is not None:
        from jobadapter import locators

        locators.set_app_name(app)
    with _lock:
        resolved = url or os.environ.get("JOBADAPTER_URL") or DEFAULT_URL
        adapter = build_adapter(resolved, **options)
        previous = _adapters.pop(name, None)
        _urls[name] = (resolved, options)
        _adapters[name] = adapter
    if previous is not None and previous is not adapter:
        previous.close()
    return adapter


def adapter(name: str = "default") -> Adapter:
    """The adapter configured as ``name``, or built from ``name`` if it is a URL."""
    found = _adapters.get(name)
    if found is not None:
        return found
    with _lock:
        if name in _adapters:
            return _adapters[name]
        if "://" in name:
            built = build_adapter(name)
        elif name in _urls:
            url, options = _urls[name]
            built = build_adapter(url, **options)
        elif name == "default":
            built = build_adapter(os.environ.get("JOBADAPTER_URL") or DEFAULT_URL)
        else:
            raise ConfigurationError(
                f"no adapter is configured as {name!r}: call jobadapter.configure(url=..., name={name!r}) "
                "or set queue_adapter to a URL"
            )
        _adapters[name] = built
        return built


def adapter_for(job_class: type[Job]) -> Adapter:
    """Where ``job_class`` enqueues: the test override, its ``queue_adapter``, or the default."""
    if _override is not None:
        return _override
    return adapter(job_class.queue_adapter or "default")


@contextmanager
def override(replacement: Adapter) -> Iterator[Adapter]:
    """Send every job to ``replacement`` inside the block, whatever its ``queue_adapter``."""
    global _override
    previous, _override = _override, replacement
    try:
        yield replacement
    finally:
        _override = previous


def reset() -> None:
    """Close and forget every configured adapter (tests and worker shutdown use this)."""
    with _lock:
        built = list(_adapters.values())
        _adapters.clear()
        _urls.clear()
    for each in built:
        each.close()


def build_adapter(url: str, **options: Any) -> Adapter:
    """A new adapter for ``url``; a clear `ConfigurationError` for an unknown or missing one."""
    from jobadapter import journal
    from jobadapter.adapters.base import AdapterURL

    journal.install_from_environment()  # JOBADAPTER_JOURNAL, once per process
    parsed = AdapterURL.parse(url)
    adapter_class = adapter_class_for(parsed.adapter)
    return adapter_class(parsed, **options)


def register_adapter(scheme: str, adapter_class: type[Adapter]) -> None:
    """Make ``scheme://`` URLs build ``adapter_class`` in this process, ahead of entry points
    (for an adapter under development, before it is packaged)."""
    from jobadapter.adapters.base import Adapter

    if not (isinstance(adapter_class, type) and issubclass(adapter_class, Adapter)):
        raise ConfigurationError(f"{adapter_class!r} is not an Adapter class")
    _registered[scheme] = adapter_class


def load_plugins(modules: Iterable[str] = ()) -> list[str]:
    """Import ``modules`` and those named in ``JOBADAPTER_PLUGINS``, once each, and name them in
    ``JOBADAPTER_PLUGINS`` so that processes started from this one (workers) load them too.

    A plugin module registers an adapter that is not installed with an entry point (an adapter
    under development). The names come from the command line or the environment, never from a
    payload. Returns every plugin module loaded in this process.
    """
    wanted = [*_split(os.environ.get(PLUGINS_VARIABLE, "")), *modules]
    with _lock:
        for module in wanted:
            if module in _plugins:
                continue
            try:
                importlib.import_module(module)  # --plugin or JOBADAPTER_PLUGINS, never a payload
            except ImportError as error:
                raise ConfigurationError(
                    f"plugin module {module!r} could not be imported: {error}"
                ) from error
            _plugins.append(module)
        if _plugins:
            os.environ[PLUGINS_VARIABLE] = ",".join(_plugins)
        return list(_plugins)


def plugin_modules() -> list[str]:
    """The modules a worker must import to build the adapters known here: the plugins loaded,
    and the module of each class given to `register_adapter` (where it registers itself, as a
    ``pytest -p MODULE`` plugin does)."""
    modules = list(_plugins)
    for adapter_class in _registered.values():
        if adapter_class.__module__ not in modules and adapter_class.__module__ != "__main__":
            modules.append(adapter_class.__module__)
    return modules


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def install_hint(scheme: str) -> str:
    """The command that installs a built-in adapter: the release's extra, and, when this
    jobadapter runs from a clone of its repository (where the adapters are packages of their
    own, not on the package index), the editable installs that work there."""
    release = f"pip install '{_DISTRIBUTIONS[scheme]}'"
    clone = Path(__file__).resolve().parent.parent
    adapter = clone / "adapters" / scheme
    if not (adapter / "pyproject.toml").is_file():
        return release
    return f"{release} (from this clone: pip install -e {clone} -e {adapter})"


def adapter_class_for(scheme: str) -> type[Adapter]:
    """The adapter class registered under ``scheme`` (`register_adapter`, then entry points)."""
    if scheme not in _registered:
        load_plugins()
    if scheme in _registered:
        return _registered[scheme]
    found = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    entry_point = found.get(scheme)
    if entry_point is None:
        if scheme in _DISTRIBUTIONS:
            raise ConfigurationError(f"the {scheme!r} adapter is not installed: {install_hint(scheme)}")
        installed = ", ".join(sorted({*found, *_registered})) or "none"
        raise ConfigurationError(
            f"no adapter for URL scheme {scheme!r}; installed adapters: {installed} (an adapter that is "
            f"not installed with an entry point is loaded with --plugin MODULE or {PLUGINS_VARIABLE})"
        )
    try:
        loaded = entry_point.load()
    except ImportError as error:
        hint = f": {install_hint(scheme)}" if scheme in _DISTRIBUTIONS else ""
        raise ConfigurationError(f"the {scheme!r} adapter could not be imported ({error}){hint}") from error
    from jobadapter.adapters.base import Adapter

    if not (isinstance(loaded, type) and issubclass(loaded, Adapter)):
        raise ConfigurationError(f"entry point {scheme!r} ({entry_point.value}) is not an Adapter class")
    return loaded
