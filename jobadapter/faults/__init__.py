"""The fault suite: at-least-once and worker survival, measured per adapter.

    jobadapter faults --url rq+redis://127.0.0.1:6379/0

Three experiments, each against real worker processes:

- **kill storm** (`storm`): jobs run while whole worker trees are SIGKILLed at
  random moments and replaced; every job must still run (lost = 0), and
  duplicates are counted.
- **broker outage** (`outage`): the broker dies mid-enqueue and comes back;
  every ``perform_later`` returns or raises `EnqueueError` within a bound, every
  job whose enqueue returned runs, and the worker recovers unaided.
- **hostile messages** (`hostile`): malformed messages in the backend's own
  wire format; the worker survives each, a control job still runs, the message
  ends in the failed store with a reason, and nothing named in it is imported.

Each run writes a results file; ``jobadapter matrix`` renders them as the
"Faults" table of ``compat_matrix.md``.
"""

EXPERIMENTS = ("storm", "outage", "hostile")
"""The experiments, in the order ``jobadapter faults`` runs them."""

CANARY_VARIABLE = "JOBADAPTER_FAULT_CANARY"
"""The file `jobadapter.faults.canary` appends to when it is imported (kept here: reading
the name must not import the canary)."""
