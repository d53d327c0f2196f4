"""The exceptions jobadapter raises, in one place so callers can import them all."""

from __future__ import annotations


class JobAdapterError(Exception):
    """Base class of every error jobadapter raises on its own account."""


class ConfigurationError(JobAdapterError):
    """A URL, an option or a declaration is wrong; the message says which and why."""


class EnqueueError(JobAdapterError):
    """The backend could not take the job; the backend's own error is chained as the cause.

    For a batch (``enqueue_all``), ``taken`` holds the backend ids of the leading jobs the
    backend did take before it failed (``[]``: none, as after a refused transaction), or is
    None when the backend cannot tell which it took.
    """

    def __init__(self, message: str, *, taken: list[str | None] | None = None) -> None:
        super().__init__(message)
        self.taken = taken


class AdapterClosedError(EnqueueError):
    """A job was enqueued through an adapter after ``close()`` was called on it."""


class SerializationError(JobAdapterError, TypeError):
    """An argument cannot be stored in an envelope; raised before anything reaches a backend."""


class DeserializationError(JobAdapterError):
    """An argument could not be loaded again at perform time; the cause is chained."""


class RecordNotFound(DeserializationError):
    """A model reference points at a record that no longer exists."""


class InvalidEnvelope(JobAdapterError):
    """A payload is not a valid jobadapter envelope (malformed, or of another version)."""


class UnknownJobError(JobAdapterError):
    """A payload names a job class that is not registered in this process."""


class Abort(Exception):
    """Raise in a ``before_enqueue`` or ``before_perform`` hook to stop the enqueue or perform."""


class JobFailedError(JobAdapterError):
    """``job.result()`` found the job failed; the message names its error (class and message)."""

    def __init__(self, job_id: str, error_class: str | None, message: str | None) -> None:
        shown = f"{error_class}: {message}" if message else (error_class or "an unknown error")
        super().__init__(f"job {job_id} failed with {shown}")
        self.job_id = job_id
        self.error_class = error_class
        self.error_message = message
