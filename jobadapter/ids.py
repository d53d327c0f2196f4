"""Job ids: random (version 4) UUIDs as text, as ``str(uuid.uuid4())`` gives, made cheaply.

``uuid.uuid4()`` asks the kernel for 16 random bytes on every call and then
builds a `uuid.UUID` object only to format it. ``perform_later`` needs one id
per job, so this module asks ``os.urandom`` for bytes 4 KiB at a time (256
ids per system call) and formats them directly. The bytes are the same
quality as ``uuid4``'s; the pool is emptied in a forked child, so parent and
child never hand out the same id.
"""

from __future__ import annotations

import os
import threading

_POOL_SIZE = 4096
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}
"""The RFC 4122 variant: the top two bits of the 17th hex digit are ``10``."""


class _RandomPool:
    """Random bytes from ``os.urandom``, fetched in blocks and handed out 16 at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hex = ""
        self._offset = 0

    def take_hex(self) -> str:
        """32 random hex digits (16 bytes)."""
        with self._lock:
            if self._offset >= len(self._hex):
                self._hex = os.urandom(_POOL_SIZE).hex()
                self._offset = 0
            start = self._offset
            self._offset = start + 32
            return self._hex[start : start + 32]

    def empty(self) -> None:
        """Forget the fetched bytes (in a forked child, which must not reuse its parent's)."""
        self._lock = threading.Lock()
        self._hex = ""
        self._offset = 0


_pool = _RandomPool()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_pool.empty)


def new_job_id() -> str:
    """A random version 4 UUID in canonical form: ``xxxxxxxx-xxxx-4xxx-[89ab]xxx-xxxxxxxxxxxx``."""
    digits = _pool.take_hex()
    return f"{digits[:8]}-{digits[8:12]}-4{digits[13:16]}-{_VARIANT[digits[16]]}{digits[17:20]}-{digits[20:]}"
