"""What the CLI shows a person: aligned tables, a progress bar, a confirmation prompt.

Plain text with no dependency: the core installs nothing, and an operator
reading ``jobadapter jobs`` over SSH needs columns, not colours. Scripts use
``--json`` instead of parsing these.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TextIO

WIDEST_CELL = 48
"""Longer cells (arguments, error messages) are cut, with an ellipsis."""


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], stream: TextIO | None = None) -> None:
    """Print ``rows`` under ``headers``, columns aligned; numbers right-aligned."""
    out = stream or sys.stdout
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [len(header) for header in headers]
    for row in cells:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    numeric = [bool(rows) and all(isinstance(row[i], int) for row in rows) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        parts = [
            value.rjust(width) if right else value.ljust(width)
            for value, width, right in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    print(line(list(headers)), file=out)
    for row in cells:
        print(line(row), file=out)


def _cell(value: object) -> str:
    text = "-" if value is None else str(value)
    text = " ".join(text.split())
    return text if len(text) <= WIDEST_CELL else text[: WIDEST_CELL - 1] + "…"


class Progress:
    """A one-line progress bar on stderr with the count and the rate, redrawn in place; silent
    when stderr is not a terminal."""

    def __init__(self, total: int, action: str, stream: TextIO | None = None) -> None:
        self.total = total
        self.action = action
        self.done = 0
        self.stream = stream or sys.stderr
        self.shown = self.stream.isatty()
        self.started = time.monotonic()

    def advance(self, count: int) -> None:
        self.done += count
        if self.shown:
            elapsed = time.monotonic() - self.started
            rate = f"  {self.done / elapsed:,.0f}/s" if elapsed > 0 else ""
            # A total of 0: not known beforehand, so the count and the rate alone.
            counted = bar(self.action, self.done, self.total) if self.total else f"{self.action} {self.done}"
            self.stream.write(f"\r{counted}{rate}")
            self.stream.flush()

    def close(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()


def bar(action: str, done: int, total: int) -> str:
    """``action [#####-----] done/total``, 30 characters of bar."""
    share = done / total if total else 1.0
    filled = int(30 * min(share, 1.0))
    return f"{action} [{'#' * filled}{'-' * (30 - filled)}] {done}/{total}"


def confirm(question: str, stream: TextIO | None = None) -> bool:
    """Ask ``question`` on the terminal; False unless the answer starts with y."""
    out = stream or sys.stderr
    out.write(f"{question} [y/N] ")
    out.flush()
    answer = sys.stdin.readline()
    return answer.strip().lower().startswith("y")
