"""The kill storm: jobs keep flowing while whole worker trees are SIGKILLed and replaced.

Jobs are enqueued in waves, one wave before each kill, so every kill lands
while jobs are waiting, being fetched, running and finishing. A kill takes a
random worker's whole process tree down at once (`kill_tree`: nothing of it
runs after the freeze), checks that no process of it is left, and starts a
replacement. Then the experiment waits for every job to report that it
finished. A job that never does is *lost*; a job that finished more than once
is a *duplicate*, which at-least-once allows and the results show.
"""

from __future__ import annotations

import random
import time
from typing import Any

from jobadapter import perform_all_later
from jobadapter.adapters.base import Capability
from jobadapter.faults.jobs import StormJob
from jobadapter.faults.setup import Stage, canary_imports

WORKERS = 2
CONCURRENCY = 2


def run(
    stage: Stage,
    *,
    jobs: int = 300,
    kills: int = 15,
    interval: float = 2.0,
    settle: float = 120.0,
    seed: int | None = None,
) -> dict[str, Any]:
    """Run the storm; the results entry (``outcome`` passed when nothing was lost)."""
    backend = stage.backend
    if not {Capability.EXTERNAL_WORKER, Capability.AT_LEAST_ONCE} <= backend.capabilities:
        return {"outcome": "unsupported", "message": "the adapter declares no at-least-once worker"}
    chance = random.Random(seed)
    queue = backend.queue("storm")
    run_id = backend.label_for("storm")
    labels = [f"{run_id}-{number}" for number in range(jobs)]
    waves = [labels[index::kills] for index in range(kills)] if kills else [labels]
    workers = [backend.start_worker([queue], CONCURRENCY) for _ in range(WORKERS)]
    survivors: list[int] = []
    started = time.monotonic()
    try:
        for wave in waves:
            perform_all_later([_storm_job(label, chance.randint(20, 80), queue) for label in wave])
            if kills:
                time.sleep(chance.uniform(0.5 * interval, 1.5 * interval))
                victim = chance.randrange(WORKERS)
                survivors += sorted(workers[victim].kill_tree())
                workers[victim] = backend.start_worker([queue], CONCURRENCY, wait=False)
        deadline = time.monotonic() + settle
        while len(_counts(stage, run_id)) < jobs and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        for worker in workers:
            worker.kill_tree()
    performed = _counts(stage, run_id)
    lost = [label for label in labels if performed.get(label, 0) == 0]
    duplicates = sum(count - 1 for count in performed.values() if count > 1)
    imports = canary_imports(stage)
    problems = []
    if lost:
        problems.append(f"{len(lost)} of {jobs} jobs never finished, e.g. {lost[:3]}")
    if survivors:
        problems.append(f"processes {survivors} outlived a kill of their worker tree")
    if imports:
        problems.append(f"the import canary was imported: {imports[:2]}")
    return {
        "outcome": "failed" if problems else "passed",
        "message": "; ".join(problems),
        "jobs": jobs,
        "kills": kills,
        "workers": WORKERS,
        "concurrency": CONCURRENCY,
        "lost": len(lost),
        "duplicates": duplicates,
        "seconds": round(time.monotonic() - started, 1),
    }


def _storm_job(label: str, milliseconds: int, queue: str) -> StormJob:
    job = StormJob(label, milliseconds)
    job.queue_name = queue
    return job


def _counts(stage: Stage, run_id: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in stage.backend.probe.rows(kind="performed"):
        if row.label.startswith(run_id):
            counts[row.label] = counts.get(row.label, 0) + 1
    return counts
