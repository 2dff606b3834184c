"""Exceptions of ``snailjob.openapi``, all rooted at ``snailjob.errors.SnailJobError``.

::

    SnailJobError
    └── OpenApiError                  .message .path .status
        ├── OpenApiValidationError    (also ValueError) bad input, nothing was sent; .field
        ├── OpenApiServerError        the server answered ``status != 1``
        │   └── OpenApiAuthError      ... because namespace / group / token were refused
        ├── OpenApiNotFoundError      (also LookupError) the server has no such job / batch / workflow
        ├── OpenApiHTTPError          a non-2xx HTTP answer; .http_status
        ├── OpenApiResponseError      a 2xx answer that is not the expected JSON
        ├── OpenApiTransportError     no answer: connection refused, reset, DNS...
        │   └── OpenApiTimeout        (also TimeoutError) no answer within the timeout
        └── BatchWaitTimeout          (also TimeoutError) wait_job_batch gave up; .last

No message, ``repr`` or attribute of these exceptions contains the group token:
the client removes it from every text it puts in one (the server's own error
message for a bad token quotes the token it received).
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Type

from snailjob.errors import SnailJobError


class OpenApiError(SnailJobError):
    """Base class of every error raised by the OpenAPI client.

    ``message`` is the reason (the server's message when it sent one), ``path``
    the API path called (``/api/job/add``; ``None`` when nothing was sent) and
    ``status`` the ``status`` field of the server's reply (``None`` when there
    was no such reply).
    """

    def __init__(self, message: str, *, path: Optional[str] = None, status: Optional[int] = None) -> None:
        self.message = message
        self.path = path
        self.status = status
        super().__init__(self._text())

    def _text(self) -> str:
        where = f"{self.path}: " if self.path else ""
        code = f" (status {self.status})" if self.status is not None else ""
        return f"{where}{self.message}{code}"

    def __reduce__(self) -> Any:  # keep the keyword-only attributes through pickling
        return (_rebuild, (type(self), self.__dict__))


def _rebuild(cls: Type[OpenApiError], state: Dict[str, Any]) -> OpenApiError:
    # OpenApiTimeout and BatchWaitTimeout have OSError's layout (via TimeoutError)
    err = (OSError.__new__(cls) if issubclass(cls, OSError) else Exception.__new__(cls))
    err.__dict__.update(state)
    err.args = (err._text(),)
    return err


class OpenApiValidationError(OpenApiError, ValueError):
    """An argument is invalid; raised before anything is sent. ``field`` names it
    with the server's wire name when there is one (``argsStr``, ``triggerInterval``)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class OpenApiServerError(OpenApiError):
    """The server answered ``{"status": <not 1>, "message": ...}``."""


class OpenApiAuthError(OpenApiServerError):
    """The server refused the ``namespace`` / ``group-name`` / ``token`` headers."""


class OpenApiNotFoundError(OpenApiError, LookupError):
    """The server answered ``data: null`` for an id or bizId (no such object)."""


class OpenApiHTTPError(OpenApiError):
    """The HTTP status was not 2xx (wrong URL or prefix, a proxy, a crashed server)."""

    def __init__(self, message: str, *, path: Optional[str] = None, http_status: int = 0) -> None:
        self.http_status = http_status
        super().__init__(message, path=path)


class OpenApiResponseError(OpenApiError):
    """A 2xx answer whose body is not the server's JSON envelope, or whose ``data``
    does not have the expected shape."""


class OpenApiTransportError(OpenApiError):
    """The call got no answer: connection refused or reset, unknown host, TLS failure."""


class OpenApiTimeout(OpenApiTransportError, TimeoutError):
    """No answer within the client's timeout (connecting, or waiting for data)."""


class BatchWaitTimeout(OpenApiError, TimeoutError):
    """``wait_job_batch`` / ``wait_workflow_batch`` reached its timeout; ``last``
    is the last detail read (still WAITING or RUNNING)."""

    def __init__(self, message: str, *, path: Optional[str] = None, last: Any = None) -> None:
        self.last = last
        super().__init__(message, path=path)
