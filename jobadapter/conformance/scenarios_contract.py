"""Scenarios for the adapter contract's promises that running jobs alone never exercises.

* ``bulk``: ``enqueue_all`` publishes a batch in one round trip or one transaction. The
  adapter counts each batch it published so in ``published_batches``; the scenario reads the
  count (a speed bound would pass a slow one-by-one loop on a fast machine and fail a
  real batch on a loaded one).
* A broker that cannot be reached makes ``perform_later`` raise `EnqueueError` within
  `UNREACHABLE_BOUND` seconds. The suite needs a URL to such a broker:
  ``--jobadapter-unreachable-url`` (the same adapter and transport, a port nobody listens
  on); without one the scenario is reported unsupported.
* A closed adapter refuses jobs with `AdapterClosedError`.
* ``set(adapter_options=…)`` with a key the adapter does not accept is refused, naming it,
  and nothing is published.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from jobadapter import config, perform_all_later
from jobadapter.adapters.base import Capability
from jobadapter.conformance import UNSUPPORTED, scenario
from jobadapter.conformance.jobs import PingJob, RecordJob
from jobadapter.errors import AdapterClosedError, ConfigurationError, EnqueueError

if TYPE_CHECKING:
    from jobadapter.conformance.harness import Backend

UNREACHABLE_BOUND = 15.0
"""Seconds within which ``perform_later`` to an unreachable broker must raise (the fault
suite's broker outage holds every adapter to the same bound)."""
BATCH = 50


@scenario("Contract", Capability.BULK)
def test_enqueue_all_publishes_a_batch_in_one_round_trip(backend: Backend) -> None:
    """bulk: perform_all_later of 50 jobs is one batch the adapter published at once; each runs"""
    backend.shared_worker()
    label = backend.label_for("batch")
    batch = [RecordJob(label, n) for n in range(BATCH)]
    for job in batch:
        job.queue_name = backend.main_queue
    before = backend.adapter.published_batches
    assert perform_all_later(batch) == BATCH
    published = backend.adapter.published_batches - before
    assert published == 1, (
        f"enqueue_all of {BATCH} jobs counted {published} batches in published_batches: an adapter that "
        "declares bulk publishes a batch in one round trip or transaction, and counts it there"
    )
    backend.probe.wait_for_count(label, BATCH, backend.timeout)


@scenario("Contract")
def test_an_unreachable_broker_raises_enqueue_error_in_time(
    backend: Backend, unreachable_urls: list[str]
) -> None:
    """perform_later to a broker nobody listens on raises EnqueueError within 15 s"""
    scheme = backend.url.partition("://")[0]
    url = next((each for each in unreachable_urls if each.partition("://")[0] == scheme), None)
    if not backend.adapter.url.transport:
        pytest.skip(f"{UNSUPPORTED} an in-process adapter has no broker to lose")
    if url is None:
        pytest.skip(f"{UNSUPPORTED} no --jobadapter-unreachable-url for {scheme}:// was given")
    adapter = config.build_adapter(url)
    try:
        started = time.monotonic()
        with config.override(adapter), pytest.raises(EnqueueError) as raised:
            PingJob.set(queue=backend.main_queue).perform_later(backend.label_for("unreachable"))
        took = time.monotonic() - started
    finally:
        adapter.close()
    assert took <= UNREACHABLE_BOUND, (
        f"EnqueueError came after {took:.1f} s, more than {UNREACHABLE_BOUND:g} s"
    )
    assert not isinstance(raised.value, AdapterClosedError), str(raised.value)


@scenario("Contract")
def test_a_closed_adapter_refuses_jobs(backend: Backend) -> None:
    """after close(), perform_later raises AdapterClosedError"""
    adapter = config.build_adapter(backend.url)
    adapter.close()
    label = backend.label_for("closed")
    with config.override(adapter), pytest.raises(AdapterClosedError):
        PingJob.set(queue=backend.main_queue).perform_later(label)
    assert adapter.closed


@scenario("Contract")
def test_unknown_adapter_options_are_refused(backend: Backend) -> None:
    """set(adapter_options=…) with a key the adapter does not accept is refused, naming it"""
    backend.shared_worker()
    label = backend.label_for("options")
    with pytest.raises(ConfigurationError, match="no_such_option_xyz"):
        PingJob.set(queue=backend.main_queue, adapter_options={"no_such_option_xyz": 1}).perform_later(label)
    accepted = sorted(backend.adapter.accepted_options)
    assert not set(accepted) & {"no_such_option_xyz"}
    time.sleep(0.3)
    assert backend.probe.count(label) == 0, "a job with refused options ran"
