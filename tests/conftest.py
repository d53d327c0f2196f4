from __future__ import annotations

from collections.abc import Iterator

import pytest

from jobadapter import config

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def _fresh_configuration() -> Iterator[None]:
    """Each test starts with no adapter configured and leaves none behind."""
    config.reset()
    yield
    config.reset()
