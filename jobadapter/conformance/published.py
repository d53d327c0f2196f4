"""The conformance results the published ``compat_matrix.md`` is built from, kept in the
repository under ``compat/results/`` (one file per adapter / transport), so that a new column
needs one results file, not a rerun of every built-in adapter on every broker.

``jobadapter matrix --add my.json`` files each run of ``my.json`` there (replacing an earlier
run of the same adapter / transport) and regenerates the matrix's conformance section from
the whole folder; ``nox -s conformance`` writes its runs there too.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from jobadapter.conformance.matrix import load_runs
from jobadapter.errors import ConfigurationError

RESULTS_FOLDER = Path("compat") / "results"
MATRIX = Path("compat_matrix.md")


def add(results_file: Path, folder: Path = RESULTS_FOLDER) -> list[Path]:
    """File each run of ``results_file`` in ``folder`` as ``<adapter>-<transport>.json``;
    returns the files written. A file that is not conformance results is refused, naming it."""
    try:
        runs = load_runs([results_file])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigurationError(f"{results_file} is not a conformance results file: {error}") from error
    if not runs:
        raise ConfigurationError(f"{results_file} holds no conformance run")
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for run in runs:
        target = folder / f"{file_name(run)}.json"
        target.write_text(json.dumps({"jobadapter_conformance": 1, "runs": [run]}, indent=2) + "\n")
        written.append(target)
    return written


def results_files(folder: Path = RESULTS_FOLDER) -> list[Path]:
    """The published results, in a stable order (the matrix's columns)."""
    return sorted(folder.glob("*.json"))


def file_name(run: dict[str, Any]) -> str:
    """``run``'s file name in the folder: its label made safe (a results file comes from
    anyone, and its text must not choose where it is written)."""
    label = f"{run.get('adapter', '')}-{run.get('transport', '')}"
    name = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
    if not name:
        raise ConfigurationError("a conformance run names no adapter")
    return name
