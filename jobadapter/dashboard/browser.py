"""The dashboard in a real browser: a ``jobadapter dashboard`` process and headless Chromium.

The browser tests and the docs' screenshots both need the dashboard served
the way an operator serves it (the command, uvicorn, HTTP Basic) and a
browser that loads its pages as a person's would. Chromium is the system's
(Debian's ``chromium`` package), driven by Playwright's Python package:
nothing is downloaded. Playwright is a development dependency; it is
imported only when `chromium` is called.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from jobadapter.conformance.harness import stop_with_parent
from jobadapter.dashboard.security import PASSWORD_VARIABLE, USER_VARIABLE

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
"""Without the network-related ones Chromium keeps trying to reach its update and sync
services, which makes it slow on a machine with no way out."""
START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def dashboard_process(
    url: str,
    journal: str | None,
    workdir: Path,
    *,
    user: str = "admin",
    password: str = "dashboard-test",
    prefix: str = "",
) -> Iterator[str]:
    """``jobadapter dashboard`` on a free loopback port; yields its base URL once it answers."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "jobadapter.cli",
        "dashboard",
        "--url",
        url,
        "--bind",
        f"127.0.0.1:{port}",
    ]
    if journal:
        command += ["--journal", journal]
    if prefix:
        command += ["--prefix", prefix]
    environment = {**os.environ, USER_VARIABLE: user, PASSWORD_VARIABLE: password}
    log = workdir / f"dashboard-{port}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, env=environment, stdout=output, stderr=subprocess.STDOUT, preexec_fn=stop_with_parent
        )
    base = f"http://127.0.0.1:{port}{prefix}"
    try:
        _wait_until_answering(base + "/", process, log)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_answering(address: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            urllib.request.urlopen(address, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # 401: it answers, and asks for the password
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"the dashboard did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)


@contextmanager
def chromium() -> Iterator[Browser]:
    """Headless Chromium (a fresh temporary profile, which Playwright makes and removes)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=list(CHROMIUM_FLAGS)
        )
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def visitor(
    browser: Browser, user: str | None = "admin", password: str = "dashboard-test"
) -> Iterator[BrowserContext]:
    """A browser session of its own (no cookies or cached passwords shared with another), that
    answers the dashboard's sign-in with ``user`` and ``password`` (None: it has none)."""
    context = browser.new_context(
        http_credentials=None if user is None else {"username": user, "password": password},
        viewport={"width": 1280, "height": 800},
    )
    try:
        yield context
    finally:
        context.close()
