"""The pytest plugin behind the ``jobs`` fixture (entry point ``pytest11``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from jobadapter.testing import JobRecorder, recording


@pytest.fixture
def jobs() -> Iterator[JobRecorder]:
    """Every job enqueued during the test goes to a fresh test adapter, recorded, not run."""
    with recording() as recorder:
        yield recorder
