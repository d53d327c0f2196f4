"""The broker outage: the broker dies while jobs are being enqueued, then comes back.

A producer thread calls ``perform_later`` at a steady pace throughout. A third
of the way in, the broker goes down (a private Redis is SIGKILLed; the proxy to
RabbitMQ is cut) for ``seconds``, then comes back (Redis restarts from its
append-only file, fsynced on every write, so it keeps every write it
acknowledged). Measured:

- every call returned or raised `EnqueueError`, each within ``bound`` seconds
  (another exception, or a call that hangs, is a defect);
- every job whose ``perform_later`` returned is performed afterwards (nothing
  acknowledged is lost);
- calls made once the broker is back succeed again (the producer reconnects);
- the worker that lived through the outage runs the waiting jobs, unaided, and
  does not log the outage in a tight loop;
- SIGTERM stops a worker within the harness's bound both during the outage (a
  second worker is stopped then) and after it.
"""

from __future__ import annotations

import threading
import time
from typing import Any, NamedTuple

from jobadapter.adapters.base import Capability
from jobadapter.conformance.harness import STOP_TIMEOUT, WorkerProcess
from jobadapter.errors import EnqueueError
from jobadapter.faults.jobs import ProbeJob
from jobadapter.faults.setup import Stage

LOG_LINES_ALLOWED = 20
"""More log lines than this from one worker during a 5 s outage is a tight loop."""


class Call(NamedTuple):
    label: str
    started: float
    seconds: float
    outcome: str
    """``returned``, ``EnqueueError`` or the name of any other exception."""


def run(stage: Stage, *, calls: int = 150, seconds: float = 5.0, bound: float = 15.0) -> dict[str, Any]:
    """Run the outage; the results entry (``outcome`` passed when every check held).

    The ``calls`` are spread over three times the outage: a third before it,
    a third during, a third after.
    """
    pace = 3 * seconds / calls
    backend = stage.backend
    if Capability.EXTERNAL_WORKER not in backend.capabilities:
        return {"outcome": "unsupported", "message": "the adapter has no separate worker"}
    if stage.broker is None:
        return {"outcome": "unsupported", "message": "the fault suite cannot break this transport"}
    queue = backend.queue("outage")
    survivor = backend.start_worker([queue], concurrency=2)
    stopped_during = backend.start_worker([backend.queue("outage-idle")])
    made: list[Call] = []
    producer = threading.Thread(target=_produce, args=(queue, calls, pace, made), daemon=True)
    problems: list[str] = []
    producer.start()
    time.sleep(calls * pace / 3)
    log_before = _log_lines(survivor)
    went_down = time.monotonic()
    stage.broker.down()
    try:
        time.sleep(min(0.5, seconds / 2))
        stop_during = _stop(stopped_during, problems, "during the outage")
        time.sleep(max(0.0, seconds - (time.monotonic() - went_down)))
    finally:
        stage.broker.up()
    came_back = time.monotonic()
    log_during = _log_lines(survivor) - log_before
    producer.join(timeout=calls * (pace + bound) + 30)
    if producer.is_alive():
        problems.append("a perform_later call never returned")

    slowest = max((call.seconds for call in made), default=0.0)
    if slowest > bound:
        problems.append(f"a perform_later call took {slowest:.1f} s (bound {bound:g} s)")
    other = sorted({call.outcome for call in made} - {"returned", "EnqueueError"})
    if other:
        problems.append(f"perform_later raised {', '.join(other)} instead of EnqueueError")
    returned = [call.label for call in made if call.outcome == "returned"]
    after = [call for call in made if call.started > came_back + 2.0]
    if after and all(call.outcome != "returned" for call in after):
        problems.append("perform_later kept failing after the broker came back")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(backend.probe.count(label) for label in returned):
        if survivor.process.poll() is not None:
            break
        time.sleep(0.1)
    lost = [label for label in returned if not backend.probe.count(label)]
    if survivor.process.poll() is not None:
        problems.append(f"the worker exited ({survivor.process.returncode}) after the outage")
    if lost:
        problems.append(f"{len(lost)} jobs whose perform_later returned never ran")
    if log_during > LOG_LINES_ALLOWED:
        problems.append(f"the worker wrote {log_during} log lines during a {seconds:g} s outage")
    stop_after = _stop(survivor, problems, "after the outage")
    return {
        "outcome": "failed" if problems else "passed",
        "message": "; ".join(problems),
        "outage_seconds": seconds,
        "calls": len(made),
        "returned": len(returned),
        "enqueue_errors": sum(call.outcome == "EnqueueError" for call in made),
        "slowest_call_seconds": round(slowest, 2),
        "lost": len(lost),
        "worker_log_lines_during_outage": log_during,
        "sigterm_during_seconds": stop_during,
        "sigterm_after_seconds": stop_after,
    }


def _produce(queue: str, calls: int, pace: float, made: list[Call]) -> None:
    for number in range(calls):
        label = f"outage-{number}-{time.monotonic_ns()}"
        started = time.monotonic()
        try:
            ProbeJob.set(queue=queue).perform_later(label)
            outcome = "returned"
        except EnqueueError:
            outcome = "EnqueueError"
        except Exception as error:
            outcome = type(error).__name__
        made.append(Call(label, started, time.monotonic() - started, outcome))
        time.sleep(pace)


def _stop(worker: WorkerProcess, problems: list[str], when: str) -> float | None:
    """SIGTERM ``worker``; how long it took to exit (None, and a problem noted, if it hung)."""
    started = time.monotonic()
    try:
        worker.terminate(STOP_TIMEOUT)
    except AssertionError:
        problems.append(f"SIGTERM {when} did not stop the worker within {STOP_TIMEOUT:g} s")
        return None
    return round(time.monotonic() - started, 2)


JOB_LINES = (b"Performing ", b"Performed ", b"Enqueued ")
"""The ActiveJob lines of jobs that were running when the broker went: not about the outage."""


def _log_lines(worker: WorkerProcess) -> int:
    """Lines in the worker's log so far, less the per-job ActiveJob lines."""
    try:
        with worker.log_path.open("rb") as log:
            return sum(1 for line in log if not any(marker in line for marker in JOB_LINES))
    except OSError:
        return 0
