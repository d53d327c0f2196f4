"""jobadapter: Rails ActiveJob for Python.

One typed Job API (``queue_as``, ``perform_later``, ``set(wait=...)``,
``retry_on``, ``discard_on``, hooks) that runs unchanged on Celery, RQ and
Dramatiq through swappable adapters. See README.md and docs/.
"""

from jobadapter import logging as _logging
from jobadapter.config import configure
from jobadapter.errors import (
    Abort,
    AdapterClosedError,
    ConfigurationError,
    DeserializationError,
    EnqueueError,
    InvalidEnvelope,
    JobAdapterError,
    JobFailedError,
    RecordNotFound,
    SerializationError,
    UnknownJobError,
)
from jobadapter.functions import JobFunction, job
from jobadapter.hooks import (
    after_discard,
    after_enqueue,
    after_perform,
    around_enqueue,
    around_perform,
    before_enqueue,
    before_perform,
)
from jobadapter.job import ConfiguredJob, Job, perform_all_later
from jobadapter.operations import JobNotFound
from jobadapter.rescue import discard_on, exponentially_longer, rescue_from, retry_on

__all__ = [
    "Abort",
    "AdapterClosedError",
    "ConfigurationError",
    "ConfiguredJob",
    "DeserializationError",
    "EnqueueError",
    "InvalidEnvelope",
    "Job",
    "JobAdapterError",
    "JobFailedError",
    "JobFunction",
    "JobNotFound",
    "RecordNotFound",
    "SerializationError",
    "UnknownJobError",
    "after_discard",
    "after_enqueue",
    "after_perform",
    "around_enqueue",
    "around_perform",
    "before_enqueue",
    "before_perform",
    "configure",
    "discard_on",
    "exponentially_longer",
    "job",
    "perform_all_later",
    "rescue_from",
    "retry_on",
]

_logging.install()
