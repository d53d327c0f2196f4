"""What the job journal costs, in one run: enqueue and worker throughput with it and without.

    uv run --frozen python benchmarks/journal_overhead.py [--enqueues 2000] [--jobs 300] [--rounds 3]

On RQ (a private redis-server on a free port), three ways: no journal, a
SQLite journal (a file in a temporary folder) and a PostgreSQL journal (a
database ``jobadapter_test_<hex>`` on 127.0.0.1:5432, dropped at the end):

- enqueue: ``--enqueues`` single ``perform_later`` calls, then the journal's
  ``flush()`` (so the writer thread's work, done beside the enqueuing thread
  on the same cores, is inside the time), after one enqueue and flush that are
  not timed (the journal's first write checks its schema and prunes once per
  process); a round runs the three one after the other, then the three drains;
- worker: ``--jobs`` no-op jobs are enqueued first, then ``jobadapter worker``
  (concurrency 1, ``--log-level WARNING``) drains them, with
  ``JOBADAPTER_JOURNAL`` set or not; the time runs from the start of the first
  job to the end of the last, written by the jobs themselves (``_drain.py``),
  so the worker's start-up (its journal's writer process among it) is not
  counted. RQ runs each job in a forked work horse, which hands its rows to the
  worker before it exits, and the worker to its writer process.

Rounds rotate the order of the three, so drift in the machine's load hits
each alike; a ratio is the median of per-round ratios (with journal / without:
1.00 = free). Beside each wall-clock ratio is the CPU ratio: the CPU time
(user + system) of the enqueuing process, or of the worker and its work
horses, per job (less a worker's start-up and exit, measured by a run with
nothing queued). It holds steadier than the wall clock on a busy machine, but
leaves out the database server's own work (PostgreSQL's backend).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from jobadapter.faults.brokers import PrivateRedis, scratch_postgresql

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
POSTGRESQL = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
CHUNK = 500


@contextmanager
def postgresql_url() -> Iterator[str]:
    with scratch_postgresql() as name:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--enqueues", type=int, default=2000)
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    with PrivateRedis(persistent=False) as redis, tempfile.TemporaryDirectory() as folder:
        os.environ["DRAIN_REDIS"] = redis.url  # before _drain is imported: its client connects there
        os.environ["DRAIN_PREFIX"] = f"journal-bench-{uuid.uuid4().hex[:8]}"
        with postgresql_url() as postgresql:
            stores = {"none": None, "sqlite": f"sqlite:///{folder}/journal.db", "postgresql": postgresql}
            return _measure(f"rq+{redis.url}", stores, Path(folder), options)


def _measure(url: str, stores: dict[str, str | None], folder: Path, options: argparse.Namespace) -> int:
    sys.path.insert(0, str(HERE))
    import _drain
    from _drain_jobs import DrainJob
    from redis import Redis

    from jobadapter import config, journal, perform_all_later

    adapter = config.configure(url=url)
    client = Redis.from_url(os.environ["DRAIN_REDIS"])
    enqueue: dict[str, list[float]] = {name: [] for name in stores}
    drain: dict[str, list[float]] = {name: [] for name in stores}
    enqueue_cpu: dict[str, list[float]] = {name: [] for name in stores}
    drain_cpu: dict[str, list[float]] = {name: [] for name in stores}
    names = list(stores)
    for round_number in range(options.rounds):
        order = names[round_number % len(names) :] + names[: round_number % len(names)]
        for name in order:  # the three enqueue runs back to back: a few seconds of the same machine
            store = stores[name]
            active = journal.configure(store) if store is not None else None
            DrainJob.perform_later()  # the schema check and the first prune are not per enqueue
            if active is not None:
                active.flush(timeout=60)
            started, cpu = time.perf_counter(), _cpu(resource.RUSAGE_SELF)
            for _ in range(options.enqueues):
                DrainJob.perform_later()
            if active is not None:
                active.flush(timeout=60)
            enqueue[name].append(time.perf_counter() - started)
            enqueue_cpu[name].append(_cpu(resource.RUSAGE_SELF) - cpu)
            journal.close()
            adapter.purge([_drain.QUEUE])
        for name in order:
            store = stores[name]
            client.delete(_drain.COUNT_KEY, _drain.FIRST_KEY, _drain.LAST_KEY)
            for start in range(0, options.jobs, CHUNK):
                perform_all_later([DrainJob() for _ in range(min(CHUNK, options.jobs - start))])
            cpu = _cpu(resource.RUSAGE_CHILDREN)
            drain[name].append(_drain_once(url, store, options.jobs, client, folder))
            drained = _cpu(resource.RUSAGE_CHILDREN) - cpu
            _run_worker(url, store, 0, folder)  # nothing queued: what start-up and exit cost
            drain_cpu[name].append(drained - (_cpu(resource.RUSAGE_CHILDREN) - cpu - drained))
    config.reset()
    print(f"RQ, {options.rounds} rounds; ratio = with journal / without (median of per-round ratios)")
    print(f"{'':12} {'enqueue':>20} {'wall':>5} {'CPU':>5} {'worker drain':>20} {'wall':>5} {'CPU':>5}")
    for name in names:
        line = f"{name:12} {statistics.median(enqueue[name]) / options.enqueues * 1e3:13.3f} ms/job"
        line += _ratios(name, enqueue, enqueue_cpu)
        line += f" {statistics.median(drain[name]) / options.jobs * 1e3:13.2f} ms/job"
        line += _ratios(name, drain, drain_cpu)
        print(line)
    print(f"({options.enqueues} enqueues and {options.jobs} drained jobs per round)")
    return 0


def _drain_once(url: str, store: str | None, jobs: int, client: object, folder: Path) -> float:
    import _drain
    from redis import Redis

    assert isinstance(client, Redis)
    _run_worker(url, store, jobs, folder)
    first, last = client.get(_drain.FIRST_KEY), client.lpop(_drain.LAST_KEY)
    if first is None or last is None:
        raise RuntimeError("the worker did not run every job")
    return float(last) - float(first)


def _run_worker(url: str, store: str | None, jobs: int, folder: Path) -> None:
    """``jobadapter worker --burst`` until the queue is empty."""
    import _drain

    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "DRAIN_QUEUE": _drain.QUEUE,
        "DRAIN_TARGET": str(jobs),
    }
    environment.pop("JOBADAPTER_JOURNAL", None)
    if store is not None:
        environment["JOBADAPTER_JOURNAL"] = store
    command = [str(BIN / "jobadapter"), "worker", "--url", url, "--app", "_drain_jobs"]
    command += ["--queues", _drain.QUEUE, "--log-level", "WARNING", "--burst"]
    with (folder / "worker.log").open("ab") as log:
        done = subprocess.run(command, env=environment, stdout=log, stderr=log, timeout=120 + jobs * 0.1)
    if done.returncode != 0:
        raise RuntimeError(f"the worker exited with {done.returncode}; see {folder / 'worker.log'}")


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _ratios(name: str, wall: dict[str, list[float]], cpu: dict[str, list[float]]) -> str:
    if name == "none":
        return " " * 12
    return f" {_ratio(wall[name], wall['none']):5.2f} {_ratio(cpu[name], cpu['none']):5.2f}"


def _ratio(ours: list[float], base: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(ours, base, strict=True))


if __name__ == "__main__":
    raise SystemExit(main())
