"""Riding out a Redis outage: one log line when it starts, one when it ends, back-off between.

RQ's worker quits on a Redis error outside its fetch (maintenance, the
suspension check, a heartbeat while a job runs), and inside its fetch logs a
line per retry. A jobadapter worker instead waits for Redis for as long as it
takes, retrying at most once a second, and reports the outage once: from the
main loop and the pub/sub thread alike.
"""

from __future__ import annotations

import logging
import threading
import time

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

UNREACHABLE = (RedisConnectionError, RedisTimeoutError)
"""What a Redis that is down, restarting or unreachable raises."""
FIRST_PAUSE = 0.1
LONGEST_PAUSE = 1.0


class Outage:
    """The Redis outage a worker is in, if any (shared by its threads)."""

    def __init__(self, log: logging.Logger, who: str) -> None:
        self.log = log
        self.who = who
        self._lock = threading.Lock()
        self._since: float | None = None
        self._pause = FIRST_PAUSE

    @property
    def ongoing(self) -> bool:
        return self._since is not None

    def down(self, error: BaseException) -> None:
        """Note that Redis failed; logs only the first failure of an outage."""
        with self._lock:
            if self._since is not None:
                return
            self._since = time.monotonic()
            self._pause = FIRST_PAUSE
        self.log.warning(
            "%s: Redis is unreachable (%s); waiting for it, retrying every %g s at most",
            self.who,
            error,
            LONGEST_PAUSE,
        )

    def up(self) -> None:
        """Note that Redis answered; logs the end of an outage once."""
        with self._lock:
            since, self._since = self._since, None
        if since is not None:
            self.log.warning("%s: Redis is reachable again after %.1f s", self.who, time.monotonic() - since)

    def pause(self) -> None:
        """Sleep before the next attempt: 0.1 s, doubling up to a second. A stop signal that
        raises (an idle RQ worker's does) interrupts it."""
        pause = self._pause
        self._pause = min(pause * 2, LONGEST_PAUSE)
        time.sleep(pause)
