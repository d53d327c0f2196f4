"""Function jobs shared by the tests of ``@job``, importable by a real worker (``--app``)."""

from __future__ import annotations

from pathlib import Path

from jobadapter import job, retry_on

CALLS: list[tuple[str, object]] = []


class Flaky(Exception):
    """Raised by `note_until` until its file says enough attempts were made."""


@job(queue="mail", priority=5)
def send_welcome(user_id: int, *, lang: str = "en") -> str:
    CALLS.append(("send_welcome", (user_id, lang)))
    return f"welcome {user_id} ({lang})"


@retry_on(Flaky, wait=0, attempts=3)
@job
def note_until(path: str, succeed_on: int) -> None:
    """Appends a line to ``path`` per attempt; raises `Flaky` before attempt ``succeed_on``."""
    notes = Path(path)
    with notes.open("a") as file:
        file.write("attempt\n")
    attempts = notes.read_text().count("attempt")
    if attempts < succeed_on:
        raise Flaky(f"attempt {attempts}")
    with notes.open("a") as file:
        file.write("done\n")


@job
async def double_later(value: int) -> int:
    CALLS.append(("double_later", value))
    return value * 2
