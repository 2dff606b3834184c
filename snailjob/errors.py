"""The exception tree of snailjob.

``SnailJobError`` is the base (and the 0.1.3 name).  ``TaskInterrupted`` is
deliberately *not* an ``Exception``: it is raised inside a job's thread to stop
it, and a job's ``except Exception`` must not swallow it.
"""

from __future__ import annotations


class SnailJobError(RuntimeError):
    """Base class of every error raised by snailjob."""


class ConfigurationError(SnailJobError):
    """A setting has an invalid value; the message names the variable."""


class OutboxError(ConfigurationError):
    """The outbox file (``SNAIL_OUTBOX_PATH``) cannot be used safely: it or its
    directory belongs to another user or is writable by others, it is a
    symlink, another client holds it, or it is not a readable SnailJob outbox.
    The message names the variable, the path, the problem and what to do."""


class ExecutorRegistrationError(SnailJobError):
    """An executor could not be registered (wrong type, duplicate name...)."""


class MapError(SnailJobError):
    """``mr_do_map`` was called wrongly or the server refused the sub-tasks."""


class NotInJobError(SnailJobError):
    """A job-context API was called outside a running job."""


class TransportError(SnailJobError):
    """A call to the server failed at the gRPC level; ``code`` is the gRPC
    status name (``UNAVAILABLE``, ``DEADLINE_EXCEEDED``...)."""

    def __init__(self, message: str, code: str = "UNKNOWN") -> None:
        super().__init__(message)
        self.code = code


class RetryDefinitionError(SnailJobError):
    """A ``@retryable`` declaration is invalid (blank scene, a method with a
    remote strategy, a parameter type that cannot be sent...)."""


class RetrySerializationError(SnailJobError):
    """A retryable call's arguments cannot be sent to the server, or a
    server replay's arguments cannot be decoded; the message names the
    parameter."""


class RetryReportError(SnailJobError):
    """A ``@retryable`` call reported synchronously (``report_timeout``) that
    the server did not take within the timeout: unreachable, or it refused
    the report (the message gives its reason).  The call is not retried by
    the server."""


class TaskInterrupted(BaseException):
    """Raised inside a job's thread when its batch is stopped or times out.

    It derives from ``BaseException`` so that ``except Exception`` in job code
    does not catch it.  Catch it only to clean up, then re-raise.
    """
