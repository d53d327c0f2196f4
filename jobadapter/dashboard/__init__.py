"""A web dashboard over every backend: queues, jobs by state, one job, and the actions on them.

``create_app(adapter)`` returns an ASGI app (Starlette, with Jinja2 pages)
that works on any adapter with the operations contract, reading throughput,
latency and finished jobs from the journal. Serve it with ``jobadapter
dashboard``, or mount it in a Starlette, FastAPI or Django project
(docs/dashboard.md). Needs ``jobadapter[dashboard]``.
"""

from __future__ import annotations

from jobadapter.dashboard.app import create_app
from jobadapter.dashboard.security import Credentials

__all__ = ["Credentials", "create_app"]
