"""Backoff and the synchronous retried call: the pause between attempts
shared by the outbound queues (and the heartbeat), and ``call_with_retry``,
which ``mr_do_map`` uses where the caller must wait for the server's answer.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Optional

from snailjob.errors import TransportError
from snailjob.transport import Reply, Transport

_BACKOFF_FIRST = 0.2
_BACKOFF_MAX = 5.0


def backoff(attempt: int, first: float = _BACKOFF_FIRST, cap: float = _BACKOFF_MAX) -> float:
    """Capped exponential backoff with full jitter (seconds)."""
    return random.uniform(0.5, 1.0) * min(cap, first * (2 ** min(attempt, 16)))


def call_with_retry(transport: Transport, uri: str, body: str, rpc_timeout: float,
                    total: float, stop: Optional[threading.Event] = None) -> Reply:
    """Call until the server answers (any status) or ``total`` seconds pass.

    Only ``UNAVAILABLE`` errors (typically: no connection, so the request was
    not processed) are retried, with backoff.  A deadline or any other error
    is raised at once: the server may have acted on the request, and sending
    it again could act twice (a map report would create its sub-tasks twice).
    """
    give_up = time.monotonic() + total
    attempt = 0
    while True:
        try:
            return transport.call(uri, body, rpc_timeout)
        except TransportError as exc:
            if exc.code != "UNAVAILABLE":
                raise
            attempt += 1
            pause = backoff(attempt)
            if time.monotonic() + pause > give_up or (stop is not None and stop.is_set()):
                raise
            if stop is not None:
                stop.wait(pause)
            else:
                time.sleep(pause)
