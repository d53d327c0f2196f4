from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from jobadapter import ConfigurationError, Job, config
from jobadapter.adapters.async_ import AsyncAdapter
from jobadapter.adapters.base import AdapterURL, option_number, redact
from jobadapter.adapters.inline import InlineAdapter


def test_url_parsing_splits_adapter_transport_and_query() -> None:
    url = AdapterURL.parse("rq+redis://:secret@127.0.0.1:6379/3?abandoned_retries=2")
    assert url.adapter == "rq"
    assert url.transport == "redis"
    assert url.target == "redis://:secret@127.0.0.1:6379/3?abandoned_retries=2"
    assert url.query == {"abandoned_retries": "2"}
    assert "secret" not in url.redacted and ":***@127.0.0.1" in url.redacted
    plain = AdapterURL.parse("async://?workers=3")
    assert (plain.adapter, plain.transport, plain.query) == ("async", None, {"workers": "3"})


def test_target_without_drops_only_the_adapters_own_options() -> None:
    url = AdapterURL.parse("rq+redis://127.0.0.1:6379/3?abandoned_retries=2&ssl_cert_reqs=none")
    assert url.target_without({"abandoned_retries"}) == "redis://127.0.0.1:6379/3?ssl_cert_reqs=none"


@pytest.mark.parametrize(
    ("value", "whole", "expected"), [(None, False, 7.0), ("2.5", False, 2.5), (3, True, 3), ("0", True, 0)]
)
def test_option_numbers(value: object, whole: bool, expected: float) -> None:
    assert option_number("rq", "n", value, 7.0, whole=whole) == expected


@pytest.mark.parametrize(("value", "whole"), [("-1", False), ("nan", False), ("soon", False), ("2.5", True)])
def test_bad_option_numbers_are_named(value: object, whole: bool) -> None:
    with pytest.raises(ConfigurationError, match=r"rq option n must be a number >= 0"):
        option_number("rq", "n", value, 7.0, whole=whole)


def test_redact_hides_passwords_only() -> None:
    assert redact("amqp://guest:guest@127.0.0.1:5672//") == "amqp://guest:***@127.0.0.1:5672//"
    assert redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_default_adapter_is_async_and_env_url_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOBADAPTER_URL", raising=False)
    assert isinstance(config.adapter(), AsyncAdapter)
    config.reset()
    monkeypatch.setenv("JOBADAPTER_URL", "inline://")
    assert isinstance(config.adapter(), InlineAdapter)


def test_configure_builds_named_adapters_and_jobs_pick_them() -> None:
    config.configure(url="async://?workers=2")
    config.configure(url="inline://", name="immediate")

    class Immediate(Job):
        queue_adapter = "immediate"

    class ByUrl(Job):
        queue_adapter = "inline://"

    assert isinstance(config.adapter_for(Immediate), InlineAdapter)
    assert isinstance(config.adapter_for(ByUrl), InlineAdapter)
    default = config.adapter()
    assert isinstance(default, AsyncAdapter) and default.workers == 2


def test_unknown_scheme_lists_installed_adapters() -> None:
    with pytest.raises(ConfigurationError, match=r"no adapter for URL scheme 'sidekiq'.*async.*inline.*test"):
        config.configure(url="sidekiq://localhost")


def test_known_but_missing_adapter_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "entry_points", lambda group: [])
    with pytest.raises(ConfigurationError, match=r"pip install 'jobadapter\[celery\]'"):
        config.configure(url="celery+redis://127.0.0.1:6379/1")


def test_bad_urls_and_options_are_named() -> None:
    with pytest.raises(ConfigurationError, match="is not an adapter URL"):
        config.configure(url="redis-localhost")
    with pytest.raises(ConfigurationError, match="workers must be a whole number"):
        config.configure(url="async://?workers=zero")
    with pytest.raises(ConfigurationError, match="takes no option"):
        config.configure(url="inline://", colour="blue")
    with pytest.raises(ConfigurationError, match="no adapter is configured as 'reports'"):
        config.adapter("reports")


def test_configure_app_sets_the_global_id_app_name() -> None:
    from jobadapter import locators

    try:
        config.configure(url="inline://", app="shop")
        assert locators.app_name() == "shop"
    finally:
        locators.set_app_name("jobadapter")


def test_the_install_hint_from_a_clone_works_in_a_fresh_venv(tmp_path: Path) -> None:
    """A clone's adapters are not on the package index: the hint's clone command must install
    one into a venv that has only the core, and that venv must then build the adapter."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    root = Path(config.__file__).resolve().parent.parent
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "-e", str(root)], check=True, timeout=300, capture_output=True)
    build = "from jobadapter import config; config.build_adapter('rq+redis://127.0.0.1:1/0'); print('built')"
    refused = subprocess.run([python, "-c", build], capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0
    hint = re.search(r"from this clone: (pip install [^)]*)\)", refused.stderr)
    assert hint is not None, refused.stderr[-2000:]
    command = hint.group(1).split()
    assert command[:2] == ["pip", "install"]
    subprocess.run([*pip, *command[2:]], check=True, timeout=300, capture_output=True)
    built = subprocess.run([python, "-c", build], capture_output=True, text=True, timeout=60)
    assert built.stdout.strip() == "built", built.stderr[-2000:]


@pytest.mark.parametrize(
    ("text", "target", "without_ours"),
    [
        ("huey+sqlite:////tmp/q.db?ours=1", "sqlite:////tmp/q.db?ours=1", "sqlite:////tmp/q.db"),
        ("x+sqlite:///relative.db", "sqlite:///relative.db", "sqlite:///relative.db"),
        (
            "rq+unix:///run/redis.sock?db=2&ours=1",
            "unix:///run/redis.sock?db=2&ours=1",
            "unix:///run/redis.sock?db=2",
        ),
        ("rq+redis://[::1]:6379/0", "redis://[::1]:6379/0", "redis://[::1]:6379/0"),
        (
            "celery+amqp://u:p%40ss@h:5672//?ours=1&heartbeat=",
            "amqp://u:p%40ss@h:5672//?ours=1&heartbeat=",
            "amqp://u:p%40ss@h:5672//?heartbeat=",
        ),
    ],
)
def test_the_transport_url_is_kept_as_written(text: str, target: str, without_ours: str) -> None:
    """File paths, sockets and IPv6 hosts pass through to the backend's client untouched."""
    parsed = AdapterURL.parse(text)
    assert parsed.target == target
    assert parsed.target_without({"ours"}) == without_ours
