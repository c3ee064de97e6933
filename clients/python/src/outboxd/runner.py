"""Running a consumer as a process's main loop: SIGTERM/SIGINT stop it within a bounded time.

``serve(consumer)`` is what ``flask outboxd consume`` runs: the first SIGTERM or SIGINT sets the
stop event (``run()`` returns after the batch in progress, within ``poll_timeout``), then
``close(stop_timeout)`` commits offsets and leaves the group; a second signal exits at once (the
records since the last offset commit come again and are skipped as duplicates).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType

from outboxd.consumer import IdempotentConsumer

__all__ = ["serve"]

log = logging.getLogger("outboxd.consumer")


def serve(consumer: IdempotentConsumer, *, stop_timeout: float = 30.0, poll_timeout: float = 0.5) -> int:
    """Runs ``consumer`` until SIGTERM or SIGINT, then closes it; returns the exit status (0, or 1 if
    closing did not finish within ``stop_timeout`` seconds). Call it from the main thread."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            log.warning("second %s: exiting now", signal.Signals(signum).name)
            os._exit(128 + signum)
        log.info("%s: stopping (after the batch in progress; within %.0f s)", signal.Signals(signum).name,
                 stop_timeout)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        consumer.run(stop, poll_timeout=poll_timeout)
    finally:
        closed = consumer.close(stop_timeout)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if closed else 1
