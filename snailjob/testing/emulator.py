"""An in-process fake of the SnailJob server's client-facing gRPC protocol.

``ServerEmulator`` is a real gRPC server on ``127.0.0.1`` that answers the
URIs a job client calls (``/beat``, ``/register/job/executors``,
``/report/dispatch/result``, ``/batch/report/job/map/task/v1``,
``/batch/server/report/log``, ``/sync/version``) the way the Java server does,
and that plays the server's side of a job: it builds the tasks of a batch,
dispatches them to the registered nodes with ``/job/dispatch/v1``, applies
the reported results, creates map, reduce and merge tasks, retries failed
tasks, times batches out, sends ``/job/stop/v1`` and runs linear workflows.

The rules follow ``protocol.md`` (sections 2-6 and the checklist of section
9).  Deliberate simplifications are listed in the class docstring.

Threading: inbound calls are answered on the gRPC server's threads; every
server -> client call runs on the emulator's own worker pool, never inside
an inbound handler, and no lock is held during an RPC.  Every wait is
bounded.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import json
import logging
import random
import re
import threading
import time
import uuid
from concurrent import futures
from dataclasses import dataclass, field
from typing import (
    Any,
    Callable,
    Dict,
    List,
    Mapping,
    NamedTuple,
    NoReturn,
    Optional,
    Sequence,
    Set,
    Tuple,
    Union,
)
from urllib.parse import urlsplit

import grpc

from snailjob.wire import enums
from snailjob.wire import snailjob_pb2 as pb2
from snailjob.wire.codec import dumps

logger = logging.getLogger(__name__)

__all__ = [
    "ClientNode",
    "DEFAULT_GROUP",
    "DEFAULT_NAMESPACE",
    "DEFAULT_SERVER_TOKEN",
    "DEFAULT_TOKEN",
    "DispatchReply",
    "DroppedLogBatch",
    "EmulatedBatch",
    "EmulatedTask",
    "EmulatedWorkflow",
    "Exchange",
    "OutboundCall",
    "RecordedBeat",
    "RecordedRequest",
    "ServerEmulator",
]

DEFAULT_NAMESPACE = "764d604ec6fc45f68cd92514c40e9e1a"
DEFAULT_GROUP = "snail_job_demo_group"
DEFAULT_TOKEN = "SJ_Wyz3dmsdbDOkDujOTSSoBjGQP1BMsVnj"
DEFAULT_SERVER_TOKEN = "SJ_H9HGGmrX3QBVTfsAAG2mcKH3SR7bCLsK"
"""``snail-job.server-token`` default: the token the server sends in ``token``."""
SERVER_GROUP = "DEFAULT_SERVER"
"""``group-name`` the server sends when it calls a client."""

_METHOD = "/UnaryRequest/unaryRequest"
_MAX_MESSAGE = 10 * 1024 * 1024
_DISPATCH_TIMEOUT = 3.0
_STOP_TIMEOUT = 1.0
_STOP_ATTEMPTS = 3
_STOP_RETRY_WAIT = 1.0
_BLANK_URI_HOLD_MAX = 30.0
_TIMEOUT_GRACE = 0.5
_MANUAL_LOOP_LIMIT = 3

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

# Operation reasons of a batch (JobOperationReasonEnum).
REASON_NONE = 0
REASON_TIMEOUT = 1
REASON_NOT_CLIENT = 2
REASON_MANUAL_STOP = 8

_TASK_NAMES = {
    _CLUSTER: "CLUSTER_TASK",
    _BROADCAST: "BROADCAST_TASK",
    _SHARDING: "SHARDING_TASK",
}
_REDUCE_TASK = "REDUCE_TASK"
_MERGE_REDUCE_TASK = "MERGE_REDUCE_TASK"

_MSG_BEAT_OK = ""
_MSG_REGISTER_OK = "Batch Register Job Executors Processed Successfully"
_MSG_REGISTER_NULL = "Beat register job executors arg is null"
_MSG_RESULT_OK = "Report Dispatch Result Processed Successfully"
_MSG_MAP_OK = "Report Map Task Processed Successfully"
_MSG_MAP_NO_JOB = "Job config not existed"
_MSG_MAP_EMPTY = "Job task is empty"
_MSG_LOG_OK = "Batch Log Retry Data Upload Processed Successfully"
_MSG_RETRY_REPORT_OK = "Batch Retry Data Upload Processed Successfully"
_MSG_RETRY_RESULT_OK = "Report dispatch result processed successfully"
_MSG_CLIENT_MISSING = "Client does not exist"

_WORKFLOW_NODE_KEYS = frozenset({
    "executor", "task_type", "args_str", "parallel_num", "executor_timeout",
    "max_retry_times", "retry_interval", "shard_num", "executor_type", "labels",
})

_INT_RE = re.compile(r"[+-]?\d+")

Handler = Callable[[Optional[List[Any]], Dict[str, str]], Tuple[int, str, Any]]


# --------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------


class RecordedRequest(NamedTuple):
    """One inbound call: ``(uri, headers, body)`` exactly as received."""

    uri: str
    headers: Dict[str, str]
    body: str


@dataclass
class Exchange:
    """One inbound call and the reply the emulator gave (``None`` fields while
    unanswered; a blank ``uri`` is never answered)."""

    uri: str
    headers: Dict[str, str]
    body: str
    req_id: int
    at: float
    status: Optional[int] = None
    message: Optional[str] = None
    data: Optional[str] = None

    @property
    def answered(self) -> bool:
        return self.status is not None


@dataclass
class OutboundCall:
    """One server -> client call made by the emulator."""

    uri: str
    node: str
    address: str
    headers: Dict[str, str]
    body: str
    req_id: int
    at: float
    status: Optional[int] = None
    message: Optional[str] = None
    data: Optional[str] = None
    error: Optional[str] = None
    finished: bool = False

    @property
    def body_args(self) -> List[Any]:
        """The body decoded (a JSON array)."""
        value = json.loads(self.body)
        return value if isinstance(value, list) else [value]


class DispatchReply(NamedTuple):
    """What a node answered to one ``/job/dispatch/v1`` attempt.

    ``error`` is set (and the other fields may be ``None``) when the call
    failed at the gRPC level or ``data`` was not JSON.
    """

    node: str
    status: Optional[int]
    message: Optional[str]
    data: Optional[str]
    error: Optional[str]


@dataclass
class RecordedBeat:
    """One accepted ``/beat``."""

    host_id: Optional[str]
    host_ip: Optional[str]
    host_port: int
    headers: Dict[str, str]
    args: Optional[List[Any]]
    at: float


@dataclass
class DroppedLogBatch:
    """A ``/batch/server/report/log`` batch the server would drop entirely."""

    entries: List[Any]
    reason: str


@dataclass
class ClientNode:
    """A client node as the server's ``InstanceManager`` knows it.

    ``labels`` come from the first registration only (later beats do not
    change them); ``headers`` are those of the latest beat.  ``alive`` turns
    false after a failed server -> client call and true again on the next
    beat.  ``last_beat`` is wall-clock time (``time.time()``).
    """

    host_id: str
    host_ip: str
    host_port: int
    namespace: str
    group: str
    labels: Dict[str, str]
    headers: Dict[str, str]
    first_beat: float
    last_beat: float
    beat_count: int = 1
    registered: bool = False
    alive: bool = True
    last_beat_monotonic: float = field(default=0.0, repr=False)

    @property
    def address(self) -> str:
        """``host-ip:host-port``: where the server connects back to."""
        return f"{self.host_ip}:{self.host_port}"

    @property
    def client_info(self) -> str:
        """``hostId@ip:port``, as the server stores it on a task."""
        return f"{self.host_id}@{self.host_ip}:{self.host_port}"

    @property
    def executor_type(self) -> Optional[str]:
        return _header(self.headers, "executor-type")

    @property
    def system_version(self) -> Optional[str]:
        return _header(self.headers, "system-version")


@dataclass
class EmulatedTask:
    """One task row (``sj_job_task``) of an emulated batch.

    ``result`` is the ``result_message`` the server stores: a string result
    as is, any other JSON value compact, ``""`` while no non-null result was
    reported.  ``wf_context`` is the changed-keys JSON text the task reported.
    """

    task_id: int
    batch_id: int
    job_id: int
    task_name: str
    args_str: str
    parent_id: int = 0
    mr_stage: Optional[int] = None
    status: int = _RUNNING
    result: str = ""
    execute_result: Optional[Dict[str, Any]] = None
    node: Optional[str] = None
    client_address: Optional[str] = None
    leaf: bool = True
    sharding_index: Optional[int] = None
    sharding_total: Optional[int] = None
    wf_context: Optional[str] = None
    retry_count: int = 0
    message: str = ""
    dispatch_replies: List[DispatchReply] = field(default_factory=list)
    dispatch_requests: List[Dict[str, Any]] = field(default_factory=list)
    reports: List[Dict[str, Any]] = field(default_factory=list)

    @property
    def dispatch_count(self) -> int:
        """How many ``/job/dispatch/v1`` bodies were built for this task
        (RPC-level failover retries of one dispatch count once)."""
        return len(self.dispatch_requests)

    @property
    def args(self) -> Dict[str, Any]:
        """``args_str`` decoded."""
        value = json.loads(self.args_str)
        return value if isinstance(value, dict) else {}

    @property
    def wf_context_changes(self) -> Dict[str, Any]:
        """The reported ``wfContext`` decoded; ``{}`` when absent or not an object."""
        if not self.wf_context:
            return {}
        try:
            value = json.loads(self.wf_context)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


@dataclass
class _Job:
    job_id: int
    executor: str
    task_type: int
    args_str: str
    job_params: Optional[str]
    parallel_num: int
    executor_timeout: int
    max_retry_times: int
    retry_interval: float
    executor_type: int
    labels: Dict[str, str]
    namespace: str
    group: str
    shard_num: int
    rr: int = 0


@dataclass
class _DispatchCtx:
    retry: bool = False
    retry_scene: Optional[int] = None


class _Failure(Exception):
    """A handler outcome with ``status=0``."""

    def __init__(self, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data


# --------------------------------------------------------------------------
# Batches and workflows
# --------------------------------------------------------------------------


class EmulatedBatch:
    """A job batch (``sj_job_task_batch``) run by the emulator.

    All attributes are read under the emulator's lock; ``tasks`` is a
    snapshot list (the task objects themselves keep changing).
    """

    def __init__(self, emulator: ServerEmulator, batch_id: int, job: _Job,
                 wf_context: Optional[Dict[str, Any]],
                 workflow: Optional[EmulatedWorkflow], workflow_index: Optional[int]) -> None:
        self._emu = emulator
        self.id = batch_id
        self._job = job
        self._wf_context = wf_context
        self.workflow = workflow
        self.workflow_index = workflow_index
        self.workflow_node_id: Optional[int] = (
            workflow.node_ids[workflow_index]
            if workflow is not None and workflow_index is not None else None)
        self._status = _WAITING
        self._done = False
        self._tasks: List[EmulatedTask] = []
        self.operation_reason = REASON_NONE
        self.started_at = time.time()
        self.completed_at: Optional[float] = None

    # -- read-only views ---------------------------------------------------

    @property
    def job_id(self) -> int:
        return self._job.job_id

    @property
    def executor(self) -> str:
        return self._job.executor

    @property
    def task_type(self) -> int:
        return self._job.task_type

    @property
    def job_params(self) -> Optional[str]:
        """The ``jobParams`` every task of the batch receives."""
        return self._job.job_params

    @property
    def status(self) -> int:
        """1 WAITING, 2 RUNNING, 3 SUCCESS, 4 FAIL, 5 STOP, 6 CANCEL."""
        with self._emu._lock:
            return self._status

    @property
    def done(self) -> bool:
        with self._emu._lock:
            return self._done

    @property
    def tasks(self) -> List[EmulatedTask]:
        with self._emu._lock:
            return list(self._tasks)

    def task(self, task_id: int) -> EmulatedTask:
        """The task with this id; ``KeyError`` if it is not in the batch."""
        with self._emu._lock:
            for task in self._tasks:
                if task.task_id == task_id:
                    return task
        raise KeyError(task_id)

    def tasks_named(self, task_name: str) -> List[EmulatedTask]:
        with self._emu._lock:
            return [t for t in self._tasks if t.task_name == task_name]

    def tasks_in_stage(self, mr_stage: int) -> List[EmulatedTask]:
        with self._emu._lock:
            return [t for t in self._tasks if t.mr_stage == mr_stage]

    # -- actions -------------------------------------------------------------

    def wait(self, timeout: float = 10.0) -> int:
        """Block until the batch completes; return its final status.

        Raises ``TimeoutError`` naming the batch and its pending tasks.
        """
        deadline = time.monotonic() + timeout
        with self._emu._cond:
            while not self._done:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(self._describe_pending(timeout))
                if self._emu._stopping.is_set():
                    raise RuntimeError(f"emulator stopped while waiting for batch {self.id}")
                self._emu._cond.wait(min(remaining, 0.25))
            return self._status

    def stop(self) -> None:
        """Stop the batch like the console's stop button."""
        self._emu.stop_batch(self.id)

    def retry(self) -> None:
        """Retry the batch like the console's retry button (manual retry)."""
        self._emu.retry_batch(self.id)

    def _describe_pending(self, timeout: float) -> str:
        pending = [t for t in self._tasks if t.status in (_WAITING, _RUNNING)]
        shown = ", ".join(
            f"task {t.task_id} {t.task_name} on {t.node or '-'} (dispatched {t.dispatch_count}x, "
            f"replies {len(t.dispatch_replies)}, reports {len(t.reports)})"
            for t in pending[:10])
        more = f" and {len(pending) - 10} more" if len(pending) > 10 else ""
        return (f"batch {self.id} (job {self.job_id}, executor {self.executor!r}, task type "
                f"{self.task_type}) still has status {self._status} after {timeout:g}s; "
                f"{len(pending)} pending task(s): [{shown}{more}]")

    def __repr__(self) -> str:
        return (f"EmulatedBatch(id={self.id}, executor={self.executor!r}, task_type={self.task_type}, "
                f"status={self._status}, tasks={len(self._tasks)})")


class EmulatedWorkflow:
    """A linear workflow: node *i+1* opens when node *i*'s batch succeeds.

    ``context`` is the workflow batch's ``wf_context`` as the server keeps
    it.  Like the server, the context is merged from a finished node's tasks
    only when that node has a successor, so the last node's changes are not
    merged (they are visible on its tasks' ``wf_context_changes``).
    """

    def __init__(self, emulator: ServerEmulator, workflow_id: int, nodes: List[Dict[str, Any]],
                 node_ids: List[int], jobs: List[_Job], context: Dict[str, Any]) -> None:
        self._emu = emulator
        self.id = workflow_id
        self.nodes = nodes
        self.node_ids = node_ids
        self._jobs = jobs
        self._context = context
        self._batches: List[EmulatedBatch] = []
        self._status = _RUNNING
        self._done = False

    @property
    def status(self) -> int:
        with self._emu._lock:
            return self._status

    @property
    def done(self) -> bool:
        with self._emu._lock:
            return self._done

    @property
    def context(self) -> Dict[str, Any]:
        with self._emu._lock:
            return dict(self._context)

    @property
    def batches(self) -> List[EmulatedBatch]:
        with self._emu._lock:
            return list(self._batches)

    def wait(self, timeout: float = 10.0) -> int:
        """Block until the workflow ends; return its status (3, 4, 5 or 6)."""
        deadline = time.monotonic() + timeout
        with self._emu._cond:
            while not self._done:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    current = self._batches[-1] if self._batches else None
                    detail = current._describe_pending(timeout) if current is not None else "no batch"
                    raise TimeoutError(
                        f"workflow {self.id} not finished after {timeout:g}s "
                        f"({len(self._batches)}/{len(self.nodes)} nodes opened); current: {detail}")
                if self._emu._stopping.is_set():
                    raise RuntimeError(f"emulator stopped while waiting for workflow {self.id}")
                self._emu._cond.wait(min(remaining, 0.25))
            return self._status

    def __repr__(self) -> str:
        return f"EmulatedWorkflow(id={self.id}, status={self._status}, nodes={len(self.nodes)})"


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# The emulator
# --------------------------------------------------------------------------


class ServerEmulator:
    """A fake SnailJob server for tests, speaking the real wire protocol.

    Usage::

        with ServerEmulator() as emu:
            start_client(**emu.client_env())
            emu.wait_for_clients(1)
            batch = emu.trigger("myExecutor", args_str="hello")
            assert batch.wait(10) == 3
            assert batch.tasks[0].result == "..."

    Faithful to the server (protocol.md): body parsing and error messages,
    token check on every URI, reqId echo, JSON ``data``, the reply of each
    URI, the retry rules of ``/report/dispatch/result``, the dispatch
    request and its headers, the success condition of a dispatch reply,
    RPC-level dispatch retries with failover, job-level retries, the task
    generators (argsStr shapes, task names, sharding indices, broadcast per
    address, ROOT_MAP, map children, REDUCE and MERGE_REDUCE), batch
    completion, stop after completion of non-CLUSTER batches, timeouts at
    ``executorTimeout + 0.5 s``, node expiry, labels routing, workflow
    context merge, and the log batch rules.

    Simplifications (documented choices):

    * Node liveness is computed on demand: a node is live while its last beat
      is at most ``node_expiry`` seconds old (the server also checks only every
      10 s), it is registered (``register_delay`` after its first beat) and no
      server -> client call to it has failed since its last beat.
    * CLUSTER tasks and map/reduce children go to live nodes round-robin;
      job-level retries of SHARDING and MAP tasks pick a random live node
      (``seed`` makes that deterministic).
    * The server race of protocol.md section 5.5 (all map children finish
      before the parent reports, and the batch then waits for its timeout) is
      not reproduced unless ``map_race_quirk=True``: by default a non-leaf map
      parent's own report re-evaluates completion, which only matters in
      that race.
    * Once a batch has completed its status never changes (the server's update
      applies only to unfinished batches) until ``retry_batch()``; later
      reports still overwrite the task rows.
    * Only ``group`` / ``namespace`` (and ``DEFAULT_SERVER`` with
      ``server_token``) pass the token check.
    * Retry-module URIs are accepted and recorded in ``retry_requests``.
    * ``strict_primitives`` (default true) rejects an explicit JSON null for
      ``retry``/``executeResult.status`` (Java primitives) like the 2.x server;
      pass false to emulate 1.10.x.

    ``problems`` lists protocol violations the emulator noticed that the real
    server would not report to the client (bad labels, missing
    ``time_stamp`` in a log entry, results for unknown tasks, endless manual
    retry loops...).  A well-behaved client leaves it empty.
    """

    def __init__(self, namespace: str = DEFAULT_NAMESPACE, group: str = DEFAULT_GROUP,
                 token: str = DEFAULT_TOKEN, port: int = 0, node_expiry: float = 40.0,
                 register_delay: float = 0.0, server_token: str = DEFAULT_SERVER_TOKEN,
                 host_id: Optional[str] = None, strict_primitives: bool = True,
                 map_race_quirk: bool = False, max_workers: int = 32,
                 seed: Optional[int] = None, map_report_delay: float = 0.0) -> None:
        """Configure (but do not start) an emulator.

        ``port=0`` picks a free port on 127.0.0.1 at ``start()``.
        """
        if not group.strip():
            raise ValueError("group must not be blank")
        if not token.strip():
            raise ValueError("token must not be blank")
        self.namespace = namespace
        self.group = group
        self.token = token
        self.server_token = server_token
        self.node_expiry = float(node_expiry)
        self.register_delay = float(register_delay)
        self.strict_primitives = strict_primitives
        self.map_race_quirk = map_race_quirk
        self.map_report_delay = float(map_report_delay)
        """Seconds a map report takes before it is processed and answered (the
        real server creates every sub-task before answering: seconds per 200)."""
        self.host = "127.0.0.1"
        self._requested_port = int(port)
        self.port = int(port)
        self.server_host_id = host_id or f"emu-{uuid.uuid4().hex[:12]}"
        self.config: Dict[str, Any] = {"version": 1, "sceneList": [], "notifyList": []}
        """The ``ConfigRequest`` answered to ``/sync/version``."""

        self._max_workers = max(4, int(max_workers))
        self._random = random.Random(seed)
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._started = False
        self._stopped = False
        self._server: Optional[grpc.Server] = None
        self._pool: Optional[futures.ThreadPoolExecutor] = None
        self._scheduler: Optional[_Scheduler] = None
        self._channels: Dict[str, Tuple[grpc.Channel, Any]] = {}

        self._ids = itertools.count(1)
        self._task_ids = itertools.count(10_001)
        self._req_ids = itertools.count(1)
        self._nodes: Dict[Tuple[str, str, str], ClientNode] = {}
        self._jobs: Dict[int, _Job] = {}
        self._batches: Dict[int, EmulatedBatch] = {}
        self._task_index: Dict[int, EmulatedTask] = {}
        self._workflows: Dict[int, EmulatedWorkflow] = {}
        self._manual_loops: Dict[int, int] = {}

        self._exchanges: List[Exchange] = []
        self._outbound: List[OutboundCall] = []
        self._beats: List[RecordedBeat] = []
        self._executors: Set[str] = set()
        self._results: List[Dict[str, Any]] = []
        self._map_reports: List[Dict[str, Any]] = []
        self._logs: List[Dict[str, Any]] = []
        self._retry_logs: List[Dict[str, Any]] = []
        self._log_rows: List[Dict[str, Any]] = []
        self._dropped_logs: List[DroppedLogBatch] = []
        self._retry_requests: List[RecordedRequest] = []
        self._problems: List[str] = []

        self._handlers: Dict[str, Handler] = {
            enums.URI_BEAT: self._on_beat,
            enums.URI_REGISTER_EXECUTORS: self._on_register_executors,
            enums.URI_REPORT_RESULT: self._on_report_result,
            enums.URI_REPORT_MAP: self._on_map_report,
            enums.URI_REPORT_LOG: self._on_logs,
            enums.URI_SYNC_VERSION: self._on_sync_version,
            "/batch/report": self._retry_handler(_MSG_RETRY_REPORT_OK),
            "/report/retry/dispatch/result": self._retry_handler(_MSG_RETRY_RESULT_OK),
            "/report/retry/callback/result": self._retry_handler(_MSG_RETRY_RESULT_OK),
        }

    # ------------------------------------------------------------------
    # lifecycle
    # ------------------------------------------------------------------

    def start(self) -> ServerEmulator:
        """Bind 127.0.0.1 (a free port when ``port=0``) and start serving."""
        with self._lock:
            if self._started:
                raise RuntimeError("ServerEmulator.start() called twice (create a new emulator)")
            self._started = True
        self._pool = futures.ThreadPoolExecutor(max_workers=max(16, self._max_workers),
                                                thread_name_prefix="snailjob-emu-call")
        self._scheduler = _Scheduler(self._submit, name="snailjob-emu-timer")
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self._max_workers, thread_name_prefix="snailjob-emu-rpc"),
            options=[("grpc.max_receive_message_length", _MAX_MESSAGE),
                     ("grpc.max_send_message_length", _MAX_MESSAGE),
                     ("grpc.so_reuseport", 0)])
        handler = grpc.unary_unary_rpc_method_handler(
            self._handle,
            request_deserializer=pb2.GrpcSnailJobRequest.FromString,
            response_serializer=pb2.GrpcResult.SerializeToString)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("UnaryRequest", {"unaryRequest": handler}),))
        bound = server.add_insecure_port(f"{self.host}:{self._requested_port}")
        if not bound:
            raise RuntimeError(f"could not bind {self.host}:{self._requested_port}")
        self.port = bound
        server.start()
        self._server = server
        self._scheduler.start()
        logger.debug("snailjob emulator listening on %s:%d", self.host, self.port)
        return self

    def stop(self) -> None:
        """Stop serving, cancel pending timers and outbound calls.  Idempotent."""
        with self._cond:
            if self._stopped or not self._started:
                return
            self._stopped = True
            self._stopping.set()
            self._cond.notify_all()
        if self._server is not None:
            self._server.stop(grace=0).wait(timeout=3.0)
        if self._scheduler is not None:
            self._scheduler.close()
        with self._lock:
            channels = list(self._channels.values())
            self._channels.clear()
        for channel, _ in channels:
            try:
                channel.close()
            except Exception:  # pragma: no cover - best effort
                logger.debug("closing a client channel failed", exc_info=True)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        logger.debug("snailjob emulator on port %d stopped", self.port)

    def __enter__(self) -> ServerEmulator:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def address(self) -> str:
        """``host:port`` of the emulator's gRPC server."""
        return f"{self.host}:{self.port}"

    def client_env(self) -> Dict[str, str]:
        """Environment variables pointing a client at this emulator."""
        return {
            "SNAIL_SERVER_HOST": self.host,
            "SNAIL_SERVER_PORT": str(self.port),
            "SNAIL_NAMESPACE": self.namespace,
            "SNAIL_GROUP_NAME": self.group,
            "SNAIL_TOKEN": self.token,
        }

    # ------------------------------------------------------------------
    # inspection
    # ------------------------------------------------------------------

    @property
    def nodes(self) -> List[ClientNode]:
        """Registered nodes that have not expired (whatever their ``alive`` flag)."""
        with self._lock:
            return [n for n in self._nodes.values() if n.registered and not self._expired(n)]

    @property
    def live_nodes(self) -> List[ClientNode]:
        """Nodes the emulator would dispatch to (registered, not expired, alive)."""
        with self._lock:
            return [n for n in self._nodes.values() if self._is_live(n)]

    @property
    def beats(self) -> List[RecordedBeat]:
        """Every accepted ``/beat`` (``len(emu.beats)`` is the count)."""
        with self._lock:
            return list(self._beats)

    @property
    def registered_executors(self) -> Set[str]:
        with self._lock:
            return set(self._executors)

    @property
    def results(self) -> List[Dict[str, Any]]:
        """Every ``/report/dispatch/result`` body element received (after the
        token check), in order, including rejected ones."""
        with self._lock:
            return list(self._results)

    @property
    def map_reports(self) -> List[Dict[str, Any]]:
        """Every ``/batch/report/job/map/task/v1`` body element received."""
        with self._lock:
            return list(self._map_reports)

    @property
    def logs(self) -> List[Dict[str, Any]]:
        """Every stored job log entry, as received (dropped batches excluded)."""
        with self._lock:
            return list(self._logs)

    @property
    def retry_logs(self) -> List[Dict[str, Any]]:
        with self._lock:
            return list(self._retry_logs)

    @property
    def log_rows(self) -> List[Dict[str, Any]]:
        """The ``sj_job_log_message`` rows the server would write: one per
        ``taskId`` group of a batch, ``message`` a list of name -> value maps
        (null values dropped)."""
        with self._lock:
            return [dict(row) for row in self._log_rows]

    @property
    def dropped_logs(self) -> List[DroppedLogBatch]:
        """Log batches the server would drop entirely, with the reason."""
        with self._lock:
            return list(self._dropped_logs)

    @property
    def requests(self) -> List[RecordedRequest]:
        """Every inbound call as ``(uri, headers, body)``, in arrival order."""
        with self._lock:
            return [RecordedRequest(e.uri, dict(e.headers), e.body) for e in self._exchanges]

    @property
    def exchanges(self) -> List[Exchange]:
        """Every inbound call with the reply given."""
        with self._lock:
            return list(self._exchanges)

    @property
    def outbound(self) -> List[OutboundCall]:
        """Every server -> client call made, in order."""
        with self._lock:
            return list(self._outbound)

    @property
    def dispatch_calls(self) -> List[OutboundCall]:
        with self._lock:
            return [c for c in self._outbound if c.uri == enums.URI_DISPATCH]

    @property
    def stop_calls(self) -> List[OutboundCall]:
        with self._lock:
            return [c for c in self._outbound if c.uri == enums.URI_STOP]

    @property
    def retry_requests(self) -> List[RecordedRequest]:
        with self._lock:
            return list(self._retry_requests)

    @property
    def problems(self) -> List[str]:
        """Protocol violations noticed (see the class docstring)."""
        with self._lock:
            return list(self._problems)

    @property
    def batches(self) -> List[EmulatedBatch]:
        with self._lock:
            return list(self._batches.values())

    def batch(self, batch_id: int) -> EmulatedBatch:
        with self._lock:
            return self._batches[batch_id]

    def task(self, task_id: int) -> EmulatedTask:
        with self._lock:
            return self._task_index[task_id]

    def wait_for_clients(self, n: int = 1, timeout: float = 10.0) -> List[ClientNode]:
        """Wait until at least ``n`` nodes are live; return the live nodes."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                live = [node for node in self._nodes.values() if self._is_live(node)]
                if len(live) >= n:
                    return live
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    known = ", ".join(f"{x.host_id}@{x.address} registered={x.registered} alive={x.alive}"
                                      for x in self._nodes.values()) or "none"
                    raise TimeoutError(f"{len(live)} of {n} client node(s) live after {timeout:g}s "
                                       f"({len(self._beats)} beats received; known nodes: {known})")
                if self._stopping.is_set():
                    raise RuntimeError("emulator stopped while waiting for clients")
                self._cond.wait(min(remaining, 0.25))

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0,
                   message: str = "condition") -> None:
        """Wait until ``predicate()`` is true (re-checked on every state change
        and every 50 ms); ``TimeoutError`` otherwise."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{message} not met after {timeout:g}s")
                self._cond.wait(min(remaining, 0.05))

    def expire_node(self, host_id: str) -> None:
        """Forget a node as if its beats had stopped ``node_expiry`` ago."""
        with self._cond:
            for key, node in list(self._nodes.items()):
                if node.host_id == host_id:
                    del self._nodes[key]
            self._cond.notify_all()

    def server_headers(self, node: Optional[ClientNode] = None) -> Dict[str, str]:
        """The headers the server sends on a server -> client call."""
        token = self.token
        if node is not None:
            token = self._expected_token(node.group, node.namespace) or self.token
        return {
            enums.HEADER_SERVER_TOKEN: token,
            "host-id": self.server_host_id,
            "host-ip": self.host,
            "host-port": str(self.port),
            "group-name": SERVER_GROUP,
            "namespace": DEFAULT_NAMESPACE,
            "token": self.server_token,
        }

    # ------------------------------------------------------------------
    # driving jobs
    # ------------------------------------------------------------------

    def trigger(self, executor: str, task_type: int = _CLUSTER, args_str: str = "",
                parallel_num: int = 1, executor_timeout: int = 60, max_retry_times: int = 0,
                retry_interval: float = 0.0, shard_num: int = 2,
                wf_context: Optional[Dict[str, Any]] = None, executor_type: int = 2,
                labels: Optional[Dict[str, str]] = None, node: Optional[str] = None) -> EmulatedBatch:
        """Run a job once (a new job config per call) and return its batch.

        ``task_type``: 1 CLUSTER, 2 BROADCAST, 3 SHARDING (``args_str`` a
        JSON array of strings), 4 MAP, 5 MAP_REDUCE (``args_str`` is the
        user's parameters; the job's stored args become
        ``{"shardNum": shard_num, "argsStr": args_str}``).  ``wf_context`` is
        sent as ``wfContext`` (outside a workflow).  ``node`` (a host id)
        pins a CLUSTER task to that node.  ``retry_interval`` may be
        fractional here (the server uses whole seconds).
        """
        self._require_running()
        job = self._new_job(executor, task_type, args_str, parallel_num, executor_timeout,
                            max_retry_times, retry_interval, shard_num, executor_type, labels)
        with self._cond:
            return self._start_batch(job, wf_context=wf_context, workflow=None, index=None, target=node)

    def trigger_workflow(self, nodes: Sequence[Mapping[str, Any]],
                         wf_context: Optional[Dict[str, Any]] = None) -> EmulatedWorkflow:
        """Run a linear workflow: each element is a dict of ``trigger()``
        arguments (``executor`` required).  Each node's tasks are dispatched
        with ``workflowTaskBatchId``, ``workflowNodeId`` and the merged
        ``wfContext``."""
        self._require_running()
        if not nodes:
            raise ValueError("a workflow needs at least one node")
        specs: List[Dict[str, Any]] = []
        jobs: List[_Job] = []
        for spec in nodes:
            unknown = set(spec) - _WORKFLOW_NODE_KEYS
            if unknown:
                raise TypeError(f"unknown workflow node key(s): {sorted(unknown)}")
            if "executor" not in spec:
                raise TypeError("every workflow node needs 'executor'")
            specs.append(dict(spec))
            jobs.append(self._new_job(
                spec["executor"], spec.get("task_type", _CLUSTER), spec.get("args_str", ""),
                spec.get("parallel_num", 1), spec.get("executor_timeout", 60),
                spec.get("max_retry_times", 0), spec.get("retry_interval", 0.0),
                spec.get("shard_num", 2), spec.get("executor_type", 2), spec.get("labels")))
        with self._cond:
            workflow = EmulatedWorkflow(self, next(self._ids), specs, [next(self._ids) for _ in specs],
                                        jobs, dict(wf_context or {}))
            self._workflows[workflow.id] = workflow
            self._start_batch(jobs[0], wf_context=None, workflow=workflow, index=0, target=None)
            return workflow

    def stop_batch(self, batch_id: int) -> None:
        """Manual stop: send ``/job/stop/v1`` to the batch's nodes, mark every
        non-SUCCESS task STOP and the batch STOP.  No-op on a finished batch."""
        with self._cond:
            batch = self._batches[batch_id]
            if batch._done:
                return
            self._stop_running_batch(batch, REASON_MANUAL_STOP)

    def retry_batch(self, batch_id: int) -> None:
        """Manual retry from the console: every task that is not RUNNING or
        SUCCESS is re-dispatched at once with ``retry=true``,
        ``retryStatus=true``, ``retryScene=2``; the batch runs again with a
        new timeout."""
        with self._cond:
            batch = self._batches[batch_id]
            if not batch._done:
                raise RuntimeError(f"batch {batch_id} is still running")
            targets = [t for t in batch._tasks if t.status not in (_RUNNING, _SUCCESS)]
            if not targets:
                return
            batch._done = False
            batch._status = _RUNNING
            batch.completed_at = None
            batch.operation_reason = REASON_NONE
            for task in targets:
                task.status = _RUNNING
                task.retry_count += 1
                self._reroute(batch, task)
                self._submit_dispatch(task, _DispatchCtx(retry=True, retry_scene=_SCENE_MANUAL))
            self._schedule_timeout(batch)

    def call_client(self, uri: str, body: str, headers: Optional[Dict[str, str]] = None,
                    node: Union[ClientNode, str, None] = None,
                    timeout: float = 3.0) -> Tuple[int, str, str]:
        """Make a raw server -> client call and return ``(status, message, data)``.

        ``headers`` defaults to the server's headers (with the node group's
        ``SJ-TOKEN``); ``node`` (a ``ClientNode`` or host id) defaults to the
        first live node.  A gRPC failure raises the ``grpc.RpcError``.
        """
        self._require_running()
        with self._lock:
            target = self._resolve_node(node)
            hdrs = dict(headers) if headers is not None else self.server_headers(target)
        reply, error, exc = self._invoke(target, uri, body, hdrs, timeout)
        if exc is not None:
            raise exc
        if reply is None:  # pragma: no cover - defensive
            raise RuntimeError(error or "no reply")
        return reply.status, reply.message, reply.data

    # ------------------------------------------------------------------
    # inbound gRPC
    # ------------------------------------------------------------------

    def _handle(self, request: pb2.GrpcSnailJobRequest, context: grpc.ServicerContext) -> pb2.GrpcResult:
        uri = request.metadata.uri
        headers = dict(request.metadata.headers)
        exchange = Exchange(uri=uri, headers=headers, body=request.body, req_id=request.reqId, at=time.time())
        with self._cond:
            self._exchanges.append(exchange)
        if not uri.strip():
            self._hold_forever(context)
        status, message, data = self._process(uri, headers, request.body)
        text = dumps(data)
        with self._cond:
            exchange.status, exchange.message, exchange.data = status, message, text
            self._cond.notify_all()
        return pb2.GrpcResult(reqId=request.reqId, status=status, message=message, data=text)

    def _hold_forever(self, context: grpc.ServicerContext) -> NoReturn:
        """The server logs "uri can not be null" and never answers: hold the
        call until the caller gives up (bounded)."""
        finished = threading.Event()
        context.add_callback(finished.set)
        remaining = context.time_remaining()
        limit = _BLANK_URI_HOLD_MAX if remaining is None else min(_BLANK_URI_HOLD_MAX, max(0.0, remaining))
        deadline = time.monotonic() + limit
        while not finished.is_set() and not self._stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            finished.wait(min(left, 0.1))
        context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                      "SnailJob server never answers a blank uri (emulator gave up)")
        raise AssertionError("unreachable")  # pragma: no cover

    def _process(self, uri: str, headers: Dict[str, str], body: str) -> Tuple[int, str, Any]:
        try:
            args = _parse_args(body)
            self._check_token(headers)
            path = _path_of(uri)
            handler = self._handlers.get(path)
            if handler is None:
                raise _Failure(f"No matching handler found. Path:[{path}] method:[{{}}]")
            status, message, data = handler(args, headers)
            return status, message or "", data
        except _Failure as failure:
            return 0, failure.message, failure.data
        except Exception as exc:  # a bug here must not hang the caller
            logger.exception("emulator handler failed for %s", uri)
            return 0, f"{type(exc).__name__}: {exc}", None

    def _expected_token(self, group: str, namespace: Optional[str]) -> str:
        if group == SERVER_GROUP:
            return self.server_token
        if group == self.group and namespace == self.namespace:
            return self.token
        return ""

    def _check_token(self, headers: Dict[str, str]) -> None:
        group = headers.get("group-name")
        namespace = headers.get("namespace")
        token = headers.get("token")
        if token is None or not token.strip():
            raise _Failure(f"Token authentication failed. [namespace:{_fmt(namespace)} "
                           f"groupName:{_fmt(group)} token:{_fmt(token)}]")
        if group is None:
            raise _Failure("")  # NullPointerException in CacheToken.get: empty message
        if self._expected_token(group, namespace) != token:
            raise _Failure(f"Token authentication failed. [namespace:{_fmt(namespace)} "
                           f"groupName:{_fmt(group)} token:{_fmt(token)}]")

    def _problem(self, text: str) -> None:
        logger.warning("snailjob emulator: %s", text)
        self._problems.append(text)

    # -- /beat -----------------------------------------------------------

    def _on_beat(self, args: Optional[List[Any]], headers: Dict[str, str]) -> Tuple[int, str, Any]:
        raw_port = _header(headers, "host-port")
        if raw_port is None:
            raise _Failure("Cannot parse null string: null")
        if not _INT_RE.fullmatch(raw_port):
            raise _Failure(f'For input string: "{raw_port}"')
        port = int(raw_port)
        host_id = _header(headers, "host-id")
        host_ip = _header(headers, "host-ip")
        group = headers.get("group-name", "")
        namespace = headers.get("namespace", "")
        now, mono = time.time(), time.monotonic()
        with self._cond:
            self._beats.append(RecordedBeat(host_id, host_ip, port, dict(headers), args, now))
            if not host_id or not host_ip:
                self._problem(f"/beat without host-id or host-ip (host-id={host_id!r}, host-ip={host_ip!r})")
            elif "@" in host_id:
                self._problem(f"host-id {host_id!r} contains '@'")
            key = (namespace, group, host_id or "")
            node = self._nodes.get(key)
            if node is not None and self._expired(node):
                del self._nodes[key]
                node = None
            if node is None:
                node = ClientNode(host_id=host_id or "", host_ip=host_ip or "", host_port=port,
                                  namespace=namespace, group=group,
                                  labels=self._parse_labels(_header(headers, "label"), host_id),
                                  headers=dict(headers), first_beat=now, last_beat=now,
                                  registered=self.register_delay <= 0, last_beat_monotonic=mono)
                self._nodes[key] = node
                if not node.registered and self._scheduler is not None:
                    self._scheduler.schedule(self.register_delay, functools.partial(self._register, node))
            else:
                node.last_beat, node.last_beat_monotonic = now, mono
                node.beat_count += 1
                node.headers = dict(headers)
                node.alive = True
                if node.address != f"{host_ip}:{port}":
                    self._problem(f"node {host_id} beat from {host_ip}:{port} but is registered at "
                                  f"{node.address}; the server keeps the first address")
            self._cond.notify_all()
        return 1, _MSG_BEAT_OK, "PONG"

    def _register(self, node: ClientNode) -> None:
        with self._cond:
            node.registered = True
            self._cond.notify_all()

    def _parse_labels(self, raw: Optional[str], host_id: Optional[str]) -> Dict[str, str]:
        if raw is None or not raw.strip():
            return {}
        try:
            value = json.loads(raw)
        except ValueError:
            value = None
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            self._problem(f"node {host_id}: label header {raw!r} is not a JSON object of strings "
                          "(the server's node refresh would fail)")
            return {}
        return dict(value)

    # -- /register/job/executors ---------------------------------------------

    def _on_register_executors(self, args: Optional[List[Any]],
                               headers: Dict[str, str]) -> Tuple[int, str, Any]:
        first = _arg0(args)
        if first is None:
            return 0, _MSG_REGISTER_NULL, False
        if not isinstance(first, list):
            raise _Failure("Cannot deserialize value of type `java.util.ArrayList` from "
                           f"{type(first).__name__}")
        names: List[str] = []
        for item in first:
            if not isinstance(item, dict):
                raise _Failure("Cannot deserialize value of type `JobExecutorRequest` from "
                               f"{type(item).__name__}")
            name = item.get("executorInfo")
            if isinstance(name, str) and name:
                names.append(name)
        with self._cond:
            self._executors.update(names)
            self._cond.notify_all()
        return 1, _MSG_REGISTER_OK, True

    # -- /sync/version -------------------------------------------------------

    def _on_sync_version(self, args: Optional[List[Any]], headers: Dict[str, str]) -> Tuple[int, str, Any]:
        return 1, "", self.config

    # -- retry module ----------------------------------------------------------

    def _retry_handler(self, message: str) -> Handler:
        def handle(args: Optional[List[Any]], headers: Dict[str, str]) -> Tuple[int, str, Any]:
            with self._cond:
                self._retry_requests.append(RecordedRequest("", dict(headers), dumps(args)))
                self._cond.notify_all()
            return 1, message, True
        return handle

    # -- /report/dispatch/result ---------------------------------------------

    def _on_report_result(self, args: Optional[List[Any]], headers: Dict[str, str]) -> Tuple[int, str, Any]:
        req = _arg0(args)
        if isinstance(req, dict):
            with self._cond:
                self._results.append(req)
                self._cond.notify_all()
        if not isinstance(req, dict):
            raise _Failure("Cannot deserialize value of type `DispatchJobResultRequest` from "
                           f"{type(req).__name__}")
        if self.strict_primitives:
            for name in ("retry",):  # ``retryStatus`` is a boxed Boolean: null is fine
                if name in req and req[name] is None:
                    raise _Failure(f"Cannot map `null` into type `boolean` (set "
                                   "DeserializationConfig.DeserializationFeature."
                                   "FAIL_ON_NULL_FOR_PRIMITIVES "
                                   f"to 'false' to allow) (through reference chain: "
                                   f"DispatchJobResultRequest[\"{name}\"])")
        execute_result = req.get("executeResult")
        if execute_result is not None and not isinstance(execute_result, dict):
            raise _Failure("Cannot deserialize value of type `ExecuteResult` from "
                           f"{type(execute_result).__name__}")
        if (self.strict_primitives and isinstance(execute_result, dict)
                and "status" in execute_result and execute_result["status"] is None):
            raise _Failure("Cannot map `null` into type `int` (set DeserializationConfig."
                           "DeserializationFeature.FAIL_ON_NULL_FOR_PRIMITIVES to 'false' to allow) "
                           "(through reference chain: "
                           "DispatchJobResultRequest[\"executeResult\"]->ExecuteResult[\"status\"])")
        task_type = _as_long(req.get("taskType"), "taskType", required=False)
        if task_type is None:
            raise _Failure('Cannot invoke "java.lang.Integer.intValue()" because "taskType" is null')
        task_status = _as_long(req.get("taskStatus"), "taskStatus", required=False)
        task_id = _as_long(req.get("taskId"), "taskId", required=False)
        job_id = _as_long(req.get("jobId"), "jobId", required=False)
        batch_id = _as_long(req.get("taskBatchId"), "taskBatchId", required=False)
        retry = bool(req.get("retry") or False)
        retry_status = bool(req.get("retryStatus") or False)
        retry_scene = _as_long(req.get("retryScene"), "retryScene", required=False)
        wf_context = req.get("wfContext")
        if wf_context is not None and not isinstance(wf_context, str):
            wf_context = dumps(wf_context)

        with self._cond:
            task = self._task_index.get(task_id) if task_id is not None else None
            if task is None:
                if task_type in (_MAP, _MAP_REDUCE):
                    raise _Failure("job task is null")
                self._problem(f"result for unknown task {task_id} (batch {batch_id})")
                return 1, _MSG_RESULT_OK, True
            task.reports.append(req)
            if task_status is None:
                raise _Failure('Cannot invoke "java.lang.Integer.equals(Object)" because '
                               '"taskStatus" is null')
            if execute_result is None:
                raise _Failure('Cannot invoke "ExecuteResult.getResult()" because "executeResult" is null')
            if job_id is None or batch_id is None:
                self._problem(f"result for task {task_id} without jobId/taskBatchId: the server's "
                              "result actor drops it")
                self._cond.notify_all()
                return 1, _MSG_RESULT_OK, True
            if batch_id != task.batch_id or job_id != task.job_id:
                self._problem(f"result for task {task_id} names batch {batch_id}/job {job_id}, "
                              f"but the task belongs to batch {task.batch_id}/job {task.job_id}")
            batch = self._batches[task.batch_id]
            if batch.workflow is not None:
                if req.get("workflowTaskBatchId") in (None, 0) or req.get("workflowNodeId") is None:
                    self._problem(f"result for workflow task {task_id} does not echo "
                                  "workflowTaskBatchId/workflowNodeId")
            if retry_scene == _SCENE_MANUAL and not (retry or retry_status):
                loops = self._manual_loops.get(task.task_id, 0) + 1
                self._manual_loops[task.task_id] = loops
            self._callback(task, int(task_status), dict(execute_result), wf_context,
                           retry or retry_status, retry_scene)
            self._cond.notify_all()
        return 1, _MSG_RESULT_OK, True

    # -- /batch/report/job/map/task/v1 ---------------------------------------

    def _on_map_report(self, args: Optional[List[Any]], headers: Dict[str, str]) -> Tuple[int, str, Any]:
        if self.map_report_delay > 0:
            self._stopping.wait(self.map_report_delay)
        req = _arg0(args)
        if isinstance(req, dict):
            with self._cond:
                self._map_reports.append(req)
                self._cond.notify_all()
        if not isinstance(req, dict):
            raise _Failure(f"Cannot deserialize value of type `MapTaskRequest` from {type(req).__name__}",
                           data=False)
        try:
            job_id = _as_long(req.get("jobId"), "jobId", required=False)
            batch_id = _as_long(req.get("taskBatchId"), "taskBatchId", required=False)
            parent_id = _as_long(req.get("parentId"), "parentId", required=False)
        except _Failure as failure:
            raise _Failure(failure.message, data=False) from None
        group = _header(headers, "group-name")
        namespace = _header(headers, "namespace")
        with self._cond:
            job = self._jobs.get(job_id) if job_id is not None else None
            if job is None or job.group != group or job.namespace != namespace:
                return 0, _MSG_MAP_NO_JOB, False
            sub_tasks = req.get("subTask")
            if not isinstance(sub_tasks, list) or not sub_tasks:
                return 0, _MSG_MAP_EMPTY, False
            batch = self._batches.get(batch_id) if batch_id is not None else None
            if batch is None or batch.job_id != job.job_id:
                self._problem(f"map report for unknown batch {batch_id} of job {job_id}")
                return 0, _MSG_MAP_EMPTY, False
            task_name = req.get("taskName")
            if not isinstance(task_name, str) or not task_name:
                self._problem(f"map report without taskName (batch {batch_id})")
                task_name = str(task_name)
            elif task_name == enums.ROOT_MAP:
                self._problem(f"map report uses the reserved task name {enums.ROOT_MAP} (batch {batch_id})")
            if job.task_type not in (_MAP, _MAP_REDUCE):
                self._problem(f"map report for batch {batch_id} of a task type {job.task_type} job")
            wf_context = req.get("wfContext")
            if wf_context is not None and not isinstance(wf_context, str):
                wf_context = dumps(wf_context)
            parent = self._task_index.get(parent_id) if parent_id is not None else None
            if parent is None or parent.batch_id != batch.id:
                self._problem(f"map report names parent {parent_id}, not a task of batch {batch_id}")
            children: List[EmulatedTask] = []
            for element in sub_tasks:
                child = self._new_task(batch, task_name, _args_json(job.job_params, maps=element),
                                       mr_stage=_STAGE_MAP, parent_id=parent_id or 0)
                child.wf_context = wf_context
                self._assign_round_robin(batch, child)
                children.append(child)
            if parent is not None and parent.batch_id == batch.id:
                parent.leaf = False
            for child in children:
                if child.status == _RUNNING:
                    self._submit_dispatch(child, _DispatchCtx())
            self._cond.notify_all()
        return 1, _MSG_MAP_OK, True

    # -- /batch/server/report/log ----------------------------------------------

    def _on_logs(self, args: Optional[List[Any]], headers: Dict[str, str]) -> Tuple[int, str, Any]:
        entries = _arg0(args)
        if not isinstance(entries, list):
            raise _Failure(f"Cannot deserialize value of type `java.util.ArrayList` from "
                           f"{type(entries).__name__}")
        job_entries: List[Dict[str, Any]] = []
        retry_entries: List[Dict[str, Any]] = []
        for entry in entries:
            if not isinstance(entry, dict):
                raise _Failure(f"Cannot deserialize log entry from {type(entry).__name__}")
            log_type = entry.get("logType")
            if log_type is None or log_type == "JOB":
                job_entries.append(entry)
            elif log_type == "RETRY":
                retry_entries.append(entry)
        with self._cond:
            if job_entries:
                self._store_job_logs(job_entries)
            if retry_entries:
                reason = self._log_batch_problem(retry_entries, "retryTaskId")
                if reason:
                    self._dropped_logs.append(DroppedLogBatch(list(retry_entries), reason))
                else:
                    self._retry_logs.extend(retry_entries)
            self._cond.notify_all()
        return 1, _MSG_LOG_OK, True

    def _log_batch_problem(self, entries: List[Dict[str, Any]], key: str) -> Optional[str]:
        for entry in entries:
            if entry.get(key) is None:
                return f"an entry has a null {key} (groupingBy throws; the whole batch is dropped)"
            fields = entry.get("fieldList")
            if not isinstance(fields, list):
                return "an entry has no fieldList list (the whole batch is dropped)"
            seen: Set[str] = set()
            for item in fields:
                if not isinstance(item, dict):
                    return "a fieldList element is not an object (the whole batch is dropped)"
                if item.get("value") is None:
                    continue
                name = item.get("name")
                if name is None:
                    return "a fieldList element has a null name (the whole batch is dropped)"
                if name in seen:
                    return f"an entry has the field {name!r} twice (toMap throws; the whole batch is dropped)"
                seen.add(name)
        return None

    def _store_job_logs(self, entries: List[Dict[str, Any]]) -> None:
        reason = self._log_batch_problem(entries, "taskId")
        if reason:
            self._dropped_logs.append(DroppedLogBatch(list(entries), reason))
            logger.info("snailjob emulator dropped a log batch of %d entries: %s", len(entries), reason)
            return
        groups: Dict[Any, List[Dict[str, Any]]] = {}
        for entry in entries:
            fields = {f["name"]: f.get("value") for f in entry["fieldList"] if f.get("value") is not None}
            stamp = fields.get("time_stamp")
            if not isinstance(stamp, str) or not _INT_RE.fullmatch(stamp):
                self._problem(f"log entry of task {entry.get('taskId')} has time_stamp {stamp!r}; "
                              "the console's log view needs epoch ms as a decimal string")
            for name in ("namespaceId", "groupName", "jobId", "taskBatchId", "realTime"):
                if entry.get(name) is None:
                    self._problem(f"log entry of task {entry.get('taskId')} has no {name}")
            groups.setdefault(entry["taskId"], []).append(entry)
        self._logs.extend(entries)
        for task_id, group in groups.items():
            first = group[0]
            self._log_rows.append({
                "taskId": task_id,
                "taskBatchId": first.get("taskBatchId"),
                "jobId": first.get("jobId"),
                "namespaceId": first.get("namespaceId"),
                "groupName": first.get("groupName"),
                "realTime": first.get("realTime"),
                "logNum": len(group),
                "message": [{f["name"]: f["value"] for f in e["fieldList"] if f.get("value") is not None}
                            for e in group],
            })

    # ------------------------------------------------------------------
    # jobs, batches and tasks (callers hold the lock unless noted)
    # ------------------------------------------------------------------

    def _require_running(self) -> None:
        if not self._started or self._stopping.is_set():
            raise RuntimeError("the emulator is not running (call start() or use it as a context manager)")

    def _new_job(self, executor: str, task_type: int, args_str: Optional[str], parallel_num: int,
                 executor_timeout: int, max_retry_times: int, retry_interval: float, shard_num: int,
                 executor_type: int, labels: Optional[Dict[str, str]]) -> _Job:
        if not isinstance(executor, str) or not executor.strip():
            raise ValueError("executor must be a non-blank string")
        if task_type not in (_CLUSTER, _BROADCAST, _SHARDING, _MAP, _MAP_REDUCE):
            raise ValueError(f"task_type must be 1..5, not {task_type!r}")
        if executor_timeout < 1 or int(executor_timeout) != executor_timeout:
            raise ValueError("executor_timeout is whole seconds, at least 1")
        if max_retry_times < 0 or retry_interval < 0:
            raise ValueError("max_retry_times and retry_interval must not be negative")
        stored = args_str
        job_params: Optional[str] = args_str
        if task_type == _SHARDING:
            try:
                shards = json.loads(args_str or "")
            except ValueError:
                shards = None
            if not isinstance(shards, list) or not shards or not all(isinstance(s, str) for s in shards):
                raise ValueError("a SHARDING job's args_str must be a non-empty JSON array of strings "
                                 "(the server generates no task otherwise)")
        if task_type == _MAP_REDUCE:
            stored = dumps({"shardNum": int(shard_num), "argsStr": args_str})
            job_params = args_str
        with self._lock:
            job = _Job(job_id=next(self._ids), executor=executor, task_type=int(task_type),
                       args_str=stored or "", job_params=job_params, parallel_num=int(parallel_num),
                       executor_timeout=int(executor_timeout), max_retry_times=int(max_retry_times),
                       retry_interval=float(retry_interval), executor_type=int(executor_type),
                       labels=dict(labels or {}), namespace=self.namespace, group=self.group,
                       shard_num=int(shard_num))
            self._jobs[job.job_id] = job
        return job

    def _start_batch(self, job: _Job, wf_context: Optional[Dict[str, Any]],
                     workflow: Optional[EmulatedWorkflow], index: Optional[int],
                     target: Optional[str]) -> EmulatedBatch:
        batch = EmulatedBatch(self, next(self._ids), job, wf_context, workflow, index)
        self._batches[batch.id] = batch
        if workflow is not None:
            workflow._batches.append(batch)
        live = self._live_nodes(job)
        if not live:
            logger.info("snailjob emulator: no live client for batch %d: CANCEL", batch.id)
            self._finish(batch, _CANCEL, REASON_NOT_CLIENT, post_stop=False)
            return batch
        batch._status = _RUNNING
        if job.task_type == _CLUSTER:
            task = self._new_task(batch, _TASK_NAMES[_CLUSTER], _args_json(job.job_params))
            chosen = None
            if target is not None:
                chosen = next((n for n in live if n.host_id == target), None)
                if chosen is None:
                    self._problem(f"trigger(node={target!r}): no such live node; routing round-robin")
            if chosen is not None:
                self._assign(task, chosen)
            else:
                self._assign_round_robin(batch, task)
        elif job.task_type == _BROADCAST:
            seen: Set[str] = set()
            for node in live:
                if node.address in seen:
                    continue
                seen.add(node.address)
                self._assign(self._new_task(batch, _TASK_NAMES[_BROADCAST], _args_json(job.job_params)), node)
        elif job.task_type == _SHARDING:
            shards = json.loads(job.args_str)
            for i, shard in enumerate(shards):
                task = self._new_task(batch, _TASK_NAMES[_SHARDING], _args_json(shard))
                task.sharding_index, task.sharding_total = i, len(shards)
                self._assign(task, live[i % len(live)])
        else:
            task = self._new_task(batch, enums.ROOT_MAP, _args_json(job.job_params, maps=""),
                                  mr_stage=_STAGE_MAP)
            self._assign_round_robin(batch, task)
        self._schedule_timeout(batch)
        for task in batch._tasks:
            if task.status == _RUNNING:
                self._submit_dispatch(task, _DispatchCtx())
        self._cond.notify_all()
        return batch

    def _new_task(self, batch: EmulatedBatch, name: str, args_str: str,
                  mr_stage: Optional[int] = None, parent_id: int = 0) -> EmulatedTask:
        task = EmulatedTask(task_id=next(self._task_ids), batch_id=batch.id, job_id=batch.job_id,
                            task_name=name, args_str=args_str, parent_id=parent_id, mr_stage=mr_stage)
        batch._tasks.append(task)
        self._task_index[task.task_id] = task
        return task

    def _assign(self, task: EmulatedTask, node: ClientNode) -> None:
        task.node = node.host_id
        task.client_address = node.address

    def _assign_round_robin(self, batch: EmulatedBatch, task: EmulatedTask) -> None:
        live = self._live_nodes(batch._job)
        if not live:
            task.status = _CANCEL
            task.node = None
            task.client_address = None
            return
        node = live[batch._job.rr % len(live)]
        batch._job.rr += 1
        self._assign(task, node)

    def _reroute(self, batch: EmulatedBatch, task: EmulatedTask) -> None:
        """Node choice for a job-level retry (protocol.md section 5.6)."""
        live = self._live_nodes(batch._job)
        if not live:
            return  # keep the old node: the dispatch then fails "Client does not exist"
        if batch.task_type == _CLUSTER:
            self._assign_round_robin(batch, task)
        elif batch.task_type == _BROADCAST:
            current = next((n for n in live if n.host_id == task.node), None)
            if current is None:
                used = {t.client_address for t in batch._tasks}
                current = next((n for n in live if n.address not in used), None)
            if current is not None:
                self._assign(task, current)
        else:
            self._assign(task, self._random.choice(live))

    def _schedule_timeout(self, batch: EmulatedBatch) -> None:
        if self._scheduler is None:
            return
        started = time.monotonic()
        delay = batch._job.executor_timeout + _TIMEOUT_GRACE

        def check() -> None:
            with self._cond:
                if self._stopping.is_set() or batch._done:
                    return
                logger.info("snailjob emulator: batch %d timed out after %.1fs",
                            batch.id, time.monotonic() - started)
                self._stop_running_batch(batch, REASON_TIMEOUT)

        self._scheduler.schedule(delay, check)

    def _stop_running_batch(self, batch: EmulatedBatch, reason: int) -> None:
        nodes: List[str] = []
        for task in batch._tasks:
            if task.node and task.node not in nodes:
                nodes.append(task.node)
        for task in batch._tasks:
            if task.status != _SUCCESS:
                task.status = _STOP
        self._finish(batch, _STOP, reason, post_stop=False)
        for host_id in nodes:
            self._send_stop(batch, host_id)

    # -- results ------------------------------------------------------------

    def _callback(self, task: EmulatedTask, task_status: int, execute_result: Dict[str, Any],
                  wf_context: Optional[str], is_retry: bool, retry_scene: Optional[int]) -> None:
        """``AbstractClientCallbackHandler.callback``: job-level retry or result."""
        batch = self._batches[task.batch_id]
        job = batch._job
        need_retry = False
        scene = retry_scene
        if retry_scene == _SCENE_MANUAL and not is_retry:
            need_retry = True
            if self._manual_loops.get(task.task_id, 0) > _MANUAL_LOOP_LIMIT:
                self._problem(f"task {task.task_id}: manual retry reported back without retry/retryStatus "
                              f"{_MANUAL_LOOP_LIMIT}+ times; the server would re-dispatch forever "
                              "(emulator stops re-dispatching)")
                need_retry = False
        elif task_status == _FAIL and task.retry_count < job.max_retry_times:
            need_retry = True
            scene = _SCENE_AUTO
        if need_retry:
            task.retry_count += 1
            self._reroute(batch, task)
            ctx = _DispatchCtx(retry=True, retry_scene=scene)
            if scene == _SCENE_MANUAL:
                self._submit_dispatch(task, ctx)
            else:
                if self._scheduler is not None:
                    self._scheduler.schedule(job.retry_interval,
                                             lambda: self._dispatch(task, ctx))
                return
        self._apply_result(task, task_status, execute_result, wf_context)

    def _apply_result(self, task: EmulatedTask, task_status: int, execute_result: Dict[str, Any],
                      wf_context: Optional[str]) -> None:
        """``JobExecutorResultActor``: update the row, then try to complete."""
        batch = self._batches[task.batch_id]
        task.status = task_status
        if wf_context is not None:
            task.wf_context = wf_context
        result = execute_result.get("result")
        if result is not None:
            task.result = _result_message(result)
        task.execute_result = execute_result
        message = execute_result.get("message")
        if isinstance(message, str):
            task.message = message
        if batch.task_type in (_MAP, _MAP_REDUCE) and not task.leaf and self.map_race_quirk:
            return
        self._try_complete(batch)

    def _fail_directly(self, task: EmulatedTask, message: str) -> None:
        """``RequestClientActor.taskExecuteFailure``: FAIL without the retry rules."""
        self._apply_result(task, _FAIL, {"status": 0, "result": None, "message": message}, None)

    def _try_complete(self, batch: EmulatedBatch) -> None:
        if batch._done or not batch._tasks:
            return
        if any(t.status in (_WAITING, _RUNNING) for t in batch._tasks):
            return
        statuses = {t.status for t in batch._tasks}
        if _FAIL in statuses:
            self._finish(batch, _FAIL, REASON_NONE, post_stop=True)
            return
        if _STOP in statuses:
            self._finish(batch, _STOP, REASON_NONE, post_stop=True)
            return
        if batch.task_type == _MAP_REDUCE:
            stages = [t.mr_stage for t in batch._tasks]
            if all(stage == _STAGE_MAP for stage in stages):
                if self._create_reduce(batch):
                    return
            elif stages.count(_STAGE_REDUCE) > 1 and _STAGE_MERGE not in stages:
                self._create_merge(batch)
                return
        self._finish(batch, _SUCCESS, REASON_NONE, post_stop=True)

    def _create_reduce(self, batch: EmulatedBatch) -> bool:
        leaves = [t for t in batch._tasks if t.mr_stage == _STAGE_MAP and t.leaf]
        if not leaves:
            return False
        parts = _partition([t.result for t in leaves], batch._job.shard_num)
        created = []
        for part in parts:
            task = self._new_task(batch, _REDUCE_TASK, _args_json(batch.job_params, maps=part),
                                  mr_stage=_STAGE_REDUCE)
            self._assign_round_robin(batch, task)
            created.append(task)
        self._dispatch_created(batch, created)
        return True

    def _create_merge(self, batch: EmulatedBatch) -> None:
        reduces = [t.result for t in batch._tasks if t.mr_stage == _STAGE_REDUCE and t.leaf]
        task = self._new_task(batch, _MERGE_REDUCE_TASK, _args_json(batch.job_params, reduces=reduces),
                              mr_stage=_STAGE_MERGE)
        self._assign_round_robin(batch, task)
        self._dispatch_created(batch, [task])

    def _dispatch_created(self, batch: EmulatedBatch, created: List[EmulatedTask]) -> None:
        running = [t for t in created if t.status == _RUNNING]
        for task in running:
            self._submit_dispatch(task, _DispatchCtx())
        if not running:  # no live node: the new tasks are CANCEL
            self._try_complete(batch)

    def _finish(self, batch: EmulatedBatch, status: int, reason: int, post_stop: bool) -> None:
        if batch._done:
            return
        batch._status = status
        batch._done = True
        batch.operation_reason = reason
        batch.completed_at = time.time()
        logger.debug("snailjob emulator: batch %d finished with status %d", batch.id, status)
        if post_stop and batch.task_type != _CLUSTER:
            for task in batch._tasks:
                if task.node:
                    self._send_stop(batch, task.node)
        self._cond.notify_all()
        if batch.workflow is not None and not batch.workflow._done:
            self._workflow_step(batch)

    # -- workflows ------------------------------------------------------------

    def _workflow_step(self, batch: EmulatedBatch) -> None:
        workflow = batch.workflow
        if workflow is None or batch.workflow_index is None:
            return
        if workflow._batches and workflow._batches[-1] is not batch:
            return  # a stale node (for example a manual retry of an earlier node)
        index = batch.workflow_index
        has_next = index + 1 < len(workflow.nodes)
        if has_next:
            for task in batch._tasks:
                self._merge_context(workflow._context, task.wf_context)
        if batch._status == _SUCCESS and has_next:
            self._start_batch(workflow._jobs[index + 1], wf_context=None, workflow=workflow,
                              index=index + 1, target=None)
            return
        workflow._status = batch._status
        workflow._done = True
        self._cond.notify_all()

    @staticmethod
    def _merge_context(context: Dict[str, Any], text: Optional[str]) -> None:
        """``mergeMaps``: the task's keys overwrite; null keys/values skipped;
        a value that is not a JSON object is ignored."""
        if not text:
            return
        try:
            value = json.loads(text)
        except ValueError:
            return
        if not isinstance(value, dict):
            return
        for key, item in value.items():
            if key is None or item is None:
                continue
            context[key] = item

    def _wf_context_text(self, batch: EmulatedBatch) -> Optional[str]:
        if batch.workflow is not None:
            return dumps(batch.workflow._context)
        if batch._wf_context is not None:
            return dumps(batch._wf_context)
        return None

    # ------------------------------------------------------------------
    # nodes
    # ------------------------------------------------------------------

    def _expired(self, node: ClientNode) -> bool:
        return time.monotonic() - node.last_beat_monotonic > self.node_expiry

    def _is_live(self, node: ClientNode) -> bool:
        return node.registered and node.alive and not self._expired(node)

    @staticmethod
    def _labels_match(node: ClientNode, labels: Dict[str, str]) -> bool:
        if not node.labels:
            return True
        wanted = dict(labels)
        wanted["state"] = "up"
        return all(node.labels.get(key) == value for key, value in wanted.items())

    def _live_nodes(self, job: _Job) -> List[ClientNode]:
        return [n for n in self._nodes.values()
                if n.namespace == job.namespace and n.group == job.group
                and self._is_live(n) and self._labels_match(n, job.labels)]

    def _node_by_id(self, host_id: str, job: Optional[_Job] = None) -> Optional[ClientNode]:
        for node in self._nodes.values():
            if node.host_id == host_id and (job is None or (node.group == job.group
                                                            and node.namespace == job.namespace)):
                return node
        return None

    def _resolve_node(self, node: Union[ClientNode, str, None]) -> ClientNode:
        if isinstance(node, ClientNode):
            return node
        if isinstance(node, str):
            found = self._node_by_id(node)
            if found is None:
                raise LookupError(f"no node with host id {node!r}")
            return found
        live = [n for n in self._nodes.values() if self._is_live(n)]
        if not live:
            raise LookupError("no live client node")
        return live[0]

    # ------------------------------------------------------------------
    # outbound calls (never under the lock)
    # ------------------------------------------------------------------

    def _submit(self, fn: Callable[[], None]) -> None:
        pool = self._pool
        if pool is None or self._stopping.is_set():
            return

        def guarded() -> None:
            if self._stopping.is_set():
                return
            try:
                fn()
            except Exception:
                logger.exception("snailjob emulator background work failed")

        try:
            pool.submit(guarded)
        except RuntimeError:  # pool shut down
            pass

    def _submit_dispatch(self, task: EmulatedTask, ctx: _DispatchCtx) -> None:
        self._submit(lambda: self._dispatch(task, ctx))

    def _channel_call(self, address: str) -> Any:
        """The unary callable of the long-lived channel to ``address``
        (``None`` once the emulator is stopping)."""
        with self._lock:
            if self._stopping.is_set():
                return None
            entry = self._channels.get(address)
            if entry is None:
                channel = grpc.insecure_channel(address, options=[
                    ("grpc.max_receive_message_length", _MAX_MESSAGE),
                    ("grpc.max_send_message_length", _MAX_MESSAGE),
                    ("grpc.enable_retries", 0),
                ])
                call = channel.unary_unary(_METHOD,
                                           request_serializer=pb2.GrpcSnailJobRequest.SerializeToString,
                                           response_deserializer=pb2.GrpcResult.FromString)
                entry = (channel, call)
                self._channels[address] = entry
            return entry[1]

    def _invoke(self, node: ClientNode, uri: str, body: str, headers: Dict[str, str],
                timeout: float) -> Tuple[Optional[pb2.GrpcResult], Optional[str], Optional[grpc.RpcError]]:
        if self._stopping.is_set():
            return None, "emulator stopped", None
        req_id = next(self._req_ids)
        record = OutboundCall(uri=uri, node=node.host_id, address=node.address, headers=dict(headers),
                              body=body, req_id=req_id, at=time.time())
        with self._cond:
            self._outbound.append(record)
        call = self._channel_call(node.address)
        if call is None:
            with self._cond:
                record.error, record.finished = "emulator stopped", True
            return None, "emulator stopped", None
        request = pb2.GrpcSnailJobRequest(reqId=req_id, metadata=pb2.Metadata(uri=uri, headers=headers),
                                          body=body)
        reply: Optional[pb2.GrpcResult] = None
        error: Optional[str] = None
        exc: Optional[grpc.RpcError] = None
        try:
            reply = call(request, timeout=timeout)
        except grpc.RpcError as rpc_error:
            exc = rpc_error
            code = getattr(rpc_error, "code", lambda: None)()
            details = getattr(rpc_error, "details", lambda: None)()
            error = f"{getattr(code, 'name', code)}: {details}"
        except ValueError:  # the channel was closed by stop() meanwhile
            error = "emulator stopped"
        with self._cond:
            if reply is not None:
                record.status, record.message, record.data = reply.status, reply.message, reply.data
            record.error = error
            record.finished = True
            self._cond.notify_all()
        return reply, error, exc

    def _dispatch_body(self, batch: EmulatedBatch, task: EmulatedTask, ctx: _DispatchCtx) -> Dict[str, Any]:
        job = batch._job
        body: Dict[str, Any] = {
            "namespaceId": job.namespace,
            "jobId": job.job_id,
            "taskBatchId": batch.id,
            "taskId": task.task_id,
            "taskType": job.task_type,
            "groupName": job.group,
            "parallelNum": job.parallel_num,
            "executorType": job.executor_type,
            "executorInfo": job.executor,
            "executorTimeout": job.executor_timeout,
            "taskName": task.task_name,
            "mrStage": task.mr_stage,
            "argsStr": task.args_str,
            "shardingTotal": task.sharding_total,
            "shardingIndex": task.sharding_index,
            "workflowTaskBatchId": batch.workflow.id if batch.workflow is not None else None,
            "workflowNodeId": batch.workflow_node_id,
            "wfContext": self._wf_context_text(batch),
            "retryCount": task.retry_count,
            "retryScene": ctx.retry_scene,
            "retry": ctx.retry,
            "retryStatus": ctx.retry,
        }
        return {key: value for key, value in body.items() if value is not None}

    def _dispatch(self, task: EmulatedTask, ctx: _DispatchCtx) -> None:
        """``RequestClientActor``: dispatch one task (runs on a pool thread)."""
        if self._stopping.is_set():
            return
        with self._cond:
            batch = self._batches[task.batch_id]
            job = batch._job
            node = self._node_by_id(task.node, job) if task.node else None
            if node is None or not self._is_live(node):
                task.message = _MSG_CLIENT_MISSING
                self._fail_directly(task, _MSG_CLIENT_MISSING)
                self._cond.notify_all()
                return
            body = self._dispatch_body(batch, task, ctx)
            task.dispatch_requests.append(body)
            text = dumps([body])
            attempts = job.max_retry_times if job.max_retry_times > 0 and not ctx.retry else 1
        attempt = 0
        while True:
            attempt += 1
            with self._lock:
                headers = self.server_headers(node)
            reply, error, _ = self._invoke(node, enums.URI_DISPATCH, text, headers, _DISPATCH_TIMEOUT)
            data_value: Any = None
            if reply is not None and reply.data.strip():
                try:
                    data_value = json.loads(reply.data)
                except ValueError:
                    error = f"data is not JSON: {reply.data[:200]!r}"
            with self._cond:
                task.dispatch_replies.append(DispatchReply(
                    node=node.host_id,
                    status=reply.status if reply is not None else None,
                    message=reply.message if reply is not None else None,
                    data=reply.data if reply is not None else None,
                    error=error))
                self._cond.notify_all()
            if error is None:
                break
            if self._stopping.is_set():
                return
            with self._cond:
                node.alive = False  # a failed call marks the node not alive until its next beat
                if attempt >= attempts:
                    self._fail_directly(task, error)
                    self._cond.notify_all()
                    return
            if self._stopping.wait(job.retry_interval):
                return
            with self._cond:
                live = self._live_nodes(job)
                if not live:
                    self._fail_directly(task, f"{error} (no live node to fail over to)")
                    self._cond.notify_all()
                    return
                node = live[0]
                self._assign(task, node)
        assert reply is not None
        with self._cond:
            if attempt > 1:
                task.retry_count = attempt
            if not (reply.status == 1 and data_value is True):
                self._callback(task, _FAIL, {"status": 0, "result": None, "message": reply.message},
                               None, ctx.retry, ctx.retry_scene)
            self._cond.notify_all()

    def _send_stop(self, batch: EmulatedBatch, host_id: str) -> None:
        """``RealStopTaskActor``: ``/job/stop/v1`` to a live node, 1 s deadline,
        up to 3 attempts 1 s apart; the reply is ignored."""
        node = self._node_by_id(host_id, batch._job)
        if node is None or not self._is_live(node):
            return
        body = dumps([{"jobId": batch.job_id, "taskBatchId": batch.id, "groupName": batch._job.group}])

        def attempt(n: int) -> None:
            with self._lock:
                headers = self.server_headers(node)
            _, error, _ = self._invoke(node, enums.URI_STOP, body, headers, _STOP_TIMEOUT)
            if error is not None and n < _STOP_ATTEMPTS and self._scheduler is not None:
                self._scheduler.schedule(_STOP_RETRY_WAIT, lambda: attempt(n + 1))

        self._submit(lambda: attempt(1))
