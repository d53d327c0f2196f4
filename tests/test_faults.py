"""The fault suite: its results render into compat_matrix.md, and it catches what it must."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from jobadapter.faults import hostile
from jobadapter.faults.report import HEADING, render


def _run(label: str, **experiments: dict[str, Any]) -> dict[str, Any]:
    return {"label": label, "slug": label.replace(" / ", "-"), **experiments}


STORM = {"outcome": "passed", "message": "", "jobs": 300, "kills": 15, "lost": 0, "duplicates": 4}
OUTAGE = {"outcome": "failed", "message": "x", "lost": 2, "slowest_call_seconds": 7.5}
HOSTILE = {"outcome": "passed", "message": "", "passed": 17, "total": 17, "imports": 0, "kinds": []}


def test_the_faults_table_shows_each_experiment_per_adapter() -> None:
    table = render(
        [
            _run("rq / redis", storm=STORM, outage=OUTAGE, hostile=HOSTILE),
            _run("async / in-process", storm={"outcome": "unsupported", "message": "no worker"}),
        ]
    )
    assert table.startswith(HEADING)
    assert "| experiment | rq / redis | async / in-process |" in table
    assert "| ✅ 0 / 4 (300, 15) | ➖ |" in table
    assert "| ❌ 2 lost, slowest call 7.5 s | ⚪ |" in table
    assert "| ✅ 17/17 (0) | ⚪ |" in table


def _matrix(tmp_path: Path, *arguments: str) -> str:
    completed = subprocess.run(
        [sys.executable, "-m", "jobadapter.cli", "matrix", *arguments],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    return completed.stdout


def test_matrix_update_rewrites_only_the_sections_it_has_results_for(tmp_path: Path) -> None:
    matrix = tmp_path / "compat_matrix.md"
    matrix.write_text("# Compatibility matrix\n\nthe scenarios table\n")
    faults = tmp_path / "faults.json"
    faults.write_text(
        json.dumps({"jobadapter_faults": 1, "runs": [_run("rq / redis", storm=STORM, hostile=HOSTILE)]})
    )
    _matrix(tmp_path, "--update", str(matrix), str(faults))
    first = matrix.read_text()
    assert first.startswith("# Compatibility matrix\n\nthe scenarios table\n\n## Faults\n")
    assert "✅ 0 / 4 (300, 15)" in first

    faults.write_text(
        json.dumps(
            {"jobadapter_faults": 1, "runs": [_run("rq / redis", storm=STORM | {"lost": 3}, hostile=HOSTILE)]}
        )
    )
    _matrix(tmp_path, "--update", str(matrix), str(faults))
    second = matrix.read_text()
    assert second.count(HEADING) == 1
    assert "✅ 3 / 4 (300, 15)" in second
    assert second.startswith("# Compatibility matrix\n\nthe scenarios table\n\n")


def test_every_envelope_kind_carries_its_marker() -> None:
    """The suite finds a message in the failed store by its marker: each payload must carry it."""
    sent: list[str] = []

    class Recorder:
        def enqueue_payload(self, payload: str, queue_name: str) -> None:
            sent.append(payload)

    kinds = hostile.envelope_kinds(Recorder())  # type: ignore[arg-type]
    for kind in kinds:
        kind.send("q", f"marker-{kind.kind}")
    assert len({kind.kind for kind in kinds}) == len(kinds)
    for kind, payload in zip(kinds, sent, strict=True):
        assert f"marker-{kind.kind}" in payload, kind.kind


def test_nothing_but_a_payload_can_import_the_canary() -> None:
    """Adapters and workers import the suite's modules; none of them may set the canary off."""
    modules = "jobadapter.cli, jobadapter.faults.hostile, jobadapter.faults.report, jobadapter.faults.jobs"
    code = f"import sys, {modules}; print('jobadapter.faults.canary' in sys.modules)"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "False"
