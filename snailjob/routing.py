"""The server's calls to a node, after the inbound server checked the token:
which handler answers each URI, and the job calls themselves.

A dispatch is parsed and validated, matched to an executor, turned into a
``Task`` and handed to the dispatcher with the node's result handler; a stop
stops its batch and drops its undelivered results; the retry server's calls
go to the retry endpoint (loaded on the first one); a pushed group config
to the config sync.  A refused dispatch is
answered with the reason, logged here at most once a minute per reason and
put in the task's log in the console (``RefusalEntries``), since the server
shows such a task as failed with no result.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple, Union

from pydantic import ValidationError

from snailjob.args import build_args
from snailjob.builtin import Builtins, is_builtin
from snailjob.context import TaskContext
from snailjob.dispatcher import Dispatcher, DispatcherFull
from snailjob.executors import ExecutorRegistry, UnknownTask, isolation_of
from snailjob.inbound_calls import RefusalLog
from snailjob.log import build_entry
from snailjob.observe import TaskObserver
from snailjob.reporting import Reports
from snailjob.settings import Settings
from snailjob.threads import StopEvent
from snailjob.transport import Reply
from snailjob.wire import enums
from snailjob.wire.codec import BodyError, decode_body, first_object, short, summarize
from snailjob.wire.models import DispatchJobRequest, StopJobRequest
from snailjob.work import Task

if TYPE_CHECKING:  # loaded on first use: worker processes, the retry feature
    from snailjob.processes import ProcessPool
    from snailjob.retry_endpoint import RetryEndpoint

logger = logging.getLogger(__name__)

INLINE_URIS = frozenset((enums.URI_DISPATCH, enums.URI_STOP, enums.URI_SYNC_VERSION))
"""Server calls whose handlers only parse, validate and queue: they run on
the inbound server's event loop; the others (retry calls run user code) on
its worker threads."""
REFUSAL_LOGS_PER_MINUTE = 1000
"""At most this many refused dispatches a minute get an entry in their task's
log in the console (one per task and attempt); the rest are only counted."""
_REFUSALS_REMEMBERED = 10_000  # (task, attempt) pairs already logged, most recent kept
_LATER_STAGES = (enums.MapReduceStageEnum.REDUCE, enums.MapReduceStageEnum.MERGE_REDUCE)
_RETRY_URIS = frozenset((enums.URI_RETRY_DISPATCH, enums.URI_RETRY_CALLBACK, enums.URI_RETRY_STOP,
                         enums.URI_RETRY_IDEMPOTENT_ID, enums.URI_RETRY_DESERIALIZE))


class Router:
    """Answers the server's calls to one started node.

    Its collaborators are given explicitly; the lazily built ones (worker
    processes, the retry endpoint) and what changes while the node runs
    (whether it accepts work, its observers) as callables."""

    def __init__(self, settings: Settings, registry: ExecutorRegistry, dispatcher: Dispatcher,
                 reports: Reports, *, host_id: str, address: str, accepting: Callable[[], bool],
                 observers: Callable[[], Tuple[TaskObserver, ...]], process_pool: Callable[[], ProcessPool],
                 retry_calls: Callable[[], RetryEndpoint],
                 sync_config: Optional[Callable[[str], Reply]] = None) -> None:
        self._settings = settings
        self._registry = registry
        self._dispatcher = dispatcher
        self._reports = reports
        self._host_id = host_id
        self._address = address
        self._accepting = accepting
        self._observers = observers
        self._process_pool = process_pool
        self._retry_calls = retry_calls
        self._sync_config = sync_config
        self._builtins = Builtins(settings)
        self._refusals = RefusalLog(logger, per="reason")
        self.refusal_entries = RefusalEntries()

    def handle(self, uri: str, headers: Dict[str, str], body: str) -> Reply:
        """One call of the server; ``SJ-TOKEN`` was checked by the inbound server."""
        path = uri.split("?", 1)[0]
        if path == enums.URI_DISPATCH:
            return self.dispatch(body)
        if path == enums.URI_STOP:
            return self.stop(body)
        if path == enums.URI_SYNC_VERSION:  # the server pushes the group config
            return self._sync_config(body) if self._sync_config is not None else Reply(1, "", None)
        if path in _RETRY_URIS:
            return self._retry_calls().handlers[path](body)
        logger.debug("unsupported server call %s answered with null", short(path))
        return Reply(1, "", None)

    def dispatch(self, body: str) -> Reply:
        try:
            request = one_dispatch(body)
        except BodyError as exc:
            return self._refuse(0, f"invalid dispatch request: {exc}")
        except ValidationError as exc:
            return self._refuse(0, f"invalid dispatch request: {summarize(exc)}")
        if request.taskType == enums.JobTaskTypeEnum.MAP_REDUCE and request.mrStage in _LATER_STAGES:
            self._reports.batch_past_its_maps(request.taskBatchId)
        if not self._accepting():
            return self._refuse(1, f"client {self._host_id} is shutting down; "
                                   "dispatch it to another node", request)
        found = self._executor_of(request)
        if isinstance(found, str):
            return self._refuse(1, found, request)
        func = found
        args, warnings, sentinel = build_args(request)
        ctx = TaskContext(request, args, StopEvent(), self._reports, sentinel=sentinel)
        if warnings:
            ctx.extra["warnings"] = warnings
        pool = self._process_pool() if isolation_of(func, self._settings.snail_isolation) == "process" else None
        try:
            self._dispatcher.submit(Task(request, func, args, ctx, self._observers(), pool),
                                    self._reports.task_done)
        except DispatcherFull as exc:
            return self._refuse(1, str(exc), request)
        return Reply(1, "", True)

    def _executor_of(self, request: DispatchJobRequest) -> Union[Callable[..., Any], str]:
        """The function that runs this task, or why there is none.  The
        console's built-in executors run whatever executor type the task
        carries (the console leaves it at Java's), as on a Java node."""
        name = request.executorInfo
        spec = self._registry.get(name)
        if spec is None and is_builtin(name):
            return self._builtins.job(name)
        if request.executorType != enums.ExecutorTypeEnum.PYTHON:
            return (f"executorType {request.executorType} is not Python (2); "
                    f"this is a Python client (registered: {self._known()})")
        if spec is None:
            return f"no executor named {short(name)} on this client (registered: {self._known()})"
        try:
            return spec.resolve(request.taskType, request.mrStage, request.taskName)
        except UnknownTask as exc:
            return f"{exc} (registered: {self._known()})"

    def stop(self, body: str) -> Reply:
        try:
            request = StopJobRequest.model_validate(first_object(decode_body(body), "stop"))
        except BodyError as exc:
            return Reply(0, f"invalid stop request: {exc}", False)
        except ValidationError as exc:
            return Reply(0, f"invalid stop request: {summarize(exc)}", False)
        self._dispatcher.stop_batch(request.taskBatchId)
        self._reports.discard_results(request.taskBatchId)
        return Reply(1, "", True)

    def _known(self) -> str:
        return short(", ".join(self._registry.names()) or "none", 300)

    def _refuse(self, status: int, message: str, request: Optional[DispatchJobRequest] = None) -> Reply:
        """Refuse a dispatch; logged here at most once a minute per reason,
        and, for a request that could be read, in the task's log in the
        console."""
        where = f" of task {request.taskId}, batch {request.taskBatchId}" if request else ""
        self._refusals.refused(message[:80], f"dispatch{where}: {message}")
        if request is not None and self.refusal_entries.take(request):
            self._log_refusal(request, message)
        return Reply(status, message, False)

    def _log_refusal(self, request: DispatchJobRequest, message: str) -> None:
        """Put the reason of a refused dispatch in the task's log, at ERROR;
        queued without blocking (this runs on the inbound server's event
        loop), in the log shipper's bounded buffer."""
        attempt = f" (attempt {request.retryCount + 1})" if request.retryCount else ""
        record = logger.makeRecord(logger.name, logging.ERROR, __file__, _REFUSE_LINE,
                                   "node %s (%s) refused this task%s: %s",
                                   (self._host_id, self._address, attempt, message), None, "dispatch")
        record.threadName = "snailjob-inbound"
        self._reports.queue_log(build_entry(record, self._reports.log_identity, request.jobId,
                                            request.taskBatchId, request.taskId))


class RefusalEntries:
    """Which refused dispatches get an entry in their task's log: once per
    task and attempt (a dispatch the server sends again is not logged
    again), at most ``REFUSAL_LOGS_PER_MINUTE`` a minute.  Its lock is never
    held during I/O: it is taken on the inbound loop."""

    def __init__(self) -> None:
        self._seen: OrderedDict[Tuple[int, int], None] = OrderedDict()
        self._window = (0.0, 0)  # (start of the current minute, entries shipped in it)
        self._lock = threading.Lock()
        self.skipped = 0
        """Refusals over ``REFUSAL_LOGS_PER_MINUTE``, not shipped."""

    def take(self, request: DispatchJobRequest) -> bool:
        """Whether this refusal gets a log entry (and count it if so)."""
        key = (request.taskId, request.retryCount or 0)
        now = time.monotonic()
        with self._lock:
            if key in self._seen:
                return False
            self._seen[key] = None
            if len(self._seen) > _REFUSALS_REMEMBERED:
                self._seen.popitem(last=False)
            start, shipped = self._window
            if now - start >= 60.0:
                start, shipped = now, 0
            if shipped >= REFUSAL_LOGS_PER_MINUTE:
                self.skipped += 1
                return False
            self._window = (start, shipped + 1)
            return True


_REFUSE_LINE = Router.dispatch.__code__.co_firstlineno  # the location of a refusal's log entry


def one_dispatch(body: str) -> DispatchJobRequest:
    """The ``DispatchJobRequest`` of a dispatch body (a JSON array whose
    first element is the request).  The usual body, an array of exactly one
    object, is validated straight from its text; anything else (and any
    problem) goes the long way, which gives the exact error."""
    if body[:1] == "[" and body[-1:] == "]":
        try:
            return DispatchJobRequest.model_validate_json(body[1:-1])
        except ValidationError:
            pass
    return DispatchJobRequest.model_validate(first_object(decode_body(body), "dispatch"))
