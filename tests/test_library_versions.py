"""The "Library versions" section of compat_matrix.md (``nox -s compat``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from jobadapter.conformance.versions import HEADING, render


def _run(rq: str, **outcomes: str) -> dict[str, Any]:
    return {
        "adapter": "rq",
        "transport": "redis",
        "label": "rq / redis",
        "date": "2026-11-29",
        "versions": {"jobadapter": "0.1.0", "rq": rq, "redis": "8.1.0"},
        "scenarios": {name: {"outcome": outcome, "feature": "core"} for name, outcome in outcomes.items()},
    }


def test_each_library_version_is_a_row_with_its_result_oldest_first() -> None:
    text = render(
        [
            _run("3.0.0", test_a="passed", test_b="passed", test_c="unsupported"),
            _run("2.12.0", test_a="passed", test_b="failed", test_c="unsupported"),
        ]
    )
    rows = [line for line in text.splitlines() if line.startswith("| rq |")]
    assert rows == [
        "| rq | 2.12.0 | rq / redis | ❌ 1 failed (test_b), 1 passed, 1 unsupported "
        "| redis 8.1.0 | 2026-11-29 |",
        "| rq | 3.0.0 | rq / redis | ✅ 2 passed, 1 unsupported | redis 8.1.0 | 2026-11-29 |",
    ]


def test_a_run_without_scenarios_is_not_a_pass() -> None:
    assert "❌ no scenario ran" in render([_run("3.0.0")])


def test_matrix_update_puts_the_section_after_the_scenarios_and_keeps_the_others(tmp_path: Path) -> None:
    matrix = tmp_path / "compat_matrix.md"
    matrix.write_text("# Compatibility matrix\n\nthe scenarios table\n\n## Faults\n\nthe faults table\n")
    results = tmp_path / "compat.json"
    for version in ("3.0.0", "3.1.0"):
        results.write_text(json.dumps({"jobadapter_compat": 1, "runs": [_run(version, test_a="passed")]}))
        subprocess.run(
            [sys.executable, "-m", "jobadapter.cli", "matrix", "--update", str(matrix), str(results)],
            check=True,
            cwd=tmp_path,
        )
    text = matrix.read_text()
    assert text.count(HEADING) == 1
    assert "| rq | 3.1.0 |" in text and "| rq | 3.0.0 |" not in text  # rewritten, not appended
    before, _, after = text.partition(HEADING)
    assert before == "# Compatibility matrix\n\nthe scenarios table\n\n"
    assert after.rstrip().endswith("## Faults\n\nthe faults table")
