"""Worker side against native, in one run: drain time and enqueue-to-start latency.

    uv run --frozen python benchmarks/worker_drain.py [--jobs 5000] [--rounds 3] [--pings 200]
        [--backends rq,celery-amqp,celery-redis,dramatiq-amqp,dramatiq-redis] [--log-level INFO]

For each backend, ``jobadapter worker`` (a real subprocess) against the
backend's own worker (``rq worker`` / ``rq worker-pool``, ``celery worker``,
``dramatiq``) running a native no-op task, on the same broker:

- drain: ``--jobs`` no-op jobs are enqueued first, then ONE worker process is
  started, at concurrency 1 and at concurrency 4; the time runs from the start
  of the first job to the end of the last, both written by the jobs themselves
  (see ``_drain.py``), so a worker's start-up is not counted and both sides are
  timed alike;
- latency: on an idle worker at concurrency 1, ``--pings`` jobs are sent one at
  a time; each records when it started; p50 and p99 of start minus send.

With each drain, the CPU time the worker's processes used meanwhile (user +
system, from ``/proc``, forked children included): on a shared machine it
moves much less than wall time. ``--log-level`` is passed to ``jobadapter
worker`` (its default, INFO, writes two lines per job; the native workers run
at their own defaults).

Celery is compared with two native apps: Celery's defaults, and the app that
jobadapter's adapter builds (its settings: late acks, started state, result
backend on Redis), so the cost of the settings shows apart from the code's.

Rounds rotate which side goes first, so drift in the machine's load hits
every side alike; a ratio is the median of the per-round ratios (jobadapter
time / native time: 1.00 = parity). Keys live in Redis DB 12 and are deleted
after each backend (only keys that did not exist before the run); RabbitMQ
queues are named ``bench-<random>-…`` and deleted after.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PREFIX = f"bench-{uuid.uuid4().hex[:8]}"
os.environ["DRAIN_PREFIX"] = PREFIX  # before _drain is imported: it names its keys after it
REDIS = "redis://127.0.0.1:6379/12"
AMQP = "amqp://guest:guest@127.0.0.1:5672//"
HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
CONCURRENCIES = (1, 4)
CHUNK = 500
"""Jobs per bulk publish while pre-filling a queue (untimed)."""

import _drain  # noqa: E402  (after DRAIN_PREFIX is set)
from _drain_jobs import DrainJob, PingJob  # noqa: E402
from redis import Redis  # noqa: E402

from jobadapter import config, perform_all_later  # noqa: E402

SendFunction = Callable[[str, int], None]
"""``send(kind, count)``: publish ``count`` jobs of ``kind`` ("drain" or "ping")."""


@dataclass
class Side:
    """One worker and the way to feed it: jobadapter's, or a native one."""

    label: str
    queue: str
    command: Callable[[int], list[str]]
    send: SendFunction
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Backend:
    """jobadapter (the first side) and its native counterparts on one broker."""

    name: str
    sides: list[Side]
    close: Callable[[], None]
    rabbitmq_queues: list[str] = field(default_factory=list)


def _queue(label: str) -> str:
    return f"{PREFIX}-{label}"


def _jobadapter_side(url: str, log_level: str) -> tuple[Side, Callable[[], None]]:
    adapter = config.build_adapter(url)
    queue = _queue("ja")

    def send(kind: str, count: int) -> None:
        job_class = DrainJob if kind == "drain" else PingJob
        with config.override(adapter):
            if count == 1:
                job_class.set(queue=queue).perform_later()
                return
            for start in range(0, count, CHUNK):
                jobs = [job_class() for _ in range(min(CHUNK, count - start))]
                for job in jobs:
                    job.queue_name = queue
                perform_all_later(jobs)

    def command(concurrency: int) -> list[str]:
        arguments = ["--url", url, "--app", "_drain_jobs", "--queues", queue, "--log-level", log_level]
        return [str(BIN / "jobadapter"), "worker", *arguments, "--concurrency", str(concurrency)]

    return Side("jobadapter", queue, command, send), adapter.close


def rq_backend(log_level: str) -> Backend:
    from rq import Queue
    from rq.serializers import JSONSerializer

    ours, close = _jobadapter_side(f"rq+{REDIS}", log_level)
    connection = Redis.from_url(REDIS)
    queue = Queue(_queue("native"), connection=connection, serializer=JSONSerializer)

    def send(kind: str, count: int) -> None:
        function = f"_drain.native_{kind}"
        if count == 1:
            queue.enqueue(function)
            return
        for start in range(0, count, CHUNK):
            queue.enqueue_many([Queue.prepare_data(function) for _ in range(min(CHUNK, count - start))])

    def command(concurrency: int) -> list[str]:
        if concurrency == 1:
            return [str(BIN / "rq"), "worker", "--url", REDIS, "-S", "json", "-c", "_drain", queue.name]
        return [
            str(BIN / "rq"),
            "worker-pool",
            "-n",
            str(concurrency),
            "--url",
            REDIS,
            "-S",
            "json",
            "-c",
            "_drain",
            queue.name,
        ]

    def close_all() -> None:
        close()
        connection.close()

    return Backend("rq", [ours, Side("native", queue.name, command, send)], close_all)


def celery_backend(transport: str, log_level: str) -> Backend:
    from _native_celery import make_app

    broker = AMQP if transport == "amqp" else REDIS
    ours, close = _jobadapter_side(f"celery+{broker}", log_level)
    sides = [ours]
    apps = []
    for settings in ("defaults", "jobadapter"):
        app = make_app(broker, settings)
        apps.append(app)
        label = f"native-{settings}"
        queue = _queue(label)

        def send(kind: str, count: int, app: Any = app, queue: str = queue) -> None:
            with app.producer_or_acquire() as producer:
                for _ in range(count):
                    app.send_task(f"bench.{kind}", queue=queue, producer=producer)

        def command(concurrency: int, queue: str = queue, settings: str = settings) -> list[str]:
            fair = ["-O", "fair"] if settings == "jobadapter" else []
            arguments = ["-Q", queue, "-c", str(concurrency), "-P", "prefork", "-n", f"{queue}@%h", *fair]
            quiet = ["--without-mingle", "--without-gossip"]  # no chatter with other workers on the broker
            return [str(BIN / "celery"), "-A", "_native_celery", "worker", *arguments, *quiet]

        sides.append(
            Side(
                f"native ({settings})",
                queue,
                command,
                send,
                {"DRAIN_BROKER": broker, "DRAIN_SETTINGS": settings},
            )
        )

    def close_all() -> None:
        close()
        for app in apps:
            app.close()

    queues = [side.queue for side in sides] if transport == "amqp" else []
    return Backend(f"celery-{transport}", sides, close_all, queues)


def dramatiq_backend(transport: str, log_level: str) -> Backend:
    from _native_dramatiq import make_broker
    from dramatiq import Message

    url = AMQP.rstrip("/") if transport == "amqp" else REDIS
    ours, close = _jobadapter_side(f"dramatiq+{url}", log_level)
    queue = _queue("native")
    broker = make_broker(url)
    broker.declare_queue(queue)

    def send(kind: str, count: int) -> None:
        for _ in range(count):
            broker.enqueue(
                Message(queue_name=queue, actor_name=f"bench_{kind}", args=(), kwargs={}, options={})
            )

    def command(concurrency: int) -> list[str]:
        arguments = ["--processes", "1", "--threads", str(concurrency), "--queues", queue]
        return [str(BIN / "dramatiq"), "_native_dramatiq", *arguments]

    def close_all() -> None:
        close()
        broker.close()

    native = Side("native", queue, command, send, {"DRAIN_BROKER": url})
    queues = [f"{name}{suffix}" for name in (ours.queue, queue) for suffix in ("", ".DQ", ".XQ")]
    return Backend(f"dramatiq-{transport}", [ours, native], close_all, queues if transport == "amqp" else [])


BACKENDS: dict[str, Callable[[str], Backend]] = {
    "rq": rq_backend,
    "celery-amqp": lambda log_level: celery_backend("amqp", log_level),
    "celery-redis": lambda log_level: celery_backend("redis", log_level),
    "dramatiq-amqp": lambda log_level: dramatiq_backend("amqp", log_level),
    "dramatiq-redis": lambda log_level: dramatiq_backend("redis", log_level),
}
"""Each makes a backend's sides; its argument is ``jobadapter worker --log-level``."""


class Run:
    """Starts and stops worker subprocesses and reads the jobs' trace in Redis."""

    def __init__(self, redis: Redis, logs: Path) -> None:
        self.redis = redis
        self.logs = logs

    @contextmanager
    def worker(self, side: Side, concurrency: int, target: int) -> Iterator[subprocess.Popen[bytes]]:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
            "DRAIN_REDIS": REDIS,
            "DRAIN_QUEUE": side.queue,
            "DRAIN_TARGET": str(target),
            **side.env,
        }
        log = self.logs / f"{side.queue}-c{concurrency}.log"
        with log.open("ab") as output:
            process = subprocess.Popen(side.command(concurrency), env=env, stdout=output, stderr=output)
        try:
            yield process
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def reset(self) -> None:
        self.redis.delete(_drain.COUNT_KEY, _drain.FIRST_KEY, _drain.LAST_KEY, _drain.STARTED_KEY)

    def pop(self, key: str, process: subprocess.Popen[bytes], timeout: float) -> float:
        """The time a job pushed to ``key``, waiting for it while the worker lives."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.redis.blpop([key], timeout=1)
            if found is not None:
                return float(found[1])
            if process.poll() is not None:
                raise RuntimeError(f"the worker exited ({process.returncode}); see {self.logs}")
        raise RuntimeError(f"no job finished within {timeout:.0f} s; see {self.logs}")

    def drain(self, side: Side, concurrency: int, jobs: int) -> tuple[float, float]:
        """Seconds from the start of the first of ``jobs`` pre-filled jobs to the end of the last,
        and the CPU seconds the worker's processes used meanwhile (from the driver's view: from
        when it saw the first job started, to when it saw the last one finished)."""
        self.reset()
        side.send("drain", jobs)
        with self.worker(side, concurrency, jobs) as process:
            while self.redis.get(_drain.FIRST_KEY) is None and process.poll() is None:
                time.sleep(0.005)
            cpu = _tree_cpu(process.pid)
            last = self.pop(_drain.LAST_KEY, process, timeout=60 + jobs * 0.05)
            cpu = _tree_cpu(process.pid) - cpu
        first = self.redis.get(_drain.FIRST_KEY)
        assert first is not None
        return last - float(first), cpu

    def latencies(self, side: Side, pings: int) -> list[float]:
        """Seconds from send to start, one ping at a time, on an idle worker."""
        self.reset()
        found = []
        with self.worker(side, 1, 0) as process:
            for number in range(pings + 3):  # the first three warm the worker up
                sent = time.time()
                side.send("ping", 1)
                started = self.pop(_drain.STARTED_KEY, process, timeout=60)
                if number >= 3:
                    found.append(started - sent)
                time.sleep(0.02)
        return found


def _tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used by process ``pid`` and its descendants, living or
    reaped (Linux ``/proc``): CPU time is far less disturbed than wall time by whatever else
    the machine runs."""
    total = 0
    pending = [pid]
    while pending:
        process = pending.pop()
        try:
            fields = Path(f"/proc/{process}/stat").read_text().rpartition(")")[2].split()
            total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
            for task in Path(f"/proc/{process}/task").iterdir():
                pending += [int(child) for child in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total / os.sysconf("SC_CLK_TCK")


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def measure(backend: Backend, run: Run, jobs: int, rounds: int, pings: int) -> None:
    """Run every side of ``backend`` and print its drain ratios and latencies."""
    sides = backend.sides
    drains: dict[tuple[str, int], list[float]] = {
        (side.label, c): [] for side in sides for c in CONCURRENCIES
    }
    cpu: dict[tuple[str, int], list[float]] = {(side.label, c): [] for side in sides for c in CONCURRENCIES}
    latency: dict[str, list[float]] = {side.label: [] for side in sides}
    for round_number in range(rounds):
        order = sides[round_number % len(sides) :] + sides[: round_number % len(sides)]
        for concurrency in CONCURRENCIES:
            for side in order:
                elapsed, used = run.drain(side, concurrency, jobs)
                drains[side.label, concurrency].append(elapsed)
                cpu[side.label, concurrency].append(used)
        if pings:
            for side in order:
                latency[side.label] += run.latencies(side, pings)
    ours = sides[0].label
    print(f"\n{backend.name}: {jobs:,} jobs, median of {rounds} round(s)")
    for concurrency in CONCURRENCIES:
        for side in sides:
            times = drains[side.label, concurrency]
            line = f"  c={concurrency} {side.label:22} {statistics.median(times):7.2f} s"
            each = " ".join(f"{t:.2f}" for t in times)
            line += f" ({jobs / statistics.median(times):6.0f} jobs/s; rounds {each})"
            if side.label != ours:
                ratios = [a / b for a, b in zip(drains[ours, concurrency], times, strict=True)]
                line += f"  ratio {statistics.median(ratios):.2f} ({' '.join(f'{r:.2f}' for r in ratios)})"
            print(line)
            used = cpu[side.label, concurrency]
            line = f"        CPU {statistics.median(used) / jobs * 1e6:5.0f} µs/job"
            if side.label != ours:
                ratios = [a / b for a, b in zip(cpu[ours, concurrency], used, strict=True) if b]
                line += f"  CPU ratio {statistics.median(ratios):.2f}" if ratios else ""
            print(line)
    if pings:
        for side in sides:
            values = latency[side.label]
            print(
                f"  latency {side.label:22} p50 {_percentile(values, 0.5) * 1000:6.2f} ms"
                f"  p99 {_percentile(values, 0.99) * 1000:6.2f} ms  ({len(values)} pings)"
            )


def _delete_rabbitmq_queues(names: list[str]) -> None:
    from kombu.connection import Connection

    with Connection(AMQP) as connection:  # type: ignore[no-untyped-call]
        channel = connection.default_channel
        for name in names:
            channel.queue_delete(name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=5000, help="jobs per drain (default 5000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (median; default 3)")
    parser.add_argument("--pings", type=int, default=200, help="latency pings per side and round (0: none)")
    parser.add_argument(
        "--backends", default=",".join(BACKENDS), help="comma-separated, of: " + ", ".join(BACKENDS)
    )
    parser.add_argument("--log-level", default="INFO", help="jobadapter worker's --log-level (default INFO)")
    options = parser.parse_args()
    redis = Redis.from_url(REDIS)
    before = set(redis.keys("*"))
    with tempfile.TemporaryDirectory(prefix=f"{PREFIX}-") as logs:
        run = Run(redis, Path(logs))
        for name in options.backends.split(","):
            backend = BACKENDS[name](options.log_level)
            try:
                measure(backend, run, options.jobs, options.rounds, options.pings)
            finally:
                backend.close()
                if backend.rabbitmq_queues:
                    _delete_rabbitmq_queues(backend.rabbitmq_queues)
                created = set(redis.keys("*")) - before
                if created:
                    redis.delete(*created)
    redis.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
