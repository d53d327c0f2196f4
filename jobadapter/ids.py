"""Job ids: random (version 4) UUIDs as text, as ``str(uuid.uuid4())`` gives, made cheaply.

``uuid.uuid4()`` asks the kernel for 16 random bytes on every call and then
builds a `uuid.UUID` object only to format it. ``perform_later`` needs one id
per job, so this module asks ``os.urandom`` for the bytes of 256 ids at once
and formats them in one go; taking an id is then one ``list.pop``, which is
atomic, so threads need no lock. The bytes are the same quality as
``uuid4``'s. The ids made ahead are dropped in a forked child, so parent and
child never hand out the same id.
"""

from __future__ import annotations

import os

_BATCH = 256
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}
"""The RFC 4122 variant: the top two bits of the 17th hex digit are ``10``."""
_ready: list[str] = []

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_ready.clear)


def _make_batch() -> list[str]:
    digits = os.urandom(16 * _BATCH).hex()
    return [
        f"{digits[at : at + 8]}-{digits[at + 8 : at + 12]}-4{digits[at + 13 : at + 16]}-"
        f"{_VARIANT[digits[at + 16]]}{digits[at + 17 : at + 20]}-{digits[at + 20 : at + 32]}"
        for at in range(0, 32 * _BATCH, 32)
    ]


def new_job_id() -> str:
    """A random version 4 UUID in canonical form: ``xxxxxxxx-xxxx-4xxx-[89ab]xxx-xxxxxxxxxxxx``."""
    while True:
        try:
            return _ready.pop()
        except IndexError:
            _ready.extend(_make_batch())
