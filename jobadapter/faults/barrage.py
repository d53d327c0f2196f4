"""The hostile-message experiment: every kind pushed at a live worker, one at a time.

For each kind (`jobadapter.faults.hostile`), the experiment records where the
message ended, checks that the worker process lived on and that a control job
enqueued right after still runs promptly, and, at the end, that the import
canary was never imported.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from jobadapter.adapters.base import Adapter, Capability
from jobadapter.conformance.harness import WorkerProcess
from jobadapter.faults.hostile import HostileMessage, envelope_kinds
from jobadapter.faults.jobs import ProbeJob
from jobadapter.faults.setup import Stage, canary_imports

MINIMUM_KINDS = 15
"""The fault suite wants at least this many kinds per adapter (envelope and native together)."""


def all_kinds(adapter: Adapter) -> list[HostileMessage]:
    """The envelope kinds (where the adapter publishes raw payloads) and the adapter's own."""
    kinds: list[HostileMessage] = []
    for source in (envelope_kinds, lambda each: list(each.hostile_messages())):
        try:
            kinds += source(adapter)
        except NotImplementedError:
            continue
    return kinds


def run(stage: Stage, *, control_bound: float = 1.0, fate_timeout: float = 15.0) -> dict[str, Any]:
    """Push every kind at one worker, one at a time; the results entry, with a row per kind.

    Per kind: where the message ended (its ``fate``), the reason the failed
    store gives, whether the worker process lived on, and how long a control
    job enqueued right after took to run (at most ``control_bound`` seconds).
    """
    backend = stage.backend
    if Capability.EXTERNAL_WORKER not in backend.capabilities:
        return {"outcome": "unsupported", "message": "the adapter has no separate worker", "kinds": []}
    kinds = all_kinds(backend.adapter)
    if not kinds:
        return {"outcome": "unsupported", "message": "the adapter can publish no raw message", "kinds": []}
    queue = backend.queue("hostile")
    worker = backend.start_worker([queue], concurrency=2)
    rows = []
    try:
        for kind in kinds:
            row = _push(stage, worker, queue, kind, control_bound, fate_timeout)
            rows.append(row)
            if worker.process.poll() is not None:
                worker = backend.start_worker([queue], concurrency=2)
    finally:
        worker.kill_tree()
    imports = canary_imports(stage)
    problems = [f"{row['kind']}: {row['message']}" for row in rows if row["outcome"] != "passed"]
    if len(kinds) < MINIMUM_KINDS:
        problems.append(f"only {len(kinds)} kinds of hostile message (at least {MINIMUM_KINDS} wanted)")
    if imports:
        problems.append(f"the import canary was imported: {imports[:2]}")
    return {
        "outcome": "failed" if problems else "passed",
        "message": "; ".join(problems),
        "passed": sum(row["outcome"] == "passed" for row in rows),
        "total": len(rows),
        "imports": len(imports),
        "kinds": rows,
    }


def _push(
    stage: Stage,
    worker: WorkerProcess,
    queue: str,
    kind: HostileMessage,
    control_bound: float,
    fate_timeout: float,
) -> dict[str, Any]:
    backend = stage.backend
    marker = f"hostile-{kind.kind}-{uuid.uuid4().hex[:8]}"
    problems: list[str] = []
    reason: str | None = None
    try:
        kind.send(queue, marker)
    except Exception as error:
        problems.append(f"could not be sent: {type(error).__name__}: {error}")
    deadline = time.monotonic() + fate_timeout
    fate = None
    while not problems and fate is None and time.monotonic() < deadline:
        if worker.process.poll() is not None:
            break
        if backend.probe.count(marker):
            fate = "performed"
        else:
            reason = _failed_reason(stage, marker, problems)
            fate = "failed" if reason is not None else None
        if fate is None:
            time.sleep(0.1)
    if kind.fate == "dropped" and fate is None and not problems:
        fate = "dropped"
    if fate != kind.fate and not problems:
        problems.append(f"expected {kind.fate}, but it was {fate or 'nowhere'} after {fate_timeout:g} s")
    alive = worker.process.poll() is None
    if not alive:
        problems.append(f"the worker exited with {worker.process.returncode}\n{worker.log_tail(15)}")
    latency = _control_latency(stage, queue, control_bound) if alive else None
    if alive and (latency is None or latency > control_bound):
        shown = "never ran" if latency is None else f"ran after {latency:.2f} s"
        problems.append(f"a control job enqueued after it {shown} (bound {control_bound:g} s)")
    return {
        "kind": kind.kind,
        "description": kind.description,
        "expected": kind.fate,
        "fate": fate,
        "reason": (reason or "")[:300],
        "worker_survived": alive,
        "control_seconds": None if latency is None else round(latency, 3),
        "outcome": "failed" if problems else "passed",
        "message": "; ".join(problems),
    }


def _failed_reason(stage: Stage, marker: str, problems: list[str]) -> str | None:
    """The failed store's reason for the entry carrying ``marker``, or None if there is none."""
    try:
        entries = stage.backend.adapter.failed()
    except Exception as error:
        problems.append(f"failed() raised {type(error).__name__}: {error}")
        return None
    for payload, why in entries:
        if marker in payload or marker in why:
            return why or "(no reason given)"
    return None


def _control_latency(stage: Stage, queue: str, bound: float) -> float | None:
    """Seconds from enqueue to perform of a control job (None if it did not run in 10× ``bound``)."""
    label = f"control-{uuid.uuid4().hex[:10]}"
    started = time.time()
    ProbeJob.set(queue=queue).perform_later(label)
    deadline = time.monotonic() + max(10 * bound, 10.0)
    while time.monotonic() < deadline:
        rows = stage.backend.probe.rows(label, "performed")
        if rows:
            return rows[0].at - started
        time.sleep(0.02)
    return None
