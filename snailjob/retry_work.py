"""Server-driven runs of a ``@retryable`` function, as the dispatcher sees them.

``RetryWork`` is one replay (``/retry/dispatch/v1``) or completion callback
(``/retry/callback/v1``) submitted by ``snailjob.retry_endpoint`` to the
client's dispatcher, and ``RetryOutcome`` how it ended.  Kept apart from
``snailjob.retry`` (the decorator users see) because this is the
dispatcher's side of the feature: it subclasses ``snailjob.work.Work``,
and only a client that receives a replay loads it.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Optional, Tuple

from pydantic_core import to_jsonable_python

from snailjob import retry_site
from snailjob.context import RetryContext, enter_retry, leave_retry
from snailjob.errors import TaskInterrupted
from snailjob.log import log_exception
from snailjob.retry import REPLAY, RetryResult, StopRetry, _in_retry, exception_text
from snailjob.wire.codec import dumps
from snailjob.wire.enums import RetryTaskStatusEnum
from snailjob.work import Work

_remote = logging.getLogger("snailjob.remote")


@dataclass(frozen=True)
class RetryOutcome:
    """How a server-driven run ended: ``status`` 3 SUCCESS or 4 FAIL;
    ``stop`` when the function raised ``StopRetry``."""

    status: int
    result: Optional[str] = None
    exception: Optional[str] = None
    stop: bool = False


class RetryWork(Work):
    """A server-driven replay or completion callback, run by the dispatcher
    on a worker thread (or the event loop for coroutines) under the key
    ``retry-<retryTaskId>``: ``/retry/stop/v1`` and the ``executorTimeout``
    stop it like a batch.  One attempt per dispatch: local retries and
    reports are off during the run (the server owns the backoff)."""

    def __init__(self, func: Callable[[], Any], context: RetryContext, timeout: Optional[int],
                 request: Any) -> None:
        super().__init__(func)
        self.context = context
        self.request = request
        self._timeout = timeout
        self.site: Optional[retry_site.RetrySite] = None  # a replay's scope, set when it runs

    @property
    def key(self) -> Hashable:
        return f"retry-{self.context.retry_task_id}"

    @property
    def timeout(self) -> Optional[int]:
        return self._timeout

    def describe(self) -> str:
        c = self.context
        return f"{c.kind} {c.retry_task_id} of scene {c.scene} ({c.executor_name})"

    @property
    def stop_event(self) -> threading.Event:
        return self.context.stop_event

    def enter(self) -> Tuple[contextvars.Token, contextvars.Token, Optional[contextvars.Token]]:
        site = None
        if self.context.kind == "retry":  # calls sent from a replay carry the snail-job header
            self.site, site = retry_site.enter(str(self.context.retry_id), self._ddl_ms())
        return enter_retry(self.context), _in_retry.set((REPLAY, None)), site

    def leave(self, token: Tuple[contextvars.Token, contextvars.Token, Optional[contextvars.Token]]) -> None:
        if token[2] is not None:
            retry_site.leave(token[2])
        _in_retry.reset(token[1])
        leave_retry(token[0])

    def _ddl_ms(self) -> int:
        """The chain budget of a replay: the default (or the scene's ``ddl``
        hook), at most the replay's own ``executorTimeout``.  (The server's
        ``snail-job`` dispatch header carries that timeout in seconds as its
        ``ddl``; the Java client does not read it.)"""
        ddl = retry_site.DEFAULT_DDL_MS
        return min(ddl, self._timeout * 1000) if self._timeout and self._timeout > 0 else ddl

    def run(self) -> RetryOutcome:
        try:
            return self._success(self.func())
        except TaskInterrupted:
            raise
        except BaseException as exc:
            return self._failure(exc)

    async def run_async(self) -> RetryOutcome:
        try:
            return self._success(await self.func())
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            return self._failure(exc)

    def _success(self, value: Any) -> RetryOutcome:
        _remote.info("%s succeeded", self.describe())
        return RetryOutcome(int(RetryTaskStatusEnum.SUCCESS), result=result_text(value))

    def _failure(self, exc: BaseException) -> RetryOutcome:
        text = exception_text(exc)
        if self.site is not None and self.site.refused and not isinstance(exc, StopRetry):
            # Java's STOP "Downstream marks no need for retry"; sent as a StopRetry (see StopRetry)
            exc = StopRetry(f"a downstream service answered {retry_site.STATUS_HEADER}: {retry_site.NO_RETRY} "
                            f"(it owns the retry); {text}")
            text = exception_text(exc)
        if isinstance(exc, StopRetry) and self.context.kind == "retry":
            _remote.warning("%s asked to stop retrying: %s", self.describe(), text)
            return RetryOutcome(int(RetryTaskStatusEnum.FAIL), exception=text, stop=True)
        if isinstance(exc, RetryResult):  # not an error of the code: no traceback
            _remote.warning("%s: %s", self.describe(), text)
        else:
            log_exception(_remote, "%s failed: %s", self.describe(), text, exc=exc)
        return RetryOutcome(int(RetryTaskStatusEnum.FAIL), exception=text)


def result_text(value: Any) -> Optional[str]:
    """A replay's return value as the text the server stores (JSON)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    try:
        return dumps(to_jsonable_python(value))
    except Exception:  # not JSON: its repr, so the console shows something
        return repr(value)[:2000]
