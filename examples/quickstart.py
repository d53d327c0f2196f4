"""jobadapter in one screen, on the default ``async://`` adapter (no server needed).

    uv run python examples/quickstart.py

Shows an enqueue, a delayed job, a retry and a discard in the log output. The
same jobs on a real backend, with a worker in a second terminal:

    cd examples
    export JOBADAPTER_URL=rq+redis://127.0.0.1:6379/0
    uv run jobadapter worker --app quickstart_jobs     # terminal 1
    uv run python quickstart.py                        # terminal 2

The worker consumes ``default`` and ``mailers``, the queues the jobs declare.
"""

from __future__ import annotations

import logging

from quickstart_jobs import SendWelcomeEmail, SyncInvoice

from jobadapter import config


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)-5s %(message)s")
    SendWelcomeEmail.perform_later(7, lang="fr")  # enqueue
    SendWelcomeEmail.set(wait=1).perform_later(8)  # a delayed job
    SyncInvoice.perform_later(42)  # fails once, retried after 0.5 s
    SyncInvoice.perform_later(404)  # discarded
    config.adapter().close()  # on async://, waits for the jobs above, as interpreter exit would


if __name__ == "__main__":
    main()
