"""The small types of the retry feature: where a call is retried
(``RetryStrategy``), how the waits grow (``Backoff``), how a retryable
called inside another behaves (``Propagation``), the exceptions a retryable
function may raise or meet (``StopRetry``, ``RetryResult``) and what a
completion callback receives (``RetryCall``).  ``snailjob.retry`` re-exports
them all."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Dict, Optional, Tuple


class RetryStrategy(str, Enum):
    """Where a failing call is retried."""

    LOCAL_REMOTE = "local_remote"
    """Retry in place, then hand the call to the server (the default)."""
    LOCAL_ONLY = "local_only"
    """Retry in place only."""
    REMOTE_ONLY = "remote_only"
    """Hand the call to the server at the first failure."""


class Backoff(str, Enum):
    FIXED = "fixed"
    EXPONENTIAL = "exponential"


class StopRetry(Exception):
    """Raise from a retryable function to end all retrying of this call: no
    further local attempt and no report.

    In a server replay it is reported as a *failure* with the text
    ``StopRetry: <message>``, and this client answers later replays of the
    same retry with that failure without running the function, so the
    server reaches the scene's maximum count after its remaining attempts.
    (The protocol's STOP status is not used: servers up to 2.0.2 fail to
    apply it, and 1.4.0 then replays the call forever.)"""


class RetryResult(Exception):
    """A call whose return value ``retry_if_result`` asked to retry.  A
    server replay that returns such a value fails with this exception's
    text, so the server replays it again; local attempts never raise it to
    the caller (see ``retryable``).  ``value`` is the value returned."""

    def __init__(self, value: Any) -> None:
        shown = repr(value)
        shown = shown if len(shown) <= 200 else shown[:200] + "..."
        super().__init__(f"the result {shown} asked for a retry (retry_if_result)")
        self.value = value


@dataclass(frozen=True)
class RetryCall:
    """What a completion callback receives: the call and how it ended."""

    scene: str
    executor_name: str
    args: Tuple[Any, ...]
    kwargs: Dict[str, Any]
    retry_id: Optional[int] = None
    retry_task_id: Optional[int] = None
    retry_status: Optional[int] = None
    """1 FINISH (the call finally succeeded) or 2 MAX_COUNT (gave up)."""


class Propagation(str, Enum):
    """What a ``@retryable`` function does when it is called while another
    retryable's call is in progress in the same thread or asyncio task
    (Java's ``Propagation``)."""

    REQUIRED = "required"
    """Join it: run once, without retries or a report of its own; the outer
    call's retry covers the failure (the default)."""
    REQUIRES_NEW = "requires_new"
    """Its own retry: local attempts and a report of its own, then the
    outer call goes on.  Inside a server replay, or when it is already the
    call being retried, it runs once like ``REQUIRED``."""
