"""What every test process (and the worker processes the tests start) shares.

The tests start hundreds of real worker processes. With ``PYTHONDONTWRITEBYTECODE`` set in
the environment (as on the development machine), each of them compiled Celery, kombu,
Dramatiq, RQ and SQLAlchemy from source again: about 1 s of CPU per start on two cores.
Letting them cache bytecode (in ``.venv`` and ``__pycache__``, both ignored by git) keeps
the suite's wall time down; nothing a test checks depends on it.
"""

from __future__ import annotations

import os
import sys

os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False
