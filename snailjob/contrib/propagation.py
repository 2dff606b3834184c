"""Retry propagation over HTTP, interoperable with SnailJob's Java client.

Outgoing calls (one line per client)::

    from snailjob.contrib import propagation

    http = propagation.install(httpx.Client())        # or httpx.AsyncClient(), requests.Session()

Incoming requests (one line per app)::

    app = propagation.RetryHeadersASGI(app)           # FastAPI, Starlette, any ASGI app
    app.wsgi_app = propagation.RetryHeadersWSGI(app.wsgi_app)   # Flask (any WSGI app: wrap it)
    # Django: "snailjob.contrib.django.middleware.RetryHeadersMiddleware" in MIDDLEWARE

During a ``@retryable`` call (its attempts and the server's replays) and
while serving a request that came with the header, the installed clients
send the ``snail-job`` header (what is left of the chain's time budget:
``CallChainTimeout`` instead of a call once it is spent) and keep the
``snail-job-status`` answers; the middlewares put the request in the *retry
flow* (a ``@retryable`` called in it runs once, without retries or report)
and answer ``snail-job-status: 519`` when a retryable in the request handed
a retry to the server (else they relay a downstream's status).  The rules
are in ``snailjob.retry_site``.  Other HTTP clients: send
``request_headers()`` and pass the response's headers to
``response_headers`` (what Java's ``RequestHeaderPlugins`` and
``ResponseHeaderPlugins`` do).

``httpx`` and ``requests`` are imported only when a client of theirs is
installed; the middlewares need no framework.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable, Dict, Iterable, List, Mapping, MutableMapping, Optional, Tuple, TypeVar

from snailjob.retry_site import (
    HEADER,
    NO_RETRY,
    STATUS_HEADER,
    CallChainTimeout,
    RetrySite,
    outgoing_header,
    record_status,
    serving,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")


# --- outgoing -------------------------------------------------------------------


def request_headers() -> Dict[str, str]:
    """The headers to add to a call sent now: ``{"snail-job": ...}`` during a
    retry, else empty.  Raises ``CallChainTimeout`` when the chain's time
    budget is spent."""
    value = outgoing_header()
    return {HEADER: value} if value is not None else {}


def response_headers(headers: Mapping[str, Any]) -> None:
    """Keep the ``snail-job-status`` of a response's headers (any mapping;
    names compared without case)."""
    getter = getattr(headers, "get", None)
    value = getter(STATUS_HEADER) if getter is not None else None
    if value is None:
        for name, found in headers.items():
            if str(name).lower() == STATUS_HEADER:
                value = found
                break
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if isinstance(value, str):
        record_status(value)


def _httpx_request(request: Any) -> None:
    value = outgoing_header()
    if value is not None:
        request.headers[HEADER] = value


def _httpx_response(response: Any) -> None:
    record_status(response.headers.get(STATUS_HEADER))


async def _httpx_request_async(request: Any) -> None:
    _httpx_request(request)


async def _httpx_response_async(response: Any) -> None:
    _httpx_response(response)


def httpx_event_hooks() -> Dict[str, List[Callable[[Any], None]]]:
    """``event_hooks`` for ``httpx.Client(event_hooks=...)``."""
    return {"request": [_httpx_request], "response": [_httpx_response]}


def httpx_async_event_hooks() -> Dict[str, List[Callable[[Any], Awaitable[None]]]]:
    """``event_hooks`` for ``httpx.AsyncClient(event_hooks=...)``."""
    return {"request": [_httpx_request_async], "response": [_httpx_response_async]}


class RetryHeadersAdapter:
    """A ``requests`` transport adapter around another (by default the one
    it replaces): adds the header, keeps the status.  ``install(session)``
    mounts one around each adapter of the session."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def send(self, request: Any, **kwargs: Any) -> Any:
        value = outgoing_header()
        if value is not None:
            request.headers[HEADER] = value
        response = self.inner.send(request, **kwargs)
        record_status(response.headers.get(STATUS_HEADER))
        return response

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:  # max_retries, proxy_manager, ... of the wrapped adapter
        if name == "inner":  # not set yet (a copy being made): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)


def install(client: T) -> T:
    """Add the propagation to an ``httpx.Client``, ``httpx.AsyncClient`` or
    ``requests.Session`` (in place; installing twice changes nothing);
    returns it."""
    target: Any = client
    packages = {cls.__module__.split(".")[0] for cls in type(client).__mro__}  # subclasses too
    if "httpx" in packages:
        import httpx

        asynchronous = isinstance(client, httpx.AsyncClient)
        if not asynchronous and not isinstance(client, httpx.Client):
            raise TypeError(f"install() takes an httpx.Client or httpx.AsyncClient, not {type(client).__name__}")
        ours: Mapping[str, List[Any]] = httpx_async_event_hooks() if asynchronous else httpx_event_hooks()
        hooks = {k: list(v) for k, v in target.event_hooks.items()}
        for kind, added in ours.items():
            present = hooks.setdefault(kind, [])
            present.extend(h for h in added if h not in present)
        target.event_hooks = hooks
        return client
    if "requests" in packages:
        import requests

        if not isinstance(client, requests.Session):
            raise TypeError(f"install() takes a requests.Session, not {type(client).__name__}")
        for prefix, adapter in list(target.adapters.items()):
            if not isinstance(adapter, RetryHeadersAdapter):
                target.mount(prefix, RetryHeadersAdapter(adapter))
        return client
    raise TypeError(f"install() takes an httpx.Client, httpx.AsyncClient or requests.Session, "
                    f"not {type(client).__module__}.{type(client).__name__}; for another client send "
                    "request_headers() and pass the response's headers to response_headers()")


# --- incoming -------------------------------------------------------------------


def _with_status(headers: Iterable[Tuple[Any, Any]], site: RetrySite, encode: Callable[[str], Any],
                 name: Any) -> Optional[List[Tuple[Any, Any]]]:
    """``headers`` with ``snail-job-status`` set from the request's scope,
    or None when there is nothing to answer."""
    value = site.response_status()
    if value is None:
        return None
    kept = [(k, v) for k, v in headers if (k.decode("latin-1") if isinstance(k, bytes) else k).lower() != STATUS_HEADER]
    kept.append((name, encode(value)))
    if value == NO_RETRY:
        logger.debug("answering %s: %s (%s)", STATUS_HEADER, value,
                     "a retry was reported here" if site.reported else "relayed from a downstream")
    return kept


class RetryHeadersASGI:
    """ASGI middleware: ``app = RetryHeadersASGI(app)`` (outermost, so that
    the 500 answers of the framework's error handler get the status too), or
    ``app.add_middleware(RetryHeadersASGI)`` in Starlette / FastAPI."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        header = None
        for name, value in scope.get("headers") or ():
            if name.lower() == HEADER.encode():
                header = value.decode("latin-1")
                break
        with serving(header) as site:
            async def send_with_status(message: Any) -> None:
                if message.get("type") == "http.response.start":
                    headers = _with_status(message.get("headers") or (), site, lambda v: v.encode("latin-1"),
                                           STATUS_HEADER.encode())
                    if headers is not None:
                        message = {**message, "headers": headers}
                await send(message)

            await self.app(scope, receive, send_with_status)


class RetryHeadersWSGI:
    """WSGI middleware: ``app.wsgi_app = RetryHeadersWSGI(app.wsgi_app)``
    for Flask, ``application = RetryHeadersWSGI(application)`` otherwise."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app

    def __call__(self, environ: Dict[str, Any], start_response: Callable[..., Any]) -> Any:
        with serving(environ.get("HTTP_SNAIL_JOB")) as site:
            def start(status: str, headers: List[Tuple[str, str]], exc_info: Any = None) -> Any:
                answered = _with_status(headers, site, str, STATUS_HEADER)
                if answered is not None:
                    headers = answered
                return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

            return self.app(environ, start)


__all__ = [
    "CallChainTimeout",
    "RetryHeadersASGI",
    "RetryHeadersAdapter",
    "RetryHeadersWSGI",
    "httpx_async_event_hooks",
    "httpx_event_hooks",
    "install",
    "request_headers",
    "response_headers",
]
