"""``jobadapter dashboard``: serve the web dashboard (`jobadapter.dashboard`) with uvicorn.

``jobadapter dashboard --url rq+redis://… --journal sqlite:///jobs.db --bind 127.0.0.1:8800``.
HTTP Basic is on: the password comes from ``JOBADAPTER_DASHBOARD_PASSWORD``
(the user from ``JOBADAPTER_DASHBOARD_USER``, default ``admin``), and without
one the command refuses to start, unless it binds a loopback address and is
given ``--no-auth``. Starlette, Jinja2 and uvicorn (``jobadapter[dashboard]``)
are imported only here, once the command runs.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket

from jobadapter.cli_operations import URL_VARIABLE
from jobadapter.errors import ConfigurationError

DEFAULT_BIND = "127.0.0.1:8800"


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dashboard = commands.add_parser(
        "dashboard",
        help="serve the web dashboard (queues, jobs, retry, discard, pause)",
        description="Serve the web dashboard. Sign-in: JOBADAPTER_DASHBOARD_USER (default admin) "
        "and JOBADAPTER_DASHBOARD_PASSWORD.",
    )
    dashboard.add_argument("--url", help=f"adapter URL (default: ${URL_VARIABLE})")
    dashboard.add_argument(
        "--journal", metavar="URL", help="the journal's SQLAlchemy URL (default: $JOBADAPTER_JOURNAL)"
    )
    dashboard.add_argument(
        "--bind", default=DEFAULT_BIND, help=f"HOST:PORT to listen on (default {DEFAULT_BIND})"
    )
    dashboard.add_argument(
        "--prefix", default="", help="the path a reverse proxy serves it under, e.g. /ops/jobs (default: /)"
    )
    dashboard.add_argument(
        "--no-auth",
        action="store_true",
        help="no sign-in (only with a loopback --bind, for a dashboard on your own machine)",
    )
    dashboard.add_argument("--log-level", default="info", help="uvicorn's log level (default info)")
    dashboard.set_defaults(command=_dashboard)


def parse_bind(bind: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8800`` for IPv6) → host and port; a clear error otherwise."""
    host, colon, port = bind.rpartition(":")
    host = host.strip("[]")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigurationError(f"--bind must be HOST:PORT, e.g. {DEFAULT_BIND}, not {bind!r}")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or a name that resolves only to loopback ones)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addresses) and all(ipaddress.ip_address(str(address)).is_loopback for address in addresses)


def _dashboard(options: argparse.Namespace) -> int:
    host, port = parse_bind(options.bind)
    if options.no_auth and not is_loopback(host):
        raise ConfigurationError(
            f"--no-auth is refused on {host}: without sign-in the dashboard may only listen on a "
            "loopback address (127.0.0.1 or ::1)"
        )
    url = options.url or os.environ.get(URL_VARIABLE)
    if not url:
        raise ConfigurationError(f"no adapter URL: pass --url or set {URL_VARIABLE}")
    try:
        import uvicorn

        from jobadapter.dashboard import Credentials, create_app
    except ImportError as error:
        raise ConfigurationError(
            f"the dashboard needs its extra: pip install 'jobadapter[dashboard]' ({error})"
        ) from error
    from jobadapter import config, journal

    credentials = None if options.no_auth else Credentials.from_environment()
    if options.journal:
        journal.configure(options.journal)
    adapter = config.build_adapter(url)
    try:
        app = create_app(
            adapter, prefix=options.prefix, credentials=credentials, authentication=not options.no_auth
        )
        where = f"http://{'[' + host + ']' if ':' in host else host}:{port}{options.prefix}"
        shown_journal = journal.active()
        print(
            f"jobadapter dashboard for {adapter.url.redacted} "
            f"(journal: {shown_journal.url if shown_journal else 'none'}) on {where}",
            flush=True,
        )
        uvicorn.run(app, host=host, port=port, log_level=options.log_level.lower(), proxy_headers=True)
    finally:
        adapter.close()
    return 0
