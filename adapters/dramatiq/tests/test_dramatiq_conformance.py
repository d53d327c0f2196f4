"""The whole conformance suite, in a subprocess, on both brokers (as `jobadapter conformance` runs it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from jobadapter_dramatiq.adapter import RabbitmqAdapter, RedisAdapter

from jobadapter.adapters.base import Adapter

URLS = {
    "dramatiq+amqp://guest:guest@127.0.0.1:5672": RabbitmqAdapter,
    "dramatiq+redis://127.0.0.1:6379/9": RedisAdapter,
}


@pytest.mark.timeout(200)
@pytest.mark.parametrize("url", list(URLS))
def test_conformance_suite_passes(url: str, tmp_path: Path) -> None:
    results = tmp_path / "r.json"
    command = [sys.executable, "-m", "jobadapter.cli", "conformance", "--url", url, "--results", str(results)]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert finished.returncode == 0, finished.stdout[-4000:] + finished.stderr[-2000:]
    adapter_class: type[Adapter] = URLS[url]
    declared = {capability.value for capability in adapter_class.capabilities}
    (run,) = json.loads(results.read_text())["runs"]
    for name, scenario in run["scenarios"].items():
        if scenario["outcome"] == "unsupported":
            assert not set(scenario["requires"]) <= declared, (
                f"{name} unsupported but its capability is declared"
            )
        else:
            assert scenario["outcome"] == "passed", f"{name}: {scenario['message']}"
