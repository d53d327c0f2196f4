"""The quickstart's "same jobs on a real backend" works as its docstring writes it, and a
job class the running script defines (``__main__``) is refused before it reaches a broker
whose workers could never import it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from jobadapter.faults.brokers import PrivateRedis

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
BIN = Path(sys.executable).parent


def test_the_quickstart_runs_on_rq_with_a_worker_started_as_documented(tmp_path: Path) -> None:
    log_path = tmp_path / "worker.log"
    with PrivateRedis(persistent=False) as redis:
        environment = {**os.environ, "JOBADAPTER_URL": f"rq+{redis.url}"}
        environment.pop("JOBADAPTER_JOURNAL", None)
        with log_path.open("wb") as log:
            worker = subprocess.Popen(
                [str(BIN / "jobadapter"), "worker", "--app", "quickstart_jobs"],
                cwd=EXAMPLES,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            command = [sys.executable, "quickstart.py"]
            enqueued = subprocess.run(command, cwd=EXAMPLES, env=environment, capture_output=True, timeout=60)
            assert enqueued.returncode == 0, enqueued.stderr.decode()[-2000:]
            expected = (
                "welcome mail for user 7 (fr)",
                "welcome mail for user 8 (en)",
                "invoice 42 synced on attempt 2",
                "Discarded SyncInvoice",
            )
            deadline = time.monotonic() + 30
            while not all(line in log_path.read_text() for line in expected):
                assert worker.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, f"missing lines; the worker said:\n{log_path.read_text()}"
                time.sleep(0.1)
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(30)
    output = log_path.read_text()
    assert "Queues: default, mailers" in output and "RQ worker ready" in output
    assert "UnknownJobError" not in output


SCRIPT = """
    from jobadapter import EnqueueError, Job, config
    from jobadapter.errors import ConfigurationError

    class Report(Job):
        {name}
        def perform(self) -> None:
            pass

    config.configure(url="rq+redis://127.0.0.1:1/0")  # nothing listens: a publish fails
    try:
        Report.perform_later()
    except ConfigurationError as error:
        print("refused:", error)
    except EnqueueError:
        print("published")
"""


def _run_script(name: str) -> str:
    script = textwrap.dedent(SCRIPT).format(name=name)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_a_job_class_of_the_running_script_is_refused_with_what_to_do() -> None:
    said = _run_script("pass")
    assert said.startswith("refused:"), said
    assert "'__main__.Report'" in said and "--app" in said and "job_name" in said


def test_an_explicit_job_name_lets_a_script_enqueue_its_own_class() -> None:
    assert _run_script("job_name = 'reports.Report'").strip() == "published"
