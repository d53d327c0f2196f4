from __future__ import annotations

import json

import pytest

from jobadapter import InvalidEnvelope, Job, UnknownJobError, config, registry
from jobadapter.adapters.test import TestAdapter
from jobadapter.execution import execute

PERFORMED: list[str] = []


class Renamed(Job):
    job_name = "billing.LegacyInvoiceJob"

    def perform(self, note: str) -> None:
        PERFORMED.append(note)


def test_job_name_is_the_registry_key_and_the_wire_name() -> None:
    assert registry.lookup("billing.LegacyInvoiceJob") is Renamed
    envelope = Renamed("x").to_envelope()
    assert envelope.job_class == "billing.LegacyInvoiceJob"
    PERFORMED.clear()
    job = execute(envelope.encode(), TestAdapter())
    assert PERFORMED == ["x"] and isinstance(job, Renamed) and job.outcome == "performed"


def test_unknown_class_is_refused_without_importing_anything() -> None:
    document = json.loads(Renamed("x").to_envelope().encode())
    document["job_class"] = "os.system"
    with pytest.raises(UnknownJobError, match=r"'os\.system' is not registered"):
        execute(json.dumps(document), TestAdapter())


def test_invalid_payload_is_refused_before_any_user_code() -> None:
    with pytest.raises(InvalidEnvelope, match="not JSON"):
        execute(b"\x80garbage", TestAdapter())


def test_retries_go_back_to_the_adapter_that_ran_the_job() -> None:
    from jobadapter import retry_on

    @retry_on(KeyError, wait=0, attempts=2)
    class Retried(Job):
        def perform(self) -> None:
            raise KeyError("again")

    config.configure(url="inline://")
    runner = TestAdapter()
    execute(Retried().to_envelope(), runner)
    (retry,) = runner.enqueued
    assert retry.executions == 1 and retry.exception_executions == {"[builtins.KeyError]": 1}
