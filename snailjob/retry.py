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

Arguments travel as a JSON array with one element per parameter of the
function, in declaration order (the format SnailJob's ``jackson``
serializer uses, hence that serializer name): ``*args`` as a nested array,
``**kwargs`` as a nested object.  Values are converted with pydantic
(dataclasses, pydantic models, dates, decimals, UUIDs...); on a replay,
annotated parameters are converted back to their declared type, others
stay plain JSON values.

Limits, stated plainly:

* Remote retries replay a *function call*: decorate module-level functions
  (or static methods).  A method's ``self`` cannot be sent to the server,
  so methods are refused at decoration unless the strategy is local only.
* The server keeps one *running* retry per (scene, idempotent id): reporting
  the same call again while it is retried is a no-op there.
* Local retries block the calling thread (``time.sleep``) or await
  (``asyncio.sleep``); inside a SnailJob task the wait ends early when the
  task is stopped, and the last exception is raised.
* No nested retries: a ``@retryable`` function called while another retry
  (local or server-driven) is in progress in the same thread or asyncio
  task runs once, without retries or reports.  The state is a context
  variable: other threads and other asyncio tasks are independent.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import hashlib
import inspect
import json
import logging
import random
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from enum import Enum
from typing import (
    Any,
    Callable,
    Dict,
    Generic,
    Hashable,
    Iterable,
    List,
    Optional,
    Protocol,
    Tuple,
    Type,
    TypeVar,
    Union,
    cast,
    get_type_hints,
)

from pydantic import TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError, to_jsonable_python

from snailjob.context import RetryContext, current_task_or_none, enter_retry, leave_retry
from snailjob.errors import RetryDefinitionError, RetrySerializationError, SnailJobError, TaskInterrupted
from snailjob.log import log_exception
from snailjob.retry_registry import RetryRegistry
from snailjob.wire.codec import clean, dumps, location, short, too_deep
from snailjob.wire.enums import RetryTaskStatusEnum
from snailjob.wire.models import RetryTaskRequest
from snailjob.work import Work

if sys.version_info >= (3, 10):
    from typing import ParamSpec
else:  # pragma: no cover
    from typing_extensions import ParamSpec

logger = logging.getLogger(__name__)
_remote = logging.getLogger("snailjob.remote")

P = ParamSpec("P")
R = TypeVar("R")

SERIALIZER_NAME = "jackson"
"""``serializerName`` of every report: the argument format is that of
SnailJob's ``jackson`` serializer (a JSON array, one element per parameter)."""

MAX_SCENE = 64
MAX_IDEMPOTENT_ID = 64
MAX_BIZ_NO = 64
MAX_EXECUTOR_NAME = 512
MAX_ARGS_DEPTH = 200
"""Deepest nesting of arrays/objects accepted in a replay's ``argsStr``."""
MAX_NUMBER_DIGITS = 4300
"""Longest number accepted in a replay's ``argsStr`` (Python's own limit for
converting text to ``int``)."""


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


class RetrySink(Protocol):
    """Where reports go: a running client (set by the client at start)."""

    def queue_retry_report(self, request: RetryTaskRequest) -> None: ...


_in_retry: contextvars.ContextVar[bool] = contextvars.ContextVar("snailjob_in_retry", default=False)


def in_retry() -> bool:
    """True while a retry (local attempts or a server replay) runs in this
    thread or asyncio task."""
    return _in_retry.get()


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def default_idempotent_id(scene: str, executor_name: str, args_str: str) -> str:
    """The default idempotent id: MD5 (hex) of ``scene_executorName_argsStr``;
    stable across processes and Python versions."""
    return _md5(f"{scene}_{executor_name}_{args_str}")


class Retryable(Generic[P, R]):
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
                 executor_name: Optional[str] = None) -> None:
        if not callable(func):
            raise RetryDefinitionError("@retryable must decorate a function")
        self.func = func
        self.scene = _check_text(scene, "scene", MAX_SCENE)
        self.executor_name = _check_text(executor_name or _qualified_name(func), "executor name",
                                         MAX_EXECUTOR_NAME)
        self.include = _exception_types(include, "include")
        self.exclude = _exception_types(exclude, "exclude")
        try:
            self.strategy = RetryStrategy(strategy)
            self.backoff = Backoff(backoff)
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
        self.is_async = inspect.iscoroutinefunction(func)
        self.signature = inspect.signature(func)
        self._check_parameters()
        self._adapter_cache: Optional[Dict[str, TypeAdapter[Any]]] = None
        try:
            self._adapter_cache = self._parameter_adapters()
        except NameError:
            pass  # a forward reference defined later in the module: resolved on first use
        self._sinks: weakref.WeakSet[Any] = weakref.WeakSet()  # registries holding this
        functools.update_wrapper(self, func)

    # --- calling --------------------------------------------------------

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        if self.is_async:
            return self._call_async(args, kwargs)  # type: ignore[return-value]
        if _in_retry.get():
            return self.func(*args, **kwargs)
        token = _in_retry.set(True)
        try:
            return self._call_sync(args, kwargs)
        finally:
            _in_retry.reset(token)

    def _call_sync(self, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> R:
        ok, outcome = self._attempt_sync(args, kwargs)
        if ok:
            return outcome
        if self.strategy is not RetryStrategy.REMOTE_ONLY:
            for attempt in range(1, self.local_times + 1):
                if _wait(self.delay(attempt)):
                    break  # the job running this call was stopped
                logger.info("retry %d/%d of %s (scene %s) after %s", attempt, self.local_times,
                            self.executor_name, self.scene, _describe(outcome))
                ok, outcome = self._attempt_sync(args, kwargs)
                if ok:
                    return outcome
        return self._give_up(outcome, args, kwargs)

    def _attempt_sync(self, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Tuple[bool, Any]:
        """``(True, value)`` or ``(False, exception to retry)``; an exception
        not to retry is raised."""
        try:
            return True, self.func(*args, **kwargs)
        except StopRetry:
            raise
        except Exception as exc:
            if not self.should_retry(exc):
                raise
            return False, exc

    async def _call_async(self, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
        if _in_retry.get():
            return await self.func(*args, **kwargs)  # type: ignore[misc]
        token = _in_retry.set(True)
        try:
            last: BaseException
            try:
                return await self.func(*args, **kwargs)  # type: ignore[misc]
            except StopRetry:
                raise
            except Exception as exc:
                if not self.should_retry(exc):
                    raise
                last = exc
            if self.strategy is not RetryStrategy.REMOTE_ONLY:
                for attempt in range(1, self.local_times + 1):
                    await asyncio.sleep(self.delay(attempt))
                    logger.info("retry %d/%d of %s (scene %s) after %s", attempt, self.local_times,
                                self.executor_name, self.scene, _describe(last))
                    try:
                        return await self.func(*args, **kwargs)  # type: ignore[misc]
                    except StopRetry:
                        raise
                    except Exception as exc:
                        if not self.should_retry(exc):
                            raise
                        last = exc
            return self._give_up(last, args, kwargs)
        finally:
            _in_retry.reset(token)

    def _give_up(self, last: BaseException, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
        """Local attempts are over: report (unless local only), then raise
        ``last`` or return the fallback."""
        if self.strategy is not RetryStrategy.LOCAL_ONLY:
            try:
                self.report(*args, **kwargs)
            except SnailJobError as exc:
                logger.error("could not hand %s (scene %s) to the server: %s",
                             self.executor_name, self.scene, exc)
            except Exception:  # the caller gets its own exception, not one of the id/bizNo functions
                logger.exception("could not hand %s (scene %s) to the server: its idempotent_id or biz_no "
                                 "function failed", self.executor_name, self.scene)
        if self.throw:
            raise last
        if callable(self.fallback):
            return self.fallback(last, *args, **kwargs)
        return self.fallback

    def should_retry(self, exc: BaseException) -> bool:
        """The exception filters: ``include`` (when given) must match and
        ``exclude`` must not."""
        if isinstance(exc, StopRetry):
            return False
        if self.include and not isinstance(exc, self.include):
            return False
        return not isinstance(exc, self.exclude)

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
        the background by the client this function is registered with.

        Raises ``RetrySerializationError`` when an argument cannot be sent,
        ``SnailJobError`` when no running client has this function."""
        request = self.build_report(args, kwargs)
        sink = self._sink()
        if sink is None:
            raise SnailJobError(
                f"no running SnailJob client has retryable {self.executor_name} (scene {self.scene}); "
                "register it (Client(executors=[...]) or ExecutorManager.register) and start the client")
        sink.queue_retry_report(request)
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
        if self.idempotent_id is None:
            return default_idempotent_id(self.scene, self.executor_name, args_str)
        value = self.idempotent_id(*args, **kwargs)
        return _check_text(str(value), "idempotent id", MAX_IDEMPOTENT_ID, error=RetrySerializationError)

    def biz_no_for(self, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> str:
        if self.biz_no is None:
            return ""
        if callable(self.biz_no):
            value = self.biz_no(*args, **kwargs)
        else:
            bound = self.signature.bind(*args, **kwargs)
            bound.apply_defaults()
            value = bound.arguments[self.biz_no]
        text = "" if value is None else str(value)
        if len(text) > MAX_BIZ_NO:
            raise RetrySerializationError(f"business number of {self.executor_name} is longer than "
                                          f"{MAX_BIZ_NO} characters ({len(text)})")
        return text

    # --- arguments ----------------------------------------------------------

    def encode_args(self, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> str:
        """The call's ``argsStr``: a JSON array, one element per parameter."""
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise RetrySerializationError(f"{self.executor_name}: {exc}") from None
        bound.apply_defaults()
        values: List[Any] = []
        for name, param in self.signature.parameters.items():
            value = bound.arguments.get(name)
            if param.kind is inspect.Parameter.VAR_POSITIONAL:
                value = list(value or ())
            elif param.kind is inspect.Parameter.VAR_KEYWORD:
                value = dict(value or {})
            try:
                values.append(to_jsonable_python(value))
            except (PydanticSerializationError, TypeError, ValueError) as exc:
                raise RetrySerializationError(
                    f"argument {name!r} of {self.executor_name} (scene {self.scene}) cannot be sent to the "
                    f"server for a retry: {type(value).__name__} is not JSON-serializable ({exc})") from None
        return dumps(values)

    def decode_args(self, args_str: Optional[str]) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
        """``argsStr`` (text from the server) back to ``(args, kwargs)``;
        annotated parameters are converted to their declared type.

        Raises ``RetrySerializationError`` naming the scene and what is wrong
        with the arguments (not JSON, not an array, nested deeper than
        ``MAX_ARGS_DEPTH``, a number longer than ``MAX_NUMBER_DIGITS``, the
        wrong number of values, a value of the wrong type), so a bad replay
        is refused before the function runs."""
        where = f"scene {self.scene!r}"
        text = args_str or "[]"
        if too_deep(text, MAX_ARGS_DEPTH):
            raise RetrySerializationError(f"{where}: argsStr is nested too deeply (limit {MAX_ARGS_DEPTH})")
        try:
            values = json.loads(text, parse_int=_bounded_int, parse_float=_bounded_float)
        except _NumberTooLong as exc:
            raise RetrySerializationError(f"{where}: argsStr holds {exc}") from None
        except ValueError as exc:
            raise RetrySerializationError(f"{where}: argsStr is not JSON ({exc})") from None
        except RecursionError:  # the depth scan should have caught it
            raise RetrySerializationError(f"{where}: argsStr is nested too deeply") from None
        if not isinstance(values, list):
            raise RetrySerializationError(
                f"{where}: argsStr must be a JSON array (one value per parameter), got a JSON "
                f"{_json_type(values)}")
        params = list(self.signature.parameters.values())
        least = max((i + 1 for i, p in enumerate(params) if _required(p)), default=0)
        if not least <= len(values) <= len(params):
            takes = f"{least}" if least == len(params) else f"{least} to {len(params)}"
            raise RetrySerializationError(
                f"{where}: argsStr holds {_count(len(values), 'argument')}, {self._short_name()}() takes {takes}")
        args: List[Any] = []
        kwargs: Dict[str, Any] = {}
        named = {p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                       inspect.Parameter.KEYWORD_ONLY)}
        try:
            for param, value in zip(params, values):
                if param.kind is inspect.Parameter.VAR_POSITIONAL and not isinstance(value, (list, type(None))):
                    raise RetrySerializationError(
                        f"{where}: argument {param.name!r} (*{param.name}) must be a JSON array or null, "
                        f"got a JSON {_json_type(value)}")
                if param.kind is inspect.Parameter.VAR_KEYWORD:
                    if not isinstance(value, (dict, type(None))):
                        raise RetrySerializationError(
                            f"{where}: argument {param.name!r} (**{param.name}) must be a JSON object or null, "
                            f"got a JSON {_json_type(value)}")
                    clash = sorted(named & set(value or ()))
                    if clash:
                        raise RetrySerializationError(
                            f"{where}: argument {param.name!r} (**{param.name}) repeats the parameter "
                            f"{short(clash[0], 64)}")
                value = self._convert(param, value, where)
                if param.kind is inspect.Parameter.VAR_POSITIONAL:
                    args.extend(value or ())
                elif param.kind is inspect.Parameter.VAR_KEYWORD:
                    kwargs.update(value or {})
                elif param.kind is inspect.Parameter.KEYWORD_ONLY:
                    kwargs[param.name] = value
                else:
                    args.append(value)
        except RecursionError:
            raise RetrySerializationError(f"{where}: argsStr is nested too deeply") from None
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError as exc:  # a case the checks above missed: still the arguments' fault
            raise RetrySerializationError(
                f"{where}: argsStr does not fit {self._short_name()}(): {short(str(exc), 200)}") from None
        return tuple(args), kwargs

    def _short_name(self) -> str:
        return str(getattr(self.func, "__name__", self.executor_name))

    @property
    def _adapters(self) -> Dict[str, TypeAdapter[Any]]:
        if self._adapter_cache is None:
            try:
                self._adapter_cache = self._parameter_adapters()
            except NameError as exc:
                raise RetryDefinitionError(f"{self.executor_name}: cannot resolve a parameter annotation "
                                           f"({exc})") from None
        return self._adapter_cache

    def _convert(self, param: inspect.Parameter, value: Any, where: str) -> Any:
        adapter = self._adapters.get(param.name)
        if adapter is None:
            return value
        try:
            return adapter.validate_python(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            # the location may hold keys from the server's text, the message the input: quoted
            at = location(first["loc"])
            raise RetrySerializationError(
                f"{where}: argument {param.name!r} of {self._short_name()}(): {clean(first['msg'], 200)}"
                + (f" at {at}" if at else "")) from None

    def _parameter_adapters(self) -> Dict[str, TypeAdapter[Any]]:
        """A pydantic adapter per annotated parameter; an annotation pydantic
        cannot handle is refused (for strategies that report).  ``NameError``
        when an annotation names something not defined yet."""
        hints = get_type_hints(self.func)
        adapters: Dict[str, TypeAdapter[Any]] = {}
        for name, param in self.signature.parameters.items():
            hint = hints.get(name)
            if hint is None or hint is Any:
                continue
            target: Any = hint
            if param.kind is inspect.Parameter.VAR_POSITIONAL:
                target = cast(Any, Tuple)[hint, ...]
            elif param.kind is inspect.Parameter.VAR_KEYWORD:
                target = cast(Any, Dict)[str, hint]
            try:
                adapters[name] = TypeAdapter(target)
            except Exception as exc:
                if self.strategy is RetryStrategy.LOCAL_ONLY:
                    continue
                raise RetryDefinitionError(
                    f"@retryable({self.scene!r}) {self.executor_name}: parameter {name!r} of type "
                    f"{getattr(hint, '__name__', hint)} cannot be sent to the server ({exc.__class__.__name__}); "
                    "use JSON-friendly types (or a dataclass / pydantic model), or strategy=LOCAL_ONLY") from None
        return adapters

    def _check_parameters(self) -> None:
        params = list(self.signature.parameters)
        if self.strategy is not RetryStrategy.LOCAL_ONLY and params and params[0] in ("self", "cls"):
            raise RetryDefinitionError(
                f"@retryable({self.scene!r}) {self.executor_name}: remote retries replay a function call and "
                f"cannot send {params[0]!r}; decorate a module-level function or use strategy=LOCAL_ONLY")

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
              executor_name: Optional[str] = None) -> Callable[[Callable[P, R]], Retryable[P, R]]:
    """Make a function retryable under the server's retry ``scene``.

    ``include`` / ``exclude``: exception types to retry (default: every
    ``Exception``) and never to retry.  ``strategy``: local then remote
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
    """

    def decorator(func: Callable[P, R]) -> Retryable[P, R]:
        return Retryable(func, scene, include=include, exclude=exclude, strategy=strategy,
                         local_times=local_times, local_interval=local_interval, backoff=backoff,
                         max_interval=max_interval, jitter=jitter, idempotent_id=idempotent_id,
                         biz_no=biz_no, on_success=on_success, on_max_count=on_max_count, throw=throw,
                         fallback=fallback, executor_name=executor_name)

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


class _NumberTooLong(Exception):
    """A number in ``argsStr`` longer than ``MAX_NUMBER_DIGITS``."""


def _bounded_int(text: str) -> int:
    if len(text) > MAX_NUMBER_DIGITS:
        raise _NumberTooLong(f"a number of {len(text)} digits (limit {MAX_NUMBER_DIGITS})")
    return int(text)


def _bounded_float(text: str) -> float:
    if len(text) > MAX_NUMBER_DIGITS:
        raise _NumberTooLong(f"a number of {len(text)} characters (limit {MAX_NUMBER_DIGITS})")
    return float(text)


def _required(param: inspect.Parameter) -> bool:
    """A parameter a replay's ``argsStr`` must give a value for."""
    return param.default is inspect.Parameter.empty and param.kind not in (
        inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _json_type(value: Any) -> str:
    """The JSON name of a decoded value's type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _qualified_name(func: Callable[..., Any]) -> str:
    module = getattr(func, "__module__", None) or "?"
    return f"{module}.{getattr(func, '__qualname__', getattr(func, '__name__', repr(func)))}"


def _check_text(value: Any, what: str, limit: int, error: Type[SnailJobError] = RetryDefinitionError) -> str:
    if not isinstance(value, str) or not value.strip():
        raise error(f"{what} must be a non-blank string, got {value!r}")
    if len(value) > limit:
        raise error(f"{what} {value[:80]!r} is longer than the server's {limit} characters ({len(value)})")
    return value


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

    def enter(self) -> Tuple[contextvars.Token, contextvars.Token]:
        return enter_retry(self.context), _in_retry.set(True)

    def leave(self, token: Tuple[contextvars.Token, contextvars.Token]) -> None:
        _in_retry.reset(token[1])
        leave_retry(token[0])

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
        if isinstance(exc, StopRetry) and self.context.kind == "retry":
            _remote.warning("%s asked to stop retrying: %s", self.describe(), text)
            return RetryOutcome(int(RetryTaskStatusEnum.FAIL), exception=text, stop=True)
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

__all__ = [
    "Backoff",
    "RetryCall",
    "RetryRegistry",
    "RetryStrategy",
    "Retryable",
    "StopRetry",
    "default_idempotent_id",
    "in_retry",
    "retryable",
]
