"""An in-process fake of the SnailJob server's client-facing gRPC protocol.

``ServerEmulator`` is a real gRPC server on ``127.0.0.1`` that answers the
URIs a job client calls (``/beat``, ``/register/job/executors``,
``/report/dispatch/result``, ``/batch/report/job/map/task/v1``,
``/batch/server/report/log``, ``/sync/version``) the way the Java server does,
and that plays the server's side of a job: it builds the tasks of a batch,
dispatches them to the registered nodes with ``/job/dispatch/v1``, applies
the reported results, creates map, reduce and merge tasks, retries failed
tasks, times batches out, sends ``/job/stop/v1`` and runs linear workflows.
It also plays the server's side of the distributed retry module: it takes
``/batch/report``, dispatches retries with ``/retry/dispatch/v1``, applies
``/report/retry/dispatch/result``, sends ``/retry/callback/v1`` and applies
``/report/retry/callback/result``, and makes the console's calls
(``/retry/stop/v1``, ``/retry/generate/idempotent-id/v1``,
``/retry/deserialize/args/v1``).

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
    TypeVar,
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
    "EmulatedRetry",
    "EmulatedRetryTask",
    "EmulatedTask",
    "EmulatedWorkflow",
    "Exchange",
    "OutboundCall",
    "RecordedBeat",
    "RecordedRequest",
    "RetryScene",
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

# Retry module (protocol.md sections 3.10, 4.7; the vsj2.0.2 retry-task module).
RETRY_RUNNING = int(enums.RetryStatusEnum.RUNNING)
RETRY_FINISH = int(enums.RetryStatusEnum.FINISH)
RETRY_MAX_COUNT = int(enums.RetryStatusEnum.MAX_COUNT)
RETRY_SUSPEND = int(enums.RetryStatusEnum.SUSPEND)
_RT_WAITING = int(enums.RetryTaskStatusEnum.WAITING)
_RT_RUNNING = int(enums.RetryTaskStatusEnum.RUNNING)
_RT_SUCCESS = int(enums.RetryTaskStatusEnum.SUCCESS)
_RT_FAIL = int(enums.RetryTaskStatusEnum.FAIL)
_RT_STOP = int(enums.RetryTaskStatusEnum.STOP)
_RT_CANCEL = int(enums.RetryTaskStatusEnum.CANCEL)
_RT_NOT_COMPLETE = (_RT_WAITING, _RT_RUNNING)
_RT_VALID = frozenset(int(s) for s in enums.RetryTaskStatusEnum)

# Operation reasons of a retry task (RetryOperationReasonEnum).
RETRY_REASON_NONE = 0
RETRY_REASON_TIMEOUT = 1
RETRY_REASON_NOT_CLIENT = 2
RETRY_REASON_MANUAL_STOP = 7
RETRY_REASON_SCENE_CLOSED = 9
RETRY_REASON_RETRY_FAIL = 10
RETRY_REASON_CLIENT_STOP = 11

_KIND_RETRY = "retry"
_KIND_CALLBACK = "callback"
_HEADER_SNAIL_JOB = "snail-job"
_RETRY_RPC_ATTEMPTS = 3
_RETRY_RPC_WAIT = 1.0
_CONSOLE_TIMEOUT = 5.0
_INIT_SCENE_MAX_RETRY = 21  # DelayLevelEnum._21
_INIT_SCENE_CB_MAX = 16  # DelayLevelEnum._16
_INIT_SCENE_TIMEOUT = 5  # sj_retry_scene_config.executor_timeout default
# VARCHAR limits of sj_retry (doc/sql/snail_job_mysql.sql); a longer value
# fails the insert on MySQL in strict mode and on PostgreSQL.
_RETRY_COLUMNS = (("sceneName", "scene_name", 64), ("idempotentId", "idempotent_id", 64),
                  ("bizNo", "biz_no", 64), ("executorName", "executor_name", 512),
                  ("serializerName", "serializer_name", 32))
_RETRY_NOT_NULL = (("executorName", "executor_name"), ("argsStr", "args_str"),
                   ("serializerName", "serializer_name"))
_RETRY_STRING_FIELDS = ("groupName", "sceneName", "idempotentId", "executorName", "bizNo", "argsStr",
                        "extAttrs", "serializerName")
_SERVER_EXCEPTION = "com.aizuda.snailjob.server.common.exception.SnailJobServerException"
_DATA_INTEGRITY = "org.springframework.dao.DataIntegrityViolationException"
_MSG_RETRY_SAME_GROUP = "Batch report data, the same batch can only be the same group. ReqId:[{}]"
_MSG_RETRY_NULL_SCENE = "element cannot be mapped to a null key"
_MSG_RETRY_NO_SCENE = ("failed to report data, no scene configuration found. "
                       "groupName:[{}] sceneName:[{}]")
_MSG_RETRY_NULL_IDEMPOTENT = ('java.lang.NullPointerException: Cannot invoke "java.lang.Comparable.compareTo'
                              '(Object)" because the return value of "java.util.function.Function.apply'
                              '(Object)" is null')
_MSG_RETRY_STATUS_INVALID = "task status code is invalid"
_MSG_RETRY_STATUS_NULL = "status is marked non-null but is null"
_MSG_MANUAL_STOP = "User manually triggered stop"

_WORKFLOW_NODE_KEYS = frozenset({
    "executor", "task_type", "args_str", "parallel_num", "executor_timeout",
    "max_retry_times", "retry_interval", "shard_num", "executor_type", "labels",
})

_INT_RE = re.compile(r"[+-]?\d+")

Handler = Callable[[Optional[List[Any]], Dict[str, str]], Tuple[int, str, Any]]
_T = TypeVar("_T")


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
# Retries
# --------------------------------------------------------------------------


@dataclass
class RetryScene:
    """A retry scene (``sj_retry_scene_config``) as the emulator keeps it.

    ``interval`` and ``cb_interval`` are seconds of a fixed backoff (the
    server's FIXED strategy; fractions allowed here).  ``auto_created`` marks a
    scene the emulator created on a report because ``init_scene`` was on.
    """

    name: str
    max_retry_count: int = 3
    interval: float = 0.2
    executor_timeout: int = 5
    callback: bool = False
    cb_max_count: int = 3
    cb_interval: float = 0.2
    enabled: bool = True
    auto_created: bool = False


@dataclass
class EmulatedRetryTask:
    """One execution (``sj_retry_task``) of a retry (``kind="retry"``,
    ``/retry/dispatch/v1``) or of its completion callback (``kind="callback"``,
    ``/retry/callback/v1``).

    ``status`` is a ``RetryTaskStatusEnum`` value (2 RUNNING, 3 SUCCESS, 4 FAIL,
    5 STOP, 6 CANCEL); ``operation_reason`` a ``RetryOperationReasonEnum``
    value (``RETRY_REASON_*``).  ``request`` is the body element sent (empty
    when nothing was sent) and ``snail_job_header`` the ``SnailJobHeaders``
    sent with a dispatch.  ``result`` and ``exception_msg`` are what the
    client reported (the server itself discards ``result``), or the failure
    message of a refused or failed call.
    """

    id: int
    retry_id: int
    kind: str
    status: int = _RT_RUNNING
    node: Optional[str] = None
    client_address: Optional[str] = None
    retry_count: int = 0
    manual: bool = False
    operation_reason: int = RETRY_REASON_NONE
    result: Optional[str] = None
    exception_msg: Optional[str] = None
    timed_out: bool = False
    request: Dict[str, Any] = field(default_factory=dict)
    snail_job_header: Optional[Dict[str, Any]] = None
    dispatch_replies: List[DispatchReply] = field(default_factory=list)
    reports: List[Dict[str, Any]] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    finished_at: Optional[float] = None
    reported: bool = field(default=False, repr=False)

    @property
    def done(self) -> bool:
        return self.status not in _RT_NOT_COMPLETE


class EmulatedRetry:
    """A retry (``sj_retry`` row of task type 1) and its callback.

    ``status``: 0 RUNNING, 1 FINISH, 2 MAX_COUNT, 3 SUSPEND.  The callback is
    the server's separate callback row (task type 2, its own id
    ``callback_id``, sent as ``retryId`` of ``/retry/callback/v1``);
    ``callback_status`` is ``None`` (no callback), 2 while it is pending, 3
    once the client reported success, 4 when it gave up after
    ``cb_max_count`` failed attempts, 5 when the client reported STOP on the
    dispatch-result URI (the callback row is suspended).  All attributes are
    read under the emulator's lock; ``tasks`` is a snapshot list.
    """

    RUNNING = RETRY_RUNNING
    FINISH = RETRY_FINISH
    MAX_COUNT = RETRY_MAX_COUNT
    SUSPEND = RETRY_SUSPEND

    def __init__(self, emulator: ServerEmulator, retry_id: int, namespace: str, group: str, scene: str,
                 idempotent_id: str, biz_no: str, executor_name: str, args_str: str,
                 serializer_name: str, ext_attrs: str, status: int, source: str) -> None:
        self._emu = emulator
        self.id = retry_id
        self.namespace = namespace
        self.group = group
        self.scene = scene
        self.idempotent_id = idempotent_id
        self.biz_no = biz_no
        self.executor_name = executor_name
        self.args_str = args_str
        self.serializer_name = serializer_name
        self.ext_attrs = ext_attrs
        self.source = source
        """``"report"`` (``/batch/report``) or ``"console"`` (``add_retry``)."""
        self.created_at = time.time()
        self._status = status
        self._retry_count = 0
        self._deleted = False  # the ``deleted`` column: set to the id on FINISH / MAX_COUNT
        self._tasks: List[EmulatedRetryTask] = []
        self._gen = 0
        self._parked = False
        self._cb_id: Optional[int] = None
        self._cb_status: Optional[int] = None
        self._cb_count = 0
        self._cb_gen = 0
        self._cb_parked = False

    @property
    def status(self) -> int:
        with self._emu._lock:
            return self._status

    @property
    def retry_count(self) -> int:
        with self._emu._lock:
            return self._retry_count

    @property
    def tasks(self) -> List[EmulatedRetryTask]:
        with self._emu._lock:
            return list(self._tasks)

    @property
    def retry_tasks(self) -> List[EmulatedRetryTask]:
        """The ``kind="retry"`` tasks."""
        with self._emu._lock:
            return [t for t in self._tasks if t.kind == _KIND_RETRY]

    @property
    def callback_tasks(self) -> List[EmulatedRetryTask]:
        """The ``kind="callback"`` tasks."""
        with self._emu._lock:
            return [t for t in self._tasks if t.kind == _KIND_CALLBACK]

    @property
    def callback_id(self) -> Optional[int]:
        with self._emu._lock:
            return self._cb_id

    @property
    def callback_status(self) -> Optional[int]:
        with self._emu._lock:
            return self._cb_status

    @property
    def callback_count(self) -> int:
        """The callback row's retry count (failed or finished attempts)."""
        with self._emu._lock:
            return self._cb_count

    def task(self, task_id: int) -> EmulatedRetryTask:
        with self._emu._lock:
            for task in self._tasks:
                if task.id == task_id:
                    return task
        raise KeyError(task_id)

    def wait(self, timeout: float = 10.0,
             statuses: Sequence[int] = (RETRY_FINISH, RETRY_MAX_COUNT, RETRY_SUSPEND)) -> int:
        """Block until the retry's status is one of ``statuses``; return it.
        Raises ``TimeoutError`` describing the retry and its tasks."""
        wanted = set(statuses)
        return self._wait(timeout, lambda: self._status in wanted, lambda: self._status, "status in "
                          f"{sorted(wanted)}")

    def wait_callback(self, timeout: float = 10.0) -> int:
        """Block until the callback ended (``callback_status`` 3, 4 or 5); return it."""
        return self._wait(timeout, lambda: self._cb_status in (_RT_SUCCESS, _RT_FAIL, _RT_STOP),
                          lambda: int(self._cb_status or 0), "an ended callback")

    def stop(self, suspend: bool = False) -> Optional[Tuple[int, str, str]]:
        """``ServerEmulator.stop_retry`` for this retry."""
        return self._emu.stop_retry(self.id, suspend=suspend)

    def trigger(self) -> EmulatedRetryTask:
        """``ServerEmulator.trigger_retry`` for this retry."""
        return self._emu.trigger_retry(self.id)

    def _wait(self, timeout: float, done: Callable[[], bool], value: Callable[[], int], what: str) -> int:
        deadline = time.monotonic() + timeout
        with self._emu._cond:
            while not done():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{what} not reached after {timeout:g}s: {self._describe()}")
                if self._emu._stopping.is_set():
                    raise RuntimeError(f"emulator stopped while waiting for retry {self.id}")
                self._emu._cond.wait(min(remaining, 0.25))
            return value()

    def _describe(self) -> str:
        shown = ", ".join(f"{t.kind} task {t.id} status {t.status} on {t.node or '-'} "
                          f"(replies {len(t.dispatch_replies)}, reports {len(t.reports)})"
                          for t in self._tasks[-10:])
        return (f"retry {self.id} (scene {self.scene!r}, executor {self.executor_name!r}) has status "
                f"{self._status}, retry_count {self._retry_count}, callback_status {self._cb_status}; "
                f"{len(self._tasks)} task(s): [{shown}]")

    def __repr__(self) -> str:
        return (f"EmulatedRetry(id={self.id}, scene={self.scene!r}, idempotent_id={self.idempotent_id!r}, "
                f"status={self._status}, retry_count={self._retry_count}, tasks={len(self._tasks)})")


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
    * Like the real servers (``JobExecutorResultActor``, 1.4 to 2.0), only
      the result of a task without children re-evaluates completion
      (``map_race_quirk=True``, the default): when every child of a map task
      has reported before the parent, the batch stays RUNNING until another
      leaf reports (the client's sentinel repeat, see ``mr_do_map``).
      ``map_race_quirk=False`` lets a parent's report complete the batch too.
    * Once a batch has completed its status never changes (the server's update
      applies only to unfinished batches) until ``retry_batch()``; later
      reports still overwrite the task rows.
    * Only ``group`` / ``namespace`` (and ``DEFAULT_SERVER`` with
      ``server_token``) pass the token check.
    * ``strict_primitives`` (default true) rejects an explicit JSON null for
      ``retry``/``executeResult.status`` (Java primitives) like the 2.x server;
      pass false to emulate 1.10.x.

    Retry module (vsj2.0.2 ``snail-job-server-retry-task``): scenes
    (``add_retry_scene``; ``init_scene`` mirrors the group's ``initScene``),
    ``/batch/report`` with the server's checks, replies and de-duplication
    (same idempotent id in one report, or a RUNNING retry of the scene),
    ``/retry/dispatch/v1`` with the ``[DispatchRetryRequest, SnailJobHeaders]``
    body and the ``snail-job`` header, the success condition of its reply,
    ``/report/retry/dispatch/result`` and ``/report/retry/callback/result``
    (their replies and the success / stop / failure handlers: retry count,
    MAX_COUNT, SUSPEND, the NOT_COMPLETE guard of a failure), the timeout
    check at ``executorTimeout + 0.5 s``, callbacks (``/retry/callback/v1``
    with the parent's ``retryStatus`` and the callback row's id, up to
    ``cb_max_count``), and the console operations (``add_retry``,
    ``trigger_retry``, ``stop_retry``, ``update_retry_status``,
    ``generate_idempotent_id``, ``deserialize_args``).  Retry simplifications:

    * Backoff is fixed: the next attempt starts ``interval`` seconds after the
      previous one ended (the server re-triggers every interval from the last
      trigger time, with a 10 s scan period, and applies the scene's block
      strategy to a still-running task; here the scan never meets one).  An
      automatically created scene uses ``max_retry_count=21``,
      ``executor_timeout=5`` and ``cb_max_count=16`` like the server, but the
      emulator's default interval instead of the delay-level table.
    * Nodes are chosen round-robin among the group's live nodes; scene labels
      and route strategies are not modelled.
    * A dispatch or callback whose call fails or is refused fails the task
      without counting an attempt (the server's ``incrementRetryCount`` is
      false there), so a client that always refuses is re-dispatched forever,
      as on the server, unless the next count reaches the limit.
    * Database errors are reported with abbreviated messages; the insert
      limits are those of the MySQL schema in strict mode (a too long value
      is refused, with a ``problems`` entry).  A report colliding with a
      SUSPEND retry's unique key is refused at once (the server first retries
      the insert 5 times, 1 s apart).
    * A result whose ``retryId``, ``sceneName``, ``groupName`` or
      ``namespaceId`` does not match the task is ignored with a ``problems``
      entry (the server looks the retry and the scene up by these fields and
      fails silently).  ``result`` is kept on the task (the server drops it).
    * The stop defects of the real servers are reproduced by default
      (``retry_stop_quirk=True``; all seen on 1.4.0, the first two also on
      1.10.0 and 2.0.2):
      ``RetryStopHandler`` throws on a client STOP (taskStatus 5 on the
      dispatch-result URI) so nothing changes and the task later times out;
      ``RetryTaskStopHandler`` never sends ``/retry/stop/v1`` (its message
      does not match the stop actor), neither on a timeout nor from the
      console; and the console's stop button changes nothing (no task id is
      set).  A timed-out attempt is counted as in 1.10.0 and 2.0.2 (1.4.0 does not
      count it, so there a timed-out retry is replayed forever).  With
      ``retry_stop_quirk=False`` the intended behaviour is emulated: a
      client STOP suspends the retry (task STOP, count + 1), a timeout and
      ``stop_retry`` send ``/retry/stop/v1`` (with the field ``scene``), and
      ``stop_retry`` fails the running task like a manual stop.

    ``problems`` lists protocol violations the emulator noticed that the real
    server would not report to the client (bad labels, missing
    ``time_stamp`` in a log entry, results for unknown tasks, endless manual
    retry loops, retry results it ignores or refuses with ``data=false``,
    duplicate retry results, dropped RETRY log batches, over-long retry
    fields...).  A well-behaved client leaves it empty.
    """

    def __init__(self, namespace: str = DEFAULT_NAMESPACE, group: str = DEFAULT_GROUP,
                 token: str = DEFAULT_TOKEN, port: int = 0, node_expiry: float = 40.0,
                 register_delay: float = 0.0, server_token: str = DEFAULT_SERVER_TOKEN,
                 host_id: Optional[str] = None, strict_primitives: bool = True,
                 map_race_quirk: bool = True, max_workers: int = 32,
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
        self._tls = threading.local()

        self.init_scene = False
        """The group's ``initScene``: create an unknown scene (server defaults)
        when a report names it, instead of refusing the report."""
        self.retry_stop_quirk = True
        """Reproduce the stop defects of the real servers (default; see the class docstring)."""
        self._retry_scenes: Dict[str, RetryScene] = {}
        self._retries: Dict[int, EmulatedRetry] = {}
        self._retries_by_key: Dict[Tuple[str, str], List[EmulatedRetry]] = {}  # (scene, idempotent id)
        self._retry_task_index: Dict[int, EmulatedRetryTask] = {}
        self._retry_reports: List[Dict[str, Any]] = []
        self._retry_rr = 0

        self._handlers: Dict[str, Handler] = {
            enums.URI_BEAT: self._on_beat,
            enums.URI_REGISTER_EXECUTORS: self._on_register_executors,
            enums.URI_REPORT_RESULT: self._on_report_result,
            enums.URI_REPORT_MAP: self._on_map_report,
            enums.URI_REPORT_LOG: self._on_logs,
            enums.URI_SYNC_VERSION: self._on_sync_version,
            enums.URI_RETRY_REPORT: self._on_retry_report,
            enums.URI_RETRY_RESULT: functools.partial(self._on_retry_result, enums.URI_RETRY_RESULT),
            enums.URI_RETRY_CALLBACK_RESULT: functools.partial(self._on_retry_result,
                                                               enums.URI_RETRY_CALLBACK_RESULT),
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
        """Every call to a retry-module URI (``/batch/report``,
        ``/report/retry/dispatch/result``, ``/report/retry/callback/result``)
        that passed the token check; ``body`` is the parsed body re-encoded."""
        with self._lock:
            return list(self._retry_requests)

    @property
    def retry_reports(self) -> List[Dict[str, Any]]:
        """Every row of every ``/batch/report`` answered ``data=true``, as
        sent (rows de-duplicated by the server included)."""
        with self._lock:
            return [dict(row) for row in self._retry_reports]

    @property
    def retry_scenes(self) -> Dict[str, RetryScene]:
        with self._lock:
            return dict(self._retry_scenes)

    @property
    def retries(self) -> List[EmulatedRetry]:
        """Every retry, in creation order."""
        with self._lock:
            return list(self._retries.values())

    def retry(self, retry_id: int) -> EmulatedRetry:
        """The retry with this id; ``KeyError`` if there is none."""
        with self._lock:
            return self._retries[retry_id]

    def retries_for(self, scene: str) -> List[EmulatedRetry]:
        with self._lock:
            return [r for r in self._retries.values() if r.scene == scene]

    def retry_task(self, task_id: int) -> EmulatedRetryTask:
        with self._lock:
            return self._retry_task_index[task_id]

    @property
    def retry_dispatch_calls(self) -> List[OutboundCall]:
        with self._lock:
            return [c for c in self._outbound if c.uri == enums.URI_RETRY_DISPATCH]

    @property
    def retry_callback_calls(self) -> List[OutboundCall]:
        with self._lock:
            return [c for c in self._outbound if c.uri == enums.URI_RETRY_CALLBACK]

    @property
    def retry_stop_calls(self) -> List[OutboundCall]:
        with self._lock:
            return [c for c in self._outbound if c.uri == enums.URI_RETRY_STOP]

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
    # driving retries
    # ------------------------------------------------------------------

    def add_retry_scene(self, name: str, max_retry_count: int = 3, interval: float = 0.2,
                        executor_timeout: int = 5, callback: bool = False, cb_max_count: int = 3,
                        cb_interval: float = 0.2, enabled: bool = True) -> RetryScene:
        """Create a retry scene of the emulator's group, or replace the
        settings of an existing one (its retries are kept).

        ``interval`` / ``cb_interval``: seconds between the end of an attempt
        and the next one (a new retry is first dispatched ``interval`` after
        it was reported).  ``executor_timeout``: whole seconds, sent as
        ``executorTimeout`` and ``ddl``; an attempt without a result after
        ``executor_timeout + 0.5`` s fails.  ``callback``: send
        ``/retry/callback/v1`` once the retry reaches FINISH or MAX_COUNT, up
        to ``cb_max_count`` attempts.  A disabled scene accepts reports but
        nothing of it is dispatched until ``set_retry_scene_enabled``.
        """
        if not isinstance(name, str) or not name.strip():
            raise ValueError("a scene name must be a non-blank string")
        if len(name) > 64:
            raise ValueError("a scene name has at most 64 characters (scene_name is VARCHAR(64))")
        if max_retry_count < 1 or cb_max_count < 1:
            raise ValueError("max_retry_count and cb_max_count must be at least 1")
        if interval < 0 or cb_interval < 0:
            raise ValueError("interval and cb_interval must not be negative")
        if executor_timeout < 1 or int(executor_timeout) != executor_timeout:
            raise ValueError("executor_timeout is whole seconds, at least 1")
        scene = RetryScene(name=name, max_retry_count=int(max_retry_count), interval=float(interval),
                           executor_timeout=int(executor_timeout), callback=bool(callback),
                           cb_max_count=int(cb_max_count), cb_interval=float(cb_interval),
                           enabled=bool(enabled))
        with self._cond:
            self._retry_scenes[name] = scene
            if scene.enabled:
                self._unpark_scene(name)
            self._cond.notify_all()
        return scene

    def set_retry_scene_enabled(self, name: str, enabled: bool) -> None:
        """Open or close a scene (the console's scene switch).  Retries that
        came due while it was closed are dispatched at once when it opens."""
        with self._cond:
            scene = self._retry_scenes[name]
            scene.enabled = bool(enabled)
            if scene.enabled:
                self._unpark_scene(name)
            self._cond.notify_all()

    def add_retry(self, scene: str, executor_name: str, args_str: str, idempotent_id: Optional[str] = None,
                  biz_no: str = "", serializer_name: str = "jackson", ext_attrs: str = "",
                  status: int = RETRY_RUNNING) -> Optional[EmulatedRetry]:
        """Create a retry like the console's "add retry" (``RetryWebServiceImpl.saveRetryTask``).

        Without ``idempotent_id`` the client is asked first
        (``generate_idempotent_id``), as the console's form does.  Returns the
        new retry, or ``None`` when a RUNNING retry of the scene already has
        this idempotent id (the server then inserts nothing and still reports
        success).  Raises ``RuntimeError`` where the console shows an error.
        """
        self._require_running()
        if status not in (RETRY_RUNNING, RETRY_FINISH, RETRY_MAX_COUNT, RETRY_SUSPEND):
            raise RuntimeError("Retry status error")
        for value, label in ((scene, "Scene name"), (executor_name, "Executor name"),
                             (serializer_name, "serializerName")):
            if not isinstance(value, str) or not value.strip():
                raise RuntimeError(f"{label} cannot be empty")
        if idempotent_id is None:
            idempotent_id = self.generate_idempotent_id(scene, executor_name, args_str, serializer_name)
        if not idempotent_id.strip():
            raise RuntimeError("Idempotent ID cannot be empty")
        row = {"sceneName": scene, "idempotentId": idempotent_id, "executorName": executor_name,
               "bizNo": biz_no, "argsStr": args_str, "extAttrs": ext_attrs, "serializerName": serializer_name}
        with self._cond:
            if scene not in self._retry_scenes:
                # the console does not set initScene: checkAndInitScene throws a NullPointerException
                raise RuntimeError(f"no retry scene {scene!r} (the server fails with a NullPointerException)")
            error = self._retry_row_error(row, 1, problem=False)
            if error is not None:
                raise RuntimeError(error)
            if self._running_retry(scene, idempotent_id) is not None:
                return None
            conflict = self._retry_key_conflict(scene, idempotent_id)
            if conflict is not None:
                raise RuntimeError(conflict)
            retry = self._create_retry(row, status, source="console")
            self._cond.notify_all()
            return retry

    def generate_idempotent_id(self, scene: str, executor_name: str, args_str: str,
                               serializer_name: str = "jackson") -> str:
        """Ask a live client for the idempotent id of these arguments
        (``/retry/generate/idempotent-id/v1``, as the console's "generate"
        button does) and return its answer.  ``RuntimeError`` with the
        server's message when the scene is unknown, no client is live, the
        call fails or the client answers ``status`` 0 or a non-string."""
        self._require_running()
        with self._lock:
            if scene not in self._retry_scenes:
                raise RuntimeError("Failed to generate idempotentId: RetrySceneConfig nodes exist")
            node = self._next_retry_node()
        if node is None:
            raise RuntimeError("Failed to generate idempotentId: No active client nodes exist")
        body = {"group": self.group, "scene": scene, "argsStr": args_str, "executorName": executor_name,
                "serializerName": serializer_name}
        reply, data, error = self._console_call(node, enums.URI_RETRY_IDEMPOTENT_ID, body)
        if reply is None:
            raise RuntimeError(f"idempotentId generation failed: {error}")
        if reply.status != 1:
            raise RuntimeError("idempotentId generation failed: Ensure that the parameters and executor "
                               "name are correct")
        if not isinstance(data, str):
            with self._cond:
                self._problem(f"/retry/generate/idempotent-id/v1 answered data {reply.data[:200]!r}: "
                              "the server casts data to a String")
            raise RuntimeError(f"idempotentId generation failed: data {reply.data[:200]!r} is not a JSON string")
        if len(data) > 64:
            with self._cond:
                self._problem(f"/retry/generate/idempotent-id/v1 answered an id of {len(data)} characters; "
                              "idempotent_id is VARCHAR(64)")
        return data

    def deserialize_args(self, scene: str, executor_name: str, args_str: str,
                         serializer_name: str = "jackson") -> Any:
        """Ask a live client to decode ``args_str`` (``/retry/deserialize/args/v1``,
        as the console's retry detail view does) and return its ``data``
        decoded.  Like the server, fall back to ``args_str`` itself when the
        scene is unknown, no client is live, the call fails, or the client
        answers ``status`` 0 or a null ``data``."""
        self._require_running()
        with self._lock:
            if scene not in self._retry_scenes:
                return args_str
            node = self._next_retry_node()
        if node is None:
            return args_str
        body = {"namespaceId": self.namespace, "group": self.group, "scene": scene, "argsStr": args_str,
                "executorName": executor_name, "serializerName": serializer_name}
        reply, data, _ = self._console_call(node, enums.URI_RETRY_DESERIALIZE, body)
        if reply is None or reply.status == 0 or data is None:
            return args_str
        return data

    def trigger_retry(self, retry_id: int) -> EmulatedRetryTask:
        """Run a retry now, like the console's "execute" button
        (``triggerRetry``): whatever its status, without waiting for a running
        task.  Returns the new task (CANCEL when the scene is closed or no
        client is live); the dispatch itself is asynchronous."""
        self._require_running()
        send = False
        with self._cond:
            retry = self._retries[retry_id]
            scene = self._retry_scenes.get(retry.scene)
            if scene is None or not scene.enabled:
                task = self._new_retry_task(retry, _KIND_RETRY, manual=True)
                self._end_retry_task(task, _RT_CANCEL, RETRY_REASON_SCENE_CLOSED)
            else:
                task = self._open_retry_task(retry, scene, _KIND_RETRY, manual=True)
                send = task.status == _RT_RUNNING
            self._cond.notify_all()
        if send:
            self._submit(lambda: self._retry_send(task))
        return task

    def stop_retry(self, retry_id: int, suspend: bool = False) -> Optional[Tuple[int, str, str]]:
        """Stop the retry's running task like the console's stop button
        (``RetryTaskServiceImpl.stopById`` -> ``RetryTaskStopHandler``): the
        task becomes FAIL with reason 7 and counts as a failed attempt
        (MAX_COUNT when the limit is reached, otherwise the retry runs again
        after its interval), and ``/retry/stop/v1`` goes to the node running
        it.  With ``suspend=True`` the retry is first set to SUSPEND (the
        console's status switch), so it does not run again.

        Returns the node's answer ``(status, message, data)`` to the stop
        call, or ``None`` when nothing was sent.  With ``retry_stop_quirk``
        only ``suspend`` has an effect (vsj2.0.2, see the class docstring).
        """
        self._require_running()
        with self._cond:
            retry = self._retries[retry_id]
            if suspend:
                retry._status = RETRY_SUSPEND
                self._cond.notify_all()
            if self.retry_stop_quirk:
                return None
            running = [t for t in retry._tasks if t.status in _RT_NOT_COMPLETE]
            for task in running:
                self._retry_outcome(task, _RT_FAIL, RETRY_REASON_MANUAL_STOP, True, _MSG_MANUAL_STOP)
            self._cond.notify_all()
        answer: Optional[Tuple[int, str, str]] = None
        for task in running:
            reply = self._on_pool(functools.partial(self._send_retry_stop, task),
                                  timeout=_RETRY_RPC_ATTEMPTS * (_STOP_TIMEOUT + _RETRY_RPC_WAIT) + 5.0)
            if reply is not None:
                answer = (reply.status, reply.message, reply.data)
        return answer

    def update_retry_status(self, retry_id: int, status: int) -> None:
        """The console's status switch (``updateRetryStatus``): 0 resumes
        (next run after the scene interval), 1 FINISH, 2 MAX_COUNT, 3
        SUSPEND.  No client is called; a running task keeps running."""
        if status not in (RETRY_RUNNING, RETRY_FINISH, RETRY_MAX_COUNT, RETRY_SUSPEND):
            raise ValueError(f"Retry status error. [{status}]")
        with self._cond:
            retry = self._retries[retry_id]
            retry._status = status
            if status == RETRY_RUNNING:
                retry._deleted = False
                scene = self._retry_scenes.get(retry.scene)
                self._schedule_retry(retry, scene.interval if scene is not None else 0.0, _KIND_RETRY)
            elif status == RETRY_FINISH:
                retry._deleted = True
            self._cond.notify_all()

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
        self._tls.req_id = request.reqId  # some retry-module messages name it
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

    # -- retry module: /batch/report -----------------------------------------

    def _record_retry_request(self, uri: str, args: Optional[List[Any]], headers: Dict[str, str]) -> None:
        with self._cond:
            self._retry_requests.append(RecordedRequest(uri, dict(headers), dumps(args)))
            self._cond.notify_all()

    def _req_id(self) -> int:
        return int(getattr(self._tls, "req_id", 0))

    def _on_retry_report(self, args: Optional[List[Any]], headers: Dict[str, str]) -> Tuple[int, str, Any]:
        """``ReportRetryInfoHttpRequestHandler`` + ``AbstractGenerator``."""
        self._record_retry_request(enums.URI_RETRY_REPORT, args, headers)
        rows = _arg0(args)  # args null or empty: the catch block itself throws (status 0)
        if rows is None:
            rows = []
        if not isinstance(rows, list):
            return self._retry_refused(f"Cannot deserialize value of type `java.util.ArrayList<RetryTaskRequest>` "
                                       f"from {_json_kind(rows)} value", problem=True)
        for row in rows:
            if row is not None and not isinstance(row, dict):
                return self._retry_refused(f"Cannot deserialize value of type `RetryTaskRequest` from "
                                           f"{_json_kind(row)} value", problem=True)
        present: List[Dict[str, Any]] = [row for row in rows if row is not None]
        if len(present) != len(rows):
            return self._retry_refused('Cannot invoke "com.aizuda.snailjob.model.request.RetryTaskRequest.'
                                       'getGroupName()" because "<parameter1>" is null', problem=True)
        clean: List[Dict[str, Any]] = []
        for row in present:
            copy = dict(row)
            for name in _RETRY_STRING_FIELDS:
                value = copy.get(name)
                if isinstance(value, (dict, list)):
                    return self._retry_refused(f"Cannot deserialize value of type `java.lang.String` from "
                                               f"{_json_kind(value)} value (through reference chain: "
                                               f"RetryTaskRequest[\"{name}\"])", problem=True)
                if value is not None and not isinstance(value, str):
                    copy[name] = _java_text(value)
            clean.append(copy)
        group = _header(headers, "group-name") or ""
        groups: Set[str] = {row["groupName"] for row in clean if row.get("groupName") is not None}
        if len(groups) > 1:
            return self._retry_refused(_MSG_RETRY_SAME_GROUP.format(self._req_id()), problem=True)
        if any(row.get("sceneName") is None for row in clean):
            return self._retry_refused(_MSG_RETRY_NULL_SCENE, problem=True)
        by_scene: Dict[str, List[Dict[str, Any]]] = {}
        for row in clean:
            by_scene.setdefault(row["sceneName"], []).append(row)
        with self._cond:
            if not clean:
                self._problem("/batch/report with an empty list (the server accepts it and creates nothing)")
            if groups and groups != {group}:
                self._problem(f"/batch/report rows name group {next(iter(groups))!r} but the caller's group-name "
                              f"header is {group!r}; the server files them under the header's group")
            elif len(clean) != sum(1 for row in clean if row.get("groupName") is not None):
                self._problem("/batch/report rows without groupName (the server uses the group-name header)")
            for scene_name, scene_rows in by_scene.items():
                error = self._generate_retries(scene_name, scene_rows)
                if error is not None:
                    self._cond.notify_all()
                    return 1, error, False
            self._retry_reports.extend(dict(row) for row in rows if isinstance(row, dict))
            self._cond.notify_all()
        return 1, _MSG_RETRY_REPORT_OK, True

    def _retry_refused(self, message: str, problem: bool) -> Tuple[int, str, Any]:
        """A retry-module refusal: ``status`` 1 with ``data`` false."""
        if problem:
            with self._cond:
                self._problem(f"the server refuses this retry-module request (status=1, data=false): {message}")
        return 1, message, False

    def _generate_retries(self, scene_name: str, rows: List[Dict[str, Any]]) -> Optional[str]:
        """``AbstractGenerator.taskGenerator`` for one scene (lock held); the
        failure message (the server's ``ExecutionException`` text) or ``None``."""
        scene = self._retry_scenes.get(scene_name)
        if scene is None:
            if not self.init_scene:
                return f"{_SERVER_EXCEPTION}: " + _MSG_RETRY_NO_SCENE.format(self.group, scene_name)
            if len(scene_name) > 64:
                self._problem(f"/batch/report names scene {scene_name[:80]!r}...: longer than scene_name "
                              "VARCHAR(64), the scene cannot be created")
                return f"{_DATA_INTEGRITY}: Data too long for column 'scene_name' at row 1"
            scene = RetryScene(name=scene_name, max_retry_count=_INIT_SCENE_MAX_RETRY,
                               executor_timeout=_INIT_SCENE_TIMEOUT, cb_max_count=_INIT_SCENE_CB_MAX,
                               auto_created=True)
            self._retry_scenes[scene_name] = scene
        if any(row.get("idempotentId") is None for row in rows):
            self._problem(f"/batch/report row of scene {scene_name!r} without idempotentId (the report is "
                          "refused: status=1, data=false)")
            return _MSG_RETRY_NULL_IDEMPOTENT
        unique: Dict[str, Dict[str, Any]] = {}
        for row in rows:  # TreeSet by idempotentId: the first row of each id wins, sorted
            unique.setdefault(row["idempotentId"], row)
        fresh = [unique[key] for key in sorted(unique)
                 if self._running_retry(scene_name, key) is None]
        for index, row in enumerate(fresh, start=1):
            error = self._retry_row_error(row, index)
            if error is not None:
                return f"{_DATA_INTEGRITY}: {error}"
        for row in fresh:
            conflict = self._retry_key_conflict(scene_name, row["idempotentId"])
            if conflict is not None:
                return conflict
        for row in fresh:
            self._create_retry(row, RETRY_RUNNING, source="report")
        return None

    def _retry_row_error(self, row: Dict[str, Any], index: int, problem: bool = True) -> Optional[str]:
        """The database error inserting this row would raise (MySQL strict
        mode), with a ``problems`` entry when ``problem``."""
        for name, column in _RETRY_NOT_NULL:
            if row.get(name) is None:
                if problem:
                    self._problem(f"/batch/report row {row.get('idempotentId')!r} has no {name}; {column} is "
                                  "NOT NULL (the report is refused: status=1, data=false)")
                return f"Column '{column}' cannot be null"
        for name, column, limit in _RETRY_COLUMNS:
            value = row.get(name)
            if isinstance(value, str) and len(value) > limit:
                if problem:
                    self._problem(f"/batch/report row {name} has {len(value)} characters; {column} is "
                                  f"VARCHAR({limit}) (the insert fails in strict mode, or the value is "
                                  "truncated)")
                return f"Data too long for column '{column}' at row {index}"
        return None

    def _running_retry(self, scene: str, idempotent_id: str) -> Optional[EmulatedRetry]:
        for retry in self._retries_by_key.get((scene, idempotent_id), ()):
            if retry._status == RETRY_RUNNING:
                return retry
        return None

    def _retry_key_conflict(self, scene: str, idempotent_id: str) -> Optional[str]:
        """``uk_scene_tasktype_idempotentid_deleted``: a not-RUNNING retry whose
        ``deleted`` is still 0 (SUSPEND) blocks a new one with the same id."""
        for retry in self._retries_by_key.get((scene, idempotent_id), ()):
            if not retry._deleted:
                return (f"Duplicate entry '{idempotent_id}' for key "
                        "'sj_retry.uk_scene_tasktype_idempotentid_deleted'")
        return None

    # -- retry module: /report/retry/dispatch/result, /report/retry/callback/result

    def _on_retry_result(self, uri: str, args: Optional[List[Any]],
                         headers: Dict[str, str]) -> Tuple[int, str, Any]:
        """``ReportDispatchResultHttpRequestHandler`` / ``ReportCallbackResultHttpRequestHandler``:
        every failure is ``status`` 1 with ``data`` false; the result itself is
        applied later by ``RetryResultActor`` (here: at once)."""
        self._record_retry_request(uri, args, headers)
        try:
            req = _arg0(args)
        except _Failure as failure:
            return self._retry_refused(failure.message, problem=True)
        if not isinstance(req, dict):
            return self._retry_refused(f"Cannot deserialize value of type `DispatchRetryResultRequest` from "
                                       f"{_json_kind(req)} value", problem=True)
        try:
            retry_id = _as_long(req.get("retryId"), "retryId", required=False)
            task_id = _as_long(req.get("retryTaskId"), "retryTaskId", required=False)
            status = _as_long(req.get("taskStatus"), "taskStatus", required=False)
        except _Failure as failure:
            return self._retry_refused(failure.message, problem=True)
        for name in ("namespaceId", "groupName", "sceneName", "result", "exceptionMsg"):
            if isinstance(req.get(name), (dict, list)):
                return self._retry_refused(f"Cannot deserialize value of type `java.lang.String` from "
                                           f"{_json_kind(req[name])} value (through reference chain: "
                                           f"[\"{name}\"])", problem=True)
        if status is None:
            return self._retry_refused(_MSG_RETRY_STATUS_NULL, problem=True)
        if status not in _RT_VALID:
            return self._retry_refused_status(status)
        with self._cond:
            self._apply_client_result(uri, req, retry_id, task_id, int(status))
            self._cond.notify_all()
        return 1, _MSG_RETRY_RESULT_OK, True

    def _retry_refused_status(self, status: int) -> Tuple[int, str, Any]:
        with self._cond:
            self._problem(f"retry result with taskStatus {status}: the server answers status=1, data=false "
                          f"({_MSG_RETRY_STATUS_INVALID!r})")
        return 1, _MSG_RETRY_STATUS_INVALID, False

    def _apply_client_result(self, uri: str, req: Dict[str, Any], retry_id: Optional[int],
                             task_id: Optional[int], status: int) -> None:
        """``RetryResultActor`` with the success, stop and failure handlers (lock held)."""
        task = self._retry_task_index.get(task_id) if task_id is not None else None
        where = "/report/retry/callback/result" if uri == enums.URI_RETRY_CALLBACK_RESULT else \
            "/report/retry/dispatch/result"
        if task is None:
            self._problem(f"{where} for unknown retry task {task_id} (retry {retry_id}); the server ignores it")
            return
        task.reports.append(dict(req))
        retry = self._retries[task.retry_id]
        expected_uri = enums.URI_RETRY_CALLBACK_RESULT if task.kind == _KIND_CALLBACK else enums.URI_RETRY_RESULT
        if uri != expected_uri:
            self._problem(f"{where} for {task.kind} task {task.id}; a {task.kind} result belongs on "
                          f"{expected_uri}")
        sent_id = task.request.get("retryId")
        if retry_id != sent_id:
            self._problem(f"{where} for retry task {task.id} has retryId {retry_id}, but the task was sent "
                          f"retryId {sent_id}; the server looks the retry up by retryId (result ignored)")
            return
        for name, expected in (("namespaceId", retry.namespace), ("groupName", retry.group),
                               ("sceneName", retry.scene)):
            if req.get(name) != expected:
                self._problem(f"{where} for retry task {task.id} has {name} {req.get(name)!r}, expected "
                              f"{expected!r}; the server's scene lookup fails and the result is ignored")
                return
        if status in _RT_NOT_COMPLETE:
            self._problem(f"{where} for retry task {task.id} with taskStatus {status}: not a final status, "
                          "no result handler takes it (ignored)")
            return
        if status == _RT_CANCEL:
            self._problem(f"{where} for retry task {task.id} with taskStatus 6 (CANCEL): a client reports "
                          "3, 4 or 5; the server treats it as a failure")
        if task.reported:
            self._problem(f"duplicate result for {task.kind} task {task.id} (taskStatus {status}; the task "
                          f"already is {task.status})")
        reason: Optional[int] = None
        if uri == enums.URI_RETRY_RESULT:  # only the dispatch-result handler sets a reason
            reason = {_RT_FAIL: RETRY_REASON_RETRY_FAIL, _RT_STOP: RETRY_REASON_CLIENT_STOP}.get(status)
        message = req.get("exceptionMsg")
        if status == _RT_STOP and reason == RETRY_REASON_CLIENT_STOP and self.retry_stop_quirk:
            return  # vsj2.0.2: RetryStopHandler throws a NullPointerException, nothing changes
        was = task.status
        applied = self._retry_outcome(task, status, reason, True, message if isinstance(message, str) else None)
        if applied:
            task.reported = True
            result = req.get("result")
            task.result = result if result is None or isinstance(result, str) else _java_text(result)
        elif not task.reported:
            self._problem(f"{where} (taskStatus {status}) for {task.kind} task {task.id} that already is {was}: "
                          "the server ignores it")

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
            if retry_entries:  # RetryLogActor: groupingBy retryTaskId, toMap of the fields
                reason = self._log_batch_problem(retry_entries, "retryTaskId")
                if reason:
                    self._dropped_logs.append(DroppedLogBatch(list(retry_entries), reason))
                    self._problem(f"RETRY log batch of {len(retry_entries)} entries dropped by the server: "
                                  f"{reason}")
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
            reply, error, data_value = self._call_and_record(node, enums.URI_DISPATCH, text, headers,
                                                             task.dispatch_replies)
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

    # ------------------------------------------------------------------
    # retries (callers hold the lock unless noted)
    # ------------------------------------------------------------------

    def _retry_live_nodes(self) -> List[ClientNode]:
        return [n for n in self._nodes.values()
                if n.namespace == self.namespace and n.group == self.group and self._is_live(n)]

    def _next_retry_node(self) -> Optional[ClientNode]:
        """Round robin over the group's live nodes (scene labels are not modelled)."""
        live = self._retry_live_nodes()
        if not live:
            return None
        node = live[self._retry_rr % len(live)]
        self._retry_rr += 1
        return node

    def _create_retry(self, row: Dict[str, Any], status: int, source: str) -> EmulatedRetry:
        """``AbstractGenerator.doConvertTask``: blank bizNo -> UUID, blank extAttrs -> ""."""
        biz_no = row.get("bizNo")
        if not isinstance(biz_no, str) or not biz_no.strip():
            biz_no = uuid.uuid4().hex  # hutool IdUtil.fastSimpleUUID()
        ext_attrs = row.get("extAttrs")
        if not isinstance(ext_attrs, str) or not ext_attrs.strip():
            ext_attrs = ""
        retry = EmulatedRetry(self, next(self._ids), self.namespace, self.group, row["sceneName"],
                              row["idempotentId"], biz_no, row["executorName"], row["argsStr"],
                              row["serializerName"], ext_attrs, status, source)
        self._retries[retry.id] = retry
        self._retries_by_key.setdefault((retry.scene, retry.idempotent_id), []).append(retry)
        if status == RETRY_RUNNING:
            self._schedule_retry(retry, self._retry_scenes[retry.scene].interval, _KIND_RETRY)
        return retry

    def _call_and_record(self, node: ClientNode, uri: str, text: str, headers: Dict[str, str],
                         replies: List[DispatchReply]) -> Tuple[Any, Optional[str], Any]:
        """One server -> client call; the reply is recorded in ``replies``.
        Returns ``(reply, error, decoded data)``."""
        reply, error, _ = self._invoke(node, uri, text, headers, _DISPATCH_TIMEOUT)
        data_value: Any = None
        if reply is not None and reply.data.strip():
            try:
                data_value = json.loads(reply.data)
            except ValueError:
                error = f"data is not JSON: {reply.data[:200]!r}"
        with self._cond:
            replies.append(DispatchReply(
                node=node.host_id,
                status=reply.status if reply is not None else None,
                message=reply.message if reply is not None else None,
                data=reply.data if reply is not None else None,
                error=error))
            self._cond.notify_all()
        return reply, error, data_value

    def _schedule_retry(self, retry: EmulatedRetry, delay: float, kind: str) -> None:
        """The next run of the retry (or of its callback); a newer schedule
        replaces an older one."""
        if kind == _KIND_RETRY:
            retry._gen += 1
            retry._parked = False
            gen = retry._gen
        else:
            retry._cb_gen += 1
            retry._cb_parked = False
            gen = retry._cb_gen
        if self._scheduler is not None:
            self._scheduler.schedule(delay, functools.partial(self._retry_due, retry, kind, gen))

    def _unpark_scene(self, name: str) -> None:
        for retry in self._retries.values():
            if retry.scene != name:
                continue
            if retry._parked and retry._status == RETRY_RUNNING:
                self._schedule_retry(retry, 0.0, _KIND_RETRY)
            if retry._cb_parked and retry._cb_status == _RT_RUNNING:
                self._schedule_retry(retry, 0.0, _KIND_CALLBACK)

    def _retry_due(self, retry: EmulatedRetry, kind: str, gen: int) -> None:
        """``ScanRetryActor`` + ``RetryExecutor`` for one due retry or
        callback (runs on a pool thread)."""
        with self._cond:
            if self._stopping.is_set():
                return
            if kind == _KIND_RETRY and (gen != retry._gen or retry._status != RETRY_RUNNING):
                return
            if kind == _KIND_CALLBACK and (gen != retry._cb_gen or retry._cb_status != _RT_RUNNING):
                return
            scene = self._retry_scenes[retry.scene]
            if not scene.enabled:  # the scan skips closed scenes
                if kind == _KIND_RETRY:
                    retry._parked = True
                else:
                    retry._cb_parked = True
                return
            if any(t.kind == kind and t.status in _RT_NOT_COMPLETE for t in retry._tasks):
                return  # the running task's end schedules the next run
            task = self._open_retry_task(retry, scene, kind, manual=False)
            if task.status != _RT_RUNNING:  # no live client: CANCEL, the next scan tries again
                self._schedule_retry(retry, scene.interval if kind == _KIND_RETRY else scene.cb_interval, kind)
            self._cond.notify_all()
        if task.status == _RT_RUNNING:
            self._retry_send(task)

    def _new_retry_task(self, retry: EmulatedRetry, kind: str, manual: bool) -> EmulatedRetryTask:
        task = EmulatedRetryTask(id=next(self._task_ids), retry_id=retry.id, kind=kind, manual=manual)
        retry._tasks.append(task)
        self._retry_task_index[task.id] = task
        return task

    def _end_retry_task(self, task: EmulatedRetryTask, status: int, reason: int) -> None:
        task.status = status
        task.operation_reason = reason
        task.finished_at = time.time()

    def _open_retry_task(self, retry: EmulatedRetry, scene: RetryScene, kind: str,
                         manual: bool) -> EmulatedRetryTask:
        """``RetryExecutor.doExecute``: pick a node, build the request, arm the
        timeout check (``executorTimeout`` + 500 ms)."""
        task = self._new_retry_task(retry, kind, manual)
        node = self._next_retry_node()
        if node is None:
            self._end_retry_task(task, _RT_CANCEL, RETRY_REASON_NOT_CLIENT)
            return task
        task.node, task.client_address = node.host_id, node.address
        body: Dict[str, Any] = {
            "namespaceId": retry.namespace,
            "groupName": retry.group,
            "sceneName": retry.scene,
            "argsStr": retry.args_str,
            "executorName": retry.executor_name,
        }
        if kind == _KIND_RETRY:  # DispatchRetryRequest
            task.retry_count = retry._retry_count
            body.update({"retryCount": retry._retry_count, "retryTaskId": task.id, "retryId": retry.id})
            task.snail_job_header = {"retry": True, "retryId": str(retry.id), "ddl": scene.executor_timeout}
        else:  # RetryCallbackRequest: the parent's status now, the callback row's id
            body.update({"retryStatus": retry._status, "retryTaskId": task.id, "retryId": retry._cb_id})
        body.update({"executorTimeout": scene.executor_timeout, "serializerName": retry.serializer_name})
        task.request = {key: value for key, value in body.items() if value is not None}
        if self._scheduler is not None:
            self._scheduler.schedule(scene.executor_timeout + _TIMEOUT_GRACE,
                                     functools.partial(self._retry_timeout, task))
        return task

    def _retry_send(self, task: EmulatedRetryTask) -> None:
        """``RequestRetryClientActor`` / ``RequestCallbackClientActor`` (pool
        thread): 3 s per attempt, 3 attempts 1 s apart with failover on a
        failed call; a dispatch needs ``status=1, data=true``, a callback
        ``status=1``; otherwise the task fails (not counted as an attempt)."""
        with self._cond:
            node = self._node_by_id(task.node) if task.node else None
            if node is None or not self._is_live(node):
                self._retry_outcome(task, _RT_FAIL, None, False, _MSG_CLIENT_MISSING)
                self._cond.notify_all()
                return
            uri = enums.URI_RETRY_DISPATCH if task.kind == _KIND_RETRY else enums.URI_RETRY_CALLBACK
            args: List[Any] = [task.request]
            if task.snail_job_header is not None:
                args.append(task.snail_job_header)
            text = dumps(args)
        attempt = 0
        while True:
            attempt += 1
            with self._lock:
                headers = self.server_headers(node)
            if task.snail_job_header is not None:
                headers[_HEADER_SNAIL_JOB] = dumps(task.snail_job_header)
            reply, error, data_value = self._call_and_record(node, uri, text, headers, task.dispatch_replies)
            if error is None:
                break
            if self._stopping.is_set():
                return
            with self._cond:
                node.alive = False  # a failed call marks the node not alive until its next beat
                if attempt >= _RETRY_RPC_ATTEMPTS:
                    self._retry_outcome(task, _RT_FAIL, None, False, error)
                    self._cond.notify_all()
                    return
                other = self._next_retry_node()
                if other is not None:  # failover
                    node = other
                    task.node, task.client_address = node.host_id, node.address
            if self._stopping.wait(_RETRY_RPC_WAIT):
                return
        assert reply is not None
        with self._cond:
            accepted = reply.status == 1 and (task.kind == _KIND_CALLBACK or data_value is True)
            if not accepted:
                self._retry_outcome(task, _RT_FAIL, None, False, reply.message)
            self._cond.notify_all()

    def _retry_timeout(self, task: EmulatedRetryTask) -> None:
        """``RetryTimeoutCheckTask`` (pool thread): a task still running fails
        (reason 1, counted as an attempt) and the node is told to stop it."""
        with self._cond:
            if self._stopping.is_set() or task.done:
                return
            task.timed_out = True
            self._retry_outcome(task, _RT_FAIL, RETRY_REASON_TIMEOUT, True, None)
            self._cond.notify_all()
        if not self.retry_stop_quirk:
            self._send_retry_stop(task)

    def _retry_outcome(self, task: EmulatedRetryTask, status: int, reason: Optional[int], increment: bool,
                       message: Optional[str]) -> bool:
        """``RetrySuccessHandler`` / ``RetryStopHandler`` / ``RetryFailureHandler``;
        false when the failure handler's guard (task not WAITING/RUNNING)
        leaves everything unchanged."""
        retry = self._retries[task.retry_id]
        scene = self._retry_scenes[retry.scene]
        callback = task.kind == _KIND_CALLBACK
        if status == _RT_SUCCESS:  # no guard on the task's status
            self._end_retry_task(task, _RT_SUCCESS, task.operation_reason)
            if callback:
                retry._cb_status = _RT_SUCCESS
                retry._cb_count += 1
            else:
                retry._status = RETRY_FINISH
                retry._retry_count += 1
                retry._deleted = True
                self._create_callback(retry, scene)
            return True
        if status == _RT_STOP and reason == RETRY_REASON_CLIENT_STOP:  # the retry is suspended
            self._end_retry_task(task, _RT_STOP, RETRY_REASON_CLIENT_STOP)
            if message is not None:
                task.exception_msg = message
            if callback:
                retry._cb_status = _RT_STOP
                retry._cb_count += 1
            else:
                retry._status = RETRY_SUSPEND
                retry._retry_count += 1
            return True
        if task.status not in _RT_NOT_COMPLETE:
            return False
        self._end_retry_task(task, status, RETRY_REASON_NONE if reason is None else reason)
        if message is not None:
            task.exception_msg = message
        limit = scene.cb_max_count if callback else scene.max_retry_count
        current = (retry._cb_count if callback else retry._retry_count) + 1
        if limit <= current:
            if callback:
                retry._cb_status = _RT_FAIL
                retry._cb_count = current
            else:
                retry._status = RETRY_MAX_COUNT
                retry._retry_count = current
                retry._deleted = True
                self._create_callback(retry, scene)
            return True
        if increment:
            if callback:
                retry._cb_count = current
            else:
                retry._retry_count = current
        if callback and retry._cb_status == _RT_RUNNING:
            self._schedule_retry(retry, scene.cb_interval, _KIND_CALLBACK)
        elif not callback and retry._status == RETRY_RUNNING:
            self._schedule_retry(retry, scene.interval, _KIND_RETRY)
        return True

    def _create_callback(self, retry: EmulatedRetry, scene: RetryScene) -> None:
        """``CallbackRetryTaskHandler.create``: a new callback row, first run
        ``cb_interval`` from now; none while the previous one is pending or
        suspended (its unique key is still taken)."""
        if not scene.callback or retry._cb_status in (_RT_RUNNING, _RT_STOP):
            return
        retry._cb_id = next(self._ids)
        retry._cb_status = _RT_RUNNING
        retry._cb_count = 0
        self._schedule_retry(retry, scene.cb_interval, _KIND_CALLBACK)

    def _send_retry_stop(self, task: EmulatedRetryTask) -> Optional[pb2.GrpcResult]:
        """``/retry/stop/v1`` to the task's node (blocking, on a pool thread):
        1 s per attempt, 3 attempts 1 s apart, no failover; the answer is
        only logged by the server."""
        with self._lock:
            node = self._node_by_id(task.node) if task.node else None
            if node is None or not self._is_live(node):
                return None
            retry = self._retries[task.retry_id]
            body = {"namespaceId": retry.namespace, "groupName": retry.group, "scene": retry.scene,
                    "retryTaskId": task.id, "retryId": task.request.get("retryId", retry.id)}
        text = dumps([body])
        for attempt in range(1, _RETRY_RPC_ATTEMPTS + 1):
            with self._lock:
                headers = self.server_headers(node)
            reply, error, _ = self._invoke(node, enums.URI_RETRY_STOP, text, headers, _STOP_TIMEOUT)
            if error is None:
                return reply
            if self._stopping.is_set():
                return None
            with self._cond:
                node.alive = False
            if attempt < _RETRY_RPC_ATTEMPTS and self._stopping.wait(_RETRY_RPC_WAIT):
                return None
        return None

    def _console_call(self, node: ClientNode, uri: str,
                      body: Dict[str, Any]) -> Tuple[Optional[pb2.GrpcResult], Any, Optional[str]]:
        """A console-initiated call (idempotent id, deserialize): 5 s per
        attempt, 3 attempts 1 s apart, no failover.  Returns ``(reply, data
        decoded, error)``; runs on the pool and waits for it (bounded)."""
        text = dumps([body])

        def work() -> Tuple[Optional[pb2.GrpcResult], Any, Optional[str]]:
            error: Optional[str] = None
            for attempt in range(1, _RETRY_RPC_ATTEMPTS + 1):
                with self._lock:
                    headers = self.server_headers(node)
                reply, error, _ = self._invoke(node, uri, text, headers, _CONSOLE_TIMEOUT)
                if reply is not None and error is None:
                    if not reply.data.strip():
                        return reply, None, None
                    try:
                        return reply, json.loads(reply.data), None
                    except ValueError:
                        error = f"data is not JSON: {reply.data[:200]!r}"
                if self._stopping.is_set():
                    break
                with self._cond:
                    node.alive = False
                if attempt < _RETRY_RPC_ATTEMPTS and self._stopping.wait(_RETRY_RPC_WAIT):
                    break
            return None, None, error

        return self._on_pool(work, _RETRY_RPC_ATTEMPTS * (_CONSOLE_TIMEOUT + _RETRY_RPC_WAIT) + 5.0)

    def _on_pool(self, fn: Callable[[], _T], timeout: float) -> _T:
        """Run ``fn`` on the emulator's pool and wait for it (bounded)."""
        pool = self._pool
        if pool is None or self._stopping.is_set():
            raise RuntimeError("the emulator is not running (call start() or use it as a context manager)")
        return pool.submit(fn).result(timeout=timeout)
