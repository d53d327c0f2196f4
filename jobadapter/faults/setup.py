"""Where a fault experiment runs: the adapter URL under test, moved onto a broker it may break.

A Redis URL is pointed at a private redis-server (`PrivateRedis`), so an
experiment can kill its broker and never sees another run's keys. An AMQP URL
goes through a `TcpProxy` to the shared RabbitMQ, which is then cut instead of
stopped; queue names private to the run keep runs apart. Any other transport
runs as given, and cannot have an outage.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import NamedTuple, Protocol
from urllib.parse import urlsplit

from jobadapter.adapters.base import AdapterURL
from jobadapter.conformance.harness import APP_MODULE, Backend
from jobadapter.conformance.probe import Probe
from jobadapter.faults import CANARY_VARIABLE
from jobadapter.faults.brokers import PrivateRedis, TcpProxy, with_address

FAULT_APP = "jobadapter.faults.jobs"


class Breakable(Protocol):
    """A broker an experiment can take down and bring back."""

    def down(self) -> None: ...

    def up(self) -> None: ...


class Stage(NamedTuple):
    backend: Backend
    broker: Breakable | None
    """None where the transport cannot be broken here (no outage experiment)."""
    canary: Path


REDIS_TRANSPORTS = ("redis", "rediss")


@contextmanager
def stage(url: str, workdir: Path, timeout: float = 20.0, *, persistent: bool = False) -> Iterator[Stage]:
    """A `Backend` for ``url`` on a breakable broker, with the import canary armed.

    ``persistent`` makes a private Redis fsync every write (the outage
    experiment needs it; the others run faster without).
    """
    parsed = AdapterURL.parse(url)
    canary = workdir / "canary.log"
    with ExitStack() as stack:
        broker: Breakable | None = None
        if parsed.transport in REDIS_TRANSPORTS:
            redis = stack.enter_context(PrivateRedis(persistent=persistent))
            url = with_address(url, redis.port)
            broker = redis
        elif parsed.transport == "amqp":
            target = urlsplit(parsed.target)
            proxy = stack.enter_context(TcpProxy(target.hostname or "127.0.0.1", target.port or 5672))
            url = with_address(url, proxy.port)
            broker = proxy
        os.environ[CANARY_VARIABLE] = str(canary)  # this process too: the adapter reads payloads
        probe = Probe(workdir / "probe.sqlite")
        stack.callback(probe.close)
        backend = Backend(
            url,
            probe,
            workdir,
            timeout,
            apps=(APP_MODULE, FAULT_APP),
            environment={CANARY_VARIABLE: str(canary)},
        )
        stack.callback(backend.close)
        yield Stage(backend, broker, canary)


def canary_imports(stage: Stage) -> list[str]:
    """The import canary's records: each is a process that imported a name from a payload."""
    try:
        return stage.canary.read_text().splitlines()
    except FileNotFoundError:
        return []
