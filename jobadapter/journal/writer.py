"""The writer process of a worker that forks per job (`jobadapter.journal.forward`).

``python -m jobadapter.journal.writer``, with the journal's URL in
``JOBADAPTER_JOURNAL``: reads event writes as lines on its input, writes them
with an ordinary `store.Journal` (batches, retries, outage handling), answers
each flush request with its token on its output once the rows are in, and
ends when its input closes, after writing what it holds.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

from jobadapter.journal import ENVIRONMENT_VARIABLE, relay
from jobadapter.journal.forward import CANNOT_WRITE, FLUSH
from jobadapter.journal.store import EXIT_FLUSH_TIMEOUT, Journal
from jobadapter.journal.writes import Write

_logger = logging.getLogger("jobadapter")


def main() -> int:
    # Ctrl-C and a warm shutdown signal the worker's whole process group; the worker sends its
    # last rows after that, then closes the pipe, which is when this process ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(format=f"%(asctime)s journal writer {os.getpid()}: %(levelname)s %(message)s")
    try:
        journal = Journal(os.environ[ENVIRONMENT_VARIABLE])  # connects later: an outage is retried
    except Exception as error:  # a wrong URL, a driver that is not installed
        _logger.error("Job journal: the writer process cannot open the journal: %s", error)
        return CANNOT_WRITE
    answers = sys.stdout.buffer
    for line in sys.stdin.buffer:
        try:
            kind, values = relay.decode(line)
        except (ValueError, TypeError) as error:
            _logger.error("Job journal: an unreadable write was dropped: %s", error)
            continue
        if kind == FLUSH:
            journal.flush(EXIT_FLUSH_TIMEOUT)
            answers.write(f"{values.get('token')}\n".encode())
            answers.flush()
        else:
            journal.submit(Write(kind, values))
    journal.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
