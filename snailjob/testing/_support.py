"""Private helpers of the server emulator (nothing here is public API).

Protocol constants that several modules of the package share (status codes,
retry-task kinds, timeouts), ``_Failure`` (a handler outcome with
``status=0``), body and field parsing done the way the Java server does it,
``_Guard`` (the lock, the change condition and the stopping flag, with the
locked read and the bounded wait that the records and the waits share) and
``_Scheduler``, the emulator's timer thread.  It imports nothing of the
package, so every other module can use it.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import re
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, TypeVar
from urllib.parse import urlsplit

from snailjob.wire import enums
from snailjob.wire.codec import dumps

logger = logging.getLogger("snailjob.testing.emulator")
"""The emulator's logger: every module of the package logs under the name it always had."""

# Used by several concerns: the gRPC message limit, the stop-call deadline,
# the grace added to a timeout, the reply to a call for a node that is gone.
_MAX_MESSAGE = 10 * 1024 * 1024
_STOP_TIMEOUT = 1.0
_TIMEOUT_GRACE = 0.5
_MSG_CLIENT_MISSING = "Client does not exist"

# Status codes (protocol.md section 7).
_RUNNING = int(enums.JobTaskStatusEnum.RUNNING)
_SUCCESS = int(enums.JobTaskStatusEnum.SUCCESS)
_FAIL = int(enums.JobTaskStatusEnum.FAIL)
_STOP = int(enums.JobTaskStatusEnum.STOP)
_CANCEL = int(enums.JobTaskStatusEnum.CANCEL)
_WAITING = int(enums.JobTaskBatchStatusEnum.WAITING)
_CLUSTER = int(enums.JobTaskTypeEnum.CLUSTER)
_BROADCAST = int(enums.JobTaskTypeEnum.BROADCAST)
_SHARDING = int(enums.JobTaskTypeEnum.SHARDING)
_MAP = int(enums.JobTaskTypeEnum.MAP)
_MAP_REDUCE = int(enums.JobTaskTypeEnum.MAP_REDUCE)
_STAGE_MAP = int(enums.MapReduceStageEnum.MAP)
_STAGE_REDUCE = int(enums.MapReduceStageEnum.REDUCE)
_STAGE_MERGE = int(enums.MapReduceStageEnum.MERGE_REDUCE)
_SCENE_AUTO = int(enums.JobRetrySceneEnum.AUTO)
_SCENE_MANUAL = int(enums.JobRetrySceneEnum.MANUAL)

# Retry module (protocol.md sections 3.10, 4.7; the vsj2.0.2 retry-task module).
_RT_WAITING = int(enums.RetryTaskStatusEnum.WAITING)
_RT_RUNNING = int(enums.RetryTaskStatusEnum.RUNNING)
_RT_SUCCESS = int(enums.RetryTaskStatusEnum.SUCCESS)
_RT_FAIL = int(enums.RetryTaskStatusEnum.FAIL)
_RT_STOP = int(enums.RetryTaskStatusEnum.STOP)
_RT_CANCEL = int(enums.RetryTaskStatusEnum.CANCEL)
_RT_NOT_COMPLETE = (_RT_WAITING, _RT_RUNNING)
_RT_VALID = frozenset(int(s) for s in enums.RetryTaskStatusEnum)
_KIND_RETRY = "retry"
_KIND_CALLBACK = "callback"
_RETRY_RPC_ATTEMPTS = 3
_RETRY_RPC_WAIT = 1.0

_INT_RE = re.compile(r"[+-]?\d+")

Handler = Callable[[Optional[List[Any]], Dict[str, str]], Tuple[int, str, Any]]


class _Failure(Exception):
    """A handler outcome with ``status=0``."""

    def __init__(self, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data


_T = TypeVar("_T")


class _Guard:
    """The emulator's ``lock`` (an RLock guarding all its state), ``cond`` (a
    condition on the same lock, notified on every change) and ``stopping``
    (set by ``stop()``).  No lock is held during an RPC."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.stopping = threading.Event()

    def read(self, fn: Callable[[], _T]) -> _T:
        """``fn()`` under the lock: a consistent snapshot of changing state."""
        with self.lock:
            return fn()

    def wait(self, done: Callable[[], bool], value: Callable[[], _T], timeout: float,
             timed_out: Callable[[], str], stopped: Optional[str] = None, poll: float = 0.25) -> _T:
        """Wait (bounded) until ``done()``, re-checked on every change and
        every ``poll`` seconds; return ``value()`` taken under the lock.

        ``TimeoutError(timed_out())`` after ``timeout`` seconds; with
        ``stopped``, ``RuntimeError(stopped)`` once the emulator stops."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not done():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(timed_out())
                if stopped is not None and self.stopping.is_set():
                    raise RuntimeError(stopped)
                self.cond.wait(min(remaining, poll))
            return value()


def _header(headers: Mapping[str, str], key: str) -> Optional[str]:
    """Case-insensitive header lookup (the handlers see Netty headers)."""
    if key in headers:
        return headers[key]
    lowered = key.lower()
    for name, value in headers.items():
        if name.lower() == lowered:
            return value
    return None


def _fmt(value: Any) -> str:
    """hutool ``StrUtil.format`` rendering of an argument."""
    return "null" if value is None else str(value)


def _path_of(uri: str) -> str:
    """``UrlBuilder.ofHttp(uri).getPathStr()``: query and fragment dropped."""
    text = uri.strip()
    if "://" not in text:
        text = "http://" + text
    try:
        return urlsplit(text).path
    except ValueError:
        return text


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _parse_args(body: str) -> Optional[List[Any]]:
    """Jackson ``readValue(body, Object[].class)``: a JSON array, or ``null``."""
    try:
        value = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise _Failure(f"Json to object conversion failed Parameters: {body}") from None
    if value is None:
        return None
    if not isinstance(value, list):
        raise _Failure(f"Json to object conversion failed Parameters: {body}")
    return value


def _arg0(args: Optional[List[Any]]) -> Any:
    if args is None:
        raise _Failure('Cannot load from object array because "args" is null')
    if not args:
        raise _Failure("Index 0 out of bounds for length 0")
    return args[0]


def _as_long(value: Any, name: str, required: bool = True) -> Optional[int]:
    """A Java ``Long``/``Integer`` field: int or integral string; null allowed
    when not required."""
    if value is None:
        if required:
            raise _Failure(f"{name} can not be null")
        return None
    if isinstance(value, bool):
        raise _Failure(f"Cannot deserialize value of type `java.lang.Long` from Boolean value for {name}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INT_RE.fullmatch(value.strip()):
        return int(value.strip())
    raise _Failure(f"Cannot deserialize value of type `java.lang.Long` from {value!r} for {name}")


def _partition(items: Sequence[str], shards: int) -> List[List[str]]:
    """The server's ``averageAlgorithm``: sizes differ by at most one, the
    first ``len % shards`` parts one larger."""
    shards = min(len(items), max(1, shards))
    if shards == 0:
        return []
    quotient, remainder = divmod(len(items), shards)
    parts: List[List[str]] = []
    index = 0
    for i in range(shards):
        size = quotient + (1 if i < remainder else 0)
        parts.append(list(items[index:index + size]))
        index += size
    return parts


def _json_kind(value: Any) -> str:
    """How Jackson names the JSON token it could not convert."""
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    if isinstance(value, bool):
        return "Boolean"
    if value is None:
        return "Null"
    return "Number"


def _java_text(value: Any) -> str:
    """Jackson's coercion of a JSON scalar into a ``String`` field."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _result_message(result: Any) -> str:
    return result if isinstance(result, str) else dumps(result)


def _args_json(job_params: Optional[str], **extra: Any) -> str:
    """``JobArgsHolder`` as the server serialises it (null fields omitted)."""
    holder: Dict[str, Any] = {}
    if job_params is not None:
        holder["jobParams"] = job_params
    for key, value in extra.items():
        if value is not None:
            holder[key] = value
    return dumps(holder)


class _Scheduler:
    """A single timer thread; due callbacks are handed to ``submit``."""

    def __init__(self, submit: Callable[[Callable[[], None]], None], name: str) -> None:
        self._cond = threading.Condition()
        self._heap: List[Tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._closed = False
        self._submit = submit
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def schedule(self, delay: float, fn: Callable[[], None]) -> None:
        with self._cond:
            if self._closed:
                return
            heapq.heappush(self._heap, (time.monotonic() + max(0.0, delay), next(self._seq), fn))
            self._cond.notify()

    def close(self, timeout: float = 2.0) -> None:
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify_all()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        break
                    wait = 1.0 if not self._heap else min(1.0, self._heap[0][0] - now)
                    self._cond.wait(max(0.0, wait))
                if self._closed:
                    return
                _, _, fn = heapq.heappop(self._heap)
            self._submit(fn)
