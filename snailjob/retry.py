"""Distributed retry: ``@retryable`` functions, retried in place first and
then handed to the SnailJob server, which replays them on a client later.

A call of a ``@retryable`` function runs the function; when it raises an
exception the filters accept, it is retried in the calling thread (or
task) ``local_times`` times, ``local_interval`` seconds apart (fixed or
exponential, with optional jitter).  If it still fails, the call (scene,
function, arguments) is queued for ``/batch/report`` and the caller gets
the last exception (or the ``fallback``).  The server then dispatches the
call back to a client of the group (``/retry/dispatch/v1``) with its own
backoff until it succeeds or reaches the scene's maximum count, and calls
the completion callback (``/retry/callback/v1``) when the scene has one.

This module is the feature's public face: the decorator, ``Retryable`` and
its local attempts, the enums and ``StopRetry``.  The argument codec and the
server's limits are in ``snailjob.retry_args``; server replays and callbacks
run on the dispatcher as ``RetryWork`` (``snailjob.retry_work``, above this
module); ``RetryRegistry`` (``snailjob.retry_registry``, below it, importing
nothing of the feature) holds the functions a client serves.

Limits, stated plainly:

* Remote retries replay a *function call*: decorate module-level functions
  (or static methods).  A method's ``self`` cannot be sent to the server,
  so methods are refused at decoration unless the strategy is local only.
* The server keeps one *running* retry per (scene, idempotent id): reporting
  the same call again while it is retried is a no-op there.
* Local retries block the calling thread (``time.sleep``) or await
  (``asyncio.sleep``); inside a SnailJob task the wait ends early when the
  task is stopped, and the last exception is raised.
* No nested retries by default: a ``@retryable`` function called while
  another retry (local or server-driven) is in progress in the same thread
  or asyncio task runs once, without retries or reports; with
  ``propagation="requires_new"`` it has its own retry when called inside
  another's *call* (never inside a server replay).  The state is a context
  variable: other threads and other asyncio tasks are independent.
* Across services (``snailjob.retry_site``): HTTP calls an attempt sends
  through the propagation hooks carry the ``snail-job`` header; a retryable
  run while serving such a request runs once; one whose call was answered
  ``snail-job-status: 519`` is neither retried nor reported.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import random
import sys
import time
import weakref
from typing import Any, Callable, Dict, Generic, Iterable, Optional, Tuple, Type, TypeVar, Union

from snailjob import retry_args, retry_site
from snailjob.context import current_task_or_none
from snailjob.errors import RetryDefinitionError, RetryReportError, SnailJobError
from snailjob.retry_args import (  # noqa: F401  (re-exported: snailjob.retry names them as before)
    MAX_ARGS_DEPTH,
    MAX_BIZ_NO,
    MAX_EXECUTOR_NAME,
    MAX_IDEMPOTENT_ID,
    MAX_NUMBER_DIGITS,
    MAX_SCENE,
    SERIALIZER_NAME,
    default_idempotent_id,
)
from snailjob.retry_registry import RetryableBase, RetryRegistry, RetrySink
from snailjob.retry_types import Backoff, Propagation, RetryCall, RetryResult, RetryStrategy, StopRetry
from snailjob.wire.models import RetryTaskRequest

if sys.version_info >= (3, 10):
    from typing import ParamSpec
else:  # pragma: no cover
    from typing_extensions import ParamSpec

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


CALL = "call"
"""The stage of a ``@retryable`` call: its first attempt and local retries."""
REPLAY = "replay"
"""The stage of a server replay or completion callback."""

# Which retry runs in this thread or asyncio task: None, or (stage, the
# Retryable whose call it is; None for a replay).  Set for the whole call, so
# a retryable called inside knows it is nested (Propagation).
_in_retry: contextvars.ContextVar[Optional[Tuple[str, Any]]] = contextvars.ContextVar(
    "snailjob_in_retry", default=None)


def in_retry() -> bool:
    """True while a retry (a ``@retryable`` call or a server replay) runs
    in this thread or asyncio task."""
    return _in_retry.get() is not None


def in_replay() -> bool:
    """True while a server replay or completion callback runs in this
    thread or asyncio task."""
    site = _in_retry.get()
    return site is not None and site[0] == REPLAY


class Retryable(RetryableBase, Generic[P, R]):
    """A function decorated with ``@retryable``.  Call it like the function;
    ``report(*args, **kwargs)`` hands a call to the server without running
    it.  Register it with a client (``Client(executors=[...])`` or
    ``ExecutorManager.register``) so that reports have somewhere to go and
    server replays find it."""

    def __init__(self, func: Callable[P, R], scene: str, *,
                 include: Iterable[Type[BaseException]] = (),
                 exclude: Iterable[Type[BaseException]] = (),
                 strategy: Union[RetryStrategy, str] = RetryStrategy.LOCAL_REMOTE,
                 local_times: int = 3, local_interval: float = 2.0,
                 backoff: Union[Backoff, str] = Backoff.FIXED, max_interval: float = 60.0,
                 jitter: float = 0.0,
                 idempotent_id: Optional[Callable[..., str]] = None,
                 biz_no: Union[None, str, Callable[..., Any]] = None,
                 on_success: Optional[Callable[[RetryCall], Any]] = None,
                 on_max_count: Optional[Callable[[RetryCall], Any]] = None,
                 throw: bool = True, fallback: Any = None,
                 executor_name: Optional[str] = None,
                 retry_if_result: Optional[Callable[[Any], bool]] = None,
                 report_timeout: Optional[float] = None,
                 propagation: Union[Propagation, str] = Propagation.REQUIRED,
                 retry_with: Optional[Callable[..., Any]] = None,
                 force_report: bool = False) -> None:
        if not callable(func):
            raise RetryDefinitionError("@retryable must decorate a function")
        self.func = func
        self.scene, self.executor_name = retry_args.wire_names(scene, executor_name, func)
        self.include = _exception_types(include, "include")
        self.exclude = _exception_types(exclude, "exclude")
        try:
            self.strategy = RetryStrategy(strategy)
            self.backoff = Backoff(backoff)
            self.propagation = Propagation(propagation)
        except ValueError as exc:
            raise RetryDefinitionError(f"@retryable({scene!r}): {exc}") from None
        if local_times < 0 or local_interval < 0 or max_interval < 0 or not 0 <= jitter <= 1:
            raise RetryDefinitionError(
                f"@retryable({scene!r}): local_times, local_interval and max_interval must be >= 0 "
                "and jitter between 0 and 1")
        self.local_times = int(local_times)
        self.local_interval = float(local_interval)
        self.max_interval = float(max_interval)
        self.jitter = float(jitter)
        self.idempotent_id = idempotent_id
        self.biz_no = biz_no
        self.on_success = on_success
        self.on_max_count = on_max_count
        self.throw = throw
        self.fallback = fallback
        if retry_if_result is not None and not callable(retry_if_result):
            raise RetryDefinitionError(f"@retryable({scene!r}): retry_if_result must be a function of the result")
        self.retry_if_result = retry_if_result
        if report_timeout is not None and not report_timeout > 0:
            raise RetryDefinitionError(f"@retryable({scene!r}): report_timeout must be > 0 seconds (or None)")
        self.report_timeout = report_timeout
        self.is_async = inspect.iscoroutinefunction(func)
        self.signature = inspect.signature(func)
        self.retry_with = retry_with
        self._target: Callable[..., Any] = func
        if retry_with is not None:
            self._target = retry_args.retry_target(retry_with, func, self.signature, self.is_async, self.scene)
        self.force_report = bool(force_report)
        if self.strategy is not RetryStrategy.LOCAL_ONLY:
            retry_args.check_sendable(self.signature, scene=self.scene, executor_name=self.executor_name)
        self._adapters = retry_args.ParameterAdapters(
            func, self.signature, scene=self.scene, executor_name=self.executor_name,
            local_only=self.strategy is RetryStrategy.LOCAL_ONLY)
        self._sinks: weakref.WeakSet[Any] = weakref.WeakSet()  # registries holding this
        functools.update_wrapper(self, func)

    # --- calling --------------------------------------------------------

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        if self.is_async:
            return self._call_async(args, kwargs)  # type: ignore[return-value]
        if retry_site.in_retry_flow() or self._joins():  # the caller's service or call owns the retry
            return self.func(*args, **kwargs)
        token = _in_retry.set((CALL, self))
        try:
            return self._call_sync(args, kwargs)
        finally:
            _in_retry.reset(token)

    def _joins(self) -> bool:
        """True when this call runs once inside a retry already in progress
        (see ``Propagation``)."""
        site = _in_retry.get()
        if site is None:
            return False
        stage, owner = site
        return not (stage == CALL and owner is not self and self.propagation is Propagation.REQUIRES_NEW)

    def _call_sync(self, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> R:
        ok, outcome = self._attempt_sync(self.func, args, kwargs)
        if ok:
            return outcome
        if self.strategy is not RetryStrategy.REMOTE_ONLY:
            for attempt in range(1, self.local_times + 1):
                if _wait(self.delay(attempt)):
                    break  # the job running this call was stopped
                logger.info("retry %d/%d of %s (scene %s) after %s", attempt, self.local_times,
                            self.executor_name, self.scene, _describe(outcome))
                ok, outcome = self._attempt_sync(self._target, args, kwargs)
                if ok:
                    return outcome
        return self._give_up(outcome, args, kwargs)

    def _attempt_sync(self, func: Callable[..., Any], args: Tuple[Any, ...],
                      kwargs: Dict[str, Any]) -> Tuple[bool, Any]:
        """``(True, value)`` or ``(False, exception to retry)``; an exception
        not to retry is raised."""
        try:
            with retry_site.attempt(retry_site.scene_ddl_ms(self._sink(), self.scene)) as site:
                value = func(*args, **kwargs)
        except StopRetry:
            raise
        except Exception as exc:
            if not self.should_retry(exc) or site.refused:  # a downstream owns the retry
                raise
            return False, exc
        return self._checked(value, site)

    def _checked(self, value: Any, site: Optional[retry_site.RetrySite] = None) -> Tuple[bool, Any]:
        """``(True, value)``, or ``(False, RetryResult(value))`` when
        ``retry_if_result`` asks for a retry (and no downstream of the
        attempt ``site`` answered 519).  A predicate that raises is
        logged and the value kept (a bug in it must not turn results into
        retries)."""
        if self.retry_if_result is None or (site is not None and site.refused):
            return True, value
        try:
            again = bool(self.retry_if_result(value))
        except Exception:
            logger.exception("retry_if_result of %s (scene %s) raised; the result is kept",
                             self.executor_name, self.scene)
            return True, value
        return (False, RetryResult(value)) if again else (True, value)

    def replay(self, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Callable[[], Any]:
        """The one attempt of a server replay: the function (or its
        ``retry_with``) on these arguments, raising ``RetryResult`` when
        ``retry_if_result`` asks for another (so the replay is reported as a
        failure)."""
        target = self._target
        if self.is_async:
            async def attempt_async() -> Any:
                return self._replayed(await target(*args, **kwargs))

            return attempt_async

        def attempt() -> Any:
            return self._replayed(target(*args, **kwargs))

        return attempt

    def _replayed(self, value: Any) -> Any:
        ok, outcome = self._checked(value)
        if not ok:
            raise outcome
        return value

    async def _call_async(self, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
        if retry_site.in_retry_flow() or self._joins():
            return await self.func(*args, **kwargs)  # type: ignore[misc]
        token = _in_retry.set((CALL, self))
        try:
            ok, last = await self._attempt_async(self.func, args, kwargs)
            if ok:
                return last
            if self.strategy is not RetryStrategy.REMOTE_ONLY:
                for attempt in range(1, self.local_times + 1):
                    await asyncio.sleep(self.delay(attempt))
                    logger.info("retry %d/%d of %s (scene %s) after %s", attempt, self.local_times,
                                self.executor_name, self.scene, _describe(last))
                    ok, last = await self._attempt_async(self._target, args, kwargs)
                    if ok:
                        return last
            return self._give_up(last, args, kwargs)
        finally:
            _in_retry.reset(token)

    async def _attempt_async(self, func: Callable[..., Any], args: Tuple[Any, ...],
                             kwargs: Dict[str, Any]) -> Tuple[bool, Any]:
        """``_attempt_sync`` for coroutine functions."""
        try:
            with retry_site.attempt(retry_site.scene_ddl_ms(self._sink(), self.scene)) as site:
                value = await func(*args, **kwargs)
        except StopRetry:
            raise
        except Exception as exc:
            if not self.should_retry(exc) or site.refused:  # a downstream owns the retry
                raise
            return False, exc
        return self._checked(value, site)

    def _give_up(self, last: BaseException, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
        """Local attempts are over: report (unless local only), then raise
        ``last`` or return the fallback; after a result that asked for a
        retry, return that result (or the fallback with ``throw=False``)."""
        if self.strategy is not RetryStrategy.LOCAL_ONLY:
            try:
                self.report(*args, **kwargs)
            except RetryReportError as exc:  # asked to know: the caller learns the server does not have it
                raise exc from (None if isinstance(last, RetryResult) else last)
            except SnailJobError as exc:
                logger.error("could not hand %s (scene %s) to the server: %s",
                             self.executor_name, self.scene, exc)
            except Exception:  # the caller gets its own exception, not one of the id/bizNo functions
                logger.exception("could not hand %s (scene %s) to the server: its idempotent_id or biz_no "
                                 "function failed", self.executor_name, self.scene)
        if isinstance(last, RetryResult):
            if self.throw or self.fallback is None:
                return last.value
        elif self.throw:
            raise last
        if callable(self.fallback):
            return self.fallback(last, *args, **kwargs)
        return self.fallback

    def should_retry(self, exc: BaseException) -> bool:
        """The exception filters, as the Java client applies them: with
        neither, every exception is retried; an ``include`` match is
        retried (even if ``exclude`` matches too); otherwise, with
        ``exclude`` given, what it does not match is retried (whether or not
        ``include`` is given); with only ``include`` given, nothing else is.
        ``StopRetry`` never is."""
        if isinstance(exc, StopRetry):
            return False
        if self.include and isinstance(exc, self.include):
            return True
        if self.exclude:
            return not isinstance(exc, self.exclude)
        return not self.include

    def delay(self, attempt: int) -> float:
        """Seconds to wait before local attempt ``attempt`` (1-based)."""
        base = self.local_interval
        if self.backoff is Backoff.EXPONENTIAL:
            base = self.local_interval * (2 ** min(attempt - 1, 30))
        base = min(base, self.max_interval)
        return base * (1 - random.uniform(0, self.jitter)) if self.jitter else base

    # --- reporting --------------------------------------------------------

    def report(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """Hand this call to the server without running it (the manual API);
        returns the call's idempotent id.  The report is queued and sent in
        the background by the client this function is registered with; with
        ``report_timeout`` it is sent at once and this returns when the
        server took it.

        Raises ``RetrySerializationError`` when an argument cannot be sent,
        ``SnailJobError`` when no running client has this function, and
        ``RetryReportError`` when a synchronous report was not taken."""
        request = self.build_report(args, kwargs)
        if in_replay() and not self.force_report:
            logger.info("%s (scene %s) not reported: called inside a server replay, whose outcome the server "
                        "already gets (force_report=True reports it anyway)", self.executor_name, self.scene)
            return request.idempotentId
        sink = self._sink()
        if sink is None:
            raise SnailJobError(
                f"no running SnailJob client has retryable {self.executor_name} (scene {self.scene}); "
                "register it (Client(executors=[...]) or ExecutorManager.register) and start the client")
        if self.report_timeout is not None:
            sink.send_retry_report(request, self.report_timeout)
        else:
            sink.queue_retry_report(request)
        retry_site.mark_reported()  # the request being served answers 519: its caller does not retry too
        logger.info("handed %s (scene %s, idempotent id %s) to the server",
                    self.executor_name, self.scene, request.idempotentId)
        return request.idempotentId

    def build_report(self, args: Tuple[Any, ...], kwargs: Dict[str, Any], group: str = "") -> RetryTaskRequest:
        """The ``/batch/report`` element for a call (``group`` is set by the
        client that sends it)."""
        args_str = self.encode_args(args, kwargs)
        return RetryTaskRequest(
            groupName=group, sceneName=self.scene, executorName=self.executor_name,
            idempotentId=self.idempotent_id_for(args, kwargs, args_str),
            bizNo=self.biz_no_for(args, kwargs), argsStr=args_str, extAttrs="",
            serializerName=SERIALIZER_NAME)

    def idempotent_id_for(self, args: Tuple[Any, ...], kwargs: Dict[str, Any], args_str: str) -> str:
        return retry_args.idempotent_id(self.idempotent_id, args, kwargs, scene=self.scene,
                                        executor_name=self.executor_name, args_str=args_str)

    def biz_no_for(self, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> str:
        return retry_args.business_number(self.biz_no, self.signature, args, kwargs,
                                          executor_name=self.executor_name)

    # --- arguments ----------------------------------------------------------

    def encode_args(self, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> str:
        """The call's ``argsStr``: a JSON array, one element per parameter."""
        return retry_args.encode_args(self.signature, args, kwargs, scene=self.scene,
                                      executor_name=self.executor_name)

    def decode_args(self, args_str: Optional[str]) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
        """``argsStr`` (text from the server) back to ``(args, kwargs)``;
        annotated parameters are converted to their declared type.

        Raises ``RetrySerializationError`` naming the scene and what is wrong
        with the arguments (see ``snailjob.retry_args.decode_args``), so a bad
        replay is refused before the function runs."""
        return retry_args.decode_args(self.signature, args_str, self._adapters, scene=self.scene,
                                      name=self._short_name())

    def _short_name(self) -> str:
        return str(getattr(self.func, "__name__", self.executor_name))

    # --- registration ----------------------------------------------------

    def _attach(self, registry: RetryRegistry) -> None:
        self._sinks.add(registry)

    def _sink(self) -> Optional[RetrySink]:
        for registry in list(self._sinks):
            sink = registry.sink
            if sink is not None:
                return sink
        return None

    def __repr__(self) -> str:
        return f"<retryable {self.executor_name} scene={self.scene!r} strategy={self.strategy.value}>"

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        # as a method (local-only strategies): bind like a function would
        return self if obj is None else functools.partial(self, obj)


def retryable(scene: str, *,
              include: Iterable[Type[BaseException]] = (),
              exclude: Iterable[Type[BaseException]] = (),
              strategy: Union[RetryStrategy, str] = RetryStrategy.LOCAL_REMOTE,
              local_times: int = 3, local_interval: float = 2.0,
              backoff: Union[Backoff, str] = Backoff.FIXED, max_interval: float = 60.0,
              jitter: float = 0.0,
              idempotent_id: Optional[Callable[..., str]] = None,
              biz_no: Union[None, str, Callable[..., Any]] = None,
              on_success: Optional[Callable[[RetryCall], Any]] = None,
              on_max_count: Optional[Callable[[RetryCall], Any]] = None,
              throw: bool = True, fallback: Any = None,
              executor_name: Optional[str] = None,
              retry_if_result: Optional[Callable[[Any], bool]] = None,
              report_timeout: Optional[float] = None,
              propagation: Union[Propagation, str] = Propagation.REQUIRED,
              retry_with: Optional[Callable[..., Any]] = None,
              force_report: bool = False) -> Callable[[Callable[P, R]], Retryable[P, R]]:
    """Make a function retryable under the server's retry ``scene``.

    ``include`` / ``exclude``: exception types to retry and not to retry,
    by the Java client's rules (``Retryable.should_retry``): an ``include``
    match is retried, then anything ``exclude`` does not match when it is
    given; with only ``include``, only what it matches; with neither, every
    ``Exception``.  ``strategy``: local then remote
    (default), local only, remote only.  ``local_times`` extra attempts in
    place, ``local_interval`` seconds apart (``backoff="exponential"``
    doubles it each time up to ``max_interval``; ``jitter`` 0..1 shortens
    each wait by a random fraction up to that much).  ``idempotent_id``
    (called with the call's arguments) replaces the default id, an MD5 of
    scene, executor name and arguments.  ``biz_no``: the name of a
    parameter, or a function of the arguments, giving the business number
    shown in the console.  ``on_success`` / ``on_max_count`` run on the
    client when the server reports that a remote retry finally succeeded or
    gave up (the scene must have its callback enabled).  After the local
    attempts, the last exception is raised (``throw=True``) or ``fallback``
    is returned (called as ``fallback(exc, *args, **kwargs)`` if callable).
    ``executor_name`` defaults to ``module.qualname`` of the function.
    ``retry_if_result``: a function of the return value; when it answers
    true the call is retried as after an exception (Java's
    ``retryIfResult``): the local attempts, then the report; the caller then
    gets the last value returned (or, with ``throw=False``, the fallback,
    called with a ``RetryResult``).  A server replay whose value it asks to
    retry is reported as a failure, so the server replays it again.
    ``report_timeout`` (seconds): report synchronously (Java's
    ``async=false``): the call is sent at once and the caller waits until
    the server took it, or gets ``RetryReportError`` (chained to the
    call's own exception) when it did not within that time; default: in
    the background, batched, kept while the server is away.
    ``propagation``: ``"required"`` (default) runs a retryable called inside
    another's call once, leaving the retry to the outer call;
    ``"requires_new"`` gives it a retry of its own (``Propagation``).
    ``retry_with`` (Java's ``retryMethod``): a function taking the same
    arguments that the local retries and the server's replays call instead
    of the decorated one (the first attempt is the decorated function; a
    coroutine function needs a coroutine function).  ``force_report``:
    ``report()`` called inside a server replay sends the report (default:
    it is skipped, as the Java client does, since the replay's own outcome
    reaches the server).
    """

    def decorator(func: Callable[P, R]) -> Retryable[P, R]:
        return Retryable(func, scene, include=include, exclude=exclude, strategy=strategy,
                         local_times=local_times, local_interval=local_interval, backoff=backoff,
                         max_interval=max_interval, jitter=jitter, idempotent_id=idempotent_id,
                         biz_no=biz_no, on_success=on_success, on_max_count=on_max_count, throw=throw,
                         fallback=fallback, executor_name=executor_name, retry_if_result=retry_if_result,
                         report_timeout=report_timeout, propagation=propagation, retry_with=retry_with,
                         force_report=force_report)

    return decorator


# --- helpers ----------------------------------------------------------------


def _wait(seconds: float) -> bool:
    """Sleep; inside a SnailJob task, end early (True) when it is stopped."""
    if seconds <= 0:
        return False
    task = current_task_or_none()
    if task is not None:
        return task.stop_event.wait(seconds)
    time.sleep(seconds)
    return False


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _exception_types(types: Iterable[Type[BaseException]], what: str) -> Tuple[Type[BaseException], ...]:
    result: Tuple[Any, ...] = (types,) if isinstance(types, type) else tuple(types)
    for item in result:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise RetryDefinitionError(f"{what} must list exception classes, got {item!r}")
    return result


def exception_text(exc: BaseException, limit: int = 2000) -> str:
    """``Type: message`` of an exception, cut to ``limit`` characters."""
    text = _describe(exc)
    return text if len(text) <= limit else text[:limit] + "..."


__all__ = [
    "Backoff",
    "Propagation",
    "RetryCall",
    "RetryRegistry",
    "RetryResult",
    "RetryStrategy",
    "Retryable",
    "StopRetry",
    "default_idempotent_id",
    "in_replay",
    "in_retry",
    "retryable",
]
