"""Waiting for a job or workflow batch to end: the poll loops behind ``wait_job_batch``.

One loop for the blocking client (``time.sleep``) and one for the async client
(``asyncio.sleep``), with the same rules: network errors and HTTP 5xx are
logged and retried until the deadline, an HTTP 4xx is raised, no batch is
``OpenApiNotFoundError``, and the deadline is ``BatchWaitTimeout`` carrying the
last batch read. Each takes the read as a callable, so it knows no client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable

from snailjob.openapi.errors import (
    BatchWaitTimeout,
    OpenApiHTTPError,
    OpenApiNotFoundError,
    OpenApiTransportError,
    OpenApiValidationError,
)

logger = logging.getLogger("snailjob.openapi")


def check_wait(timeout: float, poll: float) -> None:
    for field, value in (("timeout", timeout), ("poll", poll)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise OpenApiValidationError(field, f"must be a number of seconds > 0, got {value!r}")


def wait_timeout(what: str, path: str, timeout: float, last: Any) -> BatchWaitTimeout:
    status = getattr(last, "status", None)
    seen = f"still {status.name}" if status is not None else "never read"
    return BatchWaitTimeout(f"{what} is {seen} after {timeout:g}s", path=path, last=last)


def wait(read: Callable[[], Any], what: str, path: str, timeout: float, poll: float) -> Any:
    """Call ``read()`` every ``poll`` seconds until it returns a final batch; return that."""
    check_wait(timeout, poll)
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            current = read()
        except (OpenApiTransportError, OpenApiHTTPError) as exc:
            if isinstance(exc, OpenApiHTTPError) and exc.http_status < 500:
                raise
            logger.warning("waiting for %s: %s (retrying)", what, exc)
        else:
            if current is None:
                raise OpenApiNotFoundError(f"no {what}", path=path)
            last = current
            if current.is_final:
                return current
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise wait_timeout(what, path, timeout, last)
        time.sleep(min(poll, remaining))


async def wait_async(read: Callable[[], Awaitable[Any]], what: str, path: str, timeout: float, poll: float) -> Any:
    """As ``wait``, awaiting ``read()`` and sleeping with ``asyncio.sleep``."""
    check_wait(timeout, poll)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while True:
        try:
            current = await read()
        except (OpenApiTransportError, OpenApiHTTPError) as exc:
            if isinstance(exc, OpenApiHTTPError) and exc.http_status < 500:
                raise
            logger.warning("waiting for %s: %s (retrying)", what, exc)
        else:
            if current is None:
                raise OpenApiNotFoundError(f"no {what}", path=path)
            last = current
            if current.is_final:
                return current
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise wait_timeout(what, path, timeout, last)
        await asyncio.sleep(min(poll, remaining))
