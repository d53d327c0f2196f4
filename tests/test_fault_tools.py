"""The fault suite's tools: killing a whole process tree, and brokers it may break."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from redis import Redis

from jobadapter.faults.brokers import PrivateRedis, TcpProxy, with_address
from jobadapter.faults.processes import alive, descendants, kill_tree, wait_gone

# A parent whose child leaves the session (as RQ's work horse does) and forks a grandchild.
ESCAPING_TREE = """
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(60)
    time.sleep(60)
time.sleep(60)
"""


def test_kill_tree_kills_children_that_left_the_process_group() -> None:
    root = subprocess.Popen([sys.executable, "-c", ESCAPING_TREE], start_new_session=True)
    deadline = time.monotonic() + 10
    while len(descendants(root.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    children = descendants(root.pid)
    assert len(children) == 2
    killed = kill_tree(root.pid)
    root.wait()
    assert killed == children | {root.pid}
    assert wait_gone(killed) == set()
    assert not any(alive(pid) for pid in killed)


def test_private_redis_keeps_acknowledged_writes_across_a_kill() -> None:
    with PrivateRedis() as server:
        client = Redis.from_url(server.url)
        client.rpush("jobs", "one", "two")
        server.kill()
        server.start()
        assert client.lrange("jobs", 0, -1) == [b"one", b"two"]
        client.close()


def test_a_cut_proxy_drops_connections_and_refuses_new_ones() -> None:
    with PrivateRedis(persistent=False) as server, TcpProxy("127.0.0.1", server.port) as proxy:
        client = Redis(port=proxy.port, socket_timeout=2)
        assert client.ping()
        proxy.cut()
        with socket.socket() as refused:
            assert refused.connect_ex(("127.0.0.1", proxy.port)) != 0
        proxy.restore()
        assert Redis(port=proxy.port).ping()


def test_with_address_keeps_credentials_path_and_query() -> None:
    assert (
        with_address("celery+amqp://guest:guest@127.0.0.1:5672//?x=1", 7000)
        == "celery+amqp://guest:guest@127.0.0.1:7000//?x=1"
    )
    assert with_address("rq+redis://127.0.0.1:6379/4", 7001) == "rq+redis://127.0.0.1:7001/4"


STARTS_A_WORKER_AND_WAITS = """
import os, sys, time
from pathlib import Path
from jobadapter.conformance.harness import Backend
from jobadapter.conformance.probe import Probe
folder = Path(sys.argv[2])
backend = Backend(sys.argv[1], Probe(folder / "probe.sqlite"), folder)
worker = backend.start_worker([backend.queue("orphan")])
print(worker.process.pid, flush=True)
time.sleep(60)
"""


def test_a_worker_stops_when_the_suite_that_started_it_dies(tmp_path: Path) -> None:
    """A suite killed mid-run (a test timeout) must not leave workers consuming for ever."""
    with PrivateRedis(persistent=False) as server:
        suite = subprocess.Popen(
            [sys.executable, "-c", STARTS_A_WORKER_AND_WAITS, f"rq+{server.url}", str(tmp_path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert suite.stdout is not None
        worker = int(suite.stdout.readline())
        assert alive(worker)
        suite.kill()
        suite.wait()
        assert wait_gone({worker}, timeout=20) == set()


def test_what_the_tests_use_on_the_shared_servers_moves_with_one_variable_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from jobadapter.faults import brokers

    assert brokers.shared_redis_db(0) == "redis://127.0.0.1:6379/6"
    assert brokers.shared_amqp("celery") == "celery+amqp://guest:guest@127.0.0.1:5672//"
    assert brokers.shared_amqp("dramatiq") == "dramatiq+amqp://guest:guest@127.0.0.1:5672"
    monkeypatch.setenv(brokers.REDIS_DB_VARIABLE, "11")
    monkeypatch.setenv(brokers.AMQP_VHOST_VARIABLE, "ci/2")
    assert [brokers.shared_redis_db(n) for n in (0, 1, 2)] == [
        f"redis://127.0.0.1:6379/{n}" for n in (11, 12, 13)
    ]
    assert brokers.shared_amqp("dramatiq") == "dramatiq+amqp://guest:guest@127.0.0.1:5672/ci%2F2"
    assert brokers.shared_amqp() == "amqp://guest:guest@127.0.0.1:5672/ci%2F2"
    with pytest.raises(ValueError, match="three shared Redis databases"):
        brokers.shared_redis_db(3)
