"""Retry propagation for Django: add
``"snailjob.contrib.django.middleware.RetryHeadersMiddleware"`` to
``MIDDLEWARE`` (near the top).

A request that comes with the ``snail-job`` header (``retry: true``) is in
the retry flow: a ``@retryable`` called while it is served runs once,
without local retries or a report, because the caller owns the retry.  The
response gets ``snail-job-status: 519`` when a retryable in the request
handed a retry to the server (so the caller does not retry as well), or the
status a downstream answered.  Works under WSGI and ASGI (sync and async
views); the rules are in ``snailjob.retry_site``.
"""

from __future__ import annotations

from typing import Any, Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

from snailjob.retry_site import HEADER, STATUS_HEADER, RetrySite, serving


class RetryHeadersMiddleware:
    """Django middleware (sync and async): the retry flow for a request that
    came with the ``snail-job`` header, ``snail-job-status`` on the response."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if self._async:
            return self._acall(request)
        with serving(request.headers.get(HEADER)) as site:
            response = self.get_response(request)
        return _answer(response, site)

    async def _acall(self, request: Any) -> Any:
        with serving(request.headers.get(HEADER)) as site:
            response = await self.get_response(request)
        return _answer(response, site)


def _answer(response: Any, site: RetrySite) -> Any:
    value = site.response_status()
    if value is not None:
        response[STATUS_HEADER] = value
    return response


__all__ = ["RetryHeadersMiddleware"]
