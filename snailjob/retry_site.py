"""Retry propagation across services: who owns the retry of a failing call chain.

When service A's ``@retryable`` call fails because service B, which it
called over HTTP, failed, both could hand a retry to the server: A its own
call, B the one that failed inside it.  The server would then replay both,
and B's work would run twice as often as meant.  The SnailJob Java client
avoids that with two HTTP headers, which this module reads and writes for
the Python side (the HTTP plumbing is in ``snailjob.contrib.propagation``
and ``snailjob.contrib.django.middleware``):

* ``snail-job`` on a request: JSON ``{"retry":true,"retryId":"...","ddl":ms}``:
  "this call is part of a retry the caller owns".  A ``@retryable`` called
  while serving such a request runs once, without local retries and without
  a report (the *retry flow*).  ``ddl`` is what is left of the chain's time
  budget; every call sent onward carries what is left then, and once it is
  spent no further call is sent (``CallChainTimeout``).
* ``snail-job-status`` on a response: ``519`` means "do not retry this: a
  service further down owns the retry".  A ``@retryable`` whose call saw it
  is not retried and not reported; a server replay that saw it fails with a
  ``StopRetry``, which ends that retry.

A Python ``@retryable`` marks its outgoing calls from its first attempt on,
in its local retries and in the server's replays (the Java client marks them
only once its local retries have started): the outermost retryable of a
chain owns the retry, as a retryable nested in another runs once in one
process.  A served request answers ``519`` when a retryable in it handed a
retry to the server, and otherwise relays the status a downstream answered.

The state is a context variable holding the innermost ``RetrySite``: one per
request served, per local attempt and per server replay.  It follows the
code into asyncio tasks created inside (and into threads started with
``contextvars.copy_context().run``), not into other threads.  This module
imports only ``snailjob.errors``: ``snailjob.retry`` and ``snailjob.retry_work``
call it at their decision points, the contrib layers above it.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Tuple

from snailjob.errors import SnailJobError

logger = logging.getLogger(__name__)

HEADER = "snail-job"
"""The request header of a call made during a retry (Java's ``SystemConstants.SNAIL_JOB_HEAD_KEY``)."""
STATUS_HEADER = "snail-job-status"
"""The response header with the downstream's verdict (``SNAIL_JOB_STATUS_CODE_KEY``)."""
NO_RETRY = "519"
"""``snail-job-status`` value: a service further down owns the retry; do not retry."""
DEFAULT_DDL_MS = 60_000
"""A retry chain's time budget when the scene has none (Java's ``SystemConstants.DEFAULT_DDL``)."""
MAX_HEADER = 4096  # longer incoming headers are ignored
_MAX_DDL_MS = 7 * 24 * 3600 * 1000
_TOKEN = re.compile(r"[0-9A-Za-z._:-]{1,64}")  # what a retryId or a status may be made of


class CallChainTimeout(SnailJobError):
    """A retry chain's deadline (the ``ddl`` of its ``snail-job`` header)
    passed: the outgoing call was not sent."""


@dataclass
class RetrySite:
    """One scope of a retry chain: a request served, one local attempt of a
    ``@retryable`` call, or one server replay.

    ``retry_id`` set: calls sent from here carry the ``snail-job`` header,
    with what is left until ``deadline`` (``time.monotonic()``).
    ``retry_flow``: the request came with that header (a caller owns the
    retry).  ``status``: the ``snail-job-status`` a downstream answered
    (``519`` stays once seen).  ``reported``: a retryable here handed a
    retry to the server.  Both go up to the enclosing scopes (``parent``),
    so the request that ran an attempt answers for it."""

    retry_id: Optional[str] = None
    deadline: float = 0.0
    retry_flow: bool = False
    status: Optional[str] = None
    reported: bool = False
    parent: Optional[RetrySite] = None

    @property
    def refused(self) -> bool:
        """A downstream answered ``519``: do not retry (nor report) this call."""
        return self.status == NO_RETRY

    def response_status(self) -> Optional[str]:
        """The ``snail-job-status`` to answer a request with: ``519`` when a
        retryable here reported a retry, else what a downstream answered."""
        return NO_RETRY if self.reported else self.status

    def remaining_ms(self) -> int:
        return int((self.deadline - time.monotonic()) * 1000)


_site: contextvars.ContextVar[Optional[RetrySite]] = contextvars.ContextVar("snailjob_retry_site", default=None)


def current() -> Optional[RetrySite]:
    """The innermost scope of this thread or asyncio task, if any."""
    return _site.get()


def in_retry_flow() -> bool:
    """True while serving a request that came with a ``snail-job`` header
    (``retry: true``): a ``@retryable`` runs once, without retries or report."""
    site = _site.get()
    return site is not None and site.retry_flow


def new_retry_id() -> str:
    return uuid.uuid4().hex


def scene_ddl_ms(sink: Any, scene: str) -> int:
    """The chain budget of ``scene``: ``sink.retry_ddl_ms(scene)`` when the
    client holding the retryable provides it (the scene's ``ddl`` from the
    group's synced configuration), else ``DEFAULT_DDL_MS``."""
    getter = getattr(sink, "retry_ddl_ms", None)
    if callable(getter):
        try:
            ddl = getter(scene)
        except Exception:  # a hook's bug must not break the call
            logger.debug("retry_ddl_ms(%r) failed; using %d ms", scene, DEFAULT_DDL_MS, exc_info=True)
            ddl = None
        if isinstance(ddl, int) and not isinstance(ddl, bool) and ddl > 0:
            return ddl
    return DEFAULT_DDL_MS


def enter(retry_id: Optional[str], ddl_ms: int, *, retry_flow: bool = False,
          nested: bool = True) -> Tuple[RetrySite, contextvars.Token]:
    """Make a new scope current; ``leave`` takes the token.  ``nested``:
    its status and report go up to the scope that was current."""
    site = RetrySite(retry_id=retry_id, deadline=time.monotonic() + ddl_ms / 1000.0, retry_flow=retry_flow,
                     parent=_site.get() if nested else None)
    return site, _site.set(site)


def leave(token: contextvars.Token) -> None:
    _site.reset(token)


@contextlib.contextmanager
def attempt(ddl_ms: int = DEFAULT_DDL_MS, retry_id: Optional[str] = None) -> Iterator[RetrySite]:
    """One attempt of a ``@retryable`` call: calls sent from it carry the
    header with a fresh budget of ``ddl_ms``."""
    site, token = enter(retry_id or new_retry_id(), ddl_ms)
    try:
        yield site
    finally:
        _site.reset(token)


@contextlib.contextmanager
def serving(header: Optional[str]) -> Iterator[RetrySite]:
    """A request served, given its ``snail-job`` header (or None): a retry
    flow when the header says ``retry: true``.  The scope starts a new chain
    (whatever scope the server's own code runs in is not its parent); answer
    with ``site.response_status()`` in ``snail-job-status``."""
    parsed = parse_header(header)
    if parsed is None:
        site, token = enter(None, 0, nested=False)
    else:
        site, token = enter(parsed[0], parsed[1], retry_flow=True, nested=False)
    try:
        yield site
    finally:
        _site.reset(token)


def parse_header(value: Optional[str]) -> Optional[Tuple[str, int]]:
    """``(retryId, ddl ms)`` of a ``snail-job`` header that says
    ``retry: true``; None for none, ``retry: false`` or a malformed one
    (logged at debug level: a bad header from the network is ignored)."""
    if value is None or not value.strip():
        return None
    if len(value) > MAX_HEADER:
        logger.debug("%s header ignored: %d characters (at most %d)", HEADER, len(value), MAX_HEADER)
        return None
    try:
        data = json.loads(value)
    except ValueError:
        logger.debug("%s header ignored: not JSON", HEADER)
        return None
    if not isinstance(data, dict):
        logger.debug("%s header ignored: not a JSON object", HEADER)
        return None
    if data.get("retry") is not True:
        if data.get("retry") not in (False, None):
            logger.debug("%s header ignored: retry is %s, not a boolean", HEADER, type(data.get("retry")).__name__)
        return None
    ddl = data.get("ddl", DEFAULT_DDL_MS)
    if ddl is None:
        ddl = DEFAULT_DDL_MS
    if isinstance(ddl, bool) or not isinstance(ddl, (int, float)) or ddl != ddl:
        logger.debug("%s header ignored: ddl is not a number", HEADER)
        return None
    retry_id = data.get("retryId")
    retry_id = str(retry_id) if isinstance(retry_id, (str, int)) and not isinstance(retry_id, bool) else ""
    if retry_id and not _TOKEN.fullmatch(retry_id):
        logger.debug("%s header: retryId dropped (not an id)", HEADER)
        retry_id = ""
    return retry_id, int(max(0, min(ddl, _MAX_DDL_MS)))


def outgoing_header() -> Optional[str]:
    """The ``snail-job`` header for a call sent now, or None outside a
    retry.  Raises ``CallChainTimeout`` when the chain's deadline passed."""
    site = _site.get()
    if site is None or site.retry_id is None:
        return None
    left = site.remaining_ms()
    if left <= 0:
        raise CallChainTimeout(
            f"the retry call chain has timed out ({HEADER} header, retryId {site.retry_id}, "
            f"{-left} ms past its deadline): the call was not sent")
    return json.dumps({"retry": True, "retryId": site.retry_id, "ddl": left}, separators=(",", ":"))


def record_status(value: Optional[str]) -> None:
    """Keep the ``snail-job-status`` a response carried (in this scope and
    the enclosing ones); ``519`` is kept over later values.  A value that
    is not a short token (letters, digits, ``._:-``) is ignored: it is
    relayed upstream, so nothing else from the network goes through."""
    if value is None:
        return
    value = value.strip()
    if not _TOKEN.fullmatch(value):
        if value:
            logger.debug("%s %r ignored: not a status code", STATUS_HEADER, value[:40])
        return
    site = _site.get()
    while site is not None:
        if site.status != NO_RETRY:
            site.status = value
        site = site.parent


def mark_reported() -> None:
    """A retryable handed a retry to the server: the requests being served
    answer ``519``, so that their callers do not retry as well."""
    site = _site.get()
    while site is not None:
        site.reported = True
        site = site.parent


def refused() -> bool:
    """A downstream answered ``519`` in the current scope."""
    site = _site.get()
    return site is not None and site.refused


__all__ = [
    "DEFAULT_DDL_MS",
    "HEADER",
    "NO_RETRY",
    "STATUS_HEADER",
    "CallChainTimeout",
    "RetrySite",
    "attempt",
    "current",
    "in_retry_flow",
    "outgoing_header",
    "parse_header",
    "record_status",
    "serving",
]
