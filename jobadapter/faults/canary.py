"""The import canary: a module no worker may ever import.

Hostile messages name things in this module (a job class, a task, an RQ
function, a pickled callable). Importing it appends a line to the file named
by ``JOBADAPTER_FAULT_CANARY``, so the fault suite sees any import, in any
process, even one it killed.
"""

from __future__ import annotations

import os
import time

from jobadapter.faults import CANARY_VARIABLE

_path = os.environ.get(CANARY_VARIABLE)
if _path:
    with open(_path, "a") as _file:
        _file.write(f"{time.time()} imported in pid {os.getpid()}\n")


class Boom:
    """What the payloads name; if it ever runs, it has already been noticed."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("the import canary was called")


def boom(*args: object, **kwargs: object) -> None:
    raise RuntimeError("the import canary was called")
