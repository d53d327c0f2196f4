"""Brokers the fault suite may break: a private redis-server, and a TCP proxy it can cut.

The shared services on a machine are never stopped: other test runs use them.
A broker outage is made on a broker of the suite's own instead:

- `PrivateRedis`: a ``redis-server`` on a free port, in a folder of its own,
  with an append-only file fsynced on every write, so a SIGKILL loses nothing
  that Redis acknowledged. ``kill()`` and ``start()`` make the outage.
- `TcpProxy`: a port that forwards to a real broker (RabbitMQ). ``cut()`` drops
  every connection through it and refuses new ones, as a dead broker or a
  broken network would; ``restore()`` accepts again.

`with_address` points an adapter URL at either. `scratch_postgresql` is a
database of its own on the shared PostgreSQL server, dropped at the end.

What the project's tests use on the shared servers is named here, each movable
with one environment variable (README, *What the tests use on the shared
servers*): `shared_redis_db` (three Redis databases from
``JOBADAPTER_TEST_REDIS_DB``, default 6), `shared_amqp` (a RabbitMQ virtual
host, ``JOBADAPTER_TEST_AMQP_VHOST``, default ``/``) and `SHARED_POSTGRESQL`
(``JOBADAPTER_TEST_POSTGRESQL``, the server where scratch databases are made).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

REDIS_DB_VARIABLE = "JOBADAPTER_TEST_REDIS_DB"
AMQP_VHOST_VARIABLE = "JOBADAPTER_TEST_AMQP_VHOST"
POSTGRESQL_VARIABLE = "JOBADAPTER_TEST_POSTGRESQL"
SHARED_POSTGRESQL = os.environ.get(
    POSTGRESQL_VARIABLE, "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
)
"""The shared PostgreSQL server's admin connection (libpq key=value or URL)."""


def shared_redis_db(index: int) -> str:
    """``redis://127.0.0.1:6379/<N>``: the ``index``-th (0, 1 or 2) of the three databases the
    tests may use on the shared Redis, from ``JOBADAPTER_TEST_REDIS_DB`` (default 6: 6, 7, 8)."""
    if index not in (0, 1, 2):
        raise ValueError(f"the tests claim three shared Redis databases, not database #{index}")
    return f"redis://127.0.0.1:6379/{int(os.environ.get(REDIS_DB_VARIABLE, '6')) + index}"


def shared_amqp(scheme: str | None = None) -> str:
    """The shared RabbitMQ as ``<scheme>+amqp://…`` (or plain ``amqp://…``), in the virtual host
    ``JOBADAPTER_TEST_AMQP_VHOST`` (default ``/``, written as each library's URLs write it)."""
    vhost = os.environ.get(AMQP_VHOST_VARIABLE, "/")
    base = "amqp://guest:guest@127.0.0.1:5672"
    if vhost == "/" and scheme is not None:  # as each adapter's documented URLs write it
        url = base if scheme == "dramatiq" else f"{base}//"
    else:  # a plain AMQP URL, read by kombu and pika alike
        url = f"{base}/{quote(vhost, safe='')}"
    return f"{scheme}+{url}" if scheme else url


def create_databases(names: list[str]) -> None:
    """Create these databases on the shared PostgreSQL server (psycopg, the
    ``journal-postgresql`` extra, must be installed)."""
    import psycopg

    with psycopg.connect(SHARED_POSTGRESQL, autocommit=True) as connection:
        for name in names:
            connection.execute(f'CREATE DATABASE "{name}"')


def drop_databases(names: list[str]) -> None:
    """Drop these databases from the shared PostgreSQL server, with their connections."""
    import psycopg

    with psycopg.connect(SHARED_POSTGRESQL, autocommit=True) as connection:
        for name in names:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgresql_settings(database: str) -> dict[str, str]:
    """Host, port, user and ``dbname`` for a connection to ``database`` on the shared server."""
    from psycopg.conninfo import conninfo_to_dict

    settings = {key: str(value) for key, value in conninfo_to_dict(SHARED_POSTGRESQL).items()}
    return {**settings, "dbname": database}


@contextlib.contextmanager
def scratch_postgresql(prefix: str = "jobadapter_test") -> Iterator[str]:
    """The name of a fresh database ``<prefix>_<hex>`` on the shared PostgreSQL server,
    dropped with its connections at the end (the only databases the tests and benchmarks
    create there)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    create_databases([name])
    try:
        yield name
    finally:
        drop_databases([name])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def with_address(url: str, port: int, host: str = "127.0.0.1") -> str:
    """``url`` with its host and port replaced (credentials, path and query kept)."""
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@{host}:{port}" if credentials else f"{host}:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


class PrivateRedis:
    """A redis-server of the caller's own, persistent across ``kill()``/``start()``."""

    def __init__(self, *, persistent: bool = True) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed: the fault suite needs a private one")
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="jobadapter-redis-"))
        self.persistent = persistent
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else []
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.folder),
                "--save",
                "",
                *(persistence or ["--appendonly", "no"]),
                "--logfile",
                str(self.folder / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the private redis-server on port {self.port} did not start")
            time.sleep(0.02)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL the server: an outage that loses only what was not yet acknowledged."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    down = kill
    up = start

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> PrivateRedis:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``upstream``, until cut."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = free_port()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        self._thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._thread.start()

    def cut(self) -> None:
        """Close the listening socket and every forwarded connection (connection reset)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        if self._thread is not None:
            self._thread.join(timeout=2)
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for each in sockets:
            # shutdown() wakes the pump blocked in recv() on it (close() alone would not).
            with contextlib.suppress(OSError):
                each.shutdown(socket.SHUT_RDWR)
            each.close()

    restore = up = start
    close = down = cut

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    server.close()
                    return
                self._sockets |= {client, server}
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                target.shutdown(socket.SHUT_WR)

    def __enter__(self) -> TcpProxy:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cut()
