"""What the dispatcher runs, apart from how it schedules it.

``Work`` is one unit of work (its batch key, parallelism, timeout, context
and how to run it); ``Task`` is a dispatched job task.  ``run_function`` and
``run_coroutine`` call an executor and turn what it did into an
``ExecuteResult`` (also used by worker processes).  The retry feature's
``RetryWork`` is the other kind of ``Work``.

A finished work's outcome goes to the handler its submitter gave
(``Dispatcher.submit(work, done)``): job results to the client's reports,
retry outcomes to the retry endpoint.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import threading
import time
from typing import Any, Callable, Hashable, List, Optional, Tuple, TypeVar

from snailjob import observe
from snailjob.args import JobArgs, ParamsError, prepare_args
from snailjob.context import TaskContext, enter, leave
from snailjob.errors import TaskInterrupted
from snailjob.log import exception_type, format_location, log_exception
from snailjob.observe import TaskInfo, TaskObserver, notify_finished, notify_started
from snailjob.threads import TimerHandle
from snailjob.wire.enums import StatusEnum
from snailjob.wire.models import DispatchJobRequest, ExecuteResult

_remote = logging.getLogger("snailjob.remote")

QUEUED, RUNNING, DONE, STOPPED = "queued", "running", "done", "stopped"  # Work.state

W = TypeVar("W", bound="Work")
Done = Callable[[W, Any], None]
"""A submitter's outcome handler: ``done(work, outcome)``, called on the
thread that ran the work, never while a lock is held; it must not block on
the network, except for one call delivering the outcome when
``work.may_wait`` (the thread has nothing queued to run next)."""


class Work:
    """Something the dispatcher runs: a job task or a server-driven retry.

    Subclasses say which batch it belongs to (``key``: work of one key shares
    at most ``parallel`` workers and ``stop_batch``), its timeout, its stop
    event (its context's own, which the dispatcher sets when the batch is
    stopped), how to run it and how to enter its context."""

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        self.state = QUEUED
        self.thread_id: Optional[int] = None
        self.interrupted = False
        self.finished = False
        self.is_async = False
        self.async_task: Optional[asyncio.Task[None]] = None
        self.timer: Optional[TimerHandle] = None
        self.received = time.monotonic()
        self.received_wall = time.time()
        self.in_process = False  # run by a worker process: never on the event loop
        self.size = 0  # bytes of arguments it holds while it waits (SNAIL_MAX_QUEUED_BYTES)
        self.done: Optional[Callable[[Any, Any], None]] = None  # the submitter's handler (Dispatcher.submit)
        self.may_wait = False
        """Set by the dispatcher as it hands the outcome back on a worker
        thread with no queued work to run next: ``done`` may then deliver the
        outcome with a blocking call (never on an event loop)."""

    @property
    def key(self) -> Hashable:
        raise NotImplementedError

    @property
    def parallel(self) -> int:
        return 1

    @property
    def timeout(self) -> Optional[int]:
        return None

    def describe(self) -> str:
        raise NotImplementedError

    @property
    def stop_event(self) -> threading.Event:
        """Set when the work's batch is stopped or times out (its context's)."""
        raise NotImplementedError

    def enter(self) -> Any:
        """Make the work's context current; the token ``leave`` takes."""
        raise NotImplementedError

    def leave(self, token: Any) -> None:
        raise NotImplementedError

    def run(self) -> Any:
        """Run the function; the outcome handed to ``done``.
        ``TaskInterrupted`` must propagate."""
        raise NotImplementedError

    async def run_async(self) -> Any:
        """``run`` for coroutine functions; cancellation must propagate."""
        raise NotImplementedError


class Task(Work):
    """A dispatched job task."""

    def __init__(self, request: DispatchJobRequest, func: Callable[..., Any], args: JobArgs,
                 context: TaskContext, observers: Tuple[TaskObserver, ...] = (), pool: Any = None) -> None:
        super().__init__(func)
        self.request = request
        self.args = args
        self.context = context
        self.observers = observers
        self.pool = pool  # a processes.ProcessPool: the function runs in one of its workers
        self.in_process = pool is not None
        self.result: Optional[ExecuteResult] = None  # None until the function returned
        self.error: Optional[BaseException] = None
        self._observed: Optional[Tuple[TaskInfo, list, float]] = None
        self.size = len(request.argsStr or "") + len(request.wfContext or "")

    @property
    def key(self) -> Hashable:
        return self.request.taskBatchId

    @property
    def parallel(self) -> int:
        return max(1, min(self.request.parallelNum or 1, 256))

    @property
    def timeout(self) -> Optional[int]:
        return self.request.executorTimeout

    def describe(self) -> str:
        return f"task {self.request.taskId} of batch {self.request.taskBatchId}"

    @property
    def stop_event(self) -> threading.Event:
        return self.context.stop_event

    def enter(self) -> contextvars.Token:
        token = enter(self.context)
        _log_warnings(self)  # inside the task: shipped as its job log
        if self.observers:
            info = TaskInfo.of(self.request, self.is_async)
            self._observed = (info, notify_started(self.observers, info), time.monotonic())
        return token

    def leave(self, token: contextvars.Token) -> None:
        if self._observed is not None:
            info, states, started = self._observed
            result = self.result
            outcome = (observe.STOPPED if result is None
                       else observe.SUCCESS if result.status == StatusEnum.YES else observe.FAILURE)
            notify_finished(self.observers, states, info, outcome, time.monotonic() - started, self.error)
        leave(token)

    def run(self) -> ExecuteResult:
        if self.pool is not None:
            result, self.error = self.pool.run(self, self.context.services)
            self.result = result
            return result
        errors: List[BaseException] = []
        self.result = run_function(self.func, self.args, errors)
        self.error = errors[0] if errors else None
        return self.result

    async def run_async(self) -> ExecuteResult:
        errors: List[BaseException] = []
        self.result = await run_coroutine(self.func, self.args, errors)
        self.error = errors[0] if errors else None
        return self.result


def _log_warnings(task: Task) -> None:
    for warning in task.context.extra.get("warnings", ()):
        _remote.warning("%s", warning)


def is_async_callable(func: Callable[..., Any]) -> bool:
    """True for ``async def`` functions (and objects with an async ``__call__``).
    Asked for every task: the answer for a function is kept."""
    try:
        return _is_async_cached(func)
    except TypeError:  # not hashable
        return _is_async(func)


def _is_async(func: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(func):
        return True
    method = None if inspect.isroutine(func) else vars(type(func)).get("__call__")
    return method is not None and inspect.iscoroutinefunction(method)


_is_async_cached = functools.lru_cache(maxsize=1024)(_is_async)


def _failure(exc: BaseException) -> ExecuteResult:
    """The outcome of an executor that raised.  The message (what alarms
    show) is ``Type: message``; the result is an object, which the console's
    result view shows (it renders only JSON): the exception's type, its
    message and where in the user's code it came from."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    result = {"exception": exception_type(exc), "message": str(exc)}
    if isinstance(exc, ParamsError):
        text = str(exc)
        _remote.error("%s", text)
    else:
        where = log_exception(_remote, "executor raised %s", text, exc=exc)
        if where is not None:
            result["location"] = format_location(*where)
    return ExecuteResult.failure(result=result, message=text)


def _success(value: Any) -> ExecuteResult:
    return value if isinstance(value, ExecuteResult) else ExecuteResult.success(value)


def run_function(func: Callable[..., Any], args: JobArgs,
                 errors: Optional[List[BaseException]] = None) -> ExecuteResult:
    """Call an executor and turn what it did into an ``ExecuteResult``:
    an ``ExecuteResult`` as given, ``None`` or any other value as success
    (the value is the result), an exception as failure with its text (and
    appended to ``errors``).  Declared parameter types are applied first
    (``ParamsError`` = failure)."""
    try:
        value = func(prepare_args(func, args))
    except TaskInterrupted:
        raise
    except BaseException as exc:  # SystemExit in a job must not end the worker
        if errors is not None:
            errors.append(exc)
        return _failure(exc)
    return _success(value)


async def run_coroutine(func: Callable[..., Any], args: JobArgs,
                        errors: Optional[List[BaseException]] = None) -> ExecuteResult:
    """``run_function`` for coroutine functions; cancellation propagates."""
    try:
        value = await func(prepare_args(func, args))
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        if errors is not None:
            errors.append(exc)
        return _failure(exc)
    return _success(value)
