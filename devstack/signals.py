"""Waiting for Ctrl-C / SIGTERM in the local tools.

The handlers only append to a list, and the main thread polls it. A handler that sets a
``threading.Event`` can deadlock: ``kill %1`` signals the whole process group and make
forwards SIGTERM to its child too, so two handlers nest on the main thread, and the second
waits forever for the Event's lock, which the first holds (seen here with ``make stack``).
"""

from __future__ import annotations

import signal
import time

POLL_INTERVAL_S = 0.2


def wait_for_stop_signal() -> int:
    """Block until SIGINT or SIGTERM arrives; return the first signal's number."""
    received: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda number, _frame: received.append(number))
    while not received:
        time.sleep(POLL_INTERVAL_S)
    return received[0]
